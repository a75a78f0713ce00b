//! The three patch formats Kubernetes clients send, applied to an object's
//! JSON form: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch (lists of named things merge by their key, as
//! Kubernetes' merge keys say for the supported types).

use crate::PatchError;
use serde_json::{Map, Value};

/// The most operations one JSON patch may have, as in Kubernetes.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// A parsed patch, ready to apply.
pub enum Patch {
    Merge(Value),
    Json(Vec<Value>),
    Strategic(Value),
}

impl Patch {
    pub fn parse(content_type: &str, body: &[u8]) -> Result<Patch, PatchError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| PatchError::BadRequest(format!("the patch is not JSON: {e}")))?;
        match content_type {
            "" | "application/merge-patch+json" => Ok(Patch::Merge(value)),
            "application/strategic-merge-patch+json" => match value {
                Value::Object(_) => Ok(Patch::Strategic(value)),
                _ => Err(PatchError::BadRequest("a strategic merge patch must be an object".into())),
            },
            "application/json-patch+json" => match value {
                Value::Array(ops) if ops.len() > MAX_JSON_PATCH_OPERATIONS => {
                    Err(PatchError::RequestEntityTooLarge(format!(
                        "the JSON patch has {} operations, more than the {MAX_JSON_PATCH_OPERATIONS} allowed",
                        ops.len()
                    )))
                }
                Value::Array(ops) => Ok(Patch::Json(ops)),
                _ => Err(PatchError::BadRequest("a JSON patch must be an array of operations".into())),
            },
            other => Err(PatchError::UnsupportedMediaType(format!(
                "{other} (patches: application/merge-patch+json, application/json-patch+json, application/strategic-merge-patch+json)"
            ))),
        }
    }

    pub fn apply(&self, document: &mut Value) -> Result<(), PatchError> {
        match self {
            Patch::Merge(patch) => {
                merge(document, patch);
                Ok(())
            }
            Patch::Json(ops) => json_patch(document, ops),
            Patch::Strategic(patch) => strategic(document, patch, ""),
        }
    }
}

/// RFC 7386: objects merge key by key, null removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("made an object just above");
    for (key, value) in patch_map {
        if value.is_null() {
            target_map.remove(key);
        } else {
            merge(target_map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn bad(message: impl Into<String>) -> PatchError {
    PatchError::BadRequest(format!("the JSON patch cannot be applied: {}", message.into()))
}

/// A JSON pointer's reference tokens, unescaped (~1 is /, ~0 is ~).
fn tokens(pointer: &str) -> Result<Vec<String>, PatchError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| bad(format!("path {pointer:?} does not start with /")))?;
    Ok(rest.split('/').map(|t| t.replace("~1", "/").replace("~0", "~")).collect())
}

fn parent<'a>(
    document: &'a mut Value,
    tokens: &[String],
    path: &str,
) -> Result<&'a mut Value, PatchError> {
    let mut at = document;
    for t in tokens {
        at = match at {
            Value::Object(m) => m.get_mut(t),
            Value::Array(a) => t.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| bad(format!("path {path:?} does not exist")))?;
    }
    Ok(at)
}

fn add(document: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let tokens = tokens(path)?;
    let Some((last, up)) = tokens.split_last() else {
        *document = value;
        return Ok(());
    };
    match parent(document, up, path)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse().map_err(|_| bad(format!("{last:?} is not an index")))?
            };
            if i > a.len() {
                return Err(bad(format!("index {i} is past the end of {path:?}")));
            }
            a.insert(i, value);
        }
        _ => {
            return Err(bad(format!("{path:?} is inside a value that is neither object nor array")))
        }
    }
    Ok(())
}

