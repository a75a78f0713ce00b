//! berth's CRI runtime service end to end, driven over its unix socket with
//! the generated CRI clients: an image pulled from a real registry (Debian's
//! docker-registry with a busybox test image), a pod sandbox with two
//! containers sharing its network namespace, exec, stop with a grace period,
//! a restart of the service that finds everything again, and teardown that
//! leaves no process, mount or cgroup behind.
//!
//! Each test owns its temp dir, registry, socket and cgroup parent; the
//! fixture kills, unmounts and removes them on drop, failed or not. Without
//! root, overlayfs, busybox or docker-registry the tests print
//! `SKIPPED: <why>`.

mod image_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_kubelet::cri::CniNetwork;
use berth_kubelet::executor::cgroups;
use berth_kubelet::image::{ImageStore, RegistryConfig};
use berth_kubelet::{CriConfig, CriServer};
use berth_proto::cri_v1 as cri;
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use image_support::*;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

/// Extra applets the tests run, on top of the harness's busybox layer.
fn applets_layer() -> Vec<u8> {
    let mut t = LayerTar::default();
    t.dir("bin/");
    for a in ["sleep", "readlink", "hostname", "dd"] {
        t.symlink(&format!("bin/{a}"), "busybox");
    }
    t.finish()
}

/// A runtime service on its own root, socket and cgroup parent, with the
/// clients talking to it. Dropping it stops the service and removes every
/// process, cgroup and mount the test left.
struct Fixture {
    dir: tempfile::TempDir,
    images: ImageStore,
    cgroup_parent: PathBuf,
    network: Option<CniNetwork>,
    stop: CancellationToken,
    served: Option<tokio::task::JoinHandle<()>>,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
}

impl Fixture {
    async fn start(name: &str, registry: Option<&Registry>) -> Fixture {
        Fixture::start_with(name, registry, None).await
    }

    /// With the pods on `network`.
    async fn start_with(
        name: &str,
        registry: Option<&Registry>,
        network: Option<CniNetwork>,
    ) -> Fixture {
        let dir = tempfile::Builder::new().prefix("berth-cri-").tempdir().unwrap();
        let config = RegistryConfig {
            plain_http: registry.map(|r| vec![r.addr.clone()]).unwrap_or_default(),
            ..Default::default()
        };
        let images = ImageStore::open(dir.path().join("images"), config).unwrap();
        let cgroup_parent = PathBuf::from(format!("/berth-cri-test-{}-{name}", std::process::id()));
        let stop = CancellationToken::new();
        let (served, runtime, image) =
            serve(dir.path(), &images, &cgroup_parent, network.as_ref(), &stop).await;
        Fixture { dir, images, cgroup_parent, network, stop, served: Some(served), runtime, image }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("cri.sock")
    }

    /// Stops the service and starts a new one over the same root, as a
    /// restarted node agent would.
    async fn restart(&mut self) {
        self.stop.cancel();
        if let Some(served) = self.served.take() {
            served.await.unwrap();
        }
        assert!(!self.socket().exists(), "a stopped service removes its socket");
        self.stop = CancellationToken::new();
        let (served, runtime, image) = serve(
            self.dir.path(),
            &self.images,
            &self.cgroup_parent,
            self.network.as_ref(),
            &self.stop,
        )
        .await;
        self.served = Some(served);
        self.runtime = runtime;
        self.image = image;
    }

    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_dirs(&self.cgroup_parent)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
        remove_leftovers(self.dir.path(), &self.cgroup_parent);
    }
}

/// The cgroup directories (every hierarchy) under a test's cgroup parent.
fn cgroup_dirs(parent: &Path) -> Vec<PathBuf> {
    let Ok(parent) = cgroups::manager_for(parent) else { return Vec::new() };
    let mut out = Vec::new();
    for (_, top) in parent.container_views() {
        let mut stack = vec![top];
        while let Some(d) = stack.pop() {
            if !d.is_dir() {
                continue;
            }
            for e in fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
            out.push(d);
        }
    }
    out
}

/// Kills and removes every cgroup under `cgroup_parent` (deepest first, so
/// holders and containers die with them) and unmounts whatever is mounted
/// under `dir`: what a failed test may leave.
fn remove_leftovers(dir: &Path, cgroup_parent: &Path) {
    let parent_views =
        cgroups::manager_for(cgroup_parent).map(|p| p.container_views()).unwrap_or_default();
    let mut rels: Vec<PathBuf> = cgroup_dirs(cgroup_parent)
        .iter()
        .filter_map(|d| {
            parent_views
                .iter()
                .find_map(|(_, top)| d.strip_prefix(top).ok().map(|rel| cgroup_parent.join(rel)))
        })
        .collect();
    rels.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    rels.dedup();
    for rel in rels {
        if let Ok(cg) = cgroups::manager_for(&rel) {
            let _ = cg.kill_all();
            let _ = cg.remove();
        }
    }
    unmount_all_under(dir);
}

fn service_config(dir: &Path, images: &ImageStore, cgroup_parent: &Path) -> CriConfig {
    CriConfig {
        root: dir.join("cri"),
        socket: dir.join("cri.sock"),
        images: images.clone(),
        cgroup_parent: cgroup_parent.to_path_buf(),
        network: None,
    }
}

async fn connect(socket: &Path) -> (RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
    let channel = Endpoint::from_shared(format!("unix://{}", socket.display()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    (RuntimeServiceClient::new(channel.clone()), ImageServiceClient::new(channel))
}

async fn serve(
    dir: &Path,
    images: &ImageStore,
    cgroup_parent: &Path,
    network: Option<&CniNetwork>,
    stop: &CancellationToken,
) -> (tokio::task::JoinHandle<()>, RuntimeServiceClient<Channel>, ImageServiceClient<Channel>) {
    let mut config = service_config(dir, images, cgroup_parent);
    config.network = network.cloned();
    let server = CriServer::bind(config).await.unwrap();
    let stop = stop.clone();
    let served = tokio::spawn(async move { server.serve(stop).await.unwrap() });
    let (runtime, image) = connect(&dir.join("cri.sock")).await;
    (served, runtime, image)
}

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
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn image_spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.to_string(), ..Default::default() })
}

