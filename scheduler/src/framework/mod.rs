//! The scheduling framework: one small trait per extension point, run in
//! this order for each pod (a "scheduling cycle"):
//!
//! ```text
//!   QueueSort            which pending pod goes first
//!   PreFilter            once per pod: compute what filters need, or reject the pod
//!   Filter               per node: can the pod run there?
//!   PostFilter           only when no node fits: what could be done about it
//!   Score (+normalize)   per feasible node: 0..=100, weighted and summed
//!   Reserve/Unreserve    the pod is assumed on the chosen node
//!   Bind                 asynchronously, the placement is written
//! ```
//!
//! Plugins get a [`CycleState`] that lives for one cycle, so a pre-filter
//! can hand its work to the filter of the same plugin.

mod diagnosis;
mod state;

pub use diagnosis::FitError;
pub use state::CycleState;

use crate::resources::Resources;
use berth_proto::core_v1::{Node, Pod};
use futures::future::BoxFuture;
use std::collections::HashMap;
use std::sync::Arc;

/// A pending pod as the scheduler sees it, computed once per change.
#[derive(Debug)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    /// `namespace/name`.
    pub key: String,
    pub requests: Resources,
    /// Cpu and memory for scoring (defaults for containers without requests).
    pub non_zero: (i64, i64),
    /// The uid of the controller that owns the pod (for spreading).
    pub controller: Option<String>,
    pub priority: i32,
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> PodInfo {
        let meta = pod.metadata.clone().unwrap_or_default();
        let controller = meta
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        PodInfo {
            key: format!("{}/{}", meta.namespace, meta.name),
            requests: Resources::of_pod(&pod),
            non_zero: Resources::non_zero_of_pod(&pod),
            controller,
            priority: pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0),
            pod,
        }
    }

    pub fn name(&self) -> &str {
        self.pod.metadata.as_ref().map_or("", |m| m.name.as_str())
    }

    pub fn namespace(&self) -> &str {
        self.pod.metadata.as_ref().map_or("", |m| m.namespace.as_str())
    }

    pub fn spec(&self) -> &berth_proto::core_v1::PodSpec {
        static EMPTY: std::sync::OnceLock<berth_proto::core_v1::PodSpec> =
            std::sync::OnceLock::new();
        self.pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }
}

/// A node with what is already placed on it (bound and assumed pods).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub allocatable: Resources,
    pub requested: Resources,
    /// Requested cpu and memory with the scoring defaults.
    pub non_zero_requested: (i64, i64),
    /// Pods on the node per controller uid.
    pub pods_by_controller: HashMap<String, u32>,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> NodeInfo {
        let allocatable =
            node.status.as_ref().map(|s| Resources::from_map(&s.allocatable)).unwrap_or_default();
        NodeInfo {
            node,
            allocatable,
            requested: Resources::default(),
            non_zero_requested: (0, 0),
            pods_by_controller: HashMap::new(),
        }
    }

    pub fn name(&self) -> &str {
        self.node.metadata.as_ref().map_or("", |m| m.name.as_str())
    }

    pub fn labels(&self) -> &std::collections::BTreeMap<String, String> {
        static EMPTY: std::collections::BTreeMap<String, String> =
            std::collections::BTreeMap::new();
        self.node.metadata.as_ref().map_or(&EMPTY, |m| &m.labels)
    }

    /// Counts a pod as placed here.
    pub fn add_pod(&mut self, pod: &PodInfo) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.0 += pod.non_zero.0;
        self.non_zero_requested.1 += pod.non_zero.1;
        if let Some(c) = &pod.controller {
            *self.pods_by_controller.entry(c.clone()).or_default() += 1;
        }
    }

    /// Stops counting a pod placed here.
    pub fn remove_pod(&mut self, pod: &PodInfo) {
        self.requested.sub(&pod.requests);
        self.non_zero_requested.0 -= pod.non_zero.0;
        self.non_zero_requested.1 -= pod.non_zero.1;
        if let Some(c) = &pod.controller {
            if let Some(n) = self.pods_by_controller.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    self.pods_by_controller.remove(c);
                }
            }
        }
    }
}

