//! Least allocated: prefer the node with the most cpu and memory left
//! after the pod is placed (spreads load), cpu and memory weighted equally.

use crate::framework::{CycleState, NodeInfo, PodInfo, Score};

pub struct LeastAllocated;

/// The share of `capacity` still free after `used`, 0..=100.
fn free_share(used: i64, capacity: i64) -> i64 {
    if capacity <= 0 || used > capacity {
        return 0;
    }
    (capacity - used) * 100 / capacity
}

impl Score for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesLeastAllocated"
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let cpu =
            free_share(node.non_zero_requested.0 + pod.non_zero.0, node.allocatable.milli_cpu);
        let memory =
            free_share(node.non_zero_requested.1 + pod.non_zero.1, node.allocatable.memory);
        (cpu + memory) / 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn emptier_nodes_score_higher() {
        let state = CycleState::default();
        let p = pod("p").cpu("1").memory("1Gi").build();
        let mut busy = node("busy", "4", "4Gi").build();
        busy.add_pod(&pod("x").cpu("2").memory("2Gi").build());
        let idle = node("idle", "4", "4Gi").build();
        // idle: 3/4 free of both = 75; busy: 1/4 free = 25.
        assert_eq!(LeastAllocated.score(&state, &p, &idle), 75);
        assert_eq!(LeastAllocated.score(&state, &p, &busy), 25);
    }
}
