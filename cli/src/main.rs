//! `berth`: the one binary. Servers, node agents and control loops run as its
//! subcommands, and so do the operator's verbs.

mod agent;
mod controller_manager;
mod demo;
mod endpoints;
mod manifests;
mod scheduler;
mod server;
mod up;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A container orchestrator in the Kubernetes mould whose API servers replicate \
             the cluster state themselves through an embedded Raft log",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an API-server peer (Raft-replicated store, gRPC and REST front ends)
    Server(server::ServerArgs),
    /// Run a node agent (kubelet) that runs the pods bound to its node
    Agent(agent::AgentArgs),
    /// Run a scheduler replica (one leader at a time)
    Scheduler(scheduler::SchedulerArgs),
    /// Run a controller-manager replica (one leader at a time)
    ControllerManager(controller_manager::ControllerManagerArgs),
    /// Start a local highly available cluster on this machine
    Up(up::UpArgs),
    /// Run OCI containers from bundles (runc-compatible: create, start, state,
    /// kill, delete, run, exec; --root, --bundle, --pid-file)
    #[command(disable_help_flag = true)]
    Runtime(RuntimeArgs),
    /// Run a device plugin (sample or nvidia)
    DevicePlugin(Pending),
    /// Partition and crash a real multi-peer cluster and check its histories
    Chaos(Pending),
    /// List objects
    Get(Pending),
    /// Show an object in detail, with its events
    Describe(Pending),
    /// Create or update objects from manifests
    Apply(Pending),
    /// Delete objects
    Delete(Pending),
    /// Print a container's logs
    Logs(Pending),
    /// Run a command in a container
    Exec(Pending),
    /// Wait for a condition on objects
    Wait(Pending),
    /// Inspect and change the API-server peers of a cluster
    Cluster(Pending),
    /// Check manifests strictly against berth's object model, without a cluster
    Validate(manifests::ValidateArgs),
    /// Print a shell completion script
    Completion {
        /// The shell to complete for
        shell: clap_complete::Shell,
    },
}

/// The runtime's own command line, parsed by the executor (as runc's is).
#[derive(clap::Args)]
struct RuntimeArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// Arguments of a subcommand that this build does not provide yet.
#[derive(clap::Args)]
struct Pending {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match &cli.command {
        Command::Validate(args) => return manifests::validate(args),
        Command::Server(args) => return server::run(args),
        Command::Scheduler(args) => return scheduler::run(args),
        Command::ControllerManager(args) => return controller_manager::run(args),
        Command::Up(args) => return up::run(args),
        Command::Agent(args) => return agent::run(args),
        Command::Runtime(args) => {
            let mut argv = vec!["berth runtime".to_string()];
            argv.extend(args.args.iter().cloned());
            let code = berth_kubelet::executor::runtime_main(argv);
            return ExitCode::from(u8::try_from(code).unwrap_or(1));
        }
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "berth", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Command::DevicePlugin(_) => "device-plugin",
        Command::Chaos(_) => "chaos",
        Command::Get(_) => "get",
        Command::Describe(_) => "describe",
        Command::Apply(_) => "apply",
        Command::Delete(_) => "delete",
        Command::Logs(_) => "logs",
        Command::Exec(_) => "exec",
        Command::Wait(_) => "wait",
        Command::Cluster(_) => "cluster",
    };
    eprintln!("berth {name}: not available in this build yet; see README.md for what works today");
    ExitCode::from(2)
}

/// Logs to stderr, filtered by RUST_LOG (default: info).
fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
}
