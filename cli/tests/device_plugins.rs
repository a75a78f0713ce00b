//! Device plugins end to end, all as `berth` processes: a server, a
//! scheduler, an agent (with berth's CRI runtime) and `berth device-plugin
//! sample`. The plugin's devices appear on the Node; a pod asking for two
//! gets exactly two, in its env and mounted; a pod asking for more than is
//! left stays Pending, also when it gives only limits (the apiserver copies
//! them into its requests); an unhealthy device leaves allocatable; plugins that
//! hang or answer garbage do not wedge the agent; killing the plugin and
//! restarting plugin and agent keeps the running pod's devices (the
//! checkpoint). Also: `berth device-plugin nvidia` on a machine without a
//! GPU says so and fails.
//!
//! The pod test needs root, overlayfs and /bin/busybox, and prints
//! `SKIPPED: <why>` without them.

mod common;

use berth_client::{Api, Client};
use berth_proto::core_v1::{Container, Node, Pod, PodSpec, ResourceRequirements};
use berth_proto::device_plugin_v1beta1 as api;
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::Quantity;
use common::{free_addr, pod_skip_reason, print_log_tails, remove_node_leftovers};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RESOURCE: &str = "example.com/dev";

fn berth(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("berth starts")
}

/// The test's processes, and whatever the agent started: stopped, killed,
/// unmounted and removed when the test ends, however it ends.
struct Cluster {
    processes: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    node: String,
}

impl Cluster {
    fn stop(&mut self, name: &str, signal: nix::sys::signal::Signal) {
        if let Some(i) = self.processes.iter().position(|(n, _)| n == name) {
            let (_, mut child) = self.processes.remove(i);
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tails(self.dir.path(), 40);
        }
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        remove_node_leftovers(self.dir.path(), &self.node);
    }
}

/// A unix socket server that misbehaves: it holds connections without a
/// word, or answers each with garbage. Stopped and joined on drop.
struct BadPlugin {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BadPlugin {
    fn start(socket: &Path, garbage: bool) -> BadPlugin {
        let listener = std::os::unix::net::UnixListener::bind(socket).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let running = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !running.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut conn, _)) if garbage => {
                        let _ = conn.write_all(b"\x00\xffthis is not HTTP/2\r\n\r\n\x07\x07");
                    }
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        BadPlugin { stop, thread: Some(thread) }
    }
}

