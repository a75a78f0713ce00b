//! The OCI runtime spec of a CRI container: what to run (the config over the
//! image's defaults), as whom, with which mounts and limits, in the pod's
//! network, IPC and UTS namespaces (or the host's network and IPC ones where
//! the sandbox shares them) and its own mount and PID namespaces, and
//! how confined: capabilities (containerd's default set, or the config's
//! adds and drops), masked and read-only /proc paths, seccomp, and for a
//! privileged container none of these.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_proto::cri_v1 as cri;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources,
    LinuxResourcesBuilder, LinuxSeccomp, MountBuilder, RootBuilder, Spec, UserBuilder,
};

use super::error::{CriError, Result};
use super::sandbox::{ns_path, ETC_FILES};
use super::state::HostNamespaces;
use crate::executor::cgroups::Resources;
use crate::image::RunConfig;

/// PATH for images that set none, the one most images assume.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's (and so Kubernetes') default capabilities.
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// /proc and /sys paths hidden from every unprivileged container, as
/// containerd hides them.
const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// /proc paths every unprivileged container sees read-only.
const READONLY_PATHS: [&str; 5] =
    ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

/// Everything the spec is built from.
pub struct SpecInput<'a> {
    pub config: &'a cri::ContainerConfig,
    pub image: &'a RunConfig,
    pub rootfs: &'a Path,
    pub sandbox_dir: &'a Path,
    /// The host's namespaces the sandbox shares; its containers share them.
    pub sandbox_host: HostNamespaces,
    /// The sandbox's sysctls (PodSandboxConfig.linux.sysctls), set in each
    /// of its containers' namespaces.
    pub sysctls: &'a BTreeMap<String, String>,
}

