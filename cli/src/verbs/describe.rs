//! `berth describe`: an object in readable detail, with its Events.

use super::apply::LAST_APPLIED;
use super::printers::{human_duration, pod_status, Table};
use super::resource::{name_of, namespace_of, str_at, Kind, Resources};
use super::{parse_targets, NamespaceArgs, Session};
use crate::config::ConnectArgs;
use anyhow::{bail, Result};
use serde_json::Value;
use std::fmt::Write;

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// TYPE [NAME...] or TYPE/NAME...; a TYPE alone describes every object
    /// (that matches -l)
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    targets: Vec<String>,
    /// Label selector, when no names are given
    #[arg(short = 'l', long = "selector", default_value = "", hide_default_value = true)]
    selector: String,
    #[command(flatten)]
    ns: NamespaceArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

pub async fn run(args: &DescribeArgs) -> Result<()> {
    let session = Session::open(&args.connect, &args.ns)?;
    let targets = parse_targets(&args.targets)?;
    let mut objects = Vec::new();
    if targets.is_empty() {
        let kind = Kind::parse(&args.targets[0])?;
        let resources = Resources::new(&session.client, kind, session.list_namespace());
        let (items, _) = resources.list(&args.selector, "").await?;
        if items.is_empty() {
            bail!("no {} found", kind.plural());
        }
        objects.extend(items.into_iter().map(|o| (kind, o)));
    } else {
        for (kind, name) in targets {
            let resources = Resources::new(&session.client, kind, &session.namespace);
            objects.push((kind, resources.get(&name).await?));
        }
    }
    let now = chrono::Utc::now();
    for (i, (kind, object)) in objects.iter().enumerate() {
        if i > 0 {
            println!("\n");
        }
        let events = if *kind == Kind::Event {
            Vec::new()
        } else {
            events_of(&session, *kind, object).await?
        };
        print!("{}", render(*kind, object, &events, now));
    }
    Ok(())
}

/// The Events whose involvedObject is this object, oldest first.
async fn events_of(session: &Session, kind: Kind, object: &Value) -> Result<Vec<Value>> {
    let namespace = if kind.namespaced() { namespace_of(object) } else { "default" };
    let events = Resources::new(&session.client, Kind::Event, namespace);
    let (items, _) = events.list("", "").await?;
    let uid = str_at(object, "/metadata/uid");
    let mut mine: Vec<Value> = items
        .into_iter()
        .filter(|e| {
            let involved_uid = str_at(e, "/involvedObject/uid");
            if !involved_uid.is_empty() && !uid.is_empty() {
                return involved_uid == uid;
            }
            str_at(e, "/involvedObject/kind") == kind.name()
                && str_at(e, "/involvedObject/name") == name_of(object)
        })
        .collect();
    mine.sort_by(|a, b| last_seen(a).cmp(last_seen(b)));
    Ok(mine)
}

/// When an Event last happened, as RFC 3339 text.
pub(super) fn last_seen(event: &Value) -> &str {
    let last = str_at(event, "/lastTimestamp");
    if last.is_empty() {
        str_at(event, "/eventTime")
    } else {
        last
    }
}

fn age_of(text: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => human_duration(now.signed_duration_since(t.with_timezone(&chrono::Utc))),
        Err(_) => "<unknown>".into(),
    }
}

