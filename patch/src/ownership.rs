//! Server-side apply and managed fields, on objects' JSON forms.
//!
//! Every write records who set which fields in metadata.managedFields: one
//! entry per manager and operation (Apply or Update), each a FieldsV1 set.
//! An apply sets the fields of its configuration, refuses (Conflict, one
//! cause per field) to change a value another manager owns unless forced —
//! forcing takes the field over — and removes the fields it applied before
//! but no longer does, when no other manager owns them. An update takes
//! over the fields it changes. Lists merge as strategic merge patch merges
//! them: by their merge key, as sets, or whole (atomic).

use crate::formats::{merge_key, merges_as_set, strategic};
use crate::PatchError;
use berth_proto::meta_v1::{ManagedFieldsEntry, StatusCause};
use berth_proto::{FieldsV1, Time};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// One owned field: the FieldsV1 keys from the object's root (`f:spec`,
/// `k:{"name":"app"}`, `v:"x"`, `.` for a list item itself).
type Path = Vec<String>;

/// Fields no manager owns: identity, bookkeeping, and the status (written
/// through its own subresource).
fn untracked(path: &[&str]) -> bool {
    matches!(
        path,
        ["f:apiVersion"]
            | ["f:kind"]
            | ["f:status"]
            | ["f:metadata", "f:name"]
            | ["f:metadata", "f:namespace"]
            | ["f:metadata", "f:uid"]
            | ["f:metadata", "f:resourceVersion"]
            | ["f:metadata", "f:generation"]
            | ["f:metadata", "f:creationTimestamp"]
            | ["f:metadata", "f:deletionTimestamp"]
            | ["f:metadata", "f:deletionGracePeriodSeconds"]
            | ["f:metadata", "f:managedFields"]
            | ["f:metadata", "f:generateName"]
    )
}

/// The key of a keyed list item, as FieldsV1 writes it.
fn item_key(key: &str, id: &Value) -> String {
    let mut object = Map::new();
    object.insert(key.to_string(), id.clone());
    format!("k:{}", Value::Object(object))
}

/// Every field `value` sets, as leaf paths.
fn leaves(value: &Value) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    walk(value, &mut Vec::new(), &mut out);
    out
}

fn walk(value: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(map) = value.as_object() else {
        out.insert(path.clone());
        return;
    };
    if map.is_empty() && !path.is_empty() {
        out.insert(path.clone());
    }
    for (key, v) in map {
        path.push(format!("f:{key}"));
        let names: Vec<&str> = path.iter().map(String::as_str).collect();
        if untracked(&names) {
            path.pop();
            continue;
        }
        match (v, merge_key(key)) {
            (Value::Array(items), Some(merge_key)) => {
                for item in items {
                    match item.get(merge_key) {
                        Some(id) => {
                            path.push(item_key(merge_key, id));
                            path.push(".".into());
                            out.insert(path.clone());
                            path.pop();
                            walk(item, path, out);
                            path.pop();
                        }
                        None => {
                            out.insert(path.clone());
                        }
                    }
                }
                if items.is_empty() {
                    out.insert(path.clone());
                }
            }
            (Value::Array(items), None) if merges_as_set(key) => {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
                if items.is_empty() {
                    out.insert(path.clone());
                }
            }
            _ => walk(v, path, out),
        }
        path.pop();
    }
}

/// The value at a path, if the document has it.
fn value_at<'a>(mut at: &'a Value, path: &[String]) -> Option<&'a Value> {
    for segment in path {
        at = step(at, segment)?;
    }
    Some(at)
}

fn step<'a>(at: &'a Value, segment: &str) -> Option<&'a Value> {
    if segment == "." {
        return Some(at);
    }
    if let Some(name) = segment.strip_prefix("f:") {
        return at.get(name);
    }
    let items = at.as_array()?;
    if let Some(key) = segment.strip_prefix("k:") {
        let key: Map<String, Value> = serde_json::from_str(key).ok()?;
        return items.iter().find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)));
    }
    let wanted: Value = serde_json::from_str(segment.strip_prefix("v:")?).ok()?;
    items.iter().find(|item| **item == wanted)
}

