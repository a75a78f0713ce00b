//! The Deployment controller: rolls a Deployment's pods from one template
//! to the next through ReplicaSets, one per template (named by the
//! template's hash), either RollingUpdate — the new ReplicaSet grows and the
//! old ones shrink within maxSurge and maxUnavailable — or Recreate — every
//! old pod is gone before a new one starts. It keeps revisions (and drops
//! history beyond revisionHistoryLimit), rolls back on request, pauses,
//! spreads a scale in mid-rollout proportionally, and reports status with
//! the Available and Progressing conditions.

mod revisions;
mod rollout;
mod status;

pub use revisions::{POD_TEMPLATE_HASH, REVISION, ROLLBACK_TO};

use crate::claims::claim;
use crate::informers::{Caches, Informers};
use crate::pods::{self, controller_of, controller_reference};
use crate::runner::{Action, Reconciler};
use crate::Error;
use berth_client::EventRecorder;
use berth_client::{key, Api, Change, Client, DeleteParams, Index, WorkQueue};
use berth_proto::apps_v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use berth_proto::core_v1::Pod;
use berth_proto::labels::Selector;
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::{Resource, Time};
use rollout::Counted;
use std::sync::Arc;
use std::time::Duration;

pub const NAME: &str = "deployment";

pub struct DeploymentController {
    client: Client,
    caches: Caches,
    recorder: EventRecorder,
}

impl DeploymentController {
    pub fn new(
        client: &Client,
        informers: &mut Informers,
        recorder: EventRecorder,
        queue: &WorkQueue<String>,
    ) -> DeploymentController {
        let caches = informers.caches();
        {
            let queue = queue.clone();
            informers.deployments.on_change(move |c| queue.add(key(c.object().as_ref())));
        }
        {
            let (queue, caches) = (queue.clone(), caches.clone());
            informers.replica_sets.on_change(move |change| {
                if let Change::Updated { old, .. } = change {
                    if let Some(owner) = owning_deployment(&old.metadata) {
                        queue.add(owner);
                    }
                }
                let rs = change.object();
                match owning_deployment(&rs.metadata) {
                    Some(owner) => queue.add(owner),
                    None if controller_of(rs.metadata()).is_none() => {
                        for d in
                            caches.deployments.by_index(Index::Namespace, &rs.metadata().namespace)
                        {
                            let selector = Selector::from_label_selector(
                                d.spec.as_ref().and_then(|s| s.selector.as_ref()),
                            );
                            if selector.is_ok_and(|s| s.matches(&rs.metadata().labels)) {
                                queue.add(key(d.as_ref()));
                            }
                        }
                    }
                    None => {}
                }
            });
        }
        {
            // Pods becoming ready, or going, move a rollout on.
            let (queue, caches) = (queue.clone(), caches.clone());
            informers.pods.on_change(move |change| {
                let pod = change.object();
                let Some(rs_ref) =
                    controller_of(pod.metadata()).filter(|r| r.kind == ReplicaSet::KIND)
                else {
                    return;
                };
                let rs_key = format!("{}/{}", pod.metadata().namespace, rs_ref.name);
                if let Some(owner) =
                    caches.replica_sets.get(&rs_key).and_then(|rs| owning_deployment(&rs.metadata))
                {
                    queue.add(owner);
                }
            });
        }
        DeploymentController { client: client.clone(), caches, recorder }
    }
}

/// The key of the Deployment an object's controller reference names.
fn owning_deployment(meta: &Option<ObjectMeta>) -> Option<String> {
    let meta = meta.as_ref()?;
    let owner = controller_of(meta).filter(|r| r.kind == Deployment::KIND)?;
    Some(format!("{}/{}", meta.namespace, owner.name))
}

