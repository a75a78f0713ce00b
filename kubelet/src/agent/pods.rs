//! Runs the pods bound to this node through CRI: one reconcile per pod key
//! (from an informer on spec.nodeName, and a periodic resync that notices
//! container exits), which brings what the runtime has in line with the
//! pod — a sandbox, its containers started (images pulled first), exited
//! containers restarted as the restart policy says with Kubernetes'
//! back-off, and a deleted pod stopped within its grace period, then
//! confirmed to the API — and reports the pod's status when it changed.

use berth_client::{
    Api, Cache, Change, Client, DeleteParams, EventRecorder, Informer, InformerParams, RateLimit,
    WorkQueue,
};
use berth_proto::core_v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodCondition, PodStatus,
};
use berth_proto::cri_v1 as cri;
use berth_proto::Time;
use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const UID: &str = "io.kubernetes.pod.uid";
const NAME: &str = "io.kubernetes.pod.name";
const NAMESPACE: &str = "io.kubernetes.pod.namespace";
const CONTAINER: &str = "io.kubernetes.container.name";
/// The node whose agent made a sandbox: housekeeping removes only its own.
const NODE: &str = "io.berth.node.name";

/// Kubernetes' crash back-off: 10 s, doubling, at most 5 minutes.
const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long before it exited restarts without
/// back-off (Kubernetes forgets a back-off after twice its maximum).
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How often running pods are looked at again for exits.
const RESYNC: Duration = Duration::from_secs(1);
/// How often sandboxes and volumes of pods gone from the API are looked
/// for (also once at start, after a restart of the agent).
const HOUSEKEEPING: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("the runtime: {0}")]
    Runtime(#[from] tonic::Status),
    #[error("the API: {0}")]
    Api(#[from] berth_client::Error),
    #[error("{0}")]
    Volume(#[from] super::volumes::VolumeError),
    #[error("devices: {0}")]
    Devices(#[from] crate::devices::DevicesError),
}

/// The pod's sandbox, as its containers are created in it.
#[derive(Clone, Copy)]
struct SandboxRef<'a> {
    id: &'a str,
    config: &'a cri::PodSandboxConfig,
    labels: &'a BTreeMap<String, String>,
    volumes: &'a super::volumes::PodVolumes,
}

/// The CRI runtime, reached over its unix socket.
#[derive(Clone)]
struct Runtime {
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

pub(super) struct PodWorkers {
    node: String,
    node_ip: String,
    logs: PathBuf,
    client: Client,
    cri: Runtime,
    cache: Cache<Pod>,
    queue: WorkQueue<String>,
    /// Events on the pods: pulled, created, started, back-off, killing.
    events: EventRecorder,
    /// Uids of the pods seen, so a pod gone from the API is torn down.
    known: Mutex<HashMap<String, String>>,
    /// Status last written per pod, to write only changes.
    written: Mutex<HashMap<String, PodStatus>>,
    /// Liveness, readiness and startup probe workers.
    probes: super::probes::Prober,
    /// Image pulls and their back-off.
    pulls: super::pulls::Puller,
    /// emptyDir and hostPath volumes.
    volumes: super::volumes::Volumes,
    /// Device plugins' devices, allocated at admission.
    devices: Option<crate::devices::DeviceManager>,
    /// The node's seccomp default and profile directory.
    security: super::security::SecurityDefaults,
}

impl PodWorkers {
    /// Connects to the runtime and starts following the node's pods.
    pub(super) async fn start(
        client: &Client,
        config: &super::AgentConfig,
        socket: &std::path::Path,
        devices: Option<crate::devices::DeviceManager>,
        stop: CancellationToken,
    ) -> Result<(Arc<PodWorkers>, impl std::future::Future<Output = ()>), tonic::transport::Error>
    {
        let (node, node_ip) = (config.node_name.as_str(), config.node_ip.as_str());
        let logs = config.root_dir.join("pods");
        let security = super::security::SecurityDefaults {
            seccomp_default: config.seccomp_default,
            seccomp_root: super::security::seccomp_root(&config.root_dir),
        };
        let channel =
            tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))?
                .connect()
                .await?;
        let cri = Runtime {
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        };
        let params = InformerParams {
            field_selector: format!("spec.nodeName={node}"),
            resync: Some(RESYNC),
            ..Default::default()
        };
        let mut informer = Informer::new(Api::<Pod>::all(client), params);
        let queue = WorkQueue::new("pods", RateLimit::default());
        let on_change = queue.clone();
        informer.on_change(move |change: &Change<Pod>| {
            on_change.add(berth_client::key(change.object().as_ref()))
        });
        let (events, writer) = EventRecorder::new(client, node);
        let events = events.for_component("kubelet");
        let probes =
            super::probes::Prober::new(cri.runtime.clone(), events.clone(), queue.clone(), node_ip);
        let pulls = super::pulls::Puller::new(cri.images.clone(), events.clone());
        // Beside the pods' log directories, in the agent's root.
        let volumes = super::volumes::Volumes::new(
            logs.parent().map_or_else(|| logs.join("volumes"), |root| root.join("volumes")),
        );
        let workers = Arc::new(PodWorkers {
            node: node.into(),
            node_ip: node_ip.into(),
            logs,
            client: client.clone(),
            cri,
            cache: informer.cache(),
            queue,
            events,
            known: Default::default(),
            written: Default::default(),
            probes,
            pulls,
            volumes,
            devices,
            security,
        });
        let informing = futures::future::join(informer.run(stop.clone()), writer.run(stop.clone()));
        Ok((workers, async move {
            informing.await;
        }))
    }

    /// Reconciles pods with `n` workers until `stop`.
    pub(super) async fn run(self: Arc<Self>, n: usize, stop: CancellationToken) {
        self.cache.wait_synced().await;
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..n.max(1) {
            let me = self.clone();
            workers.spawn(async move {
                while let Some(key) = me.queue.get().await {
                    if let Err(e) = me.sync(&key).await {
                        tracing::warn!(pod = %key, error = %e, "pod sync failed; retrying");
                        me.queue.add_rate_limited(key.clone());
                    } else {
                        me.queue.forget(&key);
                    }
                    me.queue.done(&key);
                }
            });
        }
        // The first round runs at once: a restarted agent cleans up what
        // belongs to pods deleted while it was down.
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = housekeeping.tick() => {
                    if let Err(e) = self.housekeeping().await {
                        tracing::warn!(error = %e, "housekeeping failed; retrying");
                    }
                }
            }
        }
        self.queue.shut_down();
        while workers.join_next().await.is_some() {}
        self.probes.stop_all();
    }

    /// Removes the sandboxes (with their containers) and volumes of pods
    /// the API no longer has.
    async fn housekeeping(&self) -> Result<(), SyncError> {
        let live: std::collections::HashSet<String> = self
            .cache
            .list()
            .iter()
            .filter_map(|p| p.metadata.as_ref().map(|m| m.uid.clone()))
            .collect();
        let sandboxes = self
            .cri
            .runtime
            .clone()
            .list_pod_sandbox(cri::ListPodSandboxRequest::default())
            .await?
            .into_inner()
            .items;
        let mut orphans: Vec<String> = sandboxes
            .iter()
            .filter(|s| s.labels.get(NODE) == Some(&self.node))
            .filter_map(|s| s.labels.get(UID))
            .filter(|uid| !live.contains(*uid))
            .cloned()
            .collect();
        orphans.extend(self.volumes.pods().into_iter().filter(|uid| !live.contains(uid)));
        orphans.sort();
        orphans.dedup();
        if let Some(devices) = &self.devices {
            devices.retain_pods(&live);
        }
        for uid in orphans {
            tracing::info!(pod = %uid, "removing what is left of a pod no longer bound here");
            self.teardown(&uid, 0).await?;
        }
        Ok(())
    }

    async fn sync(&self, key: &str) -> Result<(), SyncError> {
        let Some(pod) = self.cache.get(key) else {
            // Gone from the API: whatever still runs for it goes.
            let uid = self.known.lock().expect("no panic while noting uids").remove(key);
            if let Some(uid) = uid {
                self.teardown(&uid, 0).await?;
            }
            return Ok(());
        };
        let meta = pod.metadata.clone().unwrap_or_default();
        self.known
            .lock()
            .expect("no panic while noting uids")
            .insert(key.to_string(), meta.uid.clone());
        if meta.deletion_timestamp.is_some() {
            let grace = meta.deletion_grace_period_seconds.unwrap_or(30);
            self.events.normal(
                pod.as_ref(),
                "Killing",
                format!("Stopping the pod's containers (grace {grace} s)"),
            );
            self.teardown(&meta.uid, grace).await?;
            // The node confirms: the API may now remove the pod.
            let pods = Api::<Pod>::namespaced(self.pods_client(), &meta.namespace);
            let params = DeleteParams { grace_period_seconds: Some(0), ..Default::default() };
            match pods.delete(&meta.name, &params).await {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        if !self.admit_sysctls(&pod).await? || !self.admit_devices(&pod).await? {
            return Ok(());
        }
        let status = self.run_pod(&pod).await?;
        self.report(&pod, status).await
    }

    /// Stops and removes every pod sandbox this agent started, all at
    /// once and with a short grace period: the whole node is going away.
    pub(super) async fn stop_all(&self) {
        let mut runtime = self.cri.runtime.clone();
        let listed = runtime.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await;
        let Ok(listed) = listed else { return };
        let uids: Vec<String> =
            listed.into_inner().items.iter().filter_map(|s| s.labels.get(UID).cloned()).collect();
        let stops = uids.iter().map(|uid| async move {
            if let Err(e) = self.teardown(uid, 1).await {
                tracing::warn!(pod = %uid, error = %e, "could not stop a pod on exit");
            }
        });
        futures::future::join_all(stops).await;
    }

    fn pods_client(&self) -> &Client {
        &self.client
    }

    /// Stops every container of the pod (SIGTERM, `grace` seconds, then
    /// SIGKILL) and removes its sandboxes.
    async fn teardown(&self, uid: &str, grace: i64) -> Result<(), SyncError> {
        self.probes.forget(uid);
        self.pulls.forget(uid);
        let mut runtime = self.cri.runtime.clone();
        let sandboxes = runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: [(UID.to_string(), uid.to_string())].into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        for sandbox in sandboxes {
            let containers = runtime
                .list_containers(cri::ListContainersRequest {
                    filter: Some(cri::ContainerFilter {
                        pod_sandbox_id: sandbox.id.clone(),
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner()
                .containers;
            for c in
                containers.iter().filter(|c| c.state() == cri::ContainerState::ContainerRunning)
            {
                runtime
                    .stop_container(cri::StopContainerRequest {
                        container_id: c.id.clone(),
                        timeout: grace.max(0),
                    })
                    .await?;
            }
            runtime
                .stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sandbox.id.clone() })
                .await?;
            runtime
                .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: sandbox.id.clone(),
                })
                .await?;
        }
        // Last, once no container uses them.
        self.volumes.remove(uid)?;
        if let Some(devices) = &self.devices {
            devices.release(uid);
        }
        Ok(())
    }

    /// Brings the runtime in line with the pod; returns its status.
    async fn run_pod(&self, pod: &Pod) -> Result<PodStatus, SyncError> {
        let meta = pod.metadata.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let mut runtime = self.cri.runtime.clone();
        let labels: BTreeMap<String, String> = [
            (UID.to_string(), meta.uid.clone()),
            (NAME.to_string(), meta.name.clone()),
            (NAMESPACE.to_string(), meta.namespace.clone()),
            (NODE.to_string(), self.node.clone()),
        ]
        .into();
        let sandbox_config = cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: meta.name.clone(),
                uid: meta.uid.clone(),
                namespace: meta.namespace.clone(),
                attempt: 0,
            }),
            // A hostNetwork pod has the node's name, its spec.hostname
            // ignored as Kubernetes ignores it (the runtime gives every pod
            // a UTS namespace of its own, named after the node here).
            hostname: if spec.host_network {
                String::new()
            } else if !spec.hostname.is_empty() {
                spec.hostname.clone()
            } else {
                meta.name.clone()
            },
            log_directory: self
                .logs
                .join(format!("{}_{}_{}", meta.namespace, meta.name, meta.uid))
                .display()
                .to_string(),
            labels: labels.clone(),
            linux: Some({
                let (security, sysctls) = super::security::sandbox(&spec, &self.security);
                cri::LinuxPodSandboxConfig {
                    cgroup_parent: super::resources::qos_class(pod).to_lowercase(),
                    security_context: Some(security),
                    sysctls,
                    ..Default::default()
                }
            }),
            ..Default::default()
        };
        let volumes = self.volumes.prepare(pod).inspect_err(|e| {
            self.events.warning(pod, "FailedMount", e.to_string());
        })?;
        let sandboxes = runtime
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: [(UID.to_string(), meta.uid.clone())].into(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .items;
        let sandbox =
            match sandboxes.into_iter().find(|s| s.state() == cri::PodSandboxState::SandboxReady) {
                Some(s) => s.id,
                None => {
                    runtime
                        .run_pod_sandbox(cri::RunPodSandboxRequest {
                            config: Some(sandbox_config.clone()),
                            runtime_handler: String::new(),
                        })
                        .await?
                        .into_inner()
                        .pod_sandbox_id
                }
            };
        let sandbox_ip = runtime
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox.clone(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        // A hostNetwork pod has no address of its own: its IP is the node's
        // (Kubernetes reports status.podIP = status.hostIP).
        let pod_ip = if spec.host_network { self.node_ip.clone() } else { sandbox_ip };
        let existing = runtime
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sandbox.clone(),
                    ..Default::default()
                }),
            })
            .await?
            .into_inner()
            .containers;
        let here = SandboxRef {
            id: &sandbox,
            config: &sandbox_config,
            labels: &labels,
            volumes: &volumes,
        };
        // Init containers run one after another, each to a successful exit;
        // the pod's containers start only once all of them have.
        let init_policy = if spec.restart_policy == "Never" { "Never" } else { "OnFailure" };
        let mut init_statuses = Vec::new();
        let mut initialized = true;
        let mut init_failed = false;
        for c in &spec.init_containers {
            if !initialized {
                init_statuses.push(self.container_status(c, None, 0, Some("PodInitializing")));
                continue;
            }
            let status = self.ensure(pod, c, &existing, init_policy, &here).await?;
            let exit =
                status.state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| t.exit_code);
            if exit != Some(0) {
                initialized = false;
                init_failed = exit.is_some() && init_policy == "Never";
            }
            init_statuses.push(status);
        }
        let mut statuses = Vec::new();
        for c in &spec.containers {
            statuses.push(if initialized {
                self.ensure(pod, c, &existing, &spec.restart_policy, &here).await?
            } else {
                self.container_status(c, None, 0, Some("PodInitializing"))
            });
        }
        self.probes.apply(pod, &pod_ip, &mut statuses);
        let mut status = self.pod_status(pod, statuses, initialized);
        if init_failed {
            status.phase = "Failed".into();
        }
        status.init_container_statuses = init_statuses;
        status.pod_ip = pod_ip;
        Ok(status)
    }

    /// Brings one container in line with its spec: created and started if
    /// it never was, restarted after an exit as `restart_policy` says (with
    /// back-off), left alone otherwise; returns its status.
    async fn ensure(
        &self,
        pod: &Pod,
        c: &berth_proto::core_v1::Container,
        existing: &[cri::Container],
        restart_policy: &str,
        sandbox: &SandboxRef<'_>,
    ) -> Result<ContainerStatus, SyncError> {
        let SandboxRef { id: sandbox, config: sandbox_config, labels, volumes } = *sandbox;
        let mut runtime = self.cri.runtime.clone();
        let mut attempts: Vec<&cri::Container> =
            existing.iter().filter(|x| x.labels.get(CONTAINER) == Some(&c.name)).collect();
        attempts.sort_by_key(|x| x.created_at);
        let restarts = attempts.len().saturating_sub(1) as i32;
        let latest = match attempts.last() {
            Some(l) => Some(
                runtime
                    .container_status(cri::ContainerStatusRequest {
                        container_id: l.id.clone(),
                        verbose: false,
                    })
                    .await?
                    .into_inner()
                    .status
                    .unwrap_or_default(),
            ),
            None => None,
        };
        let restart = match &latest {
            None => true,
            Some(s) if s.state() == cri::ContainerState::ContainerExited => {
                let wanted = match restart_policy {
                    "Never" => false,
                    "OnFailure" => s.exit_code != 0,
                    _ => true,
                };
                // As Kubernetes: the first restart at once, then a back-off
                // since the last exit, doubling per restart; none after a
                // long run.
                let ran = Duration::from_nanos((s.finished_at - s.started_at).max(0) as u64);
                let wait = if restarts == 0 || ran >= BACKOFF_RESET {
                    Duration::ZERO
                } else {
                    let doublings = (restarts - 1).clamp(0, 5) as u32;
                    BACKOFF_START.saturating_mul(1 << doublings).min(BACKOFF_MAX)
                };
                let finished = Duration::from_nanos(s.finished_at.max(0) as u64);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                if wanted && now < finished + wait {
                    self.events.warning(
                        pod,
                        "BackOff",
                        format!("Back-off restarting failed container {}", c.name),
                    );
                    return Ok(self.container_status(
                        c,
                        latest.as_ref(),
                        restarts,
                        Some("CrashLoopBackOff"),
                    ));
                }
                wanted
            }
            Some(s) if s.state() == cri::ContainerState::ContainerCreated => {
                runtime
                    .start_container(cri::StartContainerRequest { container_id: s.id.clone() })
                    .await?;
                false
            }
            Some(_) => false,
        };
        if !restart {
            return Ok(self.container_status(c, latest.as_ref(), restarts, None));
        }
        // The container is made from the image's id, as Kubernetes'
        // kubelet does: a name may point elsewhere by the time of use.
        let image_ref = match self.pulls.image(pod, c).await? {
            Ok(id) => id,
            Err(waiting) => {
                let mut status =
                    self.container_status(c, latest.as_ref(), restarts, Some(waiting.reason));
                if let Some(w) = status.state.as_mut().and_then(|s| s.waiting.as_mut()) {
                    w.message = waiting.message;
                }
                return Ok(status);
            }
        };
        if let Err(message) = self.verify_run_as_non_root(pod, c, &image_ref).await? {
            self.events.warning(pod, "Failed", format!("Error: {message}"));
            let mut status = self.container_status(
                c,
                latest.as_ref(),
                restarts,
                Some("CreateContainerConfigError"),
            );
            if let Some(w) = status.state.as_mut().and_then(|s| s.waiting.as_mut()) {
                w.message = message;
            }
            return Ok(status);
        }
        let image = Some(cri::ImageSpec { image: image_ref, ..Default::default() });
        let attempt = attempts.len() as u32;
        let mut container_labels = labels.clone();
        container_labels.insert(CONTAINER.into(), c.name.clone());
        let mut config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt }),
            image,
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone(),
            envs: c
                .env
                .iter()
                .map(|e| cri::KeyValue { key: e.name.clone(), value: e.value.clone() })
                .collect(),
            labels: container_labels,
            log_path: format!("{}/{attempt}.log", c.name),
            stdin: c.stdin,
            stdin_once: c.stdin_once,
            tty: c.tty,
            mounts: self.volumes.mounts(volumes, c)?,
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(super::resources::container(c)),
                security_context: Some(super::security::container(
                    &pod.spec.clone().unwrap_or_default(),
                    c,
                    &self.security,
                )),
            }),
            ..Default::default()
        };
        if let Some(devices) = &self.devices {
            let uid = pod.metadata.as_ref().map(|m| m.uid.as_str()).unwrap_or_default();
            devices.prepare(uid, &c.name, &mut config).await?;
        }
        let id = runtime
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.to_string(),
                config: Some(config),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await?
            .into_inner()
            .container_id;
        self.events.normal(pod, "Created", format!("Created container {}", c.name));
        runtime.start_container(cri::StartContainerRequest { container_id: id.clone() }).await?;
        self.events.normal(pod, "Started", format!("Started container {}", c.name));
        let started = runtime
            .container_status(cri::ContainerStatusRequest { container_id: id, verbose: false })
            .await?
            .into_inner()
            .status;
        Ok(self.container_status(c, started.as_ref(), attempts.len() as i32, None))
    }

    /// The runAsNonRoot check: Ok(Err(message)) when the container would
    /// run as root; the image's user comes from the runtime.
    async fn verify_run_as_non_root(
        &self,
        pod: &Pod,
        c: &berth_proto::core_v1::Container,
        image_ref: &str,
    ) -> Result<Result<(), String>, SyncError> {
        let first = super::security::verify_run_as_non_root(pod, c, None);
        if first.is_ok() {
            return Ok(first);
        }
        // Only the image's user can settle it now.
        let image = self
            .cri
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec { image: image_ref.into(), ..Default::default() }),
                verbose: false,
            })
            .await?
            .into_inner()
            .image;
        Ok(super::security::verify_run_as_non_root(pod, c, image.as_ref()))
    }

    /// Sysctl admission, before a pod first runs: a pod that sets a sysctl
    /// outside Kubernetes' safe set fails with SysctlForbidden.
    async fn admit_sysctls(&self, pod: &Pod) -> Result<bool, SyncError> {
        const REASON: &str = "SysctlForbidden";
        let status = pod.status.clone().unwrap_or_default();
        if !matches!(status.phase.as_str(), "" | "Pending") {
            return Ok(status.reason != REASON);
        }
        let forbidden = super::security::forbidden_sysctls(&pod.spec.clone().unwrap_or_default());
        let Some(first) = forbidden.first() else { return Ok(true) };
        let message = format!("forbidden sysctl: {first:?} not allowlisted");
        self.events.warning(pod, REASON, message.clone());
        let failed = PodStatus {
            phase: "Failed".into(),
            reason: REASON.into(),
            message,
            host_ip: self.node_ip.clone(),
            start_time: status.start_time.or(Some(Time::now())),
            qos_class: super::resources::qos_class(pod).into(),
            conditions: status.conditions,
            ..Default::default()
        };
        self.report(pod, failed).await?;
        Ok(false)
    }

    /// Device admission, before a pod first runs: it gets its devices
    /// from the plugins or fails with UnexpectedAdmissionError, as in
    /// Kubernetes; a pod that ended gives its devices back. False when the
    /// pod must not run.
    async fn admit_devices(&self, pod: &Pod) -> Result<bool, SyncError> {
        const REASON: &str = "UnexpectedAdmissionError";
        let Some(devices) = &self.devices else { return Ok(true) };
        let status = pod.status.clone().unwrap_or_default();
        match status.phase.as_str() {
            "Failed" if status.reason == REASON => return Ok(false),
            "Succeeded" | "Failed" => {
                devices.release(&pod.metadata.clone().unwrap_or_default().uid);
                return Ok(true);
            }
            "" | "Pending" => {}
            _ => return Ok(true),
        }
        let e = match devices.admit(pod).await {
            Ok(()) => return Ok(true),
            // The plugin may be back soon (a restarted agent): retried.
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => e,
        };
        let message = format!("Allocate failed due to {e}, which is unexpected");
        tracing::warn!(pod = %berth_client::key(pod), error = %e, "pod failed device admission");
        metrics::counter!("berth_kubelet_device_admission_failures_total").increment(1);
        self.events.warning(pod, REASON, message.clone());
        let failed = PodStatus {
            phase: "Failed".into(),
            reason: REASON.into(),
            message,
            host_ip: self.node_ip.clone(),
            start_time: status.start_time.or(Some(Time::now())),
            qos_class: super::resources::qos_class(pod).into(),
            conditions: status.conditions,
            ..Default::default()
        };
        self.report(pod, failed).await?;
        Ok(false)
    }

    fn container_status(
        &self,
        c: &berth_proto::core_v1::Container,
        s: Option<&cri::ContainerStatus>,
        restarts: i32,
        waiting: Option<&str>,
    ) -> ContainerStatus {
        let time = |nanos: i64| {
            Some(Time::from_unix(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32))
        };
        let state = match (s, waiting) {
            (_, Some(reason)) => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: reason.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            (Some(s), None) if s.state() == cri::ContainerState::ContainerRunning => {
                ContainerState {
                    running: Some(ContainerStateRunning { started_at: time(s.started_at) }),
                    ..Default::default()
                }
            }
            (Some(s), None) if s.state() == cri::ContainerState::ContainerExited => {
                ContainerState {
                    terminated: Some(ContainerStateTerminated {
                        exit_code: s.exit_code,
                        reason: if s.reason.is_empty() {
                            if s.exit_code == 0 {
                                "Completed".into()
                            } else {
                                "Error".into()
                            }
                        } else {
                            s.reason.clone()
                        },
                        started_at: time(s.started_at),
                        finished_at: time(s.finished_at),
                        container_id: format!("berth://{}", s.id),
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            }
            _ => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: "ContainerCreating".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        let running = state.running.is_some();
        ContainerStatus {
            name: c.name.clone(),
            ready: running,
            started: Some(running),
            restart_count: restarts,
            image: c.image.clone(),
            image_id: s.map(|s| s.image_ref.clone()).unwrap_or_default(),
            container_id: s.map(|s| format!("berth://{}", s.id)).unwrap_or_default(),
            state: Some(state),
            ..Default::default()
        }
    }

    fn pod_status(
        &self,
        pod: &Pod,
        containers: Vec<ContainerStatus>,
        initialized: bool,
    ) -> PodStatus {
        let policy = pod.spec.as_ref().map_or("Always", |s| s.restart_policy.as_str());
        let state = |c: &ContainerStatus| c.state.clone().unwrap_or_default();
        // Running, and passing its readiness probe if it has one.
        let all_ready = !containers.is_empty() && containers.iter().all(|c| c.ready);
        let all_done =
            !containers.is_empty() && containers.iter().all(|c| state(c).terminated.is_some());
        let all_ok =
            containers.iter().all(|c| state(c).terminated.is_some_and(|t| t.exit_code == 0));
        let phase = if !initialized {
            "Pending"
        } else if all_done && policy != "Always" {
            if all_ok {
                "Succeeded"
            } else if policy == "Never" {
                "Failed"
            } else {
                "Running"
            }
        } else if containers
            .iter()
            .any(|c| state(c).running.is_some() || state(c).terminated.is_some())
        {
            "Running"
        } else {
            "Pending"
        };
        let previous = pod.status.clone().unwrap_or_default();
        let now = Time::now();
        let condition = |kind: &str, ok: bool| {
            let status = if ok { "True" } else { "False" };
            let since = previous
                .conditions
                .iter()
                .find(|c| c.r#type == kind && c.status == status)
                .and_then(|c| c.last_transition_time)
                .unwrap_or(now);
            PodCondition {
                r#type: kind.into(),
                status: status.into(),
                last_transition_time: Some(since),
                ..Default::default()
            }
        };
        let mut conditions: Vec<PodCondition> =
            previous.conditions.iter().filter(|c| c.r#type == "PodScheduled").cloned().collect();
        conditions.push(condition("Initialized", initialized));
        conditions.push(condition("ContainersReady", all_ready));
        conditions.push(condition("Ready", all_ready));
        PodStatus {
            phase: phase.into(),
            conditions,
            host_ip: self.node_ip.clone(),
            start_time: previous.start_time.or(Some(now)),
            container_statuses: containers,
            qos_class: super::resources::qos_class(pod).into(),
            ..Default::default()
        }
    }

    /// Writes the status if it differs from the last one written (times
    /// aside).
    async fn report(&self, pod: &Pod, status: PodStatus) -> Result<(), SyncError> {
        let key = berth_client::key(pod);
        let unchanged =
            self.written.lock().expect("no panic while noting statuses").get(&key) == Some(&status);
        if unchanged && pod.status.as_ref().is_some_and(|s| s.phase == status.phase) {
            return Ok(());
        }
        let mut updated = pod.clone();
        updated.status = Some(status.clone());
        let meta = pod.metadata.clone().unwrap_or_default();
        match Api::<Pod>::namespaced(self.pods_client(), &meta.namespace)
            .update_status(&updated)
            .await
        {
            Ok(_) => {
                self.written.lock().expect("no panic while noting statuses").insert(key, status);
                Ok(())
            }
            // A newer version will come through the informer.
            Err(e) if e.is_conflict() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
