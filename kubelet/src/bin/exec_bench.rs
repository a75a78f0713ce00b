//! Times create+start+wait+delete of /bin/true from one busybox bundle under
//! berth's executor, runc and crun (those installed), and prints p50/p99.
//!
//! Usage (as root): exec-bench [ITERATIONS]   (default 100)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_kubelet::executor::{Container, CreateOptions, ExitStatus, Stdio};

fn main() -> Result<()> {
    let iterations: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().context("ITERATIONS must be a number")?,
        None => 100,
    };
    if !nix::unistd::geteuid().is_root() {
        bail!("exec-bench needs root");
    }
    let work = std::env::temp_dir().join(format!("berth-exec-bench-{}", std::process::id()));
    let result = bench_all(&work, iterations);
    let _ = fs::remove_dir_all(&work);
    // The per-container cgroups are gone with each delete; drop their parent too.
    if let Ok(parent) = berth_kubelet::executor::cgroups::manager_for(&cgroup_parent()) {
        let _ = parent.remove();
    }
    result
}

fn bench_all(work: &Path, iterations: usize) -> Result<()> {
    let bundle = make_bundle(work)?;
    println!("{iterations} x create+start+wait+delete of /bin/true (busybox bundle)\n");
    println!("| runtime | p50 (ms) | p99 (ms) | mean (ms) |");
    println!("| --- | --- | --- | --- |");
    report("berth", bench(iterations, |i| run_berth(&bundle, work, i)));
    for tool in ["runc", "crun"] {
        if Command::new(tool).arg("--version").output().is_err() {
            println!("| {tool} | not installed | | |");
            continue;
        }
        report(tool, bench(iterations, |i| run_cli(tool, &bundle, work, i)));
    }
    Ok(())
}

fn cgroup_parent() -> PathBuf {
    PathBuf::from(format!("/berth-exec-bench-{}", std::process::id()))
}

fn make_bundle(work: &Path) -> Result<PathBuf> {
    let bundle = work.join("bundle");
    let bin = bundle.join("rootfs/bin");
    fs::create_dir_all(&bin)?;
    fs::copy("/bin/busybox", bin.join("busybox"))
        .context("copy /bin/busybox (install busybox-static)")?;
    std::os::unix::fs::symlink("busybox", bin.join("true"))?;
    std::os::unix::fs::symlink("busybox", bin.join("sh"))?;
    let out = Command::new("runc").arg("spec").current_dir(&bundle).output();
    let mut spec: serde_json::Value = match out {
        Ok(o) if o.status.success() => {
            serde_json::from_slice(&fs::read(bundle.join("config.json"))?)?
        }
        _ => bail!("exec-bench makes its bundle with `runc spec`; install runc"),
    };
    spec["process"]["terminal"] = serde_json::json!(false);
    spec["process"]["args"] = serde_json::json!(["/bin/true"]);
    fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec)?)?;
    Ok(bundle)
}

fn bench(iterations: usize, mut once: impl FnMut(usize) -> Result<()>) -> Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        once(i)?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times)
}

fn report(name: &str, times: Result<Vec<Duration>>) {
    match times {
        Ok(t) if !t.is_empty() => {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let pct = |p: f64| ms(t[((t.len() as f64 * p).ceil() as usize).clamp(1, t.len()) - 1]);
            let mean = t.iter().map(|d| ms(*d)).sum::<f64>() / t.len() as f64;
            println!("| {name} | {:.2} | {:.2} | {mean:.2} |", pct(0.50), pct(0.99));
        }
        Ok(_) => println!("| {name} | no runs | | |"),
        Err(e) => println!("| {name} | failed: {} | | |", format!("{e:#}").replace('\n', " ")),
    }
}

fn run_berth(bundle: &Path, work: &Path, i: usize) -> Result<()> {
    let mut opts = CreateOptions::new(format!("bench-berth-{i}"), bundle, work.join("berth-state"));
    opts.stdio = Stdio::Null;
    opts.cgroup_parent = cgroup_parent();
    let mut c = Container::create(opts)?;
    c.start()?;
    let status = c.wait()?;
    c.delete(false)?;
    if status != ExitStatus::Exited(0) {
        bail!("berth: /bin/true ended with {status:?}");
    }
    Ok(())
}

/// `run` is create+start+wait+delete in one command for runc and crun.
fn run_cli(tool: &str, bundle: &Path, work: &Path, i: usize) -> Result<()> {
    let out = Command::new(tool)
        .arg("--root")
        .arg(work.join(format!("{tool}-state")))
        .args(["run", &format!("bench-{tool}-{i}")])
        .current_dir(bundle)
        .stdin(std::process::Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
