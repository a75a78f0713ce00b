//! A pod that names a node (spec.nodeName) fits only there.

use crate::framework::{CycleState, Filter, NodeInfo, PodInfo, Status};

pub struct NodeName;

pub const REASON: &str = "node(s) didn't match the requested node name";

impl Filter for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let wanted = &pod.spec().node_name;
        if wanted.is_empty() || wanted == node.name() {
            Status::Success
        } else {
            Status::unresolvable(REASON)
        }
    }
}
