//! Resource limits through cgroups, v1 and v2 behind one trait.
//!
//! The host decides the version: `/sys/fs/cgroup/cgroup.controllers` means a
//! pure v2 (unified) host; otherwise every v1 hierarchy in mountinfo is used,
//! and a hybrid host's extra v2 mount (which may list only hugetlb) is left
//! alone, as runc does.

mod device_filter;
mod v1;
mod v2;

use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::unistd::Pid;

use super::error::{ExecutorError, Result};

pub use v1::CgroupV1;
pub use v2::CgroupV2;

/// Where cgroupfs lives on every host we support.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long `remove` waits for a cgroup to empty after its last process died.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// The limits the executor applies, in OCI units (a v2 backend converts).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// Relative CPU weight in v1 shares (2..=262144); v2 maps it to cpu.weight.
    pub cpu_shares: Option<u64>,
    /// Microseconds of CPU per period; negative means unlimited.
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub cpuset_cpus: Option<String>,
    pub cpuset_mems: Option<String>,
    /// Bytes; -1 means unlimited.
    pub memory_limit: Option<i64>,
    /// Memory plus swap in bytes (OCI's meaning); -1 means unlimited swap.
    pub memory_swap: Option<i64>,
    /// Maximum number of tasks; 0 or negative means unlimited.
    pub pids_limit: Option<i64>,
    /// Device access rules, applied in order after an implicit "deny all"
    /// (a later rule overrides an earlier one). On v2 they become a BPF
    /// device program; there an empty list leaves the cgroup's program as is.
    pub devices: Vec<DeviceRule>,
}

/// One device cgroup rule, e.g. `allow c 1:3 rwm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    pub allow: bool,
    /// 'a' (all), 'b' (block) or 'c' (char).
    pub kind: char,
    /// None matches any number.
    pub major: Option<i64>,
    pub minor: Option<i64>,
    /// Some of "rwm".
    pub access: String,
}

impl DeviceRule {
    /// The rule in the v1 `devices.allow` / `devices.deny` syntax.
    fn v1_line(&self) -> String {
        let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
        format!("{} {}:{} {}", self.kind, num(self.major), num(self.minor), self.access)
    }
}

/// What a cgroup has used, read back for status and OOM reporting.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub memory_usage_bytes: u64,
    /// High-water mark where the kernel keeps one (v1 always, v2 since 5.19).
    pub memory_max_usage_bytes: Option<u64>,
    /// Processes the kernel OOM-killed in this cgroup.
    pub oom_kills: u64,
    pub pids_current: u64,
}

/// One container's cgroup. Implementations are cheap handles; creating one
/// touches nothing until `apply`.
pub trait CgroupManager: std::fmt::Debug + Send + Sync {
    fn version(&self) -> CgroupVersion;

    /// Creates the cgroup (and missing parents) and writes the limits.
    /// Safe to call again to update limits.
    fn apply(&self, resources: &Resources) -> Result<()>;

    /// Moves a process (all its threads) into the cgroup.
    fn add_process(&self, pid: Pid) -> Result<()>;

    /// The `cgroup.procs` files a process writes its own pid to in order to
    /// join; a forked child uses these because it must not allocate errors.
    fn procs_files(&self) -> Vec<PathBuf>;

    /// Per hierarchy, the name it gets under the container's /sys/fs/cgroup
    /// ("" for v2, which mounts at the top) and its host directory.
    fn container_views(&self) -> Vec<(String, PathBuf)>;

    /// Processes now in the cgroup.
    fn processes(&self) -> Result<Vec<Pid>>;

    fn stats(&self) -> Result<CgroupStats>;

    /// Sends SIGKILL to every process in the cgroup until it is empty.
    fn kill_all(&self) -> Result<()>;

    /// Removes the container's cgroup directories (not the caller's parent),
    /// waiting briefly for the kernel to let go of exited tasks. A cgroup that
    /// does not exist is not an error.
    fn remove(&self) -> Result<()>;
}

/// The host's cgroup version.
pub fn detect_version() -> CgroupVersion {
    if Path::new(CGROUP_ROOT).join("cgroup.controllers").exists() {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    }
}