/// The capability set of a container: containerd's default set, or every
/// capability the runtime holds when privileged, with the config's adds and then drops
/// applied ("ALL" adds or drops everything; names with or without the
/// `CAP_` prefix). Unknown names are refused.
pub fn capabilities(sc: Option<&cri::LinuxContainerSecurityContext>) -> Result<Vec<String>> {
    let known: std::collections::BTreeSet<String> =
        caps::all().into_iter().map(|c| c.to_string()).collect();
    // "All" is what the runtime itself holds, as containerd gives it.
    let all: std::collections::BTreeSet<String> = caps::read(None, caps::CapSet::Permitted)
        .map_err(|e| CriError::InvalidArgument(format!("read the runtime's capabilities: {e}")))?
        .into_iter()
        .map(|c| c.to_string())
        .collect();
    let privileged = sc.is_some_and(|s| s.privileged);
    let mut set: std::collections::BTreeSet<String> = if privileged {
        all.clone()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    let Some(c) = sc.and_then(|s| s.capabilities.as_ref()) else {
        return Ok(set.into_iter().collect());
    };
    let name = |raw: &str| -> Result<String> {
        let upper = raw.to_ascii_uppercase();
        let full = if upper.starts_with("CAP_") { upper } else { format!("CAP_{upper}") };
        if known.contains(&full) {
            Ok(full)
        } else {
            Err(CriError::InvalidArgument(format!("unknown capability {raw:?}")))
        }
    };
    let is_all = |raw: &String| raw.eq_ignore_ascii_case("ALL");
    if c.add_capabilities.iter().any(is_all) {
        set = all.clone();
    }
    if c.drop_capabilities.iter().any(is_all) {
        set.clear();
    }
    for raw in c.add_capabilities.iter().filter(|r| !is_all(r)) {
        set.insert(name(raw)?);
    }
    for raw in c.drop_capabilities.iter().filter(|r| !is_all(r)) {
        set.remove(&name(raw)?);
    }
    Ok(set.into_iter().collect())
}

/// The seccomp profile the config asks for: none for Unconfined, an absent
/// profile or a privileged container; berth's default for RuntimeDefault;
/// the file's for Localhost (an OCI or Docker-format JSON profile).
pub fn seccomp(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    capabilities: &[String],
) -> Result<Option<LinuxSeccomp>> {
    use cri::security_profile::ProfileType;
    let Some(sc) = sc else { return Ok(None) };
    let Some(profile) = sc.seccomp.as_ref().filter(|_| !sc.privileged) else { return Ok(None) };
    match ProfileType::try_from(profile.profile_type) {
        Ok(ProfileType::Unconfined) => Ok(None),
        Ok(ProfileType::RuntimeDefault) => {
            Ok(Some(crate::executor::seccomp_runtime_default(capabilities)))
        }
        Ok(ProfileType::Localhost) => {
            let path = Path::new(&profile.localhost_ref);
            if !path.is_absolute() {
                return Err(CriError::InvalidArgument(format!(
                    "seccomp profile {:?} is not an absolute path",
                    profile.localhost_ref
                )));
            }
            let text = std::fs::read(path).map_err(CriError::io(path))?;
            serde_json::from_slice(&text).map(Some).map_err(|e| {
                CriError::InvalidArgument(format!("seccomp profile {}: {e}", path.display()))
            })
        }
        Err(_) => Err(CriError::InvalidArgument(format!(
            "unknown seccomp profile type {}",
            profile.profile_type
        ))),
    }
}

/// Every device node under the host's /dev (not its pseudo-terminals,
/// shared memory or queues), for a privileged container.
fn host_devices() -> Vec<cri::Device> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::from("/dev")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if !["/dev/pts", "/dev/shm", "/dev/mqueue"].contains(&path.to_str().unwrap_or("")) {
                    dirs.push(path);
                }
            } else if (kind.is_char_device() || kind.is_block_device())
                && !["/dev/console", "/dev/ptmx"].contains(&path.to_str().unwrap_or(""))
            {
                let p = path.display().to_string();
                out.push(cri::Device {
                    container_path: p.clone(),
                    host_path: p,
                    permissions: "rwm".into(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    out
}

/// The container's argv, following Kubernetes: `command` replaces the
/// image's entrypoint, `args` its cmd, and the image's cmd only applies
/// when the config gives no command.
pub fn argv(config: &cri::ContainerConfig, image: &RunConfig) -> Result<Vec<String>> {
    let argv = if config.command.is_empty() {
        let mut v = image.entrypoint.clone().unwrap_or_default();
        if config.args.is_empty() {
            v.extend(image.cmd.clone().unwrap_or_default());
        } else {
            v.extend(config.args.iter().cloned());
        }
        v
    } else {
        config.command.iter().chain(&config.args).cloned().collect()
    };
    if argv.is_empty() {
        return Err(CriError::InvalidArgument(
            "no command: neither the container config nor the image says what to run".into(),
        ));
    }
    Ok(argv)
}

/// The image's environment with the config's variables over it, in order.
pub fn env(config: &cri::ContainerConfig, image: &RunConfig) -> Vec<String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |key: &str, value: &str| match out.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => out.push((key.to_string(), value.to_string())),
    };
    for kv in image.env.as_deref().unwrap_or_default() {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for kv in &config.envs {
        set(&kv.key, &kv.value);
    }
    let mut env: Vec<String> = out.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    // A terminal gets a type, as other runtimes give it.
    if config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".to_string());
    }
    env
}

/// uid and gid: the security context's, else the image's `User` (numeric,
/// or a name looked up in the rootfs' /etc/passwd and /etc/group).
pub fn user(config: &cri::ContainerConfig, image: &RunConfig, rootfs: &Path) -> Result<(u32, u32)> {
    let sc = config.linux.as_ref().and_then(|l| l.security_context.as_ref());
    let to_id = |v: i64, what: &str| {
        u32::try_from(v).map_err(|_| CriError::InvalidArgument(format!("{what} {v} out of range")))
    };
    if let Some(uid) = sc.and_then(|s| s.run_as_user.as_ref()) {
        let uid = to_id(uid.value, "run_as_user")?;
        let gid = match sc.and_then(|s| s.run_as_group.as_ref()) {
            Some(g) => to_id(g.value, "run_as_group")?,
            None => lookup(rootfs, "etc/passwd", &uid.to_string(), 3).unwrap_or(0),
        };
        return Ok((uid, gid));
    }
    let spelled = match sc.map(|s| s.run_as_username.as_str()).filter(|n| !n.is_empty()) {
        Some(name) => name.to_string(),
        None => image.user.clone().unwrap_or_default(),
    };
    if spelled.is_empty() {
        return Ok((0, 0));
    }
    let (u, g) = match spelled.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spelled.as_str(), None),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => lookup(rootfs, "etc/passwd", u, 2).ok_or_else(|| {
            CriError::InvalidArgument(format!("user {u:?} is not in the image's /etc/passwd"))
        })?,
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup(rootfs, "etc/group", g, 2).ok_or_else(|| {
                CriError::InvalidArgument(format!("group {g:?} is not in the image's /etc/group"))
            })?,
        },
        None => lookup(rootfs, "etc/passwd", &uid.to_string(), 3).unwrap_or(0),
    };
    Ok((uid, gid))
}

