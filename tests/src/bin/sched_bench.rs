//! sched-bench: the scheduler against a 3-peer API server cluster on
//! loopback (peers are processes of this binary, fsync on) with hollow
//! nodes (Node objects, no agents). Two cases, each on a fresh cluster:
//!
//! - basic: 5,000 nodes (4 cpu, 16 GiB), 10,000 pods asking 100m / 128 MiB;
//! - gpu: 1,000 nodes of which 100 carry 8 nvidia.com/gpu (tainted for GPU
//!   work), 2,000 pods: 500 ask for 1 or 2 GPUs (750 of the 800), the rest
//!   only cpu and memory.
//!
//! All pods exist before the scheduler starts. Throughput counts binds
//! committed through Raft (seen on a watch), from the first to the last;
//! latencies are the scheduler's own histograms (algorithm: pop to node
//! chosen; e2e: pop to bind committed). Afterwards every placement is
//! checked against its node.
//!
//!     cargo run --release -p berth-tests --bin sched-bench -- --case basic|gpu

use anyhow::{bail, ensure, Context, Result};
use berth_client::{Api, Client, ListParams, WatchEvent, WatchParams};
use berth_proto::core_v1::{
    Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint, Toleration,
};
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::Quantity;
use berth_scheduler::Resources;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLIENTS: usize = 64;
const GPU: &str = "nvidia.com/gpu";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("peer") {
        return berth_tests::processes::run_peer(&args[2..]);
    }
    let case = args.iter().position(|a| a == "--case").and_then(|i| args.get(i + 1)).cloned();
    // One case per run: the latency histograms live in this process.
    let case = match case.as_deref() {
        None | Some("basic") => "basic",
        Some("gpu") => "gpu",
        Some(other) => bail!("--case is basic or gpu, not {other:?}"),
    };
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let metrics = recorder.handle();
    metrics::set_global_recorder(recorder).context("install the metrics recorder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    println!("| case | nodes | pods | bound pods/s | algorithm p50 ms | algorithm p99 ms | e2e p50 ms | e2e p99 ms | start-up s |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let root = tempfile::tempdir()?;
    let peers = berth_tests::processes::Peers::start(root.path())?;
    let row = runtime.block_on(run_case(case, &peers.endpoints, &metrics))?;
    println!("{row}");
    Ok(())
}

fn q(s: &str) -> Quantity {
    Quantity::parse(s).expect("the benchmark's quantities are valid")
}

