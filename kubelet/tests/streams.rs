//! Logs, exec and attach through the API server, end to end: an in-process
//! API peer, a node agent and berth's CRI runtime running busybox pods
//! pulled from a real registry. The Pods service's Logs (tail, timestamps,
//! limit, follow, previous after a restart), Exec (output and exit code,
//! stdin through `cat`, a terminal) and Attach (a container's own stdin
//! with stdinOnce, its terminal, its output) are relayed to the node's
//! stream server, which refuses calls without the cluster secret; then the
//! real kubectl runs `logs`, `logs -f`, `exec` (plain, -i, -it), `attach -i`
//! and `run -i --rm` over the REST API.
//!
//! Without root, overlayfs, busybox or docker-registry the tests print
//! `SKIPPED: <why>`; without kubectl the kubectl test does.

mod image_support;

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_client::{Api, Client};
use berth_kubelet::agent::{self, AgentConfig};
use berth_kubelet::executor::cgroups;
use berth_kubelet::image::{ImageStore, RegistryConfig};
use berth_kubelet::{CriConfig, CriServer};
use berth_proto::api_v1::kubelet_streams_client::KubeletStreamsClient;
use berth_proto::api_v1::pods_client::PodsClient;
use berth_proto::api_v1::{
    pod_exec_input, pod_exec_output, PodExecInput, PodExecStart, PodLogsRequest,
};
use berth_proto::core_v1::{Container, Namespace, Node, Pod, PodSpec};
use berth_proto::meta_v1::ObjectMeta;
use image_support::*;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SECRET: &str = "streams-test-secret";

/// Polls `check` until it returns Some, failing after `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn free() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// One API peer, a CRI runtime and a node agent, all in this process, on a
/// temp dir and cgroup parent of the test's own; dropping it stops them and
/// removes every process, cgroup and mount they left.
struct Cluster {
    dir: tempfile::TempDir,
    cgroup_parent: PathBuf,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    grpc: String,
    http: String,
    client: Client,
    node: String,
    image: String,
    _registry: Registry,
}

impl Cluster {
    async fn start(name: &str) -> Cluster {
        let registry = Registry::start();
        let mut applets = LayerTar::default();
        applets.dir("bin/");
        applets.symlink("bin/sleep", "busybox");
        let img = image(
            vec![
                layer(base_layer(), true),
                layer(change_layer(), true),
                layer(applets.finish(), false),
            ],
            false,
        );
        registry.push("test/busybox", "streams", &img);
        let image = format!("{}/test/busybox:streams", registry.addr);

        let dir = tempfile::Builder::new().prefix("berth-streams-").tempdir().unwrap();
        let config =
            RegistryConfig { plain_http: vec![registry.addr.clone()], ..Default::default() };
        let images = ImageStore::open(dir.path().join("images"), config).unwrap();
        let cgroup_parent =
            PathBuf::from(format!("/berth-streams-test-{}-{name}", std::process::id()));
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();

        let socket = dir.path().join("cri.sock");
        let server = CriServer::bind(CriConfig {
            root: dir.path().join("cri"),
            socket: socket.clone(),
            images,
            cgroup_parent: cgroup_parent.clone(),
            network: None,
        })
        .await
        .unwrap();
        let token = stop.clone();
        tasks.push(tokio::spawn(async move { server.serve(token).await.unwrap() }));

        let (grpc, http) = (free(), free());
        let peer = berth_apiserver::PeerConfig {
            id: 1,
            cluster: format!("streams-{name}"),
            data_dir: dir.path().join("api"),
            listen: grpc,
            advertise: grpc.to_string(),
            http,
            initial_peers: [(1, grpc.to_string())].into(),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(200), Duration::from_millis(400)),
            history_retention: Duration::from_secs(300),
            event_ttl: Duration::from_secs(3600),
            max_requests_in_flight: 1024,
            max_watchers: 1000,
            request_timeout: Duration::from_secs(60),
            kubelet_secret: Some(SECRET.into()),
            tls: None,
            authorization_modes: Vec::new(),
            admission_plugins: Vec::new(),
            pod_security: Default::default(),
            guards: Default::default(),
        };
        let token = stop.clone();
        tasks.push(tokio::spawn(async move {
            let _ = berth_apiserver::serve(peer, token).await;
        }));
        let client = Client::new([grpc.to_string()]).unwrap();
        poll("the API serves", Duration::from_secs(30), || async {
            Api::<Namespace>::all(&client).get("default").await.ok()
        })
        .await;

