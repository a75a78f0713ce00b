//! When this peer may start an election: pre-vote, and a watchdog that
//! campaigns as soon as a silent leader's lease has run out.
//!
//! Pre-vote (Raft thesis 9.6; openraft 0.9 has none): a peer that has heard
//! no leader for `election_timeout.0` asks the other voters whether they
//! would take part in an election (`PreVote`). A voter says yes when it has
//! heard no leader for as long either, is no leader itself, and the
//! asker's log is at least as long as its own. Only with yes from a
//! majority (itself included, in every configuration of a joint one) may
//! openraft's election timer run on this peer (`runtime_config().elect`)
//! and the watchdog campaign; otherwise the term stays where it is. A peer
//! cut off from the others, or losing only the leader's messages, thus no
//! longer raises its term alone and ends the healthy leader's term when it
//! returns.
//!
//! The watchdog: openraft 0.9 has a follower whose vote is committed
//! campaign only after the leader lease (`election_timeout_max` since the
//! last message from the leader) plus its election timeout, which is drawn
//! once per node when it starts; and a voter refuses vote requests while its
//! own lease runs. So after a leader dies a follower waits up to twice
//! `election_timeout_max`, a follower that learned of a longer log waits two
//! more, and two followers whose fixed timeouts are close can split the vote
//! round after round. The watchdog campaigns (`trigger().elect()`) once no
//! leader has been heard for the lease plus a short jitter, drawn afresh for
//! every attempt: the moment the other voters' leases have run out too, so
//! they can grant the vote. It campaigns once until a leader is heard again:
//! openraft's own timer, which backs off a peer that has seen a longer log
//! than its own, stays in charge of retries, so that peers with shorter logs
//! do not keep raising the term under the one that can win. A vote taken
//! for another candidate counts like a leader's message. Neither runs on a
//! leader, a learner, a single voter (whose openraft timer is always on) or
//! a leader handing its leadership over. Raft's safety does not depend on
//! when elections start.

use crate::network::{decode, encode};
use crate::store::Store;
use crate::types::NodeId;
use berth_proto::raft_v1::RaftPayload;
use openraft::{LogId, ServerState};
use serde::{Deserialize, Serialize};
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

/// A pre-vote request: the asker's last log entry.
#[derive(Serialize, Deserialize)]
pub(crate) struct PreVote {
    last_log_id: Option<LogId<NodeId>>,
}

impl Store {
    /// This voter's answer to a pre-vote: yes when it has heard no leader
    /// for `election_timeout.0`, is none itself, and `request`'s log is at
    /// least as long as its own.
    pub(crate) fn grant_pre_vote(&self, request: &RaftPayload) -> Result<RaftPayload, String> {
        let PreVote { last_log_id } = decode(request)?;
        let (min, _) = self.inner.config.election_timeout;
        let leading = self.raft().metrics().borrow().state == ServerState::Leader;
        let silent = self.inner.contact.last().elapsed() >= min;
        let mine = self.raft().data_metrics().borrow().last_log;
        // Log ids of one term share their leader, so `>=` is total here;
        // one that does not compare is refused.
        let granted = !leading && silent && last_log_id >= mine;
        encode(&granted)
    }
}

/// Asks every other voter for a pre-vote; whether a majority of every
/// configuration (this peer's own yes included) said yes.
async fn pre_vote(store: &Store, timeout: Duration) -> bool {
    let metrics = store.raft().metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let Ok(payload) =
        encode(&PreVote { last_log_id: store.raft().data_metrics().borrow().last_log })
    else {
        return false;
    };
    let me = store.id();
    let peers = &store.inner.peers;
    let asks = membership.voter_ids().filter(|id| *id != me).map(|id| {
        let addr = membership.get_node(&id).map(|n| n.addr.clone()).unwrap_or_default();
        let payload = payload.clone();
        async move {
            if !peers.faults.pass(id).await {
                return (id, false);
            }
            let Some(mut client) = peers.client(id, &addr) else { return (id, false) };
            let mut request = tonic::Request::new(payload);
            request.set_timeout(timeout);
            let call = tokio::time::timeout(timeout, client.pre_vote(request));
            let granted = match call.await {
                Ok(Ok(reply)) => decode::<bool>(reply.get_ref()).unwrap_or(false),
                _ => false,
            };
            (id, granted)
        }
    });
    let enough = |yes: &[NodeId]| {
        membership.get_joint_config().iter().all(|config| {
            let granted = config.iter().filter(|id| yes.contains(id)).count();
            granted * 2 > config.len()
        })
    };
    // Done at the first majority: a peer that does not answer (cut off)
    // holds nobody up for the whole timeout.
    let mut yes = vec![me];
    let mut answers: futures::stream::FuturesUnordered<_> = asks.collect();
    while !enough(&yes) {
        match futures::StreamExt::next(&mut answers).await {
            Some((id, true)) => yes.push(id),
            Some((_, false)) => {}
            None => return false,
        }
    }
    true
}

