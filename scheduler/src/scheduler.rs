//! One scheduler replica: campaigns for the scheduler Lease and, while it
//! leads, runs the scheduling loop with a client fenced by its token.
//!
//! The loop takes one pod at a time from the queue, runs the framework
//! against the cache under one lock, assumes the pod on the chosen node and
//! hands the bind to a task of its own, so the next pod never waits for the
//! previous bind.

use crate::cache::SchedulerCache;
use crate::framework::{BindOutcome, CycleState, FitError, Framework, PodInfo, QueuedPod};
use crate::queue::{ClusterEvent, QueueTiming, SchedulingQueue};
use berth_client::{
    Api, Change, Client, ElectionTiming, EventRecorder, FenceToken, Informer, InformerParams,
    LeaderElector,
};
use berth_proto::core_v1::{Node, Pod, PodCondition};
use berth_proto::Time;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The Lease the replicas compete for, in kube-system.
pub const LEASE_NAME: &str = "berth-scheduler";
/// The schedulerName of pods that name none.
pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods whose spec.schedulerName is this (or empty, for the default
    /// name) are this scheduler's.
    pub scheduler_name: String,
    /// This replica's name in the Lease.
    pub identity: String,
    pub election: ElectionTiming,
    pub queue: QueueTiming,
    /// Binds in flight at once; the loop waits for a slot past this.
    pub max_binds_in_flight: usize,
}

impl SchedulerConfig {
    pub fn new(identity: &str) -> SchedulerConfig {
        SchedulerConfig {
            scheduler_name: DEFAULT_SCHEDULER_NAME.into(),
            identity: identity.into(),
            // Takeover within about 2 s of the leader going silent.
            election: ElectionTiming {
                lease_duration: Duration::from_secs(2),
                renew_deadline: Duration::from_millis(1500),
                retry_period: Duration::from_millis(250),
            },
            queue: QueueTiming::default(),
            max_binds_in_flight: 256,
        }
    }
}

/// Campaigns until `stop`; schedules during each term of leadership.
pub async fn run(client: Client, config: SchedulerConfig, stop: CancellationToken) {
    run_reporting(client, config, stop, tokio::sync::watch::channel(None).0).await
}

/// As [`run`], and tells `leadership` the token of each term (None between
/// terms), for a /leaderz endpoint.
pub async fn run_reporting(
    client: Client,
    config: SchedulerConfig,
    stop: CancellationToken,
    leadership: tokio::sync::watch::Sender<Option<FenceToken>>,
) {
    let elector = LeaderElector::new(
        &client,
        "kube-system",
        LEASE_NAME,
        &config.identity,
        config.election.clone(),
    );
    let mut leading = elector.subscribe();
    let campaign = elector.run(stop.clone());
    tokio::pin!(campaign);
    loop {
        let token: FenceToken = tokio::select! {
            _ = &mut campaign => return,
            changed = leading.changed() => {
                if changed.is_err() {
                    return;
                }
                match leading.borrow_and_update().clone() {
                    Some(token) => token,
                    None => continue,
                }
            }
        };
        tracing::info!(identity = %config.identity, %token, "scheduling as leader");
        leadership.send_replace(Some(token.clone()));
        let term = stop.child_token();
        let scheduling = schedule(client.fenced(&token), config.clone(), term.clone());
        tokio::pin!(scheduling);
        tokio::select! {
            _ = &mut campaign => {
                term.cancel();
                scheduling.await;
                return;
            }
            _ = async { let _ = leading.wait_for(|t| t.as_ref() != Some(&token)).await; } => {
                tracing::warn!(identity = %config.identity, "lost leadership; scheduling stops");
                term.cancel();
                scheduling.await;
            }
            _ = &mut scheduling => {}
        }
        leadership.send_replace(None);
    }
}

/// What the informers' handlers and the loop share.
struct Shared {
    cache: Mutex<SchedulerCache>,
    queue: SchedulingQueue,
    scheduler_name: String,
}

