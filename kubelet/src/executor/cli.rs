//! The runc-compatible command line: `create|start|state|kill|delete|run|exec`
//! with `--root`, `--bundle` and `--pid-file`, so tools that drive runc (and
//! bundles made by `runc spec`) work unchanged.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{Parser, Subcommand};
use nix::sys::signal::Signal;
use oci_spec::runtime::Process;

use super::container::{load_spec, Container, CreateOptions, Stdio};
use super::error::{ExecutorError, Result};

#[derive(Debug, Parser)]
#[command(name = "berth runtime", about = "Run OCI containers (runc-compatible)")]
struct RuntimeArgs {
    /// Directory for container state.
    #[arg(long, global = true, default_value = "/run/berth")]
    root: PathBuf,
    /// Accepted for runc compatibility; logs go to stderr through tracing.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long, global = true)]
    log_format: Option<String>,
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted for runc compatibility; berth always drives cgroupfs directly.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container that waits for `start`.
    Create(CreateArgs),
    /// Run a created container's program.
    Start { id: String },
    /// Print the container's OCI state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init.
    Kill {
        /// Signal every process in the container's cgroup.
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Remove a stopped container (running ones with --force).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// Create, start, wait and delete; exits with the container's status.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Return after start instead of waiting.
        #[arg(short, long)]
        detach: bool,
    },
    /// Run another process in a running container.
    Exec(ExecArgs),
}

#[derive(Debug, clap::Args)]
struct CreateArgs {
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master (SCM_RIGHTS) of a container
    /// whose spec sets process.terminal.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Accepted for runc compatibility and ignored.
    #[arg(long)]
    no_pivot: bool,
    #[arg(long)]
    no_new_keyring: bool,
    id: String,
}

#[derive(Debug, clap::Args)]
struct ExecArgs {
    /// A JSON OCI process to run instead of the arguments.
    #[arg(short, long)]
    process: Option<PathBuf>,
    #[arg(long)]
    cwd: Option<PathBuf>,
    #[arg(short, long)]
    env: Vec<String>,
    #[arg(short, long)]
    tty: bool,
    #[arg(short, long)]
    detach: bool,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    id: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Runs one runtime command. `args` is the whole command line, program name
/// first (`["berth-runtime", "--root", "/run/x", "create", "--bundle", "b", "id"]`).
/// Returns the process exit code: 0 on success, 1 on error, 2 on bad usage,
/// and for `run` / `exec` the container process's own status.
pub fn runtime_main(args: Vec<String>) -> i32 {
    let parsed = match RuntimeArgs::try_parse_from(args) {
        Ok(p) => p,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match run(parsed) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth runtime: {e}");
            1
        }
    }
}

fn run(args: RuntimeArgs) -> Result<i32> {
    let root = args.root;
    match args.command {
        Command::Create(c) => {
            create(&root, &c)?;
            Ok(0)
        }
        Command::Start { id } => {
            Container::load(&root, &id)?.start()?;
            Ok(0)
        }
        Command::State { id } => {
            let state = Container::load(&root, &id)?.state();
            let text = serde_json::to_string_pretty(&state).map_err(|e| {
                ExecutorError::CorruptState { path: root.join(&id), reason: e.to_string() }
            })?;
            println!("{text}");
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let signal = parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            Container::load(&root, &id)?.kill(signal, all)?;
            Ok(0)
        }
        Command::Delete { force, id } => {
            match Container::load(&root, &id) {
                Ok(c) => c.delete(force)?,
                // runc: deleting a missing container with --force succeeds.
                Err(ExecutorError::NotFound(_)) if force => {}
                Err(e) => return Err(e),
            }
            Ok(0)
        }
        Command::Run { create: c, detach } => {
            let mut container = create(&root, &c)?;
            if let Err(e) = container.start() {
                let _ = container.delete(true);
                return Err(e);
            }
            if detach {
                return Ok(0);
            }
            let status = container.wait();
            container.delete(true)?;
            Ok(status?.code())
        }
        Command::Exec(e) => exec(&root, e),
    }
}

fn create(root: &Path, c: &CreateArgs) -> Result<Container> {
    let mut opts = CreateOptions::new(c.id.clone(), c.bundle.clone(), root);
    opts.stdio = Stdio::Inherit;
    opts.console_socket = c.console_socket.clone();
    let container = Container::create(opts)?;
    if let Some(pid_file) = &c.pid_file {
        write_pid_file(pid_file, container.pid().as_raw())?;
    }
    Ok(container)
}

fn exec(root: &Path, e: ExecArgs) -> Result<i32> {
    if e.tty {
        return Err(ExecutorError::Unsupported("exec --tty (terminals)".into()));
    }
    let container = Container::load(root, &e.id)?;
    let process = match &e.process {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(ExecutorError::io(path))?;
            serde_json::from_str::<Process>(&text).map_err(|err| ExecutorError::InvalidBundle {
                bundle: path.clone(),
                reason: err.to_string(),
            })?
        }
        None => {
            if e.args.is_empty() {
                return Err(ExecutorError::Unsupported("exec needs a command or --process".into()));
            }
            // Start from the container's own process: same user, caps, env.
            let spec = load_spec(&container.state().bundle().clone())?;
            let mut p = spec.process().clone().unwrap_or_default();
            p.set_args(Some(e.args.clone()));
            p.set_terminal(Some(false));
            if let Some(cwd) = &e.cwd {
                p.set_cwd(cwd.clone());
            }
            let mut env = p.env().clone().unwrap_or_default();
            env.extend(e.env.iter().cloned());
            p.set_env(Some(env));
            p
        }
    };
    let mut proc = container.exec(&process, Stdio::Inherit)?;
    if let Some(pid_file) = &e.pid_file {
        write_pid_file(pid_file, proc.pid().as_raw())?;
    }
    if e.detach {
        return Ok(0);
    }
    Ok(proc.wait()?.code())
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    // Written whole then renamed, so a reader never sees a partial pid.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, pid.to_string()).map_err(ExecutorError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(ExecutorError::io(path))
}

/// "KILL", "SIGKILL" or "9".
fn parse_signal(s: &str) -> Result<Signal> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| ExecutorError::Unsupported(format!("signal {s}")));
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).map_err(|_| ExecutorError::Unsupported(format!("signal {s}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_like_runc() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE").is_err());
    }

    #[test]
    fn command_line_parses_runc_style() {
        let args = RuntimeArgs::try_parse_from([
            "berth",
            "--root",
            "/tmp/r",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/p",
            "c1",
        ])
        .unwrap();
        assert_eq!(args.root, PathBuf::from("/tmp/r"));
        assert!(matches!(args.command, Command::Create(CreateArgs { ref id, .. }) if id == "c1"));
        let args =
            RuntimeArgs::try_parse_from(["berth", "exec", "c1", "sh", "-c", "echo hi"]).unwrap();
        assert!(
            matches!(args.command, Command::Exec(ExecArgs { ref args, .. }) if args.len() == 3)
        );
    }
}
