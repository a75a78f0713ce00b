//! What the CLI's process tests share: loopback addresses, plain HTTP, a
//! node's processes, and the clean-up of its pods after a test.

#![allow(dead_code)] // each test file uses its own part of this

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Why a test that runs pods cannot run here, if it cannot.
pub fn pod_skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, cgroups, mounts)");
    }
    if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
        return Some("needs overlayfs in the kernel");
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (Debian package busybox-static)");
    }
    None
}

/// The `berth` processes of a test and their directory: stopped (the agent
/// last, so it stops its pods), unmounted and removed however the test
/// ends. `name` is the node's, unique per test: a test's clean-up kills
/// whatever runs in its node's cgroups.
pub struct Node {
    pub processes: Vec<Child>,
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Node {
    pub fn new(prefix: &str, name: String) -> Node {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        Node { processes: Vec::new(), dir, name }
    }

    /// Starts `berth args`, its output into `log` in the test's directory.
    pub fn spawn(&mut self, args: &[&str], log: &str) {
        let log = std::fs::File::create(self.dir.path().join(log)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("berth starts");
        self.processes.push(child);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tails(self.dir.path(), 30);
        }
        for child in self.processes.iter_mut().rev() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
        remove_node_leftovers(self.dir.path(), &self.name);
    }
}

/// A loopback `host:port` nobody holds now.
pub fn free_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// `berth agent` flags for a test node on loopback: node `name` of the API
/// server at `grpc`, its state under `root`, no pod network, its pods
/// stopped with it, logs and exec served with the cluster secret in `secret`.
pub fn agent_args(grpc: &str, name: &str, root: &Path, secret: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_string_lossy().into_owned();
    vec![
        "agent".into(),
        "--server".into(),
        grpc.into(),
        "--node-name".into(),
        name.into(),
        "--root-dir".into(),
        path(&root.join("agent")),
        "--no-cni".into(),
        "--http".into(),
        free_addr(),
        "--device-plugin-root".into(),
        path(&root.join("kubelet")),
        "--stop-pods-on-exit".into(),
        "--cluster-secret-file".into(),
        path(secret),
    ]
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

/// Prints the last `lines` lines of every `*.log` file in `dir`: what the
/// processes said, to see why a test failed.
pub fn print_log_tails(dir: &Path, lines: usize) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(lines).collect();
            eprintln!("--- {}", path.display());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
    }
}

/// Every cgroup directory of node `node`'s pods, in every hierarchy,
/// deepest first.
fn node_cgroups(node: &str) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from(format!("/sys/fs/cgroup/berth/{node}"))];
    for entry in std::fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        roots.push(entry.path().join("berth").join(node));
    }
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = roots.into_iter().filter(|r| r.is_dir()).collect();
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
        out.push(d);
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// After a node's processes are gone: kills what still runs in its pods'
/// cgroups (containers outlive a killed agent), unmounts everything under
/// `dir` and removes the cgroups.
pub fn remove_node_leftovers(dir: &Path, node: &str) {
    for d in node_cgroups(node) {
        let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    remove_node_mounts_and_cgroups(dir, node);
}

/// Unmounts everything under `dir` and removes node `node`'s cgroups once
/// nothing runs in them.
pub fn remove_node_mounts_and_cgroups(dir: &Path, node: &str) {
    let dir = dir.display().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&dir))
        .collect();
    points.reverse();
    for p in points {
        let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
    }
    for d in node_cgroups(node) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&d).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
