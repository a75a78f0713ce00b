//! `berth up`: one command brings up three peers, two schedulers and two
//! controller-managers; Ctrl-C stops every process; the next `berth up` on
//! the same directory brings back the same cluster with its state.

use berth_client::{Api, Client};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::Namespace;
use berth_proto::meta_v1::ObjectMeta;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The tests here share node-1's cgroup parent (each cluster has a bridge
/// and subnet of its own): one cluster at a time.
static ONE_CLUSTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A running `berth up`, interrupted (and so stopped) when dropped.
struct Up(Child);

impl Up {
    fn start(dir: &std::path::Path) -> Up {
        Up::start_with(dir, &[], "control plane is up").0
    }

    /// Starts with `extra` flags and returns once a line containing `until`
    /// was printed, with every line printed so far.
    fn start_with(dir: &std::path::Path, extra: &[&str], until: &str) -> (Up, Vec<String>) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["up", "--dir"])
            .arg(dir)
            .arg("--config")
            .arg(dir.join("berth-config"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("berth up starts");
        // Ready once it says so.
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        for line in lines.by_ref().map_while(Result::ok) {
            let done = line.contains(until);
            seen.push(line);
            if done {
                break;
            }
        }
        assert!(
            seen.last().is_some_and(|l| l.contains(until)),
            "berth up never printed {until:?}: {seen:#?}"
        );
        // Keep draining its status lines so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        (Up(child), seen)
    }

    /// Ctrl-C, and the whole cluster stops.
    fn interrupt(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "berth up did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.0.wait().unwrap().success());
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let _ = self.0.wait();
        }
    }
}

fn peers(dir: &std::path::Path) -> Vec<String> {
    let layout: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("cluster.json")).unwrap()).unwrap();
    layout["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["grpc"].as_str().unwrap().to_string())
        .collect()
}

