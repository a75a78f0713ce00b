//! The informers one leadership term shares among its controllers: each
//! resource is listed and watched once, whichever controllers follow it.

use berth_client::{Api, Cache, Client, Informer, InformerParams};
use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Namespace, Node, Pod};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Where node agents renew their heartbeat Leases, one per node.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Informers not yet running: controllers register their handlers on them
/// first, so no change is missed between a handler's registration and the
/// first list.
pub struct Informers {
    pub pods: Informer<Pod>,
    pub replica_sets: Informer<ReplicaSet>,
    pub deployments: Informer<Deployment>,
    pub nodes: Informer<Node>,
    pub node_leases: Informer<Lease>,
    pub namespaces: Informer<Namespace>,
}

/// Read handles on every shared cache.
#[derive(Clone)]
pub struct Caches {
    pub pods: Cache<Pod>,
    pub replica_sets: Cache<ReplicaSet>,
    pub deployments: Cache<Deployment>,
    pub nodes: Cache<Node>,
    pub node_leases: Cache<Lease>,
    pub namespaces: Cache<Namespace>,
}

impl Informers {
    pub fn new(client: &Client, resync: Duration) -> Informers {
        let params = || InformerParams { resync: Some(resync), ..Default::default() };
        Informers {
            pods: Informer::new(Api::all(client), params()),
            replica_sets: Informer::new(Api::all(client), params()),
            deployments: Informer::new(Api::all(client), params()),
            nodes: Informer::new(Api::all(client), params()),
            node_leases: Informer::new(Api::namespaced(client, NODE_LEASE_NAMESPACE), params()),
            namespaces: Informer::new(Api::all(client), params()),
        }
    }

    pub fn caches(&self) -> Caches {
        Caches {
            pods: self.pods.cache(),
            replica_sets: self.replica_sets.cache(),
            deployments: self.deployments.cache(),
            nodes: self.nodes.cache(),
            node_leases: self.node_leases.cache(),
            namespaces: self.namespaces.cache(),
        }
    }

    /// Starts every informer on `tasks`; they stop with `stop`.
    pub fn spawn(self, tasks: &mut JoinSet<()>, stop: &CancellationToken) {
        tasks.spawn(self.pods.run(stop.clone()));
        tasks.spawn(self.replica_sets.run(stop.clone()));
        tasks.spawn(self.deployments.run(stop.clone()));
        tasks.spawn(self.nodes.run(stop.clone()));
        tasks.spawn(self.node_leases.run(stop.clone()));
        tasks.spawn(self.namespaces.run(stop.clone()));
    }
}

impl Caches {
    /// Waits until every cache holds its first list.
    pub async fn wait_synced(&self) {
        self.pods.wait_synced().await;
        self.replica_sets.wait_synced().await;
        self.deployments.wait_synced().await;
        self.nodes.wait_synced().await;
        self.node_leases.wait_synced().await;
        self.namespaces.wait_synced().await;
    }
}
