//! A pod sandbox: a holder process of berth's own that creates the pod's
//! network, IPC and UTS namespaces (network and IPC only where the pod does
//! not share the host's) and keeps them alive, their bind mounts
//! under the sandbox's directory (so containers join them by path and they
//! outlive a holder that dies), and the pod's cgroup.
//!
//! The holder is a forked child that does nothing after setup but wait for
//! SIGKILL; it needs no image and no exec, which keeps sandbox start fast.

use std::ffi::CString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::cri_v1 as cri;
use nix::mount::{MntFlags, MsFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::error::{CriError, Result};
use super::state::{process_start, HostNamespaces};
use crate::executor::cgroups::{self, DeviceRule, Resources};

/// The namespaces a sandbox may keep, by their /proc/<pid>/ns names.
pub const POD_NAMESPACES: [&str; 3] = ["net", "ipc", "uts"];

/// Which host namespaces `config` asks its pod to share.
pub fn host_namespaces(config: &cri::PodSandboxConfig) -> HostNamespaces {
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .cloned()
        .unwrap_or_default();
    let node = cri::NamespaceMode::Node as i32;
    HostNamespaces {
        network: options.network == node,
        ipc: options.ipc == node,
        pid: options.pid == node,
    }
}

/// The namespaces a sandbox sharing `host` keeps of its own: always UTS
/// (so a pod's hostname never changes the node's), network and IPC unless
/// it shares the host's.
pub fn own_namespaces(host: HostNamespaces) -> Vec<&'static str> {
    POD_NAMESPACES
        .into_iter()
        .filter(|name| match *name {
            "net" => !host.network,
            "ipc" => !host.ipc,
            _ => true,
        })
        .collect()
}

/// The holder's cgroup, a child of the pod's: on cgroup v2 a cgroup with
/// processes cannot also delegate controllers to its children, so the pod
/// cgroup itself stays empty.
const HOLDER_CGROUP: &str = "sandbox";

/// How long we wait for a killed holder to be gone.
const HOLDER_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest hostname the kernel takes.
const MAX_HOSTNAME: usize = 64;

/// A running holder process.
#[derive(Debug, Clone, Copy)]
pub struct Holder {
    pub pid: i32,
    pub start: u64,
}

/// The files a sandbox gives each of its containers, by where they go.
pub const ETC_FILES: [(&str, &str); 2] =
    [("hostname", "/etc/hostname"), ("resolv.conf", "/etc/resolv.conf")];

/// Writes the pod's /etc/hostname (the node's where the config sets none,
/// as the pod's UTS namespace then keeps the node's name) and (when the
/// config has DNS settings) /etc/resolv.conf into the sandbox directory,
/// for containers to mount.
pub fn write_etc_files(sandbox_dir: &Path, config: &cri::PodSandboxConfig) -> Result<()> {
    let hostname = if config.hostname.is_empty() {
        nix::unistd::gethostname()
            .map_err(CriError::sys("read the node's hostname"))?
            .to_string_lossy()
            .into_owned()
    } else {
        config.hostname.clone()
    };
    let path = sandbox_dir.join("hostname");
    fs::write(&path, format!("{hostname}\n")).map_err(CriError::io(&path))?;
    if let Some(dns) = &config.dns_config {
        let mut text = String::new();
        if !dns.searches.is_empty() {
            text.push_str(&format!("search {}\n", dns.searches.join(" ")));
        }
        for server in &dns.servers {
            text.push_str(&format!("nameserver {server}\n"));
        }
        if !dns.options.is_empty() {
            text.push_str(&format!("options {}\n", dns.options.join(" ")));
        }
        let path = sandbox_dir.join("resolv.conf");
        fs::write(&path, text).map_err(CriError::io(&path))?;
    }
    Ok(())
}

/// Where a sandbox's namespace bind mounts live.
pub fn ns_path(sandbox_dir: &Path, name: &str) -> PathBuf {
    sandbox_dir.join("ns").join(name)
}

