//! The everyday verbs over berth's gRPC API: get, describe, apply, delete
//! and wait. Each talks to any peer of the cluster and fails over to the
//! next; server errors print as one line with the field path, and a failed
//! verb exits non-zero.

mod apply;
mod delete;
mod describe;
mod get;
mod printers;
mod resource;
mod streams;
mod wait;

pub use apply::ApplyArgs;
pub use delete::DeleteArgs;
pub use describe::DescribeArgs;
pub use get::GetArgs;
pub use printers::Table;
pub use streams::{AttachArgs, ExecArgs, LogsArgs};
pub use wait::WaitArgs;

use crate::config::ConnectArgs;
use anyhow::{bail, Result};
use berth_client::Client;
use resource::Kind;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

/// Which namespace a verb works in.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NamespaceArgs {
    /// The namespace [default: the context's, else "default"]
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    /// Every namespace (lists and watches)
    #[arg(short = 'A', long = "all-namespaces")]
    all_namespaces: bool,
}

/// A connected verb: the client and the namespace it works in.
struct Session {
    client: Client,
    /// The API server peers, for the streams the client does not carry.
    endpoints: Vec<String>,
    /// How to reach them for those streams.
    auth: crate::config::Auth,
    namespace: String,
    all_namespaces: bool,
}

impl Session {
    fn open(connect: &ConnectArgs, ns: &NamespaceArgs) -> Result<Session> {
        let target = connect.target()?;
        let endpoints = target.endpoints.clone();
        let mut config = target.auth.client_config("berth", target.endpoints)?;
        config.request_timeout = Duration::from_secs(10);
        config.retry_for = Duration::from_secs(30);
        let client = Client::with_config(config)?;
        let namespace = ns
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or(Some(target.namespace).filter(|n| !n.is_empty()))
            .unwrap_or_else(|| "default".into());
        Ok(Session {
            client,
            endpoints,
            auth: target.auth,
            namespace,
            all_namespaces: ns.all_namespaces,
        })
    }

    /// The namespace for lists: "" when every namespace was asked for.
    fn list_namespace(&self) -> &str {
        if self.all_namespaces {
            ""
        } else {
            &self.namespace
        }
    }
}

/// Runs a verb on a fresh runtime and turns its error into one line on
/// stderr and exit code 1.
fn run<F, Fut>(verb: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(verb()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error as one readable line: for an API error its reason, message
/// and the field paths of its causes.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut text = match e.downcast_ref::<berth_client::Error>() {
        Some(api) => api_error(api),
        None => format!("{e:#}"),
    };
    if text.contains('\n') {
        text = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
    }
    text
}

fn api_error(e: &berth_client::Error) -> String {
    let berth_client::Error::Api { reason, message, status, .. } = e else {
        return e.to_string();
    };
    let mut text = format!("{reason}: {message}");
    let causes = status.details.as_ref().map(|d| d.causes.as_slice()).unwrap_or_default();
    for cause in causes {
        if cause.field.is_empty() || message.contains(&cause.field) {
            continue;
        }
        text.push_str(&format!("; {}: {}", cause.field, cause.message));
    }
    text
}

/// `kind name...` or `kind/name ...` into (kind, names).
fn parse_targets(args: &[String]) -> Result<Vec<(Kind, String)>> {
    let Some(first) = args.first() else { bail!("name a resource type, such as pods") };
    if first.contains('/') {
        return args
            .iter()
            .map(|a| match a.split_once('/') {
                Some((kind, name)) if !name.is_empty() => Ok((Kind::parse(kind)?, name.into())),
                _ => bail!("{a:?}: mixing TYPE/NAME and TYPE NAME is not allowed"),
            })
            .collect();
    }
    let kind = Kind::parse(first)?;
    Ok(args[1..].iter().map(|name| (kind, name.clone())).collect())
}

pub fn get(args: &GetArgs) -> ExitCode {
    run(|| get::run(args))
}

pub fn describe(args: &DescribeArgs) -> ExitCode {
    run(|| describe::run(args))
}

pub fn apply(args: &ApplyArgs) -> ExitCode {
    run(|| apply::run(args))
}

pub fn delete(args: &DeleteArgs) -> ExitCode {
    run(|| delete::run(args))
}

pub fn wait(args: &WaitArgs) -> ExitCode {
    run(|| wait::run(args))
}

pub fn logs(args: &LogsArgs) -> ExitCode {
    run(|| streams::logs(args))
}

/// Runs a command in a container; exits with the command's exit code.
pub fn exec(args: &ExecArgs) -> ExitCode {
    stream_main(streams::exec(args))
}

/// Attaches to a container's own process; exits 0 when its output ends.
pub fn attach(args: &AttachArgs) -> ExitCode {
    stream_main(streams::attach(args))
}

/// Runs a stream to its end; exits with the code it ends with.
fn stream_main(stream: impl std::future::Future<Output = anyhow::Result<i32>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(stream);
    // A read of standard input may still be blocked; it ends with the process.
    runtime.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// A progress line on stderr that rewrites itself when stderr is a
/// terminal, and prints whole lines (at most every few seconds) otherwise.
pub struct Progress {
    tty: bool,
    last: Option<std::time::Instant>,
    width: usize,
}

impl Progress {
    pub fn new() -> Progress {
        use std::io::IsTerminal;
        Progress { tty: std::io::stderr().is_terminal(), last: None, width: 0 }
    }

    pub fn update(&mut self, text: &str) {
        use std::io::Write;
        let now = std::time::Instant::now();
        if self.tty {
            let pad = self.width.saturating_sub(text.chars().count());
            eprint!("\r{text}{}", " ".repeat(pad));
            self.width = text.chars().count();
            let _ = std::io::stderr().flush();
        } else if self.last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(5)) {
            eprintln!("{text}");
            self.last = Some(now);
        }
    }

    pub fn finish(&mut self) {
        if self.tty && self.width > 0 {
            eprint!("\r{}\r", " ".repeat(self.width));
            self.width = 0;
        }
    }
}

/// "3s", "1m20s": elapsed time for progress lines.
fn elapsed(since: std::time::Instant) -> String {
    let s = since.elapsed().as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{}s", s / 60, s % 60)
    }
}

/// "30s", "5m", "1h30m", "500ms", or a bare number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let n: f64 =
            number.parse().map_err(|_| format!("{text:?} is not a duration like 30s or 5m"))?;
        let seconds = match unit {
            "ms" => n / 1000.0,
            "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("{text:?} is not a duration like 30s or 5m")),
        };
        total += Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
        rest = tail;
    }
    Ok(total)
}