/// Field `field` (0-based) of the line of `file` whose name (field 0), or for
/// a numeric key whose id (field 2), is `key`.
fn lookup(rootfs: &Path, file: &str, key: &str, field: usize) -> Option<u32> {
    let text = std::fs::read_to_string(rootfs.join(file)).ok()?;
    text.lines().find_map(|line| {
        let parts: Vec<&str> = line.split(':').collect();
        let matches = parts.first() == Some(&key) || parts.get(2) == Some(&key);
        matches.then(|| parts.get(field)?.parse().ok()).flatten()
    })
}

/// CRI resources in the executor's terms; zero means "not specified".
pub fn resources(r: Option<&cri::LinuxContainerResources>) -> Resources {
    let mut out = Resources::default();
    let Some(r) = r else { return out };
    let positive = |v: i64| (v > 0).then_some(v);
    out.cpu_shares = positive(r.cpu_shares).map(|v| v as u64);
    out.cpu_quota = positive(r.cpu_quota);
    out.cpu_period = positive(r.cpu_period).map(|v| v as u64);
    out.memory_limit = positive(r.memory_limit_in_bytes);
    out.memory_swap = positive(r.memory_swap_limit_in_bytes);
    out.cpuset_cpus = Some(r.cpuset_cpus.clone()).filter(|s| !s.is_empty());
    out.cpuset_mems = Some(r.cpuset_mems.clone()).filter(|s| !s.is_empty());
    out
}

fn oci_resources(r: &Resources) -> Result<LinuxResources> {
    let mut cpu = LinuxCpuBuilder::default();
    if let Some(v) = r.cpu_shares {
        cpu = cpu.shares(v);
    }
    if let Some(v) = r.cpu_quota {
        cpu = cpu.quota(v);
    }
    if let Some(v) = r.cpu_period {
        cpu = cpu.period(v);
    }
    if let Some(v) = &r.cpuset_cpus {
        cpu = cpu.cpus(v.clone());
    }
    if let Some(v) = &r.cpuset_mems {
        cpu = cpu.mems(v.clone());
    }
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(v) = r.memory_limit {
        memory = memory.limit(v);
        // Without swap accounting a limit alone could be dodged by swapping.
        memory = memory.swap(r.memory_swap.unwrap_or(v));
    }
    LinuxResourcesBuilder::default()
        .cpu(cpu.build().map_err(spec_error)?)
        .memory(memory.build().map_err(spec_error)?)
        .build()
        .map_err(spec_error)
}

