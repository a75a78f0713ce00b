//! The ReplicaSet controller: keeps exactly spec.replicas active pods that
//! match a ReplicaSet's selector and are controlled by it, and reports how
//! many exist, are ready and are available.
//!
//! It adopts orphan pods its selector matches and releases pods that stop
//! matching (their controller reference is the claim). Expectations keep a
//! stale cache from making it create or delete the same replicas twice.

use crate::claims;
use crate::expectations::Expectations;
use crate::informers::{Caches, Informers};
use crate::pods::{self, controller_of, deletion_order, is_active};
use crate::runner::{Action, Reconciler};
use crate::Error;
use berth_client::EventRecorder;
use berth_client::{key, Api, Change, Client, DeleteParams, Index, WorkQueue};
use berth_proto::apps_v1::{ReplicaSet, ReplicaSetStatus};
use berth_proto::core_v1::Pod;
use berth_proto::labels::Selector;
use berth_proto::{Resource, Time};
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "replicaset";

/// At most this many pods are created or deleted by one reconcile, so one
/// huge ReplicaSet cannot starve the others (Kubernetes' burstReplicas).
const BURST_REPLICAS: usize = 500;

pub struct ReplicaSetController {
    client: Client,
    caches: Caches,
    expectations: Arc<Expectations>,
    recorder: EventRecorder,
}

impl ReplicaSetController {
    /// The controller, with its handlers registered on `informers`; they
    /// queue ReplicaSet keys on `queue`.
    pub fn new(
        client: &Client,
        informers: &mut Informers,
        recorder: EventRecorder,
        queue: &WorkQueue<String>,
    ) -> ReplicaSetController {
        let caches = informers.caches();
        let expectations = Arc::new(Expectations::default());
        {
            let (queue, expectations) = (queue.clone(), expectations.clone());
            informers.replica_sets.on_change(move |change| {
                let rs_key = key(change.object().as_ref());
                if let Change::Deleted(_) = change {
                    expectations.forget(&rs_key);
                }
                queue.add(rs_key);
            });
        }
        {
            let (queue, expectations, caches) =
                (queue.clone(), expectations.clone(), caches.clone());
            informers.pods.on_change(move |change| {
                on_pod_change(change, &caches, &expectations, &queue);
            });
        }
        ReplicaSetController { client: client.clone(), caches, expectations, recorder }
    }
}

/// The key of the ReplicaSet that controls `pod`, if it is one this cache
/// holds (same uid).
fn owning_replica_set(caches: &Caches, pod: &Pod) -> Option<String> {
    let meta = pod.metadata();
    let owner = controller_of(meta).filter(|r| r.kind == ReplicaSet::KIND)?;
    let rs_key = format!("{}/{}", meta.namespace, owner.name);
    let rs = caches.replica_sets.get(&rs_key)?;
    (rs.metadata().uid == owner.uid).then_some(rs_key)
}

/// Every ReplicaSet in the pod's namespace whose selector matches it: who
/// may adopt an orphan.
fn matching_replica_sets(caches: &Caches, pod: &Pod) -> Vec<String> {
    let meta = pod.metadata();
    caches
        .replica_sets
        .by_index(Index::Namespace, &meta.namespace)
        .into_iter()
        .filter(|rs| {
            Selector::from_label_selector(rs.spec.as_ref().and_then(|s| s.selector.as_ref()))
                .is_ok_and(|s| s.matches(&meta.labels))
        })
        .map(|rs| key(rs.as_ref()))
        .collect()
}

