//! `berth pki`: the cluster's certificate authority and the certificates
//! it issues, for clusters set up by hand (`berth up` does all of this
//! itself).

use anyhow::{bail, Context, Result};
use berth_tls::{ClusterCa, Subject};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(clap::Subcommand)]
enum PkiCommand {
    /// Create the cluster CA: DIR/ca.crt (give it to every party) and
    /// DIR/ca.key (keep it secret)
    Init {
        /// Where the CA goes (created if missing; an existing CA is kept)
        #[arg(long)]
        dir: PathBuf,
        /// The cluster's name, in the CA's subject
        #[arg(long, default_value = "berth")]
        cluster: String,
    },
    /// Issue a certificate and key signed by the CA in --dir, written to
    /// OUT.crt and OUT.key
    Issue {
        /// The CA's directory (ca.crt and ca.key)
        #[arg(long)]
        dir: PathBuf,
        /// Path prefix of the files written
        #[arg(long)]
        out: PathBuf,
        /// An API server peer's certificate: CN=system:peer:ID, group
        /// system:peers, also valid as its server certificate
        #[arg(long, group = "who")]
        peer: Option<u64>,
        /// A node agent's certificate: CN=system:node:NAME, group
        /// system:nodes, also valid as its stream server's certificate
        #[arg(long, group = "who")]
        node: Option<String>,
        /// A user's (or component's) client certificate: CN=NAME
        #[arg(long, group = "who")]
        user: Option<String>,
        /// Groups of --user (each an O entry), e.g. system:masters for an
        /// administrator
        #[arg(long = "group")]
        groups: Vec<String>,
        /// Host names and IP addresses a peer or node answers at
        #[arg(long = "host", value_delimiter = ',')]
        hosts: Vec<String>,
        /// Days the certificate is valid
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
}

pub fn run(args: &PkiArgs) -> ExitCode {
    match command(&args.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth pki: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn command(command: &PkiCommand) -> Result<()> {
    match command {
        PkiCommand::Init { dir, cluster } => {
            let existed = dir.join(berth_tls::CA_CERT_FILE).exists();
            ClusterCa::load_or_create(dir, cluster)?;
            let verb = if existed { "kept the existing" } else { "created the" };
            println!("{verb} cluster CA in {}", dir.display());
            Ok(())
        }
        PkiCommand::Issue { dir, out, peer, node, user, groups, hosts, days } => {
            let subject = match (peer, node, user) {
                (Some(id), None, None) => berth_tls::peer_subject(*id, hosts.clone()),
                (None, Some(name), None) => node_subject(name, hosts.clone()),
                (None, None, Some(name)) => Subject {
                    common_name: name.clone(),
                    organizations: groups.clone(),
                    ..Default::default()
                },
                _ => bail!("say whose certificate: --peer ID, --node NAME or --user NAME"),
            };
            if user.is_none() && !groups.is_empty() {
                bail!("--group is for --user; peers and nodes have their own group");
            }
            let subject = Subject {
                validity: Some(Duration::from_secs(days.max(&1) * 24 * 3600)),
                ..subject
            };
            let ca = ClusterCa::load(dir)?;
            let (cert, key) = files(out);
            ca.issue(&subject)?.save(&cert, &key)?;
            println!("issued {} for {:?}", cert.display(), subject.common_name);
            Ok(())
        }
    }
}

/// OUT.crt and OUT.key.
pub fn files(out: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut name = out.as_os_str().to_owned();
        name.push(ext);
        PathBuf::from(name)
    };
    (with(".crt"), with(".key"))
}

/// A node agent's certificate subject, as Kubernetes names node users.
pub fn node_subject(name: &str, hosts: Vec<String>) -> Subject {
    Subject {
        common_name: format!("system:node:{name}"),
        organizations: vec!["system:nodes".into()],
        hosts,
        server: true,
        validity: None,
    }
}

/// Issues `subject` into OUT.crt/OUT.key unless a certificate is there
/// already; returns the two paths.
pub fn ensure(ca: &ClusterCa, subject: &Subject, out: &Path) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = files(out);
    if !(cert.exists() && key.exists()) {
        ca.issue(subject)
            .and_then(|c| c.save(&cert, &key))
            .with_context(|| format!("issue {}", cert.display()))?;
    }
    Ok((cert, key))
}