/// The config's device nodes (a device plugin's allocation, say): each
/// host node made at its container path, with a cgroup rule granting the
/// permissions asked for.
pub fn devices(list: &[cri::Device]) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut nodes = Vec::new();
    let mut rules = Vec::new();
    for d in list {
        let bad = |why: String| CriError::InvalidArgument(format!("device {}: {why}", d.host_path));
        if d.container_path.is_empty() || !d.container_path.starts_with('/') {
            return Err(bad(format!("container path {:?} is not absolute", d.container_path)));
        }
        let meta = std::fs::metadata(&d.host_path).map_err(|e| bad(e.to_string()))?;
        let typ = if meta.file_type().is_char_device() {
            LinuxDeviceType::C
        } else if meta.file_type().is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(bad("not a device node".into()));
        };
        let access =
            if d.permissions.is_empty() { "rwm".to_string() } else { d.permissions.clone() };
        if !access.chars().all(|c| "rwm".contains(c)) {
            return Err(bad(format!("permissions {access:?} are not a subset of rwm")));
        }
        let (major, minor) =
            (nix::sys::stat::major(meta.rdev()) as i64, nix::sys::stat::minor(meta.rdev()) as i64);
        nodes.push(
            LinuxDeviceBuilder::default()
                .path(PathBuf::from(&d.container_path))
                .typ(typ)
                .major(major)
                .minor(minor)
                .file_mode(meta.mode() & 0o777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build()
                .map_err(spec_error)?,
        );
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(major)
                .minor(minor)
                .access(access)
                .build()
                .map_err(spec_error)?,
        );
    }
    Ok((nodes, rules))
}

fn spec_error(e: oci_spec::OciSpecError) -> CriError {
    CriError::InvalidArgument(format!("container spec: {e}"))
}

fn namespace(typ: LinuxNamespaceType, path: Option<PathBuf>) -> Result<LinuxNamespace> {
    let mut b = LinuxNamespaceBuilder::default().typ(typ);
    if let Some(p) = path {
        b = b.path(p);
    }
    b.build().map_err(spec_error)
}