fn on_pod_change(
    change: &Change<Pod>,
    caches: &Caches,
    expectations: &Expectations,
    queue: &WorkQueue<String>,
) {
    let pod = change.object();
    let pod_key = key(pod.as_ref());
    let owner = owning_replica_set(caches, pod);
    match change {
        Change::Added(_) => match owner {
            Some(rs_key) => {
                if pod.metadata().deletion_timestamp.is_some() {
                    expectations.deletion_observed(&rs_key, &pod_key);
                } else {
                    expectations.creation_observed(&rs_key);
                }
                queue.add(rs_key);
            }
            None if controller_of(pod.metadata()).is_none() => {
                matching_replica_sets(caches, pod).into_iter().for_each(|k| queue.add(k));
            }
            None => {}
        },
        Change::Updated { old, new } => {
            if let Some(rs_key) = &owner {
                if new.metadata().deletion_timestamp.is_some()
                    && old.metadata().deletion_timestamp.is_none()
                {
                    expectations.deletion_observed(rs_key, &pod_key);
                }
            }
            // The old controller may have lost it (labels or references
            // changed); the new one, or a matching ReplicaSet, may gain it.
            if let Some(old_owner) = owning_replica_set(caches, old) {
                if owner.as_ref() != Some(&old_owner) {
                    queue.add(old_owner);
                }
            }
            match owner {
                Some(rs_key) => queue.add(rs_key),
                None if controller_of(new.metadata()).is_none() => {
                    matching_replica_sets(caches, new).into_iter().for_each(|k| queue.add(k));
                }
                None => {}
            }
        }
        Change::Deleted(_) => {
            if let Some(rs_key) = owner {
                expectations.deletion_observed(&rs_key, &pod_key);
                queue.add(rs_key);
            }
        }
        Change::Resync(_) => {
            if let Some(rs_key) = owner {
                queue.add(rs_key);
            }
        }
    }
}

impl Reconciler for ReplicaSetController {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, rs_key: &str) -> Result<Action, Error> {
        let Some(rs) = self.caches.replica_sets.get(rs_key) else {
            self.expectations.forget(rs_key);
            return Ok(Action::AwaitChange);
        };
        let spec = rs.spec.clone().unwrap_or_default();
        let selector = match Selector::from_label_selector(spec.selector.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                self.recorder.warning(rs.as_ref(), "InvalidSelector", e.to_string());
                return Ok(Action::AwaitChange);
            }
        };
        // Decide before reading the pods: an expectation met by an event
        // that lands in between is then only counted on the next pass.
        let in_sync = self.expectations.satisfied(rs_key);
        let claimed = self.claim_pods(&rs, &selector).await?;
        let managed = match (in_sync, rs.metadata().deletion_timestamp.is_none()) {
            (true, true) => self.manage_replicas(&rs, rs_key, &claimed).await,
            _ => Ok(()),
        };
        let now = Time::now();
        self.update_status(&rs, &claimed, now).await?;
        managed?;
        // A ready pod becomes available after minReadySeconds with no event
        // to say so: look again then.
        let next = claimed
            .iter()
            .filter_map(|p| pods::seconds_until_available(p, spec.min_ready_seconds, now))
            .min();
        Ok(match next {
            Some(secs) => Action::Requeue(Duration::from_secs(secs as u64)),
            None => Action::AwaitChange,
        })
    }
}

impl ReplicaSetController {
    /// The active pods this ReplicaSet controls once it has adopted the
    /// matching orphans and released the pods that no longer match.
    async fn claim_pods(&self, rs: &ReplicaSet, selector: &Selector) -> Result<Vec<Pod>, Error> {
        let candidates: Vec<Arc<Pod>> = self
            .caches
            .pods
            .by_index(Index::Namespace, &rs.metadata().namespace)
            .into_iter()
            .filter(|p| is_active(p))
            .collect();
        claims::claim(&self.client, rs, selector, candidates).await
    }

