//! The garbage collector: follows ownerReferences between pods,
//! ReplicaSets and Deployments, and
//! - deletes dependents whose owners are all gone (background cascade);
//! - for an owner deleted in the foreground (the `foregroundDeletion`
//!   finalizer), deletes its dependents and removes the finalizer once no
//!   dependent that blocks owner deletion is left, so the owner goes last;
//! - for an owner deleted with the `orphan` finalizer, removes its
//!   references from the dependents, then the finalizer.
//!
//! Queue keys are `Kind/namespace/name`. An owner missing from the cache is
//! looked up live before anything is deleted: a cache that has not yet seen
//! a new owner must not cost its dependents their lives.

use crate::informers::{Caches, Informers};
use crate::runner::{Action, Reconciler};
use crate::Error;
use berth_client::{Api, ApiResource, Cache, Change, Client, DeleteParams, Index, WorkQueue};
use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::core_v1::Pod;
use berth_proto::meta_v1::{ObjectMeta, OwnerReference};
use berth_proto::Resource;
use std::time::Duration;

pub const NAME: &str = "garbagecollector";

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// An owner waiting on its dependents is looked at again this often even
/// without news, in case a dependent's deletion event was missed.
const FOREGROUND_RECHECK: Duration = Duration::from_secs(5);

/// The kinds the collector knows, as owners and as dependents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Pod,
    ReplicaSet,
    Deployment,
}

impl Kind {
    fn parse(kind: &str) -> Option<Kind> {
        match kind {
            "Pod" => Some(Kind::Pod),
            "ReplicaSet" => Some(Kind::ReplicaSet),
            "Deployment" => Some(Kind::Deployment),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Kind::Pod => Pod::KIND,
            Kind::ReplicaSet => ReplicaSet::KIND,
            Kind::Deployment => Deployment::KIND,
        }
    }
}

/// One object in the graph: its kind and metadata.
#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    meta: ObjectMeta,
}

impl Node {
    fn key(&self) -> String {
        item_key(self.kind, &self.meta.namespace, &self.meta.name)
    }

    fn has_finalizer(&self, name: &str) -> bool {
        self.meta.finalizers.iter().any(|f| f == name)
    }
}

fn item_key(kind: Kind, namespace: &str, name: &str) -> String {
    format!("{}/{}/{}", kind.as_str(), namespace, name)
}

pub struct GarbageCollector {
    client: Client,
    caches: Caches,
}

impl GarbageCollector {
    pub fn new(
        client: &Client,
        informers: &mut Informers,
        queue: &WorkQueue<String>,
    ) -> GarbageCollector {
        let caches = informers.caches();
        watch_kind(&mut informers.pods, Kind::Pod, &caches, queue);
        watch_kind(&mut informers.replica_sets, Kind::ReplicaSet, &caches, queue);
        watch_kind(&mut informers.deployments, Kind::Deployment, &caches, queue);
        GarbageCollector { client: client.clone(), caches }
    }
}

fn watch_kind<T: ApiResource>(
    informer: &mut berth_client::Informer<T>,
    kind: Kind,
    caches: &Caches,
    queue: &WorkQueue<String>,
) {
    let (caches, queue) = (caches.clone(), queue.clone());
    informer.on_change(move |change| {
        let meta = change.object().metadata();
        let node = Node { kind, meta: meta.clone() };
        let being_deleted = meta.deletion_timestamp.is_some();
        let gone = matches!(change, Change::Deleted(_));
        if !gone && (!meta.owner_references.is_empty() || being_deleted) {
            queue.add(node.key());
        }
        if gone || being_deleted {
            // Its dependents may now be orphans, and owners waiting in the
            // foreground may now be free to go.
            for dependent in dependents(&caches, &meta.uid) {
                queue.add(dependent.key());
            }
            for owner in &meta.owner_references {
                if let Some(kind) = Kind::parse(&owner.kind) {
                    queue.add(item_key(kind, &meta.namespace, &owner.name));
                }
            }
        }
    });
}

fn cached<T: ApiResource>(cache: &Cache<T>, kind: Kind, key: &str) -> Option<Node> {
    cache.get(key).map(|o| Node { kind, meta: o.metadata().clone() })
}

fn lookup(caches: &Caches, kind: Kind, key: &str) -> Option<Node> {
    match kind {
        Kind::Pod => cached(&caches.pods, kind, key),
        Kind::ReplicaSet => cached(&caches.replica_sets, kind, key),
        Kind::Deployment => cached(&caches.deployments, kind, key),
    }
}