        let node = format!("node-{name}");
        let mut config = AgentConfig::new(&node, dir.path().join("agent"));
        config.cri_socket = Some(socket);
        config.cluster_secret = Some(SECRET.into());
        config.stop_pods_on_exit = true;
        let (agent_client, token) = (client.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            agent::run(&agent_client, &config, token).await.unwrap()
        }));
        Cluster {
            dir,
            cgroup_parent,
            stop,
            tasks,
            grpc: grpc.to_string(),
            http: http.to_string(),
            client,
            node,
            image,
            _registry: registry,
        }
    }

    /// Creates a pod with one container running `script`, and waits until
    /// it runs.
    async fn run_pod(&self, name: &str, script: &str) {
        self.run_pod_with(name, script, |_| {}).await
    }

    /// As `run_pod`, with `change` applied to the pod's spec first.
    async fn run_pod_with(&self, name: &str, script: &str, change: impl FnOnce(&mut PodSpec)) {
        let pods = Api::<Pod>::namespaced(&self.client, "default");
        let mut pod = Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: self.node.clone(),
                termination_grace_period_seconds: Some(1),
                containers: vec![Container {
                    name: "app".into(),
                    image: self.image.clone(),
                    command: vec!["sh".into(), "-c".into(), script.into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        change(pod.spec.as_mut().expect("the pod has a spec"));
        pods.create(&pod).await.unwrap();
        poll(&format!("pod {name} runs"), Duration::from_secs(60), || async {
            let status = pods.get(name).await.ok()?.status?;
            (status.phase == "Running" && status.container_statuses.first()?.ready).then_some(())
        })
        .await;
    }

    /// kubectl with a kubeconfig for this cluster's REST front end.
    fn kubectl(&self) -> Kubectl {
        let config = self.dir.path().join("kubeconfig");
        fs::write(
            &config,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://{}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n    namespace: default\ncurrent-context: c\n",
                self.http
            ),
        )
        .unwrap();
        Kubectl { config }
    }

    async fn pods(&self) -> PodsClient<Channel> {
        PodsClient::connect(format!("http://{}", self.grpc)).await.unwrap()
    }

    async fn shutdown(mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.cancel();
        remove_leftovers(self.dir.path(), &self.cgroup_parent);
    }
}

/// Kills and removes every cgroup under `parent` (deepest first) and
/// unmounts whatever is mounted under `dir`.
fn remove_leftovers(dir: &Path, parent: &Path) {
    if let Ok(top) = cgroups::manager_for(parent) {
        let mut found: Vec<PathBuf> = Vec::new();
        for (_, view) in top.container_views() {
            let mut stack = vec![view.clone()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
                if let Ok(rel) = d.strip_prefix(&view) {
                    found.push(parent.join(rel));
                }
            }
        }
        found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        found.dedup();
        for rel in found {
            if let Ok(cg) = cgroups::manager_for(&rel) {
                let _ = cg.kill_all();
                let _ = cg.remove();
            }
        }
    }
    unmount_all_under(dir);
}

fn logs_request(pod: &str) -> PodLogsRequest {
    PodLogsRequest {
        namespace: "default".into(),
        name: pod.into(),
        container: "app".into(),
        ..Default::default()
    }
}

async fn read_logs(pods: &mut PodsClient<Channel>, request: PodLogsRequest) -> String {
    let mut stream = pods.logs(request).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        out.extend(chunk.data);
    }
    String::from_utf8(out).unwrap()
}