impl Shared {
    fn cache(&self) -> std::sync::MutexGuard<'_, SchedulerCache> {
        self.cache.lock().expect("no panic while the cache is being updated")
    }

    fn responsible_for(&self, pod: &Pod) -> bool {
        let name = pod.spec.as_ref().map_or("", |s| s.scheduler_name.as_str());
        let name = if name.is_empty() { DEFAULT_SCHEDULER_NAME } else { name };
        name == self.scheduler_name
    }

    fn on_pod(&self, change: &Change<Pod>) {
        let pod = change.object();
        let meta = pod.metadata.as_ref();
        let key = meta.map(|m| format!("{}/{}", m.namespace, m.name)).unwrap_or_default();
        let node = pod.spec.as_ref().map_or("", |s| s.node_name.as_str());
        let phase = pod.status.as_ref().map_or("", |s| s.phase.as_str());
        let finished = phase == "Succeeded" || phase == "Failed";
        if matches!(change, Change::Deleted(_)) || (finished && !node.is_empty()) {
            self.queue.remove(&key);
            if self.cache().remove_bound(&key) {
                self.queue.on_event(ClusterEvent::AssignedPodDeleted);
            }
            return;
        }
        if !node.is_empty() {
            self.queue.remove(&key);
            self.cache().upsert_bound(Arc::new(PodInfo::new(pod.clone())), node);
            return;
        }
        let deleting = meta.is_some_and(|m| m.deletion_timestamp.is_some());
        if deleting || finished || !self.responsible_for(pod) {
            self.queue.remove(&key);
            return;
        }
        // Assumed and being bound: the bind's own update will follow.
        if self.cache().is_placed(&key) {
            return;
        }
        self.queue.add_or_update(Arc::new(PodInfo::new(pod.clone())));
    }

    fn on_node(&self, change: &Change<Node>) {
        match change {
            Change::Deleted(node) => {
                let name = node.metadata.as_ref().map_or("", |m| m.name.as_str());
                self.cache().remove_node(name);
            }
            other => {
                let event = self.cache().upsert_node(other.object().clone());
                if let Some(event) = event {
                    self.queue.on_event(event);
                }
            }
        }
    }
}

/// The scheduling loop for one term of leadership.
async fn schedule(client: Client, config: SchedulerConfig, term: CancellationToken) {
    let framework = Arc::new(crate::plugins::default_framework(client.clone()));
    let shared = Arc::new(Shared {
        cache: Mutex::new(SchedulerCache::default()),
        queue: SchedulingQueue::new(framework.queue_sort.clone(), config.queue.clone()),
        scheduler_name: config.scheduler_name.clone(),
    });
    let mut pods = Informer::new(Api::<Pod>::all(&client), InformerParams::default());
    let on_pod = shared.clone();
    pods.on_change(move |change| on_pod.on_pod(change));
    let mut nodes = Informer::new(Api::<Node>::all(&client), InformerParams::default());
    let on_node = shared.clone();
    nodes.on_change(move |change| on_node.on_node(change));
    let (pods_synced, nodes_synced) = (pods.cache(), nodes.cache());
    // Events are written in the background, by a writer owned by this term.
    let (events, writer) = EventRecorder::new(&client, &config.identity);
    let informers = futures::future::join3(
        pods.run(term.clone()),
        nodes.run(term.clone()),
        writer.run(term.clone()),
    );
    let scheduling = async {
        tokio::select! {
            _ = term.cancelled() => return,
            _ = async { nodes_synced.wait_synced().await; pods_synced.wait_synced().await } => {}
        }
        let mut cycle = Cycle {
            framework,
            shared: shared.clone(),
            client: client.clone(),
            binds: JoinSet::new(),
            slots: Arc::new(tokio::sync::Semaphore::new(config.max_binds_in_flight.max(1))),
            reported: Arc::new(Mutex::new(HashMap::new())),
            events: events.for_component(DEFAULT_SCHEDULER_NAME),
            next_start: 0,
            random: getrandom::u64().unwrap_or(0x9E37_79B9_7F4A_7C15) | 1,
        };
        loop {
            let popped = tokio::select! {
                _ = term.cancelled() => break,
                popped = shared.queue.pop() => popped,
            };
            let Some(popped) = popped else { break };
            cycle.run(popped.pod, popped.cycle).await;
        }
        shared.queue.close();
        cycle.binds.shutdown().await;
    };
    tokio::join!(informers, scheduling);
}

struct Cycle {
    framework: Arc<Framework>,
    shared: Arc<Shared>,
    client: Client,
    /// Binds and failure reports in flight; owned here, ended with the term.
    binds: JoinSet<()>,
    slots: Arc<tokio::sync::Semaphore>,
    /// The last failure message reported per pod, so a pod retried for the
    /// same reason does not flood the API with identical Events.
    reported: Arc<Mutex<HashMap<String, String>>>,
    events: EventRecorder,
    next_start: usize,
    random: u64,
}

impl Cycle {
    fn next_random(&mut self) -> u64 {
        // xorshift64: cheap, and only breaks ties between equal nodes.
        self.random ^= self.random << 13;
        self.random ^= self.random >> 7;
        self.random ^= self.random << 17;
        self.random
    }

    async fn run(&mut self, pod: QueuedPod, cycle: u64) {
        let started = Instant::now();
        let random = self.next_random();
        let mut state = CycleState::default();
        let result = {
            let cache = self.shared.cache();
            if cache.is_placed(&pod.info.key) {
                drop(cache);
                self.shared.queue.done(&pod.info.key);
                return;
            }
            let nodes = cache.nodes();
            let start = if nodes.is_empty() { 0 } else { self.next_start % nodes.len() };
            let result = self.framework.schedule(&mut state, &pod.info, &nodes, start, random);
            if let Ok(placement) = &result {
                self.next_start = start + placement.evaluated;
            }
            result
        };
        metrics::histogram!("berth_scheduler_scheduling_algorithm_duration_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(placement) => self.assume_and_bind(pod, state, placement.node, started).await,
            Err(fit) => self.fail(pod, cycle, fit),
        }
        while self.binds.try_join_next().is_some() {}
    }