/// Every cached object with an owner reference to `uid`.
fn dependents(caches: &Caches, uid: &str) -> Vec<Node> {
    fn of<T: ApiResource>(cache: &Cache<T>, kind: Kind, uid: &str) -> impl Iterator<Item = Node> {
        cache
            .by_index(Index::Owner, uid)
            .into_iter()
            .map(move |o| Node { kind, meta: o.metadata().clone() })
    }
    of(&caches.pods, Kind::Pod, uid)
        .chain(of(&caches.replica_sets, Kind::ReplicaSet, uid))
        .chain(of(&caches.deployments, Kind::Deployment, uid))
        .collect()
}

/// Whether an owner reference still points at a live object.
enum OwnerState {
    Present,
    Absent,
}

impl Reconciler for GarbageCollector {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, item: &str) -> Result<Action, Error> {
        let Some((kind, cache_key)) =
            item.split_once('/').and_then(|(k, rest)| Some((Kind::parse(k)?, rest)))
        else {
            return Ok(Action::AwaitChange);
        };
        let Some(node) = lookup(&self.caches, kind, cache_key) else {
            return Ok(Action::AwaitChange);
        };
        if node.meta.deletion_timestamp.is_some() {
            if node.has_finalizer(ORPHAN) {
                return self.orphan_dependents(&node).await;
            }
            if node.has_finalizer(FOREGROUND) {
                return self.delete_dependents_first(&node).await;
            }
            return Ok(Action::AwaitChange);
        }
        if node.meta.owner_references.is_empty() {
            return Ok(Action::AwaitChange);
        }
        let mut absent = Vec::new();
        for owner in &node.meta.owner_references {
            if let OwnerState::Absent = self.owner_state(&node.meta.namespace, owner).await? {
                absent.push(owner.uid.clone());
            }
        }
        if absent.is_empty() {
            return Ok(Action::AwaitChange);
        }
        if absent.len() == node.meta.owner_references.len() {
            tracing::info!(object = %item, "deleting a dependent whose owners are gone");
            let params = DeleteParams {
                // Only the object as judged: a dependent adopted meanwhile stays.
                precondition_resource_version: node.meta.resource_version.clone(),
                ..Default::default()
            };
            return match self.delete(&node, &params).await {
                Ok(()) => Ok(Action::AwaitChange),
                Err(e) if e.is_not_found() => Ok(Action::AwaitChange),
                Err(e) => Err(e),
            };
        }
        // Some owners live on: only the dangling references go.
        self.edit_metadata(&node, |meta| {
            let before = meta.owner_references.len();
            meta.owner_references.retain(|r| !absent.contains(&r.uid));
            meta.owner_references.len() != before
        })
        .await?;
        Ok(Action::AwaitChange)
    }
}

impl GarbageCollector {
    async fn owner_state(
        &self,
        namespace: &str,
        owner: &OwnerReference,
    ) -> Result<OwnerState, Error> {
        let Some(kind) = Kind::parse(&owner.kind) else {
            // Not a kind berth serves: nothing can be verified, so nothing
            // is collected.
            return Ok(OwnerState::Present);
        };
        let cache_key = format!("{namespace}/{}", owner.name);
        if lookup(&self.caches, kind, &cache_key).is_some_and(|o| o.meta.uid == owner.uid) {
            return Ok(OwnerState::Present);
        }
        let live = match kind {
            Kind::Pod => live_uid::<Pod>(&self.client, namespace, &owner.name).await?,
            Kind::ReplicaSet => {
                live_uid::<ReplicaSet>(&self.client, namespace, &owner.name).await?
            }
            Kind::Deployment => {
                live_uid::<Deployment>(&self.client, namespace, &owner.name).await?
            }
        };
        Ok(match live {
            Some(uid) if uid == owner.uid => OwnerState::Present,
            _ => OwnerState::Absent,
        })
    }

