//! The container's filesystem view: mounts, device nodes, pivot_root, masked
//! and read-only paths. Runs inside the container's new mount namespace, in
//! the forked init process, so errors are plain strings sent back over the
//! sync pipe.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::statvfs::{statvfs, FsFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};

/// Child-side result: the message says which step failed.
pub(crate) type Step<T = ()> = Result<T, String>;

pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Step<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Step<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}

/// Device nodes every container gets, as (name, major, minor); runc's list.
pub(crate) const DEFAULT_DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// What the rootfs setup needs besides the spec, prepared by the runtime.
pub(crate) struct RootfsPlan<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    /// (name under /sys/fs/cgroup, host directory) per hierarchy.
    pub cgroup_views: &'a [(String, PathBuf)],
    pub cgroup_v2: bool,
    pub new_cgroupns: bool,
}

/// Mounts everything under the rootfs and pivots into it.
pub(crate) fn prepare(plan: &RootfsPlan) -> Step {
    let linux = plan.spec.linux().as_ref();
    let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
        None | Some("") => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        Some(p) => {
            propagation_flag(p).ok_or_else(|| format!("rootfsPropagation {p:?} is unknown"))?
        }
    };
    // Keep our mounts from propagating back to the host.
    mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
        .ctx(|| "make / private".into())?;
    // pivot_root needs the new root to be a mount point.
    mount(
        Some(plan.rootfs),
        plan.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind rootfs {}", plan.rootfs.display()))?;

    let mounts = plan.spec.mounts().as_deref().unwrap_or_default();
    for m in mounts {
        mount_one(plan, m)?;
    }
    if mounts.iter().any(|m| m.destination() == Path::new("/dev")) {
        create_devices(plan)?;
    }
    pivot(plan.rootfs)
}

fn mount_one(plan: &RootfsPlan, m: &Mount) -> Step {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(format!("mount destination {} is not absolute", dest.display()));
    }
    let target = secure_join(plan.rootfs, dest)?;
    let typ = m.typ().as_deref().unwrap_or("");
    let opts = MountOptions::parse(m.options().as_deref().unwrap_or_default());
    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroups(plan, &target, &opts);
    }
    if opts.bind || typ == "bind" {
        let source = m
            .source()
            .as_deref()
            .ok_or_else(|| format!("bind mount {} has no source", dest.display()))?;
        let source =
            if source.is_absolute() { source.to_path_buf() } else { plan.bundle.join(source) };
        create_target(&target, source.is_dir())?;
        let rec = if opts.recursive { MsFlags::MS_REC } else { MsFlags::empty() };
        mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND | rec, None::<&str>)
            .ctx(|| format!("bind {} on {}", source.display(), dest.display()))?;
        // Bind ignores flags; they take effect on a remount of the new mount.
        if !opts.flags.is_empty() {
            remount(&target, opts.flags | rec).ctx(|| format!("remount {}", dest.display()))?;
        }
    } else {
        create_target(&target, true)?;
        let source = m.source().as_deref().map(|s| s.to_path_buf()).unwrap_or_else(|| typ.into());
        let data = (!opts.data.is_empty()).then_some(opts.data.as_str());
        mount(Some(&source), &target, Some(typ), opts.flags, data)
            .ctx(|| format!("mount {typ} on {}", dest.display()))?;
    }
    if !opts.propagation.is_empty() {
        mount(None::<&str>, &target, None::<&str>, opts.propagation, None::<&str>)
            .ctx(|| format!("set propagation of {}", dest.display()))?;
    }
    Ok(())
}

