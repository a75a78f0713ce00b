//! The node agent's control-plane side: it registers its Node, keeps the
//! Node's status current, and renews the node's Lease in kube-node-lease
//! so the node lifecycle controller knows it is alive. Running the pods
//! bound to the node, through CRI, builds on this.

mod lease;
mod node;
mod pods;
mod resources;

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
    let nodes = node::NodeWriter::new(client, config, machine);
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
        let logs = config.root_dir.join("pods");
        let (workers, informing) = pods::PodWorkers::start(
            client,
            &config.node_name,
            &config.node_ip,
            socket,
            logs,
            stop.clone(),
        )
        .await?;
        tokio::join!(informing, workers.clone().run(config.pod_workers, stop.clone()));
        if config.stop_pods_on_exit {
            workers.stop_all().await;
        }
        Ok::<(), AgentError>(())
    };
    let (_, _, pods) =
        tokio::join!(heartbeat.run(stop.clone()), nodes.keep_current(stop.clone()), pods);
    pods
}
