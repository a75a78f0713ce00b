//! `berth token create`: mints a service-account token with the cluster's
//! service-account key; and `berth server`'s flags for token
//! authentication, the audit log and the per-user request limit.

use anyhow::{Context, Result};
use berth_apiserver::filters::{AuditConfig, Guards, ServiceAccountKey};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(clap::Subcommand)]
enum TokenCommand {
    /// Print a new token for a service account, signed with the cluster's
    /// service-account key (ES256 for an ECDSA P-256 key, RS256 for RSA)
    Create(CreateArgs),
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The service account's name
    service_account: String,
    /// The service account's namespace
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The PEM private key the servers were given as
    /// --service-account-key-file
    #[arg(long)]
    key_file: PathBuf,
    /// How long the token is valid: 30m, 1h, 24h or seconds
    #[arg(long, default_value = "1h", value_parser = crate::verbs::parse_duration)]
    duration: Duration,
}

pub fn run(args: &TokenArgs) -> ExitCode {
    let result = match &args.command {
        TokenCommand::Create(create) => mint(create),
    };
    match result {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth token: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mint(args: &CreateArgs) -> Result<String> {
    let key = ServiceAccountKey::load(&args.key_file)?;
    key.mint(&args.namespace, &args.service_account, args.duration).with_context(|| {
        format!("cannot mint a token for {}/{}", args.namespace, args.service_account)
    })
}

/// `berth server`'s flags for token authentication, the audit log and the
/// per-user in-flight limit, in Kubernetes' spelling.
#[derive(clap::Args, Clone, Debug)]
pub struct GuardArgs {
    /// Static bearer tokens, one a line as token,user,uid,"group1,group2"
    /// (Kubernetes' CSV format); a line that does not parse stops the server
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// PEM private key (ECDSA P-256 or RSA) service-account tokens are
    /// signed with and verified against (`berth token create` mints them)
    #[arg(long)]
    service_account_key_file: Option<PathBuf>,
    /// Requests one user may have in flight on this peer at once (watches
    /// aside); more are refused with TooManyRequests for that user only.
    /// 0: no per-user limit
    #[arg(long, default_value_t = 0)]
    max_requests_in_flight_per_user: usize,
    /// Write one JSON line per API request (time, user, groups, verb, API
    /// group, resource, subresource, namespace, name, code, latency) here
    #[arg(long)]
    audit_log_path: Option<PathBuf>,
    /// Size in megabytes at which the audit log is rotated (renamed to
    /// PATH.1, older ones to PATH.2 ...); 0 never rotates
    #[arg(long, default_value_t = 100)]
    audit_log_maxsize: u64,
    /// Rotated audit logs kept
    #[arg(long, default_value_t = 10)]
    audit_log_maxbackup: usize,
}

impl GuardArgs {
    pub fn config(&self) -> Guards {
        Guards {
            token_auth_file: self.token_auth_file.clone(),
            service_account_key_file: self.service_account_key_file.clone(),
            max_requests_in_flight_per_user: self.max_requests_in_flight_per_user,
            audit: self.audit_log_path.clone().map(|path| AuditConfig {
                path,
                max_size_mb: self.audit_log_maxsize,
                max_backups: self.audit_log_maxbackup,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_names_its_service_account() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("sa.key");
        ServiceAccountKey::create_or_load(&key_file).unwrap();
        let args = CreateArgs {
            service_account: "builder".into(),
            namespace: "ci".into(),
            key_file: key_file.clone(),
            duration: Duration::from_secs(600),
        };
        let token = mint(&args).unwrap();
        assert_eq!(token.split('.').count(), 3, "{token}");
        let missing = CreateArgs { key_file: dir.path().join("none"), ..args };
        let err = format!("{:#}", mint(&missing).unwrap_err());
        assert!(err.contains("none"), "{err}");
    }
}
