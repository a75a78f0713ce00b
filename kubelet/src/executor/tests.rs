//! End-to-end tests of the executor on this machine's kernel: they need
//! root, cgroups and busybox, and print `SKIPPED: <reason>` without them.
//! Each test owns a temp dir, a state root and a cgroup named after the test
//! and this pid, and its `Fixture` removes them all on drop, failed or not.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use oci_spec::runtime::ContainerState;
use serde_json::{json, Value};

use super::cgroups::{self, CgroupVersion};
use super::{Container, CreateOptions, ExitStatus, Stdio};

/// `runc spec` output with `terminal: false`: tests run what runc users write.
pub(crate) const RUNC_SPEC: &str = r#"{
  "ociVersion": "1.0.2-dev",
  "process": {
    "terminal": false,
    "user": {"uid": 0, "gid": 0},
    "args": ["sh"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
    "cwd": "/",
    "capabilities": {
      "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
    "noNewPrivileges": true
  },
  "root": {"path": "rootfs", "readonly": true},
  "hostname": "runc",
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
    {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
    {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
  ],
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}]},
    "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
    "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
      "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
    "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
  }
}"#;

const APPLETS: [&str; 16] = [
    "sh", "true", "false", "cat", "echo", "hostname", "id", "pwd", "sleep", "touch", "dd", "ls",
    "env", "head", "tr", "ps",
];

/// Why this machine cannot run the end-to-end tests, if it cannot.
pub(crate) fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (namespaces, mounts, cgroups)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (Debian package busybox-static)".into());
    }
    if cgroups::detect_version() == CgroupVersion::V1
        && !Path::new("/sys/fs/cgroup/memory").exists()
    {
        return Some("needs the memory cgroup controller".into());
    }
    None
}

/// A busybox rootfs in `dir`, with the applets tests use.
pub(crate) fn make_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for d in ["proc", "sys", "dev", "tmp", "etc", "work"] {
        fs::create_dir_all(dir.join(d)).unwrap();
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
}

/// One test's bundle, state root, log file and cgroup; removes them on drop.
struct Fixture {
    id: String,
    dir: tempfile::TempDir,
    cgroup: PathBuf,
}

impl Fixture {
    fn new(test: &str) -> Option<Fixture> {
        if let Some(reason) = skip_reason() {
            println!("SKIPPED: {reason}");
            return None;
        }
        let id = format!("{}-{}", test.replace('_', "-"), std::process::id());
        let dir = tempfile::Builder::new().prefix(&format!("berth-{id}-")).tempdir().unwrap();
        make_rootfs(&dir.path().join("bundle/rootfs"));
        Some(Fixture { cgroup: PathBuf::from(format!("/berth-test-{id}")), id, dir })
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn bundle(&self) -> PathBuf {
        self.dir.path().join("bundle")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("container.log")
    }

    /// Writes the runc spec with `args`, this test's cgroup, and `edit` applied.
    fn write_spec(&self, args: &[&str], edit: impl FnOnce(&mut Value)) {
        let mut spec: Value = serde_json::from_str(RUNC_SPEC).unwrap();
        spec["process"]["args"] = json!(args);
        spec["linux"]["cgroupsPath"] = json!(self.cgroup);
        edit(&mut spec);
        fs::write(self.bundle().join("config.json"), serde_json::to_vec_pretty(&spec).unwrap())
            .unwrap();
    }

    fn create(&self, args: &[&str], edit: impl FnOnce(&mut Value)) -> Container {
        self.write_spec(args, edit);
        let mut opts = CreateOptions::new(&self.id, self.bundle(), self.root());
        opts.stdio = Stdio::CriLog(self.log());
        Container::create(opts).unwrap()
    }

    /// create + start + wait; the container stays until `delete`.
    fn run(&self, args: &[&str], edit: impl FnOnce(&mut Value)) -> (Container, ExitStatus) {
        let mut c = self.create(args, edit);
        c.start().unwrap();
        let status = c.wait().unwrap();
        (c, status)
    }

    /// The container's stdout lines, from the CRI log.
    fn stdout(&self) -> Vec<String> {
        self.stream("stdout")
    }

    fn stream(&self, name: &str) -> Vec<String> {
        let text = fs::read_to_string(self.log()).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut p = l.splitn(4, ' ');
                let (_, stream, _, line) =
                    (p.next()?, p.next()?, p.next()?, p.next().unwrap_or(""));
                (stream == name).then(|| line.to_string())
            })
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Ok(c) = Container::load(&self.root(), &self.id) {
            if let Err(e) = c.delete(true) {
                eprintln!("cleanup of {}: {e}", self.id);
            }
        }
        if let Ok(cg) = cgroups::manager_for(&self.cgroup) {
            let _ = cg.kill_all();
            let _ = cg.remove();
        }
    }
}

