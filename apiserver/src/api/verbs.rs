//! The verbs of the API, written once for every resource: what create,
//! update, status update, patch, delete, bind and scale do to an object
//! before the registry stores it. Create and update (which patch and scale
//! go through) run the object through admission; status writes and deletes
//! run its validating phase on the stored object.

use super::kinds::Kind;
use crate::error::ApiError;
use crate::filters::{Filters, RequestInfo};
use crate::registry::{ListOptions, ListResult, Registry};
use berth_proto::api_v1::{DeleteRequest, PatchRequest};
use berth_proto::core_v1::{Binding, Namespace, Pod, PodCondition};
use berth_proto::{from_json, Resource, Time};
use berth_raft_store::Store;

/// Namespaces that exist from the start of every cluster.
pub const BOOTSTRAP_NAMESPACES: &[&str] = &["default", "kube-system", "kube-node-lease"];

/// Where a namespaced object goes when its writer names no namespace.
pub(super) fn namespace_or_default(namespace: &str) -> &str {
    if namespace.is_empty() {
        "default"
    } else {
        namespace
    }
}

/// A patch is retried this often when the object changes under it.
pub(super) const PATCH_ATTEMPTS: usize = 8;

/// A write that passed authentication, authorization and admission's
/// request phase: the registry it goes to (fenced when the request carried
/// a token) and the chain that admits the objects it stores.
pub(crate) struct Write<'a> {
    pub registry: Registry<Store>,
    pub filters: &'a Filters,
    pub info: RequestInfo,
    /// The field manager the write's changes are recorded under in
    /// managedFields; empty when the caller sets managedFields itself
    /// (server-side apply).
    pub manager: String,
}

impl Write<'_> {
    /// Admission's mutating and validating phases on `object`.
    fn admit<T: Kind>(&self, object: &mut T, old: Option<&T>) -> Result<(), ApiError> {
        self.filters.admit(&self.info, object, old.map(|o| o as _))
    }

    /// Records in `new`'s managedFields what this write changed from `old`.
    fn track<T: Kind>(&self, old: Option<&T>, new: &mut T) -> Result<(), ApiError> {
        if self.manager.is_empty() {
            return Ok(());
        }
        let json = |o: &T| serde_json::to_value(o).map_err(|e| ApiError::Internal(e.to_string()));
        let old_json = old.map(json).transpose()?;
        let mut managed = old.map(|o| o.metadata().managed_fields.clone()).unwrap_or_default();
        let manager = berth_patch::Manager { name: &self.manager, api_version: T::API_VERSION };
        berth_patch::track_update(old_json.as_ref(), &json(new)?, &mut managed, &manager);
        new.metadata_mut().managed_fields = managed;
        Ok(())
    }
}

/// Creates an object; `lease` (non-zero) makes it go when the lease does.
pub(crate) async fn create<T: Kind>(
    write: &Write<'_>,
    mut object: T,
    lease: i64,
) -> Result<T, ApiError> {
    let registry = &write.registry;
    if T::NAMESPACED {
        let meta = object.metadata_mut();
        meta.namespace = namespace_or_default(&meta.namespace).into();
        let namespace = meta.namespace.clone();
        let ns: Namespace = registry.get("", &namespace, "").await.map_err(|e| match e {
            ApiError::NotFound { .. } => {
                ApiError::NotFound { kind: "namespaces".into(), name: namespace.clone() }
            }
            e => e,
        })?;
        if ns.metadata().deletion_timestamp.is_some() {
            return Err(ApiError::Forbidden(format!(
                "unable to create new content in namespace {namespace} because it is being terminated"
            )));
        }
    } else {
        object.metadata_mut().namespace.clear();
    }
    let meta = object.metadata_mut();
    meta.deletion_timestamp = None;
    meta.deletion_grace_period_seconds = None;
    object.prepare_for_create();
    write.admit(&mut object, None)?;
    write.track(None, &mut object)?;
    registry.create_leased(object, lease).await
}

pub(crate) async fn get<T: Kind>(
    registry: &Registry<Store>,
    namespace: &str,
    name: &str,
    resource_version: &str,
) -> Result<T, ApiError> {
    registry.get(scope::<T>(namespace), name, resource_version).await
}

