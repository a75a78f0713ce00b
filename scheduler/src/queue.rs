//! The scheduling queue: pending pods in three places.
//!
//! - active: ready to be tried, ordered by the framework's QueueSort;
//! - back-off: failed recently; each failure doubles the wait (1 s to 10 s
//!   by default) before the pod is active again;
//! - unschedulable: fit nowhere; they stay until a cluster event that could
//!   help them (a node added or changed, an assigned pod deleted — only for
//!   pods short of resources —, or a change to the pod itself), or until
//!   they have waited `unschedulable_timeout` (nothing is missed forever).
//!
//! A pod is in at most one place. An event that arrives while a pod is
//! being scheduled is remembered (`move_cycle`), so a pod that then turns
//! out unschedulable goes to back-off, not to wait for an event already
//! past.

use crate::framework::{PodInfo, QueueSort, QueuedPod};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// What may make an unschedulable pod fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdded,
    /// Labels, taints, unschedulable or allocatable changed.
    NodeChanged,
    /// A pod holding resources on a node went away.
    AssignedPodDeleted,
}

#[derive(Clone, Debug)]
pub struct QueueTiming {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub unschedulable_timeout: Duration,
}

impl Default for QueueTiming {
    fn default() -> QueueTiming {
        QueueTiming {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            unschedulable_timeout: Duration::from_secs(300),
        }
    }
}

pub struct SchedulingQueue {
    state: Mutex<State>,
    wake: Notify,
    sort: Arc<dyn QueueSort>,
    timing: QueueTiming,
}

#[derive(Default)]
struct State {
    /// A binary heap by `sort.less`.
    active: Vec<QueuedPod>,
    /// Pod key -> (ready at, pod).
    backoff: HashMap<String, (Instant, QueuedPod)>,
    /// Pod key -> (since, pod).
    unschedulable: HashMap<String, (Instant, QueuedPod)>,
    /// Counts scheduling attempts; a pod popped in cycle c that fails after
    /// an event of cycle >= c goes to back-off.
    cycle: u64,
    move_cycle: u64,
    /// Cycle at which each in-flight pod was popped.
    in_flight: HashMap<String, u64>,
    closed: bool,
}

/// The pod handed out by `pop`, with the cycle it belongs to.
pub struct Popped {
    pub pod: QueuedPod,
    pub cycle: u64,
}

impl SchedulingQueue {
    pub fn new(sort: Arc<dyn QueueSort>, timing: QueueTiming) -> SchedulingQueue {
        SchedulingQueue { state: Mutex::new(State::default()), wake: Notify::new(), sort, timing }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("no panic while the queue's three places are being updated")
    }

    /// Enters the active heap; `queued` (its place among equals) is now.
    fn push_active(&self, state: &mut State, mut pod: QueuedPod) {
        pod.queued = Instant::now();
        state.active.push(pod);
        let last = state.active.len() - 1;
        self.sift_up(&mut state.active, last);
        self.wake.notify_one();
    }