fn remove(document: &mut Value, path: &str) -> Result<Value, PatchError> {
    let tokens = tokens(path)?;
    let Some((last, up)) = tokens.split_last() else {
        return Err(bad("the whole document cannot be removed"));
    };
    let missing = || bad(format!("path {path:?} does not exist"));
    match parent(document, up, path)? {
        Value::Object(m) => m.remove(last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            (i < a.len()).then(|| a.remove(i)).ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

/// The most all of a JSON patch's copy operations together may copy: each
/// copy can double the document, so an unbounded small patch could build an
/// object of any size.
const MAX_COPIED_BYTES: usize = 3 << 20;

/// The value at `path`, if its JSON form fits in `budget` bytes, with that size.
fn copy_within(
    document: &mut Value,
    path: &str,
    budget: usize,
) -> Result<(Value, usize), PatchError> {
    let source = parent(document, &tokens(path)?, path)?;
    let mut counter = Counter { written: 0, budget };
    serde_json::to_writer(&mut counter, source).map_err(|_| {
        bad(format!("the copy operations copy more than {MAX_COPIED_BYTES} bytes in all"))
    })?;
    Ok((source.clone(), counter.written))
}

/// Counts bytes written, failing once they pass a budget.
struct Counter {
    written: usize,
    budget: usize,
}

impl std::io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.written += bytes.len();
        if self.written > self.budget {
            return Err(std::io::Error::other("over budget"));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// RFC 6902: the operations in order; any failure leaves the object as it
/// was (the caller applies to a copy).
fn json_patch(document: &mut Value, ops: &[Value]) -> Result<(), PatchError> {
    let mut copied = 0;
    for op in ops {
        let field = |name: &str| {
            op.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("an operation lacks {name:?}")))
        };
        let path = field("path")?;
        let value = || op.get("value").cloned().ok_or_else(|| bad("an operation lacks \"value\""));
        match field("op")? {
            "add" => add(document, path, value()?)?,
            "remove" => {
                remove(document, path)?;
            }
            "replace" => {
                remove(document, path)?;
                add(document, path, value()?)?;
            }
            "move" => {
                let moved = remove(document, field("from")?)?;
                add(document, path, moved)?;
            }
            "copy" => {
                let (value, size) =
                    copy_within(document, field("from")?, MAX_COPIED_BYTES - copied)?;
                copied += size;
                add(document, path, value)?;
            }
            "test" => {
                let expected = value()?;
                if *parent(document, &tokens(path)?, path)? != expected {
                    return Err(bad(format!("test failed at {path:?}")));
                }
            }
            other => return Err(bad(format!("unknown operation {other:?}"))),
        }
    }
    Ok(())
}

/// The key that identifies an item in a list field, where Kubernetes
/// merges that list by key rather than replacing it.
pub(crate) fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        _ => return None,
    })
}

