//! `berth device-plugin nvidia` through NVML, against `fake_nvml.c`: a
//! stand-in libnvidia-ml compiled here with the system C compiler. It is a
//! test double for hardware this machine does not have (an NVIDIA GPU and
//! its driver); the plugin loads it at run time exactly as it loads the
//! real library (`--nvml-library`). The test plays the kubelet: it serves
//! Registration, then calls the plugin's ListAndWatch and Allocate.
//! Checked: discovery (UUIDs as device ids, minor numbers as /dev/nvidiaN),
//! Allocate (the GPU's node, the control nodes present, and
//! NVIDIA_VISIBLE_DEVICES), an Xid critical error turning a GPU unhealthy
//! while an application's Xid does not, and a clean stop.

use berth_proto::device_plugin_v1beta1 as api;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnixListenerStream;

const GPUS: &str = "GPU-11111111-aaaa,1,Fake H200;GPU-22222222-bbbb,4,Fake H200";

/// The fake NVML, built into `dir`.
fn fake_nvml(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_nvml.c");
    let library = dir.join("libfake-nvml.so");
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-o"])
        .arg(&library)
        .arg(&source)
        .output()
        .expect("the C compiler (cc) runs");
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
    library
}

fn nvidia(library: &Path, gpus: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.args(["device-plugin", "nvidia", "--nvml-library"]).arg(library);
    match gpus {
        Some(g) => cmd.env("FAKE_NVML_GPUS", g),
        None => cmd.env_remove("FAKE_NVML_GPUS"),
    };
    cmd
}

#[test]
fn nvml_lists_the_gpus_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path());

    let out = nvidia(&library, Some(GPUS)).arg("--list").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "GPU-11111111-aaaa\t/dev/nvidia1\tFake H200\t81920 MiB\tNVML",
            "GPU-22222222-bbbb\t/dev/nvidia4\tFake H200\t81920 MiB\tNVML",
        ]
    );

    // NVML loads but the driver is not there.
    let out = nvidia(&library, None).arg("--list").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nvmlInit_v2: Driver Not Loaded"), "{err}");

    // NVML lists no GPU.
    let out = nvidia(&library, Some("")).arg("--list").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no NVIDIA GPU on this machine: NVML"), "{err}");

    // A library named by flag that does not load is an error, not a
    // fall-back to the driver's files.
    let out = nvidia(&dir.path().join("missing.so"), Some(GPUS)).arg("--list").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use NVML from"), "{err}");
}

/// The kubelet's side of registration: every request is passed on.
struct Kubelet(mpsc::UnboundedSender<api::RegisterRequest>);

#[tonic::async_trait]
impl api::registration_server::Registration for Kubelet {
    async fn register(
        &self,
        request: tonic::Request<api::RegisterRequest>,
    ) -> Result<tonic::Response<api::Empty>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(api::Empty {}))
    }
}