/// Removes the field at a path (a `.` path removes the list item).
fn remove_at(document: &mut Value, path: &[String]) {
    let path = match path.last().map(String::as_str) {
        Some(".") => &path[..path.len() - 1],
        _ => path,
    };
    let Some((last, up)) = path.split_last() else { return };
    let mut at = document;
    for segment in up {
        let next = match segment.strip_prefix("f:") {
            Some(name) => at.get_mut(name),
            None => {
                let Some(position) = position(at, segment) else { return };
                at.as_array_mut().and_then(|items| items.get_mut(position))
            }
        };
        match next {
            Some(next) => at = next,
            None => return,
        }
    }
    match last.strip_prefix("f:") {
        Some(name) => {
            if let Some(map) = at.as_object_mut() {
                map.remove(name);
            }
        }
        None => {
            if let Some(i) = position(at, last) {
                if let Some(items) = at.as_array_mut() {
                    items.remove(i);
                }
            }
        }
    }
}

fn position(list: &Value, segment: &str) -> Option<usize> {
    let found = step(list, segment)?;
    list.as_array()?.iter().position(|item| std::ptr::eq(item, found))
}

/// A set of leaf paths as a FieldsV1 tree.
fn to_fields(paths: &BTreeSet<Path>) -> FieldsV1 {
    let mut root = Map::new();
    for path in paths {
        let mut at = &mut root;
        for segment in path {
            let next = at.entry(segment.clone()).or_insert_with(|| json!({}));
            match next {
                Value::Object(map) => at = map,
                _ => break,
            }
        }
    }
    FieldsV1(root)
}

/// A FieldsV1 tree as its leaf paths.
fn from_fields(fields: Option<&FieldsV1>) -> BTreeSet<Path> {
    let mut out = BTreeSet::new();
    if let Some(fields) = fields {
        collect(&fields.0, &mut Vec::new(), &mut out);
    }
    out
}

fn collect(map: &Map<String, Value>, path: &mut Path, out: &mut BTreeSet<Path>) {
    for (key, value) in map {
        path.push(key.clone());
        match value.as_object() {
            Some(inner) if !inner.is_empty() => collect(inner, path, out),
            _ => {
                out.insert(path.clone());
            }
        }
        path.pop();
    }
}

/// A path as Kubernetes prints it in a conflict: `.spec.replicas`,
/// `.spec.containers[name="app"].image`.
fn display(path: &[String]) -> String {
    let mut out = String::new();
    for segment in path {
        if let Some(name) = segment.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(key) = segment.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            let terms: Vec<String> = key.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", terms.join(",")));
        } else if let Some(value) = segment.strip_prefix("v:") {
            out.push_str(&format!("[={value}]"));
        }
    }
    out
}

/// Who is writing, and how.
pub struct Manager<'a> {
    pub name: &'a str,
    /// The apiVersion the manager wrote in.
    pub api_version: &'a str,
}

fn entry<'a>(
    managed: &'a mut Vec<ManagedFieldsEntry>,
    manager: &Manager,
    operation: &str,
) -> &'a mut ManagedFieldsEntry {
    let i = match managed.iter().position(|e| {
        e.manager == manager.name && e.operation == operation && e.subresource.is_empty()
    }) {
        Some(i) => i,
        None => {
            managed.push(ManagedFieldsEntry {
                manager: manager.name.into(),
                operation: operation.into(),
                api_version: manager.api_version.into(),
                fields_type: "FieldsV1".into(),
                ..Default::default()
            });
            managed.len() - 1
        }
    };
    &mut managed[i]
}

/// Sets an entry's fields, stamping it with the time.
fn set_fields(entry: &mut ManagedFieldsEntry, fields: &BTreeSet<Path>) {
    entry.fields_v1 = Some(to_fields(fields));
    entry.time = Some(Time::now());
}

