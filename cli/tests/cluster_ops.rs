//! `berth cluster` against `berth server` processes: status, moving
//! leadership, adding and removing peers while a writer keeps writing (no
//! acknowledged write may be lost), the safety checks, and a snapshot
//! saved from one cluster and restored as another.

mod common;
mod peers;

use berth_client::{Api, Client};
use berth_proto::coordination_v1::Lease;
use berth_proto::meta_v1::ObjectMeta;
use peers::{free_addr, Cluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeerRow {
    id: u64,
    role: String,
    health: String,
    term: u64,
    applied_index: u64,
}

fn status(cluster: &Cluster) -> Vec<PeerRow> {
    serde_json::from_str(&cluster.ok(&["cluster", "status", "-o", "json"])).unwrap()
}

/// The leader's id once every listed peer agrees there is one.
fn leader(cluster: &Cluster) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = cluster.berth(&["cluster", "status", "-o", "json"], None);
        if run.code == 0 {
            let rows: Vec<PeerRow> = serde_json::from_str(&run.stdout).unwrap();
            let leaders: Vec<u64> =
                rows.iter().filter(|r| r.role == "leader").map(|r| r.id).collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
        }
        assert!(Instant::now() < deadline, "no leader: {}{}", run.stdout, run.stderr);
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Creates Leases one after another until stopped; records each one the
/// API acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Writer {
    fn start(rt: &tokio::runtime::Runtime, endpoints: Vec<String>) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Vec::new()));
        let (s, a) = (stop.clone(), acked.clone());
        let task = rt.spawn(async move {
            let client = Client::new(endpoints).unwrap();
            let api: Api<Lease> = Api::namespaced(&client, "default");
            let mut i = 0;
            while !s.load(Ordering::Relaxed) {
                let name = format!("w-{i}");
                let lease = Lease {
                    metadata: Some(ObjectMeta { name: name.clone(), ..Default::default() }),
                    ..Default::default()
                };
                match api.create(&lease).await {
                    // AlreadyExists: a retried create whose first try landed.
                    Ok(_) => a.lock().unwrap().push(name),
                    Err(e) if e.is_already_exists() => a.lock().unwrap().push(name),
                    Err(_) => {}
                }
                i += 1;
            }
        });
        Writer { stop, acked, task: Some(task) }
    }

    /// Stops the writer; returns what it saw acknowledged.
    fn finish(mut self, rt: &tokio::runtime::Runtime) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            rt.block_on(task).unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[test]
fn peers_are_added_removed_and_lead_in_turn_while_writes_go_on() {
    let mut cluster = Cluster::start("ops");
    let rt = runtime();

    let table = cluster.ok(&["cluster", "status"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["ID", "ADDRESS", "ROLE", "TERM", "COMMIT", "APPLIED", "REVISION", "HEALTH"]
    );
    assert_eq!(lines.len(), 4, "{table}");
    let first = leader(&cluster);
    let rows = status(&cluster);
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.health == "healthy" && r.term >= 1 && r.applied_index > 0));

    let writer = Writer::start(&rt, cluster.endpoints());

    // Leadership moves to a follower of our choosing.
    let target = rows.iter().map(|r| r.id).find(|id| *id != first).unwrap();
    let out = cluster.ok(&["cluster", "transfer-leader", &target.to_string()]);
    assert_eq!(out, format!("leadership moved from peer {first} to peer {target}\n"));
    assert_eq!(leader(&cluster), target);
    let out = cluster.ok(&["cluster", "transfer-leader", &target.to_string()]);
    assert_eq!(out, format!("peer {target} already leads\n"));

    // A fourth peer, started empty, joins and becomes a voter.
    let addr4 = free_addr();
    let index4 = cluster.spawn(4, &addr4, None);
    wait_listening(&addr4);
    let out = cluster.ok(&["cluster", "add-peer", &addr4]);
    assert_eq!(out, format!("added peer 4 ({addr4}) as a voter\n"));
    let mut endpoints = cluster.endpoints();
    cluster.write_config(&endpoints);
    let rows = status(&cluster);
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter().any(|r| r.id == 4 && r.role == "follower"),
        "{}",
        cluster.ok(&["cluster", "status"])
    );
    let err = cluster.fails(&["cluster", "add-peer", &addr4], None);
    assert!(err.contains("already"), "{err}");

    // The leader is not removed without --force; with it, leadership
    // moves away first.
    let err = cluster.fails(&["cluster", "remove-peer", &target.to_string()], None);
    assert!(err.contains(&format!("peer {target} is the Raft leader")), "{err}");
    let run = cluster.berth(&["cluster", "remove-peer", &target.to_string(), "--force"], None);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("warning: peer {target} leads; moving leadership away")),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.starts_with(&format!("leadership moved from peer {target} to peer ")),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!("\nremoved peer {target} (")), "{}", run.stdout);
    let removed = cluster.peers.iter().position(|p| p.id == target).unwrap();
    cluster.kill(removed);
    endpoints.retain(|e| *e != cluster.peers[removed].grpc);
    cluster.write_config(&endpoints);
    assert_ne!(leader(&cluster), target);

    // Down to one voter; the last one stays.
    for id in [4, first_other(&cluster, target)] {
        let out = cluster.ok(&["cluster", "remove-peer", &id.to_string(), "--force"]);
        assert!(out.contains(&format!("removed peer {id} (")), "{out}");
        let index = cluster.peers.iter().position(|p| p.id == id).unwrap();
        cluster.kill(index);
        endpoints.retain(|e| *e != cluster.peers[index].grpc);
        cluster.write_config(&endpoints);
    }
    let _ = index4;
    let rows = status(&cluster);
    assert_eq!(rows.len(), 1);
    let last = rows[0].id;
    let err = cluster.fails(&["cluster", "remove-peer", &last.to_string(), "--force"], None);
    assert!(err.contains(&format!("peer {last} is the last voter")), "{err}");
    let err = cluster.fails(&["cluster", "remove-peer", "99"], None);
    assert!(err.contains("peer 99 is not a member"), "{err}");

    // Every write the API acknowledged is there.
    let acked = writer.finish(&rt);
    assert!(!acked.is_empty());
    let stored: Vec<String> = rt.block_on(async {
        let client = Client::new(endpoints.clone()).unwrap();
        let api: Api<Lease> = Api::namespaced(&client, "default");
        let list = api.list(&Default::default()).await.unwrap();
        list.items.into_iter().map(|l| l.metadata.unwrap().name).collect()
    });
    let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(n)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?} (of {})", acked.len());
    eprintln!("{} acknowledged writes, none lost", acked.len());
}