fn container_config(name: &str, image: &str, script: &str) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: image_spec(image),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: [("role".to_string(), name.to_string())].into(),
        ..Default::default()
    }
}

/// The `net:[...]`-style identity of a process's namespace.
fn ns_of(pid: i64, ns: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap().display().to_string()
}

fn verbose_pid(info: &BTreeMap<String, String>) -> i64 {
    let v: serde_json::Value = serde_json::from_str(&info["info"]).unwrap();
    v["pid"].as_i64().expect("verbose info has the pid")
}

fn log_lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3).map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pod_lifecycle_over_the_cri_socket_survives_a_restart() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let img = image(
        vec![layer(base_layer(), true), layer(change_layer(), true), layer(applets_layer(), false)],
        false,
    );
    registry.push("test/busybox", "v1", &img);
    let mut f = Fixture::start("lifecycle", Some(&registry)).await;

    let version = f.runtime.version(cri::VersionRequest::default()).await.unwrap().into_inner();
    assert_eq!(
        (version.runtime_name.as_str(), version.runtime_api_version.as_str()),
        ("berth", "v1")
    );

    // Image service: pull by name, then find it by name and by the returned ref.
    let name = format!("{}/test/busybox:v1", registry.addr);
    let pulled = f
        .image
        .pull_image(cri::PullImageRequest { image: image_spec(&name), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pulled.image_ref, img.id());
    for query in [&name, &pulled.image_ref] {
        let status = f
            .image
            .image_status(cri::ImageStatusRequest { image: image_spec(query), verbose: false })
            .await
            .unwrap()
            .into_inner();
        let found = status.image.expect("pulled image is present");
        assert_eq!(found.id, img.id());
        assert_eq!(found.repo_tags, [name.as_str()]);
        assert_eq!(found.uid, Some(cri::Int64Value { value: 0 }));
    }
    let listed = f.image.list_images(cri::ListImagesRequest::default()).await.unwrap().into_inner();
    assert_eq!(listed.images.len(), 1);
    let fs_info = f.image.image_fs_info(cri::ImageFsInfoRequest {}).await.unwrap().into_inner();
    assert!(fs_info.image_filesystems[0].used_bytes.as_ref().unwrap().value > 0);

    // A sandbox with its own hostname, under the burstable QoS level.
    let logs = f.dir.path().join("logs");
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "web".into(),
            uid: "uid-1".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "cri-pod".into(),
        dns_config: Some(cri::DnsConfig {
            servers: vec!["10.0.0.10".into()],
            searches: vec!["default.svc".into()],
            options: vec![],
        }),
        log_directory: logs.display().to_string(),
        labels: [("app".to_string(), "web".to_string())].into(),
        annotations: [("note".to_string(), "kept verbatim".to_string())].into(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: "burstable".into(),
            resources: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 256 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let sandbox_id = f
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let sandbox = f
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    let status = sandbox.status.clone().unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(status.annotations, sandbox_config.annotations);
    let holder_pid = verbose_pid(&sandbox.info);
    let info: serde_json::Value = serde_json::from_str(&sandbox.info["info"]).unwrap();
    let pod_cgroup = PathBuf::from(info["cgroup"].as_str().unwrap());
    assert_eq!(pod_cgroup, f.cgroup_parent.join("burstable").join(format!("pod{sandbox_id}")));
    assert_ne!(ns_of(holder_pid, "net"), ns_of(std::process::id() as i64, "net"));
    // The pod's limits sit on its own cgroup, above its containers'.
    let pod_limit = cgroups::manager_for(&pod_cgroup)
        .unwrap()
        .container_views()
        .iter()
        .find_map(|(_, d)| {
            ["memory.limit_in_bytes", "memory.max"]
                .iter()
                .find_map(|f| fs::read_to_string(d.join(f)).ok())
        })
        .expect("the pod cgroup has a memory limit file");
    assert_eq!(pod_limit.trim(), (256u64 << 20).to_string());

    // Two containers: one that runs on (and ignores SIGTERM), one that writes
    // where the host sees it and exits 0.
    let shared = f.dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    let creator = f.runtime.clone();
    let create = |config: cri::ContainerConfig| {
        let mut client = creator.clone();
        let request = cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(config),
            sandbox_config: Some(sandbox_config.clone()),
        };
        async move { client.create_container(request).await.unwrap().into_inner().container_id }
    };
    let sleeper = create(container_config(
        "sleeper",
        &pulled.image_ref,
        "trap '' TERM; echo up; exec sleep 1000",
    ))
    .await;
    let mut writer_config = container_config(
        "writer",
        &name,
        "echo written > /shared/out; readlink /proc/self/ns/net > /shared/net; \
         readlink /proc/self/ns/pid > /shared/pid; hostname; echo $GREETING $EXTRA; \
         cat /etc/hostname /etc/resolv.conf",
    );
    writer_config.mounts = vec![cri::Mount {
        container_path: "/shared".into(),
        host_path: shared.display().to_string(),
        ..Default::default()
    }];
    writer_config.envs = vec![cri::KeyValue { key: "EXTRA".into(), value: "there".into() }];
    let writer = create(writer_config).await;
    // A failed create leaves no container, rootfs or state behind.
    let mut broken = container_config("broken", &name, "true");
    broken.mounts = vec![cri::Mount {
        container_path: "/data".into(),
        host_path: f.dir.path().join("missing").display().to_string(),
        ..Default::default()
    }];
    let err = f
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(broken),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let count = |dir: &str| fs::read_dir(f.dir.path().join(dir)).unwrap().count();
    assert_eq!((count("cri/containers"), count("cri/executor"), count("images/rootfs")), (2, 2, 2));
    let created = status_of(&f.runtime, &writer).await;
    assert_eq!(created.state, cri::ContainerState::ContainerCreated as i32);
    for id in [&sleeper, &writer] {
        f.runtime
            .start_container(cri::StartContainerRequest { container_id: id.clone() })
            .await
            .unwrap();
    }

    let done = wait_exited(&f.runtime, &writer).await;
    assert_eq!((done.exit_code, done.reason.as_str()), (0, "Completed"));
    assert!(done.started_at >= done.created_at && done.finished_at >= done.started_at);
    assert_eq!(fs::read_to_string(shared.join("out")).unwrap(), "written\n");
    assert_eq!(
        log_lines(&logs.join("writer/0.log")),
        ["cri-pod", "hello there", "cri-pod", "search default.svc", "nameserver 10.0.0.10"]
    );

    let sleeper_status = f
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: sleeper.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        sleeper_status.status.as_ref().unwrap().state,
        cri::ContainerState::ContainerRunning as i32
    );
    let sleeper_pid = verbose_pid(&sleeper_status.info);
    // One network namespace for the pod, a PID namespace per container.
    let writer_net = fs::read_to_string(shared.join("net")).unwrap();
    let writer_pid_ns = fs::read_to_string(shared.join("pid")).unwrap();
    assert_eq!(writer_net.trim(), ns_of(sleeper_pid, "net"));
    assert_eq!(ns_of(sleeper_pid, "net"), ns_of(holder_pid, "net"));
    assert_eq!(ns_of(sleeper_pid, "uts"), ns_of(holder_pid, "uts"));
    assert_ne!(writer_pid_ns.trim(), ns_of(sleeper_pid, "pid"));
    assert_ne!(ns_of(sleeper_pid, "pid"), ns_of(std::process::id() as i64, "pid"));
    assert_ne!(ns_of(sleeper_pid, "mnt"), ns_of(holder_pid, "mnt"));

    // Exec: output per stream and the exit code; a timeout kills the command.
    let exec = f
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["sh".into(), "-c".into(), "echo out; echo err >&2; exit 3".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (exec.stdout.as_slice(), exec.stderr.as_slice(), exec.exit_code),
        (&b"out\n"[..], &b"err\n"[..], 3)
    );
    let started = Instant::now();
    let timed_out = f
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["sleep".into(), "30".into()],
            timeout: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(timed_out.code(), tonic::Code::DeadlineExceeded);
    assert!(started.elapsed() < Duration::from_secs(10));

    // Limits reach the container's cgroup, as it sees it.
    f.runtime
        .update_container_resources(cri::UpdateContainerResourcesRequest {
            container_id: sleeper.clone(),
            linux: Some(cri::LinuxContainerResources {
                memory_limit_in_bytes: 64 << 20,
                ..Default::default()
            }),
            annotations: Default::default(),
        })
        .await
        .unwrap();
    let limit = f
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/memory.max 2>/dev/null; cat /dev/null && echo devices-ok"
                    .into(),
            ],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(String::from_utf8_lossy(&limit.stdout), format!("{}\ndevices-ok\n", 64 << 20));
    let stats = f
        .runtime
        .container_stats(cri::ContainerStatsRequest { container_id: sleeper.clone() })
        .await
        .unwrap()
        .into_inner()
        .stats
        .unwrap();
    assert!(stats.memory.unwrap().usage_bytes.unwrap().value > 0);
    assert!(stats.cpu.unwrap().usage_core_nano_seconds.is_some());
    assert!(stats.writable_layer.is_some());
    let all_stats = f
        .runtime
        .list_container_stats(cri::ListContainerStatsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all_stats.stats.len(), 1, "only running containers have live stats");

    let list = |client: &RuntimeServiceClient<Channel>, filter: cri::ContainerFilter| {
        let mut client = client.clone();
        async move {
            let mut ids: Vec<String> = client
                .list_containers(cri::ListContainersRequest { filter: Some(filter) })
                .await
                .unwrap()
                .into_inner()
                .containers
                .into_iter()
                .map(|c| c.id)
                .collect();
            ids.sort();
            ids
        }
    };
    let running = cri::ContainerFilter {
        state: Some(cri::ContainerStateValue {
            state: cri::ContainerState::ContainerRunning as i32,
        }),
        ..Default::default()
    };
    let by_label = cri::ContainerFilter {
        label_selector: [("role".to_string(), "writer".to_string())].into(),
        ..Default::default()
    };
    let mut both = vec![sleeper.clone(), writer.clone()];
    both.sort();
    assert_eq!(list(&f.runtime, cri::ContainerFilter::default()).await, both);
    assert_eq!(list(&f.runtime, running.clone()).await, [sleeper.as_str()]);
    assert_eq!(list(&f.runtime, by_label).await, [writer.as_str()]);

    // A container over its memory limit is OOM-killed, and says so.
    let mut hog_config = container_config(
        "hog",
        &name,
        "dd if=/dev/zero of=/dev/null bs=128M count=1; echo survived",
    );
    hog_config.linux = Some(cri::LinuxContainerConfig {
        resources: Some(cri::LinuxContainerResources {
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        }),
        security_context: None,
    });
    let hog = create(hog_config).await;
    f.runtime
        .start_container(cri::StartContainerRequest { container_id: hog.clone() })
        .await
        .unwrap();
    let oom = wait_exited(&f.runtime, &hog).await;
    assert_eq!(oom.reason, "OOMKilled", "{oom:?}");
    f.runtime
        .remove_container(cri::RemoveContainerRequest { container_id: hog.clone() })
        .await
        .unwrap();

    // A restarted service finds the same sandbox and containers, in the same
    // states, and can still drive them.
    f.restart().await;
    let sandboxes = f
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(sandboxes[0].id, sandbox_id);
    assert_eq!(sandboxes[0].state, cri::PodSandboxState::SandboxReady as i32);
    assert_eq!(sandboxes[0].labels, sandbox_config.labels);
    assert_eq!(list(&f.runtime, cri::ContainerFilter::default()).await, both);
    assert_eq!(list(&f.runtime, running).await, [sleeper.as_str()]);
    let after = status_of(&f.runtime, &writer).await;
    assert_eq!((after.exit_code, after.finished_at), (0, done.finished_at));
    let exec = f
        .runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["hostname".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exec.stdout, b"cri-pod\n");

    // SIGTERM is ignored, so the grace period runs out and SIGKILL ends it.
    let started = Instant::now();
    f.runtime
        .stop_container(cri::StopContainerRequest { container_id: sleeper.clone(), timeout: 1 })
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(10), "{waited:?}");
    let stopped = status_of(&f.runtime, &sleeper).await;
    assert_eq!(
        (stopped.state, stopped.exit_code),
        (cri::ContainerState::ContainerExited as i32, 137)
    );
    assert_eq!(stopped.reason, "Error");
    assert!(!Path::new(&format!("/proc/{sleeper_pid}")).exists() || ns_of_gone(sleeper_pid));
    assert_eq!(log_lines(&logs.join("sleeper/0.log")), ["up"]);

    // Teardown leaves nothing: no holder, no mounts, no cgroups, no files.
    for _ in 0..2 {
        f.runtime
            .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sandbox_id.clone() })
            .await
            .unwrap();
    }
    let status = f
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxNotready as i32);
    for _ in 0..2 {
        f.runtime
            .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sandbox_id.clone() })
            .await
            .unwrap();
    }
    assert!(list(&f.runtime, cri::ContainerFilter::default()).await.is_empty());
    let gone = f
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: sandbox_id.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    assert!(!Path::new(&format!("/proc/{holder_pid}")).exists(), "holder is gone and reaped");
    let root = f.dir.path().display().to_string();
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&root), "mounts left under {root}");
    let pod_dirs: Vec<PathBuf> =
        f.cgroup_dirs().into_iter().filter(|d| d.to_string_lossy().contains("/pod")).collect();
    assert!(pod_dirs.is_empty(), "pod cgroups left: {pod_dirs:?}");
    assert!(fs::read_dir(f.dir.path().join("cri/containers")).unwrap().next().is_none());
    assert!(fs::read_dir(f.dir.path().join("cri/sandboxes")).unwrap().next().is_none());

    // The image can go once no container uses it, and removing it again is fine.
    for _ in 0..2 {
        f.image
            .remove_image(cri::RemoveImageRequest { image: image_spec(&pulled.image_ref) })
            .await
            .unwrap();
    }
    let status = f
        .image
        .image_status(cri::ImageStatusRequest { image: image_spec(&name), verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none());
}

