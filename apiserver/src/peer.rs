//! One API-server peer: the store, its gRPC services and its HTTP endpoints,
//! run until told to stop.

use crate::health;
use berth_raft_store::{etcd_services, peer_service, NodeId, Store, StoreConfig, StoreError};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How a peer is started.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub id: NodeId,
    pub cluster: String,
    pub data_dir: PathBuf,
    /// gRPC: Raft between peers, the etcd v3 API, later the berth API.
    pub listen: SocketAddr,
    /// The address other peers and clients use for `listen`.
    pub advertise: String,
    /// HTTP: /livez, /readyz, /metrics.
    pub http: SocketAddr,
    /// The initial voters (id -> advertised address). On a first start the
    /// peer with the lowest id creates the cluster with them.
    pub initial_peers: BTreeMap<NodeId, String>,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// How much of the store's history is kept for watches and past reads.
    pub history_retention: Duration,
    /// How long Events live.
    pub event_ttl: Duration,
    /// Requests (watches aside) served at once; more get TooManyRequests.
    pub max_requests_in_flight: usize,
    /// Watches served at once; more get TooManyRequests.
    pub max_watchers: usize,
    /// How long one call (a watch's opening, not its stream) may take
    /// before it is answered DeadlineExceeded; a client's shorter
    /// grpc-timeout wins.
    pub request_timeout: Duration,
    /// The cluster secret node agents hold: it authenticates this peer's
    /// relays of logs and exec to them. Without it, logs and exec are
    /// unavailable.
    pub kubelet_secret: Option<String>,
    /// Mutual TLS on every surface: the gRPC port (the API, Raft between
    /// peers, the etcd API), the HTTP port and the link to node agents.
    /// None: plain TCP, which `berth server` allows only on loopback with
    /// `--insecure`.
    pub tls: Option<PeerTls>,
    /// The authorizers requests pass, in order (`--authorization-mode`).
    /// Empty: everything is allowed, as with AlwaysAllow alone.
    pub authorization_modes: Vec<crate::filters::AuthorizationMode>,
    /// Admission plugins beyond fencing, defaulting and validation
    /// (`--enable-admission-plugins`).
    pub admission_plugins: Vec<crate::filters::AdmissionPlugin>,
    /// How the PodSecurity admission plugin judges pods, when enabled.
    pub pod_security: crate::filters::PodSecurityConfig,
    /// Token authentication, the audit log and the per-user in-flight
    /// limit (`--token-auth-file`, `--service-account-key-file`,
    /// `--audit-log-*`, `--max-requests-in-flight-per-user`).
    pub guards: crate::filters::Guards,
}