/// The full spec.
pub fn build(input: &SpecInput<'_>) -> Result<Spec> {
    let config = input.config;
    let linux_config = config.linux.as_ref();
    let sc = linux_config.and_then(|l| l.security_context.as_ref());
    let privileged = sc.is_some_and(|s| s.privileged);
    let capability_set = capabilities(sc)?;
    let seccomp = seccomp(sc, &capability_set)?;
    let mut spec = Spec::default();
    spec.set_hostname(None);

    let (uid, gid) = user(config, input.image, input.rootfs)?;
    let mut additional: Vec<u32> = Vec::new();
    for g in sc.map(|s| s.supplemental_groups.as_slice()).unwrap_or_default() {
        additional.push(u32::try_from(*g).map_err(|_| {
            CriError::InvalidArgument(format!("supplemental group {g} out of range"))
        })?);
    }
    let user = UserBuilder::default()
        .uid(uid)
        .gid(gid)
        .additional_gids(additional)
        .build()
        .map_err(spec_error)?;
    let cwd = Some(config.working_dir.clone())
        .filter(|d| !d.is_empty())
        .or_else(|| input.image.working_dir.clone().filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());
    let process = spec.process_mut().as_mut().expect("the default spec has a process");
    // With a terminal the runtime takes its master from the container.
    process.set_terminal(Some(config.tty));
    process.set_args(Some(argv(config, input.image)?));
    process.set_env(Some(env(config, input.image)));
    process.set_cwd(PathBuf::from(cwd));
    process.set_user(user);
    if let Some(adj) = linux_config.and_then(|l| l.resources.as_ref()).map(|r| r.oom_score_adj) {
        if adj != 0 {
            let adj = i32::try_from(adj)
                .map_err(|_| CriError::InvalidArgument(format!("oom_score_adj {adj}")))?;
            process.set_oom_score_adj(Some(adj));
        }
    }
    // no_new_privs only when asked (allowPrivilegeEscalation: false).
    process.set_no_new_privileges(Some(sc.is_some_and(|s| s.no_new_privs)));
    // Capabilities newer than the OCI library's list are left out, as the
    // executor leaves out ones its kernel library does not know.
    let oci_caps: oci_spec::runtime::Capabilities = capability_set
        .iter()
        .filter_map(|c| serde_json::from_value::<Capability>(serde_json::json!(c)).ok())
        .collect();
    // A non-root user keeps the set as its bounding set only; its effective
    // and permitted sets start empty, as Docker gives them, so only
    // setuid-root or file-capability programs can raise them again.
    let held = if uid == 0 { oci_caps.clone() } else { Default::default() };
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(oci_caps)
            .effective(held.clone())
            .permitted(held)
            .inheritable(oci_spec::runtime::Capabilities::default())
            .ambient(oci_spec::runtime::Capabilities::default())
            .build()
            .map_err(spec_error)?,
    ));

    spec.set_root(Some(
        RootBuilder::default()
            .path(input.rootfs.to_path_buf())
            .readonly(sc.is_some_and(|s| s.readonly_rootfs))
            .build()
            .map_err(spec_error)?,
    ));

    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if privileged {
        // A privileged container's /sys is writable, as in runc and containerd.
        for m in mounts.iter_mut().filter(|m| m.destination() == Path::new("/sys")) {
            let options = m.options().clone().unwrap_or_default();
            m.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
        }
    }
    for (file, destination) in ETC_FILES {
        let source = input.sandbox_dir.join(file);
        if source.exists() {
            let mode = if sc.is_some_and(|s| s.readonly_rootfs) { "ro" } else { "rw" };
            mounts.push(
                MountBuilder::default()
                    .destination(PathBuf::from(destination))
                    .typ("bind")
                    .source(source)
                    .options(vec!["rbind".to_string(), mode.to_string()])
                    .build()
                    .map_err(spec_error)?,
            );
        }
    }
    for m in &config.mounts {
        if m.container_path.is_empty() || m.host_path.is_empty() {
            return Err(CriError::InvalidArgument(
                "a mount needs container_path and host_path".into(),
            ));
        }
        let host = Path::new(&m.host_path);
        // A missing host path is an error, not an empty mount (the CRI says so).
        let host = host
            .canonicalize()
            .map_err(|e| CriError::InvalidArgument(format!("mount {}: {e}", m.host_path)))?;
        let mut options = vec!["rbind".to_string()];
        options.push(if m.readonly { "ro" } else { "rw" }.to_string());
        options.push(
            match cri::MountPropagation::try_from(m.propagation) {
                Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
                Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
                _ => "rprivate",
            }
            .to_string(),
        );
        mounts.retain(|existing| existing.destination() != Path::new(&m.container_path));
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(&m.container_path))
                .typ("bind")
                .source(host)
                .options(options)
                .build()
                .map_err(spec_error)?,
        );
    }
    spec.set_mounts(Some(mounts));

    let mut annotations: BTreeMap<String, String> = config.annotations.clone();
    annotations.insert("io.berth.container.name".into(), metadata_name(config));
    spec.set_annotations(Some(annotations.into_iter().collect()));

    let limits = resources(linux_config.and_then(|l| l.resources.as_ref()));
    let mut device_list = config.devices.clone();
    if privileged {
        let asked: Vec<String> = device_list.iter().map(|d| d.container_path.clone()).collect();
        device_list
            .extend(host_devices().into_iter().filter(|d| !asked.contains(&d.container_path)));
    }
    let (device_nodes, mut device_rules) = devices(&device_list)?;
    if privileged {
        device_rules.insert(
            0,
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::A)
                .access("rwm")
                .build()
                .map_err(spec_error)?,
        );
    }
    let mut oci_limits = oci_resources(&limits)?;
    oci_limits.set_devices(Some(device_rules));
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(sc, input.sandbox_dir, input.sandbox_host)?)
        .resources(oci_limits)
        .devices(device_nodes)
        .build()
        .map_err(spec_error)?;
    let paths = |given: Option<&Vec<String>>, default: &[&str]| match given {
        _ if privileged => Vec::new(),
        Some(p) if !p.is_empty() => p.clone(),
        _ => default.iter().map(|p| p.to_string()).collect(),
    };
    linux.set_masked_paths(Some(paths(sc.map(|s| &s.masked_paths), &MASKED_PATHS)));
    linux.set_readonly_paths(Some(paths(sc.map(|s| &s.readonly_paths), &READONLY_PATHS)));
    linux.set_seccomp(seccomp);
    if !input.sysctls.is_empty() {
        linux.set_sysctl(Some(input.sysctls.clone().into_iter().collect()));
    }
    spec.set_linux(Some(linux));
    Ok(spec)
}

