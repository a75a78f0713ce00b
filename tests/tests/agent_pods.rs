//! The node agent's pod features end to end: an in-process API server, the
//! node agent and berth's CRI runtime service in this process, pods on a
//! CNI bridge of the test's own, the image built from this host's busybox.
//! Probes (a liveness failure restarts, readiness gates Ready, a startup
//! probe holds the others back), volumes (emptyDir on disk and in memory
//! shared by two containers, hostPath), OOMKilled, ErrImagePull and
//! ImagePullBackOff, deletion within the grace period, a restarted
//! agent that adopts its running pods and removes those deleted while it
//! was down, and pod security (RuntimeDefault seccomp and containerd's
//! capabilities by default, runAsNonRoot, forbidden sysctls), and pods in
//! the host's network, IPC and PID namespaces.
//!
//! Needs root, overlayfs, /bin/busybox and the CNI plugins; otherwise each
//! test prints `SKIPPED: <why>`. Each test owns its directory, bridge,
//! subnet and cgroup parent and removes them when it ends, failed or not.

use berth_client::{Api, Client, DeleteParams, WatchEvent, WatchParams};
use berth_kubelet::agent::{self, AgentConfig};
use berth_kubelet::cri::CniNetwork;
use berth_kubelet::executor::cgroups;
use berth_kubelet::image::{busybox_layout, ImageStore, RegistryConfig};
use berth_kubelet::{CriConfig, CriServer};
use berth_proto::core_v1::{
    Container, ContainerPort, ContainerStatus, EmptyDirVolumeSource, ExecAction,
    HostPathVolumeSource, HttpGetAction, Pod, PodSpec, Probe, ResourceRequirements,
    TcpSocketAction, Volume, VolumeMount,
};
use berth_proto::cri_v1 as cri;
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::{IntOrString, Quantity};
use berth_tests::cluster::ApiCluster;
use cri::runtime_service_client::RuntimeServiceClient;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const CNI_DIRS: [&str; 2] = ["/usr/lib/cni", "/opt/cni/bin"];

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (containers, mounts, cgroups, network namespaces)".into());
    }
    if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
        return Some("needs overlayfs in the kernel".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (Debian package busybox-static)".into());
    }
    if !CNI_DIRS.iter().any(|d| Path::new(d).join("bridge").exists()) {
        return Some("needs the CNI plugins (Debian package containernetworking-plugins)".into());
    }
    None
}

/// One node: API server, CRI runtime service and agent. Dropping it stops
/// them and removes every process, cgroup, mount and link it left.
struct Node {
    dir: tempfile::TempDir,
    name: String,
    image: String,
    bridge: String,
    cgroup_parent: PathBuf,
    client: Client,
    runtime: RuntimeServiceClient<Channel>,
    stop_cri: CancellationToken,
    agent: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
    _cluster: ApiCluster,
}

impl Node {
    /// `n` picks the test's bridge and subnet.
    async fn start(name: &str, n: u8) -> Node {
        let dir = tempfile::Builder::new().prefix("berth-agent-pods-").tempdir().unwrap();
        let bridge = format!("bp{}x{n}", std::process::id() % 100_000);
        let cgroup_parent = PathBuf::from(format!("/berth-agent-pods-{}-{n}", std::process::id()));
        let layout = dir.path().join("image");
        busybox_layout(Path::new("/bin/busybox"), &layout, "v1").unwrap();
        let images =
            ImageStore::open(dir.path().join("images"), RegistryConfig::default()).unwrap();
        let network = CniNetwork::bridge(
            &format!("agent-pods-{n}"),
            &bridge,
            &format!("10.215.{n}.0/24"),
            &dir.path().join("ipam"),
            CNI_DIRS.iter().map(PathBuf::from).collect(),
        );
        let socket = dir.path().join("cri.sock");
        let server = CriServer::bind(CriConfig {
            root: dir.path().join("cri"),
            socket: socket.clone(),
            images,
            cgroup_parent: cgroup_parent.clone(),
            network: Some(network),
        })
        .await
        .unwrap();
        let stop_cri = CancellationToken::new();
        {
            let stop = stop_cri.clone();
            tokio::spawn(async move { server.serve(stop).await.unwrap() });
        }
        let channel =
            tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let cluster = ApiCluster::start(1, name).await.unwrap();
        let client = cluster.client().unwrap();
        let mut node = Node {
            image: format!("oci:{}:v1", layout.display()),
            dir,
            name: name.into(),
            bridge,
            cgroup_parent,
            client,
            runtime: RuntimeServiceClient::new(channel),
            stop_cri,
            agent: None,
            _cluster: cluster,
        };
        node.start_agent();
        node
    }

