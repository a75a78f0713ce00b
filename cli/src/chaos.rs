//! `berth chaos`: partition and crash a real multi-peer cluster on this host
//! and check what its clients saw. The work is in the berth-chaos crate.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// API-server peers, each in its own network namespace: 3 or 5
    #[arg(long, default_value_t = 3)]
    peers: usize,
    /// Seed of the fault schedule; the same seed applies the same faults
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Faults to apply; each round of eleven applies every kind once
    #[arg(long, default_value_t = 11)]
    faults: usize,
    /// How long each fault holds, MIN-MAX milliseconds
    #[arg(long, default_value = "1500-3000")]
    hold_ms: String,
    /// How long the cluster runs healed between faults, MIN-MAX milliseconds
    #[arg(long, default_value = "1000-2000")]
    gap_ms: String,
    /// Register clients on the etcd facade
    #[arg(long, default_value_t = 4)]
    clients: u64,
    /// Seconds the linearizability checker may take
    #[arg(long, default_value_t = 60)]
    check_budget_seconds: u64,
    /// Directory for report.json, summary.txt, timeline.svg, history.json
    /// and the processes' logs
    #[arg(long, default_value = "berth-chaos")]
    out: PathBuf,
    /// Print the schedule the seed draws and exit
    #[arg(long)]
    dry_run: bool,
    /// Remove what runs killed before they could clean up left behind
    /// (namespaces, links, data directories), then exit; every run also
    /// does this first
    #[arg(long)]
    clean: bool,
}

fn range(text: &str, flag: &str) -> Result<(u64, u64)> {
    let (a, b) = text
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .with_context(|| format!("{flag} must look like 1000-2000"))?;
    anyhow::ensure!(a <= b, "{flag}: {a} is above {b}");
    Ok((a, b))
}

pub fn run(args: &ChaosArgs) -> ExitCode {
    // stdout carries the schedule and the summary; logs go to stderr, and
    // only warnings unless RUST_LOG asks for more.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .init();
    match chaos(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn chaos(args: &ChaosArgs) -> Result<ExitCode> {
    let config = berth_chaos::Config {
        berth: std::env::current_exe().context("find the berth binary")?,
        peers: args.peers,
        seed: args.seed,
        faults: args.faults,
        hold_ms: range(&args.hold_ms, "--hold-ms")?,
        gap_ms: range(&args.gap_ms, "--gap-ms")?,
        clients: args.clients.max(1),
        out: args.out.clone(),
        check_budget: Duration::from_secs(args.check_budget_seconds),
    };
    if args.clean {
        for removed in berth_chaos::sweep_abandoned() {
            println!("removed {removed}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.dry_run {
        for fault in berth_chaos::schedule_of(&config) {
            println!("{fault}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let report = runtime.block_on(async {
        let interrupted = async {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                },
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        berth_chaos::run(config, interrupted).await
    })?;
    print!("{}", report.summary());
    println!("report: {}", args.out.join("report.json").display());
    if report.passed() {
        return Ok(ExitCode::SUCCESS);
    }
    for v in &report.violations {
        eprintln!("violation [{}]: {}", v.checker, v.message);
    }
    Ok(ExitCode::FAILURE)
}
