//! `berth server`: one API-server peer.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct ServerArgs {
    /// This peer's id (a positive integer, unique in the cluster)
    #[arg(long)]
    id: u64,
    /// The cluster's name; a data directory of another cluster is refused
    #[arg(long, default_value = "berth")]
    cluster: String,
    /// Initial peers as ID=HOST:PORT,... (their gRPC addresses); on a first
    /// start the lowest id creates the cluster with them
    #[arg(long, value_delimiter = ',')]
    peers: Vec<String>,
    /// gRPC address: Raft between peers and the etcd v3 API
    #[arg(long, default_value = "127.0.0.1:2379")]
    listen: SocketAddr,
    /// Address others reach --listen at (default: --listen)
    #[arg(long)]
    advertise: Option<String>,
    /// HTTP address for /livez, /readyz and /metrics
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: SocketAddr,
    /// Data directory (created if missing)
    #[arg(long)]
    data_dir: PathBuf,
    /// Leader heartbeat interval in milliseconds
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Election timeout range in milliseconds, MIN-MAX
    #[arg(long, default_value = "400-800")]
    election_timeout_ms: String,
    /// Seconds of store history kept for watches and reads at past
    /// resourceVersions; older revisions are compacted away
    #[arg(long, default_value_t = 300)]
    history_retention_seconds: u64,
    /// Seconds an Event lives before the store removes it
    #[arg(long, default_value_t = 3600)]
    event_ttl_seconds: u64,
    /// Requests (watches aside) served at once; more are refused with
    /// TooManyRequests
    #[arg(long, default_value_t = berth_apiserver::api::DEFAULT_MAX_IN_FLIGHT)]
    max_requests_in_flight: usize,
    /// Watches served at once; more are refused with TooManyRequests
    #[arg(long, default_value_t = berth_apiserver::api::DEFAULT_MAX_WATCHERS)]
    max_watchers: usize,
    /// Seconds one request may take before it is answered DeadlineExceeded
    /// (a watch's stream is not cut; only its opening is bounded)
    #[arg(long, default_value_t = 60)]
    request_timeout_seconds: u64,
    /// File holding the cluster secret node agents hold (`berth up` writes
    /// one); it authenticates the relays of logs and exec to them. Without
    /// it, logs and exec are unavailable
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
}

pub fn run(args: &ServerArgs) -> ExitCode {
    crate::init_logging();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &ServerArgs) -> Result<()> {
    let initial_peers = parse_peers(&args.peers)?;
    let (min, max) = args
        .election_timeout_ms
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .context("--election-timeout-ms must look like 400-800")?;
    if min >= max || min <= args.heartbeat_ms {
        bail!(
            "--election-timeout-ms {min}-{max} must be a range above --heartbeat-ms {}",
            args.heartbeat_ms
        );
    }
    let config = berth_apiserver::PeerConfig {
        id: args.id,
        cluster: args.cluster.clone(),
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        advertise: args.advertise.clone().unwrap_or_else(|| args.listen.to_string()),
        http: args.http,
        initial_peers,
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        election_timeout: (Duration::from_millis(min), Duration::from_millis(max)),
        history_retention: Duration::from_secs(args.history_retention_seconds.max(1)),
        event_ttl: Duration::from_secs(args.event_ttl_seconds.max(1)),
        max_requests_in_flight: args.max_requests_in_flight.max(1),
        max_watchers: args.max_watchers,
        request_timeout: Duration::from_secs(args.request_timeout_seconds.max(1)),
        kubelet_secret: args.cluster_secret_file.as_deref().map(read_cluster_secret).transpose()?,
    };
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler installs");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            on_signal.cancel();
        });
        berth_apiserver::serve(config, stop).await.context("peer stopped")
    })
}

/// The cluster secret in `path`: one line, surrounding whitespace ignored.
pub(crate) fn read_cluster_secret(path: &std::path::Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read the cluster secret {}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        bail!("the cluster secret {} must be one line of printable ASCII", path.display());
    }
    Ok(secret.to_string())
}

fn parse_peers(peers: &[String]) -> Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for peer in peers {
        let (id, addr) = peer
            .split_once('=')
            .with_context(|| format!("--peers entry {peer:?} is not ID=HOST:PORT"))?;
        let id: u64 =
            id.parse().with_context(|| format!("--peers entry {peer:?}: id is not a number"))?;
        if id == 0 {
            bail!("--peers entry {peer:?}: ids start at 1");
        }
        if out.insert(id, addr.to_string()).is_some() {
            bail!("--peers names peer {id} twice");
        }
    }
    Ok(out)
}
