//! `berth apply -f`: creates objects, or updates them to match their
//! manifests while leaving alone what the manifests do not set.
//!
//! As kubectl does, the manifest last applied is kept in an annotation on
//! the object. An update is a JSON merge patch computed three ways: fields
//! the last manifest set and this one drops are removed; fields this one
//! sets that differ from the live object are written; everything else (what
//! other writers set, server defaults, status) stays.

use super::resource::{Kind, Resources};
use super::wait::{until, For};
use super::Session;
use crate::config::ConnectArgs;
use anyhow::{bail, Result};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::Duration;

/// The annotation holding the manifest last applied (kubectl's, so
/// `kubectl apply` and `berth apply` take turns on one object).
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// Manifest files or directories (*.yaml, *.yml, *.json), or - for standard input
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<PathBuf>,
    /// The namespace for manifests that name none [default: the context's, else "default"]
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Then wait until the pods applied are Ready and the Deployments
    /// Available, showing what their pods do meanwhile
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (5m, 30s, ...; 0: no limit)
    #[arg(long, default_value = "5m", value_parser = super::parse_duration, requires = "wait")]
    timeout: Duration,
    #[command(flatten)]
    connect: ConnectArgs,
}

/// What an apply did to one object.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Created,
    Configured,
    Unchanged,
}

pub async fn run(args: &ApplyArgs) -> Result<()> {
    // Every manifest is decoded before anything is sent: a bad document
    // anywhere changes nothing.
    let mut objects = Vec::new();
    let mut errors = Vec::new();
    for source in args.files.iter().flat_map(|p| crate::manifests::expand(p)) {
        match source.and_then(|(name, text)| crate::manifests::decode(&name, &text)) {
            Ok(decoded) => objects.extend(decoded),
            Err(message) => errors.push(message),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("; "));
    }
    if objects.is_empty() {
        bail!("no objects passed to apply");
    }
    let ns = super::NamespaceArgs { namespace: args.namespace.clone(), all_namespaces: false };
    let session = Session::open(&args.connect, &ns)?;
    let mut failed = 0;
    let mut ready = Vec::new();
    let mut available = Vec::new();
    for object in objects {
        let kind = Kind::of(&object)?;
        let name = object.metadata().name.clone();
        let namespace = match object.metadata().namespace.as_str() {
            "" => session.namespace.clone(),
            ns => ns.to_string(),
        };
        let manifest: Value = serde_json::from_slice(&object.to_json())?;
        let resources = Resources::new(&session.client, kind, &namespace);
        match apply_one(&resources, &name, manifest).await {
            Ok(outcome) => {
                match kind {
                    Kind::Pod => ready.push((resources.clone(), name.clone())),
                    Kind::Deployment => available.push((resources.clone(), name.clone())),
                    _ => {}
                }
                let word = match outcome {
                    Outcome::Created => "created",
                    Outcome::Configured => "configured",
                    Outcome::Unchanged => "unchanged",
                };
                println!("{}/{name} {word}", kind.qualified());
            }
            Err(e) => {
                eprintln!("error: {}/{name}: {}", kind.qualified(), super::one_line(&e));
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} object(s) could not be applied");
    }
    if args.wait {
        let started = std::time::Instant::now();
        let condition = |kind: &str| For::Condition { kind: kind.into(), status: "True".into() };
        for (pending, wait_for) in
            [(ready, condition("Ready")), (available, condition("Available"))]
        {
            // One --timeout for the whole wait (0 stays no limit).
            let left = match args.timeout.is_zero() {
                true => args.timeout,
                false => {
                    args.timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1))
                }
            };
            if !pending.is_empty() {
                until(pending, &wait_for, left, true).await?;
            }
        }
    }
    Ok(())
}

async fn apply_one(resources: &Resources, name: &str, mut manifest: Value) -> Result<Outcome> {
    if name.is_empty() {
        bail!("metadata.name: required for apply");
    }
    // The recorded manifest is the manifest itself, without the record.
    if let Some(annotations) =
        manifest.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)
    {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            if let Some(meta) = manifest.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("annotations");
            }
        }
    }
    let record = serde_json::to_string(&manifest)?;
    let Some(live) = resources.get_opt(name).await? else {
        let mut object = manifest.clone();
        set_annotation(&mut object, &record);
        match resources.create(&object).await {
            Ok(_) => return Ok(Outcome::Created),
            // Created by someone else meanwhile: fall through to an update.
            Err(e) if is_already_exists(&e) => {}
            Err(e) => return Err(e),
        }
        return Box::pin(apply_one(resources, name, manifest)).await;
    };
    let last: Option<Value> = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str(text).ok());
    let mut patch = three_way(last.as_ref(), &manifest, &live);
    let recorded = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str);
    if recorded != Some(record.as_str()) {
        let meta = patch.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            let annotations =
                meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(LAST_APPLIED.into(), Value::String(record));
            }
        }
    }
    if patch.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    resources.patch(name, &Value::Object(patch)).await?;
    Ok(Outcome::Configured)
}

