//! The Kubernetes REST API over HTTP, so kubectl and Kubernetes client
//! libraries work against every peer. It calls the same API operations as
//! the gRPC front end (one path for filters, validation, concurrency and
//! fencing); this module only speaks HTTP: paths, query parameters, JSON
//! and YAML bodies, content negotiation (Table for `kubectl get`), watch
//! streams and Status errors with their HTTP codes.

mod discovery;
mod eviction;
mod fields;
mod kinds;
mod openapi;
mod openapi_v2;
mod protobuf;
mod reviews;
mod schemas;
mod spdy;
mod stream;
mod table;

use crate::api::kinds::{Kind, Workload};
use crate::api::Api;
use crate::error::ApiError;
use crate::registry::ListOptions;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Extension, Router};
use berth_proto::api_v1::{DeleteRequest, PatchRequest, ScaleRequest, WatchRequest};
use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Binding, Event, Namespace, Node, Pod};
use berth_proto::rbac_v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use futures::StreamExt;
use kinds::RestKind;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// The REST routes and the peer's own non-resource `routes` (health and
/// metrics), for the peer's HTTP server.
pub(crate) fn router(api: Api, routes: Router) -> Router {
    // Discovery, OpenAPI, health and metrics are non-resource URLs: RBAC
    // says who reads them (system:discovery, bound to every authenticated
    // user; /version and the health URLs to anyone, through
    // system:public-info-viewer; /metrics to system:monitoring).
    let guard = axum::middleware::from_fn_with_state(api.clone(), authorize_path);
    let routes = routes.route_layer(guard.clone());
    let non_resource = Router::new()
        .route("/version", get(|| async { json_response(StatusCode::OK, &discovery::version()) }))
        .route("/api", get(|headers: HeaderMap| async move { discover(&headers, true) }))
        .route("/apis", get(|headers: HeaderMap| async move { discover(&headers, false) }))
        .route("/api/v1", get(|| async { group_version("", "v1") }))
        .route(
            "/apis/{group}/{version}",
            get(|Path((g, v)): Path<(String, String)>| async move { group_version(&g, &v) }),
        )
        .route("/openapi/v2", get(|headers: HeaderMap| async move { openapi_v2(&headers) }))
        .route("/openapi/v3", get(|| async { json_response(StatusCode::OK, &openapi::root()) }))
        .route(
            "/openapi/v3/{*path}",
            get(|Path(path): Path<String>| async move {
                match openapi::group_version(&path) {
                    Some(doc) => json_response(StatusCode::OK, &doc),
                    None => error(ApiError::NotFound { kind: "openapi".into(), name: path }),
                }
            }),
        )
        .route_layer(guard);
    Router::new()
        .merge(non_resource)
        .merge(stream::routes())
        .route("/api/v1/{*path}", any(core))
        .route("/apis/{group}/{version}/{*path}", any(grouped))
        .with_state(api)
        .merge(routes)
        .layer(axum::extract::DefaultBodyLimit::max(crate::filters::MAX_REQUEST_BODY))
}

/// Lets a request for a non-resource URL through if the caller may get it.
async fn authorize_path(
    State(api): State<Api>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let on = request.extensions().get::<berth_tls::ConnectionInfo>().cloned();
    match api.allow_path(&head(request.headers(), on), request.uri().path()) {
        Ok(()) => next.run(request).await,
        Err(e) => error(e),
    }
}

/// /api or /apis: the aggregated discovery document when the client
/// accepts one, else the list of versions or groups.
fn discover(headers: &HeaderMap, core: bool) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    match discovery::aggregated_version(accept) {
        Some(version) => {
            let mut response = json_response(StatusCode::OK, &discovery::aggregated(core, version));
            if let Ok(value) =
                header::HeaderValue::from_str(&discovery::aggregated_content_type(version))
            {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        None if core => json_response(StatusCode::OK, &discovery::core_versions()),
        None => json_response(StatusCode::OK, &discovery::group_list()),
    }
}

/// The Swagger 2.0 document, as protobuf when the client asks for it.
fn openapi_v2(headers: &HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok()).unwrap_or("");
    if accept.contains(openapi_v2::PROTOBUF) {
        let body = openapi_v2::protobuf();
        // Go's media-type parser refuses the '@' in the requested type, so
        // the answer goes out as plain bytes (as Kubernetes sends it).
        return ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    }
    json_response(StatusCode::OK, openapi_v2::document())
}

