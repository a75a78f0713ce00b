//! Keeps the store's history bounded: the leader compacts away revisions
//! older than the retention window, so watches and reads at past revisions
//! work within it and the history never grows without bound.

use berth_proto::etcd::etcdserverpb::CompactionRequest;
use berth_raft_store::{Store, StoreError};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Compacts every `every`, keeping `retention` of history; runs until
/// `stop`. Only the leader compacts; compaction is replicated like any write.
pub fn spawn_compactor(
    store: Store,
    retention: Duration,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // (when, revision) samples; the oldest one older than the retention
        // window is where history may be cut.
        let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
        let mut compacted = 0;
        let mut ticker = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if !store.is_leader() {
                samples.clear();
                continue;
            }
            let now = Instant::now();
            samples.push_back((now, store.revision()));
            let mut cut = None;
            while let Some((at, revision)) = samples.front().copied() {
                if now.duration_since(at) < retention {
                    break;
                }
                cut = Some(revision);
                samples.pop_front();
            }
            let Some(revision) = cut.filter(|r| *r > compacted) else { continue };
            match store.compact(CompactionRequest { revision, physical: false }).await {
                Ok(_) => {
                    compacted = revision;
                    metrics::counter!("berth_apiserver_compactions_total").increment(1);
                    tracing::debug!(revision, "history compacted");
                }
                Err(StoreError::Compacted { .. }) => compacted = revision,
                Err(e) => tracing::warn!(error = %e, revision, "compaction failed; will retry"),
            }
        }
    })
}