#[test]
fn true_exits_zero() {
    let Some(f) = Fixture::new("true_exits_zero") else { return };
    let (c, status) = f.run(&["/bin/true"], |_| {});
    assert_eq!(status, ExitStatus::Exited(0));
    c.delete(false).unwrap();
}

#[test]
fn failing_command_reports_its_exit_code() {
    let Some(f) = Fixture::new("failing_command") else { return };
    let (c, status) = f.run(&["sh", "-c", "exit 7"], |_| {});
    assert_eq!(status, ExitStatus::Exited(7));
    c.delete(false).unwrap();
}

#[test]
fn init_sees_hostname_pid1_proc_env_and_cwd() {
    let Some(f) = Fixture::new("init_sees") else { return };
    let script =
        "hostname; echo pid=$$; cat /proc/self/stat >/dev/null && echo proc=ok; echo foo=$FOO; pwd";
    let (c, status) = f.run(&["sh", "-c", script], |s| {
        s["hostname"] = json!("berth-box");
        s["process"]["env"].as_array_mut().unwrap().push(json!("FOO=bar"));
        s["process"]["cwd"] = json!("/work");
    });
    assert_eq!(status, ExitStatus::Exited(0), "stderr: {:?}", f.stream("stderr"));
    assert_eq!(f.stdout(), ["berth-box", "pid=1", "proc=ok", "foo=bar", "/work"]);
    c.delete(false).unwrap();
}

#[test]
fn process_runs_as_uid_gid_and_groups() {
    let Some(f) = Fixture::new("uid_gid") else { return };
    let (c, status) = f.run(&["sh", "-c", "id -u; id -g; id -G"], |s| {
        s["process"]["user"] = json!({"uid": 1234, "gid": 2345, "additionalGids": [3456]});
    });
    assert_eq!(status, ExitStatus::Exited(0), "stderr: {:?}", f.stream("stderr"));
    assert_eq!(f.stdout(), ["1234", "2345", "2345 3456"]);
    c.delete(false).unwrap();
}

#[test]
fn readonly_rootfs_refuses_writes() {
    let Some(f) = Fixture::new("readonly_rootfs") else { return };
    let (c, status) =
        f.run(&["sh", "-c", "touch /x && echo wrote; touch /dev/shm/y && echo shm"], |_| {});
    assert_eq!(status, ExitStatus::Exited(0));
    // The rootfs refuses; the tmpfs mounted on it still takes writes.
    assert_eq!(f.stdout(), ["shm"]);
    assert!(
        f.stream("stderr").iter().any(|l| l.contains("Read-only file system")),
        "{:?}",
        f.stream("stderr")
    );
    assert!(!f.bundle().join("rootfs/x").exists());
    c.delete(false).unwrap();
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    let Some(f) = Fixture::new("memory_hog") else { return };
    let limit = 32 << 20;
    let (c, status) = f.run(&["dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"], |s| {
        s["linux"]["resources"]["memory"] = json!({"limit": limit, "swap": limit});
    });
    assert_eq!(status, ExitStatus::Signaled(Signal::SIGKILL), "stderr: {:?}", f.stream("stderr"));
    let stats = c.stats().unwrap();
    assert!(stats.oom_kills >= 1, "{stats:?}");
    assert!(stats.memory_max_usage_bytes.unwrap_or(limit) <= limit, "{stats:?}");
    c.delete(false).unwrap();
}