/// A killed container's init may linger as a zombie of this test process
/// for a moment; it counts as gone once it is no longer running.
fn ns_of_gone(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_objects_and_bad_requests_get_clear_errors() {
    if let Some(why) = skip_reason(false) {
        println!("SKIPPED: {why}");
        return;
    }
    let mut f = Fixture::start("errors", None).await;
    let missing = "0123456789abcdef0123456789abcdef".to_string();
    let err = f
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: missing.clone(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = f
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: "../etc".into(),
            verbose: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "ids never name paths outside the root");
    // Stop and remove are idempotent, also for what never existed.
    f.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: missing.clone() })
        .await
        .unwrap();
    f.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: missing.clone() })
        .await
        .unwrap();
    f.runtime
        .remove_container(cri::RemoveContainerRequest { container_id: missing.clone() })
        .await
        .unwrap();
    let err = f
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: missing.clone(),
            config: Some(container_config("x", "busybox", "true")),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A sandbox whose image is missing cannot get containers; the sandbox
    // itself still comes and goes cleanly.
    let sandbox_id = f
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig { hostname: "lonely".into(), ..Default::default() }),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let err = f
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.clone(),
            config: Some(container_config("x", "example.invalid/none:v1", "true")),
            sandbox_config: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    let status = f
        .image
        .image_status(cri::ImageStatusRequest {
            image: image_spec("example.invalid/none:v1"),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.image.is_none());
    // The sandbox survives a restart as well, and is removed after it.
    f.restart().await;
    let listed = f
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [sandbox_id.as_str()]);
    f.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sandbox_id.clone() })
        .await
        .unwrap();
    assert!(f.cgroup_dirs().iter().all(|d| !d.to_string_lossy().contains("/pod")));
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&f.dir.path().display().to_string()));
}

