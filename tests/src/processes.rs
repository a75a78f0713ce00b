//! API server peers as processes of the calling binary (a benchmark), each
//! started as `<exe> peer ...`, so the peers do not share a runtime or a
//! process with the load they serve.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Peer processes, killed when this is dropped.
pub struct Peers {
    children: Vec<Child>,
    pub endpoints: Vec<String>,
}

impl Drop for Peers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Peers {
    pub fn start(root: &std::path::Path) -> Result<Peers> {
        let free = || crate::cluster::free_addr().to_string();
        let grpc: Vec<String> = (0..3).map(|_| free()).collect();
        let members: Vec<String> =
            grpc.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let me = std::env::current_exe()?;
        let mut children = Vec::new();
        for (i, addr) in grpc.iter().enumerate() {
            let dir = root.join(format!("peer-{}", i + 1));
            children.push(
                Command::new(&me)
                    .args(["peer", &(i + 1).to_string(), &dir.to_string_lossy(), addr, &free()])
                    .arg(members.join(","))
                    .stdout(Stdio::null())
                    .spawn()
                    .context("start an API server peer")?,
            );
        }
        Ok(Peers { children, endpoints: grpc })
    }
}

/// `peer ID DIR LISTEN HTTP MEMBERS`: one API server peer with the
/// defaults of `berth server`, serving until killed.
pub fn run_peer(args: &[String]) -> Result<()> {
    let [id, dir, listen, http, members] = args else {
        bail!("usage: <bench> peer ID DIR LISTEN HTTP ID=ADDR,...");
    };
    let initial_peers: BTreeMap<u64, String> = members
        .split(',')
        .map(|m| {
            let (id, addr) = m.split_once('=').context("member is ID=ADDR")?;
            Ok((id.parse()?, addr.to_string()))
        })
        .collect::<Result<_>>()?;
    let listen: std::net::SocketAddr = listen.parse()?;
    let config = berth_apiserver::PeerConfig {
        id: id.parse()?,
        cluster: "bench".into(),
        data_dir: dir.into(),
        listen,
        advertise: listen.to_string(),
        http: http.parse()?,
        initial_peers,
        heartbeat: Duration::from_millis(100),
        election_timeout: (Duration::from_millis(400), Duration::from_millis(800)),
        history_retention: Duration::from_secs(300),
        event_ttl: Duration::from_secs(3600),
        max_requests_in_flight: berth_apiserver::api::DEFAULT_MAX_IN_FLIGHT,
        max_watchers: berth_apiserver::api::DEFAULT_MAX_WATCHERS,
        request_timeout: Duration::from_secs(60),
        kubelet_secret: None,
        tls: None,
        authorization_modes: Vec::new(),
        admission_plugins: Vec::new(),
        pod_security: Default::default(),
        guards: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let stop = tokio_util::sync::CancellationToken::new();
        berth_apiserver::serve(config, stop).await?;
        Ok(())
    })
}

/// Waits until the cluster serves the bootstrap namespaces.
pub async fn wait_ready(client: &berth_client::Client) -> Result<()> {
    let namespaces = berth_client::Api::<berth_proto::core_v1::Namespace>::all(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if namespaces.list(&Default::default()).await.is_ok_and(|l| l.items.len() >= 3) {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!("the cluster never became ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
