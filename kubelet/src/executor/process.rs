//! The forked side of the runtime: the intermediate process that joins the
//! container's cgroup and namespaces, and the container process it clones,
//! which sets itself up and execs the user's program.
//!
//! Everything here runs after fork() of a possibly multi-threaded runtime, so
//! it takes no locks the runtime's other threads may hold: no tracing, no
//! stdout, only system calls and allocation (glibc's fork resets malloc).
//! Failures go back to the runtime over the sync pipe.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sched::{clone, setns, unshare, CloneFlags};
use nix::unistd::{Gid, Pid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process, Spec};

use super::channel::{send, Message};
use super::console;
use super::rootfs::{self, Context, Step};
use super::seccomp;

/// Stack for the cloned container process until it execs.
const CHILD_STACK_BYTES: usize = 1 << 20;

/// What both container creation and exec do in the intermediate process.
pub(crate) struct Join {
    /// `cgroup.procs` files to write our pid to, before any namespace change.
    pub cgroup_procs: Vec<PathBuf>,
    /// Namespaces to enter, a user namespace first.
    pub namespaces: Vec<(OwnedFd, CloneFlags)>,
    pub sync: OwnedFd,
}

/// Where the container process's fds 0, 1 and 2 come from; None inherits.
pub(crate) type ChildStdio = Option<[OwnedFd; 3]>;

/// What init needs beyond `Join`, prepared by the runtime before fork.
pub(crate) struct InitPlan<'a> {
    pub spec: &'a Spec,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub cgroup_views: Vec<(String, PathBuf)>,
    pub cgroup_v2: bool,
    /// Namespaces to create, without the user namespace.
    pub new_namespaces: CloneFlags,
    pub new_userns: bool,
    /// The runtime writes a byte here once the user namespace's id maps are set.
    pub idmaps_done: OwnedFd,
    /// The container's state directory; init opens exec.fifo relative to it
    /// because after pivot_root the host path is out of reach.
    pub state_dir: OwnedFd,
    pub stdio: ChildStdio,
    /// With process.terminal: the connected console socket; the terminal
    /// then replaces `stdio`.
    pub console: Option<OwnedFd>,
    /// The spec's linux.seccomp, compiled.
    pub seccomp: Option<seccomp::Program>,
}

/// The intermediate process: join, then clone the container process as a
/// sibling (CLONE_PARENT) so the runtime can wait for it, report its pid,
/// exit. Never returns.
pub(crate) fn intermediate(
    join: &Join,
    new_namespaces: CloneFlags,
    before_clone: impl FnOnce() -> Step,
    mut body: impl FnMut() -> Step<Infallible>,
) -> ! {
    let result = (|| -> Step<Pid> {
        let me = std::process::id().to_string();
        for file in &join.cgroup_procs {
            std::fs::write(file, &me).ctx(|| format!("join cgroup {}", file.display()))?;
        }
        for (fd, kind) in &join.namespaces {
            setns(fd, *kind).ctx(|| format!("setns {kind:?}"))?;
        }
        before_clone()?;
        let mut stack = vec![0u8; CHILD_STACK_BYTES];
        let sync = &join.sync;
        let cb = Box::new(|| match body() {
            Err(e) => {
                send(sync, &Message::Error(e));
                1
            }
        });
        // SAFETY: the child does not share our memory (no CLONE_VM); it runs
        // the closure on its own copy of this stack and never returns into ours.
        unsafe {
            clone(cb, &mut stack, new_namespaces | CloneFlags::CLONE_PARENT, Some(libc::SIGCHLD))
        }
        .ctx(|| "clone container process".into())
    })();
    let code = match result {
        Ok(pid) => {
            send(&join.sync, &Message::Pid(pid.as_raw()));
            0
        }
        Err(e) => {
            send(&join.sync, &Message::Error(e));
            1
        }
    };
    // SAFETY: _exit skips the runtime's atexit handlers and destructors,
    // which belong to the parent.
    unsafe { libc::_exit(code) }
}