/// Makes `runtime_service_process` serve instead of returning at once.
const SERVICE_DIR_ENV: &str = "BERTH_CRI_TEST_SERVICE_DIR";
const SERVICE_CGROUP_ENV: &str = "BERTH_CRI_TEST_SERVICE_CGROUP";
const SERVICE_REGISTRY_ENV: &str = "BERTH_CRI_TEST_SERVICE_REGISTRY";

/// The runtime service as a process of its own, for the test that kills
/// it: that test runs this binary again with only this test selected and
/// the environment set. Serves until SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "started by containers_outlive_a_killed_runtime_service as its service process"]
async fn runtime_service_process() {
    let Ok(dir) = std::env::var(SERVICE_DIR_ENV) else { return };
    let dir = PathBuf::from(dir);
    let cgroup_parent = PathBuf::from(std::env::var(SERVICE_CGROUP_ENV).unwrap());
    let registry = std::env::var(SERVICE_REGISTRY_ENV).unwrap();
    let config = RegistryConfig { plain_http: vec![registry], ..Default::default() };
    let images = ImageStore::open(dir.join("images"), config).unwrap();
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
    let stop = CancellationToken::new();
    let server = CriServer::bind(service_config(&dir, &images, &cgroup_parent)).await.unwrap();
    let served = server.serve(stop.clone());
    tokio::pin!(served);
    tokio::select! {
        result = &mut served => result.unwrap(),
        _ = term.recv() => {
            stop.cancel();
            served.await.unwrap();
        }
    }
}

/// A runtime service process; killed and reaped on drop.
struct ServiceProcess {
    child: std::process::Child,
}

impl ServiceProcess {
    async fn start(dir: &Path, cgroup_parent: &Path, registry: &Registry, n: u32) -> Self {
        let log = fs::File::create(dir.join(format!("service-{n}.log"))).unwrap();
        let child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "runtime_service_process", "--nocapture"])
            .env(SERVICE_DIR_ENV, dir)
            .env(SERVICE_CGROUP_ENV, cgroup_parent)
            .env(SERVICE_REGISTRY_ENV, &registry.addr)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut service = ServiceProcess { child };
        let socket = dir.join("cri.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let log = || fs::read_to_string(dir.join(format!("service-{n}.log"))).unwrap();
            assert!(service.child.try_wait().unwrap().is_none(), "service exited: {}", log());
            assert!(Instant::now() < deadline, "service did not listen: {}", log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        service
    }

    fn signal(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, signal);
        self.child.wait().unwrap()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes what a test left under its dir and cgroup parent, on drop.
struct Leftovers<'a> {
    dir: &'a Path,
    cgroup_parent: PathBuf,
}