/// One pass over one Deployment: the object as last written by this pass
/// (each write moves its resourceVersion), and a Progressing note to
/// record with the status.
struct Pass {
    d: Deployment,
    note: Option<(&'static str, String)>,
}

impl Reconciler for DeploymentController {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, d_key: &str) -> Result<Action, Error> {
        let Some(d) = self.caches.deployments.get(d_key) else { return Ok(Action::AwaitChange) };
        let spec = d.spec.clone().unwrap_or_default();
        let selector = match Selector::from_label_selector(spec.selector.as_ref()) {
            Ok(s) if s.is_everything() => {
                self.recorder.warning(
                    d.as_ref(),
                    "SelectingAll",
                    "This deployment is selecting all pods. A non-empty selector is required."
                        .into(),
                );
                return Ok(Action::AwaitChange);
            }
            Ok(s) => s,
            Err(e) => {
                self.recorder.warning(d.as_ref(), "InvalidSelector", e.to_string());
                return Ok(Action::AwaitChange);
            }
        };
        if let Err(e) = rollout::fenceposts(&d) {
            // Nothing moves until a user fixes the strategy.
            self.recorder.warning(d.as_ref(), "InvalidStrategy", e);
            return Ok(Action::AwaitChange);
        }
        let candidates =
            self.caches.replica_sets.by_index(Index::Namespace, &d.metadata().namespace);
        let sets = claim(&self.client, d.as_ref(), &selector, candidates).await?;
        let mut pass = Pass { d: d.as_ref().clone(), note: None };
        if d.metadata().deletion_timestamp.is_some() {
            return self.sync_status(&mut pass, &sets, false).await;
        }
        if d.metadata().annotations.contains_key(ROLLBACK_TO) {
            return self.rollback(&pass.d, &sets).await;
        }
        self.note_pause(&mut pass);
        if spec.paused || self.is_scaling_event(&pass.d, &sets) {
            return self.scale_only(&mut pass, sets).await;
        }
        if rollout::is_rolling_update(&pass.d) {
            self.roll(&mut pass, sets).await
        } else {
            self.recreate(&mut pass, sets).await
        }
    }
}