/// Before clone, when the container gets a new user namespace: unshare it
/// and wait for the runtime to write our id maps.
pub(crate) fn enter_new_userns(plan: &InitPlan, sync: &OwnedFd) -> Step {
    if !plan.new_userns {
        return Ok(());
    }
    unshare(CloneFlags::CLONE_NEWUSER).ctx(|| "unshare user namespace".into())?;
    send(sync, &Message::NeedIdMaps);
    let mut byte = [0u8; 1];
    // SAFETY: reads into a live one-byte buffer.
    let n = unsafe { libc::read(plan.idmaps_done.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
    if n != 1 {
        return Err("runtime went away before writing id maps".into());
    }
    nix::unistd::setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .ctx(|| "setgid 0 in user namespace".into())?;
    nix::unistd::setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .ctx(|| "setuid 0 in user namespace".into())
}

/// The container's init: build the filesystem, wait for start, exec.
pub(crate) fn init(plan: &InitPlan, sync: &OwnedFd) -> Step<Infallible> {
    let spec = plan.spec;
    let process = spec.process().as_ref().ok_or("spec has no process")?;
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    rootfs::prepare(&rootfs::RootfsPlan {
        spec,
        rootfs: &plan.rootfs,
        bundle: &plan.bundle,
        cgroup_views: &plan.cgroup_views,
        cgroup_v2: plan.cgroup_v2,
        new_cgroupns: plan.new_namespaces.contains(CloneFlags::CLONE_NEWCGROUP),
    })?;
    let terminal = plan.console.as_ref().map(console::setup).transpose()?;
    if let Some(name) = spec.hostname() {
        nix::unistd::sethostname(name).ctx(|| "sethostname".into())?;
    }
    if let Some(domain) = spec.domainname() {
        // SAFETY: passes a live buffer and its length.
        if unsafe { libc::setdomainname(domain.as_ptr().cast(), domain.len()) } != 0 {
            return Err(format!("setdomainname: {}", std::io::Error::last_os_error()));
        }
    }
    for (key, value) in
        spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()).into_iter().flatten()
    {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).ctx(|| format!("sysctl {key}"))?;
    }
    rootfs::finish(spec)?;
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    // Its own session, so a terminal signal aimed at the runtime misses it.
    let _ = nix::unistd::setsid();
    if let Some(slave) = &terminal {
        console::attach(slave)?;
    }
    send(sync, &Message::Ready);

    // Blocks until `start` opens the fifo for reading.
    let fifo = nix::fcntl::openat(
        &plan.state_dir,
        "exec.fifo",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| "open exec.fifo".into())?;
    nix::unistd::write(&fifo, b"0").ctx(|| "write exec.fifo".into())?;
    drop(fifo);
    match terminal {
        // The terminal is fds 0-2 already; the slave's own fd closes on exec.
        Some(_) => exec_process(process, &None, plan.seccomp.as_ref()),
        None => exec_process(process, &plan.stdio, plan.seccomp.as_ref()),
    }
}

/// Applies the process's rlimits, stdio, identity, capabilities,
/// no_new_privileges and seccomp filters, then execs it. Shared by init and
/// exec.
pub(crate) fn exec_process(
    process: &Process,
    stdio: &ChildStdio,
    seccomp: Option<&seccomp::Program>,
) -> Step<Infallible> {
    let args = process.args().as_deref().unwrap_or_default();
    let program = args.first().ok_or("process.args is empty")?;
    let env = process.env().as_deref().unwrap_or_default();
    let path = resolve(program, env)?;
    let c_args = args
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .ctx(|| "NUL in args".into())?;
    let c_env = env
        .iter()
        .map(|e| CString::new(e.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .ctx(|| "NUL in env".into())?;
    let c_path = CString::new(path.as_os_str().as_bytes()).ctx(|| "NUL in path".into())?;

    for rl in process.rlimits().as_deref().unwrap_or_default() {
        let resource =
            rlimit_resource(rl.typ()).ok_or_else(|| format!("rlimit {:?} unknown", rl.typ()))?;
        nix::sys::resource::setrlimit(resource, rl.soft(), rl.hard())
            .ctx(|| format!("setrlimit {:?}", rl.typ()))?;
    }
    if let Some(fds) = stdio {
        for (fd, target) in fds.iter().zip(0..) {
            // SAFETY: dup2 onto the standard fds, which the exec'd program expects.
            if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
                return Err(format!("dup2 stdio: {}", std::io::Error::last_os_error()));
            }
        }
    }
    if process.terminal().unwrap_or(false) && stdio.is_some() {
        // A session of its own, with the terminal on fd 0 as its controlling one.
        nix::unistd::setsid().ctx(|| "setsid".into())?;
        // SAFETY: TIOCSCTTY takes an integer argument.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(format!("TIOCSCTTY: {}", std::io::Error::last_os_error()));
        }
    }
    // The kernel takes a filter from a process with no_new_privs or with
    // CAP_SYS_ADMIN. Without no_new_privs the filter goes on while this
    // process still has every capability (as runc does), so the calls that
    // set the identity below must pass it; with no_new_privs it goes on
    // last.
    let no_new_privs = process.no_new_privileges().unwrap_or(false);
    if let (Some(program), false) = (seccomp, no_new_privs) {
        seccomp::install(program)?;
    }
    set_identity_and_caps(process)?;
    if no_new_privs {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
        }
        if let Some(program) = seccomp {
            seccomp::install(program)?;
        }
    }
    nix::unistd::chdir(process.cwd()).ctx(|| format!("chdir {}", process.cwd().display()))?;
    // The runtime ignores SIGPIPE (Rust does) and may block signals; the
    // program must start with the defaults.
    // SAFETY: resetting a disposition to default is always sound.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    }
    .ctx(|| "reset SIGPIPE".into())?;
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .ctx(|| "reset signal mask".into())?;
    // A program that some process still holds open for writing (a copy
    // racing a fork elsewhere, whose child inherited the descriptor) fails
    // with ETXTBSY until that descriptor closes, which takes moments.
    let mut attempts = 0;
    let err = loop {
        let err = nix::unistd::execve(&c_path, &c_args, &c_env).unwrap_err();
        if err != nix::errno::Errno::ETXTBSY || attempts == 200 {
            break err;
        }
        attempts += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    Err(format!("exec {program}: {err}"))
}