/// The container's namespaces: the sandbox's network, IPC and UTS ones
/// (none, so the host's, for network and IPC where the sandbox shares the
/// host's: a container cannot differ from its pod there), its own mount
/// namespace, and its own PID namespace unless the config or the sandbox
/// asks for the host's.
fn namespaces(
    sc: Option<&cri::LinuxContainerSecurityContext>,
    sandbox_dir: &Path,
    host: HostNamespaces,
) -> Result<Vec<LinuxNamespace>> {
    let options = sc.and_then(|s| s.namespace_options.clone()).unwrap_or_default();
    let node = cri::NamespaceMode::Node as i32;
    let mut out = vec![namespace(LinuxNamespaceType::Mount, None)?];
    if options.pid != node && !host.pid {
        out.push(namespace(LinuxNamespaceType::Pid, None)?);
    }
    if !host.network {
        out.push(namespace(LinuxNamespaceType::Network, Some(ns_path(sandbox_dir, "net")))?);
    }
    if !host.ipc {
        out.push(namespace(LinuxNamespaceType::Ipc, Some(ns_path(sandbox_dir, "ipc")))?);
    }
    out.push(namespace(LinuxNamespaceType::Uts, Some(ns_path(sandbox_dir, "uts")))?);
    Ok(out)
}