    /// Foreground deletion: dependents go first (in the foreground too when
    /// they have dependents of their own), then the owner's finalizer.
    async fn delete_dependents_first(&self, owner: &Node) -> Result<Action, Error> {
        let children = dependents(&self.caches, &owner.meta.uid);
        let mut blocking = 0;
        for dependent in &children {
            let blocks = dependent
                .meta
                .owner_references
                .iter()
                .any(|r| r.uid == owner.meta.uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if dependent.meta.deletion_timestamp.is_some() {
                continue;
            }
            let has_own = !dependents(&self.caches, &dependent.meta.uid).is_empty();
            let params = DeleteParams {
                propagation_policy: if blocks && has_own { "Foreground" } else { "Background" }
                    .into(),
                ..Default::default()
            };
            match self.delete(dependent, &params).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        // The cache may not show a dependent created a moment ago: the owner
        // goes last only if a live read agrees nothing blocks it.
        if blocking > 0 || self.live_blocking(owner).await? > 0 {
            return Ok(Action::Requeue(FOREGROUND_RECHECK));
        }
        tracing::info!(object = %owner.key(), "dependents gone; finishing a foreground deletion");
        self.edit_metadata(owner, |meta| remove_finalizer(meta, FOREGROUND)).await?;
        Ok(Action::AwaitChange)
    }

    /// Dependents that block `owner`'s deletion, by a live list of its
    /// namespace.
    async fn live_blocking(&self, owner: &Node) -> Result<usize, Error> {
        async fn count<T: ApiResource>(client: &Client, owner: &Node) -> Result<usize, Error> {
            let list = Api::<T>::namespaced(client, &owner.meta.namespace)
                .list(&berth_client::ListParams::default())
                .await?;
            Ok(list
                .items
                .iter()
                .filter(|o| {
                    o.metadata()
                        .owner_references
                        .iter()
                        .any(|r| r.uid == owner.meta.uid && r.block_owner_deletion == Some(true))
                })
                .count())
        }
        Ok(count::<Pod>(&self.client, owner).await?
            + count::<ReplicaSet>(&self.client, owner).await?
            + count::<Deployment>(&self.client, owner).await?)
    }

    /// Orphan deletion: dependents lose their reference to the owner, then
    /// the owner loses its finalizer and goes.
    async fn orphan_dependents(&self, owner: &Node) -> Result<Action, Error> {
        let uid = owner.meta.uid.clone();
        for dependent in dependents(&self.caches, &uid) {
            self.edit_metadata(&dependent, |meta| {
                let before = meta.owner_references.len();
                meta.owner_references.retain(|r| r.uid != uid);
                meta.owner_references.len() != before
            })
            .await?;
        }
        tracing::info!(object = %owner.key(), "dependents orphaned; finishing the deletion");
        self.edit_metadata(owner, |meta| remove_finalizer(meta, ORPHAN)).await?;
        Ok(Action::AwaitChange)
    }

    async fn delete(&self, node: &Node, params: &DeleteParams) -> Result<(), Error> {
        let ns = &node.meta.namespace;
        let name = &node.meta.name;
        match node.kind {
            Kind::Pod => {
                Api::<Pod>::namespaced(&self.client, ns).delete(name, params).await.map(drop)
            }
            Kind::ReplicaSet => {
                Api::<ReplicaSet>::namespaced(&self.client, ns).delete(name, params).await.map(drop)
            }
            Kind::Deployment => {
                Api::<Deployment>::namespaced(&self.client, ns).delete(name, params).await.map(drop)
            }
        }
        .map_err(Error::from)
    }

    /// Applies `edit` to the live object's metadata and writes it back if
    /// it changed anything, retrying when the object changes meanwhile.
    async fn edit_metadata(
        &self,
        node: &Node,
        edit: impl Fn(&mut ObjectMeta) -> bool,
    ) -> Result<(), Error> {
        let ns = &node.meta.namespace;
        let (name, uid) = (&node.meta.name, &node.meta.uid);
        match node.kind {
            Kind::Pod => edit_live::<Pod>(&self.client, ns, name, uid, &edit).await,
            Kind::ReplicaSet => edit_live::<ReplicaSet>(&self.client, ns, name, uid, &edit).await,
            Kind::Deployment => edit_live::<Deployment>(&self.client, ns, name, uid, &edit).await,
        }
    }
}

pub(crate) fn remove_finalizer(meta: &mut ObjectMeta, name: &str) -> bool {
    let before = meta.finalizers.len();
    meta.finalizers.retain(|f| f != name);
    meta.finalizers.len() != before
}

async fn live_uid<T: ApiResource>(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<String>, Error> {
    let live = Api::<T>::namespaced(client, namespace).get_opt(name).await?;
    Ok(live.map(|o| o.metadata().uid.clone()))
}

/// How often an edit is retried against a changing object.
const EDIT_ATTEMPTS: usize = 5;

/// Reads the object, edits its metadata, writes it conditioned on the read;
/// a Conflict reads again. The object must still be the one with `uid`.
pub(crate) async fn edit_live<T: ApiResource>(
    client: &Client,
    namespace: &str,
    name: &str,
    uid: &str,
    edit: &(impl Fn(&mut ObjectMeta) -> bool + ?Sized),
) -> Result<(), Error> {
    let api: Api<T> = Api::namespaced(client, namespace);
    let mut last = None;
    for _ in 0..EDIT_ATTEMPTS {
        let Some(mut object) = api.get_opt(name).await? else { return Ok(()) };
        if object.metadata().uid != uid || !edit(object.metadata_mut()) {
            return Ok(());
        }
        match api.update(&object).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) if e.is_conflict() => last = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last.map_or_else(|| Error::invalid(name, "the object kept changing"), Error::from))
}