impl Drop for Leftovers<'_> {
    fn drop(&mut self) {
        remove_leftovers(self.dir, &self.cgroup_parent);
    }
}

/// Alive and not a zombie.
fn running(pid: i64) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The container's status, which must be there.
async fn status_of(client: &RuntimeServiceClient<Channel>, id: &str) -> cri::ContainerStatus {
    let request = cri::ContainerStatusRequest { container_id: id.to_string(), verbose: false };
    client.clone().container_status(request).await.unwrap().into_inner().status.unwrap()
}

async fn wait_exited(client: &RuntimeServiceClient<Channel>, id: &str) -> cri::ContainerStatus {
    poll("a container to exit", Duration::from_secs(20), || async {
        let s = status_of(client, id).await;
        (s.state == cri::ContainerState::ContainerExited as i32).then_some(s)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_outlive_a_killed_runtime_service() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let img = image(
        vec![layer(base_layer(), true), layer(change_layer(), true), layer(applets_layer(), false)],
        false,
    );
    registry.push("test/busybox", "v2", &img);
    let dir = tempfile::Builder::new().prefix("berth-cri-killed-").tempdir().unwrap();
    let cgroup_parent = PathBuf::from(format!("/berth-cri-test-{}-killed", std::process::id()));
    let _leftovers = Leftovers { dir: dir.path(), cgroup_parent: cgroup_parent.clone() };
    let socket = dir.path().join("cri.sock");

    let mut first = ServiceProcess::start(dir.path(), &cgroup_parent, &registry, 1).await;
    let (mut runtime, mut images) = connect(&socket).await;
    let name = format!("{}/test/busybox:v2", registry.addr);
    images
        .pull_image(cri::PullImageRequest { image: image_spec(&name), ..Default::default() })
        .await
        .unwrap();
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: "kept".into(), ..Default::default() }),
        hostname: "survivor".into(),
        ..Default::default()
    };
    let sandbox_id = runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let mut ids = Vec::new();
    for (name_, script) in [("sleeper", "exec sleep 1000"), ("done", "exit 0")] {
        let mut config = container_config(name_, &name, script);
        config.log_path = String::new();
        let id = runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(config),
                sandbox_config: None,
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        runtime
            .start_container(cri::StartContainerRequest { container_id: id.clone() })
            .await
            .unwrap();
        ids.push(id);
    }
    let (sleeper, done) = (ids[0].clone(), ids[1].clone());
    assert_eq!(wait_exited(&runtime, &done).await.exit_code, 0);
    let pid_of = |client: &RuntimeServiceClient<Channel>, id: &str| {
        let mut client = client.clone();
        let id = id.to_string();
        async move {
            let info = client
                .container_status(cri::ContainerStatusRequest { container_id: id, verbose: true })
                .await
                .unwrap()
                .into_inner()
                .info;
            verbose_pid(&info)
        }
    };
    let sleeper_pid = pid_of(&runtime, &sleeper).await;
    let holder_pid = verbose_pid(
        &runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.clone(),
                verbose: true,
            })
            .await
            .unwrap()
            .into_inner()
            .info,
    );

    // The service dies without a chance to clean up; the pod runs on.
    first.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(running(sleeper_pid) && running(holder_pid), "pod processes outlive the service");

    let mut second = ServiceProcess::start(dir.path(), &cgroup_parent, &registry, 2).await;
    (runtime, _) = connect(&socket).await;
    let sandboxes = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(sandboxes.len(), 1);
    assert_eq!(
        (sandboxes[0].id.as_str(), sandboxes[0].state),
        (sandbox_id.as_str(), cri::PodSandboxState::SandboxReady as i32)
    );
    let mut containers: Vec<(String, i32)> = runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect();
    containers.sort();
    let mut expected = vec![
        (sleeper.clone(), cri::ContainerState::ContainerRunning as i32),
        (done.clone(), cri::ContainerState::ContainerExited as i32),
    ];
    expected.sort();
    assert_eq!(containers, expected, "found again, not lost or duplicated");
    assert_eq!(pid_of(&runtime, &sleeper).await, sleeper_pid);
    let exec = runtime
        .exec_sync(cri::ExecSyncRequest {
            container_id: sleeper.clone(),
            cmd: vec!["hostname".into()],
            timeout: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(exec.stdout, b"survivor\n");

    // The new service still stops and removes what the old one started.
    runtime
        .stop_container(cri::StopContainerRequest { container_id: sleeper.clone(), timeout: 0 })
        .await
        .unwrap();
    assert!(!running(sleeper_pid));
    runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sandbox_id.clone() })
        .await
        .unwrap();
    assert!(!running(holder_pid));
    assert!(runtime
        .list_containers(cri::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
        .is_empty());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&dir.path().display().to_string()));
    assert!(cgroup_dirs(&cgroup_parent).iter().all(|d| !d.to_string_lossy().contains("/pod")));
    let status = second.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(status.success(), "service exits cleanly on SIGTERM: {status:?}");
    assert!(!socket.exists());
}

/// One API server peer in this process, stopped when dropped.
struct ApiPeer {
    grpc: String,
    stop: CancellationToken,
}

impl ApiPeer {
    async fn start(dir: &Path) -> ApiPeer {
        let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let (grpc, http) = (free(), free());
        let config = berth_apiserver::PeerConfig {
            id: 1,
            cluster: "agent-test".into(),
            data_dir: dir.join("api"),
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
            kubelet_secret: None,
            tls: None,
            authorization_modes: Vec::new(),
            admission_plugins: Vec::new(),
            pod_security: Default::default(),
            guards: Default::default(),
        };
        let stop = CancellationToken::new();
        let token = stop.clone();
        tokio::spawn(async move {
            let _ = berth_apiserver::serve(config, token).await;
        });
        ApiPeer { grpc: grpc.to_string(), stop }
    }
}