/// A plugin's verdict on a pod (or a pod on a node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    Success,
    /// Does not fit now; the reasons are in Kubernetes' words ("Insufficient
    /// cpu") and are counted per node in the FailedScheduling message.
    Unschedulable(Vec<String>),
    /// Does not fit, and removing other pods would not help either.
    UnschedulableAndUnresolvable(Vec<String>),
    /// The plugin failed; the pod is retried after a back-off.
    Error(String),
}

impl Status {
    pub fn unschedulable(reason: impl Into<String>) -> Status {
        Status::Unschedulable(vec![reason.into()])
    }

    pub fn unresolvable(reason: impl Into<String>) -> Status {
        Status::UnschedulableAndUnresolvable(vec![reason.into()])
    }

    pub fn is_success(&self) -> bool {
        *self == Status::Success
    }
}

/// Orders the active queue: `less(a, b)` means a is scheduled before b. It
/// must be a strict weak order; exactly one plugin sorts.
pub trait QueueSort: Send + Sync {
    fn less(&self, a: &QueuedPod, b: &QueuedPod) -> bool;
}

/// A pod in the scheduling queue, with its history there.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub info: Arc<PodInfo>,
    /// When the pod first entered the queue.
    pub first_queued: tokio::time::Instant,
    /// When it last entered the active queue (its place among equals).
    pub queued: tokio::time::Instant,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// The plugins that found it unschedulable last time: which cluster
    /// events can help it.
    pub rejected_by: Vec<&'static str>,
}

/// Runs once per pod before any filter. A non-success status rejects the
/// pod for every node at once (and is reported for each).
pub trait PreFilter: Send + Sync {
    fn name(&self) -> &'static str;
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo) -> Status;
}

/// Decides whether the pod can run on one node. Called concurrently with
/// nothing else that mutates `node`; must not block. Filters run in order
/// and the first non-success ends the node's evaluation.
pub trait Filter: Send + Sync {
    fn name(&self) -> &'static str;
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status;
}

/// Runs only when no node passed the filters, with each node's status; may
/// make room (preemption) and name a node to retry on later. Returns None
/// when it has nothing to offer.
pub trait PostFilter: Send + Sync {
    fn name(&self) -> &'static str;
    fn post_filter(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        statuses: &HashMap<String, Status>,
    ) -> Option<String>;
}

/// Scores a feasible node, 0..=100 after `normalize`; the framework sums
/// the scores times each plugin's weight.
pub trait Score: Send + Sync {
    fn name(&self) -> &'static str;
    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;
    /// Maps the raw scores of every feasible node onto 0..=100, when the
    /// raw score is relative (e.g. "fewest PreferNoSchedule taints").
    fn normalize(&self, _state: &CycleState, _pod: &PodInfo, _scores: &mut [i64]) {}
}

/// Holds something for the pod on the chosen node before it is bound.
/// `unreserve` undoes it when a later step fails; it must be idempotent
/// and must undo a reserve that failed halfway.
pub trait Reserve: Send + Sync {
    fn name(&self) -> &'static str;
    fn reserve(&self, state: &CycleState, pod: &PodInfo, node: &str) -> Status;
    fn unreserve(&self, state: &CycleState, pod: &PodInfo, node: &str);
}

/// Writes the placement. Runs off the scheduling loop; the first binder
/// that does not answer `Skip` decides.
pub trait Bind: Send + Sync {
    fn name(&self) -> &'static str;
    fn bind<'a>(&'a self, pod: &'a PodInfo, node: &'a str) -> BoxFuture<'a, BindOutcome>;
}

#[derive(Debug)]
pub enum BindOutcome {
    Bound,
    /// This binder does not handle the pod; ask the next.
    Skip,
    /// The pod is gone or already bound elsewhere: drop it.
    Gone(String),
    /// Try again after a back-off.
    Failed(String),
}

/// The plugins enabled at each extension point, in order.
pub struct Framework {
    pub queue_sort: Arc<dyn QueueSort>,
    pub pre_filter: Vec<Arc<dyn PreFilter>>,
    pub filter: Vec<Arc<dyn Filter>>,
    pub post_filter: Vec<Arc<dyn PostFilter>>,
    /// Each with its weight.
    pub score: Vec<(Arc<dyn Score>, i64)>,
    pub reserve: Vec<Arc<dyn Reserve>>,
    pub bind: Vec<Arc<dyn Bind>>,
}