/// Starts the holder with fresh namespaces (but for the host ones in
/// `host`) and `hostname`, and bind-mounts its own namespaces under
/// `sandbox_dir/ns/`. On error nothing is left behind.
pub fn start_holder(sandbox_dir: &Path, hostname: &str, host: HostNamespaces) -> Result<Holder> {
    if hostname.len() > MAX_HOSTNAME || hostname.contains('\0') {
        return Err(CriError::InvalidArgument(format!("hostname {hostname:?} is not valid")));
    }
    let name = CString::new(hostname)
        .map_err(|_| CriError::InvalidArgument("hostname contains NUL".into()))?;
    let mut flags = libc::CLONE_NEWUTS;
    if !host.network {
        flags |= libc::CLONE_NEWNET;
    }
    if !host.ipc {
        flags |= libc::CLONE_NEWIPC;
    }
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(CriError::sys("pipe for sandbox holder"))?;
    // SAFETY: the child runs only `holder_main`, which makes raw system
    // calls on memory prepared before the fork and never returns.
    let pid = match unsafe { nix::unistd::fork() }.map_err(CriError::sys("fork sandbox holder"))? {
        ForkResult::Child => holder_main(&name, flags, ready_w.as_raw_fd()),
        ForkResult::Parent { child } => child,
    };
    drop(ready_w);
    let mut status = [0u8; 8];
    let got = read_full(&ready_r, &mut status);
    let step = i32::from_ne_bytes([status[0], status[1], status[2], status[3]]);
    let errno = i32::from_ne_bytes([status[4], status[5], status[6], status[7]]);
    if got != status.len() || step != 0 {
        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        let what = match step {
            1 => "unshare namespaces",
            2 => "set hostname",
            3 => "bring up loopback",
            _ => "start",
        };
        return Err(CriError::Sys {
            context: format!("sandbox holder: {what}"),
            source: nix::Error::from_raw(errno),
        });
    }
    let holder = Holder { pid: pid.as_raw(), start: process_start(pid.as_raw()).unwrap_or(0) };
    if let Err(e) = bind_namespaces(sandbox_dir, pid, host) {
        stop_holder(holder);
        unmount_namespaces(sandbox_dir);
        return Err(e);
    }
    tracing::info!(pid = holder.pid, dir = %sandbox_dir.display(), "sandbox holder started");
    Ok(holder)
}

fn read_full(fd: &std::os::fd::OwnedFd, buf: &mut [u8]) -> usize {
    let mut done = 0;
    while done < buf.len() {
        match nix::unistd::read(fd, &mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
    }
    done
}

/// The holder: new namespaces (`flags` for unshare), hostname, loopback up
/// in a new network namespace, then report and wait. Reports `(step,
/// errno)`, step 0 meaning ready.
fn holder_main(hostname: &CString, flags: libc::c_int, ready: i32) -> ! {
    let report = |step: i32, errno: i32| {
        let mut msg = [0u8; 8];
        msg[..4].copy_from_slice(&step.to_ne_bytes());
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writing a stack buffer to a pipe we own.
        unsafe { libc::write(ready, msg.as_ptr().cast(), msg.len()) };
    };
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: raw system calls on valid pointers; no allocation happens here.
    unsafe {
        if libc::unshare(flags) != 0 {
            report(1, errno());
            libc::_exit(1);
        }
        let len = hostname.as_bytes().len();
        if len > 0 && libc::sethostname(hostname.as_ptr(), len) != 0 {
            report(2, errno());
            libc::_exit(1);
        }
        if flags & libc::CLONE_NEWNET != 0 {
            if let Err(e) = loopback_up() {
                report(3, e);
                libc::_exit(1);
            }
        }
        libc::prctl(libc::PR_SET_NAME, c"berth-sandbox".as_ptr());
        // Not pinning the directory it was started from.
        libc::chdir(c"/".as_ptr());
        report(0, 0);
        // Nothing of the runtime's (its sockets, pipes, files) stays open here.
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        loop {
            libc::pause();
        }
    }
}

/// Sets IFF_UP on `lo` in the new network namespace, so a pod's containers
/// reach each other on localhost without any network plugin.
unsafe fn loopback_up() -> std::result::Result<(), i32> {
    let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if sock < 0 {
        return Err(errno());
    }
    let mut req: libc::ifreq = std::mem::zeroed();
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let mut result = Ok(());
    if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) != 0 {
        result = Err(errno());
    } else {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req) != 0 {
            result = Err(errno());
        }
    }
    libc::close(sock);
    result
}

