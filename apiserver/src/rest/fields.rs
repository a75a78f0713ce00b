//! Server-side field validation (the fieldValidation query parameter):
//! which fields of a request body the served objects do not have, and which
//! a JSON body names twice. Strict refuses them, Warn drops them with a
//! warning, Ignore drops them silently. Fields are known from the OpenAPI
//! schemas, which come from the same descriptors as the decoders.

use super::schemas::schemas;
use crate::error::ApiError;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// What to do with an unknown or duplicate field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Strict,
    Warn,
    Ignore,
}

impl Mode {
    /// The fieldValidation parameter; berth decodes strictly unless told
    /// otherwise.
    pub(super) fn parse(param: &str) -> Result<Mode, ApiError> {
        match param {
            "" | "Strict" => Ok(Mode::Strict),
            "Warn" => Ok(Mode::Warn),
            "Ignore" => Ok(Mode::Ignore),
            other => Err(ApiError::BadRequest(format!(
                "fieldValidation {other:?} is not one of Strict, Warn, Ignore"
            ))),
        }
    }
}

/// The schema of one kind, by its Kubernetes kind name and group.
fn kind_schema(group: &str, kind: &str) -> Option<&'static Value> {
    schemas().values().find(|s| {
        let gvk = &s["x-kubernetes-group-version-kind"][0];
        gvk["kind"] == kind && gvk["group"] == group
    })
}

/// The schema a property refers to, following `allOf: [{$ref}]`.
fn resolve(schema: &Value) -> &Value {
    let reference = schema.pointer("/allOf/0/$ref").or_else(|| schema.get("$ref"));
    match reference.and_then(Value::as_str) {
        Some(r) => {
            r.rsplit('/').next().and_then(|name| schemas().get(name)).unwrap_or(&Value::Null)
        }
        None => schema,
    }
}

/// Removes the fields of `value` that the kind does not have and returns
/// their paths (`spec.containers[0].imagee`). Keys that start with `$` are
/// patch directives and stay.
pub(super) fn prune_unknown(group: &str, kind: &str, value: &mut Value) -> Vec<String> {
    let mut unknown = Vec::new();
    if let Some(schema) = kind_schema(group, kind) {
        prune(schema, value, "", &mut unknown);
    }
    unknown
}

fn prune(schema: &Value, value: &mut Value, path: &str, unknown: &mut Vec<String>) {
    let schema = resolve(schema);
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                prune_object(properties, map, path, unknown);
            } else if let Some(values) = schema.get("additionalProperties") {
                for (key, v) in map.iter_mut() {
                    prune(values, v, &join(path, key), unknown);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(item_schema, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

fn prune_object(
    properties: &Map<String, Value>,
    map: &mut Map<String, Value>,
    path: &str,
    unknown: &mut Vec<String>,
) {
    map.retain(|key, _| {
        let known = properties.contains_key(key) || key.starts_with('$');
        if !known {
            unknown.push(join(path, key));
        }
        known
    });
    for (key, v) in map.iter_mut() {
        if let Some(property) = properties.get(key) {
            prune(property, v, &join(path, key), unknown);
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// The paths of the keys a JSON document names twice in one object (serde
/// would keep the last one silently for maps, and for a Value).
pub(super) fn duplicate_fields(body: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    // A body that is not JSON fails later with a clear decoding error.
    let _ = Walk { path: String::new(), found: &mut found }.deserialize(&mut de);
    found
}

/// Walks a JSON document, recording duplicate keys by path.
struct Walk<'a> {
    path: String,
    found: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while seq
            .next_element_seed(Walk { path: format!("{}[{i}]", self.path), found: self.found })?
            .is_some()
        {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join(&self.path, &key);
            if !seen.insert(key) {
                self.found.push(path.clone());
            }
            map.next_value_seed(Walk { path, found: self.found })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_pruned_with_their_paths() {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "labels": {"any": "x"}, "colour": "red"},
            "spec": {"containers": [{"name": "c", "image": "i", "imagee": "typo"}]},
            "extra": 1
        });
        let mut unknown = prune_unknown("", "Pod", &mut pod);
        unknown.sort();
        assert_eq!(unknown, ["extra", "metadata.colour", "spec.containers[0].imagee"]);
        assert_eq!(
            pod,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"any": "x"}},
                   "spec": {"containers": [{"name": "c", "image": "i"}]}})
        );
        let mut patch = json!({"spec": {"$setElementOrder/containers": [], "replicas": 2, "x": 1}});
        assert_eq!(prune_unknown("apps", "Deployment", &mut patch), ["spec.x"]);
    }

    #[test]
    fn duplicate_keys_are_found_at_any_depth() {
        let body = br#"{"metadata": {"name": "a", "labels": {"x": "1", "x": "2"}}, "spec": [{"a": 1, "a": 2}], "kind": "P"}"#;
        assert_eq!(duplicate_fields(body), ["metadata.labels.x", "spec[0].a"]);
        assert!(duplicate_fields(br#"{"a": {"b": 1}, "c": {"b": 2}}"#).is_empty());
    }
}
