//! Leader election on a Lease, fenced.
//!
//! Candidates race to hold a `coordination.k8s.io/v1` Lease; the holder
//! renews it, the others take it over only after they have seen it
//! unchanged for a whole lease duration (measured on their own clock, so
//! clocks need not agree). Whoever takes the Lease gets a [`FenceToken`]: the
//! Lease and the revision of the write that took it. Writes sent through
//! [`Client::fenced`](crate::Client::fenced) carry it, and the API server
//! refuses them once anyone else has taken the Lease — a leader that was
//! paused or cut off cannot write after its successor started.

use crate::api::Api;
use crate::error::Error;
use crate::Client;
use berth_proto::coordination_v1::{Lease, LeaseSpec};
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::{MicroTime, Resource};
use std::fmt;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Proof of leadership: `<namespace>/<name>/<revision>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FenceToken {
    pub namespace: String,
    pub name: String,
    /// The revision of the write that made this candidate the holder.
    pub revision: i64,
}

impl fmt::Display for FenceToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.name, self.revision)
    }
}

impl std::str::FromStr for FenceToken {
    type Err = Error;

    fn from_str(text: &str) -> Result<FenceToken, Error> {
        let bad = || Error::InvalidFence(text.to_string());
        let mut parts = text.splitn(3, '/');
        let (Some(namespace), Some(name), Some(revision)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let revision: i64 = revision.parse().ok().filter(|r| *r > 0).ok_or_else(bad)?;
        let header_safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !header_safe(namespace) || !header_safe(name) {
            return Err(bad());
        }
        Ok(FenceToken { namespace: namespace.into(), name: name.into(), revision })
    }
}

/// Timing of an election, as Kubernetes' leader election defines it.
#[derive(Clone, Debug)]
pub struct ElectionTiming {
    /// How long a Lease stays held without renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down (shorter than
    /// the lease duration, so it stops before anyone may take over).
    pub renew_deadline: Duration,
    /// How often candidates try to take, and the leader to renew.
    pub retry_period: Duration,
}

impl Default for ElectionTiming {
    fn default() -> ElectionTiming {
        ElectionTiming {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// One candidate in the election for one Lease.
pub struct LeaderElector {
    leases: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: ElectionTiming,
    leading: watch::Sender<Option<FenceToken>>,
}

/// What a candidate last saw of someone else's Lease, and when.
struct Observed {
    resource_version: String,
    at: Instant,
}

impl LeaderElector {
    pub fn new(
        client: &Client,
        namespace: &str,
        name: &str,
        identity: &str,
        timing: ElectionTiming,
    ) -> LeaderElector {
        LeaderElector {
            leases: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            timing,
            leading: watch::channel(None).0,
        }
    }

    /// The token while this candidate leads, None otherwise; it changes the
    /// moment leadership is won or lost.
    pub fn subscribe(&self) -> watch::Receiver<Option<FenceToken>> {
        self.leading.subscribe()
    }

    /// Campaigns until `stop`, then gives the Lease up if it holds it so a
    /// successor need not wait out the lease duration.
    pub async fn run(&self, stop: CancellationToken) {
        let mut observed: Option<Observed> = None;
        let mut last_renewal = Instant::now();
        loop {
            let leading = self.leading.borrow().is_some();
            // A leader must know it lost before its renew deadline, even if
            // the API hangs; a candidate need not wait longer than a lease.
            let budget = if leading {
                self.timing.renew_deadline.saturating_sub(last_renewal.elapsed())
            } else {
                self.timing.lease_duration
            };
            let round = tokio::time::timeout(budget, self.try_acquire_or_renew(&mut observed));
            let outcome = round.await.unwrap_or_else(|_| {
                Err(Error::from(tonic::Status::deadline_exceeded(
                    "the lease could not be renewed within the renew deadline",
                )))
            });
            match outcome {
                Ok(Some(token)) => {
                    last_renewal = Instant::now();
                    if !leading {
                        tracing::info!(lease = %self.name, identity = %self.identity, %token, "became leader");
                        metrics::counter!("berth_client_leader_transitions_total").increment(1);
                    }
                    self.leading.send_if_modified(|t| {
                        let changed = t.as_ref() != Some(&token);
                        *t = Some(token);
                        changed
                    });
                }
                Ok(None) => self.step_down("another candidate holds the lease"),
                Err(e) if leading && last_renewal.elapsed() < self.timing.renew_deadline => {
                    tracing::warn!(lease = %self.name, error = %e, "could not renew the lease; retrying");
                }
                Err(e) => {
                    self.step_down(&format!("could not renew the lease: {e}"));
                }
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(crate::client::jitter(self.timing.retry_period)) => {}
            }
        }
        if self.leading.borrow().is_some() {
            // Bounded: with the API gone, the lease simply lapses.
            let _ = tokio::time::timeout(self.timing.renew_deadline, self.release()).await;
        }
        self.step_down("stopped");
    }

    fn step_down(&self, why: &str) {
        let was = self.leading.send_replace(None);
        if was.is_some() {
            tracing::warn!(lease = %self.name, identity = %self.identity, why, "stopped leading");
        }
    }

    /// One round: Some(token) when this candidate holds the Lease after it.
    async fn try_acquire_or_renew(
        &self,
        observed: &mut Option<Observed>,
    ) -> Result<Option<FenceToken>, Error> {
        let now = MicroTime::now();
        let duration = self.timing.lease_duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: Some(ObjectMeta {
                    name: self.name.clone(),
                    namespace: self.namespace.clone(),
                    ..Default::default()
                }),
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                }),
                ..Default::default()
            };
            return match self.leases.create(&lease).await {
                Ok(created) => Ok(Some(self.token(&created)?)),
                Err(e) if e.is_already_exists() => Ok(None),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        if holder == self.identity {
            // Renewal: the holder does not change, so the token stays the
            // one from the write that took the Lease.
            let Some(token) = self.leading.borrow().clone() else {
                // Held under this identity by an earlier run, or before this
                // candidate stepped down: the fence only moves when the
                // holder changes, so empty it first, then take it anew —
                // which also revokes every token handed out before.
                spec.holder_identity = None;
                let released = match self.leases.update(&lease).await {
                    Ok(released) => released,
                    Err(e) if e.is_conflict() => return Ok(None),
                    Err(e) => return Err(e),
                };
                return self.take(released, now, duration).await;
            };
            spec.renew_time = Some(now);
            spec.lease_duration_seconds = Some(duration);
            return match self.leases.update(&lease).await {
                Ok(_) => Ok(Some(token)),
                Err(e) if e.is_conflict() => Ok(None),
                Err(e) => Err(e),
            };
        }
        let held_for =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(duration).max(1) as u64);
        let version = lease.metadata().resource_version.clone();
        let expired = holder.is_empty()
            || match observed {
                Some(o) if o.resource_version == version => o.at.elapsed() >= held_for,
                _ => {
                    *observed = Some(Observed { resource_version: version, at: Instant::now() });
                    false
                }
            };
        if !expired {
            return Ok(None);
        }
        self.take(lease, now, duration).await
    }

    /// Takes over `lease` (conditioned on the version read).
    async fn take(
        &self,
        mut lease: Lease,
        now: MicroTime,
        duration: i32,
    ) -> Result<Option<FenceToken>, Error> {
        let spec = lease.spec.get_or_insert_with(Default::default);
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(duration);
        spec.acquire_time = Some(now);
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        match self.leases.update(&lease).await {
            Ok(taken) => Ok(Some(self.token(&taken)?)),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn token(&self, lease: &Lease) -> Result<FenceToken, Error> {
        let revision = lease.metadata().resource_version.parse().map_err(|_| {
            Error::InvalidFence(format!(
                "{}/{}/{}",
                self.namespace,
                self.name,
                lease.metadata().resource_version
            ))
        })?;
        Ok(FenceToken { namespace: self.namespace.clone(), name: self.name.clone(), revision })
    }

    /// Empties the holder so the next candidate takes over at once; this
    /// also revokes the token, as the holder changes.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.leases.get_opt(&self.name).await else { return };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        if let Err(e) = self.leases.update(&lease).await {
            tracing::warn!(lease = %self.name, error = %e, "could not release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_as_written() {
        let token: FenceToken = "kube-system/berth-scheduler/42".parse().unwrap();
        assert_eq!(token.revision, 42);
        assert_eq!(token.to_string(), "kube-system/berth-scheduler/42");
    }

    #[test]
    fn a_malformed_token_is_refused() {
        for bad in ["", "a/b", "a/b/0", "a/b/x", "/b/3", "a b/c/3"] {
            assert!(bad.parse::<FenceToken>().is_err(), "{bad:?} was accepted");
        }
    }
}
