//! The runtime behind the CRI services: sandboxes and containers in memory,
//! mirrored to disk after every change (see [`super::state`]), run with the
//! executor on rootfs from the image store.
//!
//! Blocking work (fork, mounts, waiting for processes) runs on tokio's
//! blocking pool. Each running container has an exit watcher task owned by
//! the runtime; [`Runtime::shutdown`] stops them all.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_proto::cri_v1 as cri;
use nix::sys::signal::Signal;
use oci_spec::runtime::{ContainerState, Process, Spec};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::attach::{ContainerIo, Wiring};
use super::cni::PodNetns;
use super::container::{self as proc, Exit};
use super::error::{CriError, Result};
use super::sandbox::{self, Holder};
use super::spec::{self, SpecInput};
use super::state::{
    self, check_id, now_nanos, ContainerPhase, ContainerRecord, SandboxPhase, SandboxRecord,
};
use crate::executor::{self, CreateOptions, Stdio};
use crate::image::ImageStore;

/// How long StopContainer waits for SIGKILL to take effect.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the runtime service needs.
#[derive(Clone)]
pub struct RuntimeConfig {
    /// Where sandboxes, containers, bundles and executor state live.
    pub root: PathBuf,
    /// The unix socket the CRI services listen on.
    pub socket: PathBuf,
    pub images: ImageStore,
    /// The cgroup (relative to the hierarchy root) all pods go under, e.g.
    /// `/berth`; a pod's is `<parent>/<qos>/pod<id>`.
    pub cgroup_parent: PathBuf,
    /// The pods' network; None leaves them with loopback only.
    pub network: Option<super::CniNetwork>,
}

struct Sandbox {
    record: SandboxRecord,
    config: cri::PodSandboxConfig,
}

/// A container's record and config, changed together under one lock.
struct ContainerData {
    record: ContainerRecord,
    config: cri::ContainerConfig,
}

struct ContainerEntry {
    id: String,
    data: Mutex<ContainerData>,
    /// The executor's handle; it owns the log pump, so it lives as long as
    /// the container. None after a restart until first needed.
    process: Mutex<Option<executor::Container>>,
    /// Flips to true once the exit is recorded.
    exited: watch::Sender<bool>,
    /// The container's own standard streams, for attach; None for one
    /// this runtime did not create (it was restarted) or without a log.
    io: Option<Arc<ContainerIo>>,
}

impl ContainerEntry {
    fn data(&self) -> MutexGuard<'_, ContainerData> {
        self.data.lock().expect("container data lock is never poisoned")
    }
}

#[derive(Default)]
struct Objects {
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, Arc<ContainerEntry>>,
}

pub struct Runtime {
    root: PathBuf,
    images: ImageStore,
    cgroup_parent: PathBuf,
    network: Option<super::CniNetwork>,
    objects: Mutex<Objects>,
    watchers: Mutex<JoinSet<()>>,
    stop: CancellationToken,
}

/// A blocking closure on tokio's blocking pool, its panic turned into an error.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| CriError::Task(format!("runtime: {e}")))?
}

/// `path` as a relative cgroup path, refusing `..`.
fn relative_cgroup(path: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(CriError::InvalidArgument(format!("cgroup_parent {path:?}"))),
        }
    }
    Ok(out)
}

impl Runtime {
    /// Opens the runtime at `config.root`, finding the sandboxes and
    /// containers a previous run left and watching the running ones.
    pub async fn open(config: &RuntimeConfig) -> Result<Arc<Runtime>> {
        for d in ["sandboxes", "containers", "executor"] {
            let dir = config.root.join(d);
            fs::create_dir_all(&dir).map_err(CriError::io(&dir))?;
        }
        let rt = Arc::new(Runtime {
            root: config.root.clone(),
            images: config.images.clone(),
            cgroup_parent: config.cgroup_parent.clone(),
            network: config.network.clone(),
            objects: Mutex::new(Objects::default()),
            watchers: Mutex::new(JoinSet::new()),
            stop: CancellationToken::new(),
        });
        let loader = rt.clone();
        blocking(move || loader.load()).await?;
        let running: Vec<Arc<ContainerEntry>> = rt
            .objects()
            .containers
            .values()
            .filter(|c| c.data().record.phase == ContainerPhase::Running)
            .cloned()
            .collect();
        for entry in running {
            rt.watch(entry);
        }
        Ok(rt)
    }

