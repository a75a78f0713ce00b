//! What the kubectl session tests share: three `berth server` peers, the
//! real kubectl run with a kubeconfig, and the namespaced part of the
//! session (a Deployment applied, read in every form, edited each way
//! kubectl edits, scaled and described).

#![allow(dead_code)] // each test file uses its own part of this

use super::common::free_addr;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// Three peers of one cluster; each peer's stderr is in `dir`/peer-N.log.
pub struct Servers {
    children: Vec<Option<Child>>,
    pub grpc: Vec<String>,
    pub http: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Servers {
    /// Three plaintext peers on loopback (`--insecure`).
    pub fn start() -> Servers {
        Servers::start_with("kubectl", |_| vec!["--insecure".into()])
    }

    /// Three peers of cluster `name`; peer `i` (from 0) also gets `flags(i)`.
    pub fn start_with(name: &str, flags: impl Fn(usize) -> Vec<String>) -> Servers {
        let dir = tempfile::tempdir().unwrap();
        let grpc: Vec<String> = (0..3).map(|_| free_addr()).collect();
        let http: Vec<String> = (0..3).map(|_| free_addr()).collect();
        let peers: Vec<String> =
            grpc.iter().enumerate().map(|(i, a)| format!("{}={a}", i + 1)).collect();
        let children = (0..3)
            .map(|i| {
                let log =
                    std::fs::File::create(dir.path().join(format!("peer-{}.log", i + 1))).unwrap();
                Some(
                    Command::new(env!("CARGO_BIN_EXE_berth"))
                        .args(["server", "--id", &(i + 1).to_string(), "--cluster", name])
                        .args(flags(i))
                        .args(["--peers", &peers.join(","), "--listen", &grpc[i]])
                        .args(["--http", &http[i]])
                        .arg("--data-dir")
                        .arg(dir.path().join(format!("peer-{}", i + 1)))
                        .args(["--heartbeat-ms", "50", "--election-timeout-ms", "200-400"])
                        .env("RUST_LOG", "warn")
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()
                        .expect("berth server starts"),
                )
            })
            .collect();
        Servers { children, grpc, http, dir }
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The real kubectl with one kubeconfig.
pub struct Kubectl {
    pub config: PathBuf,
}

impl Kubectl {
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", &self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns its stdout; fails the test if it fails.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, None)
    }

    pub fn ok_with(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "kubectl {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// Whether kubectl is on PATH.
pub fn have_kubectl() -> bool {
    Command::new("kubectl").arg("version").arg("--client").output().is_ok()
}

pub const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
";

/// The namespaced session in `namespace`: Deployment `web` (from
/// [`DEPLOYMENT`]) dry-run, applied, read as wide, JSON, jsonpath and YAML,
/// labelled, annotated, patched three ways, applied again (configured,
/// then unchanged), scaled to 3 and described. Leaves `web` in place.
pub fn edit_a_deployment(kubectl: &Kubectl, namespace: &str) {
    let in_ns = |args: &[&str]| -> Vec<String> {
        ["-n", namespace].iter().chain(args).map(|a| a.to_string()).collect()
    };
    let ok = |args: &[&str]| {
        let all = in_ns(args);
        kubectl.ok(&all.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let apply = |args: &[&str], manifest: &str| {
        let all = in_ns(args);
        kubectl.ok_with(&all.iter().map(String::as_str).collect::<Vec<_>>(), Some(manifest))
    };
    // A server-side dry run checks everything and stores nothing.
    assert!(apply(&["apply", "--dry-run=server", "-f", "-"], DEPLOYMENT)
        .contains("created (server dry run)"));
    let none = kubectl.run(&["-n", namespace, "get", "deploy", "web"], None);
    assert!(String::from_utf8_lossy(&none.stderr).contains("NotFound"), "{none:?}");
    assert!(apply(&["apply", "-f", "-"], DEPLOYMENT).contains("deployment.apps/web created"));
    assert!(apply(&["apply", "-f", "-"], DEPLOYMENT).contains("deployment.apps/web unchanged"));
    let wide = ok(&["get", "deploy", "-o", "wide"]);
    assert!(
        wide.starts_with(
            "NAME   READY   UP-TO-DATE   AVAILABLE   AGE   CONTAINERS   IMAGES       SELECTOR"
        ),
        "{wide}"
    );
    assert!(wide.contains("web    0/2") && wide.contains("nginx:1.27   app=web"), "{wide}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["get", "deploy", "web", "-o", "json"])).unwrap();
    assert_eq!(json["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "2");

    ok(&["label", "deploy", "web", "tier=front"]);
    ok(&["annotate", "deploy", "web", "owner=team-a"]);
    ok(&["patch", "deploy", "web", "--type", "merge", "-p", r#"{"spec":{"minReadySeconds":5}}"#]);
    ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#,
    ]);
    ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.28"}]}}}}"#,
    ]);
    let yaml = ok(&["get", "deploy", "web", "-o", "yaml"]);
    for expected in [
        "tier: front",
        "owner: team-a",
        "minReadySeconds: 5",
        "replicas: 4",
        "image: nginx:1.28",
        "containerPort: 80",
    ] {
        assert!(yaml.contains(expected), "{expected} missing from\n{yaml}");
    }
    // Apply again: the manifest's fields win where it sets them.
    assert!(apply(&["apply", "-f", "-"], DEPLOYMENT).contains("configured"));
    assert!(apply(&["apply", "-f", "-"], DEPLOYMENT).contains("unchanged"));
    assert_eq!(
        ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"
        ]),
        "2 nginx:1.27"
    );
    ok(&["scale", "deploy", "web", "--replicas=3"]);
    assert_eq!(ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3");
    let described = ok(&["describe", "deploy", "web"]);
    assert!(described.contains("Replicas:               3 desired"), "{described}");
}