/// The voter that is neither `removed` nor peer 4.
fn first_other(cluster: &Cluster, removed: u64) -> u64 {
    let rows = status(cluster);
    rows.iter().map(|r| r.id).find(|id| *id != removed && *id != 4 && *id != 1).unwrap_or(1)
}

#[test]
fn a_snapshot_saved_from_one_cluster_starts_another() {
    let mut cluster = Cluster::start("snap");
    let namespaces: String = (0..5)
        .map(|i| format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: saved-{i}\n---\n"))
        .collect();
    cluster.ok_with(&["apply", "-f", "-"], Some(&namespaces));

    let dir = cluster.dir.path().to_path_buf();
    let file = dir.join("store.snap");
    let out = cluster.ok(&["cluster", "snapshot", "save", file.to_str().unwrap()]);
    assert!(out.starts_with("saved the key space at revision "), "{out}");
    let revision: i64 = out
        .trim_start_matches("saved the key space at revision ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(file.metadata().unwrap().len() > 0);

    let data = dir.join("restored");
    let out = cluster.ok(&[
        "cluster",
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--cluster",
        "restored",
    ]);
    assert!(
        out.starts_with(&format!("restored the key space at revision {revision} into ")),
        "{out}"
    );
    // Never over an existing store, and never from a file that is not one.
    let err = cluster.fails(
        &[
            "cluster",
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    assert!(err.contains("is not empty"), "{err}");
    let junk = dir.join("junk");
    std::fs::write(&junk, "not a snapshot at all").unwrap();
    let err = cluster.fails(
        &[
            "cluster",
            "snapshot",
            "restore",
            junk.to_str().unwrap(),
            "--data-dir",
            dir.join("junk-data").to_str().unwrap(),
        ],
        None,
    );
    assert!(err.contains("not a berth snapshot"), "{err}");
    assert!(!dir.join("junk-data").exists());

    // A peer started on the restored directory leads a new cluster that
    // holds the saved objects, and takes writes.
    let addr = free_addr();
    let http = free_addr();
    cluster.spawn_on(1, &addr, &http, &data, "restored", Some(&format!("1={addr}")));
    cluster.wait_serving(&addr);
    let names = cluster.ok(&["get", "ns", "-o", "name", "--server", &addr]);
    for i in 0..5 {
        assert!(names.contains(&format!("namespace/saved-{i}\n")), "{names}");
    }
    let out = cluster.ok_with(
        &["apply", "-f", "-", "--server", &addr],
        Some("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: after-restore\n"),
    );
    assert_eq!(out, "namespace/after-restore created\n");
    let status = cluster.ok(&["cluster", "status", "--server", &addr]);
    assert_eq!(status.lines().count(), 2, "{status}");
    assert!(status.contains(" leader "), "{status}");
}
