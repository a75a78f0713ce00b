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
    /// This peer's certificate (PEM), issued by the cluster CA for
    /// CN=system:peer:ID (`berth pki issue --peer ID`): its server
    /// certificate on every port, and its client certificate towards other
    /// peers and node agents
    #[arg(long, requires_all = ["tls_private_key_file", "client_ca_file"], conflicts_with = "insecure")]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// The cluster CA's certificate: peers, clients and node agents must
    /// present certificates it issued (clients may use a token instead)
    #[arg(long, requires = "tls_cert_file")]
    client_ca_file: Option<PathBuf>,
    /// Serve plain TCP without TLS: no client certificates, no peer
    /// authentication. Allowed only when every address is on loopback
    #[arg(long)]
    insecure: bool,
    /// File holding the cluster secret node agents hold (`berth up` writes
    /// one); it authenticates the relays of logs and exec to them. Without
    /// it, logs and exec are unavailable
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Authorizers a request passes, in order, as a comma list: AlwaysAllow
    /// (everything), Node (node agents' credentials, for what an agent
    /// does), RBAC (the rules of Roles and ClusterRoles bound to the
    /// caller); the first that allows decides, and a request none allows
    /// is Forbidden [default: Node,RBAC; with --insecure, where nobody has
    /// an identity, AlwaysAllow]
    #[arg(long, value_delimiter = ',')]
    authorization_mode: Vec<berth_apiserver::filters::AuthorizationMode>,
    /// Admission plugins every write passes besides fencing, defaulting and
    /// validation, as a comma list: NodeRestriction (a node may change only
    /// its own Node and Lease and the pods bound to it), PodSecurity (the
    /// Pod Security Standards each namespace's
    /// pod-security.kubernetes.io/enforce label names) [default: both;
    /// with --insecure, none]
    #[arg(long, value_delimiter = ',')]
    enable_admission_plugins: Vec<berth_apiserver::filters::AdmissionPlugin>,
    /// The pod security level enforced in namespaces without a
    /// pod-security.kubernetes.io/enforce label: privileged, baseline or
    /// restricted
    #[arg(long, default_value = "privileged")]
    pod_security_default_level: berth_apiserver::filters::Level,
    /// Users whose pods pod security admission does not check (comma list)
    #[arg(long, value_delimiter = ',')]
    pod_security_exempt_users: Vec<String>,
    /// Groups whose members' pods pod security admission does not check
    /// (comma list)
    #[arg(long, value_delimiter = ',')]
    pod_security_exempt_groups: Vec<String>,
    #[command(flatten)]
    guards: crate::token::GuardArgs,
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
    let advertise = args.advertise.clone().unwrap_or_else(|| args.listen.to_string());
    let config = berth_apiserver::PeerConfig {
        id: args.id,
        cluster: args.cluster.clone(),
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        advertise: advertise.clone(),
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
        tls: peer_tls(args, &advertise)?,
        authorization_modes: authorization_modes(args),
        admission_plugins: admission_plugins(args),
        pod_security: berth_apiserver::filters::PodSecurityConfig {
            default_level: args.pod_security_default_level,
            exempt_users: args.pod_security_exempt_users.clone(),
            exempt_groups: args.pod_security_exempt_groups.clone(),
        },
        guards: args.guards.config(),
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

/// The authorizers asked for, else the secure default: a cluster with
/// identities authorizes by them; an insecure one has none to go by.
fn authorization_modes(args: &ServerArgs) -> Vec<berth_apiserver::filters::AuthorizationMode> {
    use berth_apiserver::filters::AuthorizationMode::*;
    match (&args.authorization_mode[..], args.insecure) {
        ([], true) => vec![AlwaysAllow],
        ([], false) => vec![Node, Rbac],
        (given, _) => given.to_vec(),
    }
}

/// The admission plugins asked for, else those a secure cluster runs.
fn admission_plugins(args: &ServerArgs) -> Vec<berth_apiserver::filters::AdmissionPlugin> {
    use berth_apiserver::filters::AdmissionPlugin::*;
    match (&args.enable_admission_plugins[..], args.insecure) {
        ([], true) => Vec::new(),
        ([], false) => vec![NodeRestriction, PodSecurity],
        (given, _) => given.to_vec(),
    }
}

/// The peer's TLS setup from its flags; None with `--insecure`, which only
/// loopback addresses may use.
fn peer_tls(args: &ServerArgs, advertise: &str) -> Result<Option<berth_apiserver::PeerTls>> {
    if args.insecure {
        let addresses = [args.listen.to_string(), args.http.to_string(), advertise.to_string()];
        let exposed: Vec<&String> =
            addresses.iter().filter(|a| !berth_tls::is_loopback(a)).collect();
        if !exposed.is_empty() {
            bail!(
                "--insecure serves without TLS, which is refused on non-loopback addresses \
                 ({}); give --tls-cert-file, --tls-private-key-file and --client-ca-file \
                 (berth pki issues them)",
                exposed.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        return Ok(None);
    }
    let (Some(cert), Some(key), Some(ca)) =
        (&args.tls_cert_file, &args.tls_private_key_file, &args.client_ca_file)
    else {
        bail!(
            "a peer serves over mutual TLS: give --tls-cert-file, --tls-private-key-file and \
             --client-ca-file (`berth pki init` makes a cluster CA, `berth pki issue --peer {}` \
             this peer's certificate), or --insecure for a loopback-only cluster",
            args.id
        );
    };
    let credential = berth_tls::Credential::load(cert, key)?;
    let trust = berth_tls::Trust::load(ca)?;
    trust
        .verify_client(&credential.cert_pem)
        .with_context(|| format!("{} was not issued by {}", cert.display(), ca.display()))?;
    let named = credential.identity().and_then(|i| i.peer_id());
    if named != Some(args.id) {
        bail!(
            "{} is not peer {}'s certificate (its CN must be system:peer:{}; `berth pki issue \
             --peer {}` makes one)",
            cert.display(),
            args.id,
            args.id,
            args.id
        );
    }
    Ok(Some(berth_apiserver::PeerTls { credential, trust }))
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
