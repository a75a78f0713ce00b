//! OpenAPI v3 documents: one per group version, with an operation per
//! resource path. kubectl reads the PATCH operations' parameters to learn
//! that the server validates fields itself (the fieldValidation parameter),
//! and then leaves validation to it.

use super::kinds::{KINDS, REVIEWS};
use serde_json::{json, Map, Value};

fn group_version_path(group: &str) -> String {
    if group.is_empty() {
        "api/v1".into()
    } else {
        format!("apis/{group}/v1")
    }
}

/// The index of the per-group-version documents.
pub(super) fn root() -> Value {
    let mut paths = Map::new();
    for k in KINDS.iter().filter(|k| k.group != REVIEWS) {
        let gv = group_version_path(k.group);
        let url = format!("/openapi/v3/{gv}?hash={}", env!("CARGO_PKG_VERSION"));
        paths.insert(gv, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

fn query(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

/// The document of one group version (`api/v1`, `apis/apps/v1`).
pub(super) fn group_version(path: &str) -> Option<Value> {
    let kinds: Vec<_> = KINDS
        .iter()
        .filter(|k| group_version_path(k.group) == path && k.group != REVIEWS)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    for k in kinds {
        let gvk = json!({"group": k.group, "version": "v1", "kind": k.kind});
        let scope = if k.namespaced { "/namespaces/{namespace}" } else { "" };
        let item = format!("/{path}{scope}/{}/{{name}}", k.plural);
        let collection = format!("/{path}{scope}/{}", k.plural);
        let op = |verb: &str, params: Vec<Value>| {
            json!({
                "operationId": format!("{verb}{}", k.kind),
                "parameters": params,
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            })
        };
        let writes = || vec![query("dryRun"), query("fieldManager"), query("fieldValidation")];
        paths.insert(
            item,
            json!({
                "get": op("get", vec![]),
                "put": op("put", writes()),
                "patch": op("patch", writes()),
                "delete": op("delete", vec![query("gracePeriodSeconds"), query("propagationPolicy")]),
            }),
        );
        paths.insert(
            collection,
            json!({
                "get": op("list", vec![query("labelSelector"), query("fieldSelector"), query("watch")]),
                "post": op("post", writes()),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": super::schemas::schemas()},
    }))
}
