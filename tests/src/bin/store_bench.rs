//! store-bench: one etcd-client workload, run against a 3-peer berth store
//! and then against a 3-member etcd cluster on this machine, both on
//! loopback with fsync on. Prints a table of throughput and latencies.
//!
//!     cargo run --release -p berth-tests --bin store-bench -- [--seconds N] [--no-etcd]
//!
//! Each berth peer runs as its own process (this binary, `peer` mode), as
//! each etcd member does.

use anyhow::{bail, Context, Result};
use berth_proto::etcd::etcdserverpb::kv_client::KvClient;
use berth_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use berth_proto::etcd::etcdserverpb::watch_client::WatchClient;
use berth_proto::etcd::etcdserverpb::{
    watch_request, PutRequest, RangeRequest, StatusRequest, WatchCreateRequest, WatchRequest,
};
use berth_tests::stats::percentile_ms;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const KEYS: u64 = 10_000;
const VALUE_BYTES: usize = 256;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("peer") {
        return run_peer(&args[2..]);
    }
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse::<u64>())
        .transpose()
        .context("--seconds takes a number")?
        .unwrap_or(5);
    let with_etcd = !args.iter().any(|a| a == "--no-etcd");
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let duration = Duration::from_secs(seconds);
        let mut rows = Vec::new();
        let root = tempfile::tempdir()?;
        {
            let cluster = Processes::berth(root.path())?;
            wait_ready(&cluster.endpoints).await?;
            rows.extend(suite("berth", &cluster.endpoints, duration).await?);
        }
        if with_etcd {
            match Processes::etcd(root.path()) {
                Ok(cluster) => {
                    wait_ready(&cluster.endpoints).await?;
                    rows.extend(suite("etcd", &cluster.endpoints, duration).await?);
                }
                Err(e) => eprintln!("etcd not run: {e:#}"),
            }
        }
        print_table(&rows);
        Ok(())
    })
}

/// Child processes that are killed when this value is dropped.
struct Processes {
    children: Vec<Child>,
    endpoints: Vec<String>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Processes {
    fn berth(root: &std::path::Path) -> Result<Processes> {
        let addrs: Vec<String> =
            (0..3).map(|_| free_port().map(|p| format!("127.0.0.1:{p}"))).collect::<Result<_>>()?;
        let members: Vec<String> =
            addrs.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let me = std::env::current_exe()?;
        let mut children = Vec::new();
        for (i, addr) in addrs.iter().enumerate() {
            let dir = root.join(format!("berth-{}", i + 1));
            children.push(
                Command::new(&me)
                    .args([
                        "peer",
                        &(i + 1).to_string(),
                        &dir.to_string_lossy(),
                        addr,
                        &members.join(","),
                    ])
                    .stdout(Stdio::null())
                    .spawn()
                    .context("start a berth peer")?,
            );
        }
        Ok(Processes { children, endpoints: addrs })
    }

    fn etcd(root: &std::path::Path) -> Result<Processes> {
        let version = Command::new("etcd")
            .arg("--version")
            .output()
            .context("etcd not found (Debian etcd-server)")?;
        if !version.status.success() {
            bail!("etcd --version failed");
        }
        let client: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
        let peer: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_>>()?;
        let initial: Vec<String> =
            peer.iter().enumerate().map(|(i, p)| format!("e{i}=http://127.0.0.1:{p}")).collect();
        let mut children = Vec::new();
        for i in 0..3 {
            let dir = root.join(format!("etcd-{i}"));
            children.push(
                Command::new("etcd")
                    .args([
                        "--name",
                        &format!("e{i}"),
                        "--data-dir",
                        &dir.to_string_lossy(),
                        "--listen-client-urls",
                        &format!("http://127.0.0.1:{}", client[i]),
                        "--advertise-client-urls",
                        &format!("http://127.0.0.1:{}", client[i]),
                        "--listen-peer-urls",
                        &format!("http://127.0.0.1:{}", peer[i]),
                        "--initial-advertise-peer-urls",
                        &format!("http://127.0.0.1:{}", peer[i]),
                        "--initial-cluster",
                        &initial.join(","),
                        "--initial-cluster-state",
                        "new",
                        "--initial-cluster-token",
                        "bench",
                    ])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("start an etcd member")?,
            );
        }
        Ok(Processes {
            children,
            endpoints: client.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        })
    }
}

/// `peer ID DIR LISTEN MEMBERS`: one berth store peer, serving until killed.
fn run_peer(args: &[String]) -> Result<()> {
    let [id, dir, listen, members] = args else {
        bail!("usage: store-bench peer ID DIR LISTEN ID=ADDR,...");
    };
    let id: u64 = id.parse()?;
    let members: BTreeMap<u64, String> = members
        .split(',')
        .map(|m| {
            let (id, addr) = m.split_once('=').context("member is ID=ADDR")?;
            Ok((id.parse()?, addr.to_string()))
        })
        .collect::<Result<_>>()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let config = berth_raft_store::StoreConfig::new(id, "bench", dir, listen);
        let store = berth_raft_store::Store::open(config).await?;
        let etcd = berth_raft_store::etcd_services(store.clone());
        let listener = tokio::net::TcpListener::bind(listen.as_str()).await?;
        let server = tonic::transport::Server::builder()
            .add_service(berth_raft_store::peer_service(store.clone()))
            .add_service(etcd.kv)
            .add_service(etcd.watch)
            .add_service(etcd.lease)
            .add_service(etcd.cluster)
            .add_service(etcd.maintenance)
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            );
        if id == 1 {
            // Others may not listen yet; initialize once the server runs.
            let store = store.clone();
            tokio::spawn(async move {
                let _ = store.initialize(members).await;
            });
        }
        server.await?;
        Ok(())
    })
}