    fn start_agent(&mut self) {
        let mut config = AgentConfig::new(&self.name, self.dir.path().join("agent"));
        config.cri_socket = Some(self.dir.path().join("cri.sock"));
        config.lease_renew = Duration::from_millis(500);
        let stop = CancellationToken::new();
        let (client, token) = (self.client.clone(), stop.clone());
        let task = tokio::spawn(async move { agent::run(&client, &config, token).await.unwrap() });
        self.agent = Some((stop, task));
    }

    async fn stop_agent(&mut self) {
        if let Some((stop, task)) = self.agent.take() {
            stop.cancel();
            task.await.unwrap();
        }
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(&self.client, "default")
    }

    fn pod(&self, name: &str, containers: Vec<Container>, volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                namespace: "default".into(),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                node_name: self.name.clone(),
                termination_grace_period_seconds: Some(1),
                containers,
                volumes,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container(&self, name: &str, script: &str) -> Container {
        Container {
            name: name.into(),
            image: self.image.clone(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }
    }

    /// Creates the pod; returns its uid.
    async fn create(&self, pod: &Pod) -> String {
        self.pods().create(pod).await.unwrap().metadata.unwrap().uid
    }

    /// Polls the pod until `check` holds, failing after `limit`.
    async fn until(
        &self,
        name: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let deadline = Instant::now() + limit;
        loop {
            let pod = self.pods().get(name).await.ok();
            if let Some(pod) = pod.filter(|p| check(p)) {
                return pod;
            }
            assert!(Instant::now() < deadline, "timed out waiting until {name} {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The reasons of the Events on the pod.
    async fn event_reasons(&self, pod: &str) -> Vec<String> {
        let events = Api::<berth_proto::core_v1::Event>::namespaced(&self.client, "default");
        let listed = events.list(&Default::default()).await.map(|l| l.items).unwrap_or_default();
        listed
            .into_iter()
            .filter(|e| e.involved_object.as_ref().is_some_and(|o| o.name == pod))
            .map(|e| e.reason)
            .collect()
    }

    async fn until_events(&self, pod: &str, reasons: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.event_reasons(pod).await;
            if reasons.iter().all(|r| seen.iter().any(|s| s == r)) {
                return;
            }
            assert!(Instant::now() < deadline, "{pod}: wanted events {reasons:?}, saw {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The runtime's sandboxes for a pod uid.
    async fn sandboxes(&self, uid: &str) -> Vec<cri::PodSandbox> {
        let mut runtime = self.runtime.clone();
        let listed = runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await;
        let items = listed.unwrap().into_inner().items;
        items
            .into_iter()
            .filter(|s| s.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some(uid))
            .collect()
    }

    fn volume_dir(&self, uid: &str) -> PathBuf {
        self.dir.path().join("agent/volumes").join(uid)
    }

    /// Deletes the pod and waits until the API no longer has it.
    async fn delete(&self, name: &str) {
        let params = DeleteParams { grace_period_seconds: Some(1), ..Default::default() };
        let _ = self.pods().delete(name, &params).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.pods().get(name).await.is_err_and(|e| e.is_not_found()) {
            assert!(Instant::now() < deadline, "{name} was never removed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some((stop, _)) = &self.agent {
            stop.cancel();
        }
        self.stop_cri.cancel();
        // Kill and remove the cgroups under the parent, deepest first.
        let mut dirs = Vec::new();
        let hierarchies: Vec<PathBuf> = std::fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for top in std::iter::once(PathBuf::from("/sys/fs/cgroup")).chain(hierarchies) {
            let root =
                top.join(self.cgroup_parent.strip_prefix("/").unwrap_or(&self.cgroup_parent));
            let mut stack = vec![root];
            while let Some(d) = stack.pop() {
                if let Ok(children) = std::fs::read_dir(&d) {
                    for c in children.flatten().filter(|c| c.file_type().is_ok_and(|t| t.is_dir()))
                    {
                        stack.push(c.path());
                    }
                    if let Ok(rel) = d.strip_prefix(&top) {
                        dirs.push(Path::new("/").join(rel));
                    }
                }
            }
        }
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        dirs.dedup();
        for d in dirs {
            if let Ok(cg) = cgroups::manager_for(&d) {
                let _ = cg.kill_all();
                let _ = cg.remove();
            }
        }
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mut points: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::process::Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}

fn probe_every_second() -> Probe {
    Probe { period_seconds: 1, timeout_seconds: 1, ..Default::default() }
}

fn exec_probe(command: &[&str]) -> Probe {
    Probe {
        exec: Some(ExecAction { command: command.iter().map(|s| s.to_string()).collect() }),
        ..probe_every_second()
    }
}

fn condition(pod: &Pod, kind: &str) -> bool {
    pod.status
        .as_ref()
        .is_some_and(|s| s.conditions.iter().any(|c| c.r#type == kind && c.status == "True"))
}

fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status.as_ref()?.container_statuses.iter().find(|c| c.name == name)
}

fn running(pod: &Pod, name: &str) -> bool {
    container_status(pod, name).and_then(|c| c.state.as_ref()).is_some_and(|s| s.running.is_some())
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: volume.into(), mount_path: path.into(), read_only, sub_path: String::new() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn probes_restart_unhealthy_containers_and_gate_readiness() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let node = Node::start("probes", 1).await;
    let limit = Duration::from_secs(60);

    // Liveness: a probe that always fails kills and restarts the container.
    let mut app = node.container("app", "exec sleep 1000");
    app.liveness_probe =
        Some(Probe { failure_threshold: 1, ..exec_probe(&["cat", "/no/such/file"]) });
    node.create(&node.pod("live", vec![app], vec![])).await;

    // Readiness over HTTP on a named port, served from a hostPath; a TCP
    // liveness probe that passes; a startup probe that passes at once.
    let www = node.dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello\n").unwrap();
    let mut httpd = node.container("httpd", "exec httpd -f -p 8080 -h /www");
    httpd.ports = vec![ContainerPort {
        name: "http".into(),
        container_port: 8080,
        protocol: "TCP".into(),
        ..Default::default()
    }];
    httpd.volume_mounts = vec![mount("www", "/www", true)];
    httpd.readiness_probe = Some(Probe {
        http_get: Some(HttpGetAction {
            path: "/ready".into(),
            port: Some(IntOrString::String("http".into())),
            ..Default::default()
        }),
        ..probe_every_second()
    });
    httpd.liveness_probe = Some(Probe {
        tcp_socket: Some(TcpSocketAction {
            port: Some(IntOrString::Int(8080)),
            host: String::new(),
        }),
        ..probe_every_second()
    });
    httpd.startup_probe = Some(exec_probe(&["cat", "/www/index.html"]));
    let www_volume = Volume {
        name: "www".into(),
        host_path: Some(HostPathVolumeSource {
            path: www.display().to_string(),
            r#type: Some("Directory".into()),
        }),
        empty_dir: None,
    };
    node.create(&node.pod("web", vec![httpd], vec![www_volume])).await;

    // Startup gating: readiness would pass, but not before startup does.
    let mut slow = node.container("slow", "exec sleep 1000");
    slow.startup_probe =
        Some(Probe { failure_threshold: 1000, ..exec_probe(&["cat", "/tmp/started"]) });
    slow.readiness_probe = Some(exec_probe(&["true"]));
    node.create(&node.pod("gated", vec![slow], vec![])).await;

    let live = node
        .until("live", "restarts", limit, |p| {
            container_status(p, "app").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    assert_eq!(live.spec.unwrap().restart_policy, "Always");
    node.until_events("live", &["Unhealthy", "Killing", "Started"]).await;

    // Running and started, but not ready until /ready exists on the host.
    let web = node
        .until("web", "runs and has started", limit, |p| {
            running(p, "httpd")
                && container_status(p, "httpd").is_some_and(|c| c.started == Some(true))
        })
        .await;
    assert!(!condition(&web, "Ready") && !condition(&web, "ContainersReady"), "{:?}", web.status);
    assert!(!container_status(&web, "httpd").unwrap().ready);
    std::fs::write(www.join("ready"), "ok\n").unwrap();
    let web = node
        .until("web", "is ready", limit, |p| {
            condition(p, "Ready") && condition(p, "ContainersReady")
        })
        .await;
    assert!(container_status(&web, "httpd").unwrap().ready);
    std::fs::remove_file(www.join("ready")).unwrap();
    node.until("web", "is unready again", limit, |p| !condition(p, "Ready")).await;
    // The TCP liveness probe passed throughout.
    let web = node.pods().get("web").await.unwrap();
    assert_eq!(container_status(&web, "httpd").unwrap().restart_count, 0);

    // The startup probe holds readiness back until it passes.
    let gated = node.until("gated", "runs", limit, |p| running(p, "slow")).await;
    let status = container_status(&gated, "slow").unwrap().clone();
    assert_eq!(status.started, Some(false));
    assert!(!status.ready && !condition(&gated, "Ready"));
    let id = status.container_id.rsplit("://").next().unwrap().to_string();
    let mut runtime = node.runtime.clone();
    let touched = runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: id,
            cmd: vec!["touch".into(), "/tmp/started".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(touched.exit_code, 0);
    let gated = node.until("gated", "is ready", limit, |p| condition(p, "Ready")).await;
    assert_eq!(container_status(&gated, "slow").unwrap().started, Some(true));

    for pod in ["live", "web", "gated"] {
        node.delete(pod).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn empty_dirs_are_shared_and_go_with_the_pod_within_its_grace_period() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let node = Node::start("volumes", 2).await;
    let limit = Duration::from_secs(60);
    let mut writer = node.container(
        "writer",
        "echo hi > /disk/msg; echo there > /mem/msg; mkdir -p /disk/sub; echo deep > /disk/sub/f; \
         exec sleep 1000",
    );
    writer.volume_mounts = vec![mount("disk", "/disk", false), mount("mem", "/mem", false)];
    let mut reader = node.container("reader", "exec sleep 1000");
    reader.volume_mounts = vec![
        mount("disk", "/in", true),
        mount("mem", "/mem2", true),
        VolumeMount {
            name: "disk".into(),
            mount_path: "/sub".into(),
            read_only: true,
            sub_path: "sub".into(),
        },
    ];
    // Ready once it reads what the other container wrote, and cannot write.
    reader.readiness_probe = Some(exec_probe(&[
        "sh",
        "-c",
        "cat /in/msg /mem2/msg /sub/f && ! touch /in/x 2>/dev/null",
    ]));
    let volumes = vec![
        Volume {
            name: "disk".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            host_path: None,
        },
        Volume {
            name: "mem".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                medium: "Memory".into(),
                size_limit: Some(Quantity::parse("1Mi").unwrap()),
            }),
            host_path: None,
        },
    ];
    let mut pod = node.pod("shared", vec![writer, reader], volumes);
    pod.spec.as_mut().unwrap().termination_grace_period_seconds = Some(2);
    let uid = node.create(&pod).await;
    node.until("shared", "is ready", limit, |p| condition(p, "Ready")).await;
    let dir = node.volume_dir(&uid);
    assert_eq!(std::fs::read_to_string(dir.join("disk/msg")).unwrap(), "hi\n");
    assert_eq!(std::fs::read_to_string(dir.join("mem/msg")).unwrap(), "there\n");
    let mem = dir.join("mem").display().to_string();
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().find(|l| l.split(' ').nth(4) == Some(mem.as_str()));
    let line = line.unwrap_or_else(|| panic!("no tmpfs at {mem}"));
    assert!(line.contains(" tmpfs ") && line.contains("size=1024k"), "{line}");

    // Deleted with its grace period: `sleep` as pid 1 ignores SIGTERM, so
    // the containers are killed when it runs out, and the pod goes then.
    let asked = Instant::now();
    node.pods().delete("shared", &DeleteParams::default()).await.unwrap();
    let deadline = asked + Duration::from_secs(2 + 15);
    while !node.pods().get("shared").await.is_err_and(|e| e.is_not_found()) {
        assert!(Instant::now() < deadline, "the pod outlived its grace period by far");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(asked.elapsed() >= Duration::from_millis(1900), "the grace period was cut short");
    assert!(node.sandboxes(&uid).await.is_empty());
    assert!(!dir.exists(), "the pod's volumes are left");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.contains(&mem), "the tmpfs is still mounted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_show_oom_killed_and_image_pull_back_off() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let node = Node::start("failures", 3).await;
    let limit = Duration::from_secs(60);

    let mut hog = node.container("hog", "x=0123456789abcdef; while true; do x=$x$x; done");
    hog.resources = Some(ResourceRequirements {
        limits: [("memory".to_string(), Quantity::parse("32Mi").unwrap())].into(),
        ..Default::default()
    });
    let mut pod = node.pod("hog", vec![hog], vec![]);
    pod.spec.as_mut().unwrap().restart_policy = "Never".into();
    node.create(&pod).await;

    let pods = node.pods();
    let good = node.container("good", "exec sleep 1000");
    let bad = Container {
        image: format!("oci:{}:v1", node.dir.path().join("no-such-image").display()),
        ..node.container("bad", "exec sleep 1000")
    };
    let created = pods.create(&node.pod("badimage", vec![good, bad], vec![])).await.unwrap();
    let from = created.metadata.as_ref().unwrap().resource_version.clone();
    let params =
        WatchParams { field_selector: "metadata.name=badimage".into(), ..Default::default() };
    let mut watch = pods.watch(&params, &from).await.unwrap();
    let mut reasons = Vec::<String>::new();
    let deadline = tokio::time::Instant::now() + limit;
    while !reasons.iter().any(|r| r == "ImagePullBackOff") {
        let event = tokio::time::timeout_at(deadline, watch.next()).await;
        let event = event.unwrap_or_else(|_| panic!("no ImagePullBackOff; saw {reasons:?}"));
        let Some(Ok(WatchEvent::Modified(pod))) = event else {
            assert!(event.is_some_and(|e| e.is_ok()), "the watch ended; saw {reasons:?}");
            continue;
        };
        let waiting = container_status(&pod, "bad")
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .map(|w| (w.reason.clone(), w.message.clone()));
        if let Some((reason, message)) = waiting {
            if reason.starts_with("ErrImagePull") || reason == "ImagePullBackOff" {
                assert!(message.contains("no-such-image"), "{message}");
            }
            if reasons.last() != Some(&reason) {
                reasons.push(reason);
            }
        }
    }
    assert!(reasons.iter().any(|r| r == "ErrImagePull"), "{reasons:?}");
    node.until_events("badimage", &["Failed", "BackOff"]).await;
    // The other container runs regardless; the pod is not ready.
    let badimage =
        node.until("badimage", "runs its good container", limit, |p| running(p, "good")).await;
    assert!(!condition(&badimage, "Ready"));
    assert!(!running(&badimage, "bad"));

    let hog = node
        .until("hog", "is OOMKilled", limit, |p| {
            container_status(p, "hog")
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .is_some()
        })
        .await;
    let terminated =
        container_status(&hog, "hog").unwrap().state.clone().unwrap().terminated.unwrap();
    assert_eq!(terminated.reason, "OOMKilled", "{terminated:?}");
    assert_eq!(terminated.exit_code, 137);
    assert_eq!(hog.status.unwrap().phase, "Failed");

    for pod in ["hog", "badimage"] {
        node.delete(pod).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_adopts_its_pods_and_removes_those_deleted_meanwhile() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let mut node = Node::start("restart", 4).await;
    let limit = Duration::from_secs(60);
    let memory = || Volume {
        name: "mem".into(),
        empty_dir: Some(EmptyDirVolumeSource { medium: "Memory".into(), size_limit: None }),
        host_path: None,
    };
    let mut app = node.container("app", "exec sleep 1000");
    app.volume_mounts = vec![mount("mem", "/mem", false)];
    // A new agent's first probe result comes after its first status write,
    // so the pod's status changes once the new agent has looked at it.
    app.readiness_probe = Some(exec_probe(&["true"]));
    let keep_uid = node.create(&node.pod("keep", vec![app.clone()], vec![memory()])).await;
    let gone_uid = node.create(&node.pod("gone", vec![app], vec![memory()])).await;
    let keep = node.until("keep", "is ready", limit, |p| condition(p, "Ready")).await;
    node.until("gone", "runs", limit, |p| running(p, "app")).await;
    let before = container_status(&keep, "app").unwrap().clone();
    assert!(node.volume_dir(&gone_uid).join("mem").exists());

    // The agent stops; its pods keep running. One is deleted meanwhile.
    node.stop_agent().await;
    let last = node.pods().get("keep").await.unwrap().metadata.unwrap().resource_version;
    assert_eq!(node.sandboxes(&gone_uid).await.len(), 1);
    let now = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
    node.pods().delete("gone", &now).await.unwrap();
    assert!(node.pods().get("gone").await.is_err_and(|e| e.is_not_found()));

    // Back: the deleted pod's sandbox and volumes go; the other pod is
    // adopted as it runs.
    node.start_agent();
    let deadline = Instant::now() + limit;
    while !node.sandboxes(&gone_uid).await.is_empty() || node.volume_dir(&gone_uid).exists() {
        assert!(Instant::now() < deadline, "the deleted pod's sandbox or volumes are left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_mem = node.volume_dir(&gone_uid).join("mem").display().to_string();
    assert!(!std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&gone_mem));
    // The adopted pod's status, once the new agent has written it, names
    // the same container, not restarted.
    let params = WatchParams { field_selector: "metadata.name=keep".into(), ..Default::default() };
    let mut watch = node.pods().watch(&params, &last).await.unwrap();
    let keep = loop {
        let event = tokio::time::timeout(limit, watch.next()).await;
        match event.expect("the new agent never wrote the adopted pod's status") {
            Some(Ok(WatchEvent::Modified(pod))) => break pod,
            Some(Ok(_)) => continue,
            other => panic!("the watch ended: {other:?}"),
        }
    };
    let after = container_status(&keep, "app").unwrap();
    assert_eq!(after.container_id, before.container_id);
    assert_eq!(after.restart_count, 0);
    let sandboxes = node.sandboxes(&keep_uid).await;
    assert_eq!(sandboxes.len(), 1);
    let mut runtime = node.runtime.clone();
    let containers = runtime
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: sandboxes[0].id.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(containers.len(), 1, "a container was started twice: {containers:?}");
    // The new agent goes on running the adopted pod: it is still there and
    // ready after a few syncs.
    node.until("keep", "is ready", limit, |p| condition(p, "Ready") && running(p, "app")).await;
    node.delete("keep").await;
    assert!(!node.volume_dir(&keep_uid).exists());
}

fn waiting_reason(pod: &Pod, name: &str) -> Option<(String, String)> {
    let waiting = container_status(pod, name)?.state.as_ref()?.waiting.as_ref()?;
    Some((waiting.reason.clone(), waiting.message.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_run_confined_by_default_and_root_is_refused_where_runasnonroot() {
    use berth_proto::core_v1::{PodSecurityContext, SecurityContext, Sysctl};
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let node = Node::start("security", 5).await;
    let limit = Duration::from_secs(60);

    // A pod that names no seccomp profile runs under RuntimeDefault (the
    // agent's --seccomp-default) with containerd's capabilities.
    let check = "grep -q '^Seccomp:.2$' /proc/self/status && \
        grep -q '^CapEff:.00000000a80425fb$' /proc/self/status";
    let mut confined = node.pod("confined", vec![node.container("c", check)], vec![]);
    confined.spec.as_mut().unwrap().restart_policy = "Never".into();
    node.create(&confined).await;

    // runAsNonRoot with an image that runs as root: not created.
    let mut rooted = node.container("c", "exec sleep 1000");
    rooted.security_context =
        Some(SecurityContext { run_as_non_root: Some(true), ..Default::default() });
    node.create(&node.pod("rooted", vec![rooted], vec![])).await;

    // runAsNonRoot with runAsUser 1000 runs, as that user.
    let mut user = node.container("c", "[ $(id -u) = 1000 ]");
    user.security_context = Some(SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(1000),
        ..Default::default()
    });
    let mut nonroot = node.pod("nonroot", vec![user], vec![]);
    nonroot.spec.as_mut().unwrap().restart_policy = "Never".into();
    node.create(&nonroot).await;

    // A sysctl outside the safe set fails the pod.
    let mut sysctl = node.pod("sysctl", vec![node.container("c", "exec sleep 1000")], vec![]);
    sysctl.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        sysctls: vec![Sysctl { name: "kernel.msgmax".into(), value: "1".into() }],
        ..Default::default()
    });
    node.create(&sysctl).await;

    let phase = |p: &Pod| p.status.as_ref().map(|s| s.phase.clone()).unwrap_or_default();
    let ended = |p: &Pod| ["Succeeded", "Failed"].contains(&phase(p).as_str());
    let done = node.until("confined", "ends", limit, ended).await;
    assert_eq!(phase(&done), "Succeeded", "{:?}", done.status);
    let done = node.until("nonroot", "ends", limit, ended).await;
    assert_eq!(phase(&done), "Succeeded", "{:?}", done.status);
    let rooted = node
        .until("rooted", "is refused", limit, |p| {
            waiting_reason(p, "c").is_some_and(|(r, _)| r == "CreateContainerConfigError")
        })
        .await;
    let (_, message) = waiting_reason(&rooted, "c").unwrap();
    assert!(message.contains("runAsNonRoot and image will run as root"), "{message}");
    let failed = node.until("sysctl", "fails", limit, |p| phase(p) == "Failed").await;
    assert_eq!(failed.status.unwrap().reason, "SysctlForbidden");

    for pod in ["confined", "rooted", "nonroot", "sysctl"] {
        node.delete(pod).await;
    }
}

/// The messages of a CRI log file's lines.
fn log_messages(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

/// A host link and a SysV message queue only this test has; both removed
/// on drop.
struct HostObjects {
    link: String,
    queue: Option<String>,
}

impl HostObjects {
    fn create(link: &str) -> HostObjects {
        let ip = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // A dummy link, or a veth pair with both ends here where the kernel
        // has no dummy driver.
        let peer = format!("{link}p");
        let made = ip(&["link", "add", link, "type", "dummy"])
            || ip(&["link", "add", link, "type", "veth", "peer", "name", &peer]);
        let mut objects = HostObjects { link: link.into(), queue: None };
        assert!(made, "could not add a dummy or veth link {link}");
        let out = std::process::Command::new("ipcmk").arg("-Q").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text.split_whitespace().last().unwrap_or_default().to_string();
        assert!(out.status.success() && id.parse::<u32>().is_ok(), "ipcmk -Q: {text}");
        objects.queue = Some(id);
        objects
    }
}

impl Drop for HostObjects {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.link]).status();
        if let Some(id) = &self.queue {
            let _ = std::process::Command::new("ipcrm").args(["-q", id]).status();
        }
    }
}

/// A hostNetwork, hostIPC and hostPID pod sees the host's links, message
/// queues and processes, serves on the host's loopback, reports the node's
/// IP as its own, is never wired by CNI (its node's bridge is never made),
/// is adopted by a restarted agent, and its deletion leaves the host's
/// links as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_namespace_pods_share_the_nodes_and_leave_it_untouched() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    for tool in ["ip", "ipcmk", "ipcrm"] {
        let found = std::process::Command::new(tool)
            .arg("-V")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            println!("SKIPPED: needs {tool} (Debian packages iproute2 and util-linux)");
            return;
        }
    }
    let mut node = Node::start("hostns", 6).await;
    let limit = Duration::from_secs(60);
    let host = HostObjects::create(&format!("bpd{}", std::process::id() % 100_000));
    let queue = host.queue.clone().unwrap();
    let link_index = |name: &str| std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"));
    let index_before = link_index(&host.link).unwrap();
    let lo_before = link_index("lo").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap().trim().to_string();
    let me = std::process::id();
    let node_name = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    let script = format!(
        "grep -q '{link}:' /proc/net/dev && echo sees-link; \
         awk '$2 == {queue}' /proc/sysvipc/msg | grep -q . && echo sees-queue; \
         [ \"$(cat /proc/1/comm)\" = '{host_init}' ] && [ -d /proc/{me} ] && echo host-pids; \
         [ \"$(cat /proc/sys/kernel/hostname)\" = '{node_name}' ] && echo node-name; \
         echo checked; while true; do echo hostnet-ok | nc -l -p {port}; done",
        link = host.link,
    );
    let mut app = node.container("app", &script);
    app.readiness_probe = Some(exec_probe(&["true"]));
    let mut pod = node.pod("hostns", vec![app], vec![]);
    let spec = pod.spec.as_mut().unwrap();
    spec.host_network = true;
    spec.host_ipc = true;
    spec.host_pid = true;
    // Ignored with hostNetwork, as in Kubernetes: the pod has the node's name.
    spec.hostname = "ignored".into();
    let uid = node.create(&pod).await;
    let ready = node.until("hostns", "is ready", limit, |p| condition(p, "Ready")).await;
    let status = ready.status.clone().unwrap();
    assert_eq!(status.pod_ip, status.host_ip, "a hostNetwork pod's IP is the node's");
    assert!(!status.pod_ip.is_empty());
    let log = node.dir.path().join(format!("agent/pods/default_hostns_{uid}/app/0.log"));
    let deadline = Instant::now() + limit;
    let seen = loop {
        let lines = log_messages(&log);
        if lines.iter().any(|l| l == "checked") {
            break lines;
        }
        assert!(Instant::now() < deadline, "the pod never checked: {lines:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen, ["sees-link", "sees-queue", "host-pids", "node-name", "checked"]);
    let answers = || async {
        use tokio::io::AsyncReadExt;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let mut got = String::new();
                if conn.read_to_string(&mut got).await.is_ok() && got.trim() == "hostnet-ok" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the pod does not answer on the host's loopback");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    answers().await;
    // No CNI ADD ran: the node's bridge, made by the first pod wired to it,
    // does not exist.
    let bridge = format!("/sys/class/net/{}", node.bridge);
    assert!(!Path::new(&bridge).exists());

    // A restarted agent adopts the pod as it runs.
    let before = container_status(&ready, "app").unwrap().clone();
    node.stop_agent().await;
    let last = node.pods().get("hostns").await.unwrap().metadata.unwrap().resource_version;
    node.start_agent();
    let params =
        WatchParams { field_selector: "metadata.name=hostns".into(), ..Default::default() };
    let mut watch = node.pods().watch(&params, &last).await.unwrap();
    let adopted = loop {
        let event = tokio::time::timeout(limit, watch.next()).await;
        match event.expect("the new agent never wrote the adopted pod's status") {
            Some(Ok(WatchEvent::Modified(pod))) => break pod,
            Some(Ok(_)) => continue,
            other => panic!("the watch ended: {other:?}"),
        }
    };
    let after = container_status(&adopted, "app").unwrap();
    assert_eq!((&after.container_id, after.restart_count), (&before.container_id, 0));
    assert_eq!(adopted.status.as_ref().unwrap().pod_ip, status.host_ip);
    assert_eq!(node.sandboxes(&uid).await.len(), 1);
    answers().await;

    // Deleted: nothing of the host's goes with it.
    node.delete("hostns").await;
    let deadline = Instant::now() + limit;
    while !node.sandboxes(&uid).await.is_empty() {
        assert!(Instant::now() < deadline, "the pod's sandbox is left");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(link_index(&host.link).unwrap(), index_before);
    assert_eq!(link_index("lo").unwrap(), lo_before);
    assert!(!Path::new(&bridge).exists());
}
