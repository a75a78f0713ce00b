//! The device manager: per resource the devices its plugin advertises and
//! their health, the allocations of pods' containers (checkpointed), and
//! one session per registered plugin that follows its ListAndWatch stream.

use super::allocator;
use super::checkpoint::{self, Allocation, Allocations, Checkpoint};
use super::client::PluginClient;
use super::error::DevicesError;
use super::registration::{check_resource_name, Registrar};
use berth_proto::core_v1::{Container, Pod};
use berth_proto::cri_v1 as cri;
use berth_proto::device_plugin_v1beta1 as api;
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The socket the kubelet serves Registration on, in the device-plugins folder.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// The checkpoint's file name, in the device-plugins folder.
const CHECKPOINT: &str = "berth_device_checkpoint";
/// A device a plugin reports with this health can be allocated.
pub const HEALTHY: &str = "Healthy";

/// How the device manager runs.
#[derive(Clone, Debug)]
pub struct DeviceConfig {
    /// The device-plugins folder (`<kubelet root>/device-plugins`): the
    /// kubelet's socket, the plugins' sockets and the checkpoint.
    pub dir: PathBuf,
    /// The deadline of every call to a plugin.
    pub call_timeout: Duration,
    /// How long a disconnected plugin's devices stay (unhealthy) before
    /// they are removed from the node (Kubernetes: 5 minutes).
    pub grace_period: Duration,
}

impl DeviceConfig {
    pub fn new(dir: impl Into<PathBuf>) -> DeviceConfig {
        DeviceConfig {
            dir: dir.into(),
            call_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(300),
        }
    }
}

/// One resource's count of devices, as the Node reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceCount {
    pub capacity: i64,
    /// Healthy devices (allocated or not: the scheduler subtracts pods).
    pub allocatable: i64,
}

/// A task stopped when its owner drops this.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Resource {
    /// device id -> healthy
    devices: BTreeMap<String, bool>,
    /// The live plugin; None while none is connected.
    plugin: Option<Arc<PluginClient>>,
    /// Which registration is current, so a replaced session's end does
    /// not disconnect its successor.
    session: u64,
    disconnected_since: Option<Instant>,
    task: Option<AbortOnDrop>,
}

#[derive(Default)]
struct State {
    resources: BTreeMap<String, Resource>,
    allocations: Allocations,
    sessions: u64,
}

pub(super) struct Inner {
    config: DeviceConfig,
    state: Mutex<State>,
    changed: tokio::sync::watch::Sender<u64>,
}

/// The kubelet's device manager; cheap to clone.
#[derive(Clone)]
pub struct DeviceManager {
    inner: Arc<Inner>,
}