#[test]
fn pids_limit_stops_forks() {
    let Some(f) = Fixture::new("pids_limit") else { return };
    let script = "for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; echo all-started";
    let (c, status) = f.run(&["sh", "-c", script], |s| {
        s["linux"]["resources"]["pids"] = json!({"limit": 4});
    });
    assert_ne!(status, ExitStatus::Exited(0));
    assert!(f.stdout().is_empty(), "{:?}", f.stdout());
    assert!(f.stream("stderr").iter().any(|l| l.contains("fork")), "{:?}", f.stream("stderr"));
    c.delete(true).unwrap();
}

#[test]
fn kill_reports_the_signal() {
    let Some(f) = Fixture::new("kill_signal") else { return };
    let mut c = f.create(&["sleep", "100"], |_| {});
    assert_eq!(c.status(), ContainerState::Created);
    c.start().unwrap();
    assert_eq!(c.status(), ContainerState::Running);
    c.kill(Signal::SIGKILL, false).unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Signaled(Signal::SIGKILL));
    assert_eq!(c.status(), ContainerState::Stopped);
    c.delete(false).unwrap();
}

#[test]
fn exec_joins_the_pid_namespace_and_cgroup() {
    let Some(f) = Fixture::new("exec_joins") else { return };
    let mut c = f.create(&["sleep", "100"], |_| {});
    c.start().unwrap();
    let spec = oci_spec::runtime::Spec::load(c.state().bundle().join("config.json")).unwrap();
    let mut p = spec.process().clone().unwrap();
    p.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "cat /proc/1/comm; echo me=$$; hostname".into(),
    ]));
    let exec_log = f.dir.path().join("exec.log");
    let mut e = c.exec(&p, Stdio::CriLog(exec_log.clone())).unwrap();
    assert_eq!(e.wait().unwrap(), ExitStatus::Exited(0));
    let out: Vec<String> = fs::read_to_string(&exec_log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" stdout "))
        .map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string())
        .collect();
    assert_eq!(out.len(), 3, "{out:?}");
    assert_eq!(out[0], "sleep");
    let me: i32 = out[1].trim_start_matches("me=").parse().unwrap();
    assert!(me > 1 && me < 100, "exec pid {me} is not in the container's pid namespace");
    assert_eq!(out[2], "runc");
    c.kill(Signal::SIGKILL, false).unwrap();
    c.wait().unwrap();
    c.delete(false).unwrap();
}

#[test]
fn delete_leaves_nothing_behind() {
    let Some(f) = Fixture::new("delete_clean") else { return };
    let mut c = f.create(&["sleep", "100"], |_| {});
    c.start().unwrap();
    let pid = c.pid();
    let views = c.cgroup().container_views();
    assert!(views.iter().all(|(_, dir)| dir.exists()));
    assert!(c.delete(false).is_err(), "a running container needs force");
    let c = Container::load(&f.root(), &f.id).unwrap();
    c.delete(true).unwrap();
    assert!(!f.root().join(&f.id).exists(), "state dir left");
    for (_, dir) in views {
        assert!(!dir.exists(), "cgroup {} left", dir.display());
    }
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "init {pid} left");
    let rootfs = f.bundle().join("rootfs");
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(rootfs.to_str().unwrap()), "mount left on the host");
}

#[test]
fn cri_log_holds_both_streams() {
    let Some(f) = Fixture::new("cri_log") else { return };
    let (c, status) = f.run(&["sh", "-c", "echo out; echo err >&2; printf tail"], |_| {});
    assert_eq!(status, ExitStatus::Exited(0));
    let text = fs::read_to_string(f.log()).unwrap();
    for line in text.lines() {
        let parts: Vec<&str> = line.splitn(4, ' ').collect();
        assert!(chrono::DateTime::parse_from_rfc3339(parts[0]).is_ok(), "{line}");
        assert!(matches!(parts[1], "stdout" | "stderr"), "{line}");
        assert!(matches!(parts[2], "F" | "P"), "{line}");
    }
    assert_eq!(f.stdout(), ["out", "tail"]);
    assert_eq!(f.stream("stderr"), ["err"]);
    c.delete(false).unwrap();
}

