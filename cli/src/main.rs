//! `berth`: the one binary. Servers, node agents and control loops run as its
//! subcommands, and so do the operator's verbs.

mod agent;
mod chaos;
mod cluster;
mod config;
mod controller_manager;
mod demo;
mod device_plugin;
mod endpoints;
mod manifests;
mod pki;
mod scheduler;
mod server;
mod token;
mod up;
mod verbs;

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
    #[command(subcommand_required = true)]
    DevicePlugin(device_plugin::DevicePluginArgs),
    /// Partition and crash a real multi-peer cluster and check its histories
    Chaos(chaos::ChaosArgs),
    /// List objects
    Get(verbs::GetArgs),
    /// Show an object in detail, with its events
    Describe(verbs::DescribeArgs),
    /// Create or update objects from manifests
    Apply(verbs::ApplyArgs),
    /// Delete objects
    Delete(verbs::DeleteArgs),
    /// Print a container's logs
    Logs(verbs::LogsArgs),
    /// Run a command in a container
    Exec(verbs::ExecArgs),
    /// Attach to the process a container runs (its output; with -i its stdin)
    Attach(verbs::AttachArgs),
    /// Wait for a condition on objects
    Wait(verbs::WaitArgs),
    /// Mint service-account tokens
    Token(token::TokenArgs),
    /// Create the cluster CA and issue certificates for peers, nodes and users
    Pki(pki::PkiArgs),
    /// Inspect and change the API-server peers of a cluster
    Cluster(cluster::ClusterArgs),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Command::Validate(args) => manifests::validate(args),
        Command::Server(args) => server::run(args),
        Command::Scheduler(args) => scheduler::run(args),
        Command::ControllerManager(args) => controller_manager::run(args),
        Command::Up(args) => up::run(args),
        Command::Get(args) => verbs::get(args),
        Command::Describe(args) => verbs::describe(args),
        Command::Apply(args) => verbs::apply(args),
        Command::Delete(args) => verbs::delete(args),
        Command::Wait(args) => verbs::wait(args),
        Command::Logs(args) => verbs::logs(args),
        Command::Exec(args) => verbs::exec(args),
        Command::Attach(args) => verbs::attach(args),
        Command::Cluster(args) => cluster::run(args),
        Command::Pki(args) => pki::run(args),
        Command::Token(args) => token::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::DevicePlugin(args) => device_plugin::run(args),
        Command::Runtime(args) => {
            let mut argv = vec!["berth runtime".to_string()];
            argv.extend(args.args.iter().cloned());
            let code = berth_kubelet::executor::runtime_main(argv);
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Completion { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "berth", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
    }
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
