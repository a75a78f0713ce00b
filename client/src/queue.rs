//! A rate-limited work queue that hands controller workers keys to reconcile.
//!
//! The semantics follow client-go's workqueue, so reconcilers written against
//! it behave as Kubernetes controllers do:
//! - a key waiting in the queue is held once, however often it is added;
//! - a key is never handed to two workers at once: adding a key that is being
//!   processed marks it dirty, and `done` puts it back in the queue;
//! - delayed adds collapse to the earliest deadline, and are driven by `get`
//!   itself, so the queue owns no background task;
//! - `add_rate_limited` delays a key by the larger of its own exponential
//!   backoff and an overall token bucket.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};

/// How `add_rate_limited` spaces out retries. The defaults are client-go's
/// `DefaultControllerRateLimiter`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Delay of a key's first retry; each further retry doubles it. Default 5 ms.
    pub base_delay: Duration,
    /// Cap on a key's own backoff. Default 1000 s.
    pub max_delay: Duration,
    /// Sustained retries per second across all keys. Default 10; zero, negative
    /// or non-finite turns the overall limit off.
    pub qps: f64,
    /// Retries allowed at once before `qps` applies. Default 100.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(1000),
            qps: 10.0,
            burst: 100,
        }
    }
}

/// A queue of keys (typically `"namespace/name"`) shared by a controller's
/// workers. Clones share the same queue.
///
/// A worker loops on [`get`](Self::get), reconciles the key, then calls
/// [`done`](Self::done); on failure it calls
/// [`add_rate_limited`](Self::add_rate_limited), on success
/// [`forget`](Self::forget).
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

struct Shared<K> {
    name: String,
    state: Mutex<State<K>>,
    /// `notify_one` per key made ready or new first deadline, since any idle
    /// getter can act on either; `notify_waiters` on shutdown.
    wakeup: Notify,
    depth: Gauge,
    adds: Counter,
    queue_duration: Histogram,
}

struct State<K> {
    /// Keys ready to be handed out, in the order they became ready.
    ready: VecDeque<K>,
    /// Keys that need processing, with when they became ready. Holds every key
    /// in `ready`, plus processing keys that were added again.
    dirty: HashMap<K, Instant>,
    processing: HashSet<K>,
    /// Delayed adds by deadline; the sequence number keeps equal deadlines in
    /// insertion order. `delayed_at` is the reverse index, one entry per key.
    delayed: BTreeMap<(Instant, u64), K>,
    delayed_at: HashMap<K, (Instant, u64)>,
    next_seq: u64,
    /// Rate-limited adds per key since its last `forget`.
    failures: HashMap<K, u32>,
    limit: RateLimit,
    bucket: TokenBucket,
    shutting_down: bool,
}

