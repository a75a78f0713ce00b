//! Objects the tests and benchmarks build again and again.

use berth_proto::core_v1::{
    Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements,
};
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::Quantity;
use std::collections::BTreeMap;

/// A resource map from literal quantities ("cpu", "250m").
pub fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Quantity::parse(v).expect("fixtures use valid quantities")))
        .collect()
}

/// A one-container busybox pod asking for `requests`.
pub fn pod(namespace: &str, name: &str, requests: &[(&str, &str)]) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox:1.36".into(),
                resources: (!requests.is_empty()).then(|| ResourceRequirements {
                    requests: quantities(requests),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A node with this much allocatable (110 pod slots unless given).
pub fn node(name: &str, allocatable: &[(&str, &str)]) -> Node {
    let mut all = vec![("pods", "110")];
    all.extend_from_slice(allocatable);
    let allocatable = quantities(&all);
    Node {
        metadata: Some(ObjectMeta { name: name.into(), ..Default::default() }),
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: allocatable.clone(),
            allocatable,
            ..Default::default()
        }),
        ..Default::default()
    }
}