/// After a write: entries that own nothing go.
fn drop_empty(managed: &mut Vec<ManagedFieldsEntry>) {
    managed.retain(|e| e.fields_v1.as_ref().is_some_and(|f| !f.0.is_empty()));
}

/// Records an update (create, update, patch, scale) by `manager`: it owns
/// what it changed, taken from whoever owned it; fields it removed belong
/// to no one. `old` is None for a create.
pub fn track_update(
    old: Option<&Value>,
    new: &Value,
    managed: &mut Vec<ManagedFieldsEntry>,
    manager: &Manager,
) {
    let now = leaves(new);
    let before = old.map(leaves).unwrap_or_default();
    let changed: BTreeSet<Path> = now
        .iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    let removed: BTreeSet<Path> = before.difference(&now).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        return;
    }
    for e in managed.iter_mut() {
        let owned = from_fields(e.fields_v1.as_ref());
        let kept: BTreeSet<Path> = owned
            .iter()
            .filter(|p| !changed.contains(*p) && !removed.contains(*p))
            .cloned()
            .collect();
        if kept.len() != owned.len() {
            e.fields_v1 = Some(to_fields(&kept));
        }
    }
    let mine = entry(managed, manager, "Update");
    let mut owned = from_fields(mine.fields_v1.as_ref());
    owned.extend(changed);
    set_fields(mine, &owned);
    drop_empty(managed);
}

/// A server-side apply of `config` onto `current` (None: the object does
/// not exist yet) by `manager`: the object to store, with `managed` updated.
/// A refused apply leaves `managed` as it was, forced or not.
pub fn apply(
    kind: &str,
    name: &str,
    current: Option<&Value>,
    config: &Value,
    managed: &mut Vec<ManagedFieldsEntry>,
    manager: &Manager,
    force: bool,
) -> Result<Value, PatchError> {
    let mut updated = managed.clone();
    let object = apply_to(kind, name, current, config, &mut updated, manager, force)?;
    *managed = updated;
    Ok(object)
}

