//! `berth controller-manager`: one replica of the controller-manager. Run
//! several; the one holding the Lease kube-system/berth-controller-manager
//! runs the controllers, the others stand by to take over.

use anyhow::{bail, Context, Result};
use berth_controllers::{Client, Config, ControllerManager, ElectionTiming, CONTROLLERS};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ControllerManagerArgs {
    /// API server peers as HOST:PORT,...; calls fail over between them
    #[arg(long, value_delimiter = ',', required = true)]
    server: Vec<String>,
    #[command(flatten)]
    auth: crate::config::AuthArgs,
    /// This replica's name in the Lease and in its Events (default: the
    /// host name and process id)
    #[arg(long)]
    id: Option<String>,
    /// How long the Lease stays held without renewal. With the defaults a
    /// standby takes over within about 2.5 s of the leader's death: the
    /// lease duration, counted from its last sight of a renewal (at most a
    /// retry period after it), plus one retry period
    #[arg(long, default_value_t = 2000)]
    leader_elect_lease_duration_ms: u64,
    /// A leader that could not renew for this long stops its controllers;
    /// below the lease duration, so it stops before anyone may take over
    /// (0.5 s of margin for clock rates and stopping; the fence on every
    /// write covers whatever the margin does not)
    #[arg(long, default_value_t = 1500)]
    leader_elect_renew_deadline_ms: u64,
    /// How often the leader renews and standbys try to take over; six
    /// renewals fit in the renew deadline, so one slow call does not cost
    /// the leadership
    #[arg(long, default_value_t = 250)]
    leader_elect_retry_period_ms: u64,
    /// Workers per controller
    #[arg(long, default_value_t = 5)]
    workers: usize,
    /// Controllers to run: names, "*" for all, "-NAME" to leave one out
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Seconds between full resyncs of every informer
    #[arg(long, default_value_t = 60)]
    resync_seconds: u64,
    /// Seconds without a node Lease renewal before the node is marked
    /// Ready=Unknown and tainted node.kubernetes.io/unreachable:NoExecute
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period_seconds: u64,
    /// Seconds a pod without its own toleration of the unreachable taint
    /// stays on an unreachable node before it is evicted
    #[arg(long, default_value_t = 300)]
    default_unreachable_toleration_seconds: u64,
    /// Pod evictions per second at most, over all nodes (0: no limit)
    #[arg(long, default_value_t = 10.0)]
    node_eviction_rate: f64,
    /// HTTP address for /livez, /leaderz and /metrics
    #[arg(long, default_value = "127.0.0.1:10257")]
    http: SocketAddr,
}

pub fn run(args: &ControllerManagerArgs) -> ExitCode {
    crate::init_logging();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth controller-manager: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config(args: &ControllerManagerArgs) -> Result<Config> {
    let ms = Duration::from_millis;
    let election = ElectionTiming {
        lease_duration: ms(args.leader_elect_lease_duration_ms),
        renew_deadline: ms(args.leader_elect_renew_deadline_ms),
        retry_period: ms(args.leader_elect_retry_period_ms),
    };
    if !(election.retry_period < election.renew_deadline
        && election.renew_deadline < election.lease_duration)
    {
        bail!(
            "leader election needs retry period < renew deadline < lease duration, not {:?} / {:?} / {:?}",
            election.retry_period,
            election.renew_deadline,
            election.lease_duration
        );
    }
    // The Lease records whole seconds; a shorter duration would be stored
    // longer than the leader assumes.
    if election.lease_duration < Duration::from_secs(1) {
        bail!("--leader-elect-lease-duration-ms must be at least 1000");
    }
    for name in &args.controllers {
        let bare = name.strip_prefix('-').unwrap_or(name);
        if bare != "*" && !CONTROLLERS.contains(&bare) {
            bail!("unknown controller {name:?}; known: {}", CONTROLLERS.join(", "));
        }
    }
    if !args.node_eviction_rate.is_finite() || args.node_eviction_rate < 0.0 {
        bail!("--node-eviction-rate must be a non-negative number");
    }
    let identity = match &args.id {
        Some(id) if !id.is_empty() => id.clone(),
        _ => crate::endpoints::default_identity(),
    };
    let mut config = Config::new(&identity);
    config.election = election;
    config.workers = args.workers.max(1);
    config.controllers = args.controllers.clone();
    config.resync = Duration::from_secs(args.resync_seconds.max(1));
    config.node_lifecycle.grace_period =
        Duration::from_secs(args.node_monitor_grace_period_seconds.max(1));
    config.node_lifecycle.default_toleration =
        Duration::from_secs(args.default_unreachable_toleration_seconds);
    config.node_lifecycle.eviction_qps = args.node_eviction_rate;
    Ok(config)
}

fn serve(args: &ControllerManagerArgs) -> Result<()> {
    let config = config(args)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        // Connections are made lazily, on the runtime.
        let config_of_client = args.auth.auth()?.client_config("berth-controller-manager", args.server.clone())?;
        let client = Client::with_config(config_of_client).context("API server addresses")?;
        let stop = tokio_util::sync::CancellationToken::new();
        tracing::info!(identity = %config.identity, servers = ?args.server, http = %args.http, "controller-manager starting");
        let manager = ControllerManager::new(&client, config);
        let http = crate::endpoints::serve(args.http, manager.leading(), stop.clone()).await?;
        // Everything ends with the signal; run() returns once it has
        // stopped the controllers and given the Lease up.
        let (signalled, ()) =
            tokio::join!(crate::endpoints::stop_on_signal(stop.clone()), manager.run(stop.clone()));
        stop.cancel();
        let _ = http.await;
        signalled?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControllerManagerArgs,
    }

    fn parse(extra: &[&str]) -> Result<Config> {
        let mut argv = vec!["cm", "--server", "a:1,b:2"];
        argv.extend_from_slice(extra);
        config(&Cli::try_parse_from(argv)?.args)
    }

    #[test]
    fn the_defaults_take_over_within_three_seconds() {
        let config = parse(&[]).unwrap();
        let e = &config.election;
        assert!(e.lease_duration + e.retry_period < Duration::from_secs(3));
        assert!(e.retry_period < e.renew_deadline && e.renew_deadline < e.lease_duration);
        assert!(config.identity.ends_with(&format!("-{}", std::process::id())));
    }

    #[test]
    fn inconsistent_timings_and_unknown_controllers_are_refused() {
        assert!(parse(&["--leader-elect-renew-deadline-ms", "3000"]).is_err());
        assert!(parse(&["--controllers", "*,-nosuch"]).is_err());
        let config = parse(&["--controllers", "*,-nodelifecycle", "--id", "cm-a"]).unwrap();
        assert!(!config.enabled("nodelifecycle") && config.enabled("replicaset"));
        assert_eq!(config.identity, "cm-a");
    }
}