fn group_version(group: &str, version: &str) -> Response {
    match discovery::resource_list(group, version) {
        Some(list) => json_response(StatusCode::OK, &list),
        None => error(ApiError::NotFound {
            kind: "groupversion".into(),
            name: format!("{group}/{version}"),
        }),
    }
}

fn json_response(code: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (code, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// An error as a Kubernetes Status with its HTTP code.
fn error(e: ApiError) -> Response {
    let status = e.status();
    let code =
        StatusCode::from_u16(status.code as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(code, &status)
}

/// One request, as the handlers see it.
struct Call {
    method: Method,
    query: HashMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
    /// Warnings for the client (admission's too), sent as Warning headers.
    warnings: crate::filters::Warnings,
    /// The connection it came on (its client certificate), for the filters.
    connection: Option<berth_tls::ConnectionInfo>,
}

impl Call {
    fn new(method: Method, uri: &Uri, headers: HeaderMap, body: Bytes) -> Call {
        let query = parse_query(uri.query().unwrap_or(""));
        Call { method, query, headers, body, warnings: Default::default(), connection: None }
    }

    fn on(mut self, connection: Option<Extension<berth_tls::ConnectionInfo>>) -> Call {
        self.connection = connection.map(|Extension(c)| c);
        self
    }

    fn warn(&self, warning: String) {
        self.warnings.add(warning);
    }

    /// The response with the request's warnings as `Warning: 299` headers.
    fn with_warnings(&self, mut response: Response) -> Response {
        for warning in self.warnings.all() {
            let quoted = warning.replace('\\', "\\\\").replace('"', "\\\"");
            let text = format!("299 - \"{quoted}\"");
            if let Ok(value) = header::HeaderValue::from_str(&text) {
                response.headers_mut().append(header::WARNING, value);
            }
        }
        response
    }

    fn field_validation(&self) -> Result<fields::Mode, ApiError> {
        fields::Mode::parse(self.param("fieldValidation"))
    }

    /// The body as JSON: from JSON, YAML or Kubernetes' protobuf.
    fn json_body(&self) -> Result<Value, ApiError> {
        if self.content_type().starts_with(protobuf::CONTENT_TYPE) {
            return protobuf::to_json(&self.body);
        }
        if self.content_type().contains("yaml") {
            let text = std::str::from_utf8(&self.body)
                .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
            return berth_proto::from_yaml(text)
                .map_err(|e| ApiError::BadRequest(format!("the body is not YAML: {e}")));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))
    }

    /// Fields a body names twice, by fieldValidation: refused (Strict) or
    /// warned about (Warn). The last one named counts.
    fn check_duplicates(&self, mode: fields::Mode) -> Result<(), ApiError> {
        let text = self.content_type();
        if mode == fields::Mode::Ignore || text.contains("yaml") || text.contains("protobuf") {
            return Ok(());
        }
        let duplicates = fields::duplicate_fields(&self.body);
        if mode == fields::Mode::Strict && !duplicates.is_empty() {
            let list: Vec<String> =
                duplicates.iter().map(|d| format!("{d}: duplicate field")).collect();
            return Err(ApiError::BadRequest(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        for d in duplicates {
            self.warn(format!("duplicate field \"{d}\""));
        }
        Ok(())
    }
    fn param(&self, name: &str) -> &str {
        self.query.get(name).map(String::as_str).unwrap_or("")
    }

    /// The request's headers, for the filters (authentication reads them).
    fn head(&self) -> tonic::Request<()> {
        let mut head = head(&self.headers, self.connection.clone());
        head.extensions_mut().insert(self.warnings.clone());
        head
    }

    /// Whether the client asked for a Table (`kubectl get`).
    fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|a| a.to_str().ok())
            .is_some_and(|a| a.split(',').next().is_some_and(|first| first.contains("as=Table")))
    }

    fn content_type(&self) -> &str {
        self.headers.get(header::CONTENT_TYPE).and_then(|c| c.to_str().ok()).unwrap_or("")
    }

    /// The body as an object of `kind` (in `group`), with unknown and
    /// duplicate fields handled as fieldValidation says.
    fn object<T: DeserializeOwned>(&self, group: &str, kind: &str) -> Result<T, ApiError> {
        let mode = self.field_validation()?;
        self.check_duplicates(mode)?;
        let protobuf = self.content_type().starts_with(protobuf::CONTENT_TYPE);
        if mode == fields::Mode::Strict && !protobuf {
            return self.strict_object();
        }
        let mut value = self.json_body()?;
        if mode != fields::Mode::Strict {
            for path in fields::prune_unknown(group, kind, &mut value) {
                if mode == fields::Mode::Warn {
                    self.warn(format!("unknown field \"{path}\""));
                }
            }
        }
        let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))?;
        berth_proto::from_json(&bytes)
            .map_err(|e| ApiError::BadRequest(format!("strict decoding error: {e}")))
    }

    /// The body decoded strictly from its text, so errors carry positions.
    fn strict_object<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let decoded = if self.content_type().contains("yaml") {
            let text = std::str::from_utf8(&self.body)
                .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
            berth_proto::from_yaml(text)
        } else {
            berth_proto::from_json(&self.body)
        };
        decoded.map_err(|e| ApiError::BadRequest(format!("strict decoding error: {e}")))
    }
}

