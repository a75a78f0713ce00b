//! Namespace deletion: a namespace being deleted is emptied of every
//! object, then its finalizer is removed and the API server lets it go.
//!
//! The API server removes an object at once unless a finalizer holds it, and
//! does not add one to namespaces itself, so this controller keeps the
//! `kubernetes` finalizer on every live namespace (Kubernetes keeps it in
//! spec.finalizers). Objects left in a namespace that went without it —
//! deleted while no controller-manager ran — are removed too.

use crate::gc::{edit_live, remove_finalizer};
use crate::informers::{Caches, Informers};
use crate::runner::{Action, Reconciler};
use crate::Error;
use berth_client::EventRecorder;
use berth_client::{Api, ApiResource, Client, DeleteParams, ListParams, WorkQueue};
use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Event, Namespace, Pod};
use berth_proto::Resource;
use std::time::Duration;

pub const NAME: &str = "namespace";

/// The finalizer that holds a namespace until it is empty.
pub const FINALIZER: &str = "kubernetes";

/// A namespace still being emptied is looked at again this often (pods on
/// nodes wait for their kubelet, so there is not always an event to wake on).
const EMPTYING_RECHECK: Duration = Duration::from_secs(1);

pub struct NamespaceController {
    client: Client,
    caches: Caches,
    recorder: EventRecorder,
}

impl NamespaceController {
    pub fn new(
        client: &Client,
        informers: &mut Informers,
        recorder: EventRecorder,
        queue: &WorkQueue<String>,
    ) -> NamespaceController {
        let caches = informers.caches();
        {
            let queue = queue.clone();
            informers
                .namespaces
                .on_change(move |change| queue.add(change.object().metadata().name.clone()));
        }
        // A change to an object in a namespace that is going, or that the
        // cache does not know, may be what the namespace waits for.
        let follow = |caches: &Caches, queue: &WorkQueue<String>| {
            let (caches, queue) = (caches.clone(), queue.clone());
            move |namespace: &str| {
                let known = caches.namespaces.get(namespace);
                if known.is_none_or(|ns| ns.metadata().deletion_timestamp.is_some()) {
                    queue.add(namespace.to_string());
                }
            }
        };
        let on_pod = follow(&caches, queue);
        informers.pods.on_change(move |c| on_pod(&c.object().metadata().namespace));
        let on_rs = follow(&caches, queue);
        informers.replica_sets.on_change(move |c| on_rs(&c.object().metadata().namespace));
        let on_deployment = follow(&caches, queue);
        informers.deployments.on_change(move |c| on_deployment(&c.object().metadata().namespace));
        NamespaceController { client: client.clone(), caches, recorder }
    }
}

impl Reconciler for NamespaceController {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        let api: Api<Namespace> = Api::all(&self.client);
        let Some(ns) = self.caches.namespaces.get(name) else {
            // Gone, or not yet in the cache: only a live read can tell.
            if api.get_opt(name).await?.is_some() {
                return Ok(Action::AwaitChange);
            }
            return Ok(match self.empty(name).await? {
                0 => Action::AwaitChange,
                _ => Action::Requeue(EMPTYING_RECHECK),
            });
        };
        let meta = ns.metadata();
        if meta.deletion_timestamp.is_none() {
            if !meta.finalizers.iter().any(|f| f == FINALIZER) {
                edit_live::<Namespace>(&self.client, "", name, &meta.uid, &|m| {
                    let missing = !m.finalizers.iter().any(|f| f == FINALIZER);
                    if missing {
                        m.finalizers.push(FINALIZER.into());
                    }
                    missing
                })
                .await?;
            }
            return Ok(Action::AwaitChange);
        }
        if ns.status.as_ref().is_none_or(|s| s.phase != "Terminating") {
            let mut terminating = ns.as_ref().clone();
            terminating.status.get_or_insert_with(Default::default).phase = "Terminating".into();
            match api.update_status(&terminating).await {
                Ok(_) => {}
                // The next pass, from the newer object, sets it.
                Err(e) if e.is_conflict() || e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        let left = self.empty(name).await?;
        if left > 0 {
            return Ok(Action::Requeue(EMPTYING_RECHECK));
        }
        tracing::info!(namespace = %name, "namespace empty; removing its finalizer");
        self.recorder.normal(
            ns.as_ref(),
            "NamespaceEmptied",
            format!("Deleted every object in namespace {name}"),
        );
        edit_live::<Namespace>(&self.client, "", name, &meta.uid, &|m| {
            remove_finalizer(m, FINALIZER)
        })
        .await?;
        Ok(Action::AwaitChange)
    }
}

impl NamespaceController {
    /// Deletes what is left in `namespace`, workloads first so they do not
    /// make new pods; answers how many objects still exist.
    async fn empty(&self, namespace: &str) -> Result<usize, Error> {
        let mut left = 0;
        left += delete_all::<Deployment>(&self.client, namespace).await?;
        left += delete_all::<ReplicaSet>(&self.client, namespace).await?;
        left += delete_all::<Pod>(&self.client, namespace).await?;
        left += delete_all::<Lease>(&self.client, namespace).await?;
        left += delete_all::<Event>(&self.client, namespace).await?;
        Ok(left)
    }
}

/// Deletes every object of one kind in `namespace` that is not already
/// going; answers how many exist (going or not).
async fn delete_all<T: ApiResource>(client: &Client, namespace: &str) -> Result<usize, Error> {
    let api: Api<T> = Api::namespaced(client, namespace);
    let list = api.list(&ListParams::default()).await?;
    for object in &list.items {
        let meta = object.metadata();
        if meta.deletion_timestamp.is_some() {
            continue;
        }
        match api.delete(&meta.name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(list.items.len())
}
