//! `berth scheduler`: one scheduler replica. Several may run; the one that
//! holds the kube-system/berth-scheduler Lease schedules, the others wait
//! to take over.

use crate::endpoints;
use anyhow::{Context, Result};
use berth_client::ElectionTiming;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// API server peers, comma-separated (host:port of their gRPC address)
    #[arg(long, default_value = "127.0.0.1:2379")]
    server: String,
    #[command(flatten)]
    auth: crate::config::AuthArgs,
    /// This replica's name in the Lease [default: hostname-pid]
    #[arg(long)]
    id: Option<String>,
    /// Schedule the pods whose spec.schedulerName is this
    #[arg(long, default_value = berth_scheduler::DEFAULT_SCHEDULER_NAME)]
    scheduler_name: String,
    /// /healthz, /leaderz and /metrics
    #[arg(long, default_value = "127.0.0.1:10259")]
    http: SocketAddr,
    /// How long the Lease holds without renewal; a standby takes over after
    /// it has seen the Lease unchanged this long
    #[arg(long, default_value_t = 2000)]
    lease_duration_ms: u64,
    /// A leader that could not renew for this long stops scheduling
    #[arg(long, default_value_t = 1500)]
    renew_deadline_ms: u64,
    /// How often the leader renews and standbys try to take over
    #[arg(long, default_value_t = 250)]
    retry_period_ms: u64,
    /// Binds in flight at once
    #[arg(long, default_value_t = 256)]
    max_binds_in_flight: usize,
}

pub fn run(args: &SchedulerArgs) -> ExitCode {
    crate::init_logging();
    match schedule(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth scheduler: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn schedule(args: &SchedulerArgs) -> Result<()> {
    anyhow::ensure!(
        args.retry_period_ms < args.renew_deadline_ms
            && args.renew_deadline_ms < args.lease_duration_ms,
        "want --retry-period-ms < --renew-deadline-ms < --lease-duration-ms"
    );
    let identity = args.id.clone().unwrap_or_else(endpoints::default_identity);
    let mut config = berth_scheduler::SchedulerConfig::new(&identity);
    config.scheduler_name = args.scheduler_name.clone();
    config.election = ElectionTiming {
        lease_duration: Duration::from_millis(args.lease_duration_ms),
        renew_deadline: Duration::from_millis(args.renew_deadline_ms),
        retry_period: Duration::from_millis(args.retry_period_ms),
    };
    config.max_binds_in_flight = args.max_binds_in_flight.max(1);
    let peers = endpoints::peers(&args.server)?;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let client = berth_client::Client::with_config(
            args.auth.auth()?.client_config("berth-scheduler", peers)?,
        )?;
        let stop = tokio_util::sync::CancellationToken::new();
        let (leadership, leading) = tokio::sync::watch::channel(None);
        let http = endpoints::serve(args.http, leading, stop.clone()).await?;
        tracing::info!(%identity, server = %args.server, "scheduler replica starting");
        let signals = endpoints::stop_on_signal(stop.clone());
        let scheduling = berth_scheduler::run_reporting(client, config, stop.clone(), leadership);
        let (signalled, ()) = tokio::join!(signals, scheduling);
        stop.cancel();
        let _ = http.await;
        signalled
    })
}