impl<K> WorkQueue<K>
where
    K: Clone + Eq + Hash + Send + Sync + 'static,
{
    /// Creates an empty queue; `name` labels its metrics.
    pub fn new(name: &str, limit: RateLimit) -> Self {
        let label = || ("name", name.to_owned());
        let now = Instant::now();
        let state = State {
            ready: VecDeque::new(),
            dirty: HashMap::new(),
            processing: HashSet::new(),
            delayed: BTreeMap::new(),
            delayed_at: HashMap::new(),
            next_seq: 0,
            failures: HashMap::new(),
            limit,
            bucket: TokenBucket::new(limit.qps, limit.burst, now),
            shutting_down: false,
        };
        Self {
            shared: Arc::new(Shared {
                name: name.to_owned(),
                state: Mutex::new(state),
                wakeup: Notify::new(),
                depth: metrics::gauge!("berth_workqueue_depth", &[label()]),
                adds: metrics::counter!("berth_workqueue_adds_total", &[label()]),
                queue_duration: metrics::histogram!(
                    "berth_workqueue_queue_duration_seconds",
                    &[label()]
                ),
            }),
        }
    }

    /// Queues `key` unless it is already waiting. A key being processed is
    /// queued again when its worker calls `done`. Ignored after shutdown.
    pub fn add(&self, key: K) {
        let (mut state, now) = self.shared.lock_at_now();
        if !state.shutting_down {
            self.shared.make_ready(&mut state, key, now);
        }
    }

    /// Adds `key` once `delay` has passed. If the key already has a pending
    /// delayed add, the earlier of the two deadlines wins. Immediate adds leave
    /// a pending delayed add in place, as in client-go.
    pub fn add_after(&self, key: K, delay: Duration) {
        let (mut state, now) = self.shared.lock_at_now();
        if state.shutting_down {
            return;
        }
        if delay.is_zero() {
            self.shared.make_ready(&mut state, key, now);
            return;
        }
        let deadline = deadline_after(now, delay);
        if let Some(&(pending, seq)) = state.delayed_at.get(&key) {
            if pending <= deadline {
                return;
            }
            state.delayed.remove(&(pending, seq));
        }
        let seq = state.next_seq;
        state.next_seq = seq.wrapping_add(1);
        state.delayed.insert((deadline, seq), key.clone());
        state.delayed_at.insert(key, (deadline, seq));
        if state.delayed.first_key_value().is_some_and(|(first, _)| *first == (deadline, seq)) {
            // An idle getter may be sleeping towards the old first deadline.
            self.shared.wakeup.notify_one();
        }
    }

    /// Adds `key` after the larger of its exponential backoff and the overall
    /// token bucket's delay, and counts a retry for it.
    pub fn add_rate_limited(&self, key: K) {
        let delay = {
            let mut state = self.shared.lock();
            if state.shutting_down {
                return;
            }
            let now = Instant::now();
            let backoff = state.backoff(&key);
            let retries = state.failures.get(&key).copied().unwrap_or_default();
            let delay = backoff.max(state.bucket.reserve(now));
            tracing::trace!(queue = %self.shared.name, retries, ?delay, "rate-limited add");
            delay
        };
        self.add_after(key, delay);
    }

    /// Clears `key`'s backoff once it reconciled; until then its retry count
    /// is kept, as in client-go.
    pub fn forget(&self, key: &K) {
        self.shared.lock().failures.remove(key);
    }

    /// How many rate-limited adds `key` had since it was last forgotten.
    pub fn retries(&self, key: &K) -> u32 {
        self.shared.lock().failures.get(key).copied().unwrap_or_default()
    }

    /// Waits for the next ready key, in the order keys became ready. The key
    /// stays "processing" until [`done`](Self::done) is called for it.
    ///
    /// Returns `None` as soon as the queue is shut down, even if keys are still
    /// waiting (client-go drains them first; a stopping controller should not).
    /// Cancel-safe: a key is taken only in the poll that returns it.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.shared.wakeup.notified();
            tokio::pin!(notified);
            // Registering before reading the state means a wakeup sent after
            // the read reaches us instead of being lost.
            notified.as_mut().enable();
            let next_deadline = {
                let (mut state, now) = self.shared.lock_at_now();
                if state.shutting_down {
                    return None;
                }
                if let Some(key) = state.ready.pop_front() {
                    if let Some(ready_since) = state.dirty.remove(&key) {
                        self.shared.queue_duration.record(now.duration_since(ready_since));
                    }
                    state.processing.insert(key.clone());
                    self.shared.depth.set(state.ready.len() as f64);
                    return Some(key);
                }
                state.delayed.first_key_value().map(|((deadline, _), _)| *deadline)
            };
            match next_deadline {
                Some(deadline) => tokio::select! {
                    () = &mut notified => {}
                    () = sleep_until(deadline) => {}
                },
                None => notified.await,
            }
        }
    }

    /// Ends processing of `key`; if it was added meanwhile, it is queued again.
    pub fn done(&self, key: &K) {
        let mut state = self.shared.lock();
        if !state.processing.remove(key) || state.shutting_down {
            return;
        }
        if state.dirty.contains_key(key) {
            state.ready.push_back(key.clone());
            self.shared.depth.set(state.ready.len() as f64);
            self.shared.wakeup.notify_one();
        }
    }

    /// Wakes every waiting `get`, which returns `None`, as will all later ones.
    /// Adds after this are ignored.
    pub fn shut_down(&self) {
        self.shared.lock().shutting_down = true;
        self.shared.wakeup.notify_waiters();
        tracing::debug!(queue = %self.shared.name, "work queue shut down");
    }

    /// Number of keys ready to be handed out (delayed and processing keys are
    /// not counted).
    pub fn len(&self) -> usize {
        self.shared.lock_at_now().0.ready.len()
    }

    /// Whether no key is ready to be handed out.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Clone + Eq + Hash> Shared<K> {
    fn lock(&self) -> MutexGuard<'_, State<K>> {
        self.state
            .lock()
            .expect("queue lock poisoned: a panic mid-update may have split ready/dirty/processing")
    }

    /// The one place a key becomes ready, so duplicate collapsing and the
    /// never-twice-at-once rule hold for every kind of add.
    fn make_ready(&self, state: &mut State<K>, key: K, now: Instant) {
        if state.dirty.contains_key(&key) {
            return;
        }
        self.adds.increment(1);
        state.dirty.insert(key.clone(), now);
        if state.processing.contains(&key) {
            return;
        }
        state.ready.push_back(key);
        self.depth.set(state.ready.len() as f64);
        self.wakeup.notify_one();
    }

    /// Locks the state with due delayed adds already made ready, so they
    /// queue in deadline order ahead of later adds and `len` counts them.
    fn lock_at_now(&self) -> (MutexGuard<'_, State<K>>, Instant) {
        let mut state = self.lock();
        let now = Instant::now();
        while let Some(entry) = state.delayed.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            state.delayed_at.remove(&key);
            self.make_ready(&mut state, key, now);
        }
        (state, now)
    }
}

