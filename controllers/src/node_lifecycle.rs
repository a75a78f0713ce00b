//! Node lifecycle: a node whose heartbeat Lease (in kube-node-lease, named
//! after the node) is not renewed within the grace period becomes
//! Ready=Unknown and gets the NoExecute taint node.kubernetes.io/unreachable;
//! its pods are evicted once their toleration of that taint runs out, at a
//! bounded rate. When the Lease is renewed again, the taint goes.
//!
//! Silence is measured on this replica's own clock, from the moment it last
//! saw the Lease change, so the node's and the controller's clocks need not
//! agree; a new leader gives every node a full grace period.

use crate::informers::{Caches, Informers, NODE_LEASE_NAMESPACE};
use crate::runner::{Action, Reconciler};
use crate::Error;
use berth_client::EventRecorder;
use berth_client::{Api, Change, Client, DeleteParams, Index, WorkQueue};
use berth_proto::core_v1::{Node, NodeCondition, Pod, Taint, Toleration};
use berth_proto::{Resource, Time};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub const NAME: &str = "nodelifecycle";

/// The taint an unreachable node gets.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

#[derive(Clone, Debug)]
pub struct NodeLifecycleConfig {
    /// A node whose Lease has not changed for this long is unreachable
    /// (Kubernetes' --node-monitor-grace-period, 40 s).
    pub grace_period: Duration,
    /// How long a pod with no toleration of its own for the unreachable
    /// taint stays on an unreachable node (the 300 s Kubernetes'
    /// DefaultTolerationSeconds admission gives every pod).
    pub default_toleration: Duration,
    /// Pod evictions per second at most, over all nodes; 0 = no limit. A
    /// partition that cuts off many nodes at once must not empty them all
    /// in a moment.
    pub eviction_qps: f64,
}

impl Default for NodeLifecycleConfig {
    fn default() -> NodeLifecycleConfig {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            default_toleration: Duration::from_secs(300),
            eviction_qps: 10.0,
        }
    }
}

/// What this replica knows of one node's heartbeat.
struct Heartbeat {
    lease_version: String,
    changed_at: Instant,
    /// When this replica tainted the node, if it did.
    tainted_at: Option<Instant>,
}

pub struct NodeLifecycleController {
    client: Client,
    caches: Caches,
    recorder: EventRecorder,
    config: NodeLifecycleConfig,
    heartbeats: Mutex<HashMap<String, Heartbeat>>,
    evictions: Mutex<TokenBucket>,
}

impl NodeLifecycleController {
    pub fn new(
        client: &Client,
        informers: &mut Informers,
        recorder: EventRecorder,
        queue: &WorkQueue<String>,
        config: NodeLifecycleConfig,
    ) -> NodeLifecycleController {
        let caches = informers.caches();
        {
            let queue = queue.clone();
            informers.nodes.on_change(move |c| queue.add(c.object().metadata().name.clone()));
        }
        {
            let queue = queue.clone();
            informers.node_leases.on_change(move |c| queue.add(c.object().metadata().name.clone()));
        }
        {
            // A pod bound to an unreachable node needs its eviction timed.
            let queue = queue.clone();
            informers.pods.on_change(move |c| {
                if let Change::Added(pod) = c {
                    if let Some(node) =
                        pod.spec.as_ref().map(|s| &s.node_name).filter(|n| !n.is_empty())
                    {
                        queue.add(node.clone());
                    }
                }
            });
        }
        let evictions = Mutex::new(TokenBucket::new(config.eviction_qps));
        NodeLifecycleController {
            client: client.clone(),
            caches,
            recorder,
            config,
            heartbeats: Mutex::new(HashMap::new()),
            evictions,
        }
    }
}