/// /sys/fs/cgroup inside the container: on v1 a tmpfs with each hierarchy's
/// container cgroup bound in (as runc shows it); on v2 the cgroup2 fs when
/// the container has its own cgroup namespace, else its cgroup bound in.
fn mount_cgroups(plan: &RootfsPlan, target: &Path, opts: &MountOptions) -> Step {
    create_target(target, true)?;
    let base = opts.flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    if plan.cgroup_v2 {
        if plan.new_cgroupns {
            return mount(Some("cgroup2"), target, Some("cgroup2"), opts.flags, None::<&str>)
                .ctx(|| "mount cgroup2".into());
        }
        for (_, host) in plan.cgroup_views {
            mount(Some(host), target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .ctx(|| "bind cgroup".into())?;
            remount(target, opts.flags).ctx(|| "remount cgroup".into())?;
        }
        return Ok(());
    }
    mount(Some("tmpfs"), target, Some("tmpfs"), base, Some("mode=755"))
        .ctx(|| "mount cgroup tmpfs".into())?;
    for (name, host) in plan.cgroup_views {
        let sub = target.join(name);
        create_target(&sub, true)?;
        mount(Some(host), &sub, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .ctx(|| format!("bind cgroup {}", host.display()))?;
        remount(&sub, opts.flags).ctx(|| format!("remount cgroup {name}"))?;
    }
    Ok(())
}

/// Remounts a bind mount with `flags`, keeping the flags the kernel locks
/// (nosuid, nodev, noexec) so an unprivileged remount is not refused.
pub(crate) fn remount(target: &Path, flags: MsFlags) -> nix::Result<()> {
    let mut keep = MsFlags::empty();
    if let Ok(st) = statvfs(target) {
        let f = st.flags();
        for (fs, ms) in [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        ] {
            if f.contains(fs) {
                keep |= ms;
            }
        }
    }
    mount(
        None::<&str>,
        target,
        None::<&str>,
        flags | keep | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
        None::<&str>,
    )
}

fn create_target(target: &Path, dir: bool) -> Step {
    if dir {
        fs::create_dir_all(target).ctx(|| format!("mkdir {}", target.display()))
    } else {
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
        }
        if !target.exists() {
            fs::File::create(target).ctx(|| format!("create {}", target.display()))?;
        }
        Ok(())
    }
}

/// Default nodes plus the spec's `linux.devices`, then the /dev symlinks.
fn create_devices(plan: &RootfsPlan) -> Step {
    let dev = plan.rootfs.join("dev");
    let spec_devices =
        plan.spec.linux().as_ref().and_then(|l| l.devices().as_deref()).unwrap_or_default();
    for (name, major, minor) in DEFAULT_DEVICES {
        let path = Path::new("/dev").join(name);
        if spec_devices.iter().all(|d| d.path() != &path) {
            make_node(&dev.join(name), SFlag::S_IFCHR, 0o666, major, minor)?;
        }
    }
    for d in spec_devices {
        create_spec_device(plan.rootfs, d)?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        match symlink(to, dev.join(link)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("symlink /dev/{link}: {e}")),
        }
    }
    Ok(())
}

fn create_spec_device(rootfs: &Path, d: &LinuxDevice) -> Step {
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => return Err(format!("device {} has type a", d.path().display())),
    };
    let path = secure_join(rootfs, d.path())?;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).ctx(|| format!("mkdir {}", parent.display()))?;
    }
    let mode = d.file_mode().unwrap_or(0o666);
    make_node(&path, kind, mode, d.major() as u64, d.minor() as u64)?;
    let uid = d.uid().map(nix::unistd::Uid::from_raw);
    let gid = d.gid().map(nix::unistd::Gid::from_raw);
    nix::unistd::chown(&path, uid, gid).ctx(|| format!("chown {}", d.path().display()))
}

/// mknod, or where that is refused (a user namespace) a bind of the host's node.
fn make_node(path: &Path, kind: SFlag, mode: u32, major: u64, minor: u64) -> Step {
    let _ = fs::remove_file(path);
    match mknod(path, kind, Mode::from_bits_truncate(mode), makedev(major, minor)) {
        Ok(()) => {
            // mknod honours the umask; the spec's mode is meant literally.
            fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777))
                .ctx(|| format!("chmod {}", path.display()))
        }
        Err(nix::Error::EPERM) => {
            let host = Path::new("/dev").join(path.file_name().unwrap_or_default());
            create_target(path, false)?;
            mount(Some(&host), path, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                .ctx(|| format!("bind {}", host.display()))
        }
        Err(e) => Err(format!("mknod {}: {e}", path.display())),
    }
}