#[test]
fn runtime_cli_drives_the_lifecycle() {
    let Some(f) = Fixture::new("runtime_cli") else { return };
    f.write_spec(&["sleep", "100"], |_| {});
    let root = f.root().display().to_string();
    let bundle = f.bundle().display().to_string();
    let pid_file = f.dir.path().join("pid");
    let cli = |args: &[&str]| {
        let mut all = vec!["berth-runtime".to_string(), "--root".into(), root.clone()];
        all.extend(args.iter().map(|s| s.to_string()));
        super::runtime_main(all)
    };
    let pid_file_s = pid_file.display().to_string();
    // stdio of an inherited container would be the test harness's; keep it quiet.
    assert_eq!(cli(&["create", "--bundle", &bundle, "--pid-file", &pid_file_s, &f.id]), 0);
    let pid: i32 = fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let c = Container::load(&f.root(), &f.id).unwrap();
    assert_eq!(c.pid().as_raw(), pid);
    assert_eq!(c.state().status(), &ContainerState::Created);
    assert_eq!(cli(&["start", &f.id]), 0);
    assert_eq!(c.state().status(), &ContainerState::Running);
    assert_eq!(cli(&["state", &f.id]), 0);
    assert_eq!(cli(&["kill", &f.id, "KILL"]), 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while c.status() != ContainerState::Stopped && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(cli(&["delete", &f.id]), 0);
    assert!(!f.root().join(&f.id).exists());
    assert_eq!(cli(&["state", &f.id]), 1);
}

/// Accepts the runtime's connection on the console socket and takes the pty
/// master it sends, as runc's callers (containerd's shim, podman) do.
fn receive_console(listener: &std::os::unix::net::UnixListener) -> (String, std::fs::File) {
    let (stream, _) = listener.accept().unwrap();
    let (name, master) = super::receive_console(&stream).unwrap();
    (name, std::fs::File::from(master))
}

#[test]
fn terminal_master_goes_to_the_console_socket() {
    let Some(f) = Fixture::new("terminal") else { return };
    let script = "[ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo stdio=tty; \
                  echo via-tty > /dev/tty && echo ctty=ok; [ -c /dev/console ] && echo console=ok";
    f.write_spec(&["sh", "-c", script], |s| s["process"]["terminal"] = json!(true));
    let socket = f.dir.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let root = f.root().display().to_string();
    let cli = |args: &[&str]| {
        let mut all = vec!["berth-runtime".to_string(), "--root".into(), root.clone()];
        all.extend(args.iter().map(|s| s.to_string()));
        super::runtime_main(all)
    };
    let bundle = f.bundle().display().to_string();
    // Without a socket the spec is refused, as runc refuses it.
    assert_eq!(cli(&["create", "--bundle", &bundle, &f.id]), 1);
    let sock = socket.display().to_string();
    assert_eq!(cli(&["create", "--bundle", &bundle, "--console-socket", &sock, &f.id]), 0);
    let (name, mut master) = receive_console(&listener);
    assert!(name.starts_with("/dev/pts/"), "{name}");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        // Ends with EIO once the container's side of the pty is closed.
        let _ = std::io::Read::read_to_end(&mut master, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    assert_eq!(cli(&["start", &f.id]), 0);
    let mut c = Container::load(&f.root(), &f.id).unwrap();
    assert_eq!(c.wait().unwrap(), ExitStatus::Exited(0));
    let out = reader.join().unwrap();
    for want in ["stdio=tty", "via-tty", "ctty=ok", "console=ok"] {
        assert!(out.contains(want), "{want} missing from {out:?}");
    }
    assert_eq!(cli(&["delete", &f.id]), 0);
}

/// The runc spec's capabilities plus `extra`, in every set.
fn with_caps(s: &mut Value, extra: &[&str]) {
    let mut caps: Vec<Value> = s["process"]["capabilities"]["bounding"].as_array().unwrap().clone();
    caps.extend(extra.iter().map(|c| json!(c)));
    for set in ["bounding", "effective", "permitted"] {
        s["process"]["capabilities"][set] = json!(caps);
    }
}

const ESCAPES: &str = "busybox mount -t tmpfs t /tmp && echo mounted; \
    busybox unshare -n true && echo unshared; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status";

#[test]
fn runtime_default_seccomp_refuses_mount_and_unshare_even_with_cap_sys_admin() {
    let Some(f) = Fixture::new("seccomp_default") else { return };
    let (c, status) = f.run(&["sh", "-c", ESCAPES], |s| {
        with_caps(s, &["CAP_SYS_ADMIN"]);
        // The profile as for a container without CAP_SYS_ADMIN.
        s["linux"]["seccomp"] = serde_json::to_value(super::seccomp::runtime_default(&[])).unwrap();
    });
    assert_eq!(status, ExitStatus::Exited(0), "stderr: {:?}", f.stream("stderr"));
    assert_eq!(f.stdout(), ["NoNewPrivs:\t1", "Seccomp:\t2"]);
    let stderr = f.stream("stderr").join("\n");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    c.delete(false).unwrap();
}

#[test]
fn without_seccomp_cap_sys_admin_can_mount_and_unshare() {
    let Some(f) = Fixture::new("seccomp_none") else { return };
    let (c, status) = f.run(&["sh", "-c", ESCAPES], |s| {
        with_caps(s, &["CAP_SYS_ADMIN"]);
        s["root"]["readonly"] = json!(false);
    });
    assert_eq!(status, ExitStatus::Exited(0), "stderr: {:?}", f.stream("stderr"));
    assert_eq!(f.stdout(), ["mounted", "unshared", "NoNewPrivs:\t1", "Seccomp:\t0"]);
    c.delete(false).unwrap();
}

#[test]
fn seccomp_goes_on_without_no_new_privs_for_a_non_root_user() {
    let Some(f) = Fixture::new("seccomp_no_nnp") else { return };
    let (c, status) = f.run(&["sh", "-c", ESCAPES], |s| {
        s["process"]["noNewPrivileges"] = json!(false);
        s["process"]["user"] = json!({"uid": 1000, "gid": 1000});
        s["linux"]["seccomp"] = serde_json::to_value(super::seccomp::runtime_default(&[])).unwrap();
    });
    assert_eq!(status, ExitStatus::Exited(0), "stderr: {:?}", f.stream("stderr"));
    assert_eq!(f.stdout(), ["NoNewPrivs:\t0", "Seccomp:\t2"]);
    c.delete(false).unwrap();
}

#[test]
fn exec_is_filtered_like_the_container() {
    let Some(f) = Fixture::new("seccomp_exec") else { return };
    let mut c = f.create(&["sleep", "60"], |s| {
        s["linux"]["seccomp"] = serde_json::to_value(super::seccomp::runtime_default(&[])).unwrap();
    });
    c.start().unwrap();
    let mut process: oci_spec::runtime::Process = serde_json::from_value(
        serde_json::from_str::<Value>(RUNC_SPEC).unwrap()["process"].clone(),
    )
    .unwrap();
    process.set_args(Some(vec![
        "sh".into(),
        "-c".into(),
        "grep ^Seccomp: /proc/self/status".into(),
    ]));
    let out = f.dir.path().join("exec.log");
    let mut p = c.exec(&process, Stdio::CriLog(out.clone())).unwrap();
    assert_eq!(p.wait().unwrap(), ExitStatus::Exited(0));
    let text = fs::read_to_string(&out).unwrap();
    assert!(text.contains("Seccomp:\t2"), "{text}");
    c.kill(Signal::SIGKILL, false).unwrap();
    c.wait().unwrap();
    c.delete(false).unwrap();
}

#[test]
fn device_nodes_get_only_the_access_their_rules_give() {
    let Some(f) = Fixture::new("device_access") else { return };
    // /dev/fuse (10:229) is not among the devices every container gets.
    let script = "true </dev/xk && echo read-ok; true >/dev/xk && echo write-ok; echo end";
    let (c, status) = f.run(&["sh", "-c", script], |s| {
        s["linux"]["devices"] =
            json!([{"path": "/dev/xk", "type": "c", "major": 10, "minor": 229, "fileMode": 0o666}]);
        s["linux"]["resources"]["devices"] = json!([
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 229, "access": "r"}
        ]);
    });
    assert_eq!(status, ExitStatus::Exited(0), "stderr: {:?}", f.stream("stderr"));
    assert_eq!(f.stdout(), ["read-ok", "end"], "stderr: {:?}", f.stream("stderr"));
    c.delete(false).unwrap();
}