fn is_already_exists(e: &anyhow::Error) -> bool {
    e.downcast_ref::<berth_client::Error>().is_some_and(|e| e.is_already_exists())
}

fn set_annotation(object: &mut Value, record: &str) {
    let Some(root) = object.as_object_mut() else { return };
    let meta = root.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    let Some(meta) = meta.as_object_mut() else { return };
    let annotations = meta.entry("annotations").or_insert_with(|| Value::Object(Map::new()));
    if let Some(annotations) = annotations.as_object_mut() {
        annotations.insert(LAST_APPLIED.into(), Value::String(record.into()));
    }
}

/// The merge patch that takes `live` to `modified` where `modified` has a
/// say: keys `last` set and `modified` dropped are deleted, keys `modified`
/// sets that `live` does not already hold are written; lists are replaced
/// whole, and only when they differ from what `live` holds.
fn three_way(last: Option<&Value>, modified: &Value, live: &Value) -> Map<String, Value> {
    let empty = Map::new();
    diff(last.and_then(Value::as_object), modified.as_object().unwrap_or(&empty), live.as_object())
}

fn diff(
    last: Option<&Map<String, Value>>,
    modified: &Map<String, Value>,
    live: Option<&Map<String, Value>>,
) -> Map<String, Value> {
    let mut patch = Map::new();
    if let Some(last) = last {
        for key in last.keys() {
            let in_live = live.is_some_and(|l| l.get(key).is_some_and(|v| !v.is_null()));
            if !modified.contains_key(key) && in_live {
                patch.insert(key.clone(), Value::Null);
            }
        }
    }
    for (key, want) in modified {
        if want.is_null() {
            continue;
        }
        let have = live.and_then(|l| l.get(key));
        match (want, have) {
            (Value::Object(want), Some(Value::Object(have))) => {
                let last = last.and_then(|l| l.get(key)).and_then(Value::as_object);
                let sub = diff(last, want, Some(have));
                if !sub.is_empty() {
                    patch.insert(key.clone(), Value::Object(sub));
                }
            }
            _ => {
                if !have.is_some_and(|have| holds(have, want)) {
                    patch.insert(key.clone(), want.clone());
                }
            }
        }
    }
    patch
}

/// Whether `have` already says everything `want` says: equal scalars,
/// objects whose every key of `want` is held, lists of the same length
/// whose items hold pairwise (servers add defaults inside list items).
fn holds(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => {
            w.iter().all(|(k, wv)| wv.is_null() || h.get(k).is_some_and(|hv| holds(hv, wv)))
        }
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| holds(hv, wv))
        }
        (h, w) => h == w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_dropped_from_the_manifest_is_removed_and_others_writers_fields_stay() {
        let last = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"replicas": 2}});
        let modified = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 3}});
        let live = json!({
            "metadata": {"labels": {"app": "web", "tier": "front", "team": "x"}},
            "spec": {"replicas": 2, "paused": false},
            "status": {"replicas": 2}
        });
        let patch = three_way(Some(&last), &modified, &live);
        assert_eq!(
            Value::Object(patch),
            json!({"metadata": {"labels": {"tier": null}}, "spec": {"replicas": 3}})
        );
    }

    #[test]
    fn server_defaults_inside_lists_are_no_change() {
        let modified = json!({"spec": {"containers": [{"name": "c", "image": "i"}]}});
        let live = json!({"spec": {"containers": [{"name": "c", "image": "i", "imagePullPolicy": "Always"}]}});
        assert!(three_way(Some(&modified), &modified, &live).is_empty());
        let changed = json!({"spec": {"containers": [{"name": "c", "image": "j"}]}});
        let patch = three_way(Some(&modified), &changed, &live);
        assert_eq!(Value::Object(patch), changed);
    }
}