    /// Creates or deletes pods until `pods` would be spec.replicas long.
    async fn manage_replicas(
        &self,
        rs: &ReplicaSet,
        rs_key: &str,
        pods: &[Pod],
    ) -> Result<(), Error> {
        let spec = rs.spec.clone().unwrap_or_default();
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        if pods.len() < want {
            let n = (want - pods.len()).min(BURST_REPLICAS);
            let template = spec.template.unwrap_or_default();
            self.expectations.expect_creations(rs_key, n);
            let api: Api<Pod> = Api::namespaced(&self.client, &rs.metadata().namespace);
            let created = slow_start(n, |_| {
                let (api, new_pod) = (&api, pods::pod_from_template(&template, rs));
                async move {
                    match api.create(&new_pod).await {
                        // A retry of a create whose answer was lost: the
                        // random name makes it this create's own pod.
                        Err(e) if e.is_already_exists() => Ok(new_pod),
                        other => other,
                    }
                }
            })
            .await;
            for pod in &created.done {
                self.recorder.normal(
                    rs,
                    "SuccessfulCreate",
                    format!("Created pod: {}", pod.metadata().name),
                );
            }
            // What failed or was never tried will not show up in the cache.
            for _ in 0..(n - created.done.len()) {
                self.expectations.creation_observed(rs_key);
            }
            if let Some(e) = created.error {
                self.recorder.warning(rs, "FailedCreate", format!("Error creating: {e}"));
                return Err(e.into());
            }
        } else if pods.len() > want {
            let n = (pods.len() - want).min(BURST_REPLICAS);
            let mut ranked: Vec<&Pod> = pods.iter().collect();
            ranked.sort_by(|a, b| deletion_order(a, b));
            let victims = &ranked[..n];
            self.expectations.expect_deletions(rs_key, victims.iter().map(|p| key(*p)));
            let api: Api<Pod> = Api::namespaced(&self.client, &rs.metadata().namespace);
            let deletes =
                victims.iter().map(|pod| {
                    let api = &api;
                    async move {
                        (pod, api.delete(&pod.metadata().name, &DeleteParams::default()).await)
                    }
                });
            let mut failure = None;
            for (pod, result) in futures::future::join_all(deletes).await {
                match result {
                    Ok(_) => self.recorder.normal(
                        rs,
                        "SuccessfulDelete",
                        format!("Deleted pod: {}", pod.metadata().name),
                    ),
                    Err(e) => {
                        self.expectations.deletion_observed(rs_key, &key(*pod));
                        if !e.is_not_found() {
                            self.recorder.warning(
                                rs,
                                "FailedDelete",
                                format!("Error deleting: {e}"),
                            );
                            failure = Some(e);
                        }
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn update_status(&self, rs: &ReplicaSet, pods: &[Pod], now: Time) -> Result<(), Error> {
        let spec = rs.spec.clone().unwrap_or_default();
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .map(|m| m.labels.clone())
            .unwrap_or_default();
        let current = rs.status.clone().unwrap_or_default();
        let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
        let status = ReplicaSetStatus {
            replicas: pods.len() as i32,
            fully_labeled_replicas: count(&|p| {
                template_labels.iter().all(|(k, v)| p.metadata().labels.get(k) == Some(v))
            }),
            ready_replicas: count(&pods::is_ready),
            available_replicas: count(&|p| pods::is_available(p, spec.min_ready_seconds, now)),
            observed_generation: rs.metadata().generation,
            conditions: current.conditions.clone(),
        };
        if status == current {
            return Ok(());
        }
        let api: Api<ReplicaSet> = Api::namespaced(&self.client, &rs.metadata().namespace);
        let mut updated = rs.clone();
        updated.status = Some(status.clone());
        match api.update_status(&updated).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_conflict() => {
                // Someone changed the spec or metadata meanwhile; the pods
                // counted are still what exists, so write them on top.
                let mut live = api.get(&rs.metadata().name).await?;
                if live.metadata().uid != rs.metadata().uid {
                    return Ok(());
                }
                let mut status = status;
                status.observed_generation =
                    status.observed_generation.min(live.metadata().generation);
                live.status = Some(status);
                api.update_status(&live).await?;
                Ok(())
            }
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What a batch of creates achieved.
pub(crate) struct Created<T> {
    pub done: Vec<T>,
    pub error: Option<berth_client::Error>,
}

/// Runs `n` creates in batches of 1, 2, 4, ...: when the API refuses them
/// (a quota, a terminating namespace) only the first few are sent, not
/// hundreds. Stops after the first batch with a failure.
pub(crate) async fn slow_start<T, F, Fut>(n: usize, create: F) -> Created<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<T, berth_client::Error>>,
{
    let mut created = Created { done: Vec::new(), error: None };
    let mut batch = 1;
    let mut started = 0;
    while started < n {
        let size = batch.min(n - started);
        let results = futures::future::join_all((started..started + size).map(&create)).await;
        started += size;
        for result in results {
            match result {
                Ok(t) => created.done.push(t),
                Err(e) => created.error = Some(e),
            }
        }
        if created.error.is_some() {
            break;
        }
        batch *= 2;
    }
    created
}
