//! `berth wait`: until objects meet a condition or are gone, with a
//! progress line on stderr, within --timeout. While it waits for a
//! condition of pods (or of a Deployment's or ReplicaSet's pods), what
//! those pods do shows on stderr: each of their Events once, such as the
//! kubelet's image pulls with their sizes.

use super::describe::last_seen;
use super::resource::{name_of, str_at, Kind, Resources};
use super::{elapsed, parse_duration, parse_targets, NamespaceArgs, Progress, Session};
use crate::config::ConnectArgs;
use anyhow::{bail, Result};
use serde_json::Value;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct WaitArgs {
    /// TYPE [NAME...] or TYPE/NAME...; a TYPE alone waits for every object
    /// that matches -l
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    targets: Vec<String>,
    /// What to wait for: delete, or condition=TYPE[=STATUS] (STATUS defaults to True)
    #[arg(long = "for", value_parser = parse_for)]
    wait_for: For,
    /// How long to wait before giving up (30s, 5m, ...)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Label selector, when no names are given
    #[arg(short = 'l', long = "selector", default_value = "", hide_default_value = true)]
    selector: String,
    #[command(flatten)]
    ns: NamespaceArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Clone, Debug, PartialEq)]
pub enum For {
    Delete,
    Condition { kind: String, status: String },
}

fn parse_for(text: &str) -> Result<For, String> {
    if text.eq_ignore_ascii_case("delete") {
        return Ok(For::Delete);
    }
    match text.split_once('=') {
        Some((key, rest)) if key.eq_ignore_ascii_case("condition") && !rest.is_empty() => {
            let (kind, status) = rest.split_once('=').unwrap_or((rest, "True"));
            Ok(For::Condition { kind: kind.to_string(), status: status.to_string() })
        }
        _ => Err(format!("{text:?}: want delete or condition=TYPE[=STATUS]")),
    }
}

/// Whether the object has condition `kind` (any case) at `status`.
fn has_condition(object: &Value, kind: &str, status: &str) -> bool {
    object.pointer("/status/conditions").and_then(Value::as_array).into_iter().flatten().any(|c| {
        str_at(c, "/type").eq_ignore_ascii_case(kind)
            && str_at(c, "/status").eq_ignore_ascii_case(status)
    })
}

pub async fn run(args: &WaitArgs) -> Result<()> {
    let session = Session::open(&args.connect, &args.ns)?;
    let mut targets = parse_targets(&args.targets)?;
    if targets.is_empty() {
        let kind = Kind::parse(&args.targets[0])?;
        let resources = Resources::new(&session.client, kind, &session.namespace);
        let (items, _) = resources.list(&args.selector, "").await?;
        if items.is_empty() {
            bail!("no matching resources found");
        }
        targets = items.iter().map(|o| (kind, name_of(o).to_string())).collect();
    }
    let pending: Vec<(Resources, String)> = targets
        .into_iter()
        .map(|(kind, name)| (Resources::new(&session.client, kind, &session.namespace), name))
        .collect();
    until(pending, &args.wait_for, args.timeout, true).await
}