impl Reconciler for NodeLifecycleController {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let Some(node) = self.caches.nodes.get(name) else {
            self.heartbeats().remove(name);
            return Ok(Action::AwaitChange);
        };
        let lease_version = self
            .caches
            .node_leases
            .get(&format!("{NODE_LEASE_NAMESPACE}/{name}"))
            .map(|l| l.metadata().resource_version.clone())
            .unwrap_or_default();
        let silent_for = {
            let mut heartbeats = self.heartbeats();
            let beat = heartbeats.entry(name.to_string()).or_insert_with(|| Heartbeat {
                lease_version: lease_version.clone(),
                changed_at: Instant::now(),
                tainted_at: None,
            });
            if beat.lease_version != lease_version {
                beat.lease_version = lease_version;
                beat.changed_at = Instant::now();
            }
            beat.changed_at.elapsed()
        };
        let taint = unreachable_taint(&node).cloned();
        if silent_for < self.config.grace_period {
            if taint.is_some() {
                self.untaint(&node).await?;
            }
            let until_silent = self.config.grace_period - silent_for;
            return Ok(Action::Requeue(until_silent + Duration::from_millis(10)));
        }
        self.mark_unknown(&node).await?;
        let tainted_at = match taint {
            Some(taint) => self
                .heartbeats()
                .get(name)
                .and_then(|b| b.tainted_at)
                .unwrap_or_else(|| since_wall_clock(taint.time_added)),
            None => {
                self.taint(&node).await?;
                let now = Instant::now();
                if let Some(beat) = self.heartbeats().get_mut(name) {
                    beat.tainted_at = Some(now);
                }
                now
            }
        };
        let next = self.evict(name, tainted_at).await?;
        Ok(match next {
            Some(after) => Action::Requeue(after),
            None => Action::AwaitChange,
        })
    }
}

fn unreachable_taint(node: &Node) -> Option<&Taint> {
    node.spec
        .as_ref()?
        .taints
        .iter()
        .find(|t| t.key == UNREACHABLE_TAINT && t.effect == "NoExecute")
}

/// An Instant for a taint added by another replica at `added`, read
/// against the wall clock; whole seconds are rounded up so no pod goes early.
fn since_wall_clock(added: Option<Time>) -> Instant {
    let now = Instant::now();
    let Some(added) = added else { return now };
    let ago = Time::now().unix_seconds() - added.unix_seconds() - 1;
    now.checked_sub(Duration::from_secs(ago.max(0) as u64)).unwrap_or(now)
}

/// How long a pod may stay on an unreachable node: None for ever.
fn toleration_of(pod: &Pod, default: Duration) -> Option<Duration> {
    let tolerations: &[Toleration] = pod.spec.as_ref().map_or(&[], |s| &s.tolerations);
    let matching = tolerations.iter().find(|t| {
        let key = t.key == UNREACHABLE_TAINT || (t.key.is_empty() && t.operator == "Exists");
        let effect = t.effect.is_empty() || t.effect == "NoExecute";
        let value = t.operator == "Exists" || t.value.is_empty();
        key && effect && value
    });
    match matching {
        None => Some(default),
        Some(t) => t.toleration_seconds.map(|s| Duration::from_secs(s.max(0) as u64)),
    }
}

