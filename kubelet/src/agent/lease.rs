//! The node's heartbeat: its Lease in kube-node-lease, renewed every few
//! seconds. The node lifecycle controller reads silence on it as the node
//! going away; a renewal is a small write, unlike a whole NodeStatus.

use super::AgentConfig;
use berth_client::{Api, Client};
use berth_proto::coordination_v1::{Lease, LeaseSpec};
use berth_proto::meta_v1::{ObjectMeta, OwnerReference};
use berth_proto::MicroTime;
use tokio_util::sync::CancellationToken;

pub(super) struct Heartbeat {
    leases: Api<Lease>,
    config: AgentConfig,
    node_uid: String,
}

/// Where node Leases live.
const NAMESPACE: &str = "kube-node-lease";

impl Heartbeat {
    pub(super) fn new(client: &Client, config: &AgentConfig, node_uid: &str) -> Heartbeat {
        Heartbeat {
            leases: Api::namespaced(client, NAMESPACE),
            config: config.clone(),
            node_uid: node_uid.into(),
        }
    }

    pub(super) async fn run(&self, stop: CancellationToken) {
        loop {
            match self.renew().await {
                Ok(()) => metrics::counter!("berth_kubelet_lease_renewals_total", "result" => "ok")
                    .increment(1),
                Err(e) => {
                    metrics::counter!("berth_kubelet_lease_renewals_total", "result" => "error")
                        .increment(1);
                    tracing::warn!(node = %self.config.node_name, error = %e, "could not renew the node lease");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.lease_renew) => {}
            }
        }
    }

    async fn renew(&self) -> Result<(), berth_client::Error> {
        let name = &self.config.node_name;
        let duration = self.config.lease_duration.as_secs().max(1) as i32;
        match self.leases.get_opt(name).await? {
            Some(mut lease) => {
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.holder_identity = Some(name.clone());
                spec.lease_duration_seconds = Some(duration);
                spec.renew_time = Some(MicroTime::now());
                self.leases.update(&lease).await.map(|_| ())
            }
            None => {
                // Owned by the Node, so it goes when the Node does.
                let lease = Lease {
                    metadata: Some(ObjectMeta {
                        name: name.clone(),
                        namespace: NAMESPACE.into(),
                        owner_references: vec![OwnerReference {
                            api_version: "v1".into(),
                            kind: "Node".into(),
                            name: name.clone(),
                            uid: self.node_uid.clone(),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    spec: Some(LeaseSpec {
                        holder_identity: Some(name.clone()),
                        lease_duration_seconds: Some(duration),
                        renew_time: Some(MicroTime::now()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                self.leases.create(&lease).await.map(|_| ())
            }
        }
    }
}
