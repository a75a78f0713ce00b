//! What the scheduler believes is on each node: bound pods as the informers
//! report them, plus pods it assumed onto a node and is still binding. The
//! next pod is placed against this belief at once, without waiting for the
//! previous bind to come back through a watch.

use crate::framework::{NodeInfo, PodInfo};
use crate::queue::ClusterEvent;
use berth_proto::core_v1::Node;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Default)]
pub struct SchedulerCache {
    nodes: HashMap<String, NodeInfo>,
    /// Node names in a stable order, for the rotating search.
    order: Vec<String>,
    pods: HashMap<String, Placed>,
    /// Pod keys per node name, also for nodes not (yet) known.
    by_node: HashMap<String, HashSet<String>>,
}

struct Placed {
    node: String,
    info: Arc<PodInfo>,
    /// Placed by this scheduler and not yet seen bound.
    assumed: bool,
}

impl SchedulerCache {
    /// Adds or updates a node; says whether that may help pending pods.
    pub fn upsert_node(&mut self, node: Arc<Node>) -> Option<ClusterEvent> {
        let name = node.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let mut fresh = NodeInfo::new(node);
        match self.nodes.get(&name) {
            Some(old) => {
                let relevant = old.allocatable != fresh.allocatable
                    || old.node.spec != fresh.node.spec
                    || old.labels() != fresh.labels();
                fresh.requested = old.requested.clone();
                fresh.non_zero_requested = old.non_zero_requested;
                fresh.pods_by_controller = old.pods_by_controller.clone();
                self.nodes.insert(name, fresh);
                relevant.then_some(ClusterEvent::NodeChanged)
            }
            None => {
                for key in self.by_node.get(&name).into_iter().flatten() {
                    if let Some(placed) = self.pods.get(key) {
                        fresh.add_pod(&placed.info);
                    }
                }
                self.order.push(name.clone());
                self.nodes.insert(name, fresh);
                Some(ClusterEvent::NodeAdded)
            }
        }
    }

    pub fn remove_node(&mut self, name: &str) {
        if self.nodes.remove(name).is_some() {
            self.order.retain(|n| n != name);
        }
    }

    /// Counts the pod on `node` before it is bound.
    pub fn assume(&mut self, info: Arc<PodInfo>, node: &str) {
        self.place(info, node, true);
    }

    /// Undoes an assumption whose bind failed.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.unplace(key);
        }
    }

    /// A pod the API reports bound to a node (confirms an assumption).
    pub fn upsert_bound(&mut self, info: Arc<PodInfo>, node: &str) {
        self.place(info, node, false);
    }

    /// A bound pod went away (deleted, or finished): its resources are free.
    pub fn remove_bound(&mut self, key: &str) -> bool {
        self.unplace(key)
    }

    fn place(&mut self, info: Arc<PodInfo>, node: &str, assumed: bool) {
        self.unplace(&info.key);
        if let Some(n) = self.nodes.get_mut(node) {
            n.add_pod(&info);
        }
        self.by_node.entry(node.to_string()).or_default().insert(info.key.clone());
        self.pods.insert(info.key.clone(), Placed { node: node.to_string(), info, assumed });
    }

    fn unplace(&mut self, key: &str) -> bool {
        let Some(placed) = self.pods.remove(key) else { return false };
        if let Some(n) = self.nodes.get_mut(&placed.node) {
            n.remove_pod(&placed.info);
        }
        if let Some(keys) = self.by_node.get_mut(&placed.node) {
            keys.remove(key);
            if keys.is_empty() {
                self.by_node.remove(&placed.node);
            }
        }
        true
    }

    /// Whether the pod is placed (bound or assumed).
    pub fn is_placed(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// Every node, in a stable order.
    pub fn nodes(&self) -> Vec<&NodeInfo> {
        self.order.iter().filter_map(|n| self.nodes.get(n)).collect()
    }

    #[cfg(test)]
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.nodes.get(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::{node, pod};

    #[test]
    fn assumed_pods_count_until_forgotten_and_bound_ones_until_removed() {
        let mut cache = SchedulerCache::default();
        assert_eq!(
            cache.upsert_node(Arc::new(node("n", "4", "8Gi").node())),
            Some(ClusterEvent::NodeAdded)
        );
        let p = Arc::new(pod("p").cpu("1").build());
        cache.assume(p.clone(), "n");
        assert_eq!(cache.node("n").unwrap().requested.milli_cpu, 1000);
        cache.forget(&p.key);
        assert_eq!(cache.node("n").unwrap().requested.milli_cpu, 0);

        cache.assume(p.clone(), "n");
        cache.upsert_bound(p.clone(), "n");
        // Confirmed: forgetting no longer applies, and nothing is counted twice.
        cache.forget(&p.key);
        assert_eq!(cache.node("n").unwrap().requested.milli_cpu, 1000);
        assert!(cache.remove_bound(&p.key));
        assert_eq!(cache.node("n").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn pods_bound_before_their_node_appears_are_counted_when_it_does() {
        let mut cache = SchedulerCache::default();
        cache.upsert_bound(Arc::new(pod("early").cpu("2").build()), "late");
        cache.upsert_node(Arc::new(node("late", "4", "8Gi").node()));
        assert_eq!(cache.node("late").unwrap().requested.milli_cpu, 2000);
    }

    #[test]
    fn only_relevant_node_changes_are_events() {
        let mut cache = SchedulerCache::default();
        let mut n = node("n", "4", "8Gi").node();
        cache.upsert_node(Arc::new(n.clone()));
        // A heartbeat-like status change is not.
        n.status.as_mut().unwrap().phase = "Running".into();
        assert_eq!(cache.upsert_node(Arc::new(n.clone())), None);
        n.spec.as_mut().unwrap().unschedulable = true;
        assert_eq!(cache.upsert_node(Arc::new(n)), Some(ClusterEvent::NodeChanged));
    }
}
