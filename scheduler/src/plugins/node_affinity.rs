//! spec.nodeSelector and node affinity: the pod fits only nodes whose
//! labels match every nodeSelector entry and at least one required term;
//! preferred terms add their weight to the node's score.

use crate::framework::{CycleState, Filter, NodeInfo, PodInfo, Score, Status};
use berth_proto::core_v1::{NodeSelectorRequirement, NodeSelectorTerm};
use std::collections::BTreeMap;

pub struct NodeAffinity;

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// One requirement against a node's labels (or, for matchFields, its name).
fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let number = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !r.values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(have), Some(bound)) =
                (value.and_then(number), r.values.first().and_then(|v| number(v)))
            else {
                return false;
            };
            if r.operator == "Gt" {
                have > bound
            } else {
                have < bound
            }
        }
        _ => false,
    }
}

/// A term holds when all its requirements do; an empty term matches nothing,
/// as in Kubernetes.
pub fn term_matches(
    term: &NodeSelectorTerm,
    labels: &BTreeMap<String, String>,
    name: &str,
) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    term.match_expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && term.match_fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(name);
            requirement_matches(r, value)
        })
}

impl Filter for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let spec = pod.spec();
        let labels = node.labels();
        let selector_ok = spec.node_selector.iter().all(|(k, v)| labels.get(k) == Some(v));
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
        let affinity_ok = required.is_none_or(|selector| {
            selector.node_selector_terms.iter().any(|t| term_matches(t, labels, node.name()))
        });
        if selector_ok && affinity_ok {
            Status::Success
        } else {
            Status::unresolvable(REASON)
        }
    }
}

impl Score for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    /// The sum of the weights of the preferred terms the node matches.
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(preferred) = pod
            .spec()
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .map(|n| &n.preferred_during_scheduling_ignored_during_execution)
        else {
            return 0;
        };
        preferred
            .iter()
            .filter(|p| {
                p.preference.as_ref().is_some_and(|t| term_matches(t, node.labels(), node.name()))
            })
            .map(|p| i64::from(p.weight))
            .sum()
    }

    fn normalize(&self, _: &CycleState, _: &PodInfo, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        if max > 0 {
            for s in scores.iter_mut() {
                *s = *s * 100 / max;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};
    use berth_proto::core_v1::{
        Affinity, NodeAffinity as Spec, NodeSelector, PreferredSchedulingTerm,
    };

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn every_operator_matches_as_kubernetes_does() {
        let l = labels(&[("zone", "a"), ("cores", "16")]);
        let term = |r| NodeSelectorTerm { match_expressions: vec![r], ..Default::default() };
        assert!(term_matches(&term(req("zone", "In", &["a", "b"])), &l, "n"));
        assert!(!term_matches(&term(req("zone", "In", &["b"])), &l, "n"));
        assert!(term_matches(&term(req("zone", "NotIn", &["b"])), &l, "n"));
        assert!(term_matches(&term(req("gpu", "NotIn", &["x"])), &l, "n"));
        assert!(term_matches(&term(req("zone", "Exists", &[])), &l, "n"));
        assert!(term_matches(&term(req("gpu", "DoesNotExist", &[])), &l, "n"));
        assert!(term_matches(&term(req("cores", "Gt", &["8"])), &l, "n"));
        assert!(!term_matches(&term(req("cores", "Lt", &["8"])), &l, "n"));
        assert!(!term_matches(&term(req("zone", "Gt", &["1"])), &l, "n"));
        let by_name = NodeSelectorTerm {
            match_fields: vec![req("metadata.name", "In", &["n"])],
            ..Default::default()
        };
        assert!(term_matches(&by_name, &l, "n"));
        assert!(!term_matches(&by_name, &l, "m"));
        assert!(!term_matches(&NodeSelectorTerm::default(), &l, "n"));
    }

    #[test]
    fn selector_and_required_terms_filter_and_preferred_terms_score() {
        let mut a = node("a", "4", "8Gi");
        a.labels.insert("zone".into(), "a".into());
        a.labels.insert("disk".into(), "ssd".into());
        let a = a.build();
        let mut b = node("b", "4", "8Gi");
        b.labels.insert("zone".into(), "b".into());
        let b = b.build();
        let state = CycleState::default();

        let mut p = pod("p");
        p.node_selector.insert("zone".into(), "a".into());
        let p = p.build();
        assert!(NodeAffinity.filter(&state, &p, &a).is_success());
        assert_eq!(NodeAffinity.filter(&state, &p, &b), Status::unresolvable(REASON));

        let mut q = pod("q");
        q.affinity = Some(Affinity {
            node_affinity: Some(Spec {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![
                        NodeSelectorTerm {
                            match_expressions: vec![req("zone", "In", &["x"])],
                            ..Default::default()
                        },
                        NodeSelectorTerm {
                            match_expressions: vec![req("zone", "In", &["b"])],
                            ..Default::default()
                        },
                    ],
                }),
                preferred_during_scheduling_ignored_during_execution: vec![
                    PreferredSchedulingTerm {
                        weight: 10,
                        preference: Some(NodeSelectorTerm {
                            match_expressions: vec![req("disk", "In", &["ssd"])],
                            ..Default::default()
                        }),
                    },
                ],
            }),
        });
        let q = q.build();
        assert_eq!(NodeAffinity.filter(&state, &q, &a), Status::unresolvable(REASON));
        assert!(NodeAffinity.filter(&state, &q, &b).is_success());
        let mut scores =
            vec![NodeAffinity.score(&state, &q, &a), NodeAffinity.score(&state, &q, &b)];
        NodeAffinity.normalize(&state, &q, &mut scores);
        assert_eq!(scores, vec![100, 0]);
    }
}
