//! The Node object: what this machine has, registered once and kept
//! current (written when it changes, and every report period regardless).

use super::{AgentConfig, AgentError};
use crate::devices::DeviceManager;
use berth_client::{Api, Client};
use berth_proto::core_v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo,
};
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::{Quantity, QuantityFormat, Time};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// Resources held back from pods (for the system and the agent itself).
#[derive(Clone, Debug, Default)]
pub struct Reserved {
    pub milli_cpu: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

/// What this machine is and has, read once at start.
pub(super) struct Machine {
    milli_cpu: i64,
    memory_bytes: i64,
    storage_bytes: i64,
    info: NodeSystemInfo,
}

fn read(path: &str, what: &'static str) -> Result<String, AgentError> {
    std::fs::read_to_string(path).map_err(|source| AgentError::Machine { what, source })
}

impl Machine {
    pub(super) fn read(config: &AgentConfig) -> Result<Machine, AgentError> {
        let cpus = std::thread::available_parallelism()
            .map_err(|source| AgentError::Machine { what: "cpu count", source })?
            .get() as i64;
        let meminfo = read("/proc/meminfo", "memory size")?;
        let kib: i64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| AgentError::Machine {
                what: "memory size",
                source: std::io::Error::other("/proc/meminfo has no MemTotal"),
            })?;
        std::fs::create_dir_all(&config.root_dir)
            .map_err(|source| AgentError::Machine { what: "root directory", source })?;
        let fs = nix::sys::statvfs::statvfs(&config.root_dir).map_err(|e| AgentError::Machine {
            what: "root filesystem size",
            source: std::io::Error::from(e),
        })?;
        let storage = fs.blocks() as i64 * fs.fragment_size() as i64;
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())
                })
            })
            .unwrap_or_else(|| "Linux".into());
        let trimmed = |path: &str| {
            std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
        };
        let info = NodeSystemInfo {
            machine_id: trimmed("/etc/machine-id"),
            system_uuid: trimmed("/sys/class/dmi/id/product_uuid"),
            boot_id: trimmed("/proc/sys/kernel/random/boot_id"),
            kernel_version: read("/proc/sys/kernel/osrelease", "kernel version")?
                .trim()
                .to_string(),
            os_image,
            container_runtime_version: concat!("berth://", env!("CARGO_PKG_VERSION")).into(),
            kubelet_version: concat!("v1.32.0-berth.", env!("CARGO_PKG_VERSION")).into(),
            kube_proxy_version: String::new(),
            operating_system: "linux".into(),
            architecture: match std::env::consts::ARCH {
                "x86_64" => "amd64".into(),
                "aarch64" => "arm64".into(),
                other => other.into(),
            },
        };
        Ok(Machine {
            milli_cpu: cpus * 1000,
            memory_bytes: kib * 1024,
            storage_bytes: storage,
            info,
        })
    }
}

fn resources(milli_cpu: i64, memory: i64, storage: i64) -> BTreeMap<String, Quantity> {
    [
        ("cpu".to_string(), Quantity::from_milli(milli_cpu.max(0), QuantityFormat::DecimalSI)),
        ("memory".to_string(), Quantity::from_int(memory.max(0), QuantityFormat::BinarySI)),
        (
            "ephemeral-storage".to_string(),
            Quantity::from_int(storage.max(0), QuantityFormat::BinarySI),
        ),
        ("pods".to_string(), Quantity::from_int(110, QuantityFormat::DecimalSI)),
    ]
    .into()
}

/// Writes the Node.
pub(super) struct NodeWriter {
    nodes: Api<Node>,
    config: AgentConfig,
    machine: Machine,
    /// Extended resources advertised by device plugins.
    devices: Option<DeviceManager>,
}

impl NodeWriter {
    pub(super) fn new(
        client: &Client,
        config: &AgentConfig,
        machine: Machine,
        devices: Option<DeviceManager>,
    ) -> NodeWriter {
        NodeWriter { nodes: Api::all(client), config: config.clone(), machine, devices }
    }

