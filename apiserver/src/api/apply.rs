//! Server-side apply of a configuration to a stored object: read it, apply
//! with the field ownership rules of berth-patch, and write it back
//! conditioned on the version read.

use super::kinds::Kind;
use super::verbs::{self, Write};
use crate::error::ApiError;
use berth_patch::Manager;
use berth_proto::from_json;
use berth_proto::meta_v1::StatusCause;
use serde_json::{json, Value};

/// Applies `config` to the object `namespace/name` (creating it if it does
/// not exist) as `manager`. The write itself records no update: the
/// managedFields it stores are the apply's.
pub(crate) async fn apply_object<T: Kind>(
    write: &Write<'_>,
    namespace: &str,
    name: &str,
    config: &Value,
    manager: &str,
    force: bool,
) -> Result<T, ApiError> {
    let config = checked_config::<T>(namespace, name, config)?;
    let who = Manager { name: manager, api_version: T::API_VERSION };
    for _ in 0..verbs::PATCH_ATTEMPTS {
        let current: Option<T> = match verbs::get(&write.registry, namespace, name, "").await {
            Ok(current) => Some(current),
            Err(ApiError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let json = |o: &T| serde_json::to_value(o).map_err(|e| ApiError::Internal(e.to_string()));
        let current_json = current.as_ref().map(json).transpose()?;
        let mut managed =
            current.as_ref().map(|c| c.metadata().managed_fields.clone()).unwrap_or_default();
        let merged = berth_patch::apply(
            T::KIND,
            name,
            current_json.as_ref(),
            &config,
            &mut managed,
            &who,
            force,
        )?;
        let bytes = serde_json::to_vec(&merged).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut object: T = from_json(&bytes).map_err(|e| ApiError::Invalid {
            kind: T::KIND.into(),
            name: name.into(),
            causes: vec![StatusCause {
                reason: "FieldValueInvalid".into(),
                message: e.message.clone(),
                field: e.path.clone(),
            }],
        })?;
        object.metadata_mut().managed_fields = managed;
        let written = match current {
            None => verbs::create(write, object, 0).await,
            Some(current) => {
                let meta = object.metadata_mut();
                meta.resource_version = current.metadata().resource_version.clone();
                meta.name = current.metadata().name.clone();
                meta.namespace = current.metadata().namespace.clone();
                verbs::update(write, object).await
            }
        };
        match written {
            Err(ApiError::Conflict { .. } | ApiError::AlreadyExists { .. }) => continue,
            other => return other,
        }
    }
    Err(ApiError::Conflict {
        kind: T::PLURAL.into(),
        name: name.into(),
        reason: "the object kept changing while the configuration was applied".into(),
    })
}

/// An apply configuration must name the kind, the apiVersion and the object
/// it is applied to, and decode strictly as that kind.
fn checked_config<T: Kind>(namespace: &str, name: &str, config: &Value) -> Result<Value, ApiError> {
    let mut config = config.clone();
    let Some(map) = config.as_object_mut() else {
        return Err(ApiError::BadRequest("an apply configuration must be an object".into()));
    };
    let field = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    if field("apiVersion") != T::API_VERSION || field("kind") != T::KIND {
        return Err(ApiError::BadRequest(format!(
            "the apply configuration is a {} {}, not a {} {}",
            field("apiVersion"),
            field("kind"),
            T::API_VERSION,
            T::KIND
        )));
    }
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return Err(ApiError::BadRequest("metadata must be an object".into()));
    };
    match meta.get("name").and_then(Value::as_str) {
        Some(n) if n != name => {
            return Err(ApiError::BadRequest(format!(
                "the name of the configuration ({n}) does not match the name on the URL ({name})"
            )))
        }
        _ => {
            meta.insert("name".into(), json!(name));
        }
    }
    if T::NAMESPACED {
        match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) if !namespace.is_empty() && ns != namespace => {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the configuration ({ns}) does not match the namespace on the URL ({namespace})"
                )))
            }
            _ if !namespace.is_empty() => {
                meta.insert("namespace".into(), json!(namespace));
            }
            _ => {}
        }
    }
    // Ownership is the server's to record.
    meta.remove("managedFields");
    meta.remove("resourceVersion");
    let bytes = serde_json::to_vec(&config).map_err(|e| ApiError::Internal(e.to_string()))?;
    from_json::<T>(&bytes)
        .map_err(|e| ApiError::BadRequest(format!("strict decoding error: {e}")))?;
    Ok(config)
}