/// pivot_root with new and old root on the same directory (runc's trick):
/// no put_old directory is left in the image.
fn pivot(rootfs: &Path) -> Step {
    nix::unistd::chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
    nix::unistd::pivot_root(".", ".").ctx(|| "pivot_root".into())?;
    // The old root is now stacked under "."; detach it without touching the host.
    mount(None::<&str>, ".", None::<&str>, MsFlags::MS_SLAVE | MsFlags::MS_REC, None::<&str>)
        .ctx(|| "make old root slave".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detach old root".into())?;
    nix::unistd::chdir("/").ctx(|| "chdir /".into())
}

/// After pivot: hide masked paths, make read-only paths and the root read-only.
pub(crate) fn finish(spec: &Spec) -> Step {
    let linux = spec.linux().as_ref();
    for path in linux.and_then(|l| l.masked_paths().as_deref()).unwrap_or_default() {
        let p = Path::new(path);
        let res = if p.is_dir() {
            mount(Some("tmpfs"), p, Some("tmpfs"), MsFlags::MS_RDONLY, None::<&str>)
        } else if p.exists() {
            mount(Some("/dev/null"), p, None::<&str>, MsFlags::MS_BIND, None::<&str>)
        } else {
            Ok(())
        };
        res.ctx(|| format!("mask {path}"))?;
    }
    for path in linux.and_then(|l| l.readonly_paths().as_deref()).unwrap_or_default() {
        let p = Path::new(path);
        if !p.exists() {
            continue;
        }
        mount(Some(p), p, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
            .ctx(|| format!("bind read-only path {path}"))?;
        remount(p, MsFlags::MS_RDONLY | MsFlags::MS_REC)
            .ctx(|| format!("make {path} read-only"))?;
    }
    if spec.root().as_ref().and_then(|r| r.readonly()).unwrap_or(false) {
        remount(Path::new("/"), MsFlags::MS_RDONLY).ctx(|| "make rootfs read-only".into())?;
    }
    Ok(())
}

/// Joins `path` under `root`, resolving symlinks inside the root so a
/// symlink in the image cannot point a mount at the host.
pub(crate) fn secure_join(root: &Path, path: &Path) -> Step<PathBuf> {
    let mut parts: Vec<PathBuf> = Vec::new();
    let mut pending: Vec<PathBuf> = path.components().rev().map(|c| c.as_os_str().into()).collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        match Path::new(&part).components().next() {
            Some(Component::RootDir) | Some(Component::CurDir) | None => continue,
            Some(Component::ParentDir) => {
                parts.pop();
                continue;
            }
            _ => {}
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&parts);
        candidate.push(&part);
        match fs::read_link(&candidate) {
            Ok(target) => {
                links += 1;
                if links > 40 {
                    return Err(format!("too many symlinks in {}", path.display()));
                }
                if target.is_absolute() {
                    parts.clear();
                }
                pending.extend(target.components().rev().map(|c| c.as_os_str().into()));
            }
            Err(_) => parts.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(parts);
    Ok(out)
}

fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// A mount's options split into kernel flags, propagation and fs data.
#[derive(Debug, PartialEq)]
struct MountOptions {
    flags: MsFlags,
    propagation: MsFlags,
    bind: bool,
    recursive: bool,
    data: String,
}

impl MountOptions {
    fn parse(options: &[String]) -> Self {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            propagation: MsFlags::empty(),
            bind: false,
            recursive: false,
            data: String::new(),
        };
        let mut data = Vec::new();
        for opt in options {
            let (set, clear) = match opt.as_str() {
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "bind" => {
                    o.bind = true;
                    continue;
                }
                "rbind" => {
                    o.bind = true;
                    o.recursive = true;
                    continue;
                }
                other => {
                    if let Some(p) = propagation_flag(other) {
                        o.propagation |= p;
                    } else {
                        data.push(other);
                    }
                    continue;
                }
            };
            o.flags |= set;
            o.flags &= !clear;
        }
        o.data = data.join(",");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["nosuid", "strictatime", "mode=755", "size=65536k", "rprivate"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = MountOptions::parse(&opts);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        assert_eq!(o.data, "mode=755,size=65536k");
        assert!(!o.bind);
    }

    #[test]
    fn symlinks_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("etc")).unwrap();
        symlink("/etc", root.join("link")).unwrap();
        symlink("../../../..", root.join("up")).unwrap();
        assert_eq!(secure_join(root, Path::new("/link/passwd")).unwrap(), root.join("etc/passwd"));
        assert_eq!(secure_join(root, Path::new("/up/etc")).unwrap(), root.join("etc"));
    }
}