    async fn assume_and_bind(
        &mut self,
        pod: QueuedPod,
        state: CycleState,
        node: String,
        started: Instant,
    ) {
        for (i, plugin) in self.framework.reserve.iter().enumerate() {
            if !plugin.reserve(&state, &pod.info, &node).is_success() {
                for undo in self.framework.reserve[..=i].iter().rev() {
                    undo.unreserve(&state, &pod.info, &node);
                }
                metrics::counter!("berth_scheduler_schedule_attempts_total", "result" => "error")
                    .increment(1);
                self.shared.queue.retry(pod);
                return;
            }
        }
        self.shared.cache().assume(pod.info.clone(), &node);
        self.shared.queue.done(&pod.info.key);
        let Ok(slot) = self.slots.clone().acquire_owned().await else { return };
        let (framework, shared, reported) =
            (self.framework.clone(), self.shared.clone(), self.reported.clone());
        let report = Reporter { client: self.client.clone(), events: self.events.clone() };
        self.binds.spawn(async move {
            let _slot = slot;
            let mut outcome = BindOutcome::Skip;
            for binder in &framework.bind {
                outcome = binder.bind(&pod.info, &node).await;
                if !matches!(outcome, BindOutcome::Skip) {
                    break;
                }
            }
            let failure = match outcome {
                BindOutcome::Bound => {
                    metrics::counter!("berth_scheduler_schedule_attempts_total", "result" => "scheduled").increment(1);
                    metrics::histogram!("berth_scheduler_e2e_scheduling_duration_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("berth_scheduler_pod_scheduling_duration_seconds")
                        .record(pod.first_queued.elapsed().as_secs_f64());
                    reported.lock().expect("no panic while noting a report").remove(&pod.info.key);
                    None
                }
                BindOutcome::Gone(why) => {
                    tracing::debug!(pod = %pod.info.key, %why, "pod went away before its bind");
                    shared.cache().forget(&pod.info.key);
                    None
                }
                BindOutcome::Failed(why) => Some(why),
                BindOutcome::Skip => Some("no binder took the pod".to_string()),
            };
            if let Some(why) = failure {
                tracing::warn!(pod = %pod.info.key, node = %node, %why, "bind failed; retrying");
                metrics::counter!("berth_scheduler_schedule_attempts_total", "result" => "error").increment(1);
                shared.cache().forget(&pod.info.key);
                for undo in framework.reserve.iter().rev() {
                    undo.unreserve(&state, &pod.info, &node);
                }
                let info = pod.info.clone();
                shared.queue.retry(pod);
                report.failed(&info, &format!("Binding rejected: {why}")).await;
            }
        });
    }

    fn fail(&mut self, pod: QueuedPod, cycle: u64, fit: FitError) {
        let result = if fit.error.is_some() { "error" } else { "unschedulable" };
        metrics::counter!("berth_scheduler_schedule_attempts_total", "result" => result)
            .increment(1);
        let message = fit.message();
        tracing::debug!(pod = %pod.info.key, %message, "no node fits");
        let info = pod.info.clone();
        if fit.error.is_some() {
            self.shared.queue.retry(pod);
        } else {
            self.shared.queue.unschedulable(pod, cycle, fit.rejected_by);
        }
        let fresh = {
            let mut reported = self.reported.lock().expect("no panic while noting a report");
            reported.insert(info.key.clone(), message.clone()).as_deref() != Some(message.as_str())
        };
        if fresh {
            let report = Reporter { client: self.client.clone(), events: self.events.clone() };
            self.binds.spawn(async move { report.failed(&info, &message).await });
        }
    }
}

/// Tells the pod's owner why it is not scheduled: a FailedScheduling Event
/// and the PodScheduled=False condition.
struct Reporter {
    client: Client,
    events: EventRecorder,
}

impl Reporter {
    async fn failed(&self, pod: &PodInfo, message: &str) {
        let meta = pod.pod.metadata.clone().unwrap_or_default();
        let now = Time::now();
        self.events.warning(pod.pod.as_ref(), "FailedScheduling", message.to_string());
        let pods = Api::<Pod>::namespaced(&self.client, &meta.namespace);
        let mut current = (*pod.pod).clone();
        let status = current.status.get_or_insert_with(Default::default);
        let unchanged = status
            .conditions
            .iter()
            .any(|c| c.r#type == "PodScheduled" && c.status == "False" && c.message == message);
        if unchanged {
            return;
        }
        status.conditions.retain(|c| c.r#type != "PodScheduled");
        status.conditions.push(PodCondition {
            r#type: "PodScheduled".into(),
            status: "False".into(),
            reason: "Unschedulable".into(),
            message: message.into(),
            last_transition_time: Some(now),
            ..Default::default()
        });
        if let Err(e) = pods.update_status(&current).await {
            // A newer version exists; the next attempt reports again.
            tracing::debug!(pod = %pod.key, error = %e, "could not set PodScheduled=False");
        }
    }
}