impl DeploymentController {
    /// The pods of `rs` in the cache: active, available and ready counts.
    fn count<'a>(&self, rs: &'a ReplicaSet, min_ready: i32, now: Time) -> (Counted<'a>, i32) {
        let uid = &rs.metadata().uid;
        let pods: Vec<Arc<Pod>> = self
            .caches
            .pods
            .by_index(Index::Owner, uid)
            .into_iter()
            .filter(|p| {
                pods::is_active(p) && controller_of(p.metadata()).is_some_and(|r| &r.uid == uid)
            })
            .collect();
        let available =
            pods.iter().filter(|p| pods::is_available(p, min_ready, now)).count() as i32;
        let ready = pods.iter().filter(|p| pods::is_ready(p)).count() as i32;
        (Counted { rs, pods: pods.len() as i32, available }, ready)
    }

    fn counted<'a>(&self, d: &Deployment, sets: &'a [ReplicaSet]) -> (Vec<Counted<'a>>, i32) {
        let min_ready = d.spec.as_ref().map_or(0, |s| s.min_ready_seconds);
        let now = Time::now();
        let mut ready = 0;
        let counted = sets
            .iter()
            .map(|rs| {
                let (c, r) = self.count(rs, min_ready, now);
                ready += r;
                c
            })
            .collect();
        (counted, ready)
    }

    /// The ReplicaSet of the current template (the oldest, should there be
    /// two), and the others.
    fn split<'a>(
        d: &Deployment,
        sets: &'a [ReplicaSet],
    ) -> (Option<&'a ReplicaSet>, Vec<&'a ReplicaSet>) {
        let template = d.spec.as_ref().and_then(|s| s.template.clone()).unwrap_or_default();
        let mut sorted: Vec<&ReplicaSet> = sets.iter().collect();
        sorted.sort_by(|a, b| {
            (a.metadata().creation_timestamp, &a.metadata().name)
                .cmp(&(b.metadata().creation_timestamp, &b.metadata().name))
        });
        let new = sorted.iter().copied().find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| revisions::equal_ignoring_hash(t, &template))
        });
        let new_uid = new.map(|n| n.metadata().uid.as_str());
        let old =
            sorted.into_iter().filter(|rs| Some(rs.metadata().uid.as_str()) != new_uid).collect();
        (new, old)
    }

    /// A change of spec.replicas not yet spread over the active ReplicaSets.
    fn is_scaling_event(&self, d: &Deployment, sets: &[ReplicaSet]) -> bool {
        let want = rollout::replicas(d);
        sets.iter()
            .filter(|rs| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
            .filter_map(|rs| revisions::annotation_i32(rs, revisions::DESIRED_REPLICAS))
            .any(|desired| desired != want)
    }

    /// The ReplicaSet of the current template with its revision brought up
    /// to date, created (and sized within maxSurge) if `create` and missing.
    async fn new_replica_set(
        &self,
        pass: &mut Pass,
        sets: &[ReplicaSet],
        create: bool,
    ) -> Result<Option<ReplicaSet>, Error> {
        let (new, old) = Self::split(&pass.d, sets);
        let revision = revisions::max_revision(old.iter().copied()) + 1;
        let min_ready = pass.d.spec.as_ref().map_or(0, |s| s.min_ready_seconds);
        let rs_api: Api<ReplicaSet> = Api::namespaced(&self.client, &pass.d.metadata().namespace);
        let new = match new {
            Some(existing) => {
                let mut updated = existing.clone();
                let mut changed = revisions::set_revision(&mut updated, revision);
                let spec = updated.spec.get_or_insert_with(Default::default);
                if spec.min_ready_seconds != min_ready {
                    spec.min_ready_seconds = min_ready;
                    changed = true;
                }
                let rs = if changed { rs_api.update(&updated).await? } else { updated };
                if pass
                    .d
                    .status
                    .as_ref()
                    .and_then(|s| status::condition(s, status::PROGRESSING))
                    .is_none()
                {
                    pass.note = Some((
                        status::FOUND_NEW_RS,
                        format!("Found new replica set {}", rs.metadata().name),
                    ));
                }
                rs
            }
            None if !create => return Ok(None),
            None => match self.create_replica_set(pass, sets, revision).await? {
                Some(rs) => rs,
                None => return Ok(None),
            },
        };
        self.set_deployment_revision(pass, revisions::revision(&new)).await?;
        Ok(Some(new))
    }

    async fn create_replica_set(
        &self,
        pass: &mut Pass,
        sets: &[ReplicaSet],
        revision: i64,
    ) -> Result<Option<ReplicaSet>, Error> {
        let d = &pass.d;
        let spec = d.spec.clone().unwrap_or_default();
        let collision_count = d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = spec.template.clone().unwrap_or_default();
        let hash = revisions::template_hash(&template, collision_count);
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone().unwrap_or_default();
        selector.match_labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut labels = template.metadata.as_ref().map(|m| m.labels.clone()).unwrap_or_default();
        labels.insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut rs = ReplicaSet {
            metadata: Some(ObjectMeta {
                name: format!("{}-{}", d.metadata().name, hash),
                namespace: d.metadata().namespace.clone(),
                labels,
                owner_references: vec![controller_reference(d)],
                ..Default::default()
            }),
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector: Some(selector),
                template: Some(template.clone()),
            }),
            ..Default::default()
        };
        revisions::set_revision(&mut rs, revision);
        let (surge, _) = rollout::fenceposts(d).map_err(|e| Error::invalid(&key(d), e))?;
        let want = rollout::replicas(d);
        let size = {
            let (mut all, _) = self.counted(d, sets);
            let new = Counted { rs: &rs, pods: 0, available: 0 };
            all.push(new.clone());
            rollout::new_rs_replicas(d, &all, &new).map_err(|e| Error::invalid(&key(d), e))?
        };
        rs.spec.get_or_insert_with(Default::default).replicas = Some(size);
        revisions::set_replicas_annotations(&mut rs, want, want + surge);
        let api: Api<ReplicaSet> = Api::namespaced(&self.client, &d.metadata().namespace);
        match api.create(&rs).await {
            Ok(created) => {
                tracing::info!(deployment = %key(d), replicaset = %created.metadata().name, size, "created a new replica set");
                if size > 0 {
                    self.recorder.normal(
                        d,
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {} to {size}", created.metadata().name),
                    );
                }
                pass.note = Some((
                    status::NEW_RS_CREATED,
                    format!("Created new replica set {}", created.metadata().name),
                ));
                Ok(Some(created))
            }
            Err(e) if e.is_already_exists() => {
                let existing = api.get(&rs.metadata().name).await?;
                let ours =
                    controller_of(existing.metadata()).is_some_and(|r| r.uid == d.metadata().uid);
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| revisions::equal_ignoring_hash(t, &template));
                if ours && same {
                    // The cache had not shown it yet.
                    return Ok(Some(existing));
                }
                // Another template holds the name: hash again with a count.
                let mut bumped = d.clone();
                let status = bumped.status.get_or_insert_with(Default::default);
                status.collision_count = Some(collision_count.unwrap_or(0) + 1);
                Api::<Deployment>::namespaced(&self.client, &d.metadata().namespace)
                    .update_status(&bumped)
                    .await?;
                Err(Error::invalid(
                    &key(d),
                    format!(
                        "replica set name {} taken by another template; hashing again",
                        rs.metadata().name
                    ),
                ))
            }
            Err(e) => {
                self.recorder.warning(
                    d,
                    "FailedCreate",
                    format!("Failed to create new replica set: {e}"),
                );
                Err(e.into())
            }
        }
    }

    async fn set_deployment_revision(&self, pass: &mut Pass, revision: i64) -> Result<(), Error> {
        let value = revision.to_string();
        if pass.d.metadata().annotations.get(REVISION) == Some(&value) {
            return Ok(());
        }
        let mut updated = pass.d.clone();
        updated.metadata_mut().annotations.insert(REVISION.into(), value);
        pass.d = Api::<Deployment>::namespaced(&self.client, &pass.d.metadata().namespace)
            .update(&updated)
            .await?;
        Ok(())
    }

    /// Scales a ReplicaSet and records the Deployment's size on it.
    async fn scale(&self, d: &Deployment, rs: &ReplicaSet, size: i32) -> Result<bool, Error> {
        let (surge, _) = rollout::fenceposts(d).map_err(|e| Error::invalid(&key(d), e))?;
        let want = rollout::replicas(d);
        let mut updated = rs.clone();
        let from = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let annotated = revisions::set_replicas_annotations(&mut updated, want, want + surge);
        if from == size && !annotated {
            return Ok(false);
        }
        updated.spec.get_or_insert_with(Default::default).replicas = Some(size);
        Api::<ReplicaSet>::namespaced(&self.client, &rs.metadata().namespace)
            .update(&updated)
            .await?;
        if from != size {
            let direction = if size > from { "up" } else { "down" };
            tracing::info!(deployment = %key(d), replicaset = %rs.metadata().name, from, size, "scaled");
            self.recorder.normal(
                d,
                "ScalingReplicaSet",
                format!(
                    "Scaled {direction} replica set {} to {size} from {from}",
                    rs.metadata().name
                ),
            );
        }
        Ok(from != size)
    }

    /// One step of a rolling update: grow the new ReplicaSet, else shrink
    /// the old ones, else (when done) drop old history.
    async fn roll(&self, pass: &mut Pass, mut sets: Vec<ReplicaSet>) -> Result<Action, Error> {
        let new = self.new_replica_set(pass, &sets, true).await?;
        if let Some(new) = &new {
            replace(&mut sets, new.clone());
        }
        let d = pass.d.clone();
        let want = rollout::replicas(&d);
        let (all, _) = self.counted(&d, &sets);
        let new_uid = new.as_ref().map(|n| n.metadata().uid.clone());
        let is_new = |c: &Counted| Some(&c.rs.metadata().uid) == new_uid.as_ref();
        let new_c = all.iter().find(|c| is_new(c));
        let old: Vec<Counted> = all.iter().filter(|c| !is_new(c)).cloned().collect();
        if let Some(new_c) = new_c {
            let target = if new_c.spec() > want {
                want
            } else {
                rollout::new_rs_replicas(&d, &all, new_c)
                    .map_err(|e| Error::invalid(&key(&d), e))?
            };
            if self.scale(&d, new_c.rs, target).await? {
                return self.sync_status(pass, &sets, true).await;
            }
        }
        let plan = rollout::old_scale_down(&d, &all, &old, new_c)
            .map_err(|e| Error::invalid(&key(&d), e))?;
        for (name, size) in plan {
            if let Some(c) = old.iter().find(|c| c.name() == name) {
                self.scale(&d, c.rs, size).await?;
            }
        }
        self.sync_status(pass, &sets, true).await
    }

    /// Recreate: every old pod is gone before the new ReplicaSet grows.
    async fn recreate(&self, pass: &mut Pass, mut sets: Vec<ReplicaSet>) -> Result<Action, Error> {
        let d = pass.d.clone();
        let (new, old) = Self::split(&d, &sets);
        let new_uid = new.map(|n| n.metadata().uid.clone());
        let mut scaled = false;
        for rs in &old {
            if rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0 {
                scaled |= self.scale(&d, rs, 0).await?;
            }
        }
        if scaled {
            return self.sync_status(pass, &sets, true).await;
        }
        if self.old_pods_running(&old, new_uid.as_deref()) {
            // Their deletions will wake this Deployment.
            return self.sync_status(pass, &sets, true).await;
        }
        let Some(new) = self.new_replica_set(pass, &sets, true).await? else {
            return self.sync_status(pass, &sets, true).await;
        };
        replace(&mut sets, new.clone());
        self.scale(&pass.d.clone(), &new, rollout::replicas(&pass.d)).await?;
        self.sync_status(pass, &sets, true).await
    }

    /// Whether any pod of an old ReplicaSet may still run: one its status
    /// counts, one its controller has not yet caught up on, or one in the
    /// cache that has not finished (being deleted still counts).
    fn old_pods_running(&self, old: &[&ReplicaSet], new_uid: Option<&str>) -> bool {
        old.iter().filter(|rs| Some(rs.metadata().uid.as_str()) != new_uid).any(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            status.replicas > 0
                || status.observed_generation < rs.metadata().generation
                || self
                    .caches
                    .pods
                    .by_index(Index::Owner, &rs.metadata().uid)
                    .iter()
                    .any(|p| !pods::is_terminal(p))
        })
    }

    /// A paused Deployment, or one whose replicas changed: resize the
    /// ReplicaSets without rolling.
    async fn scale_only(
        &self,
        pass: &mut Pass,
        mut sets: Vec<ReplicaSet>,
    ) -> Result<Action, Error> {
        if let Some(new) = self.new_replica_set(pass, &sets, false).await? {
            replace(&mut sets, new);
        }
        let d = pass.d.clone();
        let want = rollout::replicas(&d);
        let (new, mut old) = Self::split(&d, &sets);
        let spec_of = |rs: &ReplicaSet| rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let active: Vec<&ReplicaSet> =
            new.into_iter().chain(old.iter().copied()).filter(|rs| spec_of(rs) > 0).collect();
        let invalid = |e: String| Error::invalid(&key(&d), e);
        if active.len() <= 1 {
            // One ReplicaSet holds every pod (or none does: the latest).
            old.sort_by(|a, b| {
                b.metadata().creation_timestamp.cmp(&a.metadata().creation_timestamp)
            });
            if let Some(rs) = active.first().copied().or(new).or(old.first().copied()) {
                self.scale(&d, rs, want).await?;
            }
        } else if let Some(new) = new.filter(|n| saturated(&d, n)) {
            // The new ReplicaSet has everything: the old ones go.
            for rs in active.into_iter().filter(|rs| rs.metadata().uid != new.metadata().uid) {
                self.scale(&d, rs, 0).await?;
            }
        } else if rollout::is_rolling_update(&d) {
            let (counted, _) = self.counted(&d, &sets);
            let active: Vec<(Counted, Option<i32>)> = counted
                .into_iter()
                .filter(|c| c.spec() > 0)
                .map(|c| {
                    let max = revisions::annotation_i32(c.rs, revisions::MAX_REPLICAS);
                    (c, max)
                })
                .collect();
            for (name, size) in rollout::proportional(&d, &active).map_err(invalid)? {
                if let Some((c, _)) = active.iter().find(|(c, _)| c.name() == name) {
                    self.scale(&d, c.rs, size).await?;
                }
            }
        }
        self.sync_status(pass, &sets, false).await
    }

    /// Notes a pause or resume in the Progressing condition.
    fn note_pause(&self, pass: &mut Pass) {
        let paused = pass.d.spec.as_ref().is_some_and(|s| s.paused);
        let status = pass.d.status.get_or_insert_with(Default::default);
        let reason = status::condition(status, status::PROGRESSING).map(|c| c.reason.clone());
        if paused && reason.as_deref() != Some(status::PAUSED) {
            status::set_condition(
                status,
                status::PROGRESSING,
                "Unknown",
                status::PAUSED,
                "Deployment is paused",
            );
        } else if !paused && reason.as_deref() == Some(status::PAUSED) {
            status::set_condition(
                status,
                status::PROGRESSING,
                "Unknown",
                status::RESUMED,
                "Deployment is resumed",
            );
        }
    }

    /// Writes the status; with `rollout`, also moves the Progressing
    /// condition and drops history once the rollout is complete.
    async fn sync_status(
        &self,
        pass: &mut Pass,
        sets: &[ReplicaSet],
        rollout_step: bool,
    ) -> Result<Action, Error> {
        let d = pass.d.clone();
        let (new, old) = Self::split(&d, sets);
        let (all, ready) = self.counted(&d, sets);
        let new_c = new.and_then(|n| all.iter().find(|c| c.rs.metadata().uid == n.metadata().uid));
        let before = d.status.clone().unwrap_or_default();
        let mut next = status::calculate(&d, &all, new_c, ready);
        let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds);
        let paused = d.spec.as_ref().is_some_and(|s| s.paused);
        let rs_name = new.map(|n| n.metadata().name.clone()).unwrap_or_default();
        if deadline.is_none() {
            status::remove_condition(&mut next, status::PROGRESSING);
        } else if rollout_step && !paused {
            let current = status::condition(&next, status::PROGRESSING).cloned();
            if current.as_ref().is_none_or(|c| c.reason != status::TIMED_OUT) {
                if status::complete(&d, &next) {
                    status::set_condition(
                        &mut next,
                        status::PROGRESSING,
                        "True",
                        status::NEW_RS_AVAILABLE,
                        &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
                    );
                } else if let Some((reason, message)) = pass.note.take() {
                    status::set_condition(&mut next, status::PROGRESSING, "True", reason, &message);
                } else if status::progressed(&before, &next) || current.is_none() {
                    status::set_condition(
                        &mut next,
                        status::PROGRESSING,
                        "True",
                        status::RS_UPDATED,
                        &format!("ReplicaSet \"{rs_name}\" is progressing."),
                    );
                    touch(&mut next);
                } else if status::deadline_left(&d, &next).is_some_and(|left| left <= 0) {
                    status::set_condition(
                        &mut next,
                        status::PROGRESSING,
                        "False",
                        status::TIMED_OUT,
                        &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                    );
                    self.recorder.warning(
                        &d,
                        status::TIMED_OUT,
                        format!("Deployment {} has timed out progressing.", d.metadata().name),
                    );
                }
            }
        }
        if status::complete(&d, &next) || paused {
            self.drop_history(&d, &old).await?;
        }
        if next != before {
            let api: Api<Deployment> = Api::namespaced(&self.client, &d.metadata().namespace);
            let mut updated = d.clone();
            updated.status = Some(next.clone());
            match api.update_status(&updated).await {
                Ok(written) => pass.d = written,
                Err(e) if e.is_not_found() => return Ok(Action::AwaitChange),
                Err(e) => return Err(e.into()),
            }
        }
        // Wake for what no event will announce: a deadline, or pods turning
        // available after minReadySeconds.
        let min_ready = d.spec.as_ref().map_or(0, |s| s.min_ready_seconds);
        let now = Time::now();
        let mut after: Option<i64> = status::deadline_left(&d, &next)
            .filter(|_| rollout_step && !paused)
            .map(|s| s.max(0) + 1);
        for rs in sets {
            for pod in self.caches.pods.by_index(Index::Owner, &rs.metadata().uid) {
                if let Some(s) = pods::seconds_until_available(&pod, min_ready, now) {
                    after = Some(after.map_or(s, |a| a.min(s)));
                }
            }
        }
        Ok(match after {
            Some(s) => Action::Requeue(Duration::from_secs(s.max(1) as u64)),
            None => Action::AwaitChange,
        })
    }

    async fn drop_history(&self, d: &Deployment, old: &[&ReplicaSet]) -> Result<(), Error> {
        let api: Api<ReplicaSet> = Api::namespaced(&self.client, &d.metadata().namespace);
        for rs in revisions::beyond_history(d, old) {
            tracing::info!(deployment = %key(d), replicaset = %rs.metadata().name, "dropping a revision beyond the history limit");
            match api.delete(&rs.metadata().name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Puts the template of the requested revision back into the spec; the
    /// rollout that follows is an ordinary one.
    async fn rollback(&self, d: &Deployment, sets: &[ReplicaSet]) -> Result<Action, Error> {
        let requested = d.metadata().annotations.get(ROLLBACK_TO).cloned().unwrap_or_default();
        let mut updated = d.clone();
        updated.metadata_mut().annotations.remove(ROLLBACK_TO);
        let target = match requested.trim().parse::<i64>() {
            Ok(0) => revisions::previous_revision(sets),
            Ok(r) if r > 0 => r,
            _ => {
                self.recorder.warning(
                    d,
                    "RollbackInvalid",
                    format!("{ROLLBACK_TO} must be a revision number, not {requested:?}"),
                );
                0
            }
        };
        let found = sets.iter().find(|rs| target > 0 && revisions::revision(rs) == target);
        match found.and_then(|rs| rs.spec.as_ref()?.template.as_ref()) {
            None => {
                self.recorder.warning(
                    d,
                    "RollbackRevisionNotFound",
                    format!("Unable to find revision {requested} to roll back to."),
                );
            }
            Some(template) => {
                let template = revisions::without_hash(template);
                let spec = updated.spec.get_or_insert_with(Default::default);
                if spec.template.as_ref() == Some(&template) {
                    self.recorder.normal(d, "RollbackTemplateUnchanged", format!("The rollback revision {target} contains the same template as the current deployment"));
                } else {
                    spec.template = Some(template);
                    self.recorder.normal(
                        d,
                        "DeploymentRollback",
                        format!(
                            "Rolled back deployment {} to revision {target}",
                            d.metadata().name
                        ),
                    );
                }
            }
        }
        Api::<Deployment>::namespaced(&self.client, &d.metadata().namespace)
            .update(&updated)
            .await?;
        Ok(Action::AwaitChange)
    }
}

/// Whether the new ReplicaSet alone holds every replica, all available.
fn saturated(d: &Deployment, rs: &ReplicaSet) -> bool {
    let want = rollout::replicas(d);
    revisions::annotation_i32(rs, revisions::DESIRED_REPLICAS) == Some(want)
        && rs.spec.as_ref().and_then(|s| s.replicas) == Some(want)
        && rs.status.as_ref().is_some_and(|s| s.available_replicas == want)
}

/// Moves the Progressing condition's update time: the rollout progressed,
/// which restarts the progress deadline.
fn touch(status: &mut berth_proto::apps_v1::DeploymentStatus) {
    if let Some(c) = status.conditions.iter_mut().find(|c| c.r#type == status::PROGRESSING) {
        c.last_update_time = Some(Time::now());
    }
}

/// Puts `rs` in place of the set with its uid, or adds it.
fn replace(sets: &mut Vec<ReplicaSet>, rs: ReplicaSet) {
    match sets.iter_mut().find(|s| s.metadata().uid == rs.metadata().uid) {
        Some(slot) => *slot = rs,
        None => sets.push(rs),
    }
}
