//! Campaigns as soon as a silent leader's lease has run out, instead of
//! waiting for openraft's own election timer.
//!
//! openraft 0.9 has a follower whose vote is committed campaign only after
//! the leader lease (`election_timeout_max` since the last message from the
//! leader) plus its election timeout, which is drawn once per node when it
//! starts; and a voter refuses vote requests while its own lease runs. So
//! after a leader dies a follower waits up to twice `election_timeout_max`,
//! a follower that learned of a longer log waits two more, and two
//! followers whose fixed timeouts are close can split the vote round after
//! round.
//!
//! The watchdog campaigns (`trigger().elect()`) once no leader has been
//! heard for the lease plus a short jitter, drawn afresh for every attempt:
//! the moment the other voters' leases have run out too, so they can grant
//! the vote. It campaigns once until a leader is heard again: openraft's own
//! timer, which backs off a peer that has seen a longer log than its own,
//! stays in charge of retries, so that peers with shorter logs do not keep
//! raising the term under the one that can win. A vote taken for another
//! candidate counts like a leader's message. It never campaigns while
//! a leader's messages arrive, nor on a leader, a learner or a single
//! voter, so it starts no election openraft's timer (which keeps running
//! behind it) would not start a little later. Raft's safety does not
//! depend on when elections start.

use crate::store::Store;
use openraft::ServerState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// When this peer last accepted a message from a leader, and whether the
/// watchdog is held off (while this peer hands its leadership over).
pub(crate) struct Contact {
    heard: Mutex<Instant>,
    paused: AtomicBool,
}

impl Default for Contact {
    fn default() -> Contact {
        Contact { heard: Mutex::new(Instant::now()), paused: AtomicBool::new(false) }
    }
}

impl Contact {
    /// A leader's AppendEntries or snapshot was accepted just now.
    pub(crate) fn heard(&self) {
        *self.heard.lock().expect("contact lock is never poisoned") = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.heard.lock().expect("contact lock is never poisoned")
    }

    pub(crate) fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }
}

/// A uniformly random duration in `[low, low + spread)`.
fn jitter(low: Duration, spread: Duration) -> Duration {
    let spread_ms = spread.as_millis().max(1) as u64;
    // Without randomness from the system, the middle of the range: elections
    // still happen, openraft's own timer breaks ties.
    let draw = getrandom::u64().map_or(spread_ms / 2, |n| n % spread_ms);
    low + Duration::from_millis(draw)
}

/// Runs the watchdog of `store` until the store stops.
pub(crate) fn spawn_watchdog(store: Store) -> tokio::task::JoinHandle<()> {
    let stop = store.stop_token();
    tokio::spawn(async move {
        let config = &store.inner.config;
        let (min, max) = config.election_timeout;
        let heartbeat = config.heartbeat;
        let spread = (max.saturating_sub(min) / 2).max(heartbeat);
        // Past the voters' lease by at least a heartbeat, so that the other
        // followers' leases (from the same last heartbeat) are over, and a
        // peer asked to take over the leadership (which campaigns every
        // heartbeat) is usually granted first.
        let first = || max + jitter(heartbeat, spread);
        let mut since = store.inner.contact.last();
        let mut wait = first();
        let mut vote = store.raft().metrics().borrow().vote;
        // One campaign per silence: the retries are openraft's.
        let mut campaigned = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(since + wait) => {}
            }
            let heard = store.inner.contact.last();
            if heard > since {
                since = heard;
                wait = first();
                vote = store.raft().metrics().borrow().vote;
                campaigned = false;
                continue;
            }
            // Another candidate's vote taken since the last look (granted,
            // or seen as higher): give its campaign a lease, as a leader's
            // message would.
            let now_vote = store.raft().metrics().borrow().vote;
            if now_vote != vote {
                vote = now_vote;
                if vote.leader_id().voted_for() != Some(store.id()) {
                    since = Instant::now();
                    wait = first();
                    continue;
                }
            }
            since = Instant::now();
            if !campaigned && may_campaign(&store) {
                campaigned = true;
                metrics::counter!("berth_store_election_watchdog_campaigns_total").increment(1);
                tracing::info!(peer = store.id(), "no leader heard for the lease; campaigning");
                store.campaign().await;
            }
            wait = first();
        }
    })
}

/// Whether this peer is a voter of several, not leading, and not handing
/// its leadership over.
fn may_campaign(store: &Store) -> bool {
    if !store.inner.config.campaign_when_leader_silent
        || store.inner.contact.paused.load(Ordering::Relaxed)
    {
        return false;
    }
    let metrics = store.raft().metrics().borrow().clone();
    if matches!(metrics.state, ServerState::Leader | ServerState::Learner | ServerState::Shutdown) {
        return false;
    }
    let membership = metrics.membership_config.membership();
    let voters: Vec<_> = membership.voter_ids().collect();
    voters.len() > 1 && voters.contains(&store.id())
}
