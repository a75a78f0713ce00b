//! The node agent's control-plane side: it registers its Node, keeps the
//! Node's status current, and renews the node's Lease in kube-node-lease
//! so the node lifecycle controller knows it is alive. Running the pods
//! bound to the node, through CRI, builds on this, and so does the stream
//! server through which API peers reach the pods' logs and exec.

mod lease;
mod logs;
mod node;
mod pods;
mod probes;
mod pulls;
mod resources;
mod security;
mod stream;
mod volumes;

use berth_client::Client;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use node::Reserved;

/// How an agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub node_name: String,
    /// The address other components reach this node at.
    pub node_ip: String,
    /// Where the agent keeps its state; its filesystem's size is the node's
    /// ephemeral storage.
    pub root_dir: std::path::PathBuf,
    /// Held back from pods: capacity minus this is allocatable.
    pub reserved: Reserved,
    /// How often the Lease is renewed (Kubernetes: 10 s).
    pub lease_renew: Duration,
    /// How long the Lease holds without renewal (Kubernetes: 40 s).
    pub lease_duration: Duration,
    /// The Node's status is written when it changes, and at least this
    /// often (Kubernetes: 5 minutes).
    pub status_report: Duration,
    /// Node labels besides the well-known ones.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The CRI runtime's socket; without one the agent only registers and
    /// heartbeats (no pods run).
    pub cri_socket: Option<std::path::PathBuf>,
    /// Pods synced at once.
    pub pod_workers: usize,
    /// Stop every pod's containers when the agent stops (a local
    /// development cluster); a production node leaves them running so a
    /// restarted agent finds them again.
    pub stop_pods_on_exit: bool,
    /// Device plugins: where the Registration socket and the allocation
    /// checkpoint live, and their timings; None serves no device plugins.
    pub devices: Option<crate::devices::DeviceConfig>,
    /// The cluster secret API servers present to reach this node's logs
    /// and exec; without it (or without a CRI socket) the node serves
    /// neither.
    pub cluster_secret: Option<String>,
    /// Mutual TLS for the stream server: the node's server certificate,
    /// and the CA whose API server peers' certificates (group
    /// `system:peers`) it accepts; it replaces the cluster secret.
    pub stream_tls: Option<berth_tls::ServerTls>,
    /// The port of the stream server for logs and exec, on `node_ip`
    /// (0: any free port); the Node publishes the one it got.
    pub kubelet_port: u16,
    /// Containers whose pod names no seccomp profile get RuntimeDefault
    /// (Kubernetes' --seccomp-default); false leaves them Unconfined.
    /// Localhost profiles are read from `<root_dir>/seccomp`.
    pub seccomp_default: bool,
}

impl AgentConfig {
    pub fn new(node_name: &str, root_dir: impl Into<std::path::PathBuf>) -> AgentConfig {
        AgentConfig {
            node_name: node_name.into(),
            node_ip: "127.0.0.1".into(),
            root_dir: root_dir.into(),
            reserved: Reserved::default(),
            lease_renew: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            status_report: Duration::from_secs(300),
            labels: Default::default(),
            cri_socket: None,
            pod_workers: 4,
            stop_pods_on_exit: false,
            devices: None,
            cluster_secret: None,
            stream_tls: None,
            kubelet_port: 0,
            seccomp_default: true,
        }
    }
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot read the machine's {what}: {source}")]
    Machine { what: &'static str, source: std::io::Error },
    #[error("the API refused the node: {0}")]
    Api(#[from] berth_client::Error),
    #[error("cannot reach the CRI runtime: {0}")]
    Runtime(#[from] tonic::transport::Error),
    #[error("cannot listen for logs and exec on {addr}: {source}")]
    Streams { addr: String, source: std::io::Error },
    #[error("device plugins: {0}")]
    Devices(#[from] crate::devices::DevicesError),
}

/// Registers the node and keeps its status and Lease current until `stop`.
/// Transient API failures are retried; only a node that cannot be
/// described at all ends it with an error.
pub async fn run(
    client: &Client,
    config: &AgentConfig,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    let machine = node::Machine::read(config)?;
    let (devices, serving_devices) = match &config.devices {
        Some(c) => {
            let (manager, serving) = crate::devices::DeviceManager::start(c.clone(), stop.clone())?;
            (Some(manager), Some(serving))
        }
        None => (None, None),
    };
    let serving_devices = async {
        if let Some(serving) = serving_devices {
            serving.await
        }
    };
    let (streams, config) = stream_server(config).await?;
    let config = &config;
    let nodes = node::NodeWriter::new(client, config, machine, devices.clone());
    // Register first, so the Lease can name the Node as its owner.
    let uid = loop {
        match nodes.register().await {
            Ok(uid) => break uid,
            Err(e) => {
                tracing::warn!(node = %config.node_name, error = %e, "could not register the node; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tracing::info!(node = %config.node_name, "node registered");
    let heartbeat = lease::Heartbeat::new(client, config, &uid);
    let pods = async {
        let Some(socket) = &config.cri_socket else { return Ok(()) };
        let (workers, informing) =
            pods::PodWorkers::start(client, config, socket, devices, stop.clone()).await?;
        tokio::join!(informing, workers.clone().run(config.pod_workers, stop.clone()));
        if config.stop_pods_on_exit {
            workers.stop_all().await;
        }
        Ok::<(), AgentError>(())
    };
    let streams = async {
        if let Some((server, socket, auth)) = streams {
            if let Err(e) = server.serve(socket, auth, stop.clone()).await {
                tracing::error!(error = %e, "the node's stream server failed");
            }
        }
    };
    let (_, _, pods, _, _) = tokio::join!(
        heartbeat.run(stop.clone()),
        nodes.keep_current(stop.clone()),
        pods,
        serving_devices,
        streams
    );
    pods
}

/// Binds the stream server for logs and exec where the node has a runtime
/// and a way to know API servers (TLS or the cluster secret); the config
/// returned carries the port it got (0: none), which the Node publishes.
async fn stream_server(
    config: &AgentConfig,
) -> Result<
    (Option<(stream::StreamServer, std::path::PathBuf, stream::Callers)>, AgentConfig),
    AgentError,
> {
    let mut config = config.clone();
    let callers = match (&config.stream_tls, &config.cluster_secret) {
        (Some(tls), _) => Some(stream::Callers::Peers(tls.clone())),
        (None, Some(secret)) => Some(stream::Callers::Secret(secret.clone())),
        (None, None) => None,
    };
    let (Some(socket), Some(callers)) = (&config.cri_socket, callers) else {
        config.kubelet_port = 0;
        return Ok((None, config));
    };
    let addr = format!("{}:{}", config.node_ip, config.kubelet_port);
    let parsed = match config.node_ip.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, config.kubelet_port),
        Err(e) => {
            return Err(AgentError::Streams { addr, source: std::io::Error::other(e.to_string()) })
        }
    };
    let server = stream::StreamServer::bind(parsed)
        .await
        .map_err(|source| AgentError::Streams { addr, source })?;
    let served = (server, socket.clone(), callers);
    config.kubelet_port = served.0.port();
    Ok((Some(served), config))
}
