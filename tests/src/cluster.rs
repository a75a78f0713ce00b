//! A cluster of API-server peers (the real `serve`) in this process, on
//! loopback ports of its own, for tests and benchmarks.

use berth_apiserver::{serve, PeerConfig};
use berth_client::Client;
use berth_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use berth_proto::etcd::etcdserverpb::StatusRequest;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Peer {
    grpc: SocketAddr,
    http: SocketAddr,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Peers 0..n; each owns a data directory under one temporary directory
/// that goes when the cluster does.
pub struct ApiCluster {
    peers: Vec<Peer>,
    _dir: tempfile::TempDir,
}

/// A loopback port nobody holds now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("loopback has free ports")
}

impl ApiCluster {
    /// Starts `n` peers and waits until each serves the bootstrap
    /// namespaces.
    pub async fn start(n: usize, name: &str) -> anyhow::Result<ApiCluster> {
        ApiCluster::start_with_kubelet_secret(n, name, None).await
    }

    /// Like `start`, with the secret the peers present to node agents to
    /// relay logs and exec (None: they relay none).
    pub async fn start_with_kubelet_secret(
        n: usize,
        name: &str,
        kubelet_secret: Option<String>,
    ) -> anyhow::Result<ApiCluster> {
        ApiCluster::start_with(n, name, |config| config.kubelet_secret = kubelet_secret.clone())
            .await
    }

    /// Like `start`, with each peer's configuration changed by `configure`
    /// (filters, admission plugins); anonymous reads of namespaces must
    /// stay allowed, as readiness is checked with them.
    pub async fn start_with(
        n: usize,
        name: &str,
        configure: impl Fn(&mut PeerConfig),
    ) -> anyhow::Result<ApiCluster> {
        let dir = tempfile::tempdir()?;
        let grpc: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
        let initial: BTreeMap<u64, String> =
            grpc.iter().enumerate().map(|(i, a)| (i as u64 + 1, a.to_string())).collect();
        let mut peers = Vec::new();
        for (i, addr) in grpc.iter().enumerate() {
            let mut config = PeerConfig {
                id: i as u64 + 1,
                cluster: name.into(),
                data_dir: dir.path().join(format!("peer-{}", i + 1)),
                listen: *addr,
                advertise: addr.to_string(),
                http: free_addr(),
                initial_peers: initial.clone(),
                heartbeat: Duration::from_millis(50),
                election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
                history_retention: Duration::from_secs(300),
                event_ttl: Duration::from_secs(3600),
                max_requests_in_flight: 4096,
                max_watchers: 10_000,
                request_timeout: Duration::from_secs(60),
                kubelet_secret: None,
                tls: None,
                authorization_modes: Vec::new(),
                admission_plugins: Vec::new(),
                pod_security: Default::default(),
                guards: Default::default(),
            };
            configure(&mut config);
            let http = config.http;
            let stop = CancellationToken::new();
            let token = stop.clone();
            let task = tokio::spawn(async move {
                if let Err(e) = serve(config, token).await {
                    eprintln!("peer stopped: {e}");
                }
            });
            peers.push(Peer { grpc: *addr, http, stop, task: Some(task) });
        }
        let cluster = ApiCluster { peers, _dir: dir };
        for i in 0..n {
            let namespaces = berth_client::Api::<berth_proto::core_v1::Namespace>::all(
                &cluster.client_of(&[i])?,
            );
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let listed = namespaces.list(&Default::default()).await;
                if listed.is_ok_and(|l| l.items.len() >= 3) {
                    break;
                }
                anyhow::ensure!(Instant::now() < deadline, "peer {} never became ready", i + 1);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn address(&self, i: usize) -> String {
        self.peers[i].grpc.to_string()
    }

    /// Peer `i`'s HTTP address: the REST API, health and metrics.
    pub fn http_address(&self, i: usize) -> SocketAddr {
        self.peers[i].http
    }

    /// A client of every peer, failing over between them.
    pub fn client(&self) -> anyhow::Result<Client> {
        let all: Vec<usize> = (0..self.peers.len()).collect();
        self.client_of(&all)
    }

    /// A client of just these peers.
    pub fn client_of(&self, peers: &[usize]) -> anyhow::Result<Client> {
        Ok(Client::new(peers.iter().map(|&i| self.address(i)))?)
    }

    /// The index of the peer that leads the Raft group now, asked of the
    /// running peers (the etcd Maintenance status names it).
    pub async fn leader(&self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for peer in &self.peers {
                if peer.task.is_none() {
                    continue;
                }
                let channel =
                    tonic::transport::Channel::from_shared(format!("http://{}", peer.grpc))?
                        .connect_lazy();
                if let Ok(status) = MaintenanceClient::new(channel).status(StatusRequest {}).await {
                    let leader = status.into_inner().leader as usize;
                    if leader > 0 && self.peers.get(leader - 1).is_some_and(|p| p.task.is_some()) {
                        return Ok(leader - 1);
                    }
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "no peer leads");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops peer `i` and waits until it has shut down.
    pub async fn stop(&mut self, i: usize) {
        self.peers[i].stop.cancel();
        if let Some(task) = self.peers[i].task.take() {
            let _ = task.await;
        }
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.peers[i].task.is_some()
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.peers.len() {
            self.stop(i).await;
        }
    }
}