/// A peer's TLS setup: its peer certificate (CN `system:peer:<id>`), used
/// as its server certificate and as its client certificate towards other
/// peers and node agents, and the cluster CA it trusts.
#[derive(Clone, Debug)]
pub struct PeerTls {
    pub credential: berth_tls::Credential,
    pub trust: berth_tls::Trust,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source} (is another process using the port?)")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server failed: {0}")]
    Grpc(String),
    #[error(transparent)]
    Tls(#[from] berth_tls::TlsError),
    #[error(transparent)]
    Guards(#[from] crate::filters::GuardsError),
    #[error("peer {id} is not in the initial peer list {peers:?}")]
    NotAPeer { id: NodeId, peers: Vec<NodeId> },
}

/// How long open streams may delay a stop.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Runs the peer until `stop` is cancelled.
pub async fn serve(config: PeerConfig, stop: CancellationToken) -> Result<(), ServeError> {
    if !config.initial_peers.is_empty() && !config.initial_peers.contains_key(&config.id) {
        return Err(ServeError::NotAPeer {
            id: config.id,
            peers: config.initial_peers.keys().copied().collect(),
        });
    }
    let metrics = health::install_metrics();
    let grpc_listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen { addr: config.listen, source })?;
    let http_listener = tokio::net::TcpListener::bind(config.http)
        .await
        .map_err(|source| ServeError::Listen { addr: config.http, source })?;

    let mut store_config =
        StoreConfig::new(config.id, &config.cluster, &config.data_dir, &config.advertise);
    store_config.heartbeat = config.heartbeat;
    store_config.election_timeout = config.election_timeout;
    let client_tls = config
        .tls
        .as_ref()
        .map(|tls| berth_tls::ClientTls::new(tls.trust.clone(), Some(tls.credential.clone())));
    store_config.tls = client_tls.clone();
    let server_tls = |protocol| {
        config
            .tls
            .as_ref()
            .map(|tls| berth_tls::ServerTls::new(&tls.credential, &tls.trust, protocol))
            .transpose()
    };
    let grpc_incoming =
        berth_tls::Acceptor::new(grpc_listener, server_tls(berth_tls::Protocol::Grpc)?);
    let http_incoming =
        berth_tls::Acceptor::new(http_listener, server_tls(berth_tls::Protocol::Http1)?);
    let store = Store::open(store_config).await?;

    let etcd = etcd_services(store.clone());
    let registry = crate::Registry::new(store.clone());
    let mut filters = crate::filters::Filters::default();
    filters.authorizers =
        crate::filters::authorizers(&config.authorization_modes, &registry, &stop);
    filters.admission = crate::filters::admission_plugins(
        &config.admission_plugins,
        &config.pod_security,
        &registry,
        &stop,
    );
    let mut filters = filters.with_token_authenticators(config.guards.token_authenticators()?);
    if config.tls.is_some() {
        // Client certificates first, as Kubernetes asks them: a connection
        // that presented one is that user whatever headers it sends.
        filters.authenticators.insert(0, Box::new(crate::filters::ClientCertificates));
    }
    // Written until this function returns, when the writer is dropped.
    let (oversight, _audit_writer) = config.guards.oversight()?;
    let api = crate::api::Api::new(registry, stop.clone())
        .with_filters(filters)
        .with_oversight(oversight)
        .with_event_ttl(config.event_ttl)
        .with_limits(config.max_requests_in_flight, config.max_watchers)
        .with_kubelet_secret(config.kubelet_secret.clone())
        .with_kubelet_tls(client_tls);
    let resources = crate::api::services(api.clone());
    let (health, health_service) = tonic_health::server::health_reporter();
    // Both versions of the reflection protocol: grpcurl asks v1, most
    // language libraries still v1alpha.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServeError::Grpc(format!("reflection: {e}")))?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(berth_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| ServeError::Grpc(format!("reflection: {e}")))?;
    let grpc = tonic::transport::Server::builder()
        .timeout(config.request_timeout)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(peer_service(store.clone()))
        .add_service(resources.namespaces)
        .add_service(resources.nodes)
        .add_service(resources.pods)
        .add_service(resources.events)
        .add_service(resources.replica_sets)
        .add_service(resources.deployments)
        .add_service(resources.leases)
        .add_service(resources.roles)
        .add_service(resources.cluster_roles)
        .add_service(resources.role_bindings)
        .add_service(resources.cluster_role_bindings)
        .add_service(etcd.kv)
        .add_service(etcd.watch)
        .add_service(etcd.lease)
        .add_service(etcd.cluster)
        .add_service(etcd.maintenance)
        .serve_with_incoming_shutdown(grpc_incoming.into_stream(), stop.clone().cancelled_owned());
    let app = crate::rest::router(api.clone(), health::routes(store.clone(), metrics));
    let http = health::serve(http_incoming, app, stop.clone());

    let compactor = crate::spawn_compactor(
        store.clone(),
        config.history_retention,
        (config.history_retention / 5).clamp(Duration::from_millis(100), Duration::from_secs(60)),
        stop.clone(),
    );
    let bootstrap = async {
        bootstrap(store.clone(), &config, stop.clone()).await;
        create_namespaces(&api, &stop).await;
        // Serving: the cluster takes writes (the standard health service
        // answers SERVING for "" and each berth service from here on).
        health.set_service_status("", tonic_health::ServingStatus::Serving).await;
        for service in crate::api::SERVICE_NAMES {
            health.set_service_status(*service, tonic_health::ServingStatus::Serving).await;
        }
    };
    tracing::info!(id = config.id, listen = %config.listen, http = %config.http, "peer serving");
    // Streams that outlive the stop (an etcd watch, say) get a moment to
    // close, then the server goes regardless.
    let grpc = async {
        tokio::select! {
            result = grpc => result.map_err(|e| ServeError::Grpc(e.to_string())),
            _ = async { stop.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => Ok(()),
        }
    };
    let (grpc, _, _) = tokio::join!(grpc, http, bootstrap);
    let _ = compactor.await;
    store.shutdown().await;
    grpc
}

/// Makes sure the namespaces every cluster starts with exist, once the
/// cluster can take writes. Every peer tries; the first one wins.
async fn create_namespaces(api: &crate::api::Api, stop: &CancellationToken) {
    loop {
        match api.bootstrap().await {
            Ok(()) => return,
            Err(e) => tracing::debug!(error = %e, "bootstrap namespaces not created yet"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// On a first start, the lowest-numbered initial peer creates the cluster
/// once the others can be reached; later starts find it initialized.
async fn bootstrap(store: Store, config: &PeerConfig, stop: CancellationToken) {
    let Some(first) = config.initial_peers.keys().next() else { return };
    if *first != config.id {
        return;
    }
    match store.initialize(config.initial_peers.clone()).await {
        Ok(()) => tracing::info!(peers = ?config.initial_peers, "cluster initialized"),
        // Already initialized: a restart, nothing to do.
        Err(StoreError::InvalidArgument(reason)) => {
            tracing::debug!(%reason, "cluster already initialized")
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot initialize the cluster");
            stop.cancel();
        }
    }
}
