//! The real kubectl against three `berth server` processes through the
//! Kubernetes REST API: discovery, create (also of a namespace, sent as
//! protobuf) and apply with server-side field validation and dry runs, get
//! in its usual forms, label, annotate, the three patch types, server-side
//! apply with conflicts, scale, watch, describe, explain, cordon and drain,
//! and delete; then the peer kubectl talks to is killed and the session goes
//! on through other peers' contexts. As root, with a controller-manager, a
//! scheduler and a node agent: rollout status, history, undo and restart,
//! wait for Available, drain of a node running pods, and delete with the
//! orphan and foreground cascades.

mod common;
mod kubectl_session;

use common::free_addr;
use kubectl_session::{Kubectl, Servers, DEPLOYMENT};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A kubeconfig with a context per peer.
fn kubeconfig(dir: &std::path::Path, http: &[String]) -> std::path::PathBuf {
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (i, addr) in http.iter().enumerate() {
        text += &format!("- name: peer-{i}\n  cluster:\n    server: http://{addr}\n");
    }
    text += "users:\n- name: anonymous\n  user: {}\ncontexts:\n";
    for i in 0..http.len() {
        text +=
            &format!("- name: peer-{i}\n  context:\n    cluster: peer-{i}\n    user: anonymous\n");
    }
    text += "current-context: peer-0\n";
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_kubectl_session_against_three_peers_survives_losing_its_peer() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("SKIPPED: kubectl is not on PATH");
        return;
    }
    let mut servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl { config: kubeconfig(dir.path(), &servers.http) };
    // Ready once every peer lists the bootstrap namespaces.
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(30);
        let context = format!("--context=peer-{i}");
        while !kubectl.run(&[&context, "get", "ns", "kube-system"], None).status.success() {
            assert!(Instant::now() < deadline, "peer {i} never served");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let resources = kubectl.ok(&["api-resources"]);
    for (name, short) in [("deployments", "deploy"), ("pods", "po"), ("replicasets", "rs")] {
        let listed = resources.lines().any(|l| l.split_whitespace().take(2).eq([name, short]));
        assert!(listed, "{resources}");
    }
    // kubectl's typed commands send Kubernetes' protobuf.
    assert!(kubectl.ok(&["create", "namespace", "demo"]).contains("namespace/demo created"));
    kubectl_session::edit_a_deployment(&kubectl, "demo");

    let explained = kubectl.ok(&["explain", "deploy.spec.strategy"]);
    assert!(
        explained.contains("rollingUpdate") && explained.contains("<RollingUpdateDeployment>"),
        "{explained}"
    );

    // A misspelled field is refused by the server's strict validation.
    let typo = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\nspec:\n  containers:\n  - name: c\n    image: busybox\n    imagee: typo\n";
    let refused =
        kubectl.fails(&["-n", "demo", "apply", "--validate=strict", "-f", "-"], Some(typo));
    assert!(refused.contains("imagee: unknown field (did you mean \"image\"?)"), "{refused}");
    // Warn drops the field and says so; Ignore drops it silently.
    let warned = kubectl.run(&["-n", "demo", "create", "--validate=warn", "-f", "-"], Some(typo));
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        warned.status.success() && stderr.contains("unknown field \"spec.containers[0].imagee\""),
        "{warned:?}"
    );
    kubectl.ok(&["-n", "demo", "delete", "pod", "bad", "--dry-run=server"]);
    kubectl.ok(&["-n", "demo", "delete", "pod", "bad"]);
    let ignored = kubectl.run(&["-n", "demo", "create", "--validate=false", "-f", "-"], Some(typo));
    assert!(ignored.status.success() && ignored.stderr.is_empty(), "{ignored:?}");
    kubectl.ok(&["-n", "demo", "delete", "pod", "bad"]);

    // Server-side apply: a field another manager set is a conflict naming
    // both, until forced.
    let three = DEPLOYMENT.replace("replicas: 2", "replicas: 3");
    assert!(kubectl
        .ok_with(&["-n", "demo", "apply", "--server-side", "-f", "-"], Some(DEPLOYMENT))
        .contains("serverside-applied"));
    kubectl.ok(&[
        "-n",
        "demo",
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "--field-manager=autoscaler",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
    ]);
    let conflict =
        kubectl.fails(&["-n", "demo", "apply", "--server-side", "-f", "-"], Some(&three));
    assert!(
        conflict.contains("conflict with \"autoscaler\"") && conflict.contains(".spec.replicas"),
        "{conflict}"
    );
    kubectl.ok_with(
        &["-n", "demo", "apply", "--server-side", "--force-conflicts", "-f", "-"],
        Some(&three),
    );
    let managed = kubectl.ok(&[
        "-n",
        "demo",
        "get",
        "deploy",
        "web",
        "--show-managed-fields",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.managedFields[*].manager}",
    ]);
    assert!(managed.starts_with("3 ") && !managed.contains("autoscaler"), "{managed}");

    // Draining a node evicts its pods (policy/v1 Eviction, sent as protobuf).
    kubectl.ok_with(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n"),
    );
    for name in ["a", "b"] {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: busybox\n"
        );
        kubectl.ok_with(&["-n", "demo", "apply", "-f", "-"], Some(&pod));
    }
    kubectl.ok(&["cordon", "n1"]);
    assert_eq!(kubectl.ok(&["get", "node", "n1", "-o", "jsonpath={.spec.unschedulable}"]), "true");
    kubectl.ok(&["uncordon", "n1"]);
    let drained = kubectl.ok(&["drain", "n1", "--force", "--grace-period=0", "--timeout=30s"]);
    assert!(drained.contains("pod/a evicted") && drained.contains("node/n1 drained"), "{drained}");
    let left = kubectl.run(&["-n", "demo", "get", "pods"], None);
    assert!(String::from_utf8_lossy(&left.stderr).contains("No resources found"), "{left:?}");

    // A watch sees a change made while it runs.
    let mut watch = Command::new("kubectl")
        .env("KUBECONFIG", &kubectl.config)
        .args([
            "-n",
            "demo",
            "get",
            "deploy",
            "web",
            "-w",
            "-o",
            "jsonpath={.metadata.labels.step}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let stdout = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // Label until the watch reports a labelled version (it may start
    // watching after the first label).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut step = 0;
    let saw_change = loop {
        kubectl.ok(&[
            "-n",
            "demo",
            "label",
            "--overwrite",
            "deploy",
            "web",
            &format!("step=s{step}"),
        ]);
        step += 1;
        match seen.recv_timeout(Duration::from_millis(500)) {
            Ok(line) if line.starts_with('s') => break true,
            _ if Instant::now() > deadline => break false,
            _ => {}
        }
    };
    let _ = watch.kill();
    let _ = watch.wait();
    let _ = reader.join();
    assert!(saw_change, "the watch saw no change");

    // The peer kubectl talks to goes away; another context goes on.
    servers.kill(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = kubectl.run(
            &["--context=peer-1", "-n", "demo", "scale", "deploy", "web", "--replicas=1"],
            None,
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no peer took over: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        kubectl.ok(&[
            "--context=peer-2",
            "-n",
            "demo",
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "1"
    );
    kubectl.ok(&["--context=peer-2", "-n", "demo", "delete", "deploy", "web"]);
    let left = kubectl.run(&["--context=peer-1", "-n", "demo", "get", "deploy"], None);
    assert!(String::from_utf8_lossy(&left.stderr).contains("No resources found"), "{left:?}");
}

#[test]
fn kubectl_deletes_a_collection_by_label() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("SKIPPED: kubectl is not on PATH");
        return;
    }
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl { config: kubeconfig(dir.path(), &servers.http) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubectl.run(&["get", "ns", "default"], None).status.success() {
        assert!(Instant::now() < deadline, "the cluster never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{tier: {tier}}}\nspec:\n  containers:\n  - name: c\n    image: busybox\n"
        );
        kubectl.ok_with(&["apply", "-f", "-"], Some(&pod));
    }
    let got = kubectl.ok(&["get", "pods", "-l", "tier=web", "-o", "name"]);
    assert_eq!(got, "pod/a\npod/b\n");
    kubectl.ok(&["delete", "pods", "-l", "tier=web"]);
    assert_eq!(kubectl.ok(&["get", "pods", "-o", "name"]), "pod/c\n");
}

/// The Python interpreter with the kubernetes client, made by scripts/setup.
fn python_with_kubernetes() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("BERTH_PYENV").map(std::path::PathBuf::from),
        Some(std::path::PathBuf::from("/var/cache/berth/pyenv")),
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/berth/pyenv")),
    ];
    candidates.into_iter().flatten().map(|env| env.join("bin/python")).find(|python| {
        Command::new(python)
            .args(["-c", "import kubernetes"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

#[test]
fn the_python_kubernetes_client_lists_watches_and_writes() {
    let Some(python) = python_with_kubernetes() else {
        eprintln!("SKIPPED: no Python environment with the kubernetes client (run scripts/setup)");
        return;
    };
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl { config: kubeconfig(dir.path(), &servers.http) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubectl.run(&["get", "ns", "default"], None).status.success() {
        assert!(Instant::now() < deadline, "the cluster never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/k8s_python_client.py");
    let out = Command::new(python)
        .arg(script)
        .arg(format!("http://{}", servers.http[1]))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ok"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A controller-manager, a scheduler and a node agent beside the peers:
/// what rollouts and drains need. The agent is stopped with a signal, so it
/// stops its pods' containers; the rest are killed.
struct ControlLoops {
    children: Vec<Child>,
    agent: Option<Child>,
    node: String,
    dir: std::path::PathBuf,
}

impl ControlLoops {
    fn start(grpc: &[String], node: &str, dir: &std::path::Path) -> ControlLoops {
        let servers = grpc.join(",");
        let berth = || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
            command.stdout(Stdio::null()).stderr(Stdio::null());
            command
        };
        let children = vec![
            berth()
                .args(["controller-manager", "--server", &servers, "--http", &free_addr()])
                .spawn()
                .expect("controller-manager starts"),
            berth()
                .args(["scheduler", "--server", &servers, "--http", &free_addr()])
                .spawn()
                .expect("scheduler starts"),
        ];
        let agent = berth()
            .args(["agent", "--server", &servers, "--node-name", node, "--no-cni"])
            .args(["--stop-pods-on-exit", "--http", &free_addr()])
            .arg("--root-dir")
            .arg(dir.join("agent"))
            .arg("--device-plugin-root")
            .arg(dir.join("kubelet"))
            .spawn()
            .expect("agent starts");
        ControlLoops { children, agent: Some(agent), node: node.into(), dir: dir.into() }
    }
}

impl Drop for ControlLoops {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let pid = nix::unistd::Pid::from_raw(agent.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while agent.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = agent.kill();
            let _ = agent.wait();
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        common::remove_node_leftovers(&self.dir, &self.node);
    }
}

/// A Deployment of two busybox pods that sleep, from an image built from
/// this host's busybox.
fn sleeper(image: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: sleep
        image: {image}
        command: [sleep, '3600']
"
    )
}

#[test]
fn kubectl_rolls_out_waits_drains_and_cascades_on_a_node() {
    if Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        eprintln!("SKIPPED: kubectl is not on PATH");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: a node agent runs pods, which needs root");
        return;
    }
    let busybox = std::path::Path::new("/bin/busybox");
    if !busybox.exists() {
        println!("SKIPPED: needs /bin/busybox (Debian package busybox-static)");
        return;
    }
    let servers = Servers::start();
    let dir = tempfile::tempdir().unwrap();
    let kubectl = Kubectl { config: kubeconfig(dir.path(), &servers.http) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kubectl.run(&["get", "ns", "default"], None).status.success() {
        assert!(Instant::now() < deadline, "the cluster never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    let node = format!("kubectl-{}", std::process::id());
    let _loops = ControlLoops::start(&servers.grpc, &node, dir.path());
    let layout = dir.path().join("image");
    berth_kubelet::image::busybox_layout(busybox, &layout, "v1").unwrap();
    let image = format!("oci:{}:v1", layout.display());
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubectl.run(&["get", "node", &node], None).status.success() {
        assert!(Instant::now() < deadline, "the node never registered");
        std::thread::sleep(Duration::from_millis(200));
    }
    kubectl.ok(&["wait", "--for=condition=Ready", &format!("node/{node}"), "--timeout=60s"]);

    kubectl.ok(&["create", "namespace", "roll"]);
    let roll = |args: &[&str]| {
        let mut all = vec!["-n", "roll"];
        all.extend_from_slice(args);
        kubectl.ok(&all)
    };
    kubectl.ok_with(&["-n", "roll", "apply", "-f", "-"], Some(&sleeper(&image)));
    let status = roll(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let waited = roll(&["wait", "--for=condition=Available", "deploy/web", "--timeout=60s"]);
    assert!(waited.contains("condition met"), "{waited}");

    // A restart is a second revision; undo goes back to the first.
    assert!(roll(&["rollout", "restart", "deploy/web"]).contains("restarted"));
    roll(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let history = roll(&["rollout", "history", "deploy/web"]);
    let revisions: Vec<&str> =
        history.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(revisions.contains(&"1") && revisions.contains(&"2"), "{history}");
    assert!(roll(&["rollout", "undo", "deploy/web"]).contains("rolled back"));
    roll(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    let history = roll(&["rollout", "history", "deploy/web"]);
    assert!(history.lines().any(|l| l.starts_with("3 ")), "{history}");

    // Drain evicts the node's pods; they come back once it is uncordoned.
    let drained = kubectl.ok(&["drain", &node, "--ignore-daemonsets", "--timeout=120s"]);
    assert!(drained.contains("evicted") && drained.contains("drained"), "{drained}");
    let on_node = format!("spec.nodeName={node}");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !roll(&["get", "pods", "--field-selector", &on_node, "-o", "name"]).is_empty() {
        assert!(Instant::now() < deadline, "pods stayed on the drained node");
        std::thread::sleep(Duration::from_millis(200));
    }
    kubectl.ok(&["uncordon", &node]);
    roll(&["rollout", "status", "deploy/web", "--timeout=120s"]);
    roll(&["wait", "--for=condition=Available", "deploy/web", "--timeout=60s"]);

    // Orphan leaves the ReplicaSets; foreground takes the pods first.
    roll(&["delete", "deploy", "web", "--cascade=orphan"]);
    assert!(!roll(&["get", "rs", "-l", "app=web", "-o", "name"]).is_empty());
    roll(&["delete", "rs", "-l", "app=web", "--cascade=foreground", "--timeout=120s"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = kubectl.run(&["-n", "roll", "get", "pods,rs"], None);
        if String::from_utf8_lossy(&left.stderr).contains("No resources found") {
            break;
        }
        assert!(Instant::now() < deadline, "dependents stayed: {left:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
