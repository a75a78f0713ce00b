//! cgroup v2: one unified hierarchy, controllers enabled down the tree.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use super::{
    device_filter, kill_listed, read, read_keyed, read_procs, read_u64, remove_dir,
    shares_to_weight, write, CgroupManager, CgroupStats, CgroupVersion, Resources,
};
use crate::executor::error::{ExecutorError, Result};

/// The controllers a container's limits need, enabled in every ancestor.
const CONTROLLERS: [&str; 4] = ["cpu", "cpuset", "memory", "pids"];

/// A container cgroup on a pure v2 host.
#[derive(Debug, Clone)]
pub struct CgroupV2 {
    root: PathBuf,
    rel: PathBuf,
}

impl CgroupV2 {
    pub(super) fn new(root: &Path, rel: &Path) -> Self {
        Self { root: root.to_path_buf(), rel: rel.to_path_buf() }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(&self.rel)
    }

    /// Creates each missing level and enables our controllers in each parent,
    /// since a v2 controller only reaches a child its parent delegates to.
    fn create(&self) -> Result<()> {
        let mut dir = self.root.clone();
        for part in self.rel.iter() {
            let available = read(&dir, "cgroup.controllers")?;
            let wanted = CONTROLLERS
                .iter()
                .filter(|c| available.split_whitespace().any(|a| a == **c))
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(" ");
            if !wanted.is_empty() {
                write(&dir, "cgroup.subtree_control", &wanted)?;
            }
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ExecutorError::cgroup(&dir)(e)),
            }
        }
        Ok(())
    }
}

impl CgroupManager for CgroupV2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        self.create()?;
        let dir = self.dir();
        if let Some(shares) = r.cpu_shares {
            write(&dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        if r.cpu_quota.is_some() || r.cpu_period.is_some() {
            let quota = match r.cpu_quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".to_string(),
            };
            let period = r.cpu_period.unwrap_or(100_000);
            write(&dir, "cpu.max", &format!("{quota} {period}"))?;
        }
        if let Some(cpus) = &r.cpuset_cpus {
            write(&dir, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = &r.cpuset_mems {
            write(&dir, "cpuset.mems", mems)?;
        }
        if let Some(limit) = r.memory_limit {
            let value = if limit > 0 { limit.to_string() } else { "max".into() };
            write(&dir, "memory.max", &value)?;
        }
        if let Some(swap) = r.memory_swap {
            // OCI gives memory+swap; v2 wants swap alone.
            let value = match (swap, r.memory_limit) {
                (-1, _) => "max".to_string(),
                (s, Some(l)) if l > 0 => s.saturating_sub(l).max(0).to_string(),
                (s, _) => s.to_string(),
            };
            if dir.join("memory.swap.max").exists() {
                write(&dir, "memory.swap.max", &value)?;
            }
        }
        if let Some(limit) = r.pids_limit {
            let value = if limit > 0 { limit.to_string() } else { "max".into() };
            write(&dir, "pids.max", &value)?;
        }
        if !r.devices.is_empty() {
            device_filter::apply(&dir, &r.devices)?;
        }
        Ok(())
    }

    fn add_process(&self, pid: Pid) -> Result<()> {
        write(&self.dir(), "cgroup.procs", &pid.to_string())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.dir().join("cgroup.procs")]
    }

    fn container_views(&self) -> Vec<(String, PathBuf)> {
        vec![(String::new(), self.dir())]
    }

    fn processes(&self) -> Result<Vec<Pid>> {
        read_procs(&self.dir())
    }

    fn stats(&self) -> Result<CgroupStats> {
        let dir = self.dir();
        let peak = dir.join("memory.peak");
        Ok(CgroupStats {
            memory_usage_bytes: read_u64(&dir, "memory.current")?,
            memory_max_usage_bytes: if peak.exists() {
                Some(read_u64(&dir, "memory.peak")?)
            } else {
                None
            },
            oom_kills: read_keyed(&dir, "memory.events", "oom_kill")?.unwrap_or(0),
            pids_current: read_u64(&dir, "pids.current")?,
        })
    }

    fn kill_all(&self) -> Result<()> {
        let dir = self.dir();
        if dir.join("cgroup.kill").exists() {
            write(&dir, "cgroup.kill", "1")?;
        }
        kill_listed(&dir)
    }

    fn remove(&self) -> Result<()> {
        remove_dir(&self.dir())
    }
}