impl<K: Clone + Eq + Hash> State<K> {
    /// The key's next backoff: `base_delay * 2^failures`, capped at `max_delay`.
    fn backoff(&mut self, key: &K) -> Duration {
        let failures = self.failures.entry(key.clone()).or_default();
        let exponent = *failures;
        *failures = failures.saturating_add(1);
        let factor = 1u32.checked_shl(exponent).unwrap_or(u32::MAX);
        self.limit.base_delay.saturating_mul(factor).min(self.limit.max_delay)
    }
}

/// Token bucket in the manner of Go's `x/time/rate` `Reserve`: every call
/// takes a token, going into debt, and the debt says how long to wait.
struct TokenBucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(qps: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst);
        Self { qps, burst, tokens: burst, last: now }
    }

    fn reserve(&mut self, now: Instant) -> Duration {
        if !(self.qps > 0.0 && self.qps.is_finite()) {
            return Duration::ZERO;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst) - 1.0;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64(-self.tokens / self.qps).unwrap_or(Duration::MAX)
    }
}

/// `now + delay`, saturating to a far future (as tokio does) instead of
/// panicking on a delay too large for an `Instant`.
fn deadline_after(now: Instant, delay: Duration) -> Instant {
    now.checked_add(delay).unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    // Every wait is bounded so that a broken queue fails a test instead of
    // hanging it; under paused time the bound costs nothing.
    const PATIENCE: Duration = Duration::from_secs(60);

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new("test", RateLimit::default())
    }

    async fn next<K: Clone + Eq + Hash + Send + Sync + 'static>(q: &WorkQueue<K>) -> Option<K> {
        timeout(PATIENCE, q.get()).await.expect("no key became ready")
    }

    async fn nothing_ready(q: &WorkQueue<&'static str>) -> bool {
        timeout(PATIENCE, q.get()).await.is_err()
    }

    /// Paused time moves in the timer wheel's millisecond ticks.
    fn assert_elapsed(start: Instant, ms: u64) {
        let (elapsed, expected) = (start.elapsed(), Duration::from_millis(ms));
        let in_tick = elapsed >= expected && elapsed < expected + Duration::from_millis(1);
        assert!(in_tick, "expected {expected:?}, got {elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn duplicates_collapse() {
        let q = queue();
        ["a", "a", "b", "a"].into_iter().for_each(|k| q.add(k));
        assert_eq!(q.len(), 2);
        assert_eq!((next(&q).await, next(&q).await), (Some("a"), Some("b")));
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn processing_key_is_held_back_until_done() {
        let q = queue();
        q.add("a");
        assert_eq!(next(&q).await, Some("a"));
        ["a", "a", "b"].into_iter().for_each(|k| q.add(k));
        assert_eq!(q.len(), 1);
        assert_eq!(next(&q).await, Some("b"), "a is still being processed");
        assert!(nothing_ready(&q).await);
        q.done(&"a");
        assert_eq!(next(&q).await, Some("a"));
        q.done(&"a");
        assert!(nothing_ready(&q).await, "the two re-adds collapsed into one");
    }

    #[tokio::test(start_paused = true)]
    async fn add_after_orders_by_deadline_and_keeps_the_earliest() {
        let q = queue();
        let start = Instant::now();
        for (k, ms) in [("a", 30), ("b", 10), ("a", 20), ("b", 50)] {
            q.add_after(k, Duration::from_millis(ms));
        }
        assert!(q.is_empty());
        assert_eq!(next(&q).await, Some("b"));
        assert_elapsed(start, 10);
        assert_eq!(next(&q).await, Some("a"));
        assert_elapsed(start, 20);
        q.done(&"a");
        q.done(&"b");
        assert!(nothing_ready(&q).await, "the later deadlines were dropped");
    }

    #[tokio::test(start_paused = true)]
    async fn earlier_add_after_wakes_a_sleeping_getter() {
        let q = queue();
        q.add_after("late", Duration::from_secs(10));
        let getter = tokio::spawn({
            let q = q.clone();
            async move { q.get().await }
        });
        tokio::task::yield_now().await;
        let start = Instant::now();
        q.add_after("soon", Duration::from_millis(5));
        assert_eq!(getter.await.expect("getter panicked"), Some("soon"));
        assert_elapsed(start, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_up_to_the_cap_and_forget_resets_it() {
        let limit = RateLimit { max_delay: Duration::from_millis(40), ..RateLimit::default() };
        let q = WorkQueue::new("test", limit);
        // 40 retries go past 2^32, where a naive shift would overflow.
        for retry in 0..40 {
            let start = Instant::now();
            q.add_rate_limited("a");
            assert_eq!(next(&q).await, Some("a"));
            assert_elapsed(start, 5 << retry.min(3));
            q.done(&"a");
        }
        assert_eq!(q.retries(&"a"), 40);
        q.forget(&"a");
        assert_eq!(q.retries(&"a"), 0);
        let start = Instant::now();
        q.add_rate_limited("a");
        assert_eq!(next(&q).await, Some("a"));
        assert_elapsed(start, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_spaces_out_a_burst_beyond_its_size() {
        let q = WorkQueue::new("test", RateLimit::default());
        let start = Instant::now();
        (0..102).for_each(|i| q.add_rate_limited(i));
        for i in 0..100 {
            assert_eq!(next(&q).await, Some(i));
            assert_elapsed(start, 5);
        }
        assert_eq!(next(&q).await, Some(100));
        assert_elapsed(start, 100);
        assert_eq!(next(&q).await, Some(101));
        assert_elapsed(start, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn shut_down_wakes_blocked_getters_with_none() {
        let q = queue();
        let getter = |q: WorkQueue<_>| tokio::spawn(async move { q.get().await });
        let getters: Vec<_> = (0..3).map(|_| getter(q.clone())).collect();
        tokio::task::yield_now().await;
        q.shut_down();
        for getter in getters {
            let got = timeout(PATIENCE, getter).await.expect("getter still blocked");
            assert_eq!(got.expect("getter panicked"), None);
        }
        q.add("a");
        q.add_after("b", Duration::from_millis(1));
        assert!(q.is_empty());
        assert_eq!(next(&q).await, None);
    }

    /// Per key: times added, what a worker last saw of that count, and
    /// whether a worker holds it now.
    type Tracker = Mutex<HashMap<u32, (u64, u64, bool)>>;

    fn lock(t: &Tracker) -> MutexGuard<'_, HashMap<u32, (u64, u64, bool)>> {
        t.lock().expect("a worker panicked")
    }

    /// Workers hold keys across awaits while a producer keeps re-adding a few
    /// hot keys: no key may be held by two workers, and no add may be lost.
    async fn hammer(workers: usize) {
        let q = WorkQueue::new("test", RateLimit::default());
        let tracker = Arc::new(Tracker::default());
        let worker = |q: WorkQueue<u32>, t: Arc<Tracker>| async move {
            while let Some(k) = q.get().await {
                if let Some((added, seen, held)) = lock(&t).get_mut(&k) {
                    assert!(!std::mem::replace(held, true), "{k} held by two workers");
                    *seen = *added;
                }
                for _ in 0..=k {
                    tokio::task::yield_now().await;
                }
                lock(&t).entry(k).or_default().2 = false;
                q.done(&k);
            }
        };
        let handles: Vec<_> =
            (0..workers).map(|_| tokio::spawn(worker(q.clone(), Arc::clone(&tracker)))).collect();

        for i in 0..3000u32 {
            let k = i % 4;
            lock(&tracker).entry(k).or_default().0 += 1;
            match i % 5 {
                0 => q.add_after(k, Duration::from_millis(u64::from(i % 3))),
                _ => q.add(k),
            }
            if i % 3 == 0 {
                tokio::task::yield_now().await;
            }
        }
        let all_seen = async {
            while lock(&tracker).values().any(|(added, seen, _)| added != seen) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        timeout(PATIENCE, all_seen).await.expect("an add was lost");
        q.shut_down();
        for handle in handles {
            timeout(PATIENCE, handle)
                .await
                .expect("worker still blocked")
                .expect("worker panicked");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_workers_never_share_a_key() {
        hammer(8).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_workers_never_share_a_key_across_threads() {
        hammer(16).await;
    }
}