pub(crate) async fn list<T: Kind>(
    registry: &Registry<Store>,
    namespace: &str,
    options: &ListOptions,
) -> Result<ListResult<T>, ApiError> {
    let namespace = (T::NAMESPACED && !namespace.is_empty()).then_some(namespace);
    registry.list(namespace, options).await
}

fn scope<T: Resource>(namespace: &str) -> &str {
    if T::NAMESPACED {
        namespace
    } else {
        ""
    }
}

/// A spec write: status stays as stored, a spec change bumps generation, and
/// an object being deleted whose last finalizer went away is removed.
pub(crate) async fn update<T: Kind>(write: &Write<'_>, object: T) -> Result<T, ApiError> {
    let registry = &write.registry;
    let updated = registry
        .update(object, |current, new| {
            new.keep_status_of(current);
            write.admit(new, Some(current))?;
            write.track(Some(current), new)?;
            if new.spec_changed(current) {
                new.metadata_mut().generation = current.metadata().generation + 1;
            }
            Ok(())
        })
        .await?;
    finish_deletion(registry, updated).await
}

/// A status write: spec and metadata stay as stored.
pub(crate) async fn update_status<T: Kind>(write: &Write<'_>, object: T) -> Result<T, ApiError> {
    write
        .registry
        .update(object, |current, new| {
            new.keep_spec_of(current);
            let resource_version = new.metadata().resource_version.clone();
            *new.metadata_mut() = current.metadata().clone();
            new.metadata_mut().resource_version = resource_version;
            write.filters.admit_stored(&write.info, Some(&*new), current)
        })
        .await
}

/// Removes an object whose deletion was waiting only for finalizers.
async fn finish_deletion<T: Kind>(registry: &Registry<Store>, object: T) -> Result<T, ApiError> {
    let meta = object.metadata();
    let waiting_on_kubelet =
        object.held_by_node() && meta.deletion_grace_period_seconds.unwrap_or(0) > 0;
    if meta.deletion_timestamp.is_some() && meta.finalizers.is_empty() && !waiting_on_kubelet {
        let (ns, name, rv) =
            (meta.namespace.clone(), meta.name.clone(), meta.resource_version.clone());
        return registry.remove(&ns, &name, Some(&rv)).await;
    }
    Ok(object)
}

/// A patch (merge, JSON or strategic) on the object's JSON form, then a strict
/// decode and an update conditioned on the version the patch was applied to.
pub(crate) async fn patch<T: Kind>(
    write: &Write<'_>,
    request: &PatchRequest,
) -> Result<T, ApiError> {
    let patch = berth_patch::Patch::parse(&request.patch_type, &request.patch)?;
    for _ in 0..PATCH_ATTEMPTS {
        let current: T = get(&write.registry, &request.namespace, &request.name, "").await?;
        let mut document =
            serde_json::to_value(&current).map_err(|e| ApiError::Internal(e.to_string()))?;
        patch.apply(&mut document)?;
        let bytes = serde_json::to_vec(&document).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut patched: T = from_json(&bytes).map_err(|e| ApiError::Invalid {
            kind: T::KIND.into(),
            name: request.name.clone(),
            causes: vec![berth_proto::meta_v1::StatusCause {
                reason: "FieldValueInvalid".into(),
                message: e.message.clone(),
                field: e.path.clone(),
            }],
        })?;
        // The patch applies to what was read; the name cannot move.
        let meta = patched.metadata_mut();
        meta.resource_version = current.metadata().resource_version.clone();
        meta.name = current.metadata().name.clone();
        meta.namespace = current.metadata().namespace.clone();
        match update(write, patched).await {
            Err(ApiError::Conflict { .. }) => continue,
            other => return other,
        }
    }
    Err(ApiError::Conflict {
        kind: T::PLURAL.into(),
        name: request.name.clone(),
        reason: "the object kept changing while the patch was applied".into(),
    })
}

