//! pod-bench: pod startup latency on one node. Three API server peers run as
//! processes (fsync on); the node agent and berth's CRI runtime run in this
//! process with a CNI bridge network; the image (busybox from this host, as
//! an OCI layout) is present. 100 pods bound to the node are created, 20 at
//! a time, and each is timed from its create call to Running as seen on a
//! watch. Needs root.
//!
//!     cargo run --release -p berth-tests --bin pod-bench -- [--pods N] [--parallel N]

use anyhow::{bail, Context, Result};
use berth_client::{Api, Client, DeleteParams, ListParams, WatchEvent, WatchParams};
use berth_kubelet::agent::{self, AgentConfig};
use berth_kubelet::cri::CniNetwork;
use berth_kubelet::image::{busybox_layout, ImageStore, RegistryConfig};
use berth_kubelet::{CriConfig, CriServer};
use berth_proto::core_v1::Pod;
use berth_tests::stats::percentile_ms;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const NODE: &str = "bench-node";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("peer") {
        return berth_tests::processes::run_peer(&args[2..]);
    }
    // RUST_LOG=warn shows why a pod does not start.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .init();
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("pod-bench runs containers: run it as root");
    }
    let flag = |name: &str, default: usize| -> Result<usize> {
        match args.iter().position(|a| a == name) {
            None => Ok(default),
            Some(i) => args
                .get(i + 1)
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} takes a number")),
        }
    };
    let (pods, parallel) = (flag("--pods", 100)?, flag("--parallel", 20)?.max(1));
    let root = tempfile::tempdir()?;
    let peers = berth_tests::processes::Peers::start(root.path())?;
    let cleanup = Cleanup {
        bridge: format!("bb{}", std::process::id() % 100_000),
        cgroup_parent: PathBuf::from(format!("berth-bench-{}", std::process::id())),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(&peers.endpoints, root.path(), &cleanup, pods, parallel))
}

/// The bridge and cgroups the run made, removed however it ends.
struct Cleanup {
    bridge: String,
    cgroup_parent: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.bridge]).status();
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else { return };
        for h in hierarchies.flatten() {
            remove_tree(&h.path().join(&self.cgroup_parent));
        }
    }
}

/// Removes a cgroup directory tree, children first.
fn remove_tree(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for c in children.flatten() {
            if c.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&c.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

async fn run(
    endpoints: &[String],
    root: &Path,
    cleanup: &Cleanup,
    count: usize,
    parallel: usize,
) -> Result<()> {
    let client = Client::new(endpoints.to_vec())?;
    berth_tests::processes::wait_ready(&client).await?;
    let image_dir = root.join("image");
    busybox_layout(Path::new("/bin/busybox"), &image_dir, "busybox")?;
    let images = ImageStore::open(root.join("images"), RegistryConfig::default())?;
    let network = CniNetwork::bridge(
        "pod-bench",
        &cleanup.bridge,
        "10.214.0.0/16",
        &root.join("cni"),
        vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
    );
    let stop = CancellationToken::new();
    let server = CriServer::bind(CriConfig {
        root: root.join("cri"),
        socket: root.join("cri.sock"),
        images,
        cgroup_parent: Path::new("/").join(&cleanup.cgroup_parent),
        network: Some(network),
    })
    .await?;
    let cri = {
        let stop = stop.clone();
        tokio::spawn(async move { server.serve(stop).await })
    };
    let mut config = AgentConfig::new(NODE, root.join("agent"));
    config.cri_socket = Some(root.join("cri.sock"));
    config.pod_workers = parallel;
    let agent = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move { agent::run(&client, &config, stop).await })
    };

    // The node is up before the clock starts.
    let nodes = Api::<berth_proto::core_v1::Node>::all(&client);
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.get_opt(NODE).await?.is_none() {
        if agent.is_finished() {
            bail!("the node agent stopped: {:?}", agent.await);
        }
        if Instant::now() > deadline {
            bail!("the node never registered");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pods = Api::<Pod>::namespaced(&client, "default");
    let from = pods.list(&ListParams::default()).await?.resource_version;
    let mut watch = pods.watch(&WatchParams::default(), &from).await?;
    let running: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let created: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let seen = running.clone();
    let watcher = tokio::spawn(async move {
        while let Some(Ok(event)) = watch.next().await {
            if let WatchEvent::Modified(pod) = event {
                if pod.status.as_ref().is_some_and(|s| s.phase == "Running") {
                    let name = pod.metadata.unwrap_or_default().name;
                    seen.lock()
                        .expect("no panic while noting")
                        .entry(name)
                        .or_insert_with(Instant::now);
                }
            }
        }
    });
    // Whatever happens while measuring, the pods are torn down after.
    let measured = async {
        let image = format!("oci:{}:busybox", image_dir.display());
        let slots = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut creates = Vec::new();
        for i in 0..count {
            let permit = slots.clone().acquire_owned().await?;
            let (pods, created, running, image) =
                (pods.clone(), created.clone(), running.clone(), image.clone());
            creates.push(tokio::spawn(async move {
                let name = format!("pod-{i}");
                let mut pod = berth_tests::fixtures::pod("default", &name, &[]);
                let spec = pod.spec.as_mut().expect("fixtures have a spec");
                spec.node_name = NODE.into();
                spec.termination_grace_period_seconds = Some(1);
                spec.containers[0].image = image;
                spec.containers[0].command =
                    vec!["sh".into(), "-c".into(), "exec sleep 3600".into()];
                created.lock().expect("no panic while noting").insert(name.clone(), Instant::now());
                pods.create(&pod).await?;
                // Hold the slot until this pod runs: 20 starting at a time.
                let deadline = Instant::now() + Duration::from_secs(120);
                while !running.lock().expect("no panic while noting").contains_key(&name) {
                    if Instant::now() > deadline {
                        let status = pods.get(&name).await.ok().and_then(|p| p.status);
                        anyhow::bail!("{name} did not run within 2 minutes: {status:?}");
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                drop(permit);
                Ok(())
            }));
        }
        for c in creates {
            c.await??;
        }
        let mut latencies: Vec<Duration> = {
            let (created, running) =
                (created.lock().expect("no panic"), running.lock().expect("no panic"));
            created.iter().filter_map(|(name, at)| running.get(name).map(|r| *r - *at)).collect()
        };
        latencies.sort_unstable();
        println!("| test | pods | p50 ms | p99 ms |");
        println!("| --- | ---: | ---: | ---: |");
        println!(
            "| create -> Running, {parallel} at a time | {} | {:.1} | {:.1} |",
            latencies.len(),
            percentile_ms(&latencies, 0.5),
            percentile_ms(&latencies, 0.99)
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;

    // Tear down: every pod deleted and confirmed by the node.
    for i in 0..count {
        let params = DeleteParams { grace_period_seconds: Some(1), ..Default::default() };
        let _ = pods.delete(&format!("pod-{i}"), &params).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !pods.list(&ListParams::default()).await?.items.is_empty() {
        if Instant::now() > deadline {
            bail!("pods were not removed within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    watcher.abort();
    let _ = agent.await;
    let _ = cri.await;
    measured
}
