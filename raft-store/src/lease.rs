//! Lease deadlines. Only the leader keeps them, in memory: keep-alives go to
//! the leader, and when a lease runs out the leader proposes its revocation
//! through the log, so followers never expire a lease on their own clock.
//! A new leader gives every lease a full TTL from its first tick, as etcd
//! does, so a change of leader never expires a lease early.

use crate::error::StoreError;
use crate::mvcc;
use crate::store::{unavailable, Store};
use berth_proto::etcd::etcdserverpb::{
    LeaseKeepAliveRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// How often the leader looks for expired leases.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
pub(crate) struct Lessor {
    state: Mutex<Deadlines>,
}

#[derive(Default)]
struct Deadlines {
    /// The term these deadlines were set in; a new term starts afresh.
    term: u64,
    by_id: HashMap<i64, Instant>,
}

impl Lessor {
    fn deadlines(&self) -> std::sync::MutexGuard<'_, Deadlines> {
        self.state.lock().expect("lease lock is never poisoned")
    }
}

/// Runs on every peer; acts only while the peer leads.
pub(crate) fn spawn_expirer(store: Store) -> tokio::task::JoinHandle<()> {
    let stop = store.stop_token();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(e) = expire_once(&store).await {
                tracing::warn!(error = %e, "lease expiry check failed");
            }
        }
    })
}

async fn expire_once(store: &Store) -> Result<(), StoreError> {
    let metrics = store.inner.raft.metrics().borrow().clone();
    if metrics.current_leader != Some(store.id()) {
        store.inner.lessor.deadlines().by_id.clear();
        return Ok(());
    }
    let leases = mvcc::leases(&store.inner.db.view())?;
    let now = Instant::now();
    let expired: Vec<i64> = {
        let mut state = store.inner.lessor.deadlines();
        if state.term != metrics.current_term {
            state.term = metrics.current_term;
            state.by_id.clear();
        }
        state.by_id.retain(|id, _| leases.iter().any(|l| l.id == *id));
        leases
            .iter()
            .filter(|lease| {
                let deadline = *state
                    .by_id
                    .entry(lease.id)
                    .or_insert(now + Duration::from_secs(lease.ttl as u64));
                deadline <= now
            })
            .map(|lease| lease.id)
            .collect()
    };
    for id in expired {
        match store.lease_revoke(LeaseRevokeRequest { id }).await {
            Ok(_) | Err(StoreError::LeaseNotFound(_)) => {
                store.inner.lessor.deadlines().by_id.remove(&id);
                metrics::counter!("berth_store_leases_expired_total").increment(1);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Renews a lease: on the leader directly, otherwise through the leader.
pub(crate) async fn keep_alive(store: &Store, id: i64) -> Result<i64, StoreError> {
    if store.is_leader() {
        return keep_alive_on_leader(store, id).await;
    }
    let mut client = leader_client(store).await?;
    let reply = client
        .lease_keep_alive(LeaseKeepAliveRequest { id })
        .await
        .map_err(|s| status_to_error(s, id))?
        .into_inner();
    Ok(reply.ttl)
}

pub(crate) async fn keep_alive_on_leader(store: &Store, id: i64) -> Result<i64, StoreError> {
    // A lease granted just now may not be applied here yet.
    store.read_barrier().await?;
    let lease = mvcc::lease(&store.inner.db.view(), id)?.ok_or(StoreError::LeaseNotFound(id))?;
    store
        .inner
        .lessor
        .deadlines()
        .by_id
        .insert(id, Instant::now() + Duration::from_secs(lease.ttl as u64));
    Ok(lease.ttl)
}

pub(crate) async fn time_to_live(
    store: &Store,
    request: LeaseTimeToLiveRequest,
) -> Result<LeaseTimeToLiveResponse, StoreError> {
    if store.is_leader() {
        return time_to_live_on_leader(store, request).await;
    }
    let id = request.id;
    let mut client = leader_client(store).await?;
    client
        .lease_time_to_live(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| status_to_error(s, id))
}

pub(crate) async fn time_to_live_on_leader(
    store: &Store,
    request: LeaseTimeToLiveRequest,
) -> Result<LeaseTimeToLiveResponse, StoreError> {
    store.read_barrier().await?;
    let view = store.inner.db.view();
    let lease = mvcc::lease(&view, request.id)?.ok_or(StoreError::LeaseNotFound(request.id))?;
    let remaining = {
        let now = Instant::now();
        let deadlines = store.inner.lessor.deadlines();
        match deadlines.by_id.get(&request.id) {
            Some(deadline) => deadline.saturating_duration_since(now).as_secs_f64().ceil() as i64,
            None => lease.ttl,
        }
    };
    let keys = if request.keys { mvcc::lease_keys(&view, request.id)? } else { Vec::new() };
    let (revision, _) = mvcc::revisions(&view)?;
    Ok(LeaseTimeToLiveResponse {
        header: Some(store.header(revision)),
        id: request.id,
        ttl: remaining,
        granted_ttl: lease.ttl,
        keys,
    })
}

async fn leader_client(
    store: &Store,
) -> Result<berth_proto::raft_v1::raft_client::RaftClient<tonic::transport::Channel>, StoreError> {
    let status = store.status()?;
    let leader = status.leader.ok_or_else(|| unavailable("no leader"))?;
    let addr = status.members.get(&leader).ok_or_else(|| unavailable("leader address unknown"))?;
    if !store.faults().pass(leader).await {
        return Err(unavailable("leader unreachable"));
    }
    store.inner.peers.client(leader, addr).ok_or_else(|| unavailable("leader address malformed"))
}

fn status_to_error(status: tonic::Status, id: i64) -> StoreError {
    match status.code() {
        tonic::Code::NotFound => StoreError::LeaseNotFound(id),
        _ => unavailable(&format!("leader: {}", status.message())),
    }
}
