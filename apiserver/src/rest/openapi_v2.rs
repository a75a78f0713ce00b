//! /openapi/v2: the served objects as one Swagger 2.0 document, in JSON, or
//! in the protobuf form of gnostic's openapi_v2.Document that older kubectl
//! releases (1.27's apply and explain) ask for. Built from the same schemas
//! as the OpenAPI v3 documents.

use super::kinds::{KINDS, REVIEWS};
use super::schemas::schemas;
use prost::encoding::{encode_key, encode_varint, WireType};
use serde_json::{json, Map, Value};
use std::sync::OnceLock;

/// The content type of the protobuf form.
pub(super) const PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The document in JSON.
pub(super) fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

/// The document in gnostic's protobuf encoding.
pub(super) fn protobuf() -> &'static [u8] {
    static ENCODED: OnceLock<Vec<u8>> = OnceLock::new();
    ENCODED.get_or_init(|| encode_document(document()))
}

fn build() -> Value {
    let definitions: Map<String, Value> =
        schemas().iter().map(|(name, schema)| (name.clone(), to_v2(schema))).collect();
    let mut paths = Map::new();
    for k in KINDS.iter().filter(|k| k.group != REVIEWS) {
        let gv =
            if k.group.is_empty() { "api/v1".to_string() } else { format!("apis/{}/v1", k.group) };
        let gvk = json!({"group": k.group, "version": "v1", "kind": k.kind});
        let scope = if k.namespaced { "/namespaces/{namespace}" } else { "" };
        let op = |verb: &str, params: &[&str]| {
            let parameters: Vec<Value> = params
                .iter()
                .map(|p| json!({"name": p, "in": "query", "type": "string", "uniqueItems": true}))
                .collect();
            json!({
                "operationId": format!("{verb}{}", k.kind),
                "parameters": parameters,
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
            })
        };
        let writes = ["dryRun", "fieldManager", "fieldValidation"];
        paths.insert(
            format!("/{gv}{scope}/{}/{{name}}", k.plural),
            json!({
                "get": op("get", &[]),
                "put": op("put", &writes),
                "patch": op("patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
                "delete": op("delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
            }),
        );
        paths.insert(
            format!("/{gv}{scope}/{}", k.plural),
            json!({
                "get": op("list", &["labelSelector", "fieldSelector", "watch"]),
                "post": op("post", &writes),
            }),
        );
    }
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "definitions": definitions,
    })
}

/// A v3 schema in Swagger 2.0's terms: plain `$ref`s to definitions, and
/// int-or-string as Kubernetes writes it there.
fn to_v2(schema: &Value) -> Value {
    let mut out = Map::new();
    if let Some(d) = schema.get("description") {
        out.insert("description".into(), d.clone());
    }
    if schema.get("x-kubernetes-int-or-string").is_some() {
        out.insert("type".into(), json!("string"));
        out.insert("format".into(), json!("int-or-string"));
        return Value::Object(out);
    }
    if let Some(r) = schema.pointer("/allOf/0/$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        out.insert("$ref".into(), json!(format!("#/definitions/{name}")));
        return Value::Object(out);
    }
    for key in ["type", "format", "x-kubernetes-group-version-kind"] {
        if let Some(v) = schema.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let converted: Map<String, Value> =
            properties.iter().map(|(k, v)| (k.clone(), to_v2(v))).collect();
        out.insert("properties".into(), Value::Object(converted));
    }
    for key in ["items", "additionalProperties"] {
        if let Some(v) = schema.get(key) {
            out.insert(key.into(), to_v2(v));
        }
    }
    Value::Object(out)
}

// gnostic's openapi_v2 messages, by field number: only what the document
// above uses.

fn string(tag: u32, value: &str, buf: &mut Vec<u8>) {
    message(tag, value.as_bytes(), buf);
}

