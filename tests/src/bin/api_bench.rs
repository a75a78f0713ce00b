//! api-bench: the typed gRPC API under load, through berth-client, against
//! a 3-peer API server cluster on loopback (each peer its own process, fsync
//! on). Prints a table:
//!
//! - create N pods with C concurrent clients (throughput, p50/p99);
//! - list all of them, one full list at a time (p50/p99);
//! - the delay from the start of a write to its delivery on W watchers
//!   spread over the peers (p50/p99).
//!
//!     cargo run --release -p berth-tests --bin api-bench -- [--pods N] [--clients C] [--watchers W]

use anyhow::{bail, Context, Result};
use berth_client::{Api, Client, ListParams, WatchEvent, WatchParams};
use berth_proto::core_v1::{Namespace, Pod};
use berth_proto::meta_v1::ObjectMeta;
use berth_tests::stats::percentile_ms;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Lists timed in the list test.
const LISTS: usize = 20;
/// Writes whose delivery is timed in the watch test.
const WATCHED_WRITES: usize = 100;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("peer") {
        return berth_tests::processes::run_peer(&args[2..]);
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
    let pods = flag("--pods", 10_000)?;
    let clients = flag("--clients", 64)?.max(1);
    let watchers = flag("--watchers", 1_000)?;
    let root = tempfile::tempdir()?;
    let cluster = berth_tests::processes::Peers::start(root.path())?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let client = Client::new(cluster.endpoints.clone())?;
        berth_tests::processes::wait_ready(&client).await?;
        let mut rows = Vec::new();
        rows.push(creates(&cluster.endpoints, pods, clients).await?);
        rows.push(lists(&client, pods).await?);
        rows.push(watch_delivery(&cluster.endpoints, watchers).await?);
        println!("| test | ops/s | p50 ms | p99 ms |");
        println!("| --- | ---: | ---: | ---: |");
        for r in rows {
            let ops = r.ops_per_sec.map_or("-".to_string(), |o| format!("{o:.0}"));
            println!("| {} | {} | {:.2} | {:.2} |", r.test, ops, r.p50_ms, r.p99_ms);
        }
        Ok(())
    })
}

struct Row {
    test: String,
    ops_per_sec: Option<f64>,
    p50_ms: f64,
    p99_ms: f64,
}

fn row(test: String, mut latencies: Vec<Duration>, elapsed: Option<Duration>) -> Row {
    latencies.sort_unstable();
    Row {
        test,
        ops_per_sec: elapsed.map(|e| latencies.len() as f64 / e.as_secs_f64()),
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
    }
}

fn pod(namespace: &str, name: &str) -> Pod {
    let mut pod = berth_tests::fixtures::pod(namespace, name, &[]);
    if let Some(meta) = pod.metadata.as_mut() {
        meta.labels.insert("app".into(), "bench".into());
    }
    pod
}

/// A client whose first peer is `first`, so load spreads over the peers.
fn client_from(endpoints: &[String], first: usize) -> Result<Client> {
    let n = endpoints.len();
    Ok(Client::new((0..n).map(|k| endpoints[(first + k) % n].clone()))?)
}

async fn creates(endpoints: &[String], pods: usize, clients: usize) -> Result<Row> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let api = Api::<Pod>::namespaced(&client_from(endpoints, c)?, "default");
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= pods {
                    return Ok::<_, berth_client::Error>(latencies);
                }
                let t = Instant::now();
                api.create(&pod("default", &format!("pod-{i}"))).await?;
                latencies.push(t.elapsed());
            }
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(row(format!("create {pods} pods, {clients} clients"), latencies, Some(started.elapsed())))
}

async fn lists(client: &Client, pods: usize) -> Result<Row> {
    let api = Api::<Pod>::namespaced(client, "default");
    let mut latencies = Vec::new();
    let started = Instant::now();
    for _ in 0..LISTS {
        let t = Instant::now();
        let list = api.list(&ListParams::default()).await?;
        latencies.push(t.elapsed());
        if list.items.len() != pods {
            bail!("listed {} pods, created {pods}", list.items.len());
        }
    }
    Ok(row(format!("list {pods} pods"), latencies, Some(started.elapsed())))
}

async fn watch_delivery(endpoints: &[String], watchers: usize) -> Result<Row> {
    // Watchers follow their own namespace so the creates above do not count.
    let client = Client::new(endpoints.to_vec())?;
    let namespace = Namespace {
        metadata: Some(ObjectMeta { name: "watched".into(), ..Default::default() }),
        ..Default::default()
    };
    Api::<Namespace>::all(&client).create(&namespace).await?;
    let api = Api::<Pod>::namespaced(&client, "watched");
    let from = api.list(&ListParams::default()).await?.resource_version;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
    let delays: Arc<Mutex<Vec<Duration>>> = Default::default();
    let mut tasks = Vec::new();
    // A client (its own connections) per 100 watchers, spread over peers.
    let mut watch_client = client_from(endpoints, 0)?;
    for w in 0..watchers {
        if w % 100 == 0 {
            watch_client = client_from(endpoints, w / 100)?;
        }
        let watched = Api::<Pod>::namespaced(&watch_client, "watched");
        let mut stream = watched.watch(&WatchParams::default(), &from).await?;
        let (sent, delays) = (sent.clone(), delays.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = 0;
            while seen < WATCHED_WRITES {
                let Some(event) = stream.next().await else {
                    return Err(anyhow::anyhow!("a watch ended early"));
                };
                if let WatchEvent::Added(pod) = event? {
                    let at = Instant::now();
                    let name = pod.metadata.unwrap_or_default().name;
                    let start =
                        sent.lock().expect("no panics while holding the map").get(&name).copied();
                    if let Some(start) = start {
                        delays.lock().expect("no panics while holding the list").push(at - start);
                    }
                    seen += 1;
                }
            }
            Ok(())
        }));
    }
    for i in 0..WATCHED_WRITES {
        let name = format!("watched-{i}");
        sent.lock().expect("no panics while holding the map").insert(name.clone(), Instant::now());
        api.create(&pod("watched", &name)).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .context("watchers fell behind")???;
    }
    let delays = std::mem::take(&mut *delays.lock().expect("no panics while holding the list"));
    Ok(row(format!("watch delivery, {watchers} watchers"), delays, None))
}