fn metadata_name(config: &cri::ContainerConfig) -> String {
    config.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RunConfig {
        RunConfig {
            entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
            cmd: Some(vec!["echo hi".into()]),
            env: Some(vec!["PATH=/bin".into(), "A=image".into()]),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_follow_kubernetes() {
        let mut c = cri::ContainerConfig::default();
        assert_eq!(argv(&c, &image()).unwrap(), ["/bin/sh", "-c", "echo hi"]);
        c.args = vec!["echo bye".into()];
        assert_eq!(argv(&c, &image()).unwrap(), ["/bin/sh", "-c", "echo bye"]);
        c.command = vec!["sleep".into()];
        c.args = vec!["1".into()];
        assert_eq!(argv(&c, &image()).unwrap(), ["sleep", "1"]);
        assert!(argv(&cri::ContainerConfig::default(), &RunConfig::default()).is_err());
    }

    #[test]
    fn config_env_overrides_image_env() {
        let c = cri::ContainerConfig {
            envs: vec![cri::KeyValue { key: "A".into(), value: "config".into() }],
            ..Default::default()
        };
        assert_eq!(env(&c, &image()), ["PATH=/bin", "A=config"]);
        let bare = env(&cri::ContainerConfig::default(), &RunConfig::default());
        assert_eq!(bare, [DEFAULT_PATH]);
    }

    #[test]
    fn users_resolve_by_number_or_from_the_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "app:x:1000:1001::/:/bin/sh\n").unwrap();
        std::fs::write(dir.path().join("etc/group"), "staff:x:50:\n").unwrap();
        let c = cri::ContainerConfig::default();
        let with_user = |u: &str| RunConfig { user: Some(u.into()), ..Default::default() };
        assert_eq!(user(&c, &with_user("5:6"), dir.path()).unwrap(), (5, 6));
        assert_eq!(user(&c, &with_user("app"), dir.path()).unwrap(), (1000, 1001));
        assert_eq!(user(&c, &with_user("app:staff"), dir.path()).unwrap(), (1000, 50));
        assert!(user(&c, &with_user("nobody"), dir.path()).is_err());
        assert_eq!(user(&c, &RunConfig::default(), dir.path()).unwrap(), (0, 0));
    }

    #[test]
    fn device_nodes_come_with_their_cgroup_rules() {
        let config = |host: &str, permissions: &str| cri::ContainerConfig {
            devices: vec![cri::Device {
                container_path: "/dev/xdev".into(),
                host_path: host.into(),
                permissions: permissions.into(),
            }],
            ..Default::default()
        };
        let (nodes, rules) = devices(&config("/dev/null", "rw").devices).unwrap();
        assert_eq!(nodes[0].path(), Path::new("/dev/xdev"));
        assert_eq!(
            (nodes[0].typ(), nodes[0].major(), nodes[0].minor()),
            (LinuxDeviceType::C, 1, 3)
        );
        assert_eq!(rules[0].access().as_deref(), Some("rw"));
        assert_eq!((rules[0].major(), rules[0].minor()), (Some(1), Some(3)));
        assert!(
            devices(&config("/etc/hostname", "").devices).is_err(),
            "a plain file is not a device"
        );
        assert!(devices(&config("/dev/null", "rwx").devices).is_err());
        assert!(devices(&config("/no/such/node", "").devices).is_err());
    }

    fn secure(sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
        cri::ContainerConfig {
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(sc),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn built(config: &cri::ContainerConfig) -> Spec {
        let dir = tempfile::tempdir().unwrap();
        build(&SpecInput {
            config,
            image: &image(),
            rootfs: dir.path(),
            sandbox_dir: dir.path(),
            sandbox_host: HostNamespaces::default(),
            sysctls: &[("net.ipv4.tcp_syncookies".to_string(), "1".to_string())].into(),
        })
        .unwrap()
    }

    fn caps_of(spec: &Spec) -> (Vec<String>, Vec<String>) {
        let c = spec.process().as_ref().unwrap().capabilities().clone().unwrap();
        let sorted = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut v: Vec<String> = set
                .iter()
                .flatten()
                .map(|c| format!("CAP_{c}").replace("CAP_CAP_", "CAP_"))
                .collect();
            v.sort();
            v
        };
        (sorted(c.bounding()), sorted(c.effective()))
    }

    fn profile(kind: cri::security_profile::ProfileType) -> Option<cri::SecurityProfile> {
        Some(cri::SecurityProfile { profile_type: kind as i32, localhost_ref: String::new() })
    }

    #[test]
    fn containers_get_containerds_defaults() {
        let spec = built(&secure(cri::LinuxContainerSecurityContext {
            seccomp: profile(cri::security_profile::ProfileType::RuntimeDefault),
            ..Default::default()
        }));
        let mut expected: Vec<String> =
            DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        expected.sort();
        assert_eq!(caps_of(&spec), (expected.clone(), expected));
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.masked_paths().as_ref().unwrap().contains(&"/proc/kcore".to_string()));
        assert!(linux.readonly_paths().as_ref().unwrap().contains(&"/proc/sys".to_string()));
        assert!(linux.seccomp().is_some(), "RuntimeDefault gives the default profile");
        let ns: Vec<_> = linux.namespaces().iter().flatten().map(|n| n.typ()).collect();
        assert!(ns.contains(&LinuxNamespaceType::Pid));
        assert_eq!(linux.sysctl().as_ref().unwrap()["net.ipv4.tcp_syncookies"], "1");
        assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), Some(false));
        // No profile asked for: none (the agent asks for RuntimeDefault).
        let bare = built(&cri::ContainerConfig::default());
        assert!(bare.linux().as_ref().unwrap().seccomp().is_none());
    }

    #[test]
    fn adds_and_drops_follow_kubernetes_names() {
        let with = |add: &[&str], drop: &[&str]| {
            let sc = cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: add.iter().map(|c| c.to_string()).collect(),
                    drop_capabilities: drop.iter().map(|c| c.to_string()).collect(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            capabilities(Some(&sc))
        };
        let caps = with(&["NET_ADMIN"], &["KILL", "CAP_CHOWN"]).unwrap();
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(
            !caps.contains(&"CAP_KILL".to_string()) && !caps.contains(&"CAP_CHOWN".to_string())
        );
        assert_eq!(with(&["NET_BIND_SERVICE"], &["ALL"]).unwrap(), ["CAP_NET_BIND_SERVICE"]);
        assert!(with(&["ALL"], &[]).unwrap().contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(with(&["NOT_A_CAP"], &[]).is_err());
    }

    #[test]
    fn privileged_containers_are_unconfined() {
        let spec = built(&secure(cri::LinuxContainerSecurityContext {
            privileged: true,
            seccomp: profile(cri::security_profile::ProfileType::RuntimeDefault),
            ..Default::default()
        }));
        let (bounding, effective) = caps_of(&spec);
        assert!(bounding.contains(&"CAP_SYS_ADMIN".to_string()) && bounding == effective);
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        assert!(linux.readonly_paths().as_ref().unwrap().is_empty());
        let rules = linux.resources().as_ref().unwrap().devices().clone().unwrap();
        assert_eq!(rules[0].typ(), Some(LinuxDeviceType::A));
        assert_eq!(rules[0].access().as_deref(), Some("rwm"));
        let sys = spec.mounts().iter().flatten().find(|m| m.destination() == Path::new("/sys"));
        assert!(!sys.unwrap().options().iter().flatten().any(|o| o == "ro"));
    }

    #[test]
    fn non_root_users_and_host_pid_namespaces() {
        let spec = built(&secure(cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            no_new_privs: true,
            namespace_options: Some(cri::NamespaceOption {
                pid: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }));
        let (bounding, effective) = caps_of(&spec);
        assert_eq!(bounding.len(), DEFAULT_CAPABILITIES.len());
        assert!(effective.is_empty(), "a non-root user holds no capability");
        assert_eq!(spec.process().as_ref().unwrap().no_new_privileges(), Some(true));
        let linux = spec.linux().as_ref().unwrap();
        assert!(!linux.namespaces().iter().flatten().any(|n| n.typ() == LinuxNamespaceType::Pid));
    }

    #[test]
    fn containers_share_the_host_namespaces_their_sandbox_shares() {
        let dir = tempfile::tempdir().unwrap();
        let namespaces_of = |host: HostNamespaces| {
            let spec = build(&SpecInput {
                config: &cri::ContainerConfig::default(),
                image: &image(),
                rootfs: dir.path(),
                sandbox_dir: dir.path(),
                sandbox_host: host,
                sysctls: &BTreeMap::new(),
            })
            .unwrap();
            let linux = spec.linux().clone().unwrap();
            linux.namespaces().clone().unwrap_or_default()
        };
        let all = HostNamespaces { network: true, ipc: true, pid: true };
        let types: Vec<_> = namespaces_of(all).iter().map(|n| n.typ()).collect();
        assert_eq!(types, [LinuxNamespaceType::Mount, LinuxNamespaceType::Uts]);
        let own = namespaces_of(HostNamespaces::default());
        let net = own.iter().find(|n| n.typ() == LinuxNamespaceType::Network).unwrap();
        assert_eq!(net.path().as_deref(), Some(ns_path(dir.path(), "net").as_path()));
        assert!(own.iter().any(|n| n.typ() == LinuxNamespaceType::Ipc));
        assert!(own.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
    }

    #[test]
    fn zero_resources_mean_unset() {
        let r = resources(Some(&cri::LinuxContainerResources {
            cpu_shares: 512,
            memory_limit_in_bytes: 64 << 20,
            ..Default::default()
        }));
        assert_eq!(r.cpu_shares, Some(512));
        assert_eq!(r.memory_limit, Some(64 << 20));
        assert_eq!(r.cpu_quota, None);
        assert_eq!(r.cpuset_cpus, None);
    }
}