/// The plugin process, killed on drop if it is still running.
struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes an Xid event for the fake to pick up, and waits until it has.
async fn raise_xid(events: &Path, gpu_index: u32, xid: u64) {
    let staged = events.with_extension("new");
    std::fs::write(&staged, format!("{gpu_index} {xid}\n")).unwrap();
    std::fs::rename(&staged, events).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while events.exists() {
        assert!(Instant::now() < deadline, "the plugin never waited for NVML events");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn health(message: &api::ListAndWatchResponse) -> Vec<(String, String)> {
    message.devices.iter().map(|d| (d.id.clone(), d.health.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nvml_gpus_are_advertised_allocated_and_turn_unhealthy_on_xid_errors() {
    let dir = tempfile::tempdir().unwrap();
    let library = fake_nvml(dir.path());
    let dev = dir.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    // The GPUs' nodes and two of the three control nodes.
    for node in ["nvidia1", "nvidia4", "nvidiactl", "nvidia-uvm"] {
        std::fs::write(dev.join(node), b"").unwrap();
    }
    let plugins = dir.path().join("device-plugins");
    std::fs::create_dir(&plugins).unwrap();
    let socket = plugins.join("kubelet.sock");
    let events = dir.path().join("xid");

    let (registered, mut registrations) = mpsc::unbounded_channel();
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let kubelet = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(api::registration_server::RegistrationServer::new(Kubelet(registered)))
            .serve_with_incoming_shutdown(
                UnixListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    let _stop_kubelet = stop.clone().drop_guard();

    let log = std::fs::File::create(dir.path().join("plugin.log")).unwrap();
    let mut plugin = Plugin(
        nvidia(&library, Some(GPUS))
            .arg("--dev-root")
            .arg(&dev)
            .arg("--kubelet-socket")
            .arg(&socket)
            .env("FAKE_NVML_EVENTS", &events)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(dir.path().join("plugin.log")).unwrap_or_default();

    let request = tokio::time::timeout(Duration::from_secs(30), registrations.recv())
        .await
        .unwrap_or_else(|_| panic!("the plugin did not register: {}", log()))
        .unwrap();
    assert_eq!(request.resource_name, "nvidia.com/gpu");
    assert_eq!(request.version, "v1beta1");
    let endpoint = plugins.join(&request.endpoint);
    let channel = tonic::transport::Endpoint::from_shared(format!("unix://{}", endpoint.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = api::device_plugin_client::DevicePluginClient::new(channel);

    // The GPUs, by UUID, healthy.
    let mut stream = client.list_and_watch(api::Empty {}).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let healthy = |id: &str, h: &str| (id.to_string(), h.to_string());
    assert_eq!(
        health(&first),
        [healthy("GPU-11111111-aaaa", "Healthy"), healthy("GPU-22222222-bbbb", "Healthy")]
    );

    // Allocate: the GPU's node (its minor number, not its index), the
    // control nodes there are, and the UUIDs for the NVIDIA tooling.
    let request = api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest {
            devices_ids: vec!["GPU-22222222-bbbb".into()],
        }],
    };
    let answer = client.allocate(request).await.unwrap().into_inner();
    let container = &answer.container_responses[0];
    let nodes: Vec<(&str, &str, &str)> = container
        .devices
        .iter()
        .map(|d| (d.host_path.as_str(), d.container_path.as_str(), d.permissions.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/nvidia4", "/dev/nvidia4", "rw"),
            ("/dev/nvidiactl", "/dev/nvidiactl", "rw"),
            ("/dev/nvidia-uvm", "/dev/nvidia-uvm", "rw"),
        ]
    );
    assert_eq!(
        container.envs.get("NVIDIA_VISIBLE_DEVICES").map(String::as_str),
        Some("GPU-22222222-bbbb")
    );
    let unknown = api::AllocateRequest {
        container_requests: vec![api::ContainerAllocateRequest {
            devices_ids: vec!["GPU-x".into()],
        }],
    };
    let refused = client.allocate(unknown).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");

    // An application's Xid (13, on the first GPU) changes nothing; a
    // critical one (79, fallen off the bus, on the second) takes that GPU
    // out of service. The next list is the first change the plugin made.
    raise_xid(&events, 0, 13).await;
    raise_xid(&events, 1, 79).await;
    let next = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .unwrap_or_else(|_| panic!("no health change: {}", log()))
        .unwrap()
        .unwrap();
    assert_eq!(
        health(&next),
        [healthy("GPU-11111111-aaaa", "Healthy"), healthy("GPU-22222222-bbbb", "Unhealthy")],
        "{}",
        log()
    );
    assert!(log().contains("Xid 79 critical error"), "{}", log());

    // SIGTERM stops the plugin, its Xid watcher included, cleanly.
    let pid = nix::unistd::Pid::from_raw(plugin.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = plugin.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the plugin did not stop: {}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}: {}", log());
    assert!(!endpoint.exists(), "the plugin removes its socket");
    stop.cancel();
    let _ = kubelet.await;
}
