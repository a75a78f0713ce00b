//! Hand-built nodes and pods for the plugins' tests.

use crate::framework::{NodeInfo, PodInfo};
use berth_proto::core_v1::{
    Affinity, Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint,
    Toleration,
};
use berth_proto::meta_v1::{ObjectMeta, OwnerReference};
use berth_proto::Quantity;
use std::collections::BTreeMap;
use std::sync::Arc;

pub struct NodeBuilder {
    name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    allocatable: BTreeMap<String, Quantity>,
}

pub fn node(name: &str, cpu: &str, memory: &str) -> NodeBuilder {
    let q = |s: &str| Quantity::parse(s).expect("test quantities are valid");
    NodeBuilder {
        name: name.into(),
        labels: BTreeMap::new(),
        taints: Vec::new(),
        unschedulable: false,
        allocatable: [
            ("cpu".into(), q(cpu)),
            ("memory".into(), q(memory)),
            ("pods".into(), q("110")),
        ]
        .into(),
    }
}

impl NodeBuilder {
    pub fn scalar(mut self, name: &str, amount: &str) -> NodeBuilder {
        self.allocatable.insert(name.into(), Quantity::parse(amount).expect("valid"));
        self
    }

    pub fn pods(self, amount: &str) -> NodeBuilder {
        self.scalar("pods", amount)
    }

    pub fn node(self) -> Node {
        Node {
            metadata: Some(ObjectMeta {
                name: self.name,
                labels: self.labels,
                ..Default::default()
            }),
            spec: Some(NodeSpec {
                taints: self.taints,
                unschedulable: self.unschedulable,
                ..Default::default()
            }),
            status: Some(NodeStatus { allocatable: self.allocatable, ..Default::default() }),
            ..Default::default()
        }
    }

    pub fn build(self) -> NodeInfo {
        NodeInfo::new(Arc::new(self.node()))
    }
}

pub struct PodBuilder {
    name: String,
    requests: BTreeMap<String, Quantity>,
    pub tolerations: Vec<Toleration>,
    pub node_selector: BTreeMap<String, String>,
    pub affinity: Option<Affinity>,
    owner: Option<String>,
}

pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        name: name.into(),
        requests: BTreeMap::new(),
        tolerations: Vec::new(),
        node_selector: BTreeMap::new(),
        affinity: None,
        owner: None,
    }
}

impl PodBuilder {
    pub fn cpu(self, amount: &str) -> PodBuilder {
        self.scalar("cpu", amount)
    }

    pub fn memory(self, amount: &str) -> PodBuilder {
        self.scalar("memory", amount)
    }

    pub fn scalar(mut self, name: &str, amount: &str) -> PodBuilder {
        self.requests.insert(name.into(), Quantity::parse(amount).expect("valid"));
        self
    }

    pub fn owner(mut self, uid: &str) -> PodBuilder {
        self.owner = Some(uid.into());
        self
    }

    pub fn pod(self) -> Pod {
        let owner_references = self
            .owner
            .map(|uid| OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: uid.clone(),
                uid,
                controller: Some(true),
                ..Default::default()
            })
            .into_iter()
            .collect();
        Pod {
            metadata: Some(ObjectMeta {
                name: self.name,
                namespace: "default".into(),
                owner_references,
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: "busybox".into(),
                    resources: Some(ResourceRequirements {
                        requests: self.requests,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                tolerations: self.tolerations,
                node_selector: self.node_selector,
                affinity: self.affinity,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn build(self) -> PodInfo {
        PodInfo::new(Arc::new(self.pod()))
    }
}
