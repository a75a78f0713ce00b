//! The loop every controller runs: keys from informer handlers go into a
//! work queue, and N workers hand each key to the controller's reconciler,
//! which looks at the cache and makes the world match. The queue never gives
//! one key to two workers, and collapses repeated adds, so a reconciler
//! sees "this object may need work", never a stream of deltas.

use crate::Error;
use berth_client::WorkQueue;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a successful reconcile asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Look again after this long even if nothing changes (a pod's
    /// minReadySeconds running out, a grace period ending).
    Requeue(Duration),
    /// Nothing to do until an informer reports a change.
    AwaitChange,
}

/// One controller's reconcile step. It reads its informers' caches and
/// writes through the API; it must be idempotent, because a key comes back
/// after any change, resync or failure.
pub trait Reconciler: Send + Sync + 'static {
    /// The controller's name in logs, metrics and its queue's name.
    fn name(&self) -> &'static str;

    /// Makes the object with this key what its spec asks. An error requeues
    /// the key with its backoff.
    fn reconcile(&self, key: &str) -> impl Future<Output = Result<Action, Error>> + Send;
}

/// Runs `workers` workers on `queue` until `stop`, then shuts the queue
/// down. A reconcile in flight when `stop` comes is dropped mid-call: the
/// leader that started it has lost its lease, and its fenced writes would be
/// refused anyway.
pub async fn run_workers<R: Reconciler>(
    reconciler: Arc<R>,
    queue: WorkQueue<String>,
    workers: usize,
    stop: CancellationToken,
) {
    let mut tasks = JoinSet::new();
    for _ in 0..workers.max(1) {
        let (reconciler, queue, stop) = (reconciler.clone(), queue.clone(), stop.clone());
        tasks.spawn(async move { work(reconciler.as_ref(), &queue, &stop).await });
    }
    stop.cancelled().await;
    queue.shut_down();
    while tasks.join_next().await.is_some() {}
}

async fn work<R: Reconciler>(reconciler: &R, queue: &WorkQueue<String>, stop: &CancellationToken) {
    let name = reconciler.name();
    let latency =
        metrics::histogram!("berth_controllers_reconcile_duration_seconds", "controller" => name);
    while let Some(key) = queue.get().await {
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = stop.cancelled() => {
                queue.done(&key);
                return;
            }
            outcome = reconciler.reconcile(&key) => outcome,
        };
        latency.record(started.elapsed().as_secs_f64());
        let result = match outcome {
            Ok(Action::AwaitChange) => {
                queue.forget(&key);
                "success"
            }
            Ok(Action::Requeue(after)) => {
                queue.forget(&key);
                queue.add_after(key.clone(), after);
                "requeue"
            }
            Err(e) => {
                let retries = queue.retries(&key);
                // A stale cache makes conflicts routine; they are not news.
                if matches!(&e, Error::Api(api) if api.is_conflict()) {
                    tracing::debug!(controller = name, %key, error = %e, retries, "reconcile failed; retrying");
                } else {
                    tracing::warn!(controller = name, %key, error = %e, retries, "reconcile failed; retrying");
                }
                queue.add_rate_limited(key.clone());
                "error"
            }
        };
        metrics::counter!("berth_controllers_reconciles_total", "controller" => name, "result" => result)
            .increment(1);
        queue.done(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_client::RateLimit;
    use std::sync::Mutex;

    /// Fails its first two attempts at "a", asks "b" to come back once, and
    /// records every key it sees.
    struct Script {
        seen: Mutex<Vec<String>>,
        failures_left: Mutex<u32>,
    }

    impl Reconciler for Script {
        fn name(&self) -> &'static str {
            "script"
        }

        async fn reconcile(&self, key: &str) -> Result<Action, Error> {
            let n = {
                let mut seen = self.seen.lock().unwrap();
                seen.push(key.to_string());
                seen.iter().filter(|k| *k == key).count()
            };
            match key {
                "a" => {
                    let mut left = self.failures_left.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        return Err(Error::invalid("a", "not yet"));
                    }
                    Ok(Action::AwaitChange)
                }
                "b" if n == 1 => Ok(Action::Requeue(Duration::from_secs(30))),
                _ => Ok(Action::AwaitChange),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn errors_retry_with_backoff_and_requeues_come_back_after_their_delay() {
        let script =
            Arc::new(Script { seen: Mutex::new(Vec::new()), failures_left: Mutex::new(2) });
        let queue = WorkQueue::new("runner-test", RateLimit::default());
        let stop = CancellationToken::new();
        let runner = tokio::spawn(run_workers(script.clone(), queue.clone(), 2, stop.clone()));
        queue.add("a".to_string());
        queue.add("b".to_string());
        let count = |key: &str| script.seen.lock().unwrap().iter().filter(|k| *k == key).count();
        // Paused time jumps to each timer, so the 30 s requeue costs nothing.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while count("a") < 3 || count("b") < 2 {
            assert!(tokio::time::Instant::now() < deadline, "keys were not retried");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(queue.retries(&"a".to_string()), 0, "a success forgets the backoff");
        stop.cancel();
        runner.await.unwrap();
        assert_eq!((count("a"), count("b")), (3, 2), "nothing runs after the stop");
    }
}