/// The outcome of the algorithm for one pod.
#[derive(Debug)]
pub struct Placement {
    pub node: String,
    /// Nodes that passed the filters (of those evaluated).
    pub feasible: usize,
    pub evaluated: usize,
}

/// How many feasible nodes are enough to pick from, as Kubernetes' adaptive
/// percentageOfNodesToScore: all of a small cluster, then a share that
/// shrinks as the cluster grows (50% minus 1% per 125 nodes, at least 5%),
/// but never fewer than 100.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    const MIN: usize = 100;
    if nodes <= MIN {
        return nodes;
    }
    let percent = (50usize.saturating_sub(nodes / 125)).max(5);
    (nodes * percent / 100).max(MIN)
}

impl Framework {
    /// Runs pre-filter, filter, post-filter and score over `nodes`, starting
    /// at `start` (rotated per cycle so that every node gets looked at) and
    /// stopping once enough feasible nodes are found.
    pub fn schedule(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[&NodeInfo],
        start: usize,
        random: u64,
    ) -> Result<Placement, FitError> {
        if nodes.is_empty() {
            return Err(FitError::no_nodes());
        }
        for plugin in &self.pre_filter {
            let status = plugin.pre_filter(state, pod);
            if !status.is_success() {
                return Err(FitError::all_nodes(nodes.len(), plugin.name(), status));
            }
        }
        let want = feasible_nodes_to_find(nodes.len());
        let mut feasible: Vec<&NodeInfo> = Vec::new();
        let mut statuses: HashMap<String, Status> = HashMap::new();
        let mut rejected_by: Vec<&'static str> = Vec::new();
        let mut evaluated = 0;
        for i in 0..nodes.len() {
            let node = nodes[(start + i) % nodes.len()];
            evaluated += 1;
            let verdict = self.filter.iter().find_map(|plugin| {
                let status = plugin.filter(state, pod, node);
                (!status.is_success()).then_some((plugin.name(), status))
            });
            match verdict {
                None => {
                    feasible.push(node);
                    if feasible.len() >= want {
                        break;
                    }
                }
                Some((plugin, status)) => {
                    if !rejected_by.contains(&plugin) {
                        rejected_by.push(plugin);
                    }
                    statuses.insert(node.name().to_string(), status);
                }
            }
        }
        if feasible.is_empty() {
            for plugin in &self.post_filter {
                if let Some(nominated) = plugin.post_filter(state, pod, &statuses) {
                    tracing::debug!(pod = %pod.key, node = %nominated, plugin = plugin.name(), "post-filter nominated a node");
                }
            }
            return Err(FitError::from_statuses(nodes.len(), statuses, rejected_by));
        }
        let node = if feasible.len() == 1 {
            feasible[0].name().to_string()
        } else {
            self.best(state, pod, &feasible, random)
        };
        Ok(Placement { node, feasible: feasible.len(), evaluated })
    }

    /// The highest total score; ties go to a node picked at random among
    /// them, so equal nodes share the load.
    fn best(
        &self,
        state: &CycleState,
        pod: &PodInfo,
        feasible: &[&NodeInfo],
        random: u64,
    ) -> String {
        let mut totals = vec![0i64; feasible.len()];
        let mut scores = vec![0i64; feasible.len()];
        for (plugin, weight) in &self.score {
            for (i, node) in feasible.iter().enumerate() {
                scores[i] = plugin.score(state, pod, node);
            }
            plugin.normalize(state, pod, &mut scores);
            for (total, score) in totals.iter_mut().zip(&scores) {
                *total += score * weight;
            }
        }
        let top = totals.iter().copied().max().unwrap_or(0);
        let tied: Vec<usize> = (0..feasible.len()).filter(|&i| totals[i] == top).collect();
        let pick = tied[(random % tied.len() as u64) as usize];
        feasible[pick].name().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_clusters_are_searched_whole_and_large_ones_in_part() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(100), 100);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(100_000), 5000);
    }
}