impl Drop for ApiPeer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_node_agent_runs_a_bound_pod_and_stops_it_when_deleted() {
    use berth_client::{Api, Client, DeleteParams};
    use berth_kubelet::agent::{self, AgentConfig};
    use berth_proto::core_v1::{Container, Namespace, Pod, PodSpec};
    use berth_proto::meta_v1::ObjectMeta;
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let img = image(
        vec![layer(base_layer(), true), layer(change_layer(), true), layer(applets_layer(), false)],
        false,
    );
    registry.push("test/busybox", "agent", &img);
    if !Path::new("/usr/lib/cni/bridge").exists() {
        println!("SKIPPED: needs the CNI plugins (Debian package containernetworking-plugins)");
        return;
    }
    // The pods' network: a bridge of this test's own, removed at its end.
    let bridge = format!("bt{}", std::process::id() % 100_000);
    struct Bridge(String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
    let _bridge = Bridge(bridge.clone());
    let ipam = tempfile::tempdir().unwrap();
    let network = CniNetwork::bridge(
        "agent-test",
        &bridge,
        "10.213.7.0/24",
        ipam.path(),
        vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()],
    );
    let f = Fixture::start_with("agent", Some(&registry), Some(network)).await;
    let api = ApiPeer::start(f.dir.path()).await;
    let client = Client::new([api.grpc.clone()]).unwrap();
    poll("the API serves", Duration::from_secs(30), || async {
        Api::<Namespace>::all(&client).get("default").await.ok()
    })
    .await;

    let mut config = AgentConfig::new("node-e2e", f.dir.path().join("agent"));
    config.cri_socket = Some(f.socket());
    config.lease_renew = Duration::from_millis(500);
    let stop_agent = CancellationToken::new();
    let agent = {
        let (client, stop) = (client.clone(), stop_agent.clone());
        tokio::spawn(async move { agent::run(&client, &config, stop).await.unwrap() })
    };

    let pods = Api::<Pod>::namespaced(&client, "default");
    let pod = Pod {
        metadata: Some(ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            node_name: "node-e2e".into(),
            termination_grace_period_seconds: Some(2),
            init_containers: vec![Container {
                name: "init".into(),
                image: format!("{}/test/busybox:agent", registry.addr),
                command: vec!["sh".into(), "-c".into(), "echo init-ran".into()],
                ..Default::default()
            }],
            containers: vec![Container {
                name: "app".into(),
                image: format!("{}/test/busybox:agent", registry.addr),
                command: vec!["sh".into(), "-c".into(), "echo started; exec sleep 1000".into()],
                resources: Some(berth_proto::core_v1::ResourceRequirements {
                    limits: [
                        ("cpu".to_string(), berth_proto::Quantity::parse("500m").unwrap()),
                        ("memory".to_string(), berth_proto::Quantity::parse("64Mi").unwrap()),
                    ]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let uid = pods.create(&pod).await.unwrap().metadata.unwrap().uid;
    let running = poll("the pod runs", Duration::from_secs(60), || async {
        let pod = pods.get("web").await.ok()?;
        let status = pod.status?;
        (status.phase == "Running" && status.container_statuses.first()?.ready).then_some(status)
    })
    .await;
    assert_eq!(running.container_statuses[0].restart_count, 0);
    assert!(running.pod_ip.starts_with("10.213.7."), "pod IP {:?}", running.pod_ip);
    assert_eq!(running.qos_class, "Burstable");
    // The init container ran to completion before the container started.
    let init = running.init_container_statuses[0].state.clone().unwrap().terminated.unwrap();
    assert_eq!(init.exit_code, 0);
    assert!(running.conditions.iter().any(|c| c.r#type == "Initialized" && c.status == "True"));
    let init_log = f.dir.path().join(format!("agent/pods/default_web_{uid}/init/0.log"));
    assert!(log_lines(&init_log).contains(&"init-ran".to_string()));
    // Its limits reached its cgroup: the pod runs under the guaranteed level.
    let cgroups = cgroup_dirs(&f.cgroup_parent);
    assert!(cgroups.iter().any(|d| d.to_string_lossy().contains("/burstable/pod")), "{cgroups:?}");
    assert!(running.conditions.iter().any(|c| c.r#type == "Ready" && c.status == "True"));
    let log = f.dir.path().join(format!("agent/pods/default_web_{uid}/app/0.log"));
    poll("the container logs", Duration::from_secs(10), || async {
        log_lines(&log).contains(&"started".to_string()).then_some(())
    })
    .await;

    // The node told what it did, in Events on the pod.
    let events = Api::<berth_proto::core_v1::Event>::namespaced(&client, "default");
    poll("the pod's events", Duration::from_secs(10), || async {
        let listed = events.list(&Default::default()).await.ok()?;
        let reasons: Vec<String> = listed
            .items
            .into_iter()
            .filter(|e| e.involved_object.as_ref().is_some_and(|o| o.name == "web"))
            .map(|e| e.reason)
            .collect();
        ["Pulled", "Created", "Started"]
            .iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(())
    })
    .await;

    // Deleted: stopped within its grace period, then gone from the API.
    pods.delete("web", &DeleteParams { grace_period_seconds: Some(1), ..Default::default() })
        .await
        .unwrap();
    poll("the pod is removed", Duration::from_secs(30), || async {
        pods.get("web").await.err().filter(|e| e.is_not_found()).map(|_| ())
    })
    .await;
    let mut runtime = f.runtime.clone();
    let left = runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(left.is_empty(), "sandboxes left behind: {left:?}");
    stop_agent.cancel();
    agent.await.unwrap();
}

/// Containers are confined by default (own PID namespace, containerd's
/// capabilities, the RuntimeDefault seccomp profile, no mounts or new
/// namespaces), a privileged one is not, and capability adds and drops,
/// runAsUser and a read-only root reach the container.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_confined_unless_privileged() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let registry = Registry::start();
    let img = image(
        vec![layer(base_layer(), true), layer(change_layer(), true), layer(applets_layer(), false)],
        false,
    );
    registry.push("test/busybox", "secure", &img);
    let mut f = Fixture::start("secure", Some(&registry)).await;
    let name = format!("{}/test/busybox:secure", registry.addr);
    f.image
        .pull_image(cri::PullImageRequest { image: image_spec(&name), ..Default::default() })
        .await
        .unwrap();
    let logs = f.dir.path().join("logs");
    let sandbox_config = cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: "secure".into(),
            uid: "uid-secure".into(),
            ..Default::default()
        }),
        hostname: "secure".into(),
        log_directory: logs.display().to_string(),
        ..Default::default()
    };
    let sandbox_id = f
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(sandbox_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    let runtime_default = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        localhost_ref: String::new(),
    });
    // "All" capabilities are those the runtime (this process) holds.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let held = status.lines().find_map(|l| l.strip_prefix("CapPrm:\t")).unwrap();
    let all_caps = format!("CapEff:\t{held}");
    let escapes = "n=$(ls /proc | grep -c '^[0-9]'); [ $n -lt 10 ] && echo own-pids; \
        mkdir -p /m; mount -t tmpfs t /m 2>/dev/null && echo mounted; \
        unshare -n true 2>/dev/null && echo unshared; \
        grep -E '^(CapEff|Seccomp):' /proc/self/status";
    let cases: Vec<(&str, &str, cri::LinuxContainerSecurityContext, Vec<&str>)> = vec![
        (
            "confined",
            escapes,
            cri::LinuxContainerSecurityContext {
                seccomp: runtime_default.clone(),
                ..Default::default()
            },
            // containerd's default set: 0xa80425fb.
            vec!["own-pids", "CapEff:\t00000000a80425fb", "Seccomp:\t2"],
        ),
        (
            "privileged",
            escapes,
            cri::LinuxContainerSecurityContext {
                privileged: true,
                seccomp: runtime_default.clone(),
                ..Default::default()
            },
            vec!["own-pids", "mounted", "unshared", &all_caps, "Seccomp:\t0"],
        ),
        (
            "caps",
            "grep '^CapEff:' /proc/self/status",
            cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: vec!["NET_ADMIN".into()],
                    drop_capabilities: vec!["ALL".into()],
                    ..Default::default()
                }),
                seccomp: runtime_default.clone(),
                ..Default::default()
            },
            vec!["CapEff:\t0000000000001000"],
        ),
        (
            "user",
            "id -u; touch /x 2>/dev/null && echo wrote; echo end",
            cri::LinuxContainerSecurityContext {
                run_as_user: Some(cri::Int64Value { value: 1234 }),
                readonly_rootfs: true,
                no_new_privs: true,
                seccomp: runtime_default.clone(),
                ..Default::default()
            },
            vec!["1234", "end"],
        ),
    ];
    for (container, script, sc, expected) in cases {
        let mut config = container_config(container, &name, script);
        config.linux =
            Some(cri::LinuxContainerConfig { security_context: Some(sc), ..Default::default() });
        let id = f
            .runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        f.runtime
            .start_container(cri::StartContainerRequest { container_id: id.clone() })
            .await
            .unwrap();
        let status = wait_exited(&f.runtime, &id).await;
        let lines = log_lines(&logs.join(format!("{container}/0.log")));
        let got: Vec<&str> = lines.iter().map(String::as_str).collect();
        assert_eq!((status.exit_code, got), (0, expected), "container {container}");
    }
    f.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sandbox_id.clone() })
        .await
        .unwrap();
    f.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sandbox_id })
        .await
        .unwrap();
}

