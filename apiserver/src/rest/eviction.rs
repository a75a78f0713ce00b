//! pods/eviction: POST a policy/v1 Eviction (what `kubectl drain` sends) and
//! the pod is deleted with the Eviction's DeleteOptions, gracefully when a
//! node runs it. berth has no PodDisruptionBudgets, so an eviction is never
//! refused for one (never 429).

use super::{delete_options, json_response, method_not_allowed, Call, Target};
use crate::api::Api;
use crate::error::ApiError;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

pub(super) async fn evict(api: &Api, target: &Target, call: &Call) -> Result<Response, ApiError> {
    if call.method != Method::POST {
        return Err(method_not_allowed(call));
    }
    let eviction = call.json_body()?;
    if !matches!(eviction.get("kind").and_then(Value::as_str), None | Some("Eviction")) {
        return Err(ApiError::BadRequest(format!(
            "the body is a {}, not an Eviction",
            eviction["kind"].as_str().unwrap_or("")
        )));
    }
    let name = eviction.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    if !name.is_empty() && name != target.name {
        return Err(ApiError::BadRequest(format!(
            "the name of the Eviction ({name}) does not match the pod on the URL ({})",
            target.name
        )));
    }
    let options = eviction.get("deleteOptions").cloned().unwrap_or_else(|| json!({}));
    let (request, api) = delete_options(api, &target.namespace, &target.name, &options, call)?;
    api.evict(&call.head(), &request).await?;
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &success))
}
