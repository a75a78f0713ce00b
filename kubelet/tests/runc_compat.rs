//! Runs the same `runc spec` bundle under runc and under berth's executor and
//! compares what the container sees: hostname, PID 1, its mount points, and
//! the memory and pids limits (read back and enforced).

use std::fs;
use std::path::Path;
use std::process::Command;

use berth_kubelet::executor::{Container, CreateOptions, ExitStatus, Stdio};
use serde_json::{json, Value};

const APPLETS: [&str; 9] = ["sh", "cat", "cut", "echo", "hostname", "dd", "sleep", "true", "sort"];

/// Prints what the comparison looks at; each runtime runs it unchanged.
const SCRIPT: &str = r#"
hostname
echo pid=$$
cut -d' ' -f5 /proc/self/mountinfo | sort | while read m; do echo mount=$m; done
echo mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null)
echo pids=$(cat /sys/fs/cgroup/pids/pids.max /sys/fs/cgroup/pids.max 2>/dev/null)
dd if=/dev/zero of=/dev/null bs=128M count=1 2>/dev/null; echo dd=$?
( i=0; while true; do sleep 3 & i=$((i+1)); echo $i > /dev/shm/n; done ) 2>/dev/null
echo forks=$(cat /dev/shm/n)
"#;

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, mounts, cgroups)");
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (Debian package busybox-static)");
    }
    if Command::new("runc").arg("--version").output().is_err() {
        return Some("runc is not installed (Debian package runc)");
    }
    None
}

/// Removes both runtimes' containers and cgroups, also when the test fails.
struct Cleanup<'a> {
    dir: &'a Path,
    runc_id: String,
    berth_id: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let runc_root = self.dir.join("runc-state");
        let _ = Command::new("runc")
            .args(["--root"])
            .arg(&runc_root)
            .args(["delete", "--force", &self.runc_id])
            .output();
        if let Ok(c) = Container::load(&self.dir.join("berth-state"), &self.berth_id) {
            let _ = c.delete(true);
        }
        for id in [&self.runc_id, &self.berth_id] {
            if let Ok(cg) =
                berth_kubelet::executor::cgroups::manager_for(Path::new(&format!("/{id}")))
            {
                let _ = cg.kill_all();
                let _ = cg.remove();
            }
        }
    }
}

#[test]
fn same_bundle_same_view_under_runc_and_berth() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED: {reason}");
        return;
    }
    let pid = std::process::id();
    let dir = tempfile::Builder::new().prefix("berth-runc-compat-").tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    let out = Command::new("runc").arg("spec").current_dir(&bundle).output().unwrap();
    assert!(out.status.success(), "runc spec: {}", String::from_utf8_lossy(&out.stderr));
    let cleanup = Cleanup {
        dir: dir.path(),
        runc_id: format!("berth-compat-runc-{pid}"),
        berth_id: format!("berth-compat-berth-{pid}"),
    };

    let config = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&fs::read(&config).unwrap()).unwrap();
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(["sh", "-c", SCRIPT]);
    spec["hostname"] = json!("compat");
    spec["linux"]["resources"]["memory"] = json!({"limit": 64 << 20, "swap": 64 << 20});
    spec["linux"]["resources"]["pids"] = json!({"limit": 20});
    let with_cgroup = |id: &str| {
        let mut s = spec.clone();
        s["linux"]["cgroupsPath"] = json!(format!("/{id}"));
        fs::write(&config, serde_json::to_vec_pretty(&s).unwrap()).unwrap();
    };

    with_cgroup(&cleanup.runc_id);
    let out = Command::new("runc")
        .arg("--root")
        .arg(dir.path().join("runc-state"))
        .args(["run", &cleanup.runc_id])
        .current_dir(&bundle)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "runc run: {}", String::from_utf8_lossy(&out.stderr));
    let runc_lines: Vec<String> =
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();

    with_cgroup(&cleanup.berth_id);
    let log = dir.path().join("berth.log");
    let mut opts = CreateOptions::new(&cleanup.berth_id, &bundle, dir.path().join("berth-state"));
    opts.stdio = Stdio::CriLog(log.clone());
    let mut c = Container::create(opts).unwrap();
    c.start().unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(0));
    c.delete(false).unwrap();
    let berth_lines: Vec<String> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(1) == Some("stdout"))
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
        .collect();

    println!("runc: {runc_lines:?}\nberth: {berth_lines:?}");
    let pick = |lines: &[String], prefix: &str| -> Vec<String> {
        lines.iter().filter(|l| l.starts_with(prefix)).cloned().collect()
    };
    assert_eq!(runc_lines.first().map(String::as_str), Some("compat"));
    assert_eq!(berth_lines.first(), runc_lines.first(), "hostname");
    for what in ["pid=", "mount=", "mem=", "pids=", "dd=", "forks="] {
        assert_eq!(
            pick(&berth_lines, what),
            pick(&runc_lines, what),
            "{what} differs (berth vs runc)"
        );
    }
    assert_eq!(pick(&runc_lines, "pid="), ["pid=1"]);
    assert_eq!(pick(&runc_lines, "dd="), ["dd=137"], "runc did not OOM-kill the hog");
    drop(cleanup);
}