impl DeviceManager {
    /// Reads the checkpoint (a corrupt one is refused) and binds the
    /// Registration socket (replacing a stale one); returns the manager and
    /// the future that serves until `stop`.
    pub fn start(
        config: DeviceConfig,
        stop: CancellationToken,
    ) -> Result<(DeviceManager, impl std::future::Future<Output = ()>), DevicesError> {
        std::fs::create_dir_all(&config.dir).map_err(DevicesError::io(&config.dir))?;
        let saved = checkpoint::read(&config.dir.join(CHECKPOINT))?;
        let now = Instant::now();
        // Until their plugins register again, the devices are known but not
        // healthy; the grace period runs from now.
        let resources = saved
            .registered
            .into_iter()
            .map(|(name, ids)| {
                let resource = Resource {
                    devices: ids.into_iter().map(|id| (id, false)).collect(),
                    plugin: None,
                    session: 0,
                    disconnected_since: Some(now),
                    task: None,
                };
                (name, resource)
            })
            .collect();
        let state = State { resources, allocations: saved.allocations, sessions: 0 };
        let manager = DeviceManager {
            inner: Arc::new(Inner {
                config,
                state: Mutex::new(state),
                changed: tokio::sync::watch::channel(0).0,
            }),
        };
        let socket = manager.inner.config.dir.join(KUBELET_SOCKET);
        let serving = Registrar::new(manager.clone()).bind(&socket, stop.clone())?;
        let me = manager.clone();
        let run = async move {
            let sweeping = async {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => me.sweep(),
                    }
                }
            };
            tokio::join!(serving, sweeping);
            // The sessions end with the manager.
            me.state().resources.values_mut().for_each(|r| r.task = None);
        };
        Ok((manager, run))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().expect("no panic while holding the device state")
    }

    pub(super) fn dir(&self) -> &std::path::Path {
        &self.inner.config.dir
    }

    fn notify(&self) {
        for (name, count) in self.counts() {
            let gauge = |health: &'static str, n: i64| {
                metrics::gauge!("berth_kubelet_devices", "resource" => name.clone(), "health" => health)
                    .set(n as f64)
            };
            gauge("healthy", count.allocatable);
            gauge("unhealthy", count.capacity - count.allocatable);
        }
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// Changes whenever a count in [`DeviceManager::counts`] may have.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.changed.subscribe()
    }

    /// Every resource's capacity and allocatable count.
    pub fn counts(&self) -> BTreeMap<String, ResourceCount> {
        self.state()
            .resources
            .iter()
            .map(|(name, r)| {
                let healthy = r.devices.values().filter(|h| **h).count();
                (
                    name.clone(),
                    ResourceCount { capacity: r.devices.len() as i64, allocatable: healthy as i64 },
                )
            })
            .collect()
    }

    /// Removes the devices of plugins disconnected for longer than the
    /// grace period.
    fn sweep(&self) {
        let grace = self.inner.config.grace_period;
        let removed = {
            let mut state = self.state();
            let before = state.resources.len();
            state.resources.retain(|name, r| {
                let expired = r.plugin.is_none()
                    && r.disconnected_since.is_some_and(|since| since.elapsed() >= grace);
                if expired {
                    tracing::info!(resource = %name, "device plugin gone past its grace period; its devices are removed");
                }
                !expired
            });
            let removed = state.resources.len() != before;
            if removed {
                self.save(&state);
            }
            removed
        };
        if removed {
            self.notify();
        }
    }

    /// Writes the checkpoint; a failure is logged (the allocations in
    /// memory stay right, and the next write tries again).
    fn save(&self, state: &State) {
        let registered = state
            .resources
            .iter()
            .map(|(name, r)| (name.clone(), r.devices.keys().cloned().collect()))
            .collect();
        // Reservations whose Allocate has not answered yet are not saved.
        let mut allocations = state.allocations.clone();
        for containers in allocations.values_mut() {
            for resources in containers.values_mut() {
                resources.retain(|_, a| !a.pending);
            }
        }
        let saved = Checkpoint { allocations, registered };
        if let Err(e) = checkpoint::write(&self.inner.config.dir.join(CHECKPOINT), &saved) {
            tracing::error!(error = %e, "could not write the device checkpoint");
        }
    }

    /// A plugin registered: its session replaces any earlier one for the
    /// resource.
    pub(super) fn register(&self, request: api::RegisterRequest) {
        let resource = request.resource_name.clone();
        let socket = self.inner.config.dir.join(&request.endpoint);
        let mut state = self.state();
        state.sessions += 1;
        let session = state.sessions;
        let me = self.clone();
        let name = resource.clone();
        let task = tokio::spawn(async move { me.follow(&name, session, &socket).await });
        let entry = state.resources.entry(resource).or_insert_with(|| Resource {
            devices: BTreeMap::new(),
            plugin: None,
            session,
            disconnected_since: None,
            task: None,
        });
        entry.session = session;
        entry.task = Some(AbortOnDrop(task));
    }

    /// One plugin session: connect, then follow ListAndWatch until the
    /// stream ends or fails; then the devices turn unhealthy.
    async fn follow(&self, resource: &str, session: u64, socket: &std::path::Path) {
        let deadline = self.inner.config.call_timeout;
        let outcome = async {
            let plugin = Arc::new(PluginClient::connect(resource, socket, deadline).await?);
            let mut stream = plugin.list_and_watch().await?;
            if let Some(r) =
                self.state().resources.get_mut(resource).filter(|r| r.session == session)
            {
                r.plugin = Some(plugin.clone());
                r.disconnected_since = None;
            }
            tracing::info!(resource, "device plugin connected");
            loop {
                match stream.message().await {
                    Ok(Some(list)) => self.update(resource, session, list),
                    Ok(None) => {
                        return Ok::<_, DevicesError>(
                            "the plugin ended its device stream".to_string(),
                        )
                    }
                    Err(status) => return Ok(format!("device stream failed: {status}")),
                }
            }
        };
        let why = match outcome.await {
            Ok(why) => why,
            Err(e) => e.to_string(),
        };
        tracing::warn!(resource, reason = %why, "device plugin disconnected; its devices are unhealthy until it registers again");
        let mut state = self.state();
        if let Some(r) = state.resources.get_mut(resource).filter(|r| r.session == session) {
            r.plugin = None;
            r.disconnected_since = Some(Instant::now());
            r.devices.values_mut().for_each(|h| *h = false);
            drop(state);
            self.notify();
        }
    }

    fn update(&self, resource: &str, session: u64, list: api::ListAndWatchResponse) {
        let devices: BTreeMap<String, bool> =
            list.devices.into_iter().map(|d| (d.id, d.health == HEALTHY)).collect();
        let mut state = self.state();
        let Some(r) = state.resources.get_mut(resource).filter(|r| r.session == session) else {
            return;
        };
        if r.devices == devices {
            return;
        }
        let ids_changed = !r.devices.keys().eq(devices.keys());
        tracing::info!(
            resource,
            devices = devices.len(),
            healthy = devices.values().filter(|h| **h).count(),
            "device list"
        );
        r.devices = devices;
        if ids_changed {
            self.save(&state);
        }
        drop(state);
        self.notify();
    }

    /// The device resources `c` asks for (limits, else requests): every
    /// extended resource, since on a berth node only device plugins
    /// provide them (one no plugin serves fails admission).
    fn requests(&self, c: &Container) -> Vec<(String, usize)> {
        let r = c.resources.clone().unwrap_or_default();
        let mut out: BTreeMap<String, usize> = BTreeMap::new();
        for (name, q) in r.requests.iter().chain(&r.limits) {
            if check_resource_name(name).is_ok() {
                out.insert(name.clone(), q.value().clamp(0, usize::MAX as i128) as usize);
            }
        }
        out.into_iter().filter(|(_, n)| *n > 0).collect()
    }

    /// Admits a pod: every container's devices chosen and allocated by
    /// their plugins (again for none that has them already). On failure
    /// the pod holds no devices and the error says why.
    pub async fn admit(&self, pod: &Pod) -> Result<(), DevicesError> {
        let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let init: Vec<String> = spec.init_containers.iter().map(|c| c.name.clone()).collect();
        let containers = spec
            .init_containers
            .iter()
            .map(|c| (c, &[][..]))
            .chain(spec.containers.iter().map(|c| (c, init.as_slice())));
        let mut done = Ok(());
        'pod: for (c, reusable) in containers {
            for (resource, wanted) in self.requests(c) {
                if let Err(e) = self.allocate(&uid, &c.name, &resource, wanted, reusable).await {
                    done = Err(e);
                    break 'pod;
                }
            }
        }
        if done.is_err() {
            self.release(&uid);
        }
        done
    }

    async fn allocate(
        &self,
        uid: &str,
        container: &str,
        resource: &str,
        wanted: usize,
        reusable: &[String],
    ) -> Result<(), DevicesError> {
        let free = |state: &State| -> Result<(Vec<String>, Arc<PluginClient>), DevicesError> {
            let r = state
                .resources
                .get(resource)
                .ok_or_else(|| DevicesError::NoPlugin(resource.to_string()))?;
            let plugin =
                r.plugin.clone().ok_or_else(|| DevicesError::Disconnected(resource.to_string()))?;
            let free = allocator::free(&r.devices, &state.allocations, resource, uid, reusable);
            Ok((free, plugin))
        };
        let held = |state: &State| {
            state
                .allocations
                .get(uid)
                .and_then(|c| c.get(container))
                .is_some_and(|r| r.contains_key(resource))
        };
        let (available, plugin) = {
            let state = self.state();
            if held(&state) {
                return Ok(());
            }
            free(&state)?
        };
        let insufficient = |available: usize| DevicesError::Insufficient {
            resource: resource.to_string(),
            wanted,
            available,
        };
        if available.len() < wanted {
            return Err(insufficient(available.len()));
        }
        let preferred = if plugin.options.get_preferred_allocation_available {
            plugin.preferred(&available, wanted).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no preferred allocation; choosing in order");
                Vec::new()
            })
        } else {
            Vec::new()
        };
        // Reserved under the lock, so two pods never get one device.
        let ids = {
            let mut state = self.state();
            if held(&state) {
                return Ok(());
            }
            let (available, _) = free(&state)?;
            let ids = allocator::choose(&available, wanted, &preferred)
                .ok_or_else(|| insufficient(available.len()))?;
            let allocation =
                Allocation { device_ids: ids.clone(), pending: true, ..Default::default() };
            let entry = state.allocations.entry(uid.to_string()).or_default();
            entry
                .entry(container.to_string())
                .or_default()
                .insert(resource.to_string(), allocation);
            ids
        };
        match plugin.allocate(&ids).await {
            Ok(exposure) => {
                let mut state = self.state();
                if let Some(a) = state
                    .allocations
                    .get_mut(uid)
                    .and_then(|c| c.get_mut(container))
                    .and_then(|r| r.get_mut(resource))
                {
                    a.exposure = exposure;
                    a.pending = false;
                }
                self.save(&state);
                tracing::info!(pod = uid, container, resource, devices = ?ids, "devices allocated");
                Ok(())
            }
            Err(e) => {
                let mut state = self.state();
                if let Some(r) = state.allocations.get_mut(uid).and_then(|c| c.get_mut(container)) {
                    r.remove(resource);
                }
                Err(e)
            }
        }
    }

    /// Applies a container's devices to its CRI config (env, mounts,
    /// device nodes, annotations), after PreStartContainer where a plugin
    /// asks for it.
    pub async fn prepare(
        &self,
        uid: &str,
        container: &str,
        config: &mut cri::ContainerConfig,
    ) -> Result<(), DevicesError> {
        let held: Vec<(String, Allocation, Option<Arc<PluginClient>>)> = {
            let state = self.state();
            let Some(resources) = state.allocations.get(uid).and_then(|c| c.get(container)) else {
                return Ok(());
            };
            resources
                .iter()
                .map(|(name, a)| {
                    let plugin = state.resources.get(name).and_then(|r| r.plugin.clone());
                    (name.clone(), a.clone(), plugin)
                })
                .collect()
        };
        for (resource, allocation, plugin) in held {
            if let Some(plugin) = plugin.filter(|p| p.options.pre_start_required) {
                plugin.pre_start(&allocation.device_ids).await?;
            }
            let exposure = allocation.exposure;
            for (key, value) in exposure.envs {
                config.envs.retain(|kv| kv.key != key);
                config.envs.push(cri::KeyValue { key, value });
            }
            for (container_path, host_path, readonly) in exposure.mounts {
                config.mounts.retain(|m| m.container_path != container_path);
                config.mounts.push(cri::Mount {
                    container_path,
                    host_path,
                    readonly,
                    ..Default::default()
                });
            }
            for (container_path, host_path, permissions) in exposure.devices {
                config.devices.retain(|d| d.container_path != container_path);
                config.devices.push(cri::Device { container_path, host_path, permissions });
            }
            config.annotations.extend(exposure.annotations);
            tracing::debug!(pod = uid, container, resource = %resource, "devices applied");
        }
        Ok(())
    }

    /// Frees the pod's devices (it ended or is gone).
    pub fn release(&self, uid: &str) {
        let mut state = self.state();
        if state.allocations.remove(uid).is_some() {
            self.save(&state);
        }
    }

    /// Frees the devices of every pod not in `uids` (pods that went while
    /// the kubelet was down).
    pub fn retain_pods(&self, uids: &HashSet<String>) {
        let mut state = self.state();
        let before = state.allocations.len();
        state.allocations.retain(|uid, _| uids.contains(uid));
        if state.allocations.len() != before {
            self.save(&state);
        }
    }
}