/// A link of the host's that only this test has; deleted on drop.
struct HostLink(String);

impl HostLink {
    /// A dummy link, or where the kernel has no dummy driver, a veth pair
    /// with both ends on the host (deleting one end deletes both).
    fn unique(name: &str) -> HostLink {
        let add = |args: &[&str]| {
            std::process::Command::new("ip")
                .args(["link", "add", name])
                .args(args)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let peer = format!("{name}p");
        let made = add(&["type", "dummy"]) || add(&["type", "veth", "peer", "name", &peer]);
        assert!(made, "could not add a dummy or veth link {name}");
        HostLink(name.to_string())
    }
}

impl Drop for HostLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// A SysV message queue in the host's IPC namespace; removed on drop.
struct HostQueue(i32);

impl HostQueue {
    fn create() -> HostQueue {
        // SAFETY: plain system call, no pointers.
        let id = unsafe { libc::msgget(libc::IPC_PRIVATE, libc::IPC_CREAT | 0o600) };
        assert!(id >= 0, "msgget: {}", std::io::Error::last_os_error());
        HostQueue(id)
    }
}

impl Drop for HostQueue {
    fn drop(&mut self) {
        // SAFETY: IPC_RMID takes no buffer.
        unsafe { libc::msgctl(self.0, libc::IPC_RMID, std::ptr::null_mut()) };
    }
}

/// The host's links by name with their index, leaving out the veths and
/// bridges other tests running beside this one add and remove.
fn stable_host_links() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir("/sys/class/net").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("veth") || e.path().join("bridge").exists() {
            continue;
        }
        if let Ok(index) = fs::read_to_string(e.path().join("ifindex")) {
            out.insert(name, index.trim().to_string());
        }
    }
    out
}