/// What an exec printed and how it ended.
#[derive(Debug, Default)]
struct ExecResult {
    stdout: String,
    stderr: String,
    exit: Option<i32>,
    /// Why the command could not run, if it could not.
    error: Option<tonic::Status>,
}

async fn exec(
    pods: &mut PodsClient<Channel>,
    pod: &str,
    command: &[&str],
    tty: bool,
    stdin: Option<&str>,
) -> ExecResult {
    session(pods, false, pod, command, tty, stdin.map(|s| (s, true))).await
}

/// An exec, or with `attach` an attach (no command). `stdin` is what to
/// send, and whether to close stdin after it.
async fn session(
    pods: &mut PodsClient<Channel>,
    attach: bool,
    pod: &str,
    command: &[&str],
    tty: bool,
    stdin: Option<(&str, bool)>,
) -> ExecResult {
    let start = PodExecStart {
        namespace: "default".into(),
        name: pod.into(),
        container: String::new(),
        command: command.iter().map(|s| s.to_string()).collect(),
        stdin: stdin.is_some(),
        stdout: true,
        stderr: !tty,
        tty,
    };
    let input = |i| PodExecInput { input: Some(i) };
    let mut messages = vec![input(pod_exec_input::Input::Start(start))];
    if let Some((text, close)) = stdin {
        messages.push(input(pod_exec_input::Input::Stdin(text.as_bytes().to_vec())));
        if close {
            messages.push(input(pod_exec_input::Input::CloseStdin(true)));
        }
    }
    if tty {
        messages.push(input(pod_exec_input::Input::Resize(berth_proto::api_v1::TerminalSize {
            width: 100,
            height: 30,
        })));
    }
    // The input stays open until the command ends, as a client's would.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let input = futures::StreamExt::chain(
        futures::stream::iter(messages),
        futures::StreamExt::filter_map(futures::stream::once(done_rx), |_| async { None }),
    );
    let started = match attach {
        false => pods.exec(input).await,
        true => pods.attach(input).await,
    };
    let mut output = match started {
        Ok(output) => output.into_inner(),
        Err(status) => return ExecResult { error: Some(status), ..Default::default() },
    };
    let mut result = ExecResult::default();
    loop {
        let message = match output.message().await {
            Ok(Some(message)) => message,
            Ok(None) => break,
            Err(status) => {
                result.error = Some(status);
                break;
            }
        };
        match message.output.unwrap() {
            pod_exec_output::Output::Stdout(d) => result.stdout += &String::from_utf8_lossy(&d),
            pod_exec_output::Output::Stderr(d) => result.stderr += &String::from_utf8_lossy(&d),
            pod_exec_output::Output::ExitCode(c) => result.exit = Some(c),
        }
    }
    drop(done_tx);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_and_exec_are_relayed_to_the_pods_node() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let cluster = Cluster::start("grpc").await;
    // Prints three lines, then one more once /data/go exists, then idles.
    cluster
        .run_pod(
            "talker",
            "echo one; echo two; echo three; while ! test -e /data/go; do sleep 0.1; done; echo after-follow; exec sleep 1000",
        )
        .await;
    let mut pods = cluster.pods().await;
    poll("the log has three lines", Duration::from_secs(10), || {
        let mut pods = pods.clone();
        async move {
            let text = read_logs(&mut pods, logs_request("talker")).await;
            (text == "one\ntwo\nthree\n").then_some(())
        }
    })
    .await;

    // Tail, timestamps and a byte limit.
    let tail =
        read_logs(&mut pods, PodLogsRequest { tail_lines: Some(2), ..logs_request("talker") })
            .await;
    assert_eq!(tail, "two\nthree\n");
    let stamped =
        read_logs(&mut pods, PodLogsRequest { timestamps: true, ..logs_request("talker") }).await;
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 3, "{stamped:?}");
    for (line, word) in lines.iter().zip(["one", "two", "three"]) {
        let (time, text) = line.split_once(' ').unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{line:?}");
        assert_eq!(text, word);
    }
    let limited =
        read_logs(&mut pods, PodLogsRequest { limit_bytes: Some(5), ..logs_request("talker") })
            .await;
    assert_eq!(limited, "one\nt");
    let recent = read_logs(
        &mut pods,
        PodLogsRequest { since_seconds: Some(3600), ..logs_request("talker") },
    )
    .await;
    assert_eq!(recent, "one\ntwo\nthree\n");

    // Follow: a line written after the stream began arrives on it.
    let mut follow = pods
        .logs(PodLogsRequest { follow: true, tail_lines: Some(0), ..logs_request("talker") })
        .await
        .unwrap()
        .into_inner();
    let touched = exec(&mut pods, "talker", &["sh", "-c", "echo > /data/go"], false, None).await;
    assert_eq!(touched.exit, Some(0), "{touched:?}");
    let mut followed = String::new();
    while !followed.contains("after-follow\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(30), follow.message())
            .await
            .expect("the followed line arrives")
            .unwrap()
            .expect("the follow stream stays open while the container runs");
        followed += &String::from_utf8_lossy(&chunk.data);
    }
    assert_eq!(followed, "after-follow\n");
    drop(follow);

    // Exec: output on both streams and the exit code.
    let out =
        exec(&mut pods, "talker", &["sh", "-c", "echo out; echo err >&2; exit 3"], false, None)
            .await;
    assert_eq!((out.stdout.as_str(), out.stderr.as_str(), out.exit), ("out\n", "err\n", Some(3)));
    // Stdin reaches the command, and its close ends `cat`.
    let echoed = exec(&mut pods, "talker", &["cat"], false, Some("hello\nworld\n")).await;
    assert_eq!((echoed.stdout.as_str(), echoed.exit), ("hello\nworld\n", Some(0)));
    // A terminal: the command sees one on stdin and stdout.
    let tty = exec(
        &mut pods,
        "talker",
        &["sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty"],
        true,
        None,
    )
    .await;
    assert_eq!(tty.exit, Some(0), "{tty:?}");
    assert!(tty.stdout.contains("on-a-tty"), "{tty:?}");
    let no_tty =
        exec(&mut pods, "talker", &["sh", "-c", "test -t 1 || echo no-tty"], false, None).await;
    assert_eq!(no_tty.stdout, "no-tty\n");
    let missing = exec(&mut pods, "talker", &["no-such-program"], false, None).await;
    let error = missing.error.expect("a missing program is an error");
    assert_eq!(error.code(), tonic::Code::Internal, "{error:?}");
    assert!(error.message().contains("no-such-program"), "{error:?}");

    // A caller that goes away takes its command with it.
    let sleeper = || {
        fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .any(|p| fs::read(p.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x004321\x00"))
    };
    let start = PodExecStart {
        namespace: "default".into(),
        name: "talker".into(),
        command: vec!["sh".into(), "-c".into(), "echo started; exec sleep 4321".into()],
        stdout: true,
        ..Default::default()
    };
    let (keep_tx, keep_rx) = tokio::sync::oneshot::channel::<()>();
    let input = futures::StreamExt::chain(
        futures::stream::iter([PodExecInput { input: Some(pod_exec_input::Input::Start(start)) }]),
        futures::StreamExt::filter_map(futures::stream::once(keep_rx), |_| async { None }),
    );
    let mut output = pods.exec(input).await.unwrap().into_inner();
    let first = output.message().await.unwrap().unwrap();
    assert_eq!(first.output, Some(pod_exec_output::Output::Stdout(b"started\n".to_vec())));
    poll("the command runs", Duration::from_secs(10), || async { sleeper().then_some(()) }).await;
    drop(output);
    drop(keep_tx);
    poll("the abandoned command is killed", Duration::from_secs(10), || async {
        (!sleeper()).then_some(())
    })
    .await;

    // Kubernetes-style errors.
    let error = pods.logs(logs_request("nobody")).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound, "{error:?}");
    let error = pods
        .logs(PodLogsRequest { container: "sidecar".into(), ..logs_request("talker") })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains("not valid"), "{error:?}");
    let error =
        pods.logs(PodLogsRequest { previous: true, ..logs_request("talker") }).await.unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument, "{error:?}");

    // Previous: the log of the instance before a restart.
    cluster.run_pod("crasher", "echo up $(cat /proc/uptime); sleep 1; exit 1").await;
    let api = Api::<Pod>::namespaced(&cluster.client, "default");
    poll("the crasher restarts and its second instance ends", Duration::from_secs(60), || async {
        let status = api.get("crasher").await.ok()?.status?;
        let c = status.container_statuses.first()?;
        (c.restart_count >= 1 && c.state.as_ref()?.running.is_none()).then_some(())
    })
    .await;
    let previous =
        read_logs(&mut pods, PodLogsRequest { previous: true, ..logs_request("crasher") }).await;
    let current = read_logs(&mut pods, logs_request("crasher")).await;
    assert!(previous.starts_with("up ") && current.starts_with("up "), "{previous:?} {current:?}");
    assert_ne!(previous, current, "previous is another instance's log");
    // Following a stopped container's log ends at its end.
    let followed =
        read_logs(&mut pods, PodLogsRequest { follow: true, ..logs_request("crasher") }).await;
    assert_eq!(followed, current);

    // The node's stream server refuses whoever lacks the cluster secret.
    let node = Api::<Node>::all(&cluster.client).get(&cluster.node).await.unwrap();
    let status = node.status.unwrap();
    let port = status.daemon_endpoints.unwrap().kubelet_endpoint.unwrap().port;
    assert!(status.addresses.iter().any(|a| a.r#type == "InternalIP" && a.address == "127.0.0.1"));
    let mut kubelet =
        KubeletStreamsClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap();
    let refused = kubelet.logs(logs_request("talker")).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(logs_request("talker"));
    wrong.metadata_mut().insert("authorization", "Bearer not-the-secret".parse().unwrap());
    assert_eq!(kubelet.logs(wrong).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let mut right = tonic::Request::new(logs_request("talker"));
    right.metadata_mut().insert("authorization", format!("Bearer {SECRET}").parse().unwrap());
    assert!(kubelet.logs(right).await.is_ok());

    cluster.shutdown().await;
}

struct Kubectl {
    config: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("kubectl");
        command.env("KUBECONFIG", &self.config).args(args);
        command
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::process::Stdio;
        let mut child = self
            .command(args)
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

    /// Runs kubectl `args` on a terminal of its own, types a line for a
    /// shell at the other end (it checks for a terminal and exits 5), waits
    /// for the shell's answer, and returns how kubectl ended.
    fn shell_at_a_terminal(&self, args: &[&str]) -> std::process::ExitStatus {
        let pty = nix::pty::openpty(None, None).unwrap();
        let slave = || std::process::Stdio::from(pty.slave.try_clone().unwrap());
        let mut child = ChildGuard(
            self.command(args).stdin(slave()).stdout(slave()).stderr(slave()).spawn().unwrap(),
        );
        drop(pty.slave);
        let mut master = fs::File::from(pty.master);
        let reader = master.try_clone().unwrap();
        master.write_all(b"test -t 0 && echo tty-$((6*7)); exit 5\n").unwrap();
        let seen = read_until(reader, "tty-42", Duration::from_secs(30));
        assert!(seen.contains("tty-42"), "{args:?}: {seen:?}");
        child.0.wait().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Kills a child process when dropped.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `reader` on a thread until `wanted` appears, for at most `limit`.
fn read_until(mut reader: impl Read + Send + 'static, wanted: &str, limit: Duration) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = reader.read(&mut buf) {
            if tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains(wanted) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(data) => seen.extend(data),
            Err(_) => panic!("{wanted:?} never came; got {:?}", String::from_utf8_lossy(&seen)),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_logs_and_exec_work_against_the_rest_api() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    if std::process::Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        println!("SKIPPED: needs kubectl on PATH");
        return;
    }
    let cluster = Cluster::start("kubectl").await;
    cluster
        .run_pod(
            "web",
            "echo one; echo two; echo three; while ! test -e /data/go; do sleep 0.1; done; echo after-follow; exec sleep 1000",
        )
        .await;
    let kubectl = cluster.kubectl();
    let k = &kubectl;
    let logs = tokio::task::block_in_place(|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = k.ok(&["logs", "web"], None);
            if text == "one\ntwo\nthree\n" || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    assert_eq!(logs, "one\ntwo\nthree\n");
    tokio::task::block_in_place(|| {
        assert_eq!(k.ok(&["logs", "web", "--tail=1"], None), "three\n");
        assert_eq!(k.ok(&["logs", "web", "-c", "app", "--limit-bytes=3"], None), "one");
        assert_eq!(k.ok(&["logs", "web", "--since=1h"], None), "one\ntwo\nthree\n");
        let stamped = k.ok(&["logs", "web", "--timestamps", "--tail=1"], None);
        assert!(stamped.starts_with("20") && stamped.ends_with(" three\n"), "{stamped:?}");
        let out = k.run(&["logs", "web", "-c", "nope"], None);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("not valid"), "{out:?}");

        // logs -f: a line written while it follows shows up.
        let mut follow = ChildGuard(
            k.command(&["logs", "-f", "web", "--tail=0"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        let stdout = follow.0.stdout.take().unwrap();
        // The follow is open once kubectl's request is in: wait for it to
        // be listening by touching only after a first exec round trip.
        assert_eq!(k.ok(&["exec", "web", "--", "sh", "-c", "echo ready"], None), "ready\n");
        k.ok(&["exec", "web", "--", "sh", "-c", "echo > /data/go"], None);
        let followed = read_until(stdout, "after-follow\n", Duration::from_secs(30));
        assert_eq!(followed, "after-follow\n");
        drop(follow);

        // exec: output, and the command's exit code as kubectl's.
        let out = k.run(&["exec", "web", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"], None);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
        assert!(String::from_utf8_lossy(&out.stderr).contains("oops"), "{out:?}");
        assert_eq!(out.status.code(), Some(3), "{out:?}");
        // exec -i: stdin through cat, ended by its close.
        assert_eq!(k.ok(&["exec", "-i", "web", "--", "cat"], Some("piped\nin\n")), "piped\nin\n");
        let out = k.run(&["exec", "nobody", "--", "true"], None);
        assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"), "{out:?}");

        // exec -it: kubectl on a terminal of its own, talking to a shell.
        let status = k.shell_at_a_terminal(&["exec", "-it", "web", "--", "sh"]);
        assert_eq!(status.code(), Some(5));
    });
    cluster.shutdown().await;
}

/// Attach joins a container's own process: its stdin (closed after the
/// first attach with stdinOnce, so the process reads its end), its
/// terminal, and its output; then kubectl's `attach -i` and `run -i --rm`
/// do the same over REST.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn attach_joins_a_containers_own_streams() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let cluster = Cluster::start("attach").await;
    let interactive = |tty: bool| {
        move |spec: &mut PodSpec| {
            spec.restart_policy = "Never".into();
            let c = &mut spec.containers[0];
            c.stdin = true;
            c.stdin_once = !tty;
            c.tty = tty;
        }
    };
    cluster
        .run_pod_with("reader", "echo ready; read line; echo got:$line; exit 4", interactive(false))
        .await;
    cluster.run_pod_with("shell", "exec sh", interactive(true)).await;
    cluster.run_pod("ticker", "while true; do echo tick; sleep 0.1; done").await;
    let mut pods = cluster.pods().await;

    // stdin, closed after it: the process reads its line and the end.
    let out = session(&mut pods, true, "reader", &[], false, Some(("hello\n", true))).await;
    assert!(out.error.is_none(), "{out:?}");
    assert!(out.stdout.contains("got:hello"), "{out:?}");
    assert_eq!(out.exit, Some(0), "a finished attach is a success: {out:?}");
    let api = Api::<Pod>::namespaced(&cluster.client, "default");
    let ended = poll("reader ends", Duration::from_secs(30), || async {
        let status = api.get("reader").await.ok()?.status?;
        let state = status.container_statuses.first()?.state.clone()?;
        state.terminated.map(|t| t.exit_code)
    })
    .await;
    assert_eq!(ended, 4);
    let log = read_logs(&mut pods, logs_request("reader")).await;
    assert!(log.contains("got:hello"), "the log has what the attach saw: {log:?}");
    // A command is not an attach's.
    let out = session(&mut pods, true, "ticker", &["true"], false, None).await;
    assert!(out.error.is_some(), "{out:?}");

    // A terminal: the shell sees one, and the attach ends when it exits.
    let typed = "test -t 0 && echo tty-$((6*7)); exit\n";
    let out = session(&mut pods, true, "shell", &[], true, Some((typed, false))).await;
    assert!(out.stdout.contains("tty-42"), "{out:?}");
    assert_eq!(out.exit, Some(0), "{out:?}");

    // Output only, from a container without stdin: it flows until the
    // client leaves.
    let start = PodExecStart {
        namespace: "default".into(),
        name: "ticker".into(),
        stdout: true,
        stderr: true,
        ..Default::default()
    };
    let first = PodExecInput { input: Some(pod_exec_input::Input::Start(start)) };
    let input =
        futures::StreamExt::chain(futures::stream::iter([first]), futures::stream::pending());
    let mut output = pods.attach(input).await.unwrap().into_inner();
    let mut seen = String::new();
    while !seen.contains("tick\ntick\n") {
        match tokio::time::timeout(Duration::from_secs(30), output.message()).await {
            Ok(Ok(Some(m))) => {
                if let Some(pod_exec_output::Output::Stdout(d)) = m.output {
                    seen += &String::from_utf8_lossy(&d);
                }
            }
            other => panic!("the ticker's output stopped: {other:?} after {seen:?}"),
        }
    }
    drop(output);

    if std::process::Command::new("kubectl").arg("version").arg("--client").output().is_err() {
        println!("SKIPPED (kubectl part): needs kubectl on PATH");
        cluster.shutdown().await;
        return;
    }
    cluster.run_pod_with("reader2", "read line; echo got:$line", interactive(false)).await;
    cluster.run_pod_with("shell2", "exec sh", interactive(true)).await;
    let kubectl = cluster.kubectl();
    let k = &kubectl;
    let overrides = format!(r#"{{"spec":{{"nodeName":"{}"}}}}"#, cluster.node);
    let image = cluster.image.clone();
    tokio::task::block_in_place(|| {
        let out = k.ok(&["attach", "-i", "reader2"], Some("piped\n"));
        assert!(out.contains("got:piped"), "{out:?}");
        // attach -it: kubectl on a terminal of its own, joining the shell
        // on the container's; the attach ends when the shell exits.
        let status = k.shell_at_a_terminal(&["attach", "-it", "shell2"]);
        assert!(status.success(), "a finished attach is kubectl's success: {status}");
        // The classic one-off: create, attach with stdin, delete.
        let out = k.run(
            &[
                "run",
                "oneoff",
                "-i",
                "--rm",
                "--restart=Never",
                "--image",
                &image,
                "--overrides",
                &overrides,
                "--command",
                "--",
                "sh",
                "-c",
                "read x; echo got:$x",
            ],
            Some("typed\n"),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains("got:typed"), "{out:?}");
        assert!(stdout.contains("pod \"oneoff\" deleted"), "{out:?}");
    });
    cluster.shutdown().await;
}
