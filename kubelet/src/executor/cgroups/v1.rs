//! cgroup v1: one directory per mounted hierarchy.

use std::fs;
use std::path::{Path, PathBuf};

use nix::unistd::Pid;

use super::{
    kill_listed, read, read_keyed, read_procs, read_u64, remove_dir, write, CgroupManager,
    CgroupStats, CgroupVersion, Resources,
};
use crate::executor::error::{ExecutorError, Result};

/// A mounted v1 hierarchy: where it is and which controllers it carries.
#[derive(Debug, Clone)]
struct Hierarchy {
    mount_point: PathBuf,
    /// e.g. ["cpu", "cpuacct"] or ["name=systemd"].
    controllers: Vec<String>,
}

impl Hierarchy {
    fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// A container cgroup on a v1 (or hybrid) host: the same relative path in
/// every v1 hierarchy, as runc does, so the container sees all of them.
#[derive(Debug, Clone)]
pub struct CgroupV1 {
    hierarchies: Vec<Hierarchy>,
    rel: PathBuf,
}

impl CgroupV1 {
    /// Finds the v1 hierarchies in this process's mountinfo.
    pub(super) fn from_mountinfo(rel: &Path) -> Result<Self> {
        let path = Path::new("/proc/self/mountinfo");
        let text = fs::read_to_string(path).map_err(ExecutorError::io(path))?;
        let hierarchies = parse_mountinfo(&text);
        if hierarchies.is_empty() {
            return Err(ExecutorError::Unsupported(
                "no cgroup v1 hierarchy is mounted and /sys/fs/cgroup is not cgroup v2".into(),
            ));
        }
        Ok(Self { hierarchies, rel: rel.to_path_buf() })
    }

    fn dir(&self, h: &Hierarchy) -> PathBuf {
        h.mount_point.join(&self.rel)
    }

    fn controller_dir(&self, controller: &str) -> Option<PathBuf> {
        self.hierarchies.iter().find(|h| h.has(controller)).map(|h| self.dir(h))
    }