/// The ports of a bridge; none if it does not exist.
fn bridge_ports(bridge: &str) -> Vec<String> {
    fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

/// A pod sharing the host's network, IPC and PID namespaces sees the host's
/// links, message queues and processes, serves on the host's loopback and
/// keeps the node's hostname; no CNI plugin runs for it (its bridge never
/// gets a port), it survives a restart of the service, and removing it
/// leaves the host's links as they were. A pod of its own beside it sees
/// none of these.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn host_namespaces_are_shared_and_never_get_a_pod_network() {
    if let Some(why) = skip_reason(true) {
        println!("SKIPPED: {why}");
        return;
    }
    let cni_dirs: Vec<PathBuf> = vec!["/usr/lib/cni".into(), "/opt/cni/bin".into()];
    if !cni_dirs.iter().any(|d| d.join("bridge").exists()) {
        println!("SKIPPED: needs the CNI plugins (Debian package containernetworking-plugins)");
        return;
    }
    let registry = Registry::start();
    let img = image(
        vec![layer(base_layer(), true), layer(change_layer(), true), layer(applets_layer(), false)],
        false,
    );
    registry.push("test/busybox", "hostns", &img);
    let tag = std::process::id() % 100_000;
    let dummy = HostLink::unique(&format!("bhd{tag}"));
    let queue = HostQueue::create();
    let bridge = format!("bhb{tag}");
    let _bridge = HostLink(bridge.clone());
    let ipam = tempfile::tempdir().unwrap();
    let network =
        CniNetwork::bridge("hostns-test", &bridge, "10.213.11.0/24", ipam.path(), cni_dirs);
    let links_before = stable_host_links();
    assert!(links_before.contains_key(&dummy.0));

    let mut f = Fixture::start_with("hostns", Some(&registry), Some(network)).await;
    let name = format!("{}/test/busybox:hostns", registry.addr);
    f.image
        .pull_image(cri::PullImageRequest { image: image_spec(&name), ..Default::default() })
        .await
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let host_init = fs::read_to_string("/proc/1/comm").unwrap().trim().to_string();
    let me = std::process::id();
    let node_name = nix::unistd::gethostname().unwrap().to_string_lossy().into_owned();
    // Prints what it sees of the host, then (with `serve`) answers on `port`.
    let script = |serve: bool| {
        let mut s = format!(
            "grep -q '{link}:' /proc/net/dev && echo sees-link; \
             awk '$2 == {queue}' /proc/sysvipc/msg | grep -q . && echo sees-queue; \
             [ \"$(cat /proc/1/comm)\" = '{host_init}' ] && [ -d /proc/{me} ] && echo host-pids; \
             [ \"$(hostname)\" = '{node_name}' ] && [ \"$(cat /etc/hostname)\" = '{node_name}' ] \
             && echo node-name; echo checked",
            link = dummy.0,
            queue = queue.0,
        );
        if serve {
            s.push_str(&format!("; while true; do echo hostnet-ok | nc -l -p {port}; done"));
        }
        s
    };
    let logs = f.dir.path().join("logs");
    let node = cri::NamespaceMode::Node as i32;
    let sandbox_config = |pod: &str, options: cri::NamespaceOption| cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: pod.into(),
            uid: format!("uid-{pod}"),
            ..Default::default()
        }),
        log_directory: logs.join(pod).display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(options),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let host_options =
        cri::NamespaceOption { network: node, ipc: node, pid: node, ..Default::default() };
    let host_config = sandbox_config("host", host_options.clone());
    let host_sandbox = f
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(host_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    // No CNI ADD ran: the network's bridge does not even exist.
    assert!(bridge_ports(&bridge).is_empty());
    assert!(!Path::new(&format!("/sys/class/net/{bridge}")).exists());
    let status = f
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: host_sandbox.clone(),
            verbose: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status.as_ref().unwrap().network.as_ref().unwrap().ip, "");
    let info: serde_json::Value = serde_json::from_str(&status.info["info"]).unwrap();
    assert!(info["netns"].is_null() && info["ipcns"].is_null(), "{info}");
    let holder = verbose_pid(&status.info);
    assert_eq!(ns_of(holder, "net"), ns_of(std::process::id() as i64, "net"));
    assert_eq!(ns_of(holder, "ipc"), ns_of(std::process::id() as i64, "ipc"));
    assert_ne!(ns_of(holder, "uts"), ns_of(std::process::id() as i64, "uts"));

    let mut config = container_config("probe", &name, &script(true));
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            namespace_options: Some(host_options),
            ..Default::default()
        }),
        ..Default::default()
    });
    let probe = f
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: host_sandbox.clone(),
            config: Some(config),
            sandbox_config: Some(host_config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    f.runtime
        .start_container(cri::StartContainerRequest { container_id: probe.clone() })
        .await
        .unwrap();
    let host_log = logs.join("host/probe/0.log");
    let seen = poll("the host pod's checks", Duration::from_secs(20), || async {
        let lines = log_lines(&host_log);
        lines.contains(&"checked".to_string()).then_some(lines)
    })
    .await;
    assert_eq!(seen, ["sees-link", "sees-queue", "host-pids", "node-name", "checked"]);
    let answer = || async {
        use tokio::io::AsyncReadExt;
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let mut got = String::new();
        conn.read_to_string(&mut got).await.ok()?;
        (got.trim() == "hostnet-ok").then_some(())
    };
    poll("the host pod answers on the host's loopback", Duration::from_secs(20), answer).await;

    // A pod of its own sees none of the host's, and does get a bridge port.
    let own_config = cri::PodSandboxConfig {
        hostname: "own".into(),
        ..sandbox_config("own", cri::NamespaceOption::default())
    };
    let own_sandbox = f
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(own_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .pod_sandbox_id;
    assert_eq!(bridge_ports(&bridge).len(), 1);
    let own = f
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: own_sandbox.clone(),
            config: Some(container_config("probe", &name, &script(false))),
            sandbox_config: Some(own_config),
        })
        .await
        .unwrap()
        .into_inner()
        .container_id;
    f.runtime.start_container(cri::StartContainerRequest { container_id: own }).await.unwrap();
    let own_log = logs.join("own/probe/0.log");
    let seen = poll("the own pod's checks", Duration::from_secs(20), || async {
        let lines = log_lines(&own_log);
        lines.contains(&"checked".to_string()).then_some(lines)
    })
    .await;
    assert_eq!(seen, ["checked"]);
    f.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: own_sandbox })
        .await
        .unwrap();
    assert!(bridge_ports(&bridge).is_empty());

    // A restarted service finds the host pod as it was.
    f.restart().await;
    let status = f
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: host_sandbox.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.state, cri::PodSandboxState::SandboxReady as i32);
    poll("the adopted host pod answers", Duration::from_secs(20), answer).await;

    // Stopped and removed: no CNI DEL touched the host, whose links are
    // all still there, and the bridge never got a port.
    f.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: host_sandbox.clone() })
        .await
        .unwrap();
    f.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: host_sandbox })
        .await
        .unwrap();
    assert!(bridge_ports(&bridge).is_empty());
    let links_after = stable_host_links();
    for (link, index) in &links_before {
        assert_eq!(links_after.get(link), Some(index), "host link {link} changed");
    }
    let left = f
        .runtime
        .list_pod_sandbox(cri::ListPodSandboxRequest::default())
        .await
        .unwrap()
        .into_inner()
        .items;
    assert!(left.is_empty(), "sandboxes left: {left:?}");
}
