//! `berth get`: objects as a table in kubectl's columns, or as YAML, JSON
//! or names; `-w` follows the changes.

use super::printers;
use super::resource::{name_of, to_json_pretty, to_yaml, Kind, Resources};
use super::{parse_targets, NamespaceArgs, Session};
use crate::config::ConnectArgs;
use anyhow::{bail, Result};
use berth_client::WatchParams;
use futures::StreamExt;
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct GetArgs {
    /// TYPE [NAME...] or TYPE/NAME...; types: pods, nodes, namespaces,
    /// deployments, replicasets, events, leases (or their short names)
    #[arg(required = true, value_name = "TYPE[/NAME]")]
    targets: Vec<String>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<Output>,
    /// Label selector, such as app=web,tier!=db
    #[arg(short = 'l', long = "selector", default_value = "", hide_default_value = true)]
    selector: String,
    /// Field selector: metadata.name, metadata.namespace, spec.nodeName, status.phase
    #[arg(long = "field-selector", default_value = "", hide_default_value = true)]
    field_selector: String,
    /// After listing, print each change as it happens
    #[arg(short = 'w', long = "watch")]
    watch: bool,
    /// Print tables without their header
    #[arg(long = "no-headers")]
    no_headers: bool,
    #[command(flatten)]
    ns: NamespaceArgs,
    #[command(flatten)]
    connect: ConnectArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Wide,
    Yaml,
    Json,
    Name,
}

pub async fn run(args: &GetArgs) -> Result<()> {
    let session = Session::open(&args.connect, &args.ns)?;
    let kind = Kind::parse(args.targets[0].split('/').next().unwrap_or_default())?;
    let named = args.targets.len() > 1 || args.targets[0].contains('/');
    let resources = Resources::new(&session.client, kind, session.list_namespace());
    let printer = Printer { kind, output: args.output, all_namespaces: session.all_namespaces };

    if named {
        if args.watch {
            bail!("-w follows a list: give a type (and -l or --field-selector), not names");
        }
        let resources = Resources::new(&session.client, kind, &session.namespace);
        let mut objects = Vec::new();
        let mut missing = Vec::new();
        for (target_kind, name) in parse_targets(&args.targets)? {
            if target_kind != kind {
                bail!("get takes one type at a time");
            }
            match resources.get_opt(&name).await? {
                Some(object) => objects.push(object),
                None => missing.push(format!("{} {name:?} not found", kind.plural())),
            }
        }
        let single =
            args.targets.len() == 1 || (args.targets.len() == 2 && !args.targets[0].contains('/'));
        print!("{}", printer.render(&objects, !args.no_headers, single));
        if !missing.is_empty() {
            bail!("NotFound: {}", missing.join(", "));
        }
        return Ok(());
    }

    let (objects, revision) = resources.list(&args.selector, &args.field_selector).await?;
    if objects.is_empty() && !args.watch && printer.is_table() {
        match session.all_namespaces || !kind.namespaced() {
            true => eprintln!("No resources found"),
            false => eprintln!("No resources found in {} namespace.", session.namespace),
        }
    } else {
        print!("{}", printer.render(&objects, !args.no_headers, false));
    }
    if !args.watch {
        return Ok(());
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let params = WatchParams {
        label_selector: args.selector.clone(),
        field_selector: args.field_selector.clone(),
        bookmarks: false,
    };
    let mut stream = resources.watch(&params, &revision).await?;
    let mut header = objects.is_empty() && !args.no_headers;
    while let Some(event) = stream.next().await {
        let (_, object) = event?;
        print!("{}", printer.render(std::slice::from_ref(&object), header, true));
        header = false;
        let _ = std::io::stdout().flush();
    }
    bail!("the watch ended: the API server closed the stream")
}

struct Printer {
    kind: Kind,
    output: Option<Output>,
    all_namespaces: bool,
}

impl Printer {
    fn is_table(&self) -> bool {
        matches!(self.output, None | Some(Output::Wide))
    }

    /// The objects in the chosen form; `single` prints one object bare
    /// rather than in a List.
    fn render(&self, objects: &[Value], header: bool, single: bool) -> String {
        match self.output {
            None | Some(Output::Wide) => {
                if objects.is_empty() {
                    return String::new();
                }
                let wide = self.output == Some(Output::Wide);
                let now = chrono::Utc::now();
                printers::table(self.kind, objects, wide, self.all_namespaces, now).render(header)
            }
            Some(Output::Name) => objects
                .iter()
                .map(|o| format!("{}/{}\n", self.kind.qualified(), name_of(o)))
                .collect(),
            Some(Output::Yaml) if single && objects.len() == 1 => to_yaml(&objects[0]),
            Some(Output::Json) if single && objects.len() == 1 => {
                to_json_pretty(&objects[0]) + "\n"
            }
            Some(Output::Yaml) => {
                let mut out = String::from("apiVersion: v1\nitems:\n");
                if objects.is_empty() {
                    out = "apiVersion: v1\nitems: []\n".into();
                }
                for o in objects {
                    let text = to_yaml(o);
                    for (i, line) in text.lines().enumerate() {
                        out.push_str(if i == 0 { "- " } else { "  " });
                        out.push_str(line);
                        out.push('\n');
                    }
                }
                out + "kind: List\nmetadata:\n  resourceVersion: \"\"\n"
            }
            Some(Output::Json) => {
                let list = json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": objects,
                    "metadata": {"resourceVersion": ""},
                });
                to_json_pretty(&list) + "\n"
            }
        }
    }
}