/// Lists of plain values that merge as sets.
pub(crate) fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge patch, with the directives kubectl sends: `$patch`
/// (replace, delete, merge), `$deleteFromPrimitiveList/<field>`, and the
/// ordering hints `$setElementOrder/<field>` and `$retainKeys` (applied as
/// ordinary merges).
pub(crate) fn strategic(target: &mut Value, patch: &Value, _field: &str) -> Result<(), PatchError> {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return Ok(());
    };
    match patch_map.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replacement = patch_map.clone();
            replacement.remove("$patch");
            *target = Value::Object(replacement);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some("merge") | None => {}
        Some(other) => {
            return Err(PatchError::BadRequest(format!("unknown $patch directive {other:?}")))
        }
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target_map = target.as_object_mut().expect("made an object just above");
    for (key, value) in patch_map {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(gone)) =
                (target_map.get_mut(field), value.as_array())
            {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if value.is_null() {
            target_map.remove(key);
            continue;
        }
        match (value, merge_key(key)) {
            (Value::Array(items), Some(merge_key)) => {
                let existing = target_map.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(existing, items, merge_key)?;
            }
            (Value::Array(items), None) if merges_as_set(key) => {
                let existing = target_map.entry(key.clone()).or_insert(Value::Array(Vec::new()));
                if let Value::Array(list) = existing {
                    for item in items {
                        if !list.contains(item) {
                            list.push(item.clone());
                        }
                    }
                } else {
                    *existing = value.clone();
                }
            }
            (Value::Object(_), _) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                strategic(slot, value, key)?;
                if slot.is_null() {
                    target_map.remove(key);
                }
            }
            _ => {
                target_map.insert(key.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// Merges a list of keyed items: an item with a known key merges into it,
/// a new one is appended, `$patch: delete` removes, and a `$patch: replace`
/// item makes the patch's list replace the whole list.
fn merge_list(target: &mut Value, items: &[Value], key: &str) -> Result<(), PatchError> {
    let replace = items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    if replace || !target.is_array() {
        let kept: Vec<Value> =
            items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
        *target = Value::Array(kept);
        return Ok(());
    }
    let list = target.as_array_mut().expect("checked to be an array above");
    for item in items {
        let Some(id) = item.get(key).cloned() else {
            list.push(item.clone());
            continue;
        };
        let position = list.iter().position(|t| t.get(key) == Some(&id));
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = position {
                list.remove(i);
            }
            continue;
        }
        match position {
            Some(i) => strategic(&mut list[i], item, key)?,
            None => {
                let mut fresh = Value::Null;
                strategic(&mut fresh, item, key)?;
                list.push(fresh);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn apply(kind: &str, doc: Value, patch: Value) -> Result<Value, PatchError> {
        let mut doc = doc;
        Patch::parse(kind, &serde_json::to_vec(&patch).unwrap())?.apply(&mut doc)?;
        Ok(doc)
    }

    #[test]
    fn json_patches_have_at_most_ten_thousand_operations() {
        let op = json!({"op": "test", "path": "/a", "value": 1});
        let body = |n: usize| serde_json::to_vec(&vec![op.clone(); n]).unwrap();
        let ok = Patch::parse("application/json-patch+json", &body(MAX_JSON_PATCH_OPERATIONS));
        assert!(ok.is_ok());
        let too_many =
            Patch::parse("application/json-patch+json", &body(MAX_JSON_PATCH_OPERATIONS + 1));
        assert!(matches!(too_many, Err(PatchError::RequestEntityTooLarge(_))));
    }

    #[test]
    fn json_patch_follows_rfc_6902() {
        let doc =
            json!({"spec": {"replicas": 1, "list": [1, 2]}, "metadata": {"labels": {"a/b": "x"}}});
        let out = apply(
            "application/json-patch+json",
            doc.clone(),
            json!([
                {"op": "replace", "path": "/spec/replicas", "value": 3},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "add", "path": "/spec/list/0", "value": 0},
                {"op": "remove", "path": "/metadata/labels/a~1b"},
                {"op": "copy", "from": "/spec/replicas", "path": "/spec/copy"},
                {"op": "move", "from": "/spec/copy", "path": "/spec/moved"},
                {"op": "test", "path": "/spec/moved", "value": 3}
            ]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"spec": {"replicas": 3, "list": [0, 1, 2, 3], "moved": 3}, "metadata": {"labels": {}}})
        );
        let failed = apply(
            "application/json-patch+json",
            doc.clone(),
            json!([{"op": "test", "path": "/spec/replicas", "value": 9}]),
        );
        assert!(failed.is_err());
        assert!(apply(
            "application/json-patch+json",
            doc,
            json!([{"op": "remove", "path": "/nope"}])
        )
        .is_err());
    }

    #[test]
    fn strategic_merge_merges_containers_by_name_and_env_by_name() {
        let doc = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "sidecar", "image": "s:1"}
        ], "tolerations": [{"key": "x"}]}});
        let out = apply("application/strategic-merge-patch+json", doc, json!({"spec": {
            "containers": [
                {"name": "app", "image": "a:2", "env": [{"name": "B", "$patch": "delete"}, {"name": "C", "value": "3"}]},
                {"name": "sidecar", "$patch": "delete"},
                {"name": "new", "image": "n:1"}
            ],
            "tolerations": [{"key": "y"}]
        }})).unwrap();
        assert_eq!(
            out,
            json!({"spec": {"containers": [
            {"name": "app", "image": "a:2", "env": [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]},
            {"name": "new", "image": "n:1"}
        ], "tolerations": [{"key": "y"}]}})
        );
    }

    #[test]
    fn strategic_merge_directives() {
        let doc = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}, "spec": {"ports": [{"containerPort": 80}]}});
        let out = apply("application/strategic-merge-patch+json", doc, json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"], "labels": {"$patch": "replace", "z": "3"}},
            "spec": {"ports": [{"$patch": "replace"}, {"containerPort": 8080}], "$setElementOrder/ports": [{"containerPort": 8080}]}
        })).unwrap();
        assert_eq!(
            out,
            json!({"metadata": {"finalizers": ["b", "c"], "labels": {"z": "3"}}, "spec": {"ports": [{"containerPort": 8080}]}})
        );
    }

    #[test]
    fn copies_that_double_the_document_stop_at_a_bound() {
        let doubling: Vec<Value> =
            (0..64).map(|i| json!({"op": "copy", "from": "", "path": format!("/{i}")})).collect();
        let err = apply("application/json-patch+json", json!({"x": "y"}), Value::Array(doubling))
            .unwrap_err();
        assert!(err.to_string().contains("copy operations copy more than"), "{err}");
        let out = apply(
            "application/json-patch+json",
            json!({"a": [1]}),
            json!([{"op": "copy", "from": "/a", "path": "/b"}, {"op": "copy", "from": "/a/0", "path": "/a/-"}]),
        )
        .unwrap();
        assert_eq!(out, json!({"a": [1, 1], "b": [1]}));
    }

    #[test]
    fn an_unknown_patch_type_is_refused() {
        assert!(matches!(
            Patch::parse("application/apply-patch+yaml", b"{}"),
            Err(PatchError::UnsupportedMediaType(_))
        ));
    }
}