    fn sift_up(&self, heap: &mut [QueuedPod], mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.sort.less(&heap[i], &heap[parent]) {
                break;
            }
            heap.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&self, heap: &mut [QueuedPod], mut i: usize) {
        let n = heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut first = i;
            if l < n && self.sort.less(&heap[l], &heap[first]) {
                first = l;
            }
            if r < n && self.sort.less(&heap[r], &heap[first]) {
                first = r;
            }
            if first == i {
                return;
            }
            heap.swap(i, first);
            i = first;
        }
    }

    fn pop_active(&self, state: &mut State) -> Option<QueuedPod> {
        if state.active.is_empty() {
            return None;
        }
        let top = state.active.swap_remove(0);
        self.sift_down(&mut state.active, 0);
        Some(top)
    }

    fn backoff_for(&self, attempts: u32) -> Duration {
        let doubling = attempts.saturating_sub(1).min(30);
        self.timing.initial_backoff.saturating_mul(1u32 << doubling).min(self.timing.max_backoff)
    }

    /// A pod that became pending, or changed while pending.
    pub fn add_or_update(&self, info: Arc<PodInfo>) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        let key = info.key.clone();
        if let Some(i) = state.active.iter().position(|p| p.info.key == key) {
            state.active[i].info = info;
            return;
        }
        if let Some((_, pod)) = state.backoff.get_mut(&key) {
            pod.info = info;
            return;
        }
        if let Some((_, mut pod)) = state.unschedulable.remove(&key) {
            // The pod's own change may be what it needed.
            let labels = |p: &PodInfo| p.pod.metadata.as_ref().map(|m| m.labels.clone());
            // Status writes (our own PodScheduled condition among them) do
            // not count: only what the scheduler looks at.
            let changed = pod.info.pod.spec != info.pod.spec || labels(&pod.info) != labels(&info);
            pod.info = info;
            if changed {
                self.requeue(&mut state, pod);
            } else {
                state.unschedulable.insert(key, (Instant::now(), pod));
            }
            return;
        }
        if state.in_flight.contains_key(&key) {
            // Being scheduled now; if that fails, the pod comes back.
            state.move_cycle = state.cycle;
            return;
        }
        let now = Instant::now();
        let pod = QueuedPod {
            info,
            first_queued: now,
            queued: now,
            attempts: 0,
            rejected_by: Vec::new(),
        };
        self.push_active(&mut state, pod);
    }

    /// A pod that is no longer pending (bound, deleted).
    pub fn remove(&self, key: &str) {
        let mut state = self.lock();
        if let Some(i) = state.active.iter().position(|p| p.info.key == key) {
            state.active.swap_remove(i);
            if i < state.active.len() {
                self.sift_down(&mut state.active, i);
                self.sift_up(&mut state.active, i);
            }
        }
        state.backoff.remove(key);
        state.unschedulable.remove(key);
    }

    /// To active if its back-off is over, else to back-off.
    fn requeue(&self, state: &mut State, pod: QueuedPod) {
        let ready_at = pod.queued + self.backoff_for(pod.attempts);
        if pod.attempts == 0 || Instant::now() >= ready_at {
            self.push_active(state, pod);
        } else {
            state.backoff.insert(pod.info.key.clone(), (ready_at, pod));
            self.wake.notify_one();
        }
    }

    /// The next pod to schedule, waiting for one; None once closed.
    pub async fn pop(&self) -> Option<Popped> {
        loop {
            let wakeup = self.wake.notified();
            tokio::pin!(wakeup);
            wakeup.as_mut().enable();
            let next_due = {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                self.flush(&mut state);
                if let Some(pod) = self.pop_active(&mut state) {
                    state.cycle += 1;
                    let cycle = state.cycle;
                    state.in_flight.insert(pod.info.key.clone(), cycle);
                    self.gauges(&state);
                    return Some(Popped { pod, cycle });
                }
                let backoff = state.backoff.values().map(|(at, _)| *at).min();
                let stale = state
                    .unschedulable
                    .values()
                    .map(|(since, _)| *since + self.timing.unschedulable_timeout)
                    .min();
                backoff.into_iter().chain(stale).min()
            };
            match next_due {
                Some(at) => {
                    tokio::select! {
                        _ = &mut wakeup => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => wakeup.await,
            }
        }
    }

    /// Moves pods whose back-off ended, and unschedulable pods that waited
    /// too long, to active.
    fn flush(&self, state: &mut State) {
        let now = Instant::now();
        let due: Vec<String> = state
            .backoff
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut ready: Vec<QueuedPod> =
            due.iter().filter_map(|k| state.backoff.remove(k)).map(|(_, p)| p).collect();
        let timeout = self.timing.unschedulable_timeout;
        let stale: Vec<String> = state
            .unschedulable
            .iter()
            .filter(|(_, (since, _))| *since + timeout <= now)
            .map(|(k, _)| k.clone())
            .collect();
        ready.extend(stale.iter().filter_map(|k| state.unschedulable.remove(k)).map(|(_, p)| p));
        ready.sort_by_key(|p| p.queued);
        for pod in ready {
            self.push_active(state, pod);
        }
    }

    /// The attempt at `popped` ended; the pod is bound or being bound.
    pub fn done(&self, key: &str) {
        self.lock().in_flight.remove(key);
    }

    /// The attempt found no node: wait for an event that can help (or go to
    /// back-off if one came during the attempt).
    pub fn unschedulable(&self, mut pod: QueuedPod, cycle: u64, rejected_by: Vec<&'static str>) {
        let mut state = self.lock();
        state.in_flight.remove(&pod.info.key);
        if state.closed {
            return;
        }
        pod.attempts += 1;
        pod.rejected_by = rejected_by;
        pod.queued = Instant::now();
        if state.move_cycle >= cycle {
            let ready_at = pod.queued + self.backoff_for(pod.attempts);
            state.backoff.insert(pod.info.key.clone(), (ready_at, pod));
            self.wake.notify_one();
        } else {
            state.unschedulable.insert(pod.info.key.clone(), (Instant::now(), pod));
        }
        self.gauges(&state);
    }

    /// The attempt failed for another reason (an error, a failed bind):
    /// retry after the back-off.
    pub fn retry(&self, mut pod: QueuedPod) {
        let mut state = self.lock();
        state.in_flight.remove(&pod.info.key);
        if state.closed {
            return;
        }
        pod.attempts += 1;
        pod.queued = Instant::now();
        let ready_at = pod.queued + self.backoff_for(pod.attempts);
        state.backoff.insert(pod.info.key.clone(), (ready_at, pod));
        self.wake.notify_one();
    }

    /// A cluster event: unschedulable pods it may help go back to the queue.
    pub fn on_event(&self, event: ClusterEvent) {
        let mut state = self.lock();
        state.move_cycle = state.cycle;
        let helped: Vec<String> = state
            .unschedulable
            .iter()
            .filter(|(_, (_, pod))| match event {
                ClusterEvent::NodeAdded | ClusterEvent::NodeChanged => true,
                ClusterEvent::AssignedPodDeleted => pod.rejected_by.contains(&"NodeResourcesFit"),
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in helped {
            if let Some((_, pod)) = state.unschedulable.remove(&key) {
                self.requeue(&mut state, pod);
            }
        }
        self.gauges(&state);
    }

    pub fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_waiters();
    }

    /// (active, back-off, unschedulable).
    #[cfg(test)]
    pub fn lens(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.active.len(), state.backoff.len(), state.unschedulable.len())
    }

    fn gauges(&self, state: &State) {
        metrics::gauge!("berth_scheduler_pending_pods", "queue" => "active")
            .set(state.active.len() as f64);
        metrics::gauge!("berth_scheduler_pending_pods", "queue" => "backoff")
            .set(state.backoff.len() as f64);
        metrics::gauge!("berth_scheduler_pending_pods", "queue" => "unschedulable")
            .set(state.unschedulable.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::pod;

    fn queue() -> SchedulingQueue {
        SchedulingQueue::new(Arc::new(crate::plugins::PrioritySort), QueueTiming::default())
    }

    fn info(name: &str, priority: i32) -> Arc<PodInfo> {
        let mut p = pod(name).pod();
        p.spec.as_mut().unwrap().priority = Some(priority);
        Arc::new(PodInfo::new(Arc::new(p)))
    }

    async fn pop(q: &SchedulingQueue) -> Popped {
        tokio::time::timeout(Duration::from_secs(600), q.pop())
            .await
            .expect("a pod is ready")
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn higher_priority_first_then_oldest() {
        let q = queue();
        q.add_or_update(info("low", 0));
        tokio::time::advance(Duration::from_millis(1)).await;
        q.add_or_update(info("high", 10));
        tokio::time::advance(Duration::from_millis(1)).await;
        q.add_or_update(info("low-later", 0));
        let order: Vec<String> = [pop(&q).await, pop(&q).await, pop(&q).await]
            .into_iter()
            .map(|p| p.pod.info.name().to_string())
            .collect();
        assert_eq!(order, ["high", "low", "low-later"]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially() {
        let q = queue();
        q.add_or_update(info("p", 0));
        let mut popped = pop(&q).await;
        for expected in [1u64, 2, 4, 8, 10, 10] {
            let at = Instant::now();
            q.retry(popped.pod);
            popped = pop(&q).await;
            assert_eq!(at.elapsed().as_secs(), expected);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_an_event_that_can_help() {
        let q = queue();
        q.add_or_update(info("short-of-cpu", 0));
        q.add_or_update(info("wrong-zone", 0));
        let a = pop(&q).await;
        let b = pop(&q).await;
        let (cpu, zone) = if a.pod.info.name() == "short-of-cpu" { (a, b) } else { (b, a) };
        q.unschedulable(cpu.pod, cpu.cycle, vec!["NodeResourcesFit"]);
        q.unschedulable(zone.pod, zone.cycle, vec!["NodeAffinity"]);
        assert_eq!(q.lens(), (0, 0, 2));
        // A freed pod slot helps only the pod that was short of resources.
        q.on_event(ClusterEvent::AssignedPodDeleted);
        assert_eq!(q.lens(), (0, 1, 1));
        assert_eq!(pop(&q).await.pod.info.name(), "short-of-cpu");
        // A new node may help anyone.
        q.on_event(ClusterEvent::NodeAdded);
        assert_eq!(pop(&q).await.pod.info.name(), "wrong-zone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_to_the_pod_itself_requeues_it_but_a_status_write_does_not() {
        let q = queue();
        let original = info("p", 0);
        q.add_or_update(original.clone());
        let popped = pop(&q).await;
        q.unschedulable(popped.pod, popped.cycle, vec!["NodeAffinity"]);
        let mut status_only = (*original.pod).clone();
        status_only.status = Some(Default::default());
        q.add_or_update(Arc::new(PodInfo::new(Arc::new(status_only))));
        assert_eq!(q.lens(), (0, 0, 1));
        let mut relabelled = (*original.pod).clone();
        relabelled.metadata.as_mut().unwrap().labels.insert("zone".into(), "b".into());
        q.add_or_update(Arc::new(PodInfo::new(Arc::new(relabelled))));
        assert_eq!(q.lens().2, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_during_the_attempt_sends_the_pod_to_back_off() {
        let q = queue();
        q.add_or_update(info("p", 0));
        let popped = pop(&q).await;
        q.on_event(ClusterEvent::NodeAdded);
        q.unschedulable(popped.pod, popped.cycle, vec!["NodeResourcesFit"]);
        assert_eq!(q.lens(), (0, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_are_retried_after_the_timeout_anyway() {
        let q = queue();
        q.add_or_update(info("p", 0));
        let popped = pop(&q).await;
        q.unschedulable(popped.pod, popped.cycle, vec!["NodeAffinity"]);
        let at = Instant::now();
        assert_eq!(pop(&q).await.pod.info.name(), "p");
        assert_eq!(at.elapsed(), QueueTiming::default().unschedulable_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_pods_leave_every_place_and_close_ends_pop() {
        let q = Arc::new(queue());
        q.add_or_update(info("a", 0));
        q.add_or_update(info("b", 0));
        q.remove("default/a");
        assert_eq!(pop(&q).await.pod.info.name(), "b");
        let waiting = tokio::spawn({
            let q = q.clone();
            async move { q.pop().await.is_none() }
        });
        tokio::task::yield_now().await;
        q.close();
        assert!(waiting.await.unwrap());
    }
}
