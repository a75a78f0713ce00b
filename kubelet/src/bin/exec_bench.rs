//! Times create+start+wait+delete of /bin/true from one busybox bundle under
//! berth's executor, runc and crun (those installed), and a cold pull +
//! unpack of a multi-layer image (gzip and zstd layers) from a local
//! docker-registry into an empty image store; prints p50/p99 tables.
//!
//! crun refuses a hybrid cgroup host whose unified hierarchy lists a
//! controller (hugetlb here); its runs happen last, in a private mount
//! namespace where a tmpfs hides /sys/fs/cgroup/unified.
//!
//! Usage (as root): exec-bench [ITERATIONS] [PULLS]   (defaults 100 and 5)

#[path = "../../tests/image_support/mod.rs"]
mod image_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use berth_kubelet::executor::{Container, CreateOptions, ExitStatus, Stdio};
use berth_kubelet::image::{ImageSource, ImageStore, PullOptions, RegistryConfig};
use image_support::{layer, zstd_layer, LayerTar, Registry};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut number = |name: &str, default: usize| -> Result<usize> {
        match args.next() {
            Some(n) => n.parse().with_context(|| format!("{name} must be a number")),
            None => Ok(default),
        }
    };
    let iterations = number("ITERATIONS", 100)?;
    let pulls = number("PULLS", 5)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("exec-bench needs root");
    }
    let work = std::env::temp_dir().join(format!("berth-exec-bench-{}", std::process::id()));
    let result = bench_pulls(&work, pulls).and_then(|_| bench_all(&work, iterations));
    let _ = fs::remove_dir_all(&work);
    result
}

/// The pull benchmark's image: busybox, then four layers of 8 MiB of
/// incompressible data each, then one of 2,000 small files.
fn pull_layers() -> Vec<Vec<u8>> {
    let mut layers = vec![image_support::base_layer()];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..4 {
        let mut data = vec![0u8; 8 << 20];
        for chunk in data.chunks_mut(8) {
            // xorshift64: cheap bytes gzip and zstd cannot shrink.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            chunk.copy_from_slice(&seed.to_le_bytes()[..chunk.len()]);
        }
        layers
            .push(LayerTar::default().dir("data/").file(&format!("data/blob{i}"), &data).finish());
    }
    let mut small = LayerTar::default();
    small.dir("small/");
    for i in 0..2000 {
        small.file(&format!("small/f{i}"), format!("file {i}\n").repeat(64).as_bytes());
    }
    layers.push(small.finish());
    layers
}

fn bench_pulls(work: &Path, pulls: usize) -> Result<()> {
    if pulls == 0 {
        return Ok(());
    }
    if !Path::new(image_support::REGISTRY_BIN).exists() {
        println!("cold pull: skipped, {} is not installed\n", image_support::REGISTRY_BIN);
        return Ok(());
    }
    let tars = pull_layers();
    let tar_bytes: usize = tars.iter().map(Vec::len).sum();
    let registry = Registry::start();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!(
        "cold pull + unpack from a local docker-registry into an empty store, {pulls} times: \
         {} layers, {:.1} MiB of tar\n",
        tars.len(),
        tar_bytes as f64 / f64::from(1 << 20)
    );
    println!("| layers | compressed (MiB) | p50 (ms) | p99 (ms) | mean (ms) |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, zstd) in [("gzip", false), ("zstd", true)] {
        let layers = tars
            .iter()
            .map(|t| if zstd { zstd_layer(t.clone()) } else { layer(t.clone(), true) })
            .collect();
        let img = image_support::image(layers, false);
        let size: usize = img.layers.iter().map(|l| l.bytes.len()).sum();
        let repo = format!("bench/{name}");
        registry.push(&repo, "v1", &img);
        let source: ImageSource = format!("{}/{repo}:v1", registry.addr).parse()?;
        let config =
            RegistryConfig { plain_http: vec![registry.addr.clone()], ..Default::default() };
        let times = bench(pulls, |i| {
            let root = work.join(format!("store-{name}-{i}"));
            let store = ImageStore::open(&root, config.clone())?;
            let pulled = runtime.block_on(store.pull(&source, &PullOptions::default()));
            drop(store);
            let removed = fs::remove_dir_all(&root);
            pulled?;
            removed.with_context(|| format!("remove {}", root.display()))
        });
        report(&format!("{name} | {:.1}", size as f64 / f64::from(1 << 20)), times);
    }
    println!();
    Ok(())
}

fn bench_all(work: &Path, iterations: usize) -> Result<()> {
    let bundle = make_bundle(work)?;
    println!("{iterations} x create+start+wait+delete of /bin/true (busybox bundle)\n");
    println!("| runtime | p50 (ms) | p99 (ms) | mean (ms) |");
    println!("| --- | --- | --- | --- |");
    report("berth", bench(iterations, |i| run_berth(&bundle, work, i)));
    // The per-container cgroups are gone with each delete; drop their parent
    // too, before crun's mount namespace hides part of the hierarchy.
    if let Ok(parent) = berth_kubelet::executor::cgroups::manager_for(&cgroup_parent()) {
        if let Err(e) = parent.remove() {
            eprintln!("could not remove the benchmark's cgroup parent: {e}");
        }
    }
    for tool in ["runc", "crun"] {
        if Command::new(tool).arg("--version").output().is_err() {
            println!("| {tool} | not installed | | |");
            continue;
        }
        if tool == "crun" {
            if let Err(e) = hide_unified_hierarchy() {
                println!("| crun | failed: {} | | |", format!("{e:#}").replace('\n', " "));
                continue;
            }
        }
        report(tool, bench(iterations, |i| run_cli(tool, &bundle, work, i)));
    }
    Ok(())
}

/// Moves this process into a private mount namespace where a tmpfs covers
/// /sys/fs/cgroup/unified, so crun sees no controllers there. Nothing after it
/// may need the real hierarchy; the namespace goes with the process.
fn hide_unified_hierarchy() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    let unified = Path::new("/sys/fs/cgroup/unified");
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare mount namespace")?;
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .context("make / private")?;
    if unified.exists() {
        // crun still writes its cgroup files there; they land in the tmpfs.
        mount(Some("tmpfs"), unified, Some("tmpfs"), MsFlags::empty(), Some("mode=755"))
            .context("cover /sys/fs/cgroup/unified")?;
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