/// The description: identity and metadata, a few kind-specific lines, the
/// spec and status as an indented tree, then the Events.
pub fn render(
    kind: Kind,
    o: &Value,
    events: &[Value],
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut out = String::new();
    let line = |out: &mut String, key: &str, value: &str| {
        let _ = writeln!(out, "{:<19}{value}", format!("{key}:"));
    };
    line(&mut out, "Name", name_of(o));
    if kind.namespaced() {
        line(&mut out, "Namespace", namespace_of(o));
    }
    for (key, pointer) in [("Labels", "/metadata/labels"), ("Annotations", "/metadata/annotations")]
    {
        let pairs: Vec<String> = o
            .pointer(pointer)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != LAST_APPLIED)
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        match pairs.split_first() {
            None => line(&mut out, key, "<none>"),
            Some((first, rest)) => {
                line(&mut out, key, first);
                for p in rest {
                    line(&mut out, "", p);
                }
            }
        }
    }
    let created = str_at(o, "/metadata/creationTimestamp");
    if !created.is_empty() {
        line(&mut out, "CreationTimestamp", created);
    }
    let deleting = str_at(o, "/metadata/deletionTimestamp");
    if !deleting.is_empty() {
        line(&mut out, "DeletionTimestamp", deleting);
    }
    if let Some(owners) = o.pointer("/metadata/ownerReferences").and_then(Value::as_array) {
        for owner in owners {
            let text = format!("{}/{}", str_at(owner, "/kind"), str_at(owner, "/name"));
            line(&mut out, "Controlled By", &text);
        }
    }
    match kind {
        Kind::Pod => {
            line(&mut out, "Node", &or_none(str_at(o, "/spec/nodeName")));
            line(&mut out, "Status", &pod_status(o));
            line(&mut out, "IP", &or_none(str_at(o, "/status/podIP")));
        }
        Kind::Deployment | Kind::ReplicaSet => {
            let desired = o.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            let n = |p: &str| o.pointer(p).and_then(Value::as_i64).unwrap_or(0);
            let text = format!(
                "{desired} desired | {} updated | {} total | {} available | {} unavailable",
                n("/status/updatedReplicas"),
                n("/status/replicas"),
                n("/status/availableReplicas"),
                n("/status/unavailableReplicas"),
            );
            line(&mut out, "Replicas", &text);
        }
        _ => {}
    }
    for section in ["spec", "status"] {
        if let Some(value) = o.get(section).filter(|v| !is_empty(v)) {
            let _ = writeln!(out, "{}:", capitalize(section));
            tree(&mut out, value, 1);
        }
    }
    if kind == Kind::Event {
        for field in ["involvedObject", "reason", "message", "type", "count", "source"] {
            if let Some(value) = o.get(field).filter(|v| !is_empty(v)) {
                tree_entry(&mut out, &capitalize(field), value, 0);
            }
        }
        return out;
    }
    if events.is_empty() {
        out.push_str("Events:            <none>\n");
        return out;
    }
    out.push_str("Events:\n");
    let mut table = Table {
        header: ["Type", "Reason", "Age", "From", "Message"].map(String::from).to_vec(),
        rows: vec![["----", "------", "----", "----", "-------"].map(String::from).to_vec()],
    };
    for e in events {
        let count = e.get("count").and_then(Value::as_i64).unwrap_or(1);
        let mut age = age_of(last_seen(e), now);
        if count > 1 {
            age = format!("{age} (x{count} over {})", age_of(str_at(e, "/firstTimestamp"), now));
        }
        let from = str_at(e, "/source/component");
        let from = if from.is_empty() { str_at(e, "/reportingComponent") } else { from };
        table.rows.push(vec![
            str_at(e, "/type").into(),
            str_at(e, "/reason").into(),
            age,
            from.into(),
            str_at(e, "/message").trim().into(),
        ]);
    }
    for l in table.render(true).lines() {
        let _ = writeln!(out, "  {l}");
    }
    out
}

fn or_none(s: &str) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s.into()
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// A JSON value as "Key: value" lines, two spaces per level.
fn tree(out: &mut String, value: &Value, depth: usize) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if !is_empty(v) {
                    tree_entry(out, &capitalize(k), v, depth);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                let indent = "  ".repeat(depth);
                match item {
                    Value::Object(_) => {
                        let _ = writeln!(out, "{indent}-");
                        tree(out, item, depth + 1);
                    }
                    other => {
                        let _ = writeln!(out, "{indent}- {}", scalar(other));
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{}{}", "  ".repeat(depth), scalar(other));
        }
    }
}

fn tree_entry(out: &mut String, key: &str, value: &Value, depth: usize) {
    let indent = "  ".repeat(depth);
    match value {
        Value::Object(_) | Value::Array(_) => {
            let _ = writeln!(out, "{indent}{key}:");
            tree(out, value, depth + 1);
        }
        other => {
            let _ = writeln!(out, "{indent}{key}:  {}", scalar(other));
        }
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
