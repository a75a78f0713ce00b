//! Why a pod fits nowhere, in Kubernetes' words: "0/5 nodes are available:
//! 3 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}."

use super::Status;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug)]
pub struct FitError {
    pub nodes: usize,
    /// How many nodes gave each reason.
    pub reasons: BTreeMap<String, usize>,
    /// The plugins that rejected the pod somewhere.
    pub rejected_by: Vec<&'static str>,
    /// A plugin failed rather than judged: retry after a back-off.
    pub error: Option<String>,
}

impl FitError {
    pub(crate) fn no_nodes() -> FitError {
        FitError { nodes: 0, reasons: BTreeMap::new(), rejected_by: Vec::new(), error: None }
    }

    /// A pre-filter's verdict, which holds for every node.
    pub(crate) fn all_nodes(nodes: usize, plugin: &'static str, status: Status) -> FitError {
        let mut e = FitError::no_nodes();
        e.nodes = nodes;
        e.rejected_by.push(plugin);
        match status {
            Status::Unschedulable(reasons) | Status::UnschedulableAndUnresolvable(reasons) => {
                for r in reasons {
                    e.reasons.insert(r, nodes);
                }
            }
            Status::Error(message) => e.error = Some(message),
            Status::Success => {}
        }
        e
    }

    pub(crate) fn from_statuses(
        nodes: usize,
        statuses: HashMap<String, Status>,
        rejected_by: Vec<&'static str>,
    ) -> FitError {
        let mut e = FitError::no_nodes();
        e.nodes = nodes;
        e.rejected_by = rejected_by;
        for status in statuses.into_values() {
            match status {
                Status::Unschedulable(reasons) | Status::UnschedulableAndUnresolvable(reasons) => {
                    for r in reasons {
                        *e.reasons.entry(r).or_default() += 1;
                    }
                }
                Status::Error(message) => e.error = Some(message),
                Status::Success => {}
            }
        }
        e
    }

    /// The FailedScheduling message: reasons by how many nodes gave them,
    /// most first.
    pub fn message(&self) -> String {
        if let Some(error) = &self.error {
            return format!("scheduling failed: {error}");
        }
        if self.nodes == 0 {
            return "0/0 nodes are available: no nodes available to schedule pods.".into();
        }
        let mut reasons: Vec<(&String, &usize)> = self.reasons.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        format!("0/{} nodes are available: {}.", self.nodes, parts.join(", "))
    }
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_counts_nodes_per_reason_most_first() {
        let mut statuses = HashMap::new();
        for i in 0..3 {
            statuses.insert(format!("cpu-{i}"), Status::unschedulable("Insufficient cpu"));
        }
        for i in 0..2 {
            statuses.insert(
                format!("gpu-{i}"),
                Status::unresolvable("node(s) had untolerated taint {dedicated: gpu}"),
            );
        }
        let e = FitError::from_statuses(5, statuses, vec![]);
        assert_eq!(
            e.message(),
            "0/5 nodes are available: 3 Insufficient cpu, 2 node(s) had untolerated taint {dedicated: gpu}."
        );
    }
}
