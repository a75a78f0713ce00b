//! Real kubectl binaries against a berth API server, for what kubectl sends
//! in Kubernetes' protobuf (`kubectl create deployment`, `kubectl run`,
//! `kubectl create namespace`) and for exec over both stream transports:
//! the WebSocket kubectl 1.30+ uses and the SPDY/3.1 upgrade of kubectl
//! 1.27-1.29 (and of newer ones told not to use WebSockets), exec and
//! attach alike. The exec test runs busybox pods on a node agent: it needs
//! root, overlayfs and /bin/busybox, and prints `SKIPPED: <why>` without
//! them.

mod common;

use common::{free_addr, pod_skip_reason, Node};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A test node named after `prefix`'s last word, unique per test.
fn node(prefix: &str) -> Node {
    let tag = prefix.trim_end_matches('-').rsplit('-').next().unwrap_or("node");
    Node::new(prefix, format!("ks-{}-{tag}", std::process::id()))
}

impl Node {
    /// One API server; with `secret`, it reaches node agents.
    fn server(&mut self, secret: Option<&Path>) -> (String, String) {
        let (grpc, http) = (free_addr(), free_addr());
        let data = self.dir.path().join("api");
        let mut args = vec![
            "server".to_string(),
            "--insecure".to_string(),
            "--id".into(),
            "1".into(),
            "--cluster".into(),
            "ks".into(),
            "--peers".into(),
            format!("1={grpc}"),
            "--listen".into(),
            grpc.clone(),
            "--http".into(),
            http.clone(),
            "--data-dir".into(),
            data.display().to_string(),
            "--heartbeat-ms".into(),
            "50".into(),
            "--election-timeout-ms".into(),
            "200-400".into(),
        ];
        if let Some(secret) = secret {
            args.push("--cluster-secret-file".into());
            args.push(secret.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(&args, "server.log");
        (grpc, http)
    }
}

/// A kubectl binary with a kubeconfig for one server.
struct Kubectl {
    binary: PathBuf,
    config: PathBuf,
    env: Vec<(&'static str, &'static str)>,
}

impl Kubectl {
    fn new(binary: PathBuf, dir: &Path, http: &str) -> Kubectl {
        let config = dir.join("kubeconfig");
        std::fs::write(
            &config,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: ks\n  cluster:\n    server: http://{http}\nusers:\n- name: anonymous\n  user: {{}}\ncontexts:\n- name: ks\n  context:\n    cluster: ks\n    user: anonymous\ncurrent-context: ks\n"
            ),
        )
        .unwrap();
        Kubectl { binary, config, env: Vec::new() }
    }

    fn with_binary(&self, binary: PathBuf) -> Kubectl {
        Kubectl { binary, config: self.config.clone(), env: self.env.clone() }
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut child = Command::new(&self.binary)
            .env("KUBECONFIG", &self.config)
            .envs(self.env.iter().copied())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let input = child.stdin.take().unwrap();
        let stdin = stdin.map(<[u8]>::to_vec);
        // Written from a thread, so a command that reads nothing cannot
        // block the test on a full pipe.
        let writer = std::thread::spawn(move || {
            let mut input = input;
            if let Some(bytes) = stdin {
                let _ = std::io::Write::write_all(&mut input, &bytes);
            }
        });
        let out = child.wait_with_output().unwrap();
        let _ = writer.join();
        out
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args, None);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}",
            self.binary.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn wait_serving(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.run(&["get", "ns", "default"], None).status.success() {
            assert!(Instant::now() < deadline, "the server never served");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn kubectl_on_path() -> Option<PathBuf> {
    Command::new("kubectl").args(["version", "--client"]).output().ok()?;
    Some(PathBuf::from("kubectl"))
}

/// An older kubectl shipped beside the current one, if this machine has it.
fn older_kubectl(version: &str) -> Option<PathBuf> {
    ["/usr/lib/google-cloud-sdk/bin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(format!("kubectl.{version}")))
        .find(|p| p.exists())
}

#[test]
fn kubectl_creates_deployments_pods_and_namespaces_sent_as_protobuf() {
    let Some(binary) = kubectl_on_path() else {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    };
    let mut node = node("berth-kpb-");
    let (_grpc, http) = node.server(None);
    let kubectl = Kubectl::new(binary, node.dir.path(), &http);
    kubectl.wait_serving();

    assert!(kubectl.ok(&["create", "namespace", "pb"]).contains("namespace/pb created"));
    let created = kubectl.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "pb",
        "--image=busybox:1.36",
        "--replicas=3",
        "--port=8080",
        "--",
        "httpd",
        "-f",
    ]);
    assert!(created.contains("deployment.apps/web created"), "{created}");
    let ran = kubectl.ok(&[
        "run",
        "one",
        "-n",
        "pb",
        "--image=busybox:1.36",
        "--labels=tier=a,team=b",
        "--env=GREETING=hi",
        "--restart=Never",
        "--",
        "sleep",
        "30",
    ]);
    assert!(ran.contains("pod/one created"), "{ran}");

    let get = |what: &str, path: &str| kubectl.ok(&["get", "-n", "pb", what, "-o", path]);
    let jp = |what: &str, expr: &str| get(what, &format!("jsonpath={expr}"));
    assert_eq!(jp("deploy/web", "{.spec.replicas}"), "3");
    assert_eq!(jp("deploy/web", "{.spec.selector.matchLabels.app}"), "web");
    assert_eq!(jp("deploy/web", "{.spec.template.metadata.labels.app}"), "web");
    assert_eq!(jp("deploy/web", "{.spec.template.spec.containers[0].image}"), "busybox:1.36");
    assert_eq!(
        jp("deploy/web", "{.spec.template.spec.containers[0].command}"),
        "[\"httpd\",\"-f\"]"
    );
    assert_eq!(
        jp("deploy/web", "{.spec.template.spec.containers[0].ports[0].containerPort}"),
        "8080"
    );
    // Fields kubectl leaves unset get berth's defaults, as from JSON.
    let yaml = get("deploy/web", "yaml");
    assert!(yaml.contains("strategy:"), "{yaml}");
    assert!(!yaml.contains("creationTimestamp: \"1970"), "{yaml}");

    assert_eq!(jp("pod/one", "{.metadata.labels.tier},{.metadata.labels.team}"), "a,b");
    assert_eq!(jp("pod/one", "{.spec.restartPolicy}"), "Never");
    assert_eq!(jp("pod/one", "{.spec.containers[0].args}"), "[\"sleep\",\"30\"]");
    assert_eq!(
        jp("pod/one", "{.spec.containers[0].env[0].name}={.spec.containers[0].env[0].value}"),
        "GREETING=hi"
    );

    // A server-side dry run of the same, in protobuf too, creates nothing.
    let dry = kubectl.ok(&[
        "create",
        "deployment",
        "dry",
        "-n",
        "pb",
        "--image=busybox",
        "--dry-run=server",
    ]);
    assert!(dry.contains("(server dry run)"), "{dry}");
    let missing = kubectl.run(&["get", "-n", "pb", "deploy/dry"], None);
    assert!(!missing.status.success());
}

#[test]
fn kubectl_execs_over_websocket_and_spdy() {
    let Some(binary) = kubectl_on_path() else {
        println!("SKIPPED: kubectl is not on PATH");
        return;
    };
    if let Some(why) = pod_skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut node = node("berth-kex-");
    let root = node.dir.path().to_path_buf();
    let secret = root.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let (grpc, http) = node.server(Some(&secret));
    let kubectl = Kubectl::new(binary, &root, &http);
    kubectl.wait_serving();
    node.spawn(
        &["scheduler", "--server", &grpc, "--id", "s", "--http", &free_addr()],
        "scheduler.log",
    );
    let name = node.name.clone();
    let agent = common::agent_args(&grpc, &name, &root, &secret);
    node.spawn(&agent.iter().map(String::as_str).collect::<Vec<_>>(), "agent.log");
    let image_dir = root.join("image");
    berth_kubelet::image::busybox_layout(Path::new("/bin/busybox"), &image_dir, "busybox").unwrap();
    let image = format!("oci:{}:busybox", image_dir.display());
    // kubectl run refuses the image reference of a local layout, so the
    // pod is applied.
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: shell\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    command: [sleep, '1000']\n"
    );
    let applied = kubectl.run(&["apply", "-f", "-"], Some(manifest.as_bytes()));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    kubectl.ok(&["wait", "pod/shell", "--for=condition=Ready", "--timeout=90s"]);

    // kubectl on PATH over its WebSocket, then told to use SPDY, then the
    // older ones that only speak SPDY.
    let mut clients = vec![("websocket", kubectl.with_binary(kubectl.binary.clone()))];
    let mut spdy = kubectl.with_binary(kubectl.binary.clone());
    spdy.env.push(("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false"));
    clients.push(("spdy", spdy));
    for version in ["1.27", "1.29"] {
        match older_kubectl(version) {
            Some(binary) => clients.push((version, kubectl.with_binary(binary))),
            None => println!("kubectl {version} is not on this machine; not tried"),
        }
    }
    for (label, client) in &clients {
        // Both output streams and the exit code.
        let script = "echo out; echo err >&2; exit 3";
        let out = client.run(&["exec", "shell", "--", "sh", "-c", script], None);
        let (stdout, stderr) =
            (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(3), "{label}: {stdout}{stderr}");
        assert_eq!(stdout, "out\n", "{label}: {stderr}");
        assert!(stderr.starts_with("err\n"), "{label}: {stderr}");

        // Standard input piped in, and its end.
        let script = "while read line; do echo \"got $line\"; done; echo done";
        let out = client.run(&["exec", "-i", "shell", "--", "sh", "-c", script], Some(b"a\nb\n"));
        assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "got a\ngot b\ndone\n", "{label}");

        // More output than one flow-control window, whole and in order.
        let script = "i=0; while [ $i -lt 3000 ]; do echo line-$i-0123456789abcdef0123456789abcdef; i=$((i+1)); done";
        let out = client.run(&["exec", "shell", "--", "sh", "-c", script], None);
        assert!(out.status.success(), "{label}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3000, "{label}");
        assert_eq!(lines[2999], "line-2999-0123456789abcdef0123456789abcdef", "{label}");

        // -it at a terminal: `script` gives kubectl one, and the command
        // gets its own.
        if Path::new("/usr/bin/script").exists() {
            let line = format!(
                "{} exec -it shell -- sh -c 'test -t 0 && test -t 1 && echo tty-ok'",
                client.binary.display()
            );
            let mut script = Command::new("/usr/bin/script");
            script.args(["-qec", &line, "/dev/null"]).env("KUBECONFIG", &client.config);
            let out = script.envs(client.env.iter().copied()).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("tty-ok"), "{label}: {text}");
        }

        // A command that cannot run is reported, with a failure.
        let out = client.run(&["exec", "shell", "--", "/no/such/command"], None);
        assert!(!out.status.success(), "{label}");
    }

    // attach -i, over each client's protocol: a container with stdin (and
    // stdinOnce, so the end of kubectl's input is the end of the
    // container's) reads a line and answers it.
    let reader = |i: usize| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: reader-{i}\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {image}\n    stdin: true\n    stdinOnce: true\n    command: [sh, -c, 'read line; echo got:$line']\n"
        )
    };
    let manifests: Vec<String> = (0..clients.len()).map(reader).collect();
    let applied = kubectl.run(&["apply", "-f", "-"], Some(manifests.join("---\n").as_bytes()));
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    for (i, (label, client)) in clients.iter().enumerate() {
        let pod = format!("reader-{i}");
        kubectl.ok(&["wait", &format!("pod/{pod}"), "--for=condition=Ready", "--timeout=90s"]);
        let out = client.run(&["attach", "-i", &pod], Some(format!("{label}\n").as_bytes()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{label}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("got:{label}")), "{label}: {stdout}");
    }
}
