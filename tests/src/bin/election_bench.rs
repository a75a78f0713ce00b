//! Time to a new Raft leader, and to the first write through a surviving
//! peer, after the leader of 3 in-process store peers is killed or
//! isolated, many times over; prints one table row per setting and fault.
//!
//! The peers run in this process on loopback, each with its own RocksDB and
//! gRPC server; "kill" stops the leader's server and store (no goodbye),
//! "isolate" drops every Raft message between the leader and the others
//! with the store's fault injector. A writer keeps putting keys through the
//! peers during the whole run, so logs differ when a fault hits.
//!
//! ```sh
//! cargo run --release -p berth-tests --bin election-bench -- --rounds 30
//! ```

use anyhow::{bail, Context, Result};
use berth_proto::etcd::etcdserverpb::PutRequest;
use berth_raft_store::{peer_service, Store, StoreConfig};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy)]
struct Setting {
    heartbeat_ms: u64,
    election_ms: (u64, u64),
    watchdog: bool,
}

impl Setting {
    fn name(&self) -> String {
        format!(
            "{}/{}-{} {}",
            self.heartbeat_ms,
            self.election_ms.0,
            self.election_ms.1,
            if self.watchdog { "watchdog" } else { "raft timer only" }
        )
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Isolate,
}

struct Args {
    rounds: usize,
    settings: Vec<Setting>,
    faults: Vec<Fault>,
}

fn usage() -> &'static str {
    "election-bench [--rounds N] [--timing HB/MIN-MAX]... [--watchdog on|off|both] \
     [--fault kill|isolate|both]"
}

fn parse_args() -> Result<Args> {
    let mut rounds = 20;
    let mut timings: Vec<(u64, (u64, u64))> = Vec::new();
    let mut watchdogs = vec![false, true];
    let mut faults = vec![Fault::Kill, Fault::Isolate];
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value; {}", usage()));
        match arg.as_str() {
            "--rounds" => rounds = value()?.parse().context("--rounds")?,
            "--timing" => {
                let v = value()?;
                let parsed = v.split_once('/').and_then(|(hb, range)| {
                    let (min, max) = range.split_once('-')?;
                    Some((hb.parse().ok()?, (min.parse().ok()?, max.parse().ok()?)))
                });
                match parsed {
                    Some(t) => timings.push(t),
                    None => bail!("--timing {v}: expected HB/MIN-MAX, e.g. 100/400-800"),
                }
            }
            "--watchdog" => {
                watchdogs = match value()?.as_str() {
                    "on" => vec![true],
                    "off" => vec![false],
                    "both" => vec![false, true],
                    v => bail!("--watchdog {v}: expected on, off or both"),
                }
            }
            "--fault" => {
                faults = match value()?.as_str() {
                    "kill" => vec![Fault::Kill],
                    "isolate" => vec![Fault::Isolate],
                    "both" => vec![Fault::Kill, Fault::Isolate],
                    v => bail!("--fault {v}: expected kill, isolate or both"),
                }
            }
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}; {}", usage()),
        }
    }
    if timings.is_empty() {
        timings.push((100, (400, 800)));
    }
    let settings = timings
        .iter()
        .flat_map(|&(heartbeat_ms, election_ms)| {
            watchdogs.iter().map(move |&watchdog| Setting { heartbeat_ms, election_ms, watchdog })
        })
        .collect();
    Ok(Args { rounds, settings, faults })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let mut rows = Vec::new();
        for setting in &args.settings {
            for fault in &args.faults {
                let (leader, write) = measure(*setting, *fault, args.rounds).await?;
                rows.push((setting.name(), *fault, leader, write));
            }
        }
        println!();
        println!("| setting (heartbeat/election ms) | fault | rounds | new leader p50 / p90 / max (ms) | first write p50 / p90 / max (ms) |");
        println!("| --- | --- | --- | --- | --- |");
        for (name, fault, leader, write) in rows {
            let fault = if fault == Fault::Kill { "kill leader" } else { "isolate leader" };
            println!("| {name} | {fault} | {} | {} | {} |", leader.len(), figures(leader), figures(write));
        }
        Ok(())
    })
}

fn figures(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_millis()
    };
    if samples.is_empty() {
        return "-".into();
    }
    format!("{} / {} / {}", at(0.5), at(0.9), at(1.0))
}

