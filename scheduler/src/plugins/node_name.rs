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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn a_named_node_is_the_only_fit() {
        let state = CycleState::default();
        let mut wanting = pod("p").pod();
        wanting.spec.as_mut().unwrap().node_name = "a".into();
        let wanting = PodInfo::new(std::sync::Arc::new(wanting));
        assert!(NodeName.filter(&state, &wanting, &node("a", "1", "1Gi").build()).is_success());
        assert_eq!(
            NodeName.filter(&state, &wanting, &node("b", "1", "1Gi").build()),
            Status::unresolvable(REASON)
        );
        assert!(NodeName
            .filter(&state, &pod("any").build(), &node("b", "1", "1Gi").build())
            .is_success());
    }
}
