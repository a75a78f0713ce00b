//! Spreading: pods of one controller (a ReplicaSet's replicas) prefer nodes
//! that run fewer of their siblings, so one node going down takes few.

use crate::framework::{CycleState, NodeInfo, PodInfo, Score};

pub struct ControllerSpread;

impl Score for ControllerSpread {
    fn name(&self) -> &'static str {
        "ControllerSpread"
    }

    /// Siblings already on the node.
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.controller
            .as_ref()
            .and_then(|c| node.pods_by_controller.get(c))
            .map_or(0, |n| i64::from(*n))
    }

    /// Fewest siblings scores 100.
    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if max == 0 { 100 } else { (max - *s) * 100 / max };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn siblings_push_a_pod_elsewhere() {
        let state = CycleState::default();
        let p = pod("p").owner("rs-1").build();
        let mut crowded = node("crowded", "4", "4Gi").build();
        crowded.add_pod(&pod("a").owner("rs-1").build());
        crowded.add_pod(&pod("b").owner("rs-1").build());
        let mut other = node("other", "4", "4Gi").build();
        other.add_pod(&pod("c").owner("rs-2").build());
        let mut scores = vec![
            ControllerSpread.score(&state, &p, &crowded),
            ControllerSpread.score(&state, &p, &other),
        ];
        ControllerSpread.normalize(&state, &p, &mut scores);
        assert_eq!(scores, vec![0, 100]);
    }
}
