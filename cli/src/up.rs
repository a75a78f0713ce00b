//! `berth up`: a local highly available control plane in one command —
//! three API server peers, two scheduler and two controller-manager
//! replicas, each its own process of this binary, with their data, logs,
//! ports and a kubeconfig under one directory. Ctrl-C stops everything; the
//! next `berth up` on the same directory brings the same cluster back.

use anyhow::{bail, Context, Result};
use berth_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use berth_proto::etcd::etcdserverpb::StatusRequest;
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

mod credentials;
mod images;
mod network;

#[derive(clap::Args)]
pub struct UpArgs {
    /// Where the cluster keeps its data, logs, ports and kubeconfig
    /// [default: ~/.berth/up]
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Start, print how to reach the cluster, and return once it is ready
    /// (the processes keep running; `berth up --down` stops them)
    #[arg(long)]
    detach: bool,
    /// Stop a detached cluster
    #[arg(long, conflicts_with = "detach")]
    down: bool,
    /// Node agents to start, at most 16 (they need root; without it the
    /// cluster has no nodes). Node N's pods get a /24 on a bridge of its
    /// own, berthBBB-N; the cluster's block BBB (a /20 in 10.128.0.0/9) is
    /// derived from --dir and kept, so clusters never share a bridge or a
    /// subnet
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Registries (host:port) the nodes pull from over plain HTTP
    #[arg(long, value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// Also run a sample Deployment (three busybox web servers), answer a
    /// request from one, then kill the Raft leader and show the cluster
    /// electing another while the Deployment stays up (needs root)
    #[arg(long)]
    demo: bool,
    /// The berth config file in which the cluster is recorded as the current
    /// context, named after --dir [default: $BERTH_CONFIG, else ~/.berth/config]
    #[arg(long)]
    config: Option<PathBuf>,
}

/// The ports of a cluster, chosen on its first start and kept so that a
/// restart finds its peers where they were.
#[derive(Serialize, Deserialize)]
struct Layout {
    peers: Vec<PeerPorts>,
    schedulers: Vec<String>,
    controller_managers: Vec<String>,
    /// Node agents' HTTP ports, one per node; grows with --nodes.
    #[serde(default)]
    agents: Vec<String>,
    /// The nodes' bridges and pod subnets; chosen on the first start with
    /// nodes.
    #[serde(default)]
    network: Option<network::PodNetwork>,
    /// How `berth up` itself reaches the cluster: as its administrator.
    #[serde(skip)]
    auth: crate::config::Auth,
}

#[derive(Serialize, Deserialize)]
struct PeerPorts {
    grpc: String,
    http: String,
}

const PEERS: usize = 3;
const REPLICAS: usize = 2;