    /// Stops the exit watchers. Containers and sandboxes keep running; the
    /// QoS cgroups and the runtime's own parent cgroup go where no pod is
    /// left in them.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let mut set = std::mem::take(&mut *self.watchers.lock().expect("watchers lock"));
        while set.join_next().await.is_some() {}
        let parent = self.cgroup_parent.clone();
        let pruned = blocking(move || {
            for qos in ["besteffort", "burstable", "guaranteed"] {
                executor::cgroups::prune(&parent.join(qos))?;
            }
            Ok(executor::cgroups::prune(&parent)?)
        })
        .await;
        if let Err(e) = pruned {
            tracing::warn!(error = %e, "removing the runtime's unused cgroups");
        }
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().expect("objects lock is never poisoned")
    }

    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    fn executor_root(&self) -> PathBuf {
        self.root.join("executor")
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    fn load(&self) -> Result<()> {
        for id in state::subdirs(&self.root.join("sandboxes"))? {
            let dir = self.sandbox_dir(&id);
            let loaded =
                state::load_json::<SandboxRecord>(&dir.join("sandbox.json")).and_then(|r| {
                    Ok((r, state::load_proto::<cri::PodSandboxConfig>(&dir.join("config.pb"))?))
                });
            let (mut record, config) = match loaded {
                Ok(v) => v,
                Err(e) => {
                    // A sandbox that never finished starting: nothing refers to it.
                    tracing::warn!(sandbox = %id, error = %e, "removing half-created sandbox");
                    sandbox::unmount_namespaces(&dir);
                    let _ = fs::remove_dir_all(&dir);
                    continue;
                }
            };
            if record.phase == SandboxPhase::Ready && !sandbox::holder_alive(self.holder(&record)) {
                record.phase = SandboxPhase::NotReady;
                state::save_json(&dir.join("sandbox.json"), &record)?;
            }
            tracing::info!(sandbox = %id, phase = ?record.phase, "sandbox found");
            self.objects().sandboxes.insert(id, Sandbox { record, config });
        }
        for id in state::subdirs(&self.root.join("containers"))? {
            let dir = self.container_dir(&id);
            let loaded =
                state::load_json::<ContainerRecord>(&dir.join("container.json")).and_then(|r| {
                    Ok((r, state::load_proto::<cri::ContainerConfig>(&dir.join("config.pb"))?))
                });
            let (mut record, config) = match loaded {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "removing half-created container");
                    self.discard_container(&id);
                    continue;
                }
            };
            let process = executor::Container::load(&self.executor_root(), &id).ok();
            let status = process.as_ref().map(|p| p.status());
            let gone = matches!(status, None | Some(ContainerState::Stopped));
            if record.phase != ContainerPhase::Exited && gone {
                // It ended while nobody watched; its code is known only if
                // it is still our unreaped child.
                let exit = process.as_ref().map_or(Exit::Unknown, |p| proc::reap(p.pid().as_raw()));
                record_exit(&mut record, exit, false);
                state::save_json(&dir.join("container.json"), &record)?;
            }
            tracing::info!(container = %id, phase = ?record.phase, "container found");
            let exited = record.phase == ContainerPhase::Exited;
            let entry = Arc::new(ContainerEntry {
                id: id.clone(),
                data: Mutex::new(ContainerData { record, config }),
                process: Mutex::new(process),
                exited: watch::channel(exited).0,
                io: None,
            });
            self.objects().containers.insert(id, entry);
        }
        Ok(())
    }

    fn holder(&self, record: &SandboxRecord) -> Holder {
        Holder { pid: record.holder_pid, start: record.holder_start }
    }

    /// Removes what a container that could not be loaded or created left.
    fn discard_container(&self, id: &str) {
        if let Ok(c) = executor::Container::load(&self.executor_root(), id) {
            if let Err(e) = c.delete(true) {
                tracing::warn!(container = %id, error = %e, "deleting executor state");
            }
        }
        if let Err(e) = self.images.remove_rootfs(id) {
            tracing::warn!(container = %id, error = %e, "removing rootfs");
        }
        let dir = self.container_dir(id);
        if let Err(e) = fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(container = %id, error = %e, "removing container dir");
            }
        }
    }

    // ---- sandboxes ----

    pub async fn run_sandbox(self: &Arc<Self>, config: cri::PodSandboxConfig) -> Result<String> {
        let host = sandbox::host_namespaces(&config);
        let linux = config.linux.clone().unwrap_or_default();
        check_host_sysctls(host, &linux.sysctls)?;
        let id = state::new_id()?;
        let qos = relative_cgroup(&linux.cgroup_parent)?;
        let cgroup = self.cgroup_parent.join(qos).join(format!("pod{id}"));
        let limits = spec::resources(linux.resources.as_ref());
        let dir = self.sandbox_dir(&id);
        fs::create_dir_all(&dir).map_err(CriError::io(&dir))?;
        state::save_proto(&dir.join("config.pb"), &config)?;
        if let Err(e) = sandbox::write_etc_files(&dir, &config) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        let hostname = config.hostname.clone();
        let (d, cg, network, sid) = (dir.clone(), cgroup.clone(), self.network.clone(), id.clone());
        let started = blocking(move || {
            let holder = sandbox::start_holder(&d, &hostname, host)?;
            let undo = |holder| {
                sandbox::stop_holder(holder);
                sandbox::unmount_namespaces(&d);
                let _ = sandbox::remove_cgroups(&cg);
            };
            if let Err(e) = sandbox::create_cgroups(&cg, limits, holder) {
                undo(holder);
                return Err(e);
            }
            // A sandbox in the host's network namespace has no pod network.
            let ip = match (&network, PodNetns::of(&d, host)) {
                (Some(net), Some(netns)) => match net.add(&sid, &netns) {
                    Ok(ip) => ip,
                    Err(e) => {
                        net.del(&sid, &netns);
                        undo(holder);
                        return Err(e);
                    }
                },
                _ => None,
            };
            Ok((holder, ip))
        })
        .await;
        let (holder, ip) = match started {
            Ok(h) => h,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let record = SandboxRecord {
            id: id.clone(),
            created_at: now_nanos(),
            phase: SandboxPhase::Ready,
            holder_pid: holder.pid,
            holder_start: holder.start,
            cgroup,
            ip,
            host,
        };
        if let Err(e) = state::save_json(&dir.join("sandbox.json"), &record) {
            let d = dir.clone();
            let cg = record.cgroup.clone();
            let _ = blocking(move || {
                sandbox::stop_holder(holder);
                sandbox::unmount_namespaces(&d);
                sandbox::remove_cgroups(&cg)
            })
            .await;
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        tracing::info!(sandbox = %id, name = ?config.metadata.as_ref().map(|m| &m.name), "sandbox ready");
        self.objects().sandboxes.insert(id.clone(), Sandbox { record, config });
        Ok(id)
    }

    fn containers_of(&self, sandbox_id: &str) -> Vec<Arc<ContainerEntry>> {
        self.objects()
            .containers
            .values()
            .filter(|c| c.data().record.sandbox_id == sandbox_id)
            .cloned()
            .collect()
    }

    /// Kills the sandbox's containers and its holder. Idempotent; an unknown
    /// sandbox is already stopped.
    pub async fn stop_sandbox(self: &Arc<Self>, id: &str) -> Result<()> {
        check_id("sandbox", id)?;
        let Some(record) = self.objects().sandboxes.get(id).map(|s| s.record.clone()) else {
            return Ok(());
        };
        for c in self.containers_of(id) {
            self.stop_container(&c.id, 0).await?;
        }
        let holder = self.holder(&record);
        // The network goes first, while its namespace still stands.
        let network = self.network.clone().filter(|_| record.phase != SandboxPhase::NotReady);
        let netns = PodNetns::of(&self.sandbox_dir(id), record.host);
        let sid = id.to_string();
        blocking(move || {
            if let (Some(net), Some(netns)) = (network, netns) {
                net.del(&sid, &netns);
            }
            sandbox::stop_holder(holder);
            Ok(())
        })
        .await?;
        let mut objects = self.objects();
        if let Some(s) = objects.sandboxes.get_mut(id) {
            if s.record.phase != SandboxPhase::NotReady {
                s.record.phase = SandboxPhase::NotReady;
                state::save_json(&self.sandbox_dir(id).join("sandbox.json"), &s.record)?;
                tracing::info!(sandbox = %id, "sandbox stopped");
            }
        }
        Ok(())
    }

    /// Removes the sandbox with its containers, namespaces, cgroups and
    /// files. Idempotent.
    pub async fn remove_sandbox(self: &Arc<Self>, id: &str) -> Result<()> {
        check_id("sandbox", id)?;
        if !self.objects().sandboxes.contains_key(id) {
            return Ok(());
        }
        self.stop_sandbox(id).await?;
        for c in self.containers_of(id) {
            self.remove_container(&c.id).await?;
        }
        let Some(record) = self.objects().sandboxes.get(id).map(|s| s.record.clone()) else {
            return Ok(());
        };
        let dir = self.sandbox_dir(id);
        blocking(move || {
            sandbox::unmount_namespaces(&dir);
            sandbox::remove_cgroups(&record.cgroup)?;
            match fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(CriError::io(&dir)(e)),
            }
        })
        .await?;
        self.objects().sandboxes.remove(id);
        tracing::info!(sandbox = %id, "sandbox removed");
        Ok(())
    }

    fn sandbox_state(&self, s: &Sandbox) -> cri::PodSandboxState {
        if s.record.phase == SandboxPhase::Ready && sandbox::holder_alive(self.holder(&s.record)) {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        }
    }

    pub fn sandbox_status(&self, id: &str, verbose: bool) -> Result<cri::PodSandboxStatusResponse> {
        check_id("sandbox", id)?;
        let objects = self.objects();
        let s = objects.sandboxes.get(id).ok_or_else(|| CriError::not_found("sandbox", id))?;
        let ns = s
            .config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|c| c.namespace_options.clone());
        let status = cri::PodSandboxStatus {
            id: id.to_string(),
            metadata: s.config.metadata.clone(),
            state: self.sandbox_state(s) as i32,
            created_at: s.record.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: s.record.ip.clone().unwrap_or_default(),
                ..Default::default()
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace { options: ns }),
            }),
            labels: s.config.labels.clone(),
            annotations: s.config.annotations.clone(),
            runtime_handler: String::new(),
        };
        let mut info = BTreeMap::new();
        if verbose {
            let dir = self.sandbox_dir(id);
            // The host's namespaces a sandbox shares have no path of its own.
            let own = sandbox::own_namespaces(s.record.host);
            let path = |name: &str| own.contains(&name).then(|| sandbox::ns_path(&dir, name));
            let detail = serde_json::json!({
                "pid": s.record.holder_pid,
                "cgroup": s.record.cgroup,
                "netns": path("net"),
                "ipcns": path("ipc"),
                "utsns": path("uts"),
                "hostNetwork": s.record.host.network,
                "hostIPC": s.record.host.ipc,
                "hostPID": s.record.host.pid,
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(status),
            info,
            containers_statuses: Vec::new(),
            timestamp: now_nanos(),
        })
    }

    pub fn list_sandboxes(&self, filter: Option<cri::PodSandboxFilter>) -> Vec<cri::PodSandbox> {
        let f = filter.unwrap_or_default();
        self.objects()
            .sandboxes
            .iter()
            .filter(|(id, _)| f.id.is_empty() || id.starts_with(&f.id))
            .filter(|(_, s)| labels_match(&s.config.labels, &f.label_selector))
            .map(|(id, s)| cri::PodSandbox {
                id: id.clone(),
                metadata: s.config.metadata.clone(),
                state: self.sandbox_state(s) as i32,
                created_at: s.record.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: String::new(),
            })
            .filter(|p| f.state.as_ref().is_none_or(|want| want.state == p.state))
            .collect()
    }

    // ---- containers ----

    fn entry(&self, id: &str) -> Result<Arc<ContainerEntry>> {
        check_id("container", id)?;
        self.objects()
            .containers
            .get(id)
            .cloned()
            .ok_or_else(|| CriError::not_found("container", id))
    }

    pub async fn create_container(
        self: &Arc<Self>,
        sandbox_id: &str,
        config: cri::ContainerConfig,
    ) -> Result<String> {
        check_id("sandbox", sandbox_id)?;
        let (sandbox_record, log_dir, sysctls) = {
            let objects = self.objects();
            let s = objects
                .sandboxes
                .get(sandbox_id)
                .ok_or_else(|| CriError::not_found("sandbox", sandbox_id))?;
            if self.sandbox_state(s) != cri::PodSandboxState::SandboxReady {
                return Err(CriError::FailedPrecondition(format!(
                    "sandbox {sandbox_id} is not ready"
                )));
            }
            let meta = config.metadata.clone().unwrap_or_default();
            let taken = objects.containers.values().any(|c| {
                let d = c.data();
                let m = d.config.metadata.clone().unwrap_or_default();
                d.record.sandbox_id == sandbox_id
                    && m.name == meta.name
                    && m.attempt == meta.attempt
            });
            if taken {
                return Err(CriError::FailedPrecondition(format!(
                    "sandbox {sandbox_id} already has container {:?} attempt {}",
                    meta.name, meta.attempt
                )));
            }
            let sysctls = s.config.linux.as_ref().map(|l| l.sysctls.clone()).unwrap_or_default();
            (s.record.clone(), s.config.log_directory.clone(), sysctls)
        };
        let wanted = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        if wanted.is_empty() {
            return Err(CriError::InvalidArgument("container config names no image".into()));
        }
        let image =
            self.images.status(&wanted)?.ok_or_else(|| CriError::not_found("image", &wanted))?;
        let id = state::new_id()?;
        let dir = self.container_dir(&id);
        fs::create_dir_all(dir.join("bundle")).map_err(CriError::io(&dir))?;
        let log_path = (!log_dir.is_empty() && !config.log_path.is_empty())
            .then(|| Path::new(&log_dir).join(&config.log_path));
        let record = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox_id.to_string(),
            image_id: image.id.to_string(),
            image_ref: image.repo_digests.first().cloned().unwrap_or_else(|| image.id.to_string()),
            phase: ContainerPhase::Created,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: log_path.clone(),
        };
        let rt = self.clone();
        let (cid, cfg) = (id.clone(), config.clone());
        let sandbox_dir = self.sandbox_dir(sandbox_id);
        let made = blocking(move || {
            state::save_proto(&rt.container_dir(&cid).join("config.pb"), &cfg)?;
            let rootfs = rt.images.create_rootfs(&cid, &image.id.to_string())?;
            let spec = spec::build(&SpecInput {
                config: &cfg,
                image: &image.config,
                rootfs: &rootfs.path,
                sandbox_dir: &sandbox_dir,
                sandbox_host: sandbox_record.host,
                sysctls: &sysctls,
            })?;
            let bundle = rt.container_dir(&cid).join("bundle");
            spec.save(bundle.join("config.json")).map_err(|e| CriError::CorruptState {
                path: bundle.join("config.json"),
                reason: e.to_string(),
            })?;
            // Without a log directory the output goes nowhere, but a
            // terminal or stdin is still kept for attach.
            let log = match &log_path {
                Some(p) => {
                    if let Some(parent) = p.parent() {
                        fs::create_dir_all(parent).map_err(CriError::io(parent))?;
                    }
                    p.clone()
                }
                None => PathBuf::from("/dev/null"),
            };
            let mut opts = CreateOptions::new(&cid, &bundle, rt.executor_root());
            opts.cgroup_parent = sandbox_record.cgroup.clone();
            let mut wiring = Wiring::plan(&log, cfg.stdin, cfg.stdin_once, cfg.tty)?;
            wiring.wire(&mut opts);
            let process = executor::Container::create(opts)?;
            let io = wiring.finish(&log, cfg.stdin, cfg.stdin_once)?;
            state::save_json(&rt.container_dir(&cid).join("container.json"), &record)?;
            Ok((process, record, io))
        })
        .await;
        let (process, record, io) = match made {
            Ok(v) => v,
            Err(e) => {
                let rt = self.clone();
                let cid = id.clone();
                let _ = blocking(move || {
                    rt.discard_container(&cid);
                    Ok(())
                })
                .await;
                return Err(e);
            }
        };
        tracing::info!(container = %id, sandbox = %sandbox_id, image = %record.image_id, "container created");
        let entry = Arc::new(ContainerEntry {
            id: id.clone(),
            data: Mutex::new(ContainerData { record, config }),
            process: Mutex::new(Some(process)),
            exited: watch::channel(false).0,
            io: Some(Arc::new(io)),
        });
        self.objects().containers.insert(id.clone(), entry);
        Ok(id)
    }

    /// Runs `f` on the executor's handle, loading it from disk first if this
    /// runtime did not create it.
    fn with_process<T>(
        &self,
        entry: &ContainerEntry,
        f: impl FnOnce(&mut executor::Container) -> Result<T>,
    ) -> Result<T> {
        let mut guard = entry.process.lock().expect("process lock is never poisoned");
        if guard.is_none() {
            *guard = Some(executor::Container::load(&self.executor_root(), &entry.id)?);
        }
        f(guard.as_mut().expect("loaded just above"))
    }

    fn save_record(&self, entry: &ContainerEntry, data: &ContainerData) -> Result<()> {
        state::save_json(&self.container_dir(&entry.id).join("container.json"), &data.record)
    }

    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let entry = self.entry(id)?;
        let phase = entry.data().record.phase;
        if phase != ContainerPhase::Created {
            return Err(CriError::FailedPrecondition(format!(
                "container {id} is {phase:?}; only a created container starts"
            )));
        }
        let rt = self.clone();
        let e = entry.clone();
        blocking(move || rt.with_process(&e, |p| Ok(p.start()?))).await?;
        {
            let mut data = entry.data();
            data.record.phase = ContainerPhase::Running;
            data.record.started_at = now_nanos();
            self.save_record(&entry, &data)?;
        }
        tracing::info!(container = %id, "container started");
        self.watch(entry);
        Ok(())
    }

    /// Records the container's exit when its init process ends.
    fn watch(self: &Arc<Self>, entry: Arc<ContainerEntry>) {
        let rt = self.clone();
        let stop = self.stop.clone();
        let task = async move {
            let pid = match rt.with_process(&entry, |p| Ok(p.pid().as_raw())) {
                Ok(pid) => pid,
                Err(e) => {
                    tracing::warn!(container = %entry.id, error = %e, "cannot watch container");
                    return;
                }
            };
            match proc::wait_exit(pid, &stop).await {
                Ok(Some(())) => {}
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(container = %entry.id, error = %e, "watching container exit");
                    return;
                }
            }
            let exit = proc::reap(pid);
            let oom = rt.with_process(&entry, |p| Ok(p.stats()?.oom_kills > 0)).unwrap_or(false);
            let mut data = entry.data();
            record_exit(&mut data.record, exit, oom);
            if let Err(e) = rt.save_record(&entry, &data) {
                tracing::error!(container = %entry.id, error = %e, "saving container exit");
            }
            tracing::info!(container = %entry.id, exit_code = data.record.exit_code, reason = %data.record.reason, "container exited");
            metrics::counter!("berth_kubelet_cri_container_exits_total", "reason" => data.record.reason.clone()).increment(1);
            drop(data);
            entry.exited.send_replace(true);
        };
        self.watchers.lock().expect("watchers lock").spawn(task);
    }

    /// SIGTERM (or the image's stop signal), `timeout` seconds, then SIGKILL
    /// to everything in the container. Idempotent.
    pub async fn stop_container(self: &Arc<Self>, id: &str, timeout: i64) -> Result<()> {
        let entry = self.entry(id)?;
        let phase = entry.data().record.phase;
        match phase {
            ContainerPhase::Exited => return Ok(()),
            ContainerPhase::Created => {
                // Never started: its init waits for a start that will not come.
                let rt = self.clone();
                let e = entry.clone();
                blocking(move || rt.with_process(&e, |p| Ok(p.cgroup().kill_all()?))).await?;
                let mut data = entry.data();
                let pid = entry.process.lock().expect("process lock").as_ref().map(|p| p.pid());
                let exit = pid.map_or(Exit::Unknown, |p| proc::reap(p.as_raw()));
                record_exit(&mut data.record, exit, false);
                self.save_record(&entry, &data)?;
                drop(data);
                entry.exited.send_replace(true);
                return Ok(());
            }
            ContainerPhase::Running => {}
        }
        let mut exited = entry.exited.subscribe();
        if timeout > 0 {
            let image_signal = self
                .images
                .status(&entry.data().record.image_id)
                .ok()
                .flatten()
                .and_then(|i| i.config.stop_signal.clone());
            let signal = proc::stop_signal(image_signal.as_deref());
            let rt = self.clone();
            let e = entry.clone();
            let _ = blocking(move || rt.with_process(&e, |p| Ok(p.kill(signal, false)?))).await;
            let grace = Duration::from_secs(timeout.unsigned_abs());
            if tokio::time::timeout(grace, exited.wait_for(|v| *v)).await.is_ok() {
                tracing::info!(container = %id, "container stopped");
                return Ok(());
            }
        }
        let rt = self.clone();
        let e = entry.clone();
        blocking(move || rt.with_process(&e, |p| Ok(p.kill(Signal::SIGKILL, true)?))).await.ok();
        let killed = tokio::time::timeout(KILL_TIMEOUT, exited.wait_for(|v| *v)).await.is_ok();
        match killed {
            true => {
                tracing::info!(container = %id, "container killed");
                Ok(())
            }
            false => Err(CriError::FailedPrecondition(format!(
                "container {id} survived SIGKILL for {KILL_TIMEOUT:?}"
            ))),
        }
    }

    /// Removes a container, killing it first. Idempotent.
    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let entry = match self.entry(id) {
            Ok(e) => e,
            Err(CriError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.stop_container(id, 0).await?;
        let rt = self.clone();
        let e = entry.clone();
        blocking(move || {
            let taken = e.process.lock().expect("process lock").take();
            let process = match taken {
                Some(p) => Some(p),
                None => match executor::Container::load(&rt.executor_root(), &e.id) {
                    Ok(p) => Some(p),
                    Err(crate::executor::ExecutorError::NotFound(_)) => None,
                    Err(err) => return Err(err.into()),
                },
            };
            if let Some(p) = process {
                p.delete(true)?;
            }
            rt.images.remove_rootfs(&e.id)?;
            let dir = rt.container_dir(&e.id);
            match fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(err) => Err(CriError::io(&dir)(err)),
            }
        })
        .await?;
        self.objects().containers.remove(id);
        tracing::info!(container = %id, "container removed");
        Ok(())
    }

    fn to_container(&self, entry: &ContainerEntry) -> cri::Container {
        let d = entry.data();
        cri::Container {
            id: entry.id.clone(),
            pod_sandbox_id: d.record.sandbox_id.clone(),
            metadata: d.config.metadata.clone(),
            image: d.config.image.clone(),
            image_ref: d.record.image_ref.clone(),
            state: phase_state(d.record.phase) as i32,
            created_at: d.record.created_at,
            labels: d.config.labels.clone(),
            annotations: d.config.annotations.clone(),
            image_id: d.record.image_id.clone(),
        }
    }

    pub fn list_containers(&self, filter: Option<cri::ContainerFilter>) -> Vec<cri::Container> {
        let f = filter.unwrap_or_default();
        let entries: Vec<Arc<ContainerEntry>> =
            self.objects().containers.values().cloned().collect();
        entries
            .iter()
            .map(|e| self.to_container(e))
            .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
            .filter(|c| {
                f.pod_sandbox_id.is_empty() || c.pod_sandbox_id.starts_with(&f.pod_sandbox_id)
            })
            .filter(|c| f.state.as_ref().is_none_or(|s| s.state == c.state))
            .filter(|c| labels_match(&c.labels, &f.label_selector))
            .collect()
    }

    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse> {
        let entry = self.entry(id)?;
        let d = entry.data();
        let r = &d.record;
        let status = cri::ContainerStatus {
            id: id.to_string(),
            metadata: d.config.metadata.clone(),
            state: phase_state(r.phase) as i32,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            exit_code: r.exit_code,
            image: d.config.image.clone(),
            image_ref: r.image_ref.clone(),
            reason: r.reason.clone(),
            message: r.message.clone(),
            labels: d.config.labels.clone(),
            annotations: d.config.annotations.clone(),
            mounts: d.config.mounts.clone(),
            log_path: r.log_path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            resources: Some(cri::ContainerResources {
                linux: d.config.linux.as_ref().and_then(|l| l.resources.clone()),
            }),
            image_id: r.image_id.clone(),
        };
        let mut info = BTreeMap::new();
        if verbose {
            let pid =
                entry.process.lock().expect("process lock").as_ref().map(|p| p.pid().as_raw());
            let detail = serde_json::json!({
                "pid": pid,
                "sandboxID": r.sandbox_id,
                "bundle": self.container_dir(id).join("bundle"),
            });
            info.insert("info".to_string(), detail.to_string());
        }
        Ok(cri::ContainerStatusResponse { status: Some(status), info })
    }

    pub async fn update_resources(
        self: &Arc<Self>,
        id: &str,
        linux: Option<cri::LinuxContainerResources>,
    ) -> Result<()> {
        let entry = self.entry(id)?;
        let Some(linux) = linux else { return Ok(()) };
        let mut limits = spec::resources(Some(&linux));
        let rt = self.clone();
        let e = entry.clone();
        blocking(move || {
            rt.with_process(&e, |p| {
                // The executor writes the device list with every apply; the
                // container keeps the one it has.
                limits.devices = proc::current_device_rules(p.cgroup());
                Ok(p.cgroup().apply(&limits)?)
            })
        })
        .await?;
        let mut data = entry.data();
        let config_linux = data.config.linux.get_or_insert_with(Default::default);
        config_linux.resources = Some(linux);
        state::save_proto(&self.container_dir(id).join("config.pb"), &data.config)?;
        tracing::info!(container = %id, "container resources updated");
        Ok(())
    }

    /// The standard streams of running container `id`, to attach to.
    pub(super) fn container_io(&self, id: &str) -> Result<Arc<ContainerIo>> {
        let entry = self.entry(id)?;
        if entry.data().record.phase != ContainerPhase::Running {
            return Err(CriError::FailedPrecondition(format!("container {id} is not running")));
        }
        entry.io.clone().ok_or_else(|| {
            CriError::FailedPrecondition(format!(
                "the streams of container {id} were lost when the runtime restarted"
            ))
        })
    }

    /// The process an exec of `cmd` runs in a running container: the
    /// container's own, with `cmd` as its arguments (and TERM set for a
    /// terminal, as other runtimes do).
    pub(super) fn exec_process(&self, id: &str, cmd: Vec<String>, tty: bool) -> Result<Process> {
        let entry = self.entry(id)?;
        if entry.data().record.phase != ContainerPhase::Running {
            return Err(CriError::FailedPrecondition(format!("container {id} is not running")));
        }
        if cmd.is_empty() {
            return Err(CriError::InvalidArgument("exec needs a command".into()));
        }
        let bundle = self.container_dir(id).join("bundle");
        let spec = Spec::load(bundle.join("config.json")).map_err(|e| CriError::CorruptState {
            path: bundle.join("config.json"),
            reason: e.to_string(),
        })?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd));
        process.set_terminal(Some(tty));
        if tty {
            let mut env = process.env().clone().unwrap_or_default();
            if !env.iter().any(|e| e.starts_with("TERM=")) {
                env.push("TERM=xterm".into());
            }
            process.set_env(Some(env));
        }
        Ok(process)
    }

    /// Starts `process` in container `id` with `stdio` (blocking).
    pub(super) fn spawn_exec(
        &self,
        id: &str,
        process: &Process,
        stdio: Stdio,
    ) -> Result<executor::ExecProcess> {
        let entry = self.entry(id)?;
        self.with_process(&entry, |p| Ok(p.exec(process, stdio)?))
    }

    /// Runs `cmd` in the container and returns its output and exit code,
    /// killing it after `timeout` seconds (0: no limit).
    pub async fn exec_sync(
        self: &Arc<Self>,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<cri::ExecSyncResponse> {
        let entry = self.entry(id)?;
        let process = self.exec_process(id, cmd, false)?;
        let log = proc::exec_log_path(&self.root, id)?;
        let (pid_tx, pid_rx) = tokio::sync::oneshot::channel();
        let rt = self.clone();
        let e = entry.clone();
        let log_for_exec = log.clone();
        let waiter = tokio::task::spawn_blocking(move || -> Result<i32> {
            let mut running = rt
                .with_process(&e, |p| Ok(p.exec(&process, Stdio::CriLog(log_for_exec.clone()))?))?;
            let _ = pid_tx.send(running.pid());
            Ok(running.wait()?.code())
        });
        let outcome = if timeout > 0 {
            let limit = Duration::from_secs(timeout.unsigned_abs());
            let mut waiter = waiter;
            match tokio::time::timeout(limit, &mut waiter).await {
                Ok(done) => done,
                Err(_) => {
                    if let Ok(pid) = pid_rx.await {
                        let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                    }
                    let _ = waiter.await;
                    let _ = fs::remove_file(&log);
                    return Err(CriError::Timeout(timeout));
                }
            }
        } else {
            waiter.await
        };
        let read = fs::read(&log);
        let _ = fs::remove_file(&log);
        let code = outcome.map_err(|e| CriError::Task(format!("exec: {e}")))??;
        let (stdout, stderr) = proc::split_cri_log(&read.map_err(CriError::io(&log))?);
        Ok(cri::ExecSyncResponse { stdout, stderr, exit_code: code })
    }

    pub fn container_stats(&self, id: &str) -> Result<cri::ContainerStats> {
        let entry = self.entry(id)?;
        self.stats_of(&entry)
    }

    fn stats_of(&self, entry: &ContainerEntry) -> Result<cri::ContainerStats> {
        let now = now_nanos();
        let (usage, cpu) = self.with_process(entry, |p| {
            let usage = p.stats().ok();
            Ok((usage, proc::cpu_usage_nanos(p.cgroup())))
        })?;
        let d = entry.data();
        let value = |v: u64| Some(cri::UInt64Value { value: v });
        let upper = self.images.rootfs(&entry.id).map(|r| r.upper);
        let writable = upper.map(|u| {
            let (bytes, inodes) = proc::disk_usage(&u);
            cri::FilesystemUsage {
                timestamp: now,
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.images.root().display().to_string(),
                }),
                used_bytes: value(bytes),
                inodes_used: value(inodes),
            }
        });
        Ok(cri::ContainerStats {
            attributes: Some(cri::ContainerAttributes {
                id: entry.id.clone(),
                metadata: d.config.metadata.clone(),
                labels: d.config.labels.clone(),
                annotations: d.config.annotations.clone(),
            }),
            cpu: Some(cri::CpuUsage {
                timestamp: now,
                usage_core_nano_seconds: cpu.and_then(value),
                usage_nano_cores: None,
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: now,
                working_set_bytes: usage.as_ref().and_then(|u| value(u.memory_usage_bytes)),
                usage_bytes: usage.as_ref().and_then(|u| value(u.memory_usage_bytes)),
                ..Default::default()
            }),
            writable_layer: writable,
        })
    }

    pub fn list_container_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> Result<Vec<cri::ContainerStats>> {
        let f = filter.unwrap_or_default();
        let entries: Vec<Arc<ContainerEntry>> =
            self.objects().containers.values().cloned().collect();
        let mut out = Vec::new();
        for e in entries {
            let keep = {
                let d = e.data();
                d.record.phase == ContainerPhase::Running
                    && (f.id.is_empty() || e.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty()
                        || d.record.sandbox_id.starts_with(&f.pod_sandbox_id))
                    && labels_match(&d.config.labels, &f.label_selector)
            };
            if keep {
                out.push(self.stats_of(&e)?);
            }
        }
        Ok(out)
    }
}