struct Peer {
    id: u64,
    addr: String,
    dir: PathBuf,
    store: Option<Store>,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Peer {
    async fn launch(&mut self, cluster: &str, setting: Setting) -> Result<()> {
        let mut config = StoreConfig::new(self.id, cluster, &self.dir, &self.addr);
        config.heartbeat = Duration::from_millis(setting.heartbeat_ms);
        config.election_timeout = (
            Duration::from_millis(setting.election_ms.0),
            Duration::from_millis(setting.election_ms.1),
        );
        config.campaign_when_leader_silent = setting.watchdog;
        config.request_timeout = Duration::from_secs(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        // A stopped peer's RocksDB lock goes with its last handle.
        let store = loop {
            match Store::open(config.clone()).await {
                Ok(store) => break store,
                Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(e.into()),
            }
        };
        let listener = loop {
            match TcpListener::bind(&self.addr).await {
                Ok(l) => break l,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(e).with_context(|| format!("bind {}", self.addr)),
            }
        };
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let router = tonic::transport::Server::builder().add_service(peer_service(store.clone()));
        let stop = CancellationToken::new();
        let token = stop.clone();
        self.server = Some(tokio::spawn(async move {
            let _ = router.serve_with_incoming_shutdown(incoming, token.cancelled()).await;
        }));
        self.stop = stop;
        self.store = Some(store);
        Ok(())
    }

    /// Stops the peer as a crash would.
    async fn halt(&mut self) {
        self.stop.cancel();
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        if let Some(store) = self.store.take() {
            store.shutdown().await;
        }
    }
}

/// The stores running now, for the background writer.
type Running = Arc<Mutex<Vec<Store>>>;

fn running(peers: &[Peer]) -> Vec<Store> {
    peers.iter().filter_map(|p| p.store.clone()).collect()
}

/// Runs `rounds` faults of one kind on a fresh cluster; returns the times to
/// a new leader and to the first write through a surviving peer.
async fn measure(
    setting: Setting,
    fault: Fault,
    rounds: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let root = tempfile::tempdir()?;
    let cluster = format!("election-bench-{}", std::process::id());
    let mut peers = Vec::new();
    for id in 1..=3u64 {
        // Take a free port, then let the peer bind it.
        let addr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?.to_string();
        let mut peer = Peer {
            id,
            addr,
            dir: root.path().join(format!("peer-{id}")),
            store: None,
            stop: CancellationToken::new(),
            server: None,
        };
        peer.launch(&cluster, setting).await?;
        peers.push(peer);
    }
    let members: BTreeMap<u64, String> = peers.iter().map(|p| (p.id, p.addr.clone())).collect();
    peers[0].store.as_ref().context("peer 1 runs")?.initialize(members).await?;

    let live: Running = Arc::new(Mutex::new(running(&peers)));
    let stop_writer = CancellationToken::new();
    let writer = tokio::spawn(write_forever(live.clone(), stop_writer.clone()));

    let mut to_leader = Vec::new();
    let mut to_write = Vec::new();
    for round in 0..rounds {
        agreed_leader(&running(&peers), None).await?;
        // Let the new term settle (and the restarted peer catch up) before
        // the next fault.
        tokio::time::sleep(Duration::from_millis(3 * setting.election_ms.1)).await;
        let (old, _) = agreed_leader(&running(&peers), None).await?;
        let others: Vec<u64> = (1..=3).filter(|id| *id != old).collect();
        let started = Instant::now();
        match fault {
            Fault::Kill => {
                peers[(old - 1) as usize].halt().await;
                *live.lock().expect("live lock") = running(&peers);
            }
            Fault::Isolate => {
                for other in &others {
                    cut(&peers, old, *other);
                }
            }
        }
        let survivors: Vec<Store> =
            others.iter().filter_map(|id| peers[(*id - 1) as usize].store.clone()).collect();
        let probe = survivors[round % survivors.len()].clone();
        let (leader_at, write_at) =
            tokio::join!(agreed_leader(&survivors, Some(old)), first_write(&probe, round));
        let (_, leader_at) = leader_at.with_context(|| format!("round {round}: no new leader"))?;
        to_leader.push(leader_at.duration_since(started));
        to_write.push(write_at?.duration_since(started));
        match fault {
            Fault::Kill => {
                peers[(old - 1) as usize].launch(&cluster, setting).await?;
                *live.lock().expect("live lock") = running(&peers);
            }
            Fault::Isolate => {
                for p in &peers {
                    if let Some(s) = &p.store {
                        s.faults().heal();
                    }
                }
            }
        }
        eprintln!(
            "{} {:?} round {round}: leader after {:?}, write after {:?}",
            setting.name(),
            if fault == Fault::Kill { "kill" } else { "isolate" },
            to_leader.last().copied().unwrap_or_default(),
            to_write.last().copied().unwrap_or_default()
        );
    }
    stop_writer.cancel();
    let _ = writer.await;
    for p in &mut peers {
        p.halt().await;
    }
    Ok((to_leader, to_write))
}

fn cut(peers: &[Peer], a: u64, b: u64) {
    if let (Some(sa), Some(sb)) = (&peers[(a - 1) as usize].store, &peers[(b - 1) as usize].store) {
        sa.faults().block(b);
        sb.faults().block(a);
    }
}

/// Polls until every store in `stores` names the same leader, other than
/// `not`, that is one of them (30 s at most); returns it and when it was seen.
async fn agreed_leader(stores: &[Store], not: Option<u64>) -> Result<(u64, Instant)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders: Vec<Option<u64>> = stores.iter().map(|s| s.leader()).collect();
        if let Some(Some(leader)) = leaders.first() {
            let agreed = leaders.iter().all(|l| *l == Some(*leader));
            let among = stores.iter().any(|s| s.id() == *leader);
            if agreed && among && Some(*leader) != not {
                return Ok((*leader, Instant::now()));
            }
        }
        if Instant::now() >= deadline {
            bail!("no leader agreed on: {leaders:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Puts through `store` until one put succeeds; returns when it completed.
async fn first_write(store: &Store, round: usize) -> Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let put = PutRequest {
            key: format!("/bench/probe/{round}").into_bytes(),
            value: b"x".to_vec(),
            ..Default::default()
        };
        if store.put(put).await.is_ok() {
            return Ok(Instant::now());
        }
        if Instant::now() >= deadline {
            bail!("no write succeeded in 30 s");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Keeps putting keys through the running peers in turn.
async fn write_forever(live: Running, stop: CancellationToken) {
    let mut n = 0u64;
    while !stop.is_cancelled() {
        let stores = live.lock().expect("live lock").clone();
        if stores.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let store = stores[(n as usize) % stores.len()].clone();
        let put = PutRequest {
            key: format!("/bench/load/{}", n % 64).into_bytes(),
            value: n.to_le_bytes().to_vec(),
            ..Default::default()
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = store.put(put) => {}
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