impl NodeLifecycleController {
    fn heartbeats(&self) -> std::sync::MutexGuard<'_, HashMap<String, Heartbeat>> {
        self.heartbeats.lock().expect("no code panics while holding the heartbeats lock")
    }

    async fn mark_unknown(&self, node: &Node) -> Result<(), Error> {
        let status = node.status.clone().unwrap_or_default();
        if status.conditions.iter().any(|c| c.r#type == "Ready" && c.status == "Unknown") {
            return Ok(());
        }
        let now = Time::now();
        let mut updated = node.clone();
        let conditions = &mut updated.status.get_or_insert_with(Default::default).conditions;
        let unknown = |c: &mut NodeCondition| {
            c.status = "Unknown".into();
            c.reason = "NodeStatusUnknown".into();
            c.message = "Kubelet stopped posting node status.".into();
            c.last_transition_time = Some(now);
        };
        match conditions.iter_mut().find(|c| c.r#type == "Ready") {
            Some(ready) => unknown(ready),
            None => {
                let mut ready = NodeCondition { r#type: "Ready".into(), ..Default::default() };
                unknown(&mut ready);
                conditions.push(ready);
            }
        }
        Api::<Node>::all(&self.client).update_status(&updated).await?;
        tracing::warn!(node = %node.metadata().name, "node stopped renewing its lease; Ready=Unknown");
        self.recorder.normal(
            node,
            "NodeNotReady",
            format!("Node {} status is now: NodeNotReady", node.metadata().name),
        );
        Ok(())
    }

    async fn taint(&self, node: &Node) -> Result<(), Error> {
        let mut updated = node.clone();
        updated.spec.get_or_insert_with(Default::default).taints.push(Taint {
            key: UNREACHABLE_TAINT.into(),
            value: String::new(),
            effect: "NoExecute".into(),
            time_added: Some(Time::now()),
        });
        self.write_node(&updated).await
    }

    async fn untaint(&self, node: &Node) -> Result<(), Error> {
        let mut updated = node.clone();
        if let Some(spec) = updated.spec.as_mut() {
            spec.taints.retain(|t| t.key != UNREACHABLE_TAINT);
        }
        self.write_node(&updated).await?;
        tracing::info!(node = %node.metadata().name, "node renews its lease again; taint removed");
        self.recorder.normal(
            node,
            "NodeReachable",
            format!("Node {} renews its lease again", node.metadata().name),
        );
        Ok(())
    }

    /// A spec write from a cached node; a stale cache is a Conflict, and
    /// the retry starts from the newer node.
    async fn write_node(&self, node: &Node) -> Result<(), Error> {
        Api::<Node>::all(&self.client).update(node).await?;
        Ok(())
    }

    /// Evicts the pods on `node` whose toleration has run out since
    /// `tainted_at`; answers when the next one is due.
    async fn evict(&self, node: &str, tainted_at: Instant) -> Result<Option<Duration>, Error> {
        let mut next: Option<Duration> = None;
        let mut sooner = |d: Duration| next = Some(next.map_or(d, |n| n.min(d)));
        for pod in self.caches.pods.by_index(Index::Node, node) {
            if pod.metadata().deletion_timestamp.is_some() {
                continue;
            }
            let Some(tolerated) = toleration_of(&pod, self.config.default_toleration) else {
                continue;
            };
            let due = tainted_at + tolerated;
            let now = Instant::now();
            if due > now {
                sooner(due - now);
                continue;
            }
            if let Err(wait) =
                self.evictions.lock().expect("no code panics holding the bucket").take()
            {
                sooner(wait);
                continue;
            }
            let meta = pod.metadata();
            match Api::<Pod>::namespaced(&self.client, &meta.namespace)
                .delete(&meta.name, &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(node, pod = %meta.name, namespace = %meta.namespace, "evicted from an unreachable node");
                    metrics::counter!("berth_controllers_node_evictions_total").increment(1);
                    self.recorder.normal(
                        pod.as_ref(),
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {}/{}", meta.namespace, meta.name),
                    );
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(next)
    }
}

/// Evictions allowed now, refilled at a steady rate.
struct TokenBucket {
    qps: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn new(qps: f64) -> TokenBucket {
        TokenBucket { qps, tokens: qps.max(1.0), at: Instant::now() }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self) -> Result<(), Duration> {
        if !(self.qps.is_finite() && self.qps > 0.0) {
            return Ok(());
        }
        let now = Instant::now();
        let burst = self.qps.max(1.0);
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.qps).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::core_v1::PodSpec;

    fn pod_tolerating(tolerations: Vec<Toleration>) -> Pod {
        Pod { spec: Some(PodSpec { tolerations, ..Default::default() }), ..Default::default() }
    }

    #[test]
    fn a_pods_own_toleration_decides_how_long_it_stays() {
        let default = Duration::from_secs(300);
        assert_eq!(toleration_of(&pod_tolerating(vec![]), default), Some(default));
        let own = Toleration {
            key: UNREACHABLE_TAINT.into(),
            operator: "Exists".into(),
            effect: "NoExecute".into(),
            toleration_seconds: Some(5),
            ..Default::default()
        };
        assert_eq!(
            toleration_of(&pod_tolerating(vec![own.clone()]), default),
            Some(Duration::from_secs(5))
        );
        let forever = Toleration { toleration_seconds: None, ..own };
        assert_eq!(toleration_of(&pod_tolerating(vec![forever]), default), None);
        let other =
            Toleration { key: "gpu".into(), operator: "Exists".into(), ..Default::default() };
        assert_eq!(toleration_of(&pod_tolerating(vec![other]), default), Some(default));
    }

    #[tokio::test(start_paused = true)]
    async fn evictions_are_spaced_by_the_rate() {
        let mut bucket = TokenBucket::new(2.0);
        assert!(bucket.take().is_ok());
        assert!(bucket.take().is_ok());
        let wait = bucket.take().unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        tokio::time::advance(wait).await;
        assert!(bucket.take().is_ok());
    }
}
