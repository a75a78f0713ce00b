//! A cordoned node (spec.unschedulable) takes only pods that tolerate the
//! node.kubernetes.io/unschedulable:NoSchedule taint.

use super::taint_toleration::tolerates;
use crate::framework::{CycleState, Filter, NodeInfo, PodInfo, Status};
use berth_proto::core_v1::Taint;

pub struct NodeUnschedulable;

pub const TAINT: &str = "node.kubernetes.io/unschedulable";
pub const REASON: &str = "node(s) were unschedulable";

impl Filter for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let cordoned = node.node.spec.as_ref().is_some_and(|s| s.unschedulable);
        if !cordoned {
            return Status::Success;
        }
        let taint = Taint { key: TAINT.into(), effect: "NoSchedule".into(), ..Default::default() };
        if pod.spec().tolerations.iter().any(|t| tolerates(t, &taint)) {
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
    use berth_proto::core_v1::Toleration;

    #[test]
    fn a_cordoned_node_takes_only_pods_that_tolerate_it() {
        let state = CycleState::default();
        let mut cordoned = node("n", "1", "1Gi");
        cordoned.unschedulable = true;
        let cordoned = cordoned.build();
        assert_eq!(
            NodeUnschedulable.filter(&state, &pod("p").build(), &cordoned),
            Status::unresolvable(REASON)
        );
        let mut tolerant = pod("t");
        tolerant.tolerations.push(Toleration {
            key: TAINT.into(),
            operator: "Exists".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        });
        assert!(NodeUnschedulable.filter(&state, &tolerant.build(), &cordoned).is_success());
        assert!(NodeUnschedulable
            .filter(&state, &pod("p").build(), &node("m", "1", "1Gi").build())
            .is_success());
    }
}