/// Finds the program in the container's PATH, as execvp would, but with the
/// container's environment rather than the runtime's.
fn resolve(program: &str, env: &[String]) -> Step<PathBuf> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path_var
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok() && p.is_file())
        .ok_or_else(|| format!("exec {program}: not found in PATH {path_var}"))
}

fn set_identity_and_caps(process: &Process) -> Step {
    let user = process.user();
    let caps_spec = process.capabilities().as_ref();
    if let Some(c) = caps_spec {
        let wanted = to_caps(c.bounding());
        let current =
            caps::read(None, caps::CapSet::Bounding).ctx(|| "read bounding set".into())?;
        for cap in current.difference(&wanted) {
            caps::drop(None, caps::CapSet::Bounding, *cap)
                .ctx(|| format!("drop {cap} from bounding set"))?;
        }
    }
    // Keep permitted capabilities across the switch to a non-root uid.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let gids: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    match nix::unistd::setgroups(&gids) {
        // A user namespace with setgroups denied: nothing to drop.
        Ok(()) | Err(nix::Error::EPERM) if gids.is_empty() => {}
        r => r.ctx(|| "setgroups".into())?,
    }
    let gid = Gid::from_raw(user.gid());
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {gid}"))?;
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {uid}"))?;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    if let Some(c) = caps_spec {
        // Inheritable first (while permitted is still full), permitted last
        // (effective must stay within it).
        caps::set(None, caps::CapSet::Inheritable, &to_caps(c.inheritable()))
            .ctx(|| "set inheritable caps".into())?;
        caps::set(None, caps::CapSet::Effective, &to_caps(c.effective()))
            .ctx(|| "set effective caps".into())?;
        caps::set(None, caps::CapSet::Permitted, &to_caps(c.permitted()))
            .ctx(|| "set permitted caps".into())?;
        let _ = caps::clear(None, caps::CapSet::Ambient);
        for cap in to_caps(c.ambient()) {
            // The kernel refuses ambient caps not also inheritable; runc ignores that too.
            let _ = caps::raise(None, caps::CapSet::Ambient, cap);
        }
    }
    Ok(())
}

/// OCI capability names to the caps crate's; names this kernel library does
/// not know are skipped, as runc does with unknown capabilities.
fn to_caps(set: &Option<oci_spec::runtime::Capabilities>) -> caps::CapsHashSet {
    set.iter()
        .flatten()
        .filter_map(|c| {
            let name = c.to_string();
            let name = name.strip_prefix("CAP_").unwrap_or(&name);
            format!("CAP_{name}").parse().ok()
        })
        .collect()
}

fn rlimit_resource(t: PosixRlimitType) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match t {
        PosixRlimitType::RlimitCpu => R::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => R::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => R::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => R::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => R::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => R::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => R::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => R::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => R::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => R::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => R::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => R::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => R::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => R::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => R::RLIMIT_RTTIME,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_capability_names_map_to_caps() {
        let set: oci_spec::runtime::Capabilities =
            serde_json::from_str(r#"["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]"#)
                .unwrap();
        let mapped = to_caps(&Some(set));
        assert_eq!(mapped.len(), 3);
        assert!(mapped.contains(&caps::Capability::CAP_NET_BIND_SERVICE));
    }
}
