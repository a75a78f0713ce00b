//! Ownership claims: a controller owns the objects its selector matches
//! through a controller reference. It adopts matching orphans and releases
//! objects that stop matching; an object another controller owns is left
//! alone. (Kubernetes' ControllerRefManager, for pods and ReplicaSets.)

use crate::pods::{controller_of, controller_reference};
use crate::Error;
use berth_client::{key, Api, ApiResource, Client};
use berth_proto::labels::Selector;
use std::sync::Arc;

/// The candidates `owner` controls once it has adopted the matching
/// orphans and released what no longer matches. An owner being deleted
/// neither adopts nor releases.
pub async fn claim<O: ApiResource, T: ApiResource>(
    client: &Client,
    owner: &O,
    selector: &Selector,
    candidates: Vec<Arc<T>>,
) -> Result<Vec<T>, Error> {
    let meta = owner.metadata();
    let deleting = meta.deletion_timestamp.is_some();
    let api: Api<T> = Api::namespaced(client, &meta.namespace);
    let mut claimed = Vec::new();
    let mut may_adopt: Option<bool> = None;
    let mut failure = None;
    for object in candidates {
        let object_meta = object.metadata();
        let matches = selector.matches(&object_meta.labels);
        match controller_of(object_meta) {
            Some(reference) if reference.uid == meta.uid => {
                if matches || deleting {
                    claimed.push(object.as_ref().clone());
                    continue;
                }
                let mut released = object.as_ref().clone();
                released.metadata_mut().owner_references.retain(|r| r.uid != meta.uid);
                match api.update(&released).await {
                    Ok(_) => {
                        tracing::info!(owner = %key(owner), object = %object_meta.name, kind = T::KIND, "released an object that no longer matches")
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => failure = Some(e),
                }
            }
            Some(_) => {}
            None if matches && !deleting && object_meta.deletion_timestamp.is_none() => {
                // Only a live owner adopts: the cache may still hold one
                // that was deleted, or replaced under the same name.
                if may_adopt.is_none() {
                    let live =
                        Api::<O>::namespaced(client, &meta.namespace).get_opt(&meta.name).await?;
                    may_adopt = Some(live.is_some_and(|l| {
                        l.metadata().uid == meta.uid && l.metadata().deletion_timestamp.is_none()
                    }));
                }
                if may_adopt != Some(true) {
                    continue;
                }
                let mut adopted = object.as_ref().clone();
                adopted.metadata_mut().owner_references.push(controller_reference(owner));
                match api.update(&adopted).await {
                    Ok(updated) => {
                        tracing::info!(owner = %key(owner), object = %object_meta.name, kind = T::KIND, "adopted an orphan");
                        claimed.push(updated);
                    }
                    Err(e) if e.is_not_found() => {}
                    Err(e) => failure = Some(e),
                }
            }
            None => {}
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(claimed),
    }
}
