//! Raft figures as Prometheus gauges, sampled from openraft's metrics.

use crate::store::Store;
use std::time::Duration;

pub(crate) fn spawn_reporter(store: Store) -> tokio::task::JoinHandle<()> {
    let stop = store.stop_token();
    let mut metrics = store.raft().metrics();
    tokio::spawn(async move {
        let mut last_leader = None;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
            }
            let m = metrics.borrow_and_update().clone();
            metrics::gauge!("berth_store_raft_term").set(m.current_term as f64);
            metrics::gauge!("berth_store_raft_last_log_index")
                .set(m.last_log_index.unwrap_or(0) as f64);
            metrics::gauge!("berth_store_raft_applied_index")
                .set(m.last_applied.map_or(0, |l| l.index) as f64);
            metrics::gauge!("berth_store_raft_committed_index").set(store.committed_index() as f64);
            metrics::gauge!("berth_store_raft_is_leader")
                .set(f64::from(m.current_leader == Some(m.id)));
            if m.current_leader != last_leader {
                metrics::counter!("berth_store_raft_leader_changes_total").increment(1);
                last_leader = m.current_leader;
            }
            // Bounded rate: the watch channel coalesces bursts anyway.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