/// Refuses sysctls that would change the host's namespaces a sandbox
/// shares (net.* with the host's network, IPC ones with the host's IPC), as
/// Kubernetes refuses them: containers set them in namespaces that are the
/// node's own.
fn check_host_sysctls(
    host: state::HostNamespaces,
    sysctls: &BTreeMap<String, String>,
) -> Result<()> {
    for name in sysctls.keys() {
        let ipc = name.starts_with("kernel.shm")
            || name.starts_with("kernel.msg")
            || name == "kernel.sem"
            || name.starts_with("fs.mqueue.");
        if (host.network && name.starts_with("net.")) || (host.ipc && ipc) {
            return Err(CriError::InvalidArgument(format!(
                "sysctl {name} would change the host's namespace the pod shares"
            )));
        }
    }
    Ok(())
}

/// Records an exit: the code if known, and the CRI reason for it.
fn record_exit(record: &mut ContainerRecord, exit: Exit, oom: bool) {
    record.phase = ContainerPhase::Exited;
    record.finished_at = now_nanos();
    match exit {
        Exit::Code(code) => {
            record.exit_code = code;
            record.reason = if oom {
                "OOMKilled"
            } else if code == 0 {
                "Completed"
            } else {
                "Error"
            }
            .into();
        }
        Exit::Unknown => {
            // What containerd reports for an exit nobody saw.
            record.exit_code = 255;
            record.reason = "Unknown".into();
            record.message =
                "the container exited while the runtime service was not watching".into();
        }
    }
}