/// Delete: at once, or — when finalizers remain, or a bound pod must first be
/// stopped by its kubelet — by marking it with a deletion timestamp. The
/// propagation policy is recorded as Kubernetes does, as a finalizer the
/// garbage collector acts on (foregroundDeletion or orphan).
pub(crate) async fn delete<T: Kind>(
    write: &Write<'_>,
    request: &DeleteRequest,
) -> Result<T, ApiError> {
    let registry = &write.registry;
    let namespace = scope::<T>(&request.namespace);
    let mut current: T = registry.get(namespace, &request.name, "").await?;
    // What follows is conditioned on this read's resourceVersion.
    write.filters.admit_stored(&write.info, None, &current)?;
    if !request.precondition_resource_version.is_empty()
        && request.precondition_resource_version != current.metadata().resource_version
    {
        return Err(ApiError::Conflict {
            kind: T::PLURAL.into(),
            name: request.name.clone(),
            reason: format!(
                "the precondition resourceVersion {} does not match the object's {}",
                request.precondition_resource_version,
                current.metadata().resource_version
            ),
        });
    }
    let finalizer = match request.propagation_policy.as_str() {
        "" | "Background" => None,
        "Foreground" => Some("foregroundDeletion"),
        "Orphan" => Some("orphan"),
        other => {
            return Err(ApiError::BadRequest(format!(
                "propagationPolicy {other:?} is not one of Background, Foreground, Orphan"
            )))
        }
    };
    let grace =
        request.grace_period_seconds.map_or_else(|| current.default_grace_seconds(), |g| g.max(0));
    let graceful = current.held_by_node() && grace > 0;
    let meta = current.metadata_mut();
    if let Some(f) = finalizer {
        if !meta.finalizers.iter().any(|x| x == f) {
            meta.finalizers.push(f.into());
        }
    }
    if meta.finalizers.is_empty() && !graceful {
        let rv = meta.resource_version.clone();
        return registry.remove(namespace, &request.name, Some(&rv)).await;
    }
    if meta.deletion_timestamp.is_none() {
        meta.deletion_timestamp =
            Some(Time::from_unix(Time::now().unix_seconds() + grace.max(0), 0));
    }
    // A shorter grace period may replace a longer one, never the reverse.
    let shorter = meta.deletion_grace_period_seconds.is_none_or(|g| grace < g);
    if shorter {
        meta.deletion_grace_period_seconds = Some(grace);
    }
    registry.update(current, |_, _| Ok(())).await
}

/// pods/binding: sets spec.nodeName once; a second bind is a Conflict.
pub(crate) async fn bind(registry: &Registry<Store>, binding: Binding) -> Result<Pod, ApiError> {
    let meta = binding.metadata.unwrap_or_default();
    let namespace = namespace_or_default(&meta.namespace).to_string();
    let node = binding.target.map(|t| t.name).unwrap_or_default();
    if node.is_empty() {
        return Err(crate::registry::invalid::<Pod>(
            &meta.name,
            "target.name",
            "a binding needs a target node",
        ));
    }
    // The first attempt reads this peer's copy (the write is conditioned on
    // it); a miss or a lost race reads linearizably and tries again.
    let mut at = "0";
    for _ in 0..PATCH_ATTEMPTS {
        let pod: Pod = match registry.get(&namespace, &meta.name, at).await {
            Err(ApiError::NotFound { .. }) if at == "0" => {
                at = "";
                continue;
            }
            read => read?,
        };
        let mut bound = pod.clone();
        let spec = bound.spec.get_or_insert_with(Default::default);
        if !spec.node_name.is_empty() {
            return Err(ApiError::Conflict {
                kind: "pods".into(),
                name: meta.name.clone(),
                reason: format!(
                    "pod {} is already assigned to node {:?}",
                    meta.name, spec.node_name
                ),
            });
        }
        if pod.metadata().deletion_timestamp.is_some() {
            return Err(ApiError::Conflict {
                kind: "pods".into(),
                name: meta.name.clone(),
                reason: "the pod is being deleted".into(),
            });
        }
        spec.node_name = node.clone();
        let status = bound.status.get_or_insert_with(Default::default);
        status.conditions.retain(|c| c.r#type != "PodScheduled");
        status.conditions.push(PodCondition {
            r#type: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(Time::now()),
            ..Default::default()
        });
        // Binding writes spec and status together, conditioned on the read;
        // a pod that changed meanwhile (its status, say) is bound anew.
        match registry.update(bound, |_, _| Ok(())).await {
            Err(ApiError::Conflict { .. }) => at = "",
            other => return other,
        }
    }
    Err(ApiError::Conflict {
        kind: "pods".into(),
        name: meta.name.clone(),
        reason: "the pod kept changing while it was bound".into(),
    })
}