fn node(name: &str, cpu: &str, memory: &str, gpus: Option<&str>) -> Node {
    let mut allocatable: BTreeMap<String, Quantity> =
        [("cpu".into(), q(cpu)), ("memory".into(), q(memory)), ("pods".into(), q("110"))].into();
    let mut taints = Vec::new();
    if let Some(g) = gpus {
        allocatable.insert(GPU.into(), q(g));
        taints.push(Taint { key: GPU.into(), effect: "NoSchedule".into(), ..Default::default() });
    }
    Node {
        metadata: Some(ObjectMeta { name: name.into(), ..Default::default() }),
        spec: Some(NodeSpec { taints, ..Default::default() }),
        status: Some(NodeStatus {
            capacity: allocatable.clone(),
            allocatable,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(name: &str, cpu: &str, memory: &str, gpus: Option<&str>) -> Pod {
    let mut requests: BTreeMap<String, Quantity> =
        [("cpu".into(), q(cpu)), ("memory".into(), q(memory))].into();
    let mut tolerations = Vec::new();
    let mut limits = BTreeMap::new();
    if let Some(g) = gpus {
        requests.insert(GPU.into(), q(g));
        limits.insert(GPU.into(), q(g));
        tolerations.push(Toleration {
            key: GPU.into(),
            operator: "Exists".into(),
            ..Default::default()
        });
    }
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: "registry.local/app:1.0".into(),
                resources: Some(ResourceRequirements { requests, limits }),
                ..Default::default()
            }],
            tolerations,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Creates objects with CLIENTS concurrent clients.
async fn create_all<T: berth_client::ApiResource>(client: &Client, objects: Vec<T>) -> Result<()> {
    let objects = Arc::new(objects);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, objects, next) = (client.clone(), objects.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(object) = objects.get(i) else { return Ok::<_, berth_client::Error>(()) };
                let ns = object.metadata().namespace.clone();
                Api::<T>::namespaced(&client, &ns).create(object).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn run_case(
    case: &str,
    endpoints: &[String],
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
) -> Result<String> {
    let client = Client::new(endpoints.to_vec())?;
    berth_tests::processes::wait_ready(&client).await?;
    let (nodes, pods): (Vec<Node>, Vec<Pod>) = match case {
        "basic" => (
            (0..5000).map(|i| node(&format!("node-{i}"), "4", "16Gi", None)).collect(),
            (0..10_000).map(|i| pod(&format!("pod-{i}"), "100m", "128Mi", None)).collect(),
        ),
        _ => (
            (0..1000)
                .map(|i| {
                    if i < 100 {
                        node(&format!("gpu-{i}"), "32", "128Gi", Some("8"))
                    } else {
                        node(&format!("node-{i}"), "4", "16Gi", None)
                    }
                })
                .collect(),
            (0..2000)
                .map(|i| match i % 4 {
                    0 => pod(
                        &format!("pod-{i}"),
                        "1",
                        "4Gi",
                        Some(if i % 8 == 0 { "2" } else { "1" }),
                    ),
                    _ => pod(&format!("pod-{i}"), "100m", "128Mi", None),
                })
                .collect(),
        ),
    };
    let (node_count, pod_count) = (nodes.len(), pods.len());
    create_all(&client, nodes).await?;
    create_all(&client, pods).await?;

    let api = Api::<Pod>::namespaced(&client, "default");
    let from = api.list(&ListParams { limit: 1, ..Default::default() }).await?.resource_version;
    let mut watch = api.watch(&WatchParams::default(), &from).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let started = Instant::now();
    let scheduler = tokio::spawn(berth_scheduler::run(
        client.clone(),
        berth_scheduler::SchedulerConfig::new("bench"),
        stop.clone(),
    ));
    let mut bound = std::collections::HashSet::new();
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while bound.len() < pod_count {
        let event = tokio::time::timeout_at(deadline.into(), watch.next())
            .await
            .with_context(|| {
                format!("only {} of {pod_count} pods bound in 10 minutes", bound.len())
            })?
            .context("the watch ended")??;
        if let WatchEvent::Modified(p) = event {
            if p.spec.as_ref().is_some_and(|s| !s.node_name.is_empty()) {
                first.get_or_insert_with(Instant::now);
                bound.insert(p.metadata.unwrap_or_default().name);
            }
        }
    }
    let last = Instant::now();
    stop.cancel();
    scheduler.await?;
    let first = first.unwrap_or(last);
    check_placements(&client).await?;
    let text = metrics.render();
    let quantile = |name: &str, q: &str| -> f64 {
        let prefix = format!("{name}{{quantile=\"{q}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(f64::NAN, |s| s * 1000.0)
    };
    let algorithm = "berth_scheduler_scheduling_algorithm_duration_seconds";
    let e2e = "berth_scheduler_e2e_scheduling_duration_seconds";
    Ok(format!(
        "| {case} | {node_count} | {pod_count} | {:.0} | {:.3} | {:.3} | {:.2} | {:.2} | {:.1} |",
        pod_count as f64 / (last - first).as_secs_f64().max(1e-9),
        quantile(algorithm, "0.5"),
        quantile(algorithm, "0.99"),
        quantile(e2e, "0.5"),
        quantile(e2e, "0.99"),
        (first - started).as_secs_f64(),
    ))
}

/// Every bound pod against its node: nothing overcommitted, GPU pods only
/// where GPUs are, and every taint tolerated.
async fn check_placements(client: &Client) -> Result<()> {
    let nodes = Api::<Node>::all(client).list(&ListParams::default()).await?.items;
    let pods = Api::<Pod>::all(client).list(&ListParams::default()).await?.items;
    let mut used: HashMap<String, Resources> = HashMap::new();
    for p in &pods {
        let node = p.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default();
        ensure!(!node.is_empty(), "pod {:?} was never bound", p.metadata.as_ref().map(|m| &m.name));
        used.entry(node).or_default().add(&Resources::of_pod(p));
    }
    for n in &nodes {
        let name = n.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let have = Resources::from_map(&n.status.as_ref().context("node status")?.allocatable);
        let Some(used) = used.get(&name) else { continue };
        ensure!(used.milli_cpu <= have.milli_cpu, "{name}: cpu overcommitted");
        ensure!(used.memory <= have.memory, "{name}: memory overcommitted");
        ensure!(used.pods <= have.pods, "{name}: too many pods");
        for (resource, amount) in &used.scalar {
            let has = have.scalar.get(resource).copied().unwrap_or(0);
            ensure!(*amount <= has, "{name}: {resource} overcommitted ({amount} > {has})");
        }
    }
    for p in &pods {
        let spec = p.spec.as_ref().context("pod spec")?;
        let node = nodes
            .iter()
            .find(|n| n.metadata.as_ref().is_some_and(|m| m.name == spec.node_name))
            .context("a pod is bound to a node that does not exist")?;
        for taint in node.spec.as_ref().map(|s| s.taints.as_slice()).unwrap_or_default() {
            ensure!(
                spec.tolerations.iter().any(|t| t.key == taint.key),
                "pod {:?} landed on a node whose taint it does not tolerate",
                p.metadata.as_ref().map(|m| &m.name)
            );
        }
    }
    Ok(())
}
