//! Balanced allocation: prefer the node where, with the pod placed, the
//! shares of cpu and of memory in use are closest to each other, so that
//! neither runs out while the other sits idle.

use crate::framework::{CycleState, NodeInfo, PodInfo, Score};

pub struct BalancedAllocation;

impl Score for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let share = |used: i64, capacity: i64| {
            if capacity <= 0 {
                1.0
            } else {
                (used as f64 / capacity as f64).min(1.0)
            }
        };
        let cpu = share(node.non_zero_requested.0 + pod.non_zero.0, node.allocatable.milli_cpu);
        let memory = share(node.non_zero_requested.1 + pod.non_zero.1, node.allocatable.memory);
        // The standard deviation of two values is half their distance.
        let deviation = (cpu - memory).abs() / 2.0;
        ((1.0 - deviation) * 100.0) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn even_use_of_cpu_and_memory_scores_higher() {
        let state = CycleState::default();
        let p = pod("p").cpu("1").memory("1Gi").build();
        let even = node("even", "4", "4Gi").build();
        let mut lopsided = node("lopsided", "4", "4Gi").build();
        lopsided.add_pod(&pod("x").cpu("2").memory("64Mi").build());
        assert_eq!(BalancedAllocation.score(&state, &p, &even), 100);
        assert!(BalancedAllocation.score(&state, &p, &lopsided) < 100);
    }
}