pub fn run(args: &UpArgs) -> ExitCode {
    match up(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth up: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn free_addr() -> Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

fn layout(dir: &Path, nodes: usize) -> Result<Layout> {
    if nodes > network::MAX_NODES {
        bail!("--nodes {nodes}: a local cluster has at most {} nodes", network::MAX_NODES);
    }
    let path = dir.join("cluster.json");
    if let Ok(text) = std::fs::read_to_string(&path) {
        let mut layout: Layout = serde_json::from_str(&text)
            .with_context(|| format!("{} is damaged", path.display()))?;
        while layout.agents.len() < nodes {
            layout.agents.push(free_addr()?);
        }
        if nodes > 0 && layout.network.is_none() {
            layout.network = Some(network::PodNetwork::choose(dir)?);
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&layout)?)?;
        return Ok(layout);
    }
    let layout = Layout {
        peers: (0..PEERS)
            .map(|_| Ok(PeerPorts { grpc: free_addr()?, http: free_addr()? }))
            .collect::<Result<_>>()?,
        schedulers: (0..REPLICAS).map(|_| free_addr()).collect::<Result<_>>()?,
        controller_managers: (0..REPLICAS).map(|_| free_addr()).collect::<Result<_>>()?,
        agents: (0..nodes).map(|_| free_addr()).collect::<Result<_>>()?,
        network: (nodes > 0).then(|| network::PodNetwork::choose(dir)).transpose()?,
        auth: Default::default(),
    };
    std::fs::write(&path, serde_json::to_vec_pretty(&layout)?)?;
    Ok(layout)
}

/// The cluster's processes; whatever is still running when this goes is
/// stopped (SIGTERM, then SIGKILL).
struct Processes {
    children: Vec<(String, Child)>,
    /// How each was started, to start it again.
    commands: std::collections::HashMap<String, Vec<String>>,
}

impl Processes {
    fn spawn(&mut self, dir: &Path, name: &str, args: &[String]) -> Result<()> {
        let log = std::fs::File::create(dir.join("logs").join(format!("{name}.log")))?;
        // Its own process group: a Ctrl-C in the terminal reaches only
        // `berth up`, which then stops the cluster in order.
        let child = Command::new(std::env::current_exe()?)
            .process_group(0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        self.children.push((name.to_string(), child));
        self.commands.insert(name.to_string(), args.to_vec());
        Ok(())
    }

    /// Kills one process at once (SIGKILL), as a crash would.
    fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.children.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed process again, as it was started.
    fn restart(&mut self, dir: &Path, name: &str) -> Result<()> {
        let args = self
            .commands
            .get(name)
            .cloned()
            .with_context(|| format!("{name} was never started"))?;
        self.spawn(dir, name, &args)
    }

    /// The first process that exited, with how.
    fn exited(&mut self) -> Option<String> {
        self.children.iter_mut().find_map(|(name, child)| match child.try_wait() {
            Ok(Some(status)) => Some(format!("{name} exited ({status})")),
            _ => None,
        })
    }

    /// Stops the control loops first, while the peers can still take their
    /// last writes (giving up their leases), then the peers.
    fn stop(&mut self) {
        // Control loops first, then the nodes (which stop their pods), then
        // the peers everything talks to.
        let children = std::mem::take(&mut self.children);
        let (peers, rest): (Vec<_>, Vec<_>) =
            children.into_iter().partition(|(name, _)| name.starts_with("peer-"));
        let (nodes, loops): (Vec<_>, Vec<_>) =
            rest.into_iter().partition(|(name, _)| name.starts_with("node-"));
        let groups = [
            (loops, Duration::from_secs(5)),
            (nodes, Duration::from_secs(30)),
            (peers, Duration::from_secs(10)),
        ];
        for (group, grace) in groups {
            for (_, child) in &group {
                let pid = nix::unistd::Pid::from_raw(child.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            for (name, mut child) in group {
                while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if child.try_wait().ok().flatten().is_none() {
                    eprintln!("berth up: {name} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}

fn default_dir() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; pass --dir")?;
    Ok(PathBuf::from(home).join(".berth").join("up"))
}

fn up(args: &UpArgs) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => default_dir()?,
    };
    let pids = dir.join("pids");
    if args.down {
        return down(&pids);
    }
    std::fs::create_dir_all(dir.join("logs"))
        .with_context(|| format!("create {}", dir.display()))?;
    // Signals are caught from here on, so that a Ctrl-C while the cluster
    // starts still stops every process it started.
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    let mut signals = runtime.block_on(async { Signals::new() })?;
    if let Ok(text) = std::fs::read_to_string(&pids) {
        let alive = text
            .lines()
            .filter_map(|l| l.parse::<i32>().ok())
            .any(|pid| nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok());
        if alive {
            bail!(
                "a cluster already runs from {} (stop it with `berth up --down --dir {}`)",
                dir.display(),
                dir.display()
            );
        }
    }
    let root = nix::unistd::geteuid().is_root();
    let nodes = if root { args.nodes } else { 0 };
    if !root && args.nodes > 0 {
        eprintln!(
            "berth up: node agents need root (namespaces, cgroups, mounts); starting without nodes"
        );
    }
    let mut layout = layout(&dir, nodes)?;
    let pki = credentials::prepare(&dir, PEERS, nodes)?;
    layout.auth = pki.admin_auth();
    let registries = args.insecure_registry.clone();
    for p in &layout.peers {
        if std::net::TcpListener::bind(&p.grpc).is_err()
            || std::net::TcpListener::bind(&p.http).is_err()
        {
            bail!(
                "port {} or {} is taken by another program; stop it, or use another --dir",
                p.grpc,
                p.http
            );
        }
    }
    // Before the agents start: each then holds its node's image store.
    let test_image = runtime.block_on(images::make_ready(&dir, nodes))?;
    let servers: Vec<String> = layout.peers.iter().map(|p| p.grpc.clone()).collect();
    let members: Vec<String> =
        servers.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
    let mut processes = Processes { children: Vec::new(), commands: Default::default() };
    for (i, p) in layout.peers.iter().enumerate() {
        let id = (i + 1).to_string();
        let data = dir.join(format!("peer-{id}"));
        let args: Vec<String> = [
            "server",
            "--id",
            &id,
            "--cluster",
            "berth-up",
            "--peers",
            &members.join(","),
            "--listen",
            &p.grpc,
            "--http",
            &p.http,
            "--data-dir",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([data.to_string_lossy().into_owned()])
        .chain(pki.peer_flags(i))
        .collect();
        processes.spawn(&dir, &format!("peer-{id}"), &args)?;
    }
    for (i, http) in layout.schedulers.iter().enumerate() {
        let args = [
            "scheduler",
            "--server",
            &servers.join(","),
            "--id",
            &format!("scheduler-{}", i + 1),
            "--http",
            http,
        ];
        let mut args = args.map(String::from).to_vec();
        args.extend(pki.scheduler.client_flags(&pki.ca));
        processes.spawn(&dir, &format!("scheduler-{}", i + 1), &args)?;
    }
    for (i, http) in layout.controller_managers.iter().enumerate() {
        let id = format!("controller-manager-{}", i + 1);
        let args =
            ["controller-manager", "--server", &servers.join(","), "--id", &id, "--http", http];
        let mut args = args.map(String::from).to_vec();
        args.extend(pki.controller_manager.client_flags(&pki.ca));
        processes.spawn(&dir, &id, &args)?;
    }
    for (i, http) in layout.agents.iter().take(nodes).enumerate() {
        let name = format!("node-{}", i + 1);
        let mut args: Vec<String> = [
            "agent",
            "--server",
            &servers.join(","),
            "--node-name",
            &name,
            "--http",
            http,
            "--stop-pods-on-exit",
        ]
        .map(String::from)
        .to_vec();
        // Each node its own bridge and subnet, so several fit on one host.
        let network = layout.network.context("the layout has no pod network")?;
        args.extend(["--cni-bridge".into(), network.bridge(i + 1)]);
        args.extend(["--pod-cidr".into(), network.subnet(i + 1)]);
        args.push("--root-dir".into());
        args.push(dir.join(&name).to_string_lossy().into_owned());
        // Several nodes on one host: each its own device-plugin socket.
        args.push("--device-plugin-root".into());
        args.push(dir.join(&name).join("kubelet").to_string_lossy().into_owned());
        args.extend(pki.node_flags(i));
        for registry in &registries {
            args.push("--insecure-registry".into());
            args.push(registry.clone());
        }
        processes.spawn(&dir, &name, &args)?;
    }
    let pid_list: Vec<String> =
        processes.children.iter().map(|(_, c)| c.id().to_string()).collect();
    std::fs::write(&pids, pid_list.join("\n"))?;
    let kubeconfig_path = dir.join("kubeconfig");
    let https: Vec<String> = layout.peers.iter().map(|p| p.http.clone()).collect();
    std::fs::write(&kubeconfig_path, pki.kubeconfig(&https))?;

    if !runtime.block_on(wait_ready(&layout, nodes, &mut processes, &mut signals))? {
        println!("berth: stopping");
        processes.stop();
        let _ = std::fs::remove_file(&pids);
        return Ok(());
    }
    println!("berth: a 3-peer control plane is up (data and logs in {})", dir.display());
    for (i, p) in layout.peers.iter().enumerate() {
        println!("  peer-{}: gRPC {}  HTTP {}", i + 1, p.grpc, p.http);
    }
    println!(
        "  kubectl: export KUBECONFIG={}   (contexts peer-1, peer-2, peer-3)",
        kubeconfig_path.display()
    );
    println!("  berth API: --server {}", servers.join(","));
    let recorded = crate::config::record(
        args.config.as_deref(),
        &dir,
        servers.clone(),
        Some(pki.ca.clone()),
        pki.admin_credentials(),
    );
    match recorded {
        Ok((name, path)) => {
            println!("  berth: context {name} in {} (current; berth get pods)", path.display())
        }
        Err(e) => eprintln!("berth: could not record the cluster in the berth config: {e:#}"),
    }
    match nodes {
        0 => println!("  nodes: none (node agents need root)"),
        n => println!("  nodes: node-1..node-{n}, running pods through berth's CRI runtime"),
    }
    if let Some(network) = layout.network.filter(|_| nodes > 0) {
        let bridges = match nodes {
            1 => network.bridge(1),
            n => format!("{}..{}", network.bridge(1), network.bridge(n)),
        };
        println!("  pod network: {}, a /24 per node, bridges {bridges}", network.block_cidr());
    }
    if test_image {
        println!("  test image: {} on every node", images::TEST_IMAGE);
    }
    if args.detach {
        // The processes outlive this command; --down stops them.
        processes.children.clear();
        return Ok(());
    }
    if args.demo {
        if nodes == 0 {
            bail!("--demo runs pods, and node agents need root: run berth up --demo as root");
        }
        runtime.block_on(demo(&layout, &dir, &mut processes))?;
    }
    println!("Ctrl-C stops the cluster; `berth up` on the same --dir brings it back.");
    runtime.block_on(watch(&layout, &mut processes, &mut signals))?;
    println!("berth: stopping");
    processes.stop();
    let _ = std::fs::remove_file(&pids);
    Ok(())
}

fn down(pids: &Path) -> Result<()> {
    let text = std::fs::read_to_string(pids)
        .with_context(|| format!("no cluster recorded in {}", pids.display()))?;
    for pid in text.lines().filter_map(|l| l.parse::<i32>().ok()).rev() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
    std::fs::remove_file(pids)?;
    println!("berth: stopped");
    Ok(())
}

/// Each peer's view: (its id, the leader it knows, the Raft term).
async fn peer_status(auth: &crate::config::Auth, addr: &str) -> Option<(u64, u64)> {
    let tls = auth.tls().ok()?;
    let channel = berth_tls::endpoint(addr, tls.as_ref()).ok()?.connect_lazy();
    let mut maintenance = MaintenanceClient::new(channel);
    let call = maintenance.status(StatusRequest {});
    let status = tokio::time::timeout(Duration::from_secs(1), call).await.ok()?.ok()?.into_inner();
    Some((status.leader, status.raft_term))
}

/// SIGINT and SIGTERM, caught from when they are made.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt()).context("catch SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("catch SIGTERM")?,
        })
    }

    async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Waits until the API answers and the first `nodes` nodes are Ready;
/// false when a signal came first.
async fn wait_ready(
    layout: &Layout,
    nodes: usize,
    processes: &mut Processes,
    signals: &mut Signals,
) -> Result<bool> {
    let client = berth_client::Client::with_config(
        layout
            .auth
            .client_config("berth", layout.peers.iter().map(|p| p.grpc.clone()).collect())?,
    )?;
    let namespaces = berth_client::Api::<berth_proto::core_v1::Namespace>::all(&client);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(why) = processes.exited() {
            bail!("{why}; see its log under logs/");
        }
        if namespaces.get("default").await.is_ok() && nodes_ready(&client, nodes).await {
            return Ok(true);
        }
        if Instant::now() > deadline {
            bail!("the cluster and its nodes were not ready within 60 s; see the logs under logs/");
        }
        tokio::select! {
            _ = signals.received() => return Ok(false),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Whether node-1..node-`nodes` are registered and Ready.
async fn nodes_ready(client: &berth_client::Client, nodes: usize) -> bool {
    let api = berth_client::Api::<berth_proto::core_v1::Node>::all(client);
    for n in 1..=nodes {
        let Ok(node) = api.get(&format!("node-{n}")).await else { return false };
        let conditions = node.status.map(|s| s.conditions).unwrap_or_default();
        if !conditions.iter().any(|c| c.r#type == "Ready" && c.status == "True") {
            return false;
        }
    }
    true
}

/// Prints the cluster's state when it changes, until Ctrl-C or SIGTERM.
async fn watch(layout: &Layout, processes: &mut Processes, signals: &mut Signals) -> Result<()> {
    let client = berth_client::Client::with_config(
        layout
            .auth
            .client_config("berth", layout.peers.iter().map(|p| p.grpc.clone()).collect())?,
    )?;
    let leases = berth_client::Api::<berth_proto::coordination_v1::Lease>::namespaced(
        &client,
        "kube-system",
    );
    let mut last = String::new();
    loop {
        if let Some(why) = processes.exited() {
            eprintln!("berth up: {why}; see its log under logs/");
        }
        let mut line = Vec::new();
        for (i, p) in layout.peers.iter().enumerate() {
            line.push(match peer_status(&layout.auth, &p.grpc).await {
                Some((leader, term)) if leader == i as u64 + 1 => {
                    format!("peer-{} leader (term {term})", i + 1)
                }
                Some((_, term)) => format!("peer-{} follower (term {term})", i + 1),
                None => format!("peer-{} down", i + 1),
            });
        }
        for lease in ["berth-scheduler", "berth-controller-manager"] {
            let holder = match leases.get(lease).await {
                Ok(l) => l.spec.and_then(|s| s.holder_identity).unwrap_or_else(|| "none".into()),
                Err(_) => "unknown".into(),
            };
            line.push(format!("{} leader: {holder}", lease.trim_start_matches("berth-")));
        }
        let line = line.join(" | ");
        if line != last {
            println!("{line}");
            last = line;
        }
        tokio::select! {
            _ = signals.received() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// The demo: a Deployment answering, then the Raft leader killed and back.
async fn demo(layout: &Layout, dir: &Path, processes: &mut Processes) -> Result<()> {
    let client = berth_client::Client::with_config(
        layout
            .auth
            .client_config("berth", layout.peers.iter().map(|p| p.grpc.clone()).collect())?,
    )?;
    crate::demo::run(&client, dir).await?;
    let leader = leader_of(layout).await.context("no Raft leader")?;
    let term = leader.1;
    let name = format!("peer-{}", leader.0);
    processes.kill(&name);
    println!("demo: killed {name}, the Raft leader (term {term})");
    let deadline = Instant::now() + Duration::from_secs(30);
    let elected = loop {
        if let Some((id, new_term)) = leader_of(layout).await {
            if format!("peer-{id}") != name {
                break (id, new_term);
            }
        }
        if Instant::now() > deadline {
            bail!("no new leader within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("demo: peer-{} leads now (term {})", elected.0, elected.1);
    crate::demo::still_available(&client).await?;
    processes.restart(dir, &name)?;
    println!("demo: {name} restarted; it rejoins as a follower");
    Ok(())
}

/// The leader's peer number and term, as a live peer reports them.
async fn leader_of(layout: &Layout) -> Option<(u64, u64)> {
    for p in &layout.peers {
        if let Some((leader, term)) = peer_status(&layout.auth, &p.grpc).await {
            if leader > 0 {
                return Some((leader, term));
            }
        }
    }
    None
}