async fn channel(endpoint: &str) -> Result<Channel> {
    Ok(Channel::from_shared(format!("http://{endpoint}"))?.tcp_nodelay(true).connect().await?)
}

async fn wait_ready(endpoints: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for endpoint in endpoints {
        loop {
            let ok = async {
                let mut kv = KvClient::new(channel(endpoint).await?);
                kv.put(PutRequest {
                    key: b"ready".to_vec(),
                    value: b"1".to_vec(),
                    ..Default::default()
                })
                .await?;
                let mut m = MaintenanceClient::new(channel(endpoint).await?);
                m.status(StatusRequest {}).await?;
                Ok::<_, anyhow::Error>(())
            }
            .await;
            if ok.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("{endpoint} did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

struct Row {
    system: &'static str,
    test: String,
    ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn row(system: &'static str, test: String, mut latencies: Vec<Duration>, elapsed: Duration) -> Row {
    latencies.sort_unstable();
    Row {
        system,
        test,
        ops_per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
    }
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get { serializable: bool },
}

/// Closed loop: `clients` clients spread over the endpoints, each issuing
/// one request after another until `duration` is up.
async fn closed_loop(
    endpoints: &[String],
    clients: usize,
    op: Op,
    duration: Duration,
) -> Result<(Vec<Duration>, Duration)> {
    let mut channels = Vec::new();
    for endpoint in endpoints {
        channels.push(channel(endpoint).await?);
    }
    let all = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut kv = KvClient::new(channels[c % channels.len()].clone());
        let all = all.clone();
        tasks.push(tokio::spawn(async move {
            let mut seed = 0x9E3779B97F4A7C15u64 ^ (c as u64 + 1);
            let value = vec![b'v'; VALUE_BYTES];
            let mut mine = Vec::new();
            while Instant::now() < deadline {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let key = format!("bench/{:05}", (seed >> 33) % KEYS).into_bytes();
                let t = Instant::now();
                let ok = match op {
                    Op::Put => kv
                        .put(PutRequest { key, value: value.clone(), ..Default::default() })
                        .await
                        .is_ok(),
                    Op::Get { serializable } => kv
                        .range(RangeRequest { key, serializable, ..Default::default() })
                        .await
                        .is_ok(),
                };
                if ok {
                    mine.push(t.elapsed());
                }
            }
            all.lock().expect("latency list lock").extend(mine);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let latencies = std::mem::take(&mut *all.lock().expect("latency list lock"));
    Ok((latencies, started.elapsed()))
}

/// 100 watchers spread over the endpoints; one writer stamps each value with
/// its send time; delivery latency is receipt minus stamp.
async fn watch_latency(
    endpoints: &[String],
    watchers: usize,
    writes: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let epoch = Instant::now();
    let all = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(watchers);
    for w in 0..watchers {
        let mut client = WatchClient::new(channel(&endpoints[w % endpoints.len()]).await?);
        let all = all.clone();
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let create = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: b"watchbench/".to_vec(),
                        range_end: b"watchbench0".to_vec(),
                        ..Default::default()
                    },
                )),
            };
            let _ = tx.send(create).await;
            let Ok(response) = client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await
            else {
                return;
            };
            let mut stream = response.into_inner();
            let mut got = 0;
            let mut mine = Vec::new();
            while let Ok(Some(message)) = stream.message().await {
                if message.created {
                    let _ = ready.send(()).await;
                    continue;
                }
                let now = epoch.elapsed();
                for event in message.events {
                    let stamp = event.kv.map(|kv| kv.value).unwrap_or_default();
                    let micros: u64 = String::from_utf8_lossy(&stamp).parse().unwrap_or(0);
                    mine.push(now.saturating_sub(Duration::from_micros(micros)));
                    got += 1;
                }
                if got >= writes {
                    break;
                }
            }
            drop(tx);
            all.lock().expect("latency list lock").extend(mine);
        }));
    }
    drop(ready_tx);
    for _ in 0..watchers {
        ready_rx.recv().await.context("a watcher failed to start")?;
    }
    let mut kv = KvClient::new(channel(&endpoints[0]).await?);
    let started = Instant::now();
    for i in 0..writes {
        let stamp = epoch.elapsed().as_micros().to_string();
        kv.put(PutRequest {
            key: format!("watchbench/{i}").into_bytes(),
            value: stamp.into_bytes(),
            ..Default::default()
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .context("watchers did not finish")??;
    }
    let latencies = std::mem::take(&mut *all.lock().expect("latency list lock"));
    Ok((latencies, started.elapsed()))
}

async fn suite(system: &'static str, endpoints: &[String], duration: Duration) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for clients in [1, 16, 64] {
        let (l, e) = closed_loop(endpoints, clients, Op::Put, duration).await?;
        rows.push(row(system, format!("put, {clients} clients"), l, e));
    }
    let (l, e) = closed_loop(endpoints, 64, Op::Get { serializable: false }, duration).await?;
    rows.push(row(system, "linearizable get, 64 clients".into(), l, e));
    let (l, e) = closed_loop(endpoints, 64, Op::Get { serializable: true }, duration).await?;
    rows.push(row(system, "serializable get, 64 clients".into(), l, e));
    let (l, e) = watch_latency(endpoints, 100, 200).await?;
    let mut r = row(system, "watch delivery, 100 watchers".into(), l, e);
    r.ops_per_sec = f64::NAN;
    rows.push(r);
    Ok(rows)
}

fn print_table(rows: &[Row]) {
    println!("| test | system | ops/s | p50 ms | p99 ms |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let mut tests: Vec<&String> = Vec::new();
    for r in rows {
        if !tests.contains(&&r.test) {
            tests.push(&r.test);
        }
    }
    for test in tests {
        for r in rows.iter().filter(|r| &r.test == test) {
            let ops = if r.ops_per_sec.is_nan() {
                "-".to_string()
            } else {
                format!("{:.0}", r.ops_per_sec)
            };
            println!("| {} | {} | {} | {:.2} | {:.2} |", r.test, r.system, ops, r.p50_ms, r.p99_ms);
        }
    }
}