/// A URL query (application/x-www-form-urlencoded) as a map; a repeated
/// name keeps its last value.
fn parse_query(query: &str) -> HashMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = bytes
                        .get(i + 1..i + 3)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

/// Where a request points: a resource, maybe a namespace, a name and a
/// subresource.
struct Target {
    kind: &'static RestKind,
    namespace: String,
    name: String,
    subresource: String,
}

fn parse_target(group: &str, path: &str) -> Result<Target, ApiError> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let not_found = || ApiError::NotFound { kind: "resource".into(), name: path.to_string() };
    let (namespace, rest) = match parts.as_slice() {
        ["namespaces", ns, resource, rest @ ..]
            if kinds::find(group, resource).is_some_and(|k| k.namespaced) =>
        {
            (
                ns.to_string(),
                std::iter::once(*resource).chain(rest.iter().copied()).collect::<Vec<_>>(),
            )
        }
        _ => (String::new(), parts.clone()),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [resource] => (*resource, "", ""),
        [resource, name] => (*resource, *name, ""),
        [resource, name, sub] => (*resource, *name, *sub),
        _ => return Err(not_found()),
    };
    let kind = kinds::find(group, resource).ok_or_else(not_found)?;
    if !subresource.is_empty() && !kind.subresources.contains(&subresource) {
        return Err(not_found());
    }
    Ok(Target { kind, namespace, name: name.into(), subresource: subresource.into() })
}

async fn core(
    State(api): State<Api>,
    Path(path): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<berth_tls::ConnectionInfo>>,
    body: Bytes,
) -> Response {
    serve(api, "", &path, Call::new(method, &uri, headers, body).on(connection)).await
}