    fn labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.config.labels.clone();
        labels.insert("kubernetes.io/hostname".into(), self.config.node_name.clone());
        labels.insert("kubernetes.io/os".into(), "linux".into());
        labels.insert("kubernetes.io/arch".into(), self.machine.info.architecture.clone());
        labels
    }

    /// The status this agent reports now.
    fn status(&self, previous: Option<&NodeStatus>) -> NodeStatus {
        let m = &self.machine;
        let r = &self.config.reserved;
        let now = Time::now();
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            // The transition time moves only when the status does.
            let since = previous
                .and_then(|p| p.conditions.iter().find(|c| c.r#type == kind))
                .filter(|c| c.status == status)
                .and_then(|c| c.last_transition_time)
                .unwrap_or(now);
            NodeCondition {
                r#type: kind.into(),
                status: status.into(),
                last_heartbeat_time: Some(now),
                last_transition_time: Some(since),
                reason: reason.into(),
                message: message.into(),
            }
        };
        let mut capacity = resources(m.milli_cpu, m.memory_bytes, m.storage_bytes);
        let mut allocatable = resources(
            m.milli_cpu - r.milli_cpu,
            m.memory_bytes - r.memory_bytes,
            m.storage_bytes - r.ephemeral_storage_bytes,
        );
        // Device plugins' resources: an unhealthy device counts in
        // capacity only.
        for (name, count) in self.devices.iter().flat_map(|d| d.counts()) {
            let q = |n: i64| Quantity::from_int(n, QuantityFormat::DecimalSI);
            capacity.insert(name.clone(), q(count.capacity));
            allocatable.insert(name, q(count.allocatable));
        }
        NodeStatus {
            capacity,
            allocatable,
            conditions: vec![
                condition(
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "the node has sufficient memory available",
                ),
                condition(
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "the node has no disk pressure",
                ),
                condition(
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "the node has sufficient PIDs available",
                ),
                condition("Ready", "True", "KubeletReady", "berth agent is posting ready status"),
            ],
            addresses: vec![
                NodeAddress { r#type: "InternalIP".into(), address: self.config.node_ip.clone() },
                NodeAddress { r#type: "Hostname".into(), address: self.config.node_name.clone() },
            ],
            node_info: Some(m.info.clone()),
            // Where API servers reach this node's logs and exec.
            daemon_endpoints: (self.config.kubelet_port > 0).then(|| {
                berth_proto::core_v1::NodeDaemonEndpoints {
                    kubelet_endpoint: Some(berth_proto::core_v1::DaemonEndpoint {
                        port: i32::from(self.config.kubelet_port),
                    }),
                }
            }),
            ..Default::default()
        }
    }

    /// Creates the Node, or takes over the one that exists (a restarted
    /// agent); returns its uid.
    pub(super) async fn register(&self) -> Result<String, berth_client::Error> {
        let node = Node {
            metadata: Some(ObjectMeta {
                name: self.config.node_name.clone(),
                labels: self.labels(),
                ..Default::default()
            }),
            spec: Some(NodeSpec::default()),
            status: Some(self.status(None)),
            ..Default::default()
        };
        match self.nodes.create(&node).await {
            Ok(created) => return Ok(created.metadata.unwrap_or_default().uid),
            Err(e) if !e.is_already_exists() => return Err(e),
            Err(_) => {}
        }
        let mut existing = self.nodes.get(&self.config.node_name).await?;
        let meta = existing.metadata.get_or_insert_with(Default::default);
        let mut labels = meta.labels.clone();
        labels.extend(self.labels());
        if labels != meta.labels {
            meta.labels = labels;
            existing = self.nodes.update(&existing).await?;
        }
        existing.status = Some(self.status(existing.status.as_ref()));
        let updated = self.nodes.update_status(&existing).await?;
        Ok(updated.metadata.unwrap_or_default().uid)
    }

    /// Writes the status every report period (conditions carry the
    /// heartbeat time), and at once when a device count changes, until
    /// `stop`.
    pub(super) async fn keep_current(&self, stop: CancellationToken) {
        let mut devices = self.devices.as_ref().map(|d| d.changes());
        loop {
            let device_change = async {
                match devices.as_mut() {
                    Some(changes) => {
                        if changes.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.status_report) => {}
                _ = device_change => {}
            }
            let written = async {
                let mut node = self.nodes.get(&self.config.node_name).await?;
                node.status = Some(self.status(node.status.as_ref()));
                self.nodes.update_status(&node).await
            };
            if let Err(e) = written.await {
                tracing::warn!(node = %self.config.node_name, error = %e, "could not report the node's status");
            }
        }
    }
}
