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
