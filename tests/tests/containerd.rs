//! berth's node agent against containerd instead of berth's own CRI runtime:
//! a private containerd with its CRI plugin (configured and started by
//! scripts/containerd-test-env, on its own root, state, socket, cgroup and
//! CNI bridge), the test image and a pause image built from this host's
//! busybox and imported into it, an in-process API server, and the agent in
//! this process. A pod runs, its output reaches its CRI log and the API
//! server's Logs (relayed by the agent), and deleting it removes its
//! containers and sandbox from containerd.
//!
//! Needs root, containerd (scripts/setup installs it), overlayfs,
//! /bin/busybox and the CNI plugins; otherwise it prints `SKIPPED: <why>`.
//! Everything it starts is stopped and removed when it ends, failed or not.

use berth_client::{Api, Client, DeleteParams};
use berth_kubelet::agent::{self, AgentConfig};
use berth_kubelet::image::{busybox_layout, busybox_layout_with_cmd};
use berth_proto::api_v1::pods_client::PodsClient;
use berth_proto::api_v1::PodLogsRequest;
use berth_proto::core_v1::{Container, Pod, PodSpec};
use berth_proto::cri_v1 as cri;
use berth_proto::meta_v1::ObjectMeta;
use berth_tests::cluster::ApiCluster;
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/containerd-test-env");
const IMAGE: &str = "localhost/berth/busybox:v1";
const PAUSE_IMAGE: &str = "localhost/berth/pause:v1";

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (containerd, mounts, cgroups, network namespaces)".into());
    }
    for tool in ["containerd", "ctr"] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!("{tool} is not installed (Debian package containerd)"));
        }
    }
    if !std::fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("overlay")) {
        return Some("needs overlayfs in the kernel".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("needs /bin/busybox (Debian package busybox-static)".into());
    }
    if !["/usr/lib/cni", "/opt/cni/bin"].iter().any(|d| Path::new(d).join("bridge").exists()) {
        return Some("needs the CNI plugins (Debian package containernetworking-plugins)".into());
    }
    None
}

