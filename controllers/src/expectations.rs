//! Expectations: what a controller has asked the API for and not yet seen
//! in its cache. Until the cache shows the pods it created and the
//! deletions it made, a controller must not count again — a stale cache
//! would make it create or delete the same replicas twice. Kubernetes'
//! `UIDTrackingControllerExpectations`, keyed by the owner's cache key.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// Expectations older than this are given up on: a watch event that never
/// comes (a create that failed without an answer) must not stall an owner
/// for ever. Kubernetes waits five minutes.
pub const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug)]
struct Expected {
    creations: i64,
    /// Keys of the pods whose deletion has not been seen yet.
    deletions: HashSet<String>,
    set_at: Instant,
}

#[derive(Debug, Default)]
pub struct Expectations {
    by_owner: Mutex<HashMap<String, Expected>>,
}

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Expected>> {
        self.by_owner.lock().expect("no code panics while holding the expectations lock")
    }

    /// Whether the cache has caught up with every write made for `owner`,
    /// so its pods can be counted.
    pub fn satisfied(&self, owner: &str) -> bool {
        match self.lock().get(owner) {
            None => true,
            Some(e) => {
                (e.creations <= 0 && e.deletions.is_empty())
                    || e.set_at.elapsed() >= EXPECTATIONS_TIMEOUT
            }
        }
    }

    /// About to create `n` pods for `owner`.
    pub fn expect_creations(&self, owner: &str, n: usize) {
        self.lock().insert(
            owner.to_string(),
            Expected { creations: n as i64, deletions: HashSet::new(), set_at: Instant::now() },
        );
    }

    /// About to delete these pods of `owner`.
    pub fn expect_deletions(&self, owner: &str, pods: impl IntoIterator<Item = String>) {
        self.lock().insert(
            owner.to_string(),
            Expected {
                creations: 0,
                deletions: pods.into_iter().collect(),
                set_at: Instant::now(),
            },
        );
    }

    /// A pod of `owner` appeared in the cache, or a create will never
    /// produce one (it failed or was skipped).
    pub fn creation_observed(&self, owner: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.creations -= 1;
        }
    }

    /// `pod` of `owner` was seen going (deletion timestamp or gone), or its
    /// delete failed and will not happen.
    pub fn deletion_observed(&self, owner: &str, pod: &str) {
        if let Some(e) = self.lock().get_mut(owner) {
            e.deletions.remove(pod);
        }
    }

    /// The owner is gone: nothing more is expected for it.
    pub fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_owner_waits_for_what_it_asked_for_or_the_timeout() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rs"));
        e.expect_creations("ns/rs", 2);
        e.creation_observed("ns/rs");
        assert!(!e.satisfied("ns/rs"));
        e.creation_observed("ns/rs");
        assert!(e.satisfied("ns/rs"));

        e.expect_deletions("ns/rs", ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed("ns/rs", "ns/a");
        e.deletion_observed("ns/rs", "ns/a");
        assert!(!e.satisfied("ns/rs"), "seeing one pod go twice does not count for the other");
        tokio::time::advance(EXPECTATIONS_TIMEOUT).await;
        assert!(e.satisfied("ns/rs"), "a lost event does not stall the owner for ever");
    }
}