/// A client of the cluster in `dir` as its administrator, over mutual TLS
/// with the certificates `berth up` issued.
fn admin_client(dir: &std::path::Path, addresses: Vec<String>) -> Client {
    let pki = dir.join("pki");
    let trust = berth_tls::Trust::load(&pki.join("ca.crt")).unwrap();
    let admin =
        berth_tls::Credential::load(&pki.join("admin.crt"), &pki.join("admin.key")).unwrap();
    let mut config = berth_client::Config::new(addresses);
    config.tls = Some(berth_tls::ClientTls::new(trust, Some(admin)));
    Client::with_config(config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_up_starts_stops_and_restarts_the_same_cluster() {
    let _one = ONE_CLUSTER.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let _leftovers = NodeLeftovers(dir.path());
    let up = Up::start(dir.path());
    let addresses = peers(dir.path());
    let client = admin_client(dir.path(), addresses.clone());
    // Without a client certificate the cluster refuses to be reached in
    // plain text at all.
    let plain = Client::new(addresses.clone()).unwrap();
    assert!(Api::<Namespace>::all(&plain).get("default").await.is_err());
    let namespace = Namespace {
        metadata: Some(ObjectMeta { name: "kept".into(), ..Default::default() }),
        ..Default::default()
    };
    Api::<Namespace>::all(&client).create(&namespace).await.unwrap();
    // Both control loops have a leader.
    let leases = Api::<Lease>::namespaced(&client, "kube-system");
    for lease in ["berth-scheduler", "berth-controller-manager"] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let holder = leases.get(lease).await.ok().and_then(|l| l.spec?.holder_identity);
            if holder.is_some_and(|h| !h.is_empty()) {
                break;
            }
            assert!(Instant::now() < deadline, "{lease} never got a leader");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // As root, a node agent joins and reports Ready.
    if nix::unistd::geteuid().is_root() {
        let nodes = Api::<berth_proto::core_v1::Node>::all(&client);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = nodes.get("node-1").await.ok().and_then(|n| {
                n.status?
                    .conditions
                    .into_iter()
                    .find(|c| c.r#type == "Ready")
                    .map(|c| c.status == "True")
            });
            if ready == Some(true) {
                break;
            }
            assert!(Instant::now() < deadline, "node-1 never became Ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The node serves logs and exec to the peers over mutual TLS.
        let node = nodes.get("node-1").await.unwrap().status.unwrap();
        assert!(node.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port > 0);
    } else {
        println!("SKIPPED (part): node agents need root");
    }
    let kubeconfig = std::fs::read_to_string(dir.path().join("kubeconfig")).unwrap();
    assert!(kubeconfig.contains("name: peer-3"), "{kubeconfig}");
    assert!(kubeconfig.contains("server: https://"), "{kubeconfig}");
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "admin.key", "peer-1.key"] {
        let mode = std::fs::metadata(dir.path().join("pki").join(key)).unwrap().permissions();
        assert_eq!(mode.mode() & 0o777, 0o600, "{key}");
    }
    // The berth config names the cluster as the current context.
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["get", "ns", "kube-system", "-o", "name", "--config"])
        .arg(dir.path().join("berth-config"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "namespace/kube-system\n");

    tokio::task::spawn_blocking(move || up.interrupt()).await.unwrap();
    // Every process is gone: the peers' ports are free again.
    for address in &addresses {
        assert!(std::net::TcpListener::bind(address).is_ok(), "{address} is still in use");
    }

    let up = Up::start(dir.path());
    assert_eq!(peers(dir.path()), addresses, "the cluster came back on other ports");
    let client = admin_client(dir.path(), addresses);
    let kept = Api::<Namespace>::all(&client).get("kept").await;
    assert!(kept.is_ok(), "the namespace created before the restart is gone: {kept:?}");
    tokio::task::spawn_blocking(move || up.interrupt()).await.unwrap();
}

/// Removes what node-1 of the local cluster in a directory leaves on the
/// host: its bridge (named after the cluster's network block) and its
/// (empty) cgroup parents.
struct NodeLeftovers<'a>(&'a std::path::Path);

impl Drop for NodeLeftovers<'_> {
    fn drop(&mut self) {
        let layout = std::fs::read(self.0.join("cluster.json")).unwrap_or_default();
        let block = serde_json::from_slice::<serde_json::Value>(&layout)
            .ok()
            .and_then(|l| l.pointer("/network/block").and_then(serde_json::Value::as_u64));
        if let Some(block) = block {
            let bridge = format!("berth{block:03x}-1");
            let _ =
                Command::new("ip").args(["link", "del", &bridge]).stderr(Stdio::null()).status();
        }
        if let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") {
            for h in hierarchies.flatten() {
                for dir in [
                    "berth/node-1/besteffort",
                    "berth/node-1/burstable",
                    "berth/node-1/guaranteed",
                    "berth/node-1",
                    "berth",
                ] {
                    let _ = std::fs::remove_dir(h.path().join(dir));
                }
            }
        }
    }
}

#[test]
fn the_demo_serves_a_request_and_survives_losing_the_raft_leader() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: the demo runs pods, which needs root");
        return;
    }
    for (path, package) in
        [("/usr/lib/cni/bridge", "containernetworking-plugins"), ("/bin/busybox", "busybox-static")]
    {
        if !std::path::Path::new(path).exists() {
            println!("SKIPPED: needs {path} (Debian package {package})");
            return;
        }
    }
    let _one = ONE_CLUSTER.blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let _leftovers = NodeLeftovers(dir.path());
    let (up, lines) = Up::start_with(dir.path(), &["--demo"], "rejoins as a follower");
    let text = lines.join("\n");
    assert!(text.contains("3/3 replicas available"), "{text}");
    assert!(text.contains(":8080/ -> hello from demo-"), "{text}");
    assert!(text.contains("the Raft leader"), "{text}");
    assert!(text.contains("leads now"), "{text}");
    assert!(text.contains("the Deployment stayed available"), "{text}");
    up.interrupt();
    // Stopping the node stopped its pods: no sandbox mounts are left.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(dir.path().to_str().unwrap()),
        "mounts left under the cluster's directory"
    );
}
