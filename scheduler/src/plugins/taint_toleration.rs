//! Taints and tolerations: a node's NoSchedule and NoExecute taints keep
//! out every pod that does not tolerate them; PreferNoSchedule taints only
//! lower the node's score.

use crate::framework::{CycleState, Filter, NodeInfo, PodInfo, Score, Status};
use berth_proto::core_v1::{Taint, Toleration};

pub struct TaintToleration;

/// Kubernetes' matching: an empty effect matches every effect, an empty
/// key with Exists matches every taint, Equal (or no operator) needs the
/// same value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if !toleration.effect.is_empty() && toleration.effect != taint.effect {
        return false;
    }
    if !toleration.key.is_empty() && toleration.key != taint.key {
        return false;
    }
    match toleration.operator.as_str() {
        "Exists" => true,
        "" | "Equal" => toleration.value == taint.value,
        _ => false,
    }
}

fn taints(node: &NodeInfo) -> &[Taint] {
    node.node.spec.as_ref().map_or(&[], |s| s.taints.as_slice())
}

impl Filter for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let tolerations = &pod.spec().tolerations;
        let untolerated = taints(node).iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Status::Success,
            Some(t) => Status::unresolvable(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key, t.value
            )),
        }
    }
}

impl Score for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// The number of PreferNoSchedule taints the pod does not tolerate.
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let tolerations = &pod.spec().tolerations;
        taints(node)
            .iter()
            .filter(|taint| {
                taint.effect == "PreferNoSchedule"
                    && !tolerations.iter().any(|t| tolerates(t, taint))
            })
            .count() as i64
    }

    /// Fewer untolerated taints is better: 100 for none.
    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if max == 0 { 100 } else { 100 - *s * 100 / max };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint { key: key.into(), value: value.into(), effect: effect.into(), ..Default::default() }
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: key.into(),
            operator: op.into(),
            value: value.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn matching_follows_kubernetes() {
        let gpu = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(&toleration("dedicated", "Equal", "gpu", "NoSchedule"), &gpu));
        assert!(tolerates(&toleration("dedicated", "", "gpu", ""), &gpu));
        assert!(tolerates(&toleration("dedicated", "Exists", "", ""), &gpu));
        assert!(tolerates(&toleration("", "Exists", "", ""), &gpu));
        assert!(!tolerates(&toleration("dedicated", "Equal", "cpu", ""), &gpu));
        assert!(!tolerates(&toleration("dedicated", "Exists", "", "NoExecute"), &gpu));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &gpu));
    }

    #[test]
    fn hard_taints_filter_and_soft_ones_score() {
        let mut tainted = node("n1", "4", "8Gi");
        tainted.taints.push(taint("dedicated", "gpu", "NoSchedule"));
        let tainted = tainted.build();
        let plain = pod("p").build();
        let state = CycleState::default();
        assert_eq!(
            TaintToleration.filter(&state, &plain, &tainted),
            Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}")
        );
        let mut tolerant = pod("t");
        tolerant.tolerations.push(toleration("dedicated", "Exists", "", "NoSchedule"));
        assert!(TaintToleration.filter(&state, &tolerant.build(), &tainted).is_success());

        let mut soft = node("n2", "4", "8Gi");
        soft.taints.push(taint("spot", "", "PreferNoSchedule"));
        let soft = soft.build();
        let clean = node("n3", "4", "8Gi").build();
        assert!(TaintToleration.filter(&state, &plain, &soft).is_success());
        let mut scores = vec![
            TaintToleration.score(&state, &plain, &soft),
            TaintToleration.score(&state, &plain, &clean),
        ];
        TaintToleration.normalize(&state, &plain, &mut scores);
        assert_eq!(scores, vec![0, 100]);
    }
}