fn phase_state(phase: ContainerPhase) -> cri::ContainerState {
    match phase {
        ContainerPhase::Created => cri::ContainerState::ContainerCreated,
        ContainerPhase::Running => cri::ContainerState::ContainerRunning,
        ContainerPhase::Exited => cri::ContainerState::ContainerExited,
    }
}

/// The CRI's label selector: every key present with the same value.
fn labels_match(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors_need_every_pair() {
        let labels: BTreeMap<String, String> =
            [("app".into(), "web".into()), ("tier".into(), "a".into())].into();
        assert!(labels_match(&labels, &BTreeMap::new()));
        assert!(labels_match(&labels, &[("app".into(), "web".into())].into()));
        assert!(!labels_match(&labels, &[("app".into(), "db".into())].into()));
    }

    #[test]
    fn cgroup_parents_stay_under_ours() {
        assert_eq!(relative_cgroup("/burstable").unwrap(), PathBuf::from("burstable"));
        assert_eq!(relative_cgroup("").unwrap(), PathBuf::new());
        assert!(relative_cgroup("/../etc").is_err());
    }

    #[test]
    fn exits_get_their_reason() {
        let mut r = ContainerRecord {
            id: "a".into(),
            sandbox_id: "b".into(),
            image_id: String::new(),
            image_ref: String::new(),
            phase: ContainerPhase::Running,
            created_at: 1,
            started_at: 1,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            log_path: None,
        };
        record_exit(&mut r, Exit::Code(137), true);
        assert_eq!(
            (r.phase, r.exit_code, r.reason.as_str()),
            (ContainerPhase::Exited, 137, "OOMKilled")
        );
        record_exit(&mut r, Exit::Code(0), false);
        assert_eq!(r.reason, "Completed");
        record_exit(&mut r, Exit::Unknown, false);
        assert_eq!((r.exit_code, r.reason.as_str()), (255, "Unknown"));
    }
}