fn script(args: &[&str]) {
    let out = Command::new("bash").arg(SCRIPT).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "containerd-test-env {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The private containerd; dropping it stops containerd and removes all it
/// made (processes, mounts, network namespaces, bridge, cgroups, files).
struct Containerd {
    dir: PathBuf,
}

impl Containerd {
    fn start(dir: PathBuf, bridge: &str, subnet: &str) -> Containerd {
        let env = Containerd { dir };
        script(&["start", &env.dir.to_string_lossy(), bridge, subnet, PAUSE_IMAGE]);
        env
    }

    fn import(&self, layout: &Path, name: &str) {
        script(&["import", &self.dir.to_string_lossy(), &layout.to_string_lossy(), name]);
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().filter(|l| l.contains("level=error")).collect();
            eprintln!(
                "containerd's errors:\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            );
        }
        let out = Command::new("bash").arg(SCRIPT).arg("stop").arg(&self.dir).output();
        if let Some(o) = out.ok().filter(|o| !o.status.success()) {
            eprintln!("containerd-test-env stop: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

/// The agent task; dropping it stops the agent.
struct RunningAgent(CancellationToken, Option<tokio::task::JoinHandle<()>>);

impl RunningAgent {
    async fn stop(mut self) {
        self.0.cancel();
        if let Some(task) = self.1.take() {
            task.await.unwrap();
        }
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Polls `check` until it gives a value, failing after `limit`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_agent_runs_a_pod_through_containerd() {
    if let Some(why) = skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let tmp = tempfile::Builder::new().prefix("berth-containerd-").tempdir().unwrap();
    let n = std::process::id();
    let subnet = format!("10.216.{}.0/24", n % 250);
    let containerd =
        Containerd::start(tmp.path().join("containerd"), &format!("bctd{}", n % 100_000), &subnet);
    let busybox = Path::new("/bin/busybox");
    busybox_layout(busybox, &tmp.path().join("busybox"), "v1").unwrap();
    busybox_layout_with_cmd(busybox, &tmp.path().join("pause"), "v1", &["sleep", "2147483647"])
        .unwrap();
    containerd.import(&tmp.path().join("busybox"), "localhost/berth/busybox");
    containerd.import(&tmp.path().join("pause"), "localhost/berth/pause");

    let channel = tonic::transport::Endpoint::from_shared(format!(
        "unix://{}",
        containerd.socket().display()
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut runtime = RuntimeServiceClient::new(channel.clone());
    let images = ImageServiceClient::new(channel);
    let version = runtime.version(cri::VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!(version.runtime_name, "containerd");
    // The CRI plugin learns of imported images from events; wait for both.
    for image in [IMAGE, PAUSE_IMAGE] {
        until(&format!("containerd's CRI lists {image}"), Duration::from_secs(30), || {
            let mut images = images.clone();
            async move {
                let spec = Some(cri::ImageSpec { image: image.into(), ..Default::default() });
                let status =
                    images.image_status(cri::ImageStatusRequest { image: spec, verbose: false });
                status.await.ok()?.into_inner().image
            }
        })
        .await;
    }

    let secret = "containerd-test-secret".to_string();
    let cluster =
        ApiCluster::start_with_kubelet_secret(1, "containerd", Some(secret.clone())).await.unwrap();
    let client: Client = cluster.client().unwrap();
    let node = "containerd-node";
    let mut config = AgentConfig::new(node, tmp.path().join("agent"));
    config.cri_socket = Some(containerd.socket());
    config.lease_renew = Duration::from_millis(500);
    config.stop_pods_on_exit = true;
    config.cluster_secret = Some(secret);
    let stop = CancellationToken::new();
    let task = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move { agent::run(&client, &config, stop).await.unwrap() })
    };
    let agent = RunningAgent(stop, Some(task));

    let pods: Api<Pod> = Api::namespaced(&client, "default");
    let pod = Pod {
        metadata: Some(ObjectMeta {
            name: "through-containerd".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: node.into(),
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "main".into(),
                image: IMAGE.into(),
                image_pull_policy: "Never".into(),
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "echo hello from containerd; exec sleep 1000".into(),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let uid = pods.create(&pod).await.unwrap().metadata.unwrap().uid;
    let running = until("the pod runs with an IP", Duration::from_secs(60), || {
        let pods = pods.clone();
        async move {
            let pod = pods.get("through-containerd").await.ok()?;
            let status = pod.status.as_ref()?;
            let main = status.container_statuses.iter().find(|c| c.name == "main")?;
            let ok = status.phase == "Running"
                && !status.pod_ip.is_empty()
                && main.state.as_ref().is_some_and(|s| s.running.is_some());
            ok.then_some(pod)
        }
    })
    .await;
    let status = running.status.unwrap();
    let prefix = subnet.trim_end_matches("0/24");
    assert!(status.pod_ip.starts_with(prefix), "pod IP {} not from {subnet}", status.pod_ip);

    // The container as containerd sees it, and its output in the CRI log.
    let by_uid = [("io.kubernetes.pod.uid".to_string(), uid.clone())];
    let listed = runtime
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                label_selector: by_uid.clone().into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let ctr = runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: listed[0].id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(ctr.state(), cri::ContainerState::ContainerRunning);
    assert_eq!(ctr.metadata.as_ref().map(|m| m.name.as_str()), Some("main"));
    let log = PathBuf::from(&ctr.log_path);
    let line = until("the container's output is in its log", Duration::from_secs(30), || {
        let log = log.clone();
        async move {
            let text = std::fs::read_to_string(&log).ok()?;
            text.lines().find(|l| l.ends_with(" stdout F hello from containerd")).map(String::from)
        }
    })
    .await;
    assert!(line.split(' ').next().is_some_and(|t| t.contains('T')), "{line}");
    // The same output through the API server's Logs, relayed by the agent.
    let mut api = PodsClient::connect(format!("http://{}", cluster.address(0))).await.unwrap();
    let request = PodLogsRequest {
        namespace: "default".into(),
        name: "through-containerd".into(),
        container: "main".into(),
        ..Default::default()
    };
    let mut stream = api.logs(request).await.unwrap().into_inner();
    let mut relayed = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        relayed.extend(chunk.data);
    }
    assert_eq!(String::from_utf8_lossy(&relayed), "hello from containerd\n");

    // Deleting the pod stops and removes its container and sandbox.
    let params = DeleteParams { grace_period_seconds: Some(1), ..Default::default() };
    pods.delete("through-containerd", &params).await.unwrap();
    until("the pod is gone from the API", Duration::from_secs(30), || {
        let pods = pods.clone();
        async move {
            pods.get("through-containerd").await.is_err_and(|e| e.is_not_found()).then_some(())
        }
    })
    .await;
    until("containerd has nothing left of the pod", Duration::from_secs(30), || {
        let mut runtime = runtime.clone();
        let selector: std::collections::BTreeMap<String, String> = by_uid.clone().into();
        async move {
            let sandboxes = runtime
                .list_pod_sandbox(cri::ListPodSandboxRequest {
                    filter: Some(cri::PodSandboxFilter {
                        label_selector: selector.clone(),
                        ..Default::default()
                    }),
                })
                .await
                .ok()?
                .into_inner()
                .items;
            let containers = runtime
                .list_containers(cri::ListContainersRequest {
                    filter: Some(cri::ContainerFilter {
                        label_selector: selector,
                        ..Default::default()
                    }),
                })
                .await
                .ok()?
                .into_inner()
                .containers;
            (sandboxes.is_empty() && containers.is_empty()).then_some(())
        }
    })
    .await;
    agent.stop().await;
}
