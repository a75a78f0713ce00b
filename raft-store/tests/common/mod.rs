//! An in-process cluster of store peers on loopback, each serving the peer
//! service and the etcd facade on its own port, for the store's tests.

#![allow(dead_code)]

use berth_proto::etcd::etcdserverpb::{PutRequest, RangeRequest};
use berth_raft_store::{etcd_services, peer_service, Store, StoreConfig, StoreError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub struct Peer {
    pub id: u64,
    pub addr: String,
    pub dir: PathBuf,
    pub store: Option<Store>,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<()>>,
}

pub struct Cluster {
    pub peers: Vec<Peer>,
    pub name: String,
    _root: tempfile::TempDir,
    pub tune: fn(&mut StoreConfig),
}

pub fn fast(config: &mut StoreConfig) {
    config.heartbeat = Duration::from_millis(50);
    config.election_timeout = (Duration::from_millis(200), Duration::from_millis(400));
    config.request_timeout = Duration::from_secs(3);
}

impl Cluster {
    pub async fn start(n: u64) -> Cluster {
        Cluster::start_with(n, fast).await
    }

    pub async fn start_with(n: u64, tune: fn(&mut StoreConfig)) -> Cluster {
        let root = tempfile::tempdir().expect("temp dir");
        let name = format!("test-{}", root.path().file_name().unwrap().to_string_lossy());
        let mut peers = Vec::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
            let addr = listener.local_addr().unwrap().to_string();
            let dir = root.path().join(format!("peer-{id}"));
            let mut peer =
                Peer { id, addr, dir, store: None, stop: CancellationToken::new(), server: None };
            peer.launch(&name, tune, Some(listener)).await.expect("peer starts");
            peers.push(peer);
        }
        let members: BTreeMap<u64, String> = peers.iter().map(|p| (p.id, p.addr.clone())).collect();
        peers[0].store().initialize(members).await.expect("initialize");
        let cluster = Cluster { peers, name, _root: root, tune };
        cluster.wait_for_leader(None).await;
        cluster
    }

    /// Starts one more peer, not yet a member; returns its id.
    pub async fn add_peer(&mut self) -> u64 {
        let id = self.peers.len() as u64 + 1;
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().unwrap().to_string();
        let dir = self._root.path().join(format!("peer-{id}"));
        let mut peer =
            Peer { id, addr, dir, store: None, stop: CancellationToken::new(), server: None };
        peer.launch(&self.name, self.tune, Some(listener)).await.expect("peer starts");
        self.peers.push(peer);
        id
    }

    pub fn peer(&self, id: u64) -> &Peer {
        &self.peers[(id - 1) as usize]
    }

    pub fn store(&self, id: u64) -> &Store {
        self.peer(id).store()
    }

    /// Waits (with a deadline) until the running peers agree on a leader
    /// other than `not`.
    pub async fn wait_for_leader(&self, not: Option<u64>) -> u64 {
        let all: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        self.wait_for_leader_among(&all, not).await
    }

    /// Like `wait_for_leader`, asking only the running peers in `ids`.
    pub async fn wait_for_leader_among(&self, ids: &[u64], not: Option<u64>) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leaders: Vec<Option<u64>> = self
                .peers
                .iter()
                .filter(|p| ids.contains(&p.id))
                .filter_map(|p| p.store.as_ref())
                .map(|s| s.leader())
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                let agreed = leaders.iter().all(|l| *l == Some(*leader));
                let alive = self.peers[(*leader - 1) as usize].store.is_some();
                if agreed && alive && Some(*leader) != not {
                    return *leader;
                }
            }
            assert!(Instant::now() < deadline, "no leader agreed on: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(&mut self, id: u64) {
        self.peers[(id - 1) as usize].halt().await;
    }

    pub async fn restart(&mut self, id: u64) {
        let name = self.name.clone();
        let tune = self.tune;
        self.peers[(id - 1) as usize].launch(&name, tune, None).await.expect("peer restarts");
    }

    /// Blocks all messages between `a` and `b`, both ways.
    pub fn cut(&self, a: u64, b: u64) {
        self.store(a).faults().block(b);
        self.store(b).faults().block(a);
    }

    pub fn heal(&self) {
        for p in &self.peers {
            if let Some(s) = &p.store {
                s.faults().heal();
            }
        }
    }

    /// Waits until every running peer has the same revision and key-space hash.
    pub async fn converged(&self) -> (i64, u64) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let hashes: Vec<(i64, u64)> = self
                .peers
                .iter()
                .filter_map(|p| p.store.as_ref())
                .map(|s| s.key_space_hash().expect("hash"))
                .collect();
            if hashes.windows(2).all(|w| w[0] == w[1]) {
                return hashes[0];
            }
            assert!(Instant::now() < deadline, "peers did not converge: {hashes:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops every peer; returns the data directories' root, which is
    /// removed when dropped.
    pub async fn shutdown(mut self) -> tempfile::TempDir {
        for p in &mut self.peers {
            p.halt().await;
        }
        self._root
    }
}

impl Peer {
    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("peer is running")
    }

    async fn launch(
        &mut self,
        cluster: &str,
        tune: fn(&mut StoreConfig),
        listener: Option<TcpListener>,
    ) -> Result<(), StoreError> {
        let mut config = StoreConfig::new(self.id, cluster, &self.dir, &self.addr);
        tune(&mut config);
        // A stopped peer's RocksDB lock is released once its last handle is
        // dropped; retry opening until then.
        let deadline = Instant::now() + Duration::from_secs(10);
        let store = loop {
            match Store::open(config.clone()).await {
                Ok(store) => break store,
                Err(e) if Instant::now() < deadline && e.to_string().contains("lock") => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => return Err(e),
            }
        };
        let listener = match listener {
            Some(l) => l,
            None => bind_again(&self.addr).await,
        };
        let stop = CancellationToken::new();
        let etcd = etcd_services(store.clone());
        let router = tonic::transport::Server::builder()
            .add_service(peer_service(store.clone()))
            .add_service(etcd.kv)
            .add_service(etcd.watch)
            .add_service(etcd.lease)
            .add_service(etcd.cluster)
            .add_service(etcd.maintenance);
        // Small replies must not wait for delayed ACKs.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let token = stop.clone();
        self.server = Some(tokio::spawn(async move {
            let _ = router.serve_with_incoming_shutdown(incoming, token.cancelled()).await;
        }));
        self.stop = stop;
        self.store = Some(store);
        Ok(())
    }

    /// Stops the peer as a crash would: no goodbye to the others.
    pub async fn halt(&mut self) {
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

async fn bind_again(addr: &str) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot bind {addr} again: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

pub fn put(key: &str, value: &str) -> PutRequest {
    PutRequest { key: key.into(), value: value.into(), ..Default::default() }
}

pub fn get(key: &str) -> RangeRequest {
    RangeRequest { key: key.into(), ..Default::default() }
}

pub fn prefix(p: &str) -> RangeRequest {
    let mut end = p.as_bytes().to_vec();
    *end.last_mut().unwrap() += 1;
    RangeRequest { key: p.into(), range_end: end, ..Default::default() }
}

pub async fn value(store: &Store, key: &str) -> Option<String> {
    let r = store.range(get(key)).await.expect("range");
    r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}
