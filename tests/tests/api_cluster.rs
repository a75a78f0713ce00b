//! Three API-server peers (the real `serve`, in one process) on loopback:
//! every peer serves every request, concurrent writers get one winner per
//! resourceVersion, every peer's watch sees the same events in the same
//! order, and stopping the leader loses no acknowledged write.

use berth_apiserver::{serve, PeerConfig};
use berth_proto::api_v1::pods_client::PodsClient;
use berth_proto::api_v1::{DeleteRequest, GetRequest, ListRequest, WatchRequest};
use berth_proto::core_v1::{Container, Pod, PodSpec};
use berth_proto::meta_v1::ObjectMeta;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

struct Peer {
    grpc: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

struct Cluster {
    peers: Vec<Peer>,
    _dir: tempfile::TempDir,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let grpc: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
        let initial: BTreeMap<u64, String> =
            grpc.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.to_string())).collect();
        let mut peers = Vec::new();
        for (i, addr) in grpc.iter().enumerate() {
            let config = PeerConfig {
                id: i as u64 + 1,
                cluster: "api-cluster".into(),
                data_dir: dir.path().join(format!("peer-{}", i + 1)),
                listen: *addr,
                advertise: addr.to_string(),
                http: free_addr(),
                initial_peers: initial.clone(),
                heartbeat: Duration::from_millis(50),
                election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
                history_retention: Duration::from_secs(300),
                event_ttl: Duration::from_secs(3600),
                max_requests_in_flight: 1024,
                max_watchers: 100,
            };
            let stop = CancellationToken::new();
            let token = stop.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = serve(config, token).await {
                    eprintln!("peer stopped: {e}");
                }
            });
            peers.push(Peer { grpc: *addr, stop, task: Some(task) });
        }
        let cluster = Cluster { peers, _dir: dir };
        // Ready: every peer lists the bootstrap namespaces.
        for i in 0..3 {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let mut client = berth_proto::api_v1::namespaces_client::NamespacesClient::new(
                    cluster.channel(i),
                );
                if let Ok(r) = client.list(ListRequest::default()).await {
                    if r.get_ref().items.len() == 3 {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "peer {} never became ready", i + 1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        cluster
    }

    fn channel(&self, i: usize) -> Channel {
        Channel::from_shared(format!("http://{}", self.peers[i].grpc)).unwrap().connect_lazy()
    }

    fn pods(&self, i: usize) -> PodsClient<Channel> {
        PodsClient::new(self.channel(i))
    }

    async fn stop(&mut self, i: usize) {
        self.peers[i].stop.cancel();
        if let Some(task) = self.peers[i].task.take() {
            let _ = task.await;
        }
    }

    async fn shutdown(mut self) {
        for i in 0..self.peers.len() {
            self.stop(i).await;
        }
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox:1.36".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn get(name: &str) -> GetRequest {
    GetRequest { namespace: "default".into(), name: name.into(), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_serves_and_one_writer_wins_each_version() {
    let cluster = Cluster::start().await;
    // CRUD through different peers.
    let created = cluster.pods(0).create(pod("a")).await.unwrap().into_inner();
    let got = cluster.pods(1).get(get("a")).await.unwrap().into_inner();
    assert_eq!(got, created);
    let mut changed = got.clone();
    changed.metadata.as_mut().unwrap().labels.insert("v".into(), "1".into());
    cluster.pods(2).update(changed).await.unwrap();

    // 50 concurrent updates from the same version: exactly one succeeds.
    let current = cluster.pods(0).get(get("a")).await.unwrap().into_inner();
    let mut writers = Vec::new();
    for i in 0..50 {
        let mut client = cluster.pods(i % 3);
        let mut attempt = current.clone();
        attempt.metadata.as_mut().unwrap().labels.insert("writer".into(), i.to_string());
        writers.push(tokio::spawn(async move {
            client.update(attempt).await.map(|_| ()).map_err(|e| e.code())
        }));
    }
    let mut wins = 0;
    for w in writers {
        match w.await.unwrap() {
            Ok(()) => wins += 1,
            Err(code) => assert_eq!(code, tonic::Code::Aborted, "a loser gets a Conflict"),
        }
    }
    assert_eq!(wins, 1);

    cluster
        .pods(1)
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(cluster.pods(2).get(get("a")).await.unwrap_err().code(), tonic::Code::NotFound);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_on_every_peer_see_the_same_events_in_order() {
    let cluster = Cluster::start().await;
    // Watch from a known version, so no write can slip in before a watch
    // registers.
    let listed = cluster
        .pods(0)
        .list(ListRequest { namespace: "default".into(), ..Default::default() })
        .await
        .unwrap();
    let from = listed.into_inner().metadata.unwrap().resource_version;
    let mut streams = Vec::new();
    for i in 0..3 {
        let request = WatchRequest {
            namespace: "default".into(),
            resource_version: from.clone(),
            ..Default::default()
        };
        streams.push(cluster.pods(i).watch(request).await.unwrap().into_inner());
    }
    for i in 0..10 {
        cluster.pods(i % 3).create(pod(&format!("p{i}"))).await.unwrap();
    }
    for i in 0..10 {
        cluster
            .pods(i % 3)
            .delete(DeleteRequest {
                namespace: "default".into(),
                name: format!("p{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut seen: Vec<Vec<(String, String, String)>> = Vec::new();
    for stream in &mut streams {
        let mut events = Vec::new();
        while events.len() < 20 {
            let e = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let meta = e.object.unwrap().metadata.unwrap();
            events.push((e.r#type, meta.name, meta.resource_version));
        }
        seen.push(events);
    }
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1], seen[2]);
    let versions: Vec<i64> = seen[0].iter().map(|(_, _, rv)| rv.parse().unwrap()).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_peers_loses_no_acknowledged_write_and_a_lone_peer_refuses() {
    let mut cluster = Cluster::start().await;
    let mut acked = Vec::new();
    // A client that fails over to the next peer when one is unavailable.
    let mut target = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..60 {
        if i == 20 {
            cluster.stop(0).await;
        }
        let name = format!("w{i}");
        loop {
            assert!(Instant::now() < deadline, "writes did not resume");
            if cluster.peers[target].task.is_none() {
                target = (target + 1) % 3;
                continue;
            }
            match cluster.pods(target).create(pod(&name)).await {
                Ok(_) => break,
                // Created by an attempt whose answer was lost.
                Err(e) if e.code() == tonic::Code::AlreadyExists => break,
                Err(_) => {
                    target = (target + 1) % 3;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        acked.push(name);
    }
    let listed = cluster
        .pods(1)
        .list(ListRequest { namespace: "default".into(), ..Default::default() })
        .await
        .unwrap();
    let names: std::collections::HashSet<String> =
        listed.into_inner().items.into_iter().map(|p| p.metadata.unwrap().name).collect();
    for name in &acked {
        assert!(names.contains(name), "acknowledged {name} lost");
    }
    // With two of three peers gone, the last one refuses writes.
    cluster.stop(1).await;
    let err = cluster.pods(2).create(pod("alone")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    cluster.shutdown().await;
}