async fn grouped(
    State(api): State<Api>,
    Path((group, version, path)): Path<(String, String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    connection: Option<Extension<berth_tls::ConnectionInfo>>,
    body: Bytes,
) -> Response {
    if version != "v1" {
        return error(ApiError::NotFound {
            kind: "groupversion".into(),
            name: format!("{group}/{version}"),
        });
    }
    serve(api, &group, &path, Call::new(method, &uri, headers, body).on(connection)).await
}

async fn serve(api: Api, group: &str, path: &str, mut call: Call) -> Response {
    // At most MAX_REQUEST_BODY bytes, also once a gzip body is inflated.
    let encoding = call.headers.get(header::CONTENT_ENCODING).and_then(|e| e.to_str().ok());
    match crate::filters::decode_body(encoding, call.body.clone()) {
        Ok(body) => call.body = body,
        Err(e) => return error(e),
    }
    if call.content_type().contains("yaml") {
        if let Err(e) = crate::filters::check_yaml(&call.body) {
            return error(e);
        }
    }
    let target = match parse_target(group, path) {
        Ok(t) => t,
        Err(e) => return error(e),
    };
    let api = match call.param("dryRun") {
        "" => api,
        "All" => api.dry_run(),
        other => {
            return error(ApiError::BadRequest(format!(
                "dryRun {other:?} is not supported (only All)"
            )))
        }
    };
    let api = match call.param("fieldManager") {
        "" => api,
        m if m.len() > 128 => {
            return error(ApiError::BadRequest("fieldManager is longer than 128 bytes".into()))
        }
        m => api.field_manager(m),
    };
    let result = match target.kind.kind {
        "Namespace" => handle::<Namespace>(&api, &target, &call).await,
        "Node" => handle::<Node>(&api, &target, &call).await,
        "Pod" if target.subresource == "binding" => bind(&api, &target, &call).await,
        "Pod" if target.subresource == "eviction" => eviction::evict(&api, &target, &call).await,
        "Pod" => handle::<Pod>(&api, &target, &call).await,
        "Event" => handle::<Event>(&api, &target, &call).await,
        "Deployment" if target.subresource == "scale" => {
            scale::<Deployment>(&api, &target, &call).await
        }
        "Deployment" => handle::<Deployment>(&api, &target, &call).await,
        "ReplicaSet" if target.subresource == "scale" => {
            scale::<ReplicaSet>(&api, &target, &call).await
        }
        "ReplicaSet" => handle::<ReplicaSet>(&api, &target, &call).await,
        "Lease" => handle::<Lease>(&api, &target, &call).await,
        "Role" => handle::<Role>(&api, &target, &call).await,
        "ClusterRole" => handle::<ClusterRole>(&api, &target, &call).await,
        "RoleBinding" => handle::<RoleBinding>(&api, &target, &call).await,
        "ClusterRoleBinding" => handle::<ClusterRoleBinding>(&api, &target, &call).await,
        "SelfSubjectAccessReview" | "SelfSubjectRulesReview" => {
            reviews::create(&api, &target, &call).await
        }
        _ => Err(ApiError::NotFound { kind: "resource".into(), name: path.into() }),
    };
    call.with_warnings(result.unwrap_or_else(error))
}

fn method_not_allowed(call: &Call) -> ApiError {
    ApiError::BadRequest(format!("the server does not allow {} here", call.method))
}

/// An object or a list in its JSON form, or as a Table when asked.
fn respond<T: Serialize>(
    call: &Call,
    code: StatusCode,
    kind: &str,
    value: &T,
) -> Result<Response, ApiError> {
    if call.wants_table() {
        let json = serde_json::to_value(value).map_err(|e| ApiError::Internal(e.to_string()))?;
        let rv = json
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let table = match json.get("items").and_then(Value::as_array) {
            Some(items) => {
                let cont = json.pointer("/metadata/continue").and_then(Value::as_str).unwrap_or("");
                table::table(kind, items, &rv, cont)
            }
            None => table::table(kind, std::slice::from_ref(&json), &rv, ""),
        };
        return Ok(json_response(code, &table));
    }
    Ok(json_response(code, value))
}

async fn handle<T>(api: &Api, target: &Target, call: &Call) -> Result<Response, ApiError>
where
    T: Kind + Serialize + DeserializeOwned,
{
    let head = call.head();
    let (ns, name, sub) =
        (target.namespace.as_str(), target.name.as_str(), target.subresource.as_str());
    let kind = target.kind.kind;
    match (&call.method, name.is_empty()) {
        (&Method::GET, true) if matches!(call.param("watch"), "true" | "1") => {
            watch::<T>(api, ns, call).await
        }
        (&Method::GET, true) => {
            let options = ListOptions {
                label_selector: call.param("labelSelector").into(),
                field_selector: call.param("fieldSelector").into(),
                limit: call.param("limit").parse().unwrap_or(0),
                continue_token: call.param("continue").into(),
                resource_version: call.param("resourceVersion").into(),
            };
            let result = api.list::<T>(&head, ns, &options).await?;
            let mut list = json!({
                "kind": format!("{kind}List"),
                "apiVersion": T::API_VERSION,
                "metadata": {"resourceVersion": result.resource_version},
                "items": result.items,
            });
            if !result.continue_token.is_empty() {
                list["metadata"]["continue"] = json!(result.continue_token);
            }
            respond(call, StatusCode::OK, kind, &list)
        }
        (&Method::POST, true) => {
            let mut object: T = call.object(group_of::<T>(), kind)?;
            let meta = object.metadata_mut();
            if T::NAMESPACED {
                if meta.namespace.is_empty() {
                    meta.namespace = ns.into();
                } else if !ns.is_empty() && meta.namespace != ns {
                    return Err(ApiError::BadRequest(format!(
                        "the namespace of the provided object ({}) does not match the namespace sent on the request ({ns})",
                        meta.namespace
                    )));
                }
            }
            let created = api.create(&head, object).await?;
            respond(call, StatusCode::CREATED, kind, &created)
        }
        (&Method::DELETE, true) if T::NAMESPACED || ns.is_empty() => {
            // deletecollection: every object the selectors match, each
            // deleted as a delete of its own would be.
            let options = ListOptions {
                label_selector: call.param("labelSelector").into(),
                field_selector: call.param("fieldSelector").into(),
                ..Default::default()
            };
            let listed = api.list::<T>(&head, ns, &options).await?;
            let mut deleted = Vec::new();
            for item in listed.items {
                let meta = item.metadata();
                let (request, api) = delete_request(api, &meta.namespace, &meta.name, call)?;
                match api.delete::<T>(&head, &request).await {
                    Ok(object) => deleted.push(object),
                    Err(ApiError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            let list = json!({
                "kind": format!("{kind}List"),
                "apiVersion": T::API_VERSION,
                "metadata": {"resourceVersion": listed.resource_version},
                "items": deleted,
            });
            respond(call, StatusCode::OK, kind, &list)
        }
        (&Method::GET, false) => {
            let object: T = api.get(&head, ns, name, call.param("resourceVersion")).await?;
            respond(call, StatusCode::OK, kind, &object)
        }
        (&Method::PUT, false) => {
            let mut object: T = call.object(group_of::<T>(), kind)?;
            let meta = object.metadata_mut();
            if meta.name != name {
                return Err(ApiError::BadRequest(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    meta.name
                )));
            }
            if T::NAMESPACED && meta.namespace.is_empty() {
                meta.namespace = ns.into();
            }
            let updated = match sub {
                "status" => api.update_status(&head, object).await?,
                _ => api.update(&head, object).await?,
            };
            respond(call, StatusCode::OK, kind, &updated)
        }
        (&Method::PATCH, false) if sub.is_empty() => {
            let patch_type = call.content_type().split(';').next().unwrap_or("").trim();
            if patch_type == APPLY_PATCH {
                let config = apply_config(call, group_of::<T>(), kind)?;
                let force = matches!(call.param("force"), "true" | "1");
                let applied: T = api.apply(&head, ns, name, &config, force).await?;
                return respond(call, StatusCode::OK, kind, &applied);
            }
            let request = PatchRequest {
                namespace: ns.into(),
                name: name.into(),
                patch_type: patch_type.into(),
                patch: patch_body(call, patch_type, group_of::<T>(), kind)?,
            };
            let patched: T = api.patch(&head, &request).await?;
            respond(call, StatusCode::OK, kind, &patched)
        }
        (&Method::DELETE, false) if sub.is_empty() => {
            let (request, api) = delete_request(api, ns, name, call)?;
            let deleted: T = api.delete(&head, &request).await?;
            respond(call, StatusCode::OK, kind, &deleted)
        }
        _ => Err(method_not_allowed(call)),
    }
}

/// The content type of a server-side apply.
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// A server-side apply's configuration (YAML, or JSON, which is YAML too),
/// with the fields the kind lacks dropped when fieldValidation is Warn or
/// Ignore; the apply itself decodes it strictly.
fn apply_config(call: &Call, group: &str, kind: &str) -> Result<Value, ApiError> {
    if call.param("fieldManager").is_empty() {
        return Err(ApiError::BadRequest(
            "PATCH with application/apply-patch+yaml requires the fieldManager parameter".into(),
        ));
    }
    let mode = call.field_validation()?;
    let text = std::str::from_utf8(&call.body)
        .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
    let mut config: Value = berth_proto::from_yaml(text)
        .map_err(|e| ApiError::BadRequest(format!("the apply configuration is not YAML: {e}")))?;
    if mode != fields::Mode::Strict {
        for path in fields::prune_unknown(group, kind, &mut config) {
            if mode == fields::Mode::Warn {
                call.warn(format!("unknown field \"{path}\""));
            }
        }
    }
    Ok(config)
}

/// The group of a kind, from its apiVersion ("" for the core group).
fn group_of<T: Kind>() -> &'static str {
    T::API_VERSION.rsplit_once('/').map_or("", |(group, _)| group)
}

/// A merge or strategic patch with the fields the kind lacks dropped, when
/// fieldValidation is Warn or Ignore (Strict: the patched object's strict
/// decoding refuses them).
fn patch_body(call: &Call, patch_type: &str, group: &str, kind: &str) -> Result<Vec<u8>, ApiError> {
    let mode = call.field_validation()?;
    call.check_duplicates(mode)?;
    let object_patch = matches!(
        patch_type,
        "application/merge-patch+json" | "application/strategic-merge-patch+json"
    );
    if mode == fields::Mode::Strict || !object_patch {
        return Ok(call.body.to_vec());
    }
    let mut patch: Value = serde_json::from_slice(&call.body)
        .map_err(|e| ApiError::BadRequest(format!("the patch is not JSON: {e}")))?;
    for path in fields::prune_unknown(group, kind, &mut patch) {
        if mode == fields::Mode::Warn {
            call.warn(format!("unknown field \"{path}\""));
        }
    }
    serde_json::to_vec(&patch).map_err(|e| ApiError::Internal(e.to_string()))
}

/// DeleteOptions from the body (JSON, YAML or protobuf) and the query, and
/// the API to delete through (a dry-run one when the options say dryRun).
fn delete_request(
    api: &Api,
    namespace: &str,
    name: &str,
    call: &Call,
) -> Result<(DeleteRequest, Api), ApiError> {
    let options: Value = if call.body.is_empty() { json!({}) } else { call.json_body()? };
    delete_options(api, namespace, name, &options, call)
}

/// A DeleteRequest from DeleteOptions, where the query's parameters win.
/// DeleteOptions carry dryRun themselves (`kubectl delete --dry-run=server`,
/// evictions); it means what the query parameter means.
fn delete_options(
    api: &Api,
    namespace: &str,
    name: &str,
    options: &Value,
    call: &Call,
) -> Result<(DeleteRequest, Api), ApiError> {
    let api = match options.get("dryRun").and_then(Value::as_array) {
        None => api.clone(),
        Some(modes) if modes.is_empty() => api.clone(),
        Some(modes) if modes.iter().all(|m| m == "All") => api.clone().dry_run(),
        Some(_) => return Err(ApiError::BadRequest("dryRun must be [\"All\"]".into())),
    };
    let grace = match call.param("gracePeriodSeconds") {
        "" => options.get("gracePeriodSeconds").and_then(Value::as_i64),
        g => Some(
            g.parse()
                .map_err(|_| ApiError::BadRequest("gracePeriodSeconds is not a number".into()))?,
        ),
    };
    let policy = match call.param("propagationPolicy") {
        "" => options.get("propagationPolicy").and_then(Value::as_str).unwrap_or("").to_string(),
        p => p.to_string(),
    };
    let orphan = options.get("orphanDependents").and_then(Value::as_bool);
    let policy = match (policy.as_str(), orphan) {
        ("", Some(true)) => "Orphan".to_string(),
        _ => policy,
    };
    let request = DeleteRequest {
        namespace: namespace.into(),
        name: name.into(),
        grace_period_seconds: grace,
        propagation_policy: policy,
        precondition_resource_version: options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
    };
    Ok((request, api))
}

/// A watch as a stream of JSON events, one per line; a lost watch window
/// ends it with an ERROR event holding a 410 Expired Status.
async fn watch<T>(api: &Api, namespace: &str, call: &Call) -> Result<Response, ApiError>
where
    T: Kind + Serialize,
{
    let request = WatchRequest {
        namespace: namespace.into(),
        resource_version: call.param("resourceVersion").into(),
        label_selector: call.param("labelSelector").into(),
        field_selector: call.param("fieldSelector").into(),
        allow_watch_bookmarks: matches!(call.param("allowWatchBookmarks"), "true" | "1"),
    };
    let events = api.watch::<T>(&call.head(), &request).await?;
    let table = call.wants_table();
    let lines = events.map(move |event| {
        let line = match event {
            Ok((kind, object)) => {
                let mut value = serde_json::to_value(&object).unwrap_or(Value::Null);
                if table && kind != "BOOKMARK" {
                    let rv = value
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    value = table::table(T::KIND, std::slice::from_ref(&value), &rv, "");
                }
                json!({"type": kind, "object": value})
            }
            Err(e) => json!({"type": "ERROR", "object": e.status()}),
        };
        let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
        bytes.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(bytes))
    });
    let timeout = call.param("timeoutSeconds").parse::<u64>().ok().filter(|t| *t > 0);
    let body = match timeout {
        Some(t) => Body::from_stream(lines.take_until(tokio::time::sleep(Duration::from_secs(t)))),
        None => Body::from_stream(lines),
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// pods/binding: POST a Binding.
async fn bind(api: &Api, target: &Target, call: &Call) -> Result<Response, ApiError> {
    if call.method != Method::POST {
        return Err(method_not_allowed(call));
    }
    let mut binding: Binding = call.object("", "Binding")?;
    let meta = binding.metadata.get_or_insert_with(Default::default);
    if meta.name.is_empty() {
        meta.name = target.name.clone();
    }
    meta.namespace = target.namespace.clone();
    api.bind(&call.head(), binding).await?;
    let success = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(json_response(StatusCode::CREATED, &success))
}

/// The scale subresource: GET, PUT a Scale, or PATCH one (kubectl scale).
async fn scale<T>(api: &Api, target: &Target, call: &Call) -> Result<Response, ApiError>
where
    T: Workload + Serialize,
{
    let head = call.head();
    let (ns, name) = (target.namespace.as_str(), target.name.as_str());
    let replicas = match call.method {
        Method::GET => {
            let scale = api.get_scale::<T>(&head, ns, name).await?;
            return Ok(json_response(StatusCode::OK, &scale));
        }
        Method::PUT | Method::PATCH => {
            // JSON, a JSON patch, or a protobuf Scale.
            let body: Value = call.json_body()?;
            let replicas = match body.pointer("/spec/replicas") {
                Some(r) => r.as_i64(),
                // A JSON patch: [{"op": "replace", "path": "/spec/replicas", "value": n}].
                None => body.as_array().and_then(|ops| {
                    ops.iter()
                        .find(|op| op["path"] == "/spec/replicas")
                        .and_then(|op| op["value"].as_i64())
                }),
            };
            replicas.ok_or_else(|| ApiError::BadRequest("the scale has no spec.replicas".into()))?
        }
        _ => return Err(method_not_allowed(call)),
    };
    let replicas = i32::try_from(replicas)
        .map_err(|_| ApiError::BadRequest(format!("spec.replicas {replicas} is out of range")))?;
    let request = ScaleRequest { namespace: ns.into(), name: name.into(), replicas };
    let scale = api.scale::<T>(&head, &request).await?;
    Ok(json_response(StatusCode::OK, &scale))
}

/// A request's head as the filters take it: its headers, and the connection
/// it came on.
fn head(headers: &HeaderMap, connection: Option<berth_tls::ConnectionInfo>) -> tonic::Request<()> {
    let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
    let mut extensions = tonic::Extensions::default();
    if let Some(connection) = connection {
        extensions.insert(connection);
    }
    tonic::Request::from_parts(metadata, extensions, ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_decoded() {
        let q = parse_query("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&bad=%G1&end=%4");
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(q["bad"], "%G1");
        assert_eq!(q["end"], "%4");
    }

    #[test]
    fn paths_name_resources_namespaces_names_and_subresources() {
        let t = parse_target("", "namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (t.kind.plural, t.namespace.as_str(), t.name.as_str(), t.subresource.as_str()),
            ("pods", "default", "web", "status")
        );
        let t = parse_target("", "namespaces/default").unwrap();
        assert_eq!((t.kind.plural, t.name.as_str()), ("namespaces", "default"));
        let t = parse_target("", "namespaces/kube-system/status").unwrap();
        assert_eq!(
            (t.kind.plural, t.name.as_str(), t.subresource.as_str()),
            ("namespaces", "kube-system", "status")
        );
        let t = parse_target("", "pods").unwrap();
        assert_eq!((t.kind.plural, t.namespace.as_str()), ("pods", ""));
        let t = parse_target("apps", "namespaces/x/deployments/d/scale").unwrap();
        assert_eq!((t.kind.kind, t.subresource.as_str()), ("Deployment", "scale"));
        assert!(parse_target("", "namespaces/x/deployments").is_err());
        assert!(parse_target("", "namespaces/x/pods/p/exec").is_err());
    }
}