/// A uniformly random duration in `[low, low + spread)`.
fn jitter(low: Duration, spread: Duration) -> Duration {
    let spread_ms = spread.as_millis().max(1) as u64;
    // Without randomness from the system, the middle of the range: elections
    // still happen, openraft's own timer breaks ties.
    let draw = getrandom::u64().map_or(spread_ms / 2, |n| n % spread_ms);
    low + Duration::from_millis(draw)
}

/// Where this peer stands for elections.
enum Standing {
    /// A voter of several, not leading: elections wait for a pre-vote.
    Follower,
    /// Leading, or the only voter: openraft's timer as it is.
    Free,
    /// A learner, stopped, or handing its leadership over: hands off.
    Aside,
}

fn standing(store: &Store) -> Standing {
    if store.inner.contact.paused.load(Ordering::Relaxed) {
        return Standing::Aside;
    }
    let metrics = store.raft().metrics().borrow().clone();
    match metrics.state {
        ServerState::Learner | ServerState::Shutdown => return Standing::Aside,
        ServerState::Leader => return Standing::Free,
        ServerState::Follower | ServerState::Candidate => {}
    }
    let membership = metrics.membership_config.membership();
    let voters: Vec<_> = membership.voter_ids().collect();
    match (voters.contains(&store.id()), voters.len()) {
        (false, _) => Standing::Aside,
        (true, 1) => Standing::Free,
        (true, _) => Standing::Follower,
    }
}

/// Runs the pre-vote gate and the watchdog of `store` until it stops.
pub(crate) fn spawn_watchdog(store: Store) -> tokio::task::JoinHandle<()> {
    let stop = store.stop_token();
    tokio::spawn(async move {
        let config = &store.inner.config;
        let (min, max) = config.election_timeout;
        let heartbeat = config.heartbeat;
        // Long enough for a loaded peer to answer; a round ends at the
        // first majority, so a cut-off peer costs nothing.
        let ask_within = (min / 2).max(heartbeat);
        let spread = (max.saturating_sub(min) / 2).max(heartbeat);
        // Past the voters' lease by at least a heartbeat, so that the other
        // followers' leases (from the same last heartbeat) are over.
        let first = || max + jitter(heartbeat, spread);
        let elect = |on: bool| store.raft().runtime_config().elect(on);
        let mut since = store.inner.contact.last();
        let mut wait = first();
        let mut vote = store.raft().metrics().borrow().vote;
        // One campaign per silence: the retries are openraft's.
        let mut campaigned = false;
        // When a majority last said yes to a pre-vote.
        let mut granted_at: Option<Instant> = None;
        let armed = |campaigned: bool| config.campaign_when_leader_silent && !campaigned;
        let mut tick = tokio::time::interval(heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Pre-votes are asked on the heartbeat tick; the campaign keeps
            // its own jittered moment, so that two followers of a dead
            // leader do not campaign in the same tick and split the vote.
            let campaign_at = since + wait;
            let due = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => false,
                _ = tokio::time::sleep_until(campaign_at), if armed(campaigned) => true,
            };
            match standing(&store) {
                Standing::Follower => {}
                other => {
                    if let Standing::Free = other {
                        elect(true);
                    }
                    // Leading or aside counts as contact: a peer that
                    // becomes a follower starts its wait afresh.
                    since = Instant::now();
                    wait = first();
                    campaigned = false;
                    continue;
                }
            }
            let heard = store.inner.contact.last();
            if heard > since {
                since = heard;
                wait = first();
                campaigned = false;
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
                }
            }
            let silent = since.elapsed();
            if silent < min {
                elect(false);
                granted_at = None;
                continue;
            }
            // A yes stays good for `min`: the campaign checks below that no
            // leader or candidate has been heard of since.
            let fresh = granted_at.is_some_and(|at| at.elapsed() < min);
            if !due || !fresh {
                // Asked every tick while silent (a refused peer is asked
                // again), and at the campaign's moment unless a yes is fresh.
                let may = pre_vote(&store, ask_within).await;
                elect(may);
                granted_at = may.then(Instant::now);
                if !may {
                    metrics::counter!("berth_store_pre_votes_refused_total").increment(1);
                }
            }
            let may = granted_at.is_some();
            if !may && armed(campaigned) && silent >= wait {
                // Not now: look again after a fresh jitter, not sooner than a
                // heartbeat.
                wait = silent + jitter(heartbeat, spread);
            }
            // The pre-vote took a moment: a leader heard or a vote given
            // meanwhile (another candidate won) calls the campaign off.
            let still =
                store.inner.contact.last() <= since && store.raft().metrics().borrow().vote == vote;
            if may && still && armed(campaigned) && silent >= wait {
                campaigned = true;
                metrics::counter!("berth_store_election_watchdog_campaigns_total").increment(1);
                tracing::info!(peer = store.id(), "no leader heard for the lease; campaigning");
                store.campaign().await;
                since = Instant::now();
                wait = first();
            }
        }
    })
}