impl Drop for BadPlugin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn poll<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn devices_pod(name: &str, image: &str, count: &str) -> Pod {
    let script = "echo \"devs=$BERTH_SAMPLE_DEVICES\"; cat /devices/*; exec sleep 1000";
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            termination_grace_period_seconds: Some(1),
            containers: vec![Container {
                name: "app".into(),
                image: image.into(),
                command: vec!["sh".into(), "-c".into(), script.into()],
                resources: Some(ResourceRequirements {
                    requests: [(RESOURCE.to_string(), Quantity::parse(count).unwrap())].into(),
                    limits: [(RESOURCE.to_string(), Quantity::parse(count).unwrap())].into(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `pod` with its containers' requests left out (limits only).
fn limits_only(mut pod: Pod) -> Pod {
    for c in &mut pod.spec.as_mut().unwrap().containers {
        c.resources.as_mut().unwrap().requests.clear();
    }
    pod
}

/// Waits until the scheduler leaves `name` Pending for want of devices.
async fn unschedulable(pods: &Api<Pod>, name: &str) {
    poll(&format!("{name} is unschedulable"), Duration::from_secs(30), || async {
        let status = pods.get(name).await.ok()?.status?;
        let scheduled = status.conditions.iter().find(|c| c.r#type == "PodScheduled")?;
        (status.phase == "Pending"
            && scheduled.status == "False"
            && scheduled.message.contains(&format!("Insufficient {RESOURCE}")))
        .then_some(())
    })
    .await;
}

/// (capacity, allocatable) of the resource on the node.
async fn counts(nodes: &Api<Node>, node: &str, resource: &str) -> Option<(i128, i128)> {
    let status = nodes.get(node).await.ok()?.status?;
    Some((status.capacity.get(resource)?.value(), status.allocatable.get(resource)?.value()))
}

/// The container's log once it printed its devices: (ids, log text).
async fn devices_seen(root: &Path, pods: &Api<Pod>, name: &str) -> (Vec<String>, String) {
    let uid = pods.get(name).await.unwrap().metadata.unwrap().uid;
    let log = root.join(format!("pods/default_{name}_{uid}/app/0.log"));
    poll(&format!("{name} prints its devices"), Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&log).ok()?;
        let line = text.lines().find_map(|l| l.split("devs=").nth(1).map(str::to_string))?;
        let ids: Vec<String> = line.trim().split(',').map(str::to_string).collect();
        ids.iter().all(|id| text.contains(&format!(" {id}"))).then_some((ids, text))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_devices_are_advertised_allocated_and_kept_across_restarts() {
    if let Some(why) = pod_skip_reason() {
        println!("SKIPPED: {why}");
        return;
    }
    let dir = tempfile::Builder::new().prefix("berth-dp-").tempdir().unwrap();
    let node = format!("dp-{}", std::process::id());
    let mut c = Cluster { processes: Vec::new(), dir, node: node.clone() };
    let root = c.dir.path().to_path_buf();
    let (grpc, http) = (free_addr(), free_addr());
    c.processes.push((
        "server".into(),
        berth(
            &[
                "server",
                "--insecure",
                "--id",
                "1",
                "--cluster",
                "dp",
                "--peers",
                &format!("1={grpc}"),
                "--listen",
                &grpc,
                "--http",
                &http,
                "--data-dir",
                root.join("api").to_str().unwrap(),
                "--heartbeat-ms",
                "50",
                "--election-timeout-ms",
                "200-400",
            ],
            &root.join("server.log"),
        ),
    ));
    let client = Client::new([grpc.clone()]).unwrap();
    poll("the server serves", Duration::from_secs(30), || async {
        Api::<berth_proto::core_v1::Namespace>::all(&client).get("default").await.ok()
    })
    .await;
    c.processes.push((
        "scheduler".into(),
        berth(
            &["scheduler", "--server", &grpc, "--id", "s", "--http", &free_addr()],
            &root.join("scheduler.log"),
        ),
    ));
    let kubelet = root.join("kubelet");
    let socket = kubelet.join("device-plugins/kubelet.sock");
    let agent_root = root.join("agent");
    let agent_args = |stop_pods: bool| {
        let mut args: Vec<String> = [
            "agent",
            "--server",
            &grpc,
            "--node-name",
            &node,
            "--root-dir",
            agent_root.to_str().unwrap(),
            "--no-cni",
            "--http",
            &free_addr(),
            "--lease-renew-seconds",
            "1",
            "--device-plugin-root",
            kubelet.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if stop_pods {
            args.push("--stop-pods-on-exit".into());
        }
        args
    };
    let start_agent = |c: &mut Cluster, stop_pods: bool, log: &str| {
        let args = agent_args(stop_pods);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        c.processes.push(("agent".into(), berth(&args, &root.join(log))));
    };
    start_agent(&mut c, false, "agent-1.log");
    let devs = root.join("devs");
    let plugin_args = [
        "device-plugin",
        "sample",
        "--resource",
        RESOURCE,
        "--devices",
        "3",
        "--dir",
        devs.to_str().unwrap(),
        "--kubelet-socket",
        socket.to_str().unwrap(),
    ];
    c.processes.push(("plugin".into(), berth(&plugin_args, &root.join("plugin-1.log"))));

    // The devices appear on the Node.
    let nodes = Api::<Node>::all(&client);
    poll("the node advertises 3 devices", Duration::from_secs(60), || async {
        (counts(&nodes, &node, RESOURCE).await? == (3, 3)).then_some(())
    })
    .await;

    // A pod asking for two gets exactly two: in its env, mounted, the
    // plugin's preference (highest first) honoured.
    let image_dir = root.join("image");
    berth_kubelet::image::busybox_layout(Path::new("/bin/busybox"), &image_dir, "busybox").unwrap();
    let image = format!("oci:{}:busybox", image_dir.display());
    let pods = Api::<Pod>::namespaced(&client, "default");
    pods.create(&devices_pod("two", &image, "2")).await.unwrap();
    let (two, log) = devices_seen(&agent_root, &pods, "two").await;
    assert_eq!(two, ["dev-2", "dev-1"], "{log}");

    // More than what is left: Pending, and the scheduler says why.
    pods.create(&devices_pod("three", &image, "2")).await.unwrap();
    unschedulable(&pods, "three").await;

    // Limits alone ask for as much: the apiserver copies them into the
    // requests the scheduler counts, so this is not overcommitted either.
    let created = pods.create(&limits_only(devices_pod("limits-only", &image, "2"))).await.unwrap();
    let spec = created.spec.unwrap();
    let requests = &spec.containers[0].resources.as_ref().unwrap().requests;
    assert_eq!(requests.get(RESOURCE).map(Quantity::value), Some(2));
    unschedulable(&pods, "limits-only").await;
    pods.delete("limits-only", &Default::default()).await.unwrap();

    // A pod bound past the scheduler that cannot get its devices fails
    // admission instead of running without them.
    let mut greedy = devices_pod("greedy", &image, "3");
    greedy.spec.as_mut().unwrap().node_name = node.clone();
    pods.create(&greedy).await.unwrap();
    let failed = poll("greedy fails admission", Duration::from_secs(30), || async {
        let status = pods.get("greedy").await.ok()?.status?;
        (status.phase == "Failed").then_some(status)
    })
    .await;
    assert_eq!(failed.reason, "UnexpectedAdmissionError");
    assert!(failed.message.contains("3 device(s) wanted, 1 free"), "{}", failed.message);
    pods.delete("greedy", &Default::default()).await.unwrap();

    // An unhealthy device leaves allocatable, and comes back.
    std::fs::write(devs.join("dev-0.unhealthy"), b"").unwrap();
    poll("allocatable drops to 2", Duration::from_secs(30), || async {
        (counts(&nodes, &node, RESOURCE).await? == (3, 2)).then_some(())
    })
    .await;
    std::fs::remove_file(devs.join("dev-0.unhealthy")).unwrap();
    poll("allocatable is 3 again", Duration::from_secs(30), || async {
        (counts(&nodes, &node, RESOURCE).await? == (3, 3)).then_some(())
    })
    .await;

    // Plugins that hang or answer garbage register; the agent goes on.
    let dp_dir = socket.parent().unwrap();
    let _hang = BadPlugin::start(&dp_dir.join("hang.sock"), false);
    let _garbage = BadPlugin::start(&dp_dir.join("garbage.sock"), true);
    let channel = tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut registration = api::registration_client::RegistrationClient::new(channel);
    for (resource, endpoint) in
        [("example.com/hang", "hang.sock"), ("example.com/garbage", "garbage.sock")]
    {
        let request = api::RegisterRequest {
            version: "v1beta1".into(),
            endpoint: endpoint.into(),
            resource_name: resource.into(),
            options: None,
        };
        registration.register(request).await.unwrap();
    }
    let bad = api::RegisterRequest {
        version: "v1alpha".into(),
        endpoint: "x.sock".into(),
        resource_name: RESOURCE.into(),
        options: None,
    };
    let refused = registration.register(bad).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");

    // The plugin is killed: its devices turn unhealthy; it comes back.
    c.stop("plugin", nix::sys::signal::Signal::SIGKILL);
    poll("a dead plugin's devices are unhealthy", Duration::from_secs(30), || async {
        (counts(&nodes, &node, RESOURCE).await? == (3, 0)).then_some(())
    })
    .await;
    c.processes.push(("plugin".into(), berth(&plugin_args, &root.join("plugin-2.log"))));
    poll("the restarted plugin's devices are healthy", Duration::from_secs(30), || async {
        (counts(&nodes, &node, RESOURCE).await? == (3, 3)).then_some(())
    })
    .await;

    // The agent restarts (its pods keep running); the plugin registers
    // again with the new agent, whose checkpoint still holds two's devices.
    c.stop("agent", nix::sys::signal::Signal::SIGTERM);
    let checkpoint = std::fs::read_to_string(dp_dir.join("berth_device_checkpoint")).unwrap();
    let two_uid = pods.get("two").await.unwrap().metadata.unwrap().uid;
    assert!(checkpoint.contains(&two_uid), "{checkpoint}");
    start_agent(&mut c, true, "agent-2.log");
    // The one device left goes to a new pod (admitted once the plugin has
    // registered with the new agent): never one of two's. It gives only
    // limits, and gets its device all the same.
    pods.create(&limits_only(devices_pod("one", &image, "1"))).await.unwrap();
    let (one, log) = devices_seen(&agent_root, &pods, "one").await;
    assert_eq!(one, ["dev-0"], "{log}");
    let status = pods.get("two").await.unwrap().status.unwrap();
    assert_eq!(status.phase, "Running");
    assert_eq!(status.container_statuses[0].restart_count, 0, "two ran on undisturbed");

    // Gone pods give their devices back.
    pods.delete("two", &Default::default()).await.unwrap();
    poll("three gets two's devices", Duration::from_secs(60), || async {
        (pods.get("three").await.ok()?.status?.phase == "Running").then_some(())
    })
    .await;
    let (three, log) = devices_seen(&agent_root, &pods, "three").await;
    assert_eq!(three, ["dev-2", "dev-1"], "{log}");
    // The agent stops its pods on the way out.
    c.stop("agent", nix::sys::signal::Signal::SIGTERM);
}

#[test]
fn the_nvidia_plugin_without_a_gpu_says_so_and_fails() {
    if Path::new("/proc/driver/nvidia/gpus").exists() {
        println!("SKIPPED: this machine has the NVIDIA driver");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["device-plugin", "nvidia", "--kubelet-socket"])
        .arg(dir.path().join("kubelet.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no NVIDIA GPU on this machine"), "{err}");
    assert!(err.contains("/proc/driver/nvidia/gpus"), "{err}");
}