fn apply_to(
    kind: &str,
    name: &str,
    current: Option<&Value>,
    config: &Value,
    managed: &mut Vec<ManagedFieldsEntry>,
    manager: &Manager,
    force: bool,
) -> Result<Value, PatchError> {
    let applied = leaves(config);
    let mut conflicts = Vec::new();
    for e in managed.iter_mut().filter(|e| e.manager != manager.name) {
        let owned = from_fields(e.fields_v1.as_ref());
        let contested: BTreeSet<Path> = owned
            .intersection(&applied)
            .filter(|p| p.last().is_some_and(|s| s != "."))
            .filter(|p| current.and_then(|c| value_at(c, p)) != value_at(config, p))
            .cloned()
            .collect();
        if contested.is_empty() {
            continue;
        }
        if force {
            let kept: BTreeSet<Path> = owned.difference(&contested).cloned().collect();
            e.fields_v1 = Some(to_fields(&kept));
        } else {
            for p in &contested {
                conflicts.push(StatusCause {
                    reason: "FieldManagerConflict".into(),
                    message: format!("conflict with {:?} using {}", e.manager, e.api_version),
                    field: display(p),
                });
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(PatchError::FieldConflicts {
            kind: kind.into(),
            name: name.into(),
            causes: conflicts,
        });
    }
    let mut object = current.cloned().unwrap_or_else(|| json!({}));
    // What this manager applied before and applies no more goes, unless
    // someone else owns it (or something inside it).
    let previous = managed
        .iter()
        .find(|e| e.manager == manager.name && e.operation == "Apply")
        .map(|e| from_fields(e.fields_v1.as_ref()))
        .unwrap_or_default();
    let others: BTreeSet<Path> = managed
        .iter()
        .filter(|e| !(e.manager == manager.name && e.operation == "Apply"))
        .flat_map(|e| from_fields(e.fields_v1.as_ref()))
        .collect();
    let mut gone: Vec<&Path> = previous
        .difference(&applied)
        .filter(|p| {
            let base = match p.last().map(String::as_str) {
                Some(".") => &p[..p.len() - 1],
                _ => &p[..],
            };
            !others.iter().any(|o| o.starts_with(base))
                && !applied.iter().any(|a| a.starts_with(base))
        })
        .collect();
    // Deepest first, so a removed list item does not shift another's path.
    gone.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in gone {
        remove_at(&mut object, p);
    }
    strategic(&mut object, config, "")?;
    set_fields(entry(managed, manager, "Apply"), &applied);
    drop_empty(managed);
    Ok(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubectl() -> Manager<'static> {
        Manager { name: "kubectl", api_version: "apps/v1" }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "app", "image": image}]}}}})
    }

    #[test]
    fn field_sets_name_keyed_items_and_skip_bookkeeping() {
        let fields = to_fields(&leaves(&deployment(2, "nginx")));
        assert_eq!(
            Value::Object(fields.0),
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                       "k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:image": {}}}}}}})
        );
        let doc = deployment(2, "nginx");
        let image: Path =
            ["f:spec", "f:template", "f:spec", "f:containers", "k:{\"name\":\"app\"}", "f:image"]
                .map(String::from)
                .to_vec();
        assert_eq!(value_at(&doc, &image), Some(&json!("nginx")));
        assert_eq!(display(&image), ".spec.template.spec.containers[name=\"app\"].image");
    }

    #[test]
    fn a_refused_forced_apply_takes_no_fields_over() {
        let mut managed = Vec::new();
        let hpa = Manager { name: "autoscaler", api_version: "apps/v1" };
        track_update(None, &deployment(5, "nginx"), &mut managed, &hpa);
        let before = managed.clone();
        let mut config = deployment(2, "nginx");
        config["spec"]["template"]["$patch"] = json!("bogus");
        let err = apply("Deployment", "web", None, &config, &mut managed, &kubectl(), true);
        assert!(matches!(err, Err(PatchError::BadRequest(_))), "{err:?}");
        assert_eq!(managed, before);
    }

    #[test]
    fn applies_conflict_force_and_remove_what_is_no_longer_applied() {
        let mut managed = Vec::new();
        let created = apply(
            "Deployment",
            "web",
            None,
            &deployment(2, "nginx"),
            &mut managed,
            &kubectl(),
            false,
        )
        .unwrap();
        assert_eq!(created["spec"]["replicas"], 2);
        // Another manager changes replicas through an update: it owns them now.
        let mut scaled = created.clone();
        scaled["spec"]["replicas"] = json!(5);
        let hpa = Manager { name: "autoscaler", api_version: "apps/v1" };
        track_update(Some(&created), &scaled, &mut managed, &hpa);
        assert_eq!(managed.len(), 2);
        // Applying replicas 2 again conflicts, naming the field and manager.
        let err = apply(
            "Deployment",
            "web",
            Some(&scaled),
            &deployment(2, "nginx"),
            &mut managed.clone(),
            &kubectl(),
            false,
        )
        .unwrap_err();
        let PatchError::FieldConflicts { causes, .. } = err else { panic!("{err:?}") };
        assert_eq!(causes[0].field, ".spec.replicas");
        assert!(causes[0].message.contains("autoscaler"), "{causes:?}");
        // Applying without replicas is fine: the autoscaler keeps them.
        let mut config = deployment(2, "nginx:2");
        config["spec"].as_object_mut().unwrap().remove("replicas");
        config["metadata"].as_object_mut().unwrap().remove("labels");
        let out =
            apply("Deployment", "web", Some(&scaled), &config, &mut managed, &kubectl(), false)
                .unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:2");
        // The label kubectl no longer applies is gone.
        assert_eq!(out["metadata"].get("labels"), Some(&json!({})));
        // Force takes replicas over.
        let forced = apply(
            "Deployment",
            "web",
            Some(&out),
            &deployment(3, "nginx:2"),
            &mut managed,
            &kubectl(),
            true,
        )
        .unwrap();
        assert_eq!(forced["spec"]["replicas"], 3);
        assert!(managed.iter().all(|e| e.manager == "kubectl"), "{managed:?}");
    }
}
