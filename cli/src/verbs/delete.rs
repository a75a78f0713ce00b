//! `berth delete`: objects by name, by selector or from manifests, with the
//! cascade policy and grace period, waiting (with progress) until they are
//! gone.

use super::resource::{name_of, Kind, Resources};
use super::wait::{until, For};
use super::{parse_duration, parse_targets, NamespaceArgs, Session};
use crate::config::ConnectArgs;
use anyhow::{bail, Result};
use berth_client::DeleteParams;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DeleteArgs {
    /// TYPE NAME... or TYPE/NAME... (or TYPE with -l or --all)
    #[arg(value_name = "TYPE[/NAME]")]
    targets: Vec<String>,
    /// Delete the objects these manifests name (files, directories, or -)
    #[arg(short = 'f', long = "filename")]
    files: Vec<PathBuf>,
    /// Label selector, with a TYPE and no names
    #[arg(short = 'l', long = "selector", default_value = "", hide_default_value = true)]
    selector: String,
    /// Every object of the TYPE in the namespace
    #[arg(long)]
    all: bool,
    /// What happens to dependents: background (deleted after the owner),
    /// foreground (deleted before the owner goes) or orphan (kept)
    #[arg(long, value_enum, default_value = "background")]
    cascade: Cascade,
    /// Seconds a pod gets to stop (0: at once; default: the pod's own)
    #[arg(long = "grace-period", default_value_t = -1, allow_negative_numbers = true)]
    grace_period: i64,
    /// Wait until the objects are gone
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    wait: bool,
    /// How long --wait waits (0: no limit)
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    timeout: Duration,
    /// Succeed when an object does not exist
    #[arg(long = "ignore-not-found")]
    ignore_not_found: bool,
    #[command(flatten)]
    ns: NamespaceArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Cascade {
    Background,
    Foreground,
    Orphan,
}

pub async fn run(args: &DeleteArgs) -> Result<()> {
    let session = Session::open(&args.connect, &args.ns)?;
    // (kind, namespace, name) of every object to delete.
    let mut targets: Vec<(Kind, String, String)> = Vec::new();
    if !args.files.is_empty() {
        if !args.targets.is_empty() {
            bail!("give names or -f, not both");
        }
        for source in args.files.iter().flat_map(|p| crate::manifests::expand(p)) {
            let objects = source
                .and_then(|(name, text)| crate::manifests::decode(&name, &text))
                .map_err(|m| anyhow::anyhow!(m))?;
            for object in objects {
                let ns = match object.metadata().namespace.as_str() {
                    "" => session.namespace.clone(),
                    ns => ns.to_string(),
                };
                targets.push((Kind::of(&object)?, ns, object.metadata().name.clone()));
            }
        }
    } else {
        let named = parse_targets(&args.targets)?;
        if named.is_empty() {
            if args.selector.is_empty() && !args.all {
                bail!("name the objects to delete, or pass -l SELECTOR or --all");
            }
            let kind = Kind::parse(&args.targets[0])?;
            let resources = Resources::new(&session.client, kind, &session.namespace);
            let (items, _) = resources.list(&args.selector, "").await?;
            if items.is_empty() {
                println!("No resources found");
                return Ok(());
            }
            for o in &items {
                targets.push((kind, session.namespace.clone(), name_of(o).to_string()));
            }
        } else {
            targets.extend(named.into_iter().map(|(k, n)| (k, session.namespace.clone(), n)));
        }
    }
    let params = DeleteParams {
        grace_period_seconds: (args.grace_period >= 0).then_some(args.grace_period),
        propagation_policy: match args.cascade {
            Cascade::Background => "Background",
            Cascade::Foreground => "Foreground",
            Cascade::Orphan => "Orphan",
        }
        .into(),
        precondition_resource_version: String::new(),
    };
    let mut deleted = Vec::new();
    let mut missing = Vec::new();
    for (kind, namespace, name) in targets {
        let resources = Resources::new(&session.client, kind, &namespace);
        match resources.delete(&name, &params).await {
            Ok(_) => {
                println!("{} \"{name}\" deleted", kind.qualified());
                deleted.push((resources, name));
            }
            Err(e) if e.is_not_found() && args.ignore_not_found => {}
            Err(e) if e.is_not_found() => {
                missing.push(format!("{} {name:?} not found", kind.plural()));
            }
            Err(e) => return Err(e.into()),
        }
    }
    if args.wait && !deleted.is_empty() {
        wait_gone(deleted, args.timeout).await?;
    }
    if !missing.is_empty() {
        bail!("NotFound: {}", missing.join(", "));
    }
    Ok(())
}

/// Waits until the objects are gone, quietly but for the progress line.
async fn wait_gone(pending: Vec<(Resources, String)>, timeout: Duration) -> Result<()> {
    let mut left = Vec::new();
    for (resources, name) in pending {
        if resources.get_opt(&name).await?.is_some() {
            left.push((resources, name));
        }
    }
    if left.is_empty() {
        return Ok(());
    }
    until(left, &For::Delete, timeout, false).await
}