fn bind_namespaces(sandbox_dir: &Path, pid: Pid, host: HostNamespaces) -> Result<()> {
    let dir = sandbox_dir.join("ns");
    fs::create_dir_all(&dir).map_err(CriError::io(&dir))?;
    for name in own_namespaces(host) {
        let target = ns_path(sandbox_dir, name);
        fs::File::create(&target).map_err(CriError::io(&target))?;
        let source = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        nix::mount::mount(Some(&source), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(CriError::sys(format!("bind {} to {}", source.display(), target.display())))?;
    }
    Ok(())
}

/// Unmounts the namespace bind mounts; missing ones (the host's namespaces
/// a sandbox shares have none) are fine.
pub fn unmount_namespaces(sandbox_dir: &Path) {
    for name in POD_NAMESPACES {
        let target = ns_path(sandbox_dir, name);
        match nix::mount::umount2(&target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(e) => tracing::warn!(path = %target.display(), error = %e, "unmount namespace"),
        }
    }
}

/// Kills the holder if it is still the process we started, and reaps it if
/// it is our child. Idempotent.
pub fn stop_holder(holder: Holder) {
    if holder.pid <= 0 || process_start(holder.pid) != Some(holder.start) {
        reap(holder.pid);
        return;
    }
    let pid = Pid::from_raw(holder.pid);
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let deadline = Instant::now() + HOLDER_EXIT_TIMEOUT;
    while Instant::now() < deadline {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            // Reaped, or not ours (a restarted service): then it is gone
            // once /proc shows it dead or as a zombie of its new parent.
            Ok(_) => return,
            Err(_) if process_start(holder.pid) != Some(holder.start) => return,
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    tracing::warn!(pid = holder.pid, "sandbox holder survived SIGKILL");
}

fn reap(pid: i32) {
    if pid > 0 {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
    }
}

/// Whether the holder we started is still running.
pub fn holder_alive(holder: Holder) -> bool {
    holder.pid > 0 && process_start(holder.pid) == Some(holder.start)
}

/// Every device allowed: the pod level must not narrow what a container's
/// own cgroup grants (cgroup v1 devices are hierarchical).
fn pod_level(mut resources: Resources) -> Resources {
    resources.devices =
        vec![DeviceRule { allow: true, kind: 'a', major: None, minor: None, access: "rwm".into() }];
    resources
}

/// Creates the pod cgroup with the pod's limits and moves the holder into
/// its own child of it.
pub fn create_cgroups(pod: &Path, limits: Resources, holder: Holder) -> Result<()> {
    cgroups::manager_for(pod)?.apply(&pod_level(limits))?;
    let holder_cg = cgroups::manager_for(&pod.join(HOLDER_CGROUP))?;
    holder_cg.apply(&pod_level(Resources::default()))?;
    holder_cg.add_process(Pid::from_raw(holder.pid))?;
    Ok(())
}

/// Removes the holder's and the pod's cgroups (the QoS level above stays:
/// other pods share it). Missing ones are fine.
pub fn remove_cgroups(pod: &Path) -> Result<()> {
    let holder_cg = cgroups::manager_for(&pod.join(HOLDER_CGROUP))?;
    holder_cg.kill_all()?;
    holder_cg.remove()?;
    cgroups::manager_for(pod)?.remove()?;
    Ok(())
}