/// The manager for the cgroup at `path`, relative to the hierarchy root
/// (e.g. `/berth/pod-a/ctr-1`), for this host's cgroup version.
pub fn manager_for(path: &Path) -> Result<Box<dyn CgroupManager>> {
    let rel = relative(path)?;
    Ok(match detect_version() {
        CgroupVersion::V2 => Box::new(CgroupV2::new(Path::new(CGROUP_ROOT), &rel)),
        CgroupVersion::V1 => Box::new(CgroupV1::from_mountinfo(&rel)?),
    })
}

/// `path` without its leading '/', refusing `..` so it cannot leave the hierarchy.
fn relative(path: &Path) -> Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(ExecutorError::Unsupported(format!(
                    "cgroup path {} leaves the hierarchy",
                    path.display()
                )))
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(ExecutorError::Unsupported(
            "the cgroup hierarchy root cannot be a container's cgroup".into(),
        ));
    }
    Ok(rel)
}

fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(ExecutorError::cgroup(path))
}

fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    fs::read_to_string(&path).map_err(ExecutorError::cgroup(path))
}

/// Reads a single number file; "max" reads as u64::MAX.
fn read_u64(dir: &Path, file: &str) -> Result<u64> {
    let text = read(dir, file)?;
    let text = text.trim();
    if text == "max" {
        return Ok(u64::MAX);
    }
    text.parse().map_err(|_| ExecutorError::Cgroup {
        path: dir.join(file),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a number: {text:?}"),
        ),
    })
}

/// The value of `key` in a flat-keyed file such as memory.events.
fn read_keyed(dir: &Path, file: &str, key: &str) -> Result<Option<u64>> {
    let text = read(dir, file)?;
    Ok(text.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        (parts.next() == Some(key)).then(|| parts.next().and_then(|v| v.parse().ok())).flatten()
    }))
}

fn read_procs(dir: &Path) -> Result<Vec<Pid>> {
    let path = dir.join("cgroup.procs");
    match fs::read_to_string(&path) {
        Ok(text) => {
            Ok(text.lines().filter_map(|l| l.trim().parse().ok()).map(Pid::from_raw).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ExecutorError::cgroup(path)(e)),
    }
}

/// Kills everything listed in `dir`'s cgroup.procs until it stays empty.
fn kill_listed(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    loop {
        let pids = read_procs(dir)?;
        if pids.is_empty() {
            return Ok(());
        }
        for pid in pids {
            // ESRCH: it exited between the read and the kill.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        if Instant::now() > deadline {
            return Err(ExecutorError::Cgroup {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "processes survive SIGKILL",
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// rmdir that retries while the kernel still holds exited tasks (EBUSY).
fn remove_dir(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(ExecutorError::cgroup(dir)(e)),
        }
    }
}

/// Removes the cgroup at `path` (relative to the hierarchy root) wherever
/// it is unused: no child cgroups and no processes. A parent that pods still
/// use stays; one that does not exist is not an error.
pub fn prune(path: &Path) -> Result<()> {
    for (_, dir) in manager_for(path)?.container_views() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        let has_children = entries.flatten().any(|e| e.file_type().is_ok_and(|t| t.is_dir()));
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        if has_children || !procs.trim().is_empty() {
            continue;
        }
        match fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // Busy: a pod's cgroup appeared meanwhile; it stays with it.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(ExecutorError::cgroup(dir)(e)),
        }
    }
    Ok(())
}

/// OCI/v1 cpu shares to a v2 cpu.weight, the formula runc and crun share.
fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 100;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_render_in_v1_syntax() {
        let rule = DeviceRule {
            allow: true,
            kind: 'c',
            major: Some(136),
            minor: None,
            access: "rwm".into(),
        };
        assert_eq!(rule.v1_line(), "c 136:* rwm");
    }

    #[test]
    fn shares_map_to_weight_like_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }

    #[test]
    fn cgroup_paths_cannot_escape() {
        assert!(relative(Path::new("/a/../../etc")).is_err());
        assert!(relative(Path::new("/")).is_err());
        assert_eq!(relative(Path::new("/berth/x")).unwrap(), PathBuf::from("berth/x"));
    }
}
