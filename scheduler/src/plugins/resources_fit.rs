//! Resources fit: what the pod requests must fit in what the node has left
//! of its allocatable cpu, memory, ephemeral storage, pod slots and
//! extended resources (nvidia.com/gpu ...). Never overcommitted.

use crate::framework::{CycleState, Filter, NodeInfo, PodInfo, Status};

pub struct ResourcesFit;

impl Filter for ResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let (want, have, used) = (&pod.requests, &node.allocatable, &node.requested);
        let mut reasons = Vec::new();
        if used.pods + want.pods > have.pods {
            reasons.push("Too many pods".to_string());
        }
        let short = |want: i64, have: i64, used: i64| want > 0 && used.saturating_add(want) > have;
        if short(want.milli_cpu, have.milli_cpu, used.milli_cpu) {
            reasons.push("Insufficient cpu".into());
        }
        if short(want.memory, have.memory, used.memory) {
            reasons.push("Insufficient memory".into());
        }
        if short(want.ephemeral_storage, have.ephemeral_storage, used.ephemeral_storage) {
            reasons.push("Insufficient ephemeral-storage".into());
        }
        for (name, amount) in &want.scalar {
            let have = have.scalar.get(name).copied().unwrap_or(0);
            let used = used.scalar.get(name).copied().unwrap_or(0);
            if short(*amount, have, used) {
                reasons.push(format!("Insufficient {name}"));
            }
        }
        if reasons.is_empty() {
            Status::Success
        } else {
            Status::Unschedulable(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn requests_must_fit_what_is_left() {
        let state = CycleState::default();
        let mut n = node("n", "2", "4Gi").build();
        let big = pod("big").cpu("1500m").memory("1Gi").build();
        assert!(ResourcesFit.filter(&state, &big, &n).is_success());
        n.add_pod(&big);
        let more = pod("more").cpu("1").memory("4Gi").build();
        assert_eq!(
            ResourcesFit.filter(&state, &more, &n),
            Status::Unschedulable(vec!["Insufficient cpu".into(), "Insufficient memory".into()])
        );
        // Nothing requested: only a pod slot is needed.
        assert!(ResourcesFit.filter(&state, &pod("none").build(), &n).is_success());
    }

    #[test]
    fn extended_resources_are_whole_and_never_overcommitted() {
        let state = CycleState::default();
        let mut n = node("gpu", "8", "32Gi").scalar("nvidia.com/gpu", "8").build();
        let plain = node("plain", "8", "32Gi").build();
        let two = pod("two").scalar("nvidia.com/gpu", "2").build();
        assert_eq!(
            ResourcesFit.filter(&state, &two, &plain),
            Status::Unschedulable(vec!["Insufficient nvidia.com/gpu".into()])
        );
        for _ in 0..4 {
            assert!(ResourcesFit.filter(&state, &two, &n).is_success());
            n.add_pod(&two);
        }
        assert!(!ResourcesFit
            .filter(&state, &pod("one").scalar("nvidia.com/gpu", "1").build(), &n)
            .is_success());
    }

    #[test]
    fn pod_slots_run_out() {
        let state = CycleState::default();
        let mut n = node("n", "64", "64Gi").pods("2").build();
        let p = pod("p").build();
        n.add_pod(&p);
        n.add_pod(&p);
        assert_eq!(ResourcesFit.filter(&state, &p, &n), Status::unschedulable("Too many pods"));
    }
}