/// Polls each object until it meets `wait_for`, printing (with `report`)
/// `kind/name condition met` (or `deleted`) as each does; fails at the
/// deadline.
pub async fn until(
    mut pending: Vec<(Resources, String)>,
    wait_for: &For,
    timeout: Duration,
    report: bool,
) -> Result<()> {
    let started = Instant::now();
    let deadline = (!timeout.is_zero()).then(|| started + timeout);
    let mut progress = Progress::new();
    let mut news = PodNews::default();
    let what = match wait_for {
        For::Delete => "deletion".to_string(),
        For::Condition { kind, status } => format!("condition {kind}={status}"),
    };
    loop {
        let mut still = Vec::new();
        for (resources, name) in pending {
            let object = resources.get_opt(&name).await;
            let met = match (&object, wait_for) {
                (Ok(None), For::Delete) => Some("deleted"),
                (Ok(Some(o)), For::Condition { kind, status })
                    if has_condition(o, kind, status) =>
                {
                    Some("condition met")
                }
                (Ok(None), For::Condition { .. }) => {
                    progress.finish();
                    bail!("NotFound: {} {name:?} not found", resources.kind.plural());
                }
                // A peer failing over is not the end of the wait.
                _ => None,
            };
            match met {
                Some(word) => {
                    progress.finish();
                    if matches!(wait_for, For::Condition { .. }) {
                        // The pod's last news before the line that ends its wait.
                        let done = [(resources.clone(), name.clone())];
                        news.tell(&done, true, &mut progress).await;
                    }
                    if report {
                        println!("{}/{name} {word}", resources.kind.qualified());
                    }
                }
                None => still.push((resources, name)),
            }
        }
        pending = still;
        if pending.is_empty() {
            progress.finish();
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            progress.finish();
            let names: Vec<String> =
                pending.iter().map(|(r, n)| format!("{}/{n}", r.kind.qualified())).collect();
            bail!("timed out after {timeout:?} waiting for {what} on {}", names.join(", "));
        }
        if matches!(wait_for, For::Condition { .. }) {
            news.tell(&pending, false, &mut progress).await;
        }
        let first = &pending[0];
        progress.update(&format!(
            "waiting for {what} on {}/{}{} ({})",
            first.0.kind.qualified(),
            first.1,
            if pending.len() > 1 {
                format!(" and {} more", pending.len() - 1)
            } else {
                String::new()
            },
            elapsed(started),
        ));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The pods behind a wait and their Events, each told once (oldest first):
/// scheduled, image pulled (with its size) or already present, created,
/// started, failing.
#[derive(Default)]
struct PodNews {
    /// (event name, message) already told.
    told: HashSet<(String, String)>,
    polled: Option<Instant>,
}

impl PodNews {
    const EVERY: Duration = Duration::from_secs(1);

    /// Prints the Events not told yet, on stderr above the progress line;
    /// unless `now`, nothing when asked within the last second.
    async fn tell(&mut self, pending: &[(Resources, String)], now: bool, progress: &mut Progress) {
        if !now && self.polled.is_some_and(|t| t.elapsed() < Self::EVERY) {
            return;
        }
        let lines = self.poll(pending).await;
        if !lines.is_empty() {
            progress.finish();
            lines.iter().for_each(|line| eprintln!("{line}"));
        }
    }

    /// Lines for the Events not told yet; none for what the API cannot
    /// tell now.
    async fn poll(&mut self, pending: &[(Resources, String)]) -> Vec<String> {
        self.polled = Some(Instant::now());
        let mut lines = Vec::new();
        for (resources, name) in pending {
            let pods = match pods_behind(resources, name).await {
                Some(pods) if !pods.is_empty() => pods,
                _ => continue,
            };
            let events = resources.sibling(Kind::Event);
            let Ok((mut items, _)) = events.list("", "involvedObject.kind=Pod").await else {
                continue;
            };
            items.retain(|e| pods.contains(str_at(e, "/involvedObject/name")));
            items.sort_by(|a, b| last_seen(a).cmp(last_seen(b)));
            for event in items {
                let message = str_at(&event, "/message").to_string();
                if self.told.insert((name_of(&event).to_string(), message.clone())) {
                    let warning =
                        if str_at(&event, "/type") == "Warning" { "warning: " } else { "" };
                    let pod = str_at(&event, "/involvedObject/name");
                    lines.push(format!("pod/{pod}: {warning}{message}"));
                }
            }
        }
        lines
    }
}

/// The names of the pods `name` stands for: itself, or those a Deployment's
/// or ReplicaSet's selector matches.
async fn pods_behind(resources: &Resources, name: &str) -> Option<HashSet<String>> {
    match resources.kind {
        Kind::Pod => Some([name.to_string()].into()),
        Kind::Deployment | Kind::ReplicaSet => {
            let owner = resources.get_opt(name).await.ok()??;
            let labels = owner.pointer("/spec/selector/matchLabels")?.as_object()?;
            let selector: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            if selector.is_empty() {
                return None;
            }
            let pods = resources.sibling(Kind::Pod);
            let (items, _) = pods.list(&selector.join(","), "").await.ok()?;
            Some(items.iter().map(|p| name_of(p).to_string()).collect())
        }
        _ => None,
    }
}