    /// Creates each missing level; cpuset levels start empty and would refuse
    /// tasks, so they inherit the parent's cpus and mems.
    fn create(&self, h: &Hierarchy) -> Result<()> {
        let mut dir = h.mount_point.clone();
        for part in self.rel.iter() {
            let parent = dir.clone();
            dir.push(part);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(ExecutorError::cgroup(&dir)(e)),
            }
            if h.has("cpuset") {
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if read(&dir, file)?.trim().is_empty() {
                        write(&dir, file, read(&parent, file)?.trim())?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            if right.next()? != "cgroup" {
                return None;
            }
            let mount_point = PathBuf::from(left.split_whitespace().nth(4)?);
            let super_opts = right.nth(1)?;
            let controllers = super_opts
                .split(',')
                .filter(|o| !matches!(*o, "rw" | "ro") && !o.starts_with("release_agent"))
                .filter(|o| !matches!(*o, "clone_children" | "noprefix" | "xattr"))
                .map(str::to_string)
                .collect::<Vec<_>>();
            Some(Hierarchy { mount_point, controllers })
        })
        .collect()
}

impl CgroupManager for CgroupV1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        for h in &self.hierarchies {
            self.create(h)?;
        }
        if let Some(dir) = self.controller_dir("cpu") {
            if let Some(shares) = r.cpu_shares {
                write(&dir, "cpu.shares", &shares.to_string())?;
            }
            // Period first: the kernel checks quota against the current period.
            if let Some(period) = r.cpu_period {
                write(&dir, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = r.cpu_quota {
                write(&dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let Some(dir) = self.controller_dir("cpuset") {
            if let Some(cpus) = &r.cpuset_cpus {
                write(&dir, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = &r.cpuset_mems {
                write(&dir, "cpuset.mems", mems)?;
            }
        }
        if let Some(dir) = self.controller_dir("memory") {
            if let Some(limit) = r.memory_limit {
                // memsw must stay >= limit, so lift it before lowering or raising.
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(&dir, "memory.memsw.limit_in_bytes", "-1")?;
                }
                write(&dir, "memory.limit_in_bytes", &limit.to_string())?;
            }
            if let Some(swap) = r.memory_swap {
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(&dir, "memory.memsw.limit_in_bytes", &swap.to_string())?;
                } else if swap != -1 && Some(swap) != r.memory_limit {
                    tracing::warn!(dir = %dir.display(), "swap accounting is off; memory.swap not enforced");
                }
            }
        }
        if let Some(dir) = self.controller_dir("pids") {
            if let Some(limit) = r.pids_limit {
                let value = if limit > 0 { limit.to_string() } else { "max".into() };
                write(&dir, "pids.max", &value)?;
            }
        }
        if let Some(dir) = self.controller_dir("devices") {
            // Start from nothing so the rules mean the same as under v2.
            write(&dir, "devices.deny", "a")?;
            for rule in &r.devices {
                let file = if rule.allow { "devices.allow" } else { "devices.deny" };
                write(&dir, file, &rule.v1_line())?;
            }
        }
        Ok(())
    }

    fn add_process(&self, pid: Pid) -> Result<()> {
        for h in &self.hierarchies {
            write(&self.dir(h), "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| self.dir(h).join("cgroup.procs")).collect()
    }

    fn container_views(&self) -> Vec<(String, PathBuf)> {
        self.hierarchies
            .iter()
            .filter_map(|h| {
                let name = h.mount_point.file_name()?.to_string_lossy().into_owned();
                Some((name, self.dir(h)))
            })
            .collect()
    }

    fn processes(&self) -> Result<Vec<Pid>> {
        match self.hierarchies.iter().find(|h| h.has("pids")).or(self.hierarchies.first()) {
            Some(h) => read_procs(&self.dir(h)),
            None => Ok(Vec::new()),
        }
    }

    fn stats(&self) -> Result<CgroupStats> {
        let mut stats = CgroupStats::default();
        if let Some(dir) = self.controller_dir("memory") {
            stats.memory_usage_bytes = read_u64(&dir, "memory.usage_in_bytes")?;
            stats.memory_max_usage_bytes = Some(read_u64(&dir, "memory.max_usage_in_bytes")?);
            stats.oom_kills = read_keyed(&dir, "memory.oom_control", "oom_kill")?.unwrap_or(0);
        }
        if let Some(dir) = self.controller_dir("pids") {
            stats.pids_current = read_u64(&dir, "pids.current")?;
        }
        Ok(stats)
    }

    fn kill_all(&self) -> Result<()> {
        // A frozen cgroup cannot fork while we kill it; the kills land on thaw.
        let freezer = self.controller_dir("freezer").filter(|d| d.exists());
        if let Some(dir) = &freezer {
            write(dir, "freezer.state", "FROZEN")?;
        }
        let signalled = self.hierarchies.iter().try_for_each(|h| {
            for pid in read_procs(&self.dir(h))? {
                // ESRCH: it exited between the read and the kill.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
            Ok(())
        });
        if let Some(dir) = &freezer {
            write(dir, "freezer.state", "THAWED")?;
        }
        signalled?;
        for h in &self.hierarchies {
            kill_listed(&self.dir(h))?;
        }
        Ok(())
    }

    fn remove(&self) -> Result<()> {
        // Every hierarchy is tried, so one that refuses leaves no others behind.
        let mut result = Ok(());
        for h in &self.hierarchies {
            if let Err(e) = remove_dir(&self.dir(h)) {
                result = result.and(Err(e));
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lists_v1_hierarchies_only() {
        let text = "\
35 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct
36 25 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
37 25 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
38 25 0:33 / /proc rw - proc proc rw";
        let h = parse_mountinfo(text);
        assert_eq!(h.len(), 2);
        assert!(h[0].has("cpu") && h[0].has("cpuacct"));
        assert_eq!(h[1].controllers, vec!["name=systemd".to_string()]);
    }
}
