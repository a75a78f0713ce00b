//! A CRI container's process side: its exit watcher, stop with grace
//! period, exec with captured output, and usage read back from its cgroup.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;

use super::error::{CriError, Result};
use crate::executor::cgroups::{CgroupManager, DeviceRule};
use crate::executor::parse_record;

/// ExecSync output is capped per stream at what the CRI allows.
pub const MAX_EXEC_OUTPUT: usize = 16 << 20;

/// How a watched process ended, as far as this process can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The shell's convention: the code, or 128 + signal.
    Code(i32),
    /// Someone else reaped it (it is not our child): the code is lost.
    Unknown,
}

/// Waits until `pid` has exited, without reaping it: the caller reaps with
/// [`reap`]. Returns None when `stop` fires first.
pub async fn wait_exit(pid: i32, stop: &tokio_util::sync::CancellationToken) -> Result<Option<()>> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        let errno = nix::Error::last();
        if errno == nix::Error::ESRCH {
            return Ok(Some(())); // already gone (and reaped)
        }
        return Err(CriError::sys(format!("pidfd_open {pid}"))(errno));
    }
    // SAFETY: the syscall returned a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same
    // fd until the AsyncFd is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| CriError::Io {
            path: PathBuf::from(format!("pidfd of {pid}")),
            source: std::io::Error::other(e.to_string()),
        })?;
    tokio::select! {
        ready = fd.readable() => {
            // A pidfd stays readable once the process has exited.
            let _exited = ready
                .map_err(|e| CriError::Io { path: PathBuf::from(format!("pidfd of {pid}")), source: e })?;
            Ok(Some(()))
        }
        _ = stop.cancelled() => Ok(None),
    }
}

/// Collects the exit status of an exited process if it is our child.
pub fn reap(pid: i32) -> Exit {
    loop {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Exit::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Exit::Code(128 + sig as i32),
            Err(nix::Error::EINTR) => continue,
            _ => return Exit::Unknown,
        }
    }
}

/// The signal an image asks to be stopped with (`SIGQUIT`, `QUIT` or `3`).
pub fn stop_signal(spelled: Option<&str>) -> Signal {
    let Some(s) = spelled.map(str::trim).filter(|s| !s.is_empty()) else {
        return Signal::SIGTERM;
    };
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).unwrap_or(Signal::SIGTERM);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    name.parse().unwrap_or(Signal::SIGTERM)
}

/// Splits a CRI log (as the executor writes exec output) back into the
/// stdout and stderr bytes, each capped at [`MAX_EXEC_OUTPUT`].
pub fn split_cri_log(text: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for record in text.split(|b| *b == b'\n').filter_map(parse_record) {
        let sink = if record.stderr { &mut err } else { &mut out };
        let room = MAX_EXEC_OUTPUT.saturating_sub(sink.len());
        sink.extend_from_slice(&record.content[..record.content.len().min(room)]);
        // A full line ends with the newline the log format took off.
        if record.full && sink.len() < MAX_EXEC_OUTPUT {
            sink.push(b'\n');
        }
    }
    (out, err)
}

/// CPU time used by the cgroup, in nanoseconds, where the host tells it.
pub fn cpu_usage_nanos(cgroup: &dyn CgroupManager) -> Option<u64> {
    for (name, dir) in cgroup.container_views() {
        if name.is_empty() {
            // v2: cpu.stat has usage_usec.
            let text = fs::read_to_string(dir.join("cpu.stat")).ok()?;
            return text.lines().find_map(|l| {
                let v = l.strip_prefix("usage_usec ")?;
                v.trim().parse::<u64>().ok().map(|us| us * 1000)
            });
        }
        if name.split(',').any(|c| c == "cpuacct") {
            let text = fs::read_to_string(dir.join("cpuacct.usage")).ok()?;
            return text.trim().parse().ok();
        }
    }
    None
}

/// The device rules a v1 cgroup grants now (its `devices.list`), so that
/// re-applying limits keeps them; empty on v2, which has no such file.
pub fn current_device_rules(cgroup: &dyn CgroupManager) -> Vec<DeviceRule> {
    let Some(dir) = cgroup
        .container_views()
        .into_iter()
        .find(|(name, _)| name.split(',').any(|c| c == "devices"))
        .map(|(_, dir)| dir)
    else {
        return Vec::new();
    };
    let text = fs::read_to_string(dir.join("devices.list")).unwrap_or_default();
    text.lines().filter_map(parse_device_rule).collect()
}

/// `c 1:3 rwm` or `a *:* rwm`.
fn parse_device_rule(line: &str) -> Option<DeviceRule> {
    let mut parts = line.split_whitespace();
    let kind = parts.next()?.chars().next()?;
    let (major, minor) = parts.next()?.split_once(':')?;
    let num = |s: &str| if s == "*" { Some(None) } else { s.parse().ok().map(Some) };
    Some(DeviceRule {
        allow: true,
        kind,
        major: num(major)?,
        minor: num(minor)?,
        access: parts.next()?.to_string(),
    })
}

/// Bytes and inodes under `dir`, not crossing into other filesystems.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = fs::symlink_metadata(dir) else { return (0, 0) };
    let dev = top.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// A unique scratch file for one exec's output.
pub fn exec_log_path(root: &Path, container_id: &str) -> Result<PathBuf> {
    let dir = root.join("exec");
    fs::create_dir_all(&dir).map_err(CriError::io(&dir))?;
    Ok(dir.join(format!("{container_id}-{}.log", super::state::new_id()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_output_comes_back_per_stream() {
        let log = b"2026-01-01T00:00:00.000000000Z stdout F hello\n\
2026-01-01T00:00:00.000000000Z stderr F oops\n\
2026-01-01T00:00:00.000000000Z stdout P par\n\
2026-01-01T00:00:00.000000000Z stdout F tial\n\
2026-01-01T00:00:00.000000000Z stdout F \n";
        let (out, err) = split_cri_log(log);
        assert_eq!(out, b"hello\npartial\n\n");
        assert_eq!(err, b"oops\n");
    }

    #[test]
    fn stop_signals_parse_in_every_spelling() {
        assert_eq!(stop_signal(None), Signal::SIGTERM);
        assert_eq!(stop_signal(Some("SIGQUIT")), Signal::SIGQUIT);
        assert_eq!(stop_signal(Some("int")), Signal::SIGINT);
        assert_eq!(stop_signal(Some("9")), Signal::SIGKILL);
        assert_eq!(stop_signal(Some("bogus")), Signal::SIGTERM);
    }

    #[test]
    fn device_lists_parse() {
        let r = parse_device_rule("c 136:* rwm").unwrap();
        assert_eq!((r.kind, r.major, r.minor, r.access.as_str()), ('c', Some(136), None, "rwm"));
        assert!(parse_device_rule("garbage").is_none());
    }
}
