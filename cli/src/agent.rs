//! `berth agent`: the node agent. It registers the node, heartbeats, and
//! runs the pods bound to it through CRI — berth's own runtime service,
//! started in this process on a unix socket, or another CRI runtime's
//! socket given with --cri-socket.

use crate::endpoints;
use anyhow::{Context, Result};
use berth_kubelet::agent::{self, AgentConfig, Reserved};
use berth_kubelet::image::{ImageStore, RegistryConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct AgentArgs {
    /// API server peers, comma-separated (host:port of their gRPC address)
    #[arg(long, default_value = "127.0.0.1:2379")]
    server: String,
    #[command(flatten)]
    auth: crate::config::AuthArgs,
    /// The node's certificate (`berth pki issue --node NAME`), served by
    /// its stream server for logs and exec, which then takes only the API
    /// server peers of the CA named by --certificate-authority (instead of
    /// the cluster secret)
    #[arg(long, requires_all = ["tls_private_key_file", "certificate_authority"])]
    tls_cert_file: Option<PathBuf>,
    /// The private key of --tls-cert-file
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// This node's name [default: the host name]
    #[arg(long)]
    node_name: Option<String>,
    /// The address other components reach this node at
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: String,
    /// Where the agent keeps images, pods, logs and runtime state
    #[arg(long, default_value = "/var/lib/berth/agent")]
    root_dir: PathBuf,
    /// Use this CRI runtime's socket instead of starting berth's own
    #[arg(long)]
    cri_socket: Option<PathBuf>,
    /// Registries (host:port) pulled from over plain HTTP, comma-separated
    #[arg(long, value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// cpu held back from pods, in millicores
    #[arg(long, default_value_t = 0)]
    reserved_cpu_millis: i64,
    /// Memory held back from pods, in MiB
    #[arg(long, default_value_t = 0)]
    reserved_memory_mib: i64,
    /// Seconds between renewals of the node's Lease
    #[arg(long, default_value_t = 10)]
    lease_renew_seconds: u64,
    /// /healthz and /metrics
    #[arg(long, default_value = "127.0.0.1:10248")]
    http: SocketAddr,
    /// The pods' subnet on this node (a bridge network through the CNI
    /// plugins)
    #[arg(long, default_value = "10.88.0.0/16")]
    pod_cidr: String,
    /// The bridge the pods' network uses
    #[arg(long, default_value = "berth0")]
    cni_bridge: String,
    /// Where the CNI plugin programs are
    #[arg(long, value_delimiter = ',', default_value = "/usr/lib/cni,/opt/cni/bin")]
    cni_bin_dir: Vec<PathBuf>,
    /// Pods get loopback only, no network
    #[arg(long)]
    no_cni: bool,
    /// Stop every pod's containers when the agent stops (what `berth up`
    /// does); by default they keep running for the next agent to find
    #[arg(long)]
    stop_pods_on_exit: bool,
    /// The kubelet root whose device-plugins/ folder holds the device
    /// plugins' Registration socket (kubelet.sock) and the allocation
    /// checkpoint; an empty value serves no device plugins
    #[arg(long, default_value = "/var/lib/kubelet")]
    device_plugin_root: String,
    /// File holding the cluster secret (`berth up` writes one): API servers
    /// present it to reach this node's logs and exec. Without it the node
    /// serves neither
    #[arg(long)]
    cluster_secret_file: Option<PathBuf>,
    /// Port on --node-ip for logs and exec (0: any free port); the Node
    /// publishes the port it got
    #[arg(long, default_value_t = 0)]
    kubelet_port: u16,
    /// Containers whose pod names no seccomp profile run under the
    /// runtime's default profile (RuntimeDefault), as Kubernetes'
    /// --seccomp-default; --seccomp-default=false leaves them Unconfined.
    /// Localhost profiles are read from <root-dir>/seccomp
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    seccomp_default: bool,
}

pub fn run(args: &AgentArgs) -> ExitCode {
    crate::init_logging();
    match serve(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &AgentArgs) -> Result<()> {
    if args.cri_socket.is_none() && !nix::unistd::geteuid().is_root() {
        anyhow::bail!(
            "running pods needs root (namespaces, cgroups, mounts); run as root, or point --cri-socket at a CRI runtime"
        );
    }
    let node = match &args.node_name {
        Some(n) => n.clone(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("read the host name; pass --node-name")?
            .trim()
            .to_string(),
    };
    let peers = endpoints::peers(&args.server)?;
    std::fs::create_dir_all(&args.root_dir)
        .with_context(|| format!("create {}", args.root_dir.display()))?;
    let mut config = AgentConfig::new(&node, &args.root_dir);
    config.node_ip = args.node_ip.clone();
    config.reserved = Reserved {
        milli_cpu: args.reserved_cpu_millis.max(0),
        memory_bytes: args.reserved_memory_mib.max(0) << 20,
        ..Default::default()
    };
    config.lease_renew = Duration::from_secs(args.lease_renew_seconds.max(1));
    config.stop_pods_on_exit = args.stop_pods_on_exit;
    if !args.device_plugin_root.is_empty() {
        let dir = PathBuf::from(&args.device_plugin_root).join("device-plugins");
        config.devices = Some(berth_kubelet::devices::DeviceConfig::new(dir));
    }
    config.cluster_secret =
        args.cluster_secret_file.as_deref().map(crate::server::read_cluster_secret).transpose()?;
    config.kubelet_port = args.kubelet_port;
    let auth = args.auth.auth()?;
    if let (Some(cert), Some(key), Some(ca)) =
        (&args.tls_cert_file, &args.tls_private_key_file, &auth.certificate_authority)
    {
        let credential = berth_tls::Credential::load(cert, key)?;
        let trust = berth_tls::Trust::load(ca)?;
        config.stream_tls =
            Some(berth_tls::ServerTls::new(&credential, &trust, berth_tls::Protocol::Grpc)?);
    }
    config.seccomp_default = args.seccomp_default;
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let client = berth_client::Client::with_config(auth.client_config("berth-agent", peers)?)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let runtime_stop = tokio_util::sync::CancellationToken::new();
        let http =
            endpoints::serve(args.http, tokio::sync::watch::channel(None).1, stop.clone()).await?;
        // berth's own runtime service, unless another was named.
        let cri = match &args.cri_socket {
            Some(socket) => {
                config.cri_socket = Some(socket.clone());
                None
            }
            None => {
                let registries = RegistryConfig {
                    plain_http: args.insecure_registry.clone(),
                    ..Default::default()
                };
                let images = ImageStore::open(args.root_dir.join("images"), registries)
                    .context("open the image store")?;
                let socket = args.root_dir.join("cri.sock");
                let server = berth_kubelet::CriServer::bind(berth_kubelet::CriConfig {
                    root: args.root_dir.join("runtime"),
                    socket: socket.clone(),
                    images,
                    cgroup_parent: PathBuf::from(format!("/berth/{node}")),
                    network: (!args.no_cni).then(|| {
                        berth_kubelet::cri::CniNetwork::bridge(
                            "berth",
                            &args.cni_bridge,
                            &args.pod_cidr,
                            &args.root_dir.join("cni"),
                            args.cni_bin_dir.clone(),
                        )
                    }),
                })
                .await
                .context("start the CRI runtime service")?;
                config.cri_socket = Some(socket);
                // The runtime outlives the agent, which may still stop its
                // pods through it on the way out.
                let stop = runtime_stop.clone();
                Some(tokio::spawn(async move { server.serve(stop).await }))
            }
        };
        tracing::info!(node = %node, "node agent starting");
        let (signalled, agent) = tokio::join!(
            endpoints::stop_on_signal(stop.clone()),
            agent::run(&client, &config, stop.clone())
        );
        stop.cancel();
        runtime_stop.cancel();
        if let Some(cri) = cri {
            let _ = cri.await;
        }
        let _ = http.await;
        signalled?;
        agent.context("the node agent stopped")
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        agent: super::AgentArgs,
    }

    #[test]
    fn an_empty_device_plugin_root_turns_device_plugins_off() {
        let base = ["agent", "--node-name", "n1", "--server", "127.0.0.1:1"];
        let off = Cli::try_parse_from(base.iter().chain(&["--device-plugin-root", ""]))
            .map_err(|e| e.to_string())
            .unwrap();
        assert!(off.agent.device_plugin_root.is_empty());
        let on = Cli::try_parse_from(base).map_err(|e| e.to_string()).unwrap();
        assert_eq!(on.agent.device_plugin_root, "/var/lib/kubelet");
    }
}
