//! `berth chaos` end to end: a short fixed-seed run on a 3-peer cluster in
//! network namespaces passes its checks and leaves nothing behind, and
//! Ctrl-C in the middle of a run removes everything too. Root only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Each test starts a whole cluster with its control loops; on a small
/// machine they take turns, so none starves another's elections.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static CLUSTERS: Mutex<()> = Mutex::new(());
    CLUSTERS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn unsupported() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for network namespaces".into());
    }
    for tool in ["ip", "nft"] {
        if Command::new(tool).arg("-V").output().map(|o| !o.status.success()).unwrap_or(true) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    None
}

/// Kills the run if a test fails half-way (SIGINT first, so it cleans up).
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && matches!(self.0.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn start(out: &std::path::Path, seed: &str, faults: &str) -> Run {
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["chaos", "--peers", "3", "--seed", seed, "--faults", faults, "--out"])
        .arg(out)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(out.join("stderr.log")).expect("create stderr.log"))
        .spawn()
        .expect("berth chaos starts");
    Run(child)
}

/// Reads stdout lines until one contains `until`; returns the run id from
/// the first line ("run <id> seed ...") and keeps draining the rest.
fn read_until(run: &mut Run, until: &str) -> String {
    let stdout = run.0.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let mut run_id = String::new();
    let mut seen = Vec::new();
    for line in lines.by_ref().map_while(Result::ok) {
        if let Some(rest) = line.strip_prefix("run ") {
            run_id = rest.split_whitespace().next().unwrap_or_default().to_string();
        }
        let done = line.contains(until);
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains(until)), "never printed {until:?}: {seen:#?}");
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    assert!(!run_id.is_empty(), "no run id printed: {seen:#?}");
    run_id
}

fn wait(run: &mut Run, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = run.0.try_wait().expect("wait for berth chaos") {
            return status;
        }
        assert!(Instant::now() < deadline, "berth chaos ran past {within:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Namespaces, links and processes of `run_id` still on the host.
fn leftovers(run_id: &str) -> Vec<String> {
    let mut left = Vec::new();
    let list = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let tag = format!("berth-chaos-{run_id}-");
    left.extend(
        String::from_utf8_lossy(&list.stdout)
            .lines()
            .filter(|l| l.contains(&tag))
            .map(|l| format!("namespace {l}")),
    );
    let link = Command::new("ip").args(["link", "show", "dev", &format!("bch{run_id}")]).output();
    if link.is_ok_and(|o| o.status.success()) {
        left.push(format!("link bch{run_id}"));
    }
    let cluster = format!("chaos-{run_id}");
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).split('\0').any(|arg| arg.contains(&cluster)) {
            left.push(format!("process {}", entry.file_name().to_string_lossy()));
        }
    }
    if std::env::temp_dir().join(format!("berth-chaos-{run_id}")).exists() {
        left.push("data directory".into());
    }
    left
}

#[test]
fn a_short_fixed_seed_run_passes_and_leaves_nothing_behind() {
    let _turn = one_at_a_time();
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let mut run = start(out.path(), "7", "11");
    let run_id = read_until(&mut run, "cluster up");
    let status = wait(&mut run, Duration::from_secs(170));
    let summary = std::fs::read_to_string(out.path().join("summary.txt")).unwrap_or_default();
    let stderr = std::fs::read_to_string(out.path().join("stderr.log")).unwrap_or_default();
    assert!(status.success(), "berth chaos failed ({status}):\n{summary}\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["run_id"], run_id.as_str());
    assert_eq!(report["violations"], serde_json::json!([]), "{summary}");
    assert_eq!(report["left_behind"], serde_json::json!([]), "{summary}");
    assert_eq!(report["all_healed"], true, "{summary}");
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 11, "one round: every kind of fault once; {summary}");
    for fault in faults {
        assert!(fault["healed_ms"].is_number(), "fault not healed: {fault}");
    }
    let takeovers = faults.iter().filter(|f| f["takeover_ms"].is_number()).count();
    assert_eq!(
        takeovers, 3,
        "scheduler, controller-manager and fenced-writer takeovers: {summary}"
    );
    // The frozen writer woke holding its old token after its successor led:
    // the fence refused it.
    assert!(report["counts"]["fenced_writes_refused"].as_u64().unwrap() >= 1, "{summary}");
    assert!(report["counts"]["register_ok"].as_u64().unwrap() > 0, "{summary}");
    let svg = std::fs::read_to_string(out.path().join("timeline.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("kill-peer"), "timeline names the faults");
    assert_eq!(leftovers(&run_id), Vec::<String>::new());
}

#[test]
fn ctrl_c_mid_run_removes_the_cluster_and_its_namespaces() {
    let _turn = one_at_a_time();
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let mut run = start(out.path(), "3", "10");
    let run_id = read_until(&mut run, "cluster up");
    assert!(!leftovers(&run_id).is_empty(), "the run's namespaces exist while it runs");
    let pid = nix::unistd::Pid::from_raw(run.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait(&mut run, Duration::from_secs(60));
    assert!(!status.success(), "an interrupted run does not pass");
    assert_eq!(leftovers(&run_id), Vec::<String>::new());
}

#[test]
fn what_a_killed_run_leaves_is_removed_by_clean() {
    let _turn = one_at_a_time();
    if let Some(why) = unsupported() {
        eprintln!("skipped: {why}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let mut run = start(out.path(), "5", "11");
    let run_id = read_until(&mut run, "cluster up");
    run.0.kill().unwrap();
    run.0.wait().unwrap();
    let left = leftovers(&run_id);
    assert!(left.iter().any(|l| l.starts_with("namespace")), "SIGKILL leaves namespaces: {left:?}");
    let clean =
        Command::new(env!("CARGO_BIN_EXE_berth")).args(["chaos", "--clean"]).output().unwrap();
    assert!(clean.status.success(), "{}", String::from_utf8_lossy(&clean.stderr));
    let printed = String::from_utf8_lossy(&clean.stdout);
    assert!(printed.contains(&format!("berth-chaos-{run_id}-br")), "{printed}");
    // The peers died with the harness (PDEATHSIG); give the kernel a moment
    // to reap them by polling, not sleeping a fixed time.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !leftovers(&run_id).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(leftovers(&run_id), Vec::<String>::new());
}