fn message(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

fn text(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

fn encode_document(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(1, &text(doc, "swagger"), &mut out);
    let mut info = Vec::new();
    string(1, &text(&doc["info"], "title"), &mut info);
    string(2, &text(&doc["info"], "version"), &mut info);
    message(2, &info, &mut out);
    let mut paths = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let mut encoded = Vec::new();
        for (verb, tag) in [("get", 2), ("put", 3), ("post", 4), ("delete", 5), ("patch", 8)] {
            if let Some(op) = item.get(verb) {
                message(tag, &operation(op), &mut encoded);
            }
        }
        message(2, &named(path, &encoded), &mut paths);
    }
    message(8, &paths, &mut out);
    let mut definitions = Vec::new();
    for (name, schema) in doc["definitions"].as_object().into_iter().flatten() {
        message(1, &named(name, &encode_schema(schema)), &mut definitions);
    }
    message(9, &definitions, &mut out);
    out
}

/// A (name, value) pair, as gnostic writes every map.
fn named(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    string(1, name, &mut out);
    message(2, value, &mut out);
    out
}

/// An `x-` extension: its value as YAML text (JSON is YAML) in an Any.
fn extension(name: &str, value: &Value, tag: u32, buf: &mut Vec<u8>) {
    let mut any = Vec::new();
    string(2, &format!("{value}\n"), &mut any);
    message(tag, &named(name, &any), buf);
}

fn operation(op: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(5, &text(op, "operationId"), &mut out);
    for p in op["parameters"].as_array().into_iter().flatten() {
        let mut query = Vec::new();
        string(2, &text(p, "in"), &mut query);
        string(4, &text(p, "name"), &mut query);
        string(6, &text(p, "type"), &mut query);
        encode_key(20, WireType::Varint, &mut query);
        encode_varint(1, &mut query);
        let mut non_body = Vec::new();
        message(3, &query, &mut non_body);
        let mut parameter = Vec::new();
        message(2, &non_body, &mut parameter);
        let mut item = Vec::new();
        message(1, &parameter, &mut item);
        message(8, &item, &mut out);
    }
    let mut responses = Vec::new();
    for (code, response) in op["responses"].as_object().into_iter().flatten() {
        let mut r = Vec::new();
        string(1, &text(response, "description"), &mut r);
        let mut value = Vec::new();
        message(1, &r, &mut value);
        message(1, &named(code, &value), &mut responses);
    }
    message(9, &responses, &mut out);
    for (key, value) in op.as_object().into_iter().flatten() {
        if key.starts_with("x-") {
            extension(key, value, 13, &mut out);
        }
    }
    out
}

fn encode_schema(schema: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        string(1, r, &mut out);
    }
    if let Some(f) = schema.get("format").and_then(Value::as_str) {
        string(2, f, &mut out);
    }
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        string(4, d, &mut out);
    }
    if let Some(additional) = schema.get("additionalProperties") {
        let mut item = Vec::new();
        message(1, &encode_schema(additional), &mut item);
        message(21, &item, &mut out);
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let mut types = Vec::new();
        string(1, t, &mut types);
        message(22, &types, &mut out);
    }
    if let Some(items) = schema.get("items") {
        let mut item = Vec::new();
        message(1, &encode_schema(items), &mut item);
        message(23, &item, &mut out);
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        let mut encoded = Vec::new();
        for (name, property) in properties {
            message(1, &named(name, &encode_schema(property)), &mut encoded);
        }
        message(25, &encoded, &mut out);
    }
    for (key, value) in schema.as_object().into_iter().flatten() {
        if key.starts_with("x-") {
            extension(key, value, 31, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_use_swagger_2_references_and_kinds_their_gvk() {
        let doc = document();
        let deployment = &doc["definitions"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert_eq!(deployment["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        let strategy = &doc["definitions"]["io.k8s.api.apps.v1.RollingUpdateDeployment"];
        assert_eq!(strategy["properties"]["maxSurge"]["format"], "int-or-string");
        let patch =
            &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert!(patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        // The protobuf form starts with the swagger version (field 1).
        assert!(protobuf().starts_with(&[10, 3, b'2', b'.', b'0']));
    }
}
