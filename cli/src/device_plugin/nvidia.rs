//! `berth device-plugin nvidia`: this machine's NVIDIA GPUs as
//! nvidia.com/gpu; the device id is the GPU's UUID. The GPUs are found
//! through NVML (libnvidia-ml, loaded at run time) where the library is
//! there, else through the driver's /proc/driver/nvidia/gpus and the
//! /dev/nvidiaN nodes. Allocate exposes the GPU's node and the driver's
//! control nodes and sets NVIDIA_VISIBLE_DEVICES. A GPU whose node (or
//! driver entry) goes away is reported unhealthy, and with NVML so is a GPU
//! that reports an Xid critical error other than those an application
//! causes itself, from then until the plugin restarts.

use super::devices::{device, DeviceList, DeviceStream};
use super::nvml::{self, Nvml};
use super::KubeletArgs;
use anyhow::{anyhow, bail, Result};
use berth_proto::device_plugin_v1beta1 as api;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RESOURCE: &str = "nvidia.com/gpu";
const GPUS: &str = "/proc/driver/nvidia/gpus";
/// Every container with a GPU needs these too, where the driver has them.
const CONTROL_NODES: &[&str] = &["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"];
/// Xids that an application's own faults raise (a bad memory access, a
/// preempted or killed context, an engine or video-processor exception):
/// they say nothing of the GPU's health, as in Kubernetes' NVIDIA plugin.
const APPLICATION_XIDS: &[u64] = &[13, 31, 43, 45, 68, 109];
/// How long one wait for an NVML event lasts: how soon the Xid watcher
/// notices that the plugin stops.
const EVENT_WAIT_MS: u32 = 500;

#[derive(clap::Args)]
pub struct NvidiaArgs {
    /// The NVML library to load. Without this flag, libnvidia-ml.so.1 from
    /// the dynamic loader's path, and where that is missing the driver's
    /// /proc/driver/nvidia files (then no Xid health)
    #[arg(long, env = "BERTH_NVML_LIBRARY")]
    nvml_library: Option<PathBuf>,
    /// Where this process sees the host's /dev: device nodes are looked for
    /// there, and handed to the kubelet as /dev/...
    #[arg(long, default_value = "/dev")]
    dev_root: PathBuf,
    /// Print the GPUs found, one a line, and exit
    #[arg(long)]
    list: bool,
    #[command(flatten)]
    kubelet: KubeletArgs,
}

/// One GPU as NVML or the driver describes it.
#[derive(Clone, Debug, PartialEq)]
struct Gpu {
    uuid: String,
    model: String,
    /// /dev/nvidia<minor>
    minor: u32,
    /// Total memory in bytes (NVML only).
    memory: Option<u64>,
    /// Its /proc/driver/nvidia/gpus/<bus id>/information file (without
    /// NVML), which must stay for the GPU to be healthy.
    info: Option<PathBuf>,
    /// Its NVML handle.
    handle: Option<nvml::Device>,
}

impl Gpu {
    fn node(&self) -> String {
        format!("/dev/nvidia{}", self.minor)
    }
}

/// `path` (under /dev) as this process sees it.
fn seen(dev_root: &Path, path: &str) -> PathBuf {
    dev_root.join(path.trim_start_matches("/dev/"))
}

/// Reads one GPU's `information` file (lines like `GPU UUID: GPU-...`).
fn parse_information(info: &Path, text: &str) -> Option<Gpu> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    Some(Gpu {
        uuid: field("GPU UUID").filter(|u| !u.is_empty())?,
        model: field("Model").unwrap_or_default(),
        minor: field("Device Minor")?.parse().ok()?,
        memory: None,
        info: Some(info.to_path_buf()),
        handle: None,
    })
}

/// The GPUs the driver's files list, or why there are none.
fn discover_driver(gpus: &Path, dev_root: &Path) -> Result<Vec<Gpu>> {
    let entries = match std::fs::read_dir(gpus) {
        Ok(e) => e,
        Err(e) => bail!(
            "no NVIDIA GPU on this machine: cannot read {} ({e}); is the NVIDIA driver loaded?",
            gpus.display()
        ),
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let info = entry.path().join("information");
        let Ok(text) = std::fs::read_to_string(&info) else { continue };
        match parse_information(&info, &text) {
            Some(gpu) if seen(dev_root, &gpu.node()).exists() => found.push(gpu),
            Some(gpu) => {
                tracing::warn!(uuid = %gpu.uuid, node = %gpu.node(), "GPU without its device node; skipped")
            }
            None => tracing::warn!(file = %info.display(), "unreadable GPU information; skipped"),
        }
    }
    if found.is_empty() {
        bail!(
            "no NVIDIA GPU on this machine: {} lists none with a /dev/nvidiaN node",
            gpus.display()
        );
    }
    found.sort_by_key(|g| g.minor);
    Ok(found)
}

/// The GPUs NVML lists. A GPU NVML cannot describe (fallen off the bus,
/// no permission) is left out with a warning.
fn discover_nvml(nvml: &Nvml) -> Result<Vec<Gpu>> {
    let count = nvml.device_count()?;
    let mut found = Vec::new();
    for index in 0..count {
        let describe = || -> Result<Gpu, nvml::NvmlError> {
            let handle = nvml.device(index)?;
            Ok(Gpu {
                uuid: nvml.uuid(handle)?,
                model: nvml.name(handle)?,
                minor: nvml.minor(handle)?,
                memory: Some(nvml.memory_total(handle)?),
                info: None,
                handle: Some(handle),
            })
        };
        match describe() {
            Ok(gpu) => found.push(gpu),
            Err(e) => tracing::warn!(index, error = %e, "GPU NVML cannot describe; skipped"),
        }
    }
    found.sort_by_key(|g| g.minor);
    Ok(found)
}

/// What discovery found, and the NVML it used (if any).
struct Found {
    gpus: Vec<Gpu>,
    nvml: Option<Arc<Nvml>>,
}

/// NVML where it loads, else the driver's files. A library named by flag
/// must load.
fn discover(args: &NvidiaArgs) -> Result<Found> {
    let library = args.nvml_library.clone().unwrap_or_else(|| nvml::DEFAULT_LIBRARY.into());
    let why_not = match Nvml::load(&library) {
        Ok(nvml) => {
            let gpus = discover_nvml(&nvml)?;
            if gpus.is_empty() {
                bail!("no NVIDIA GPU on this machine: NVML ({}) lists none", library.display());
            }
            return Ok(Found { gpus, nvml: Some(Arc::new(nvml)) });
        }
        Err(e) if args.nvml_library.is_some() => {
            bail!("cannot use NVML from {}: {e}", library.display())
        }
        Err(e) => e,
    };
    tracing::info!(library = %library.display(), reason = %why_not, "no NVML; reading the driver's files");
    let gpus = discover_driver(Path::new(GPUS), &args.dev_root)
        .map_err(|e| anyhow!("{e} (and NVML: {why_not})"))?;
    Ok(Found { gpus, nvml: None })
}

pub fn run(args: &NvidiaArgs) -> Result<()> {
    let Found { gpus, nvml } = discover(args)?;
    let via = if nvml.is_some() { "NVML" } else { "driver files" };
    let memory_mib = |g: &Gpu| g.memory.map(|m| m >> 20);
    if args.list {
        for g in &gpus {
            let memory = memory_mib(g).map(|m| format!("{m} MiB")).unwrap_or_else(|| "-".into());
            println!("{}\t{}\t{}\t{memory}\t{via}", g.uuid, g.node(), g.model);
        }
        return Ok(());
    }
    for g in &gpus {
        let memory_mib = memory_mib(g);
        tracing::info!(uuid = %g.uuid, model = %g.model, node = %g.node(), ?memory_mib, via, "GPU found");
        if !seen(&args.dev_root, &g.node()).exists() {
            tracing::warn!(uuid = %g.uuid, node = %g.node(), "the GPU's device node is missing; it stays unhealthy until it appears");
        }
    }
    let plugin = Arc::new(Nvidia {
        gpus,
        list: Arc::new(DeviceList::new(Vec::new())),
        dev_root: args.dev_root.clone(),
        failed: Mutex::new(BTreeMap::new()),
    });
    plugin.refresh();
    let watcher = plugin.clone();
    let watch = move |stop: tokio_util::sync::CancellationToken| async move {
        let xids = nvml.map(|nvml| XidWatch::start(nvml, watcher.clone()));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            watcher.refresh();
        }
        if let Some(xids) = xids {
            // Joining waits out one event wait at most.
            let _ = tokio::task::spawn_blocking(move || drop(xids)).await;
        }
        watcher.list.close();
    };
    let endpoint = super::endpoint("berth", RESOURCE);
    super::serve(NvidiaServer(plugin), watch, &args.kubelet, endpoint, RESOURCE, Default::default())
}

struct Nvidia {
    gpus: Vec<Gpu>,
    list: Arc<DeviceList>,
    dev_root: PathBuf,
    /// GPUs taken out of service for good, with why.
    failed: Mutex<BTreeMap<String, String>>,
}

impl Nvidia {
    fn present(&self, path: &str) -> bool {
        seen(&self.dev_root, path).exists()
    }

    fn health(&self) -> Vec<api::Device> {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        self.gpus
            .iter()
            .map(|g| {
                let healthy = self.present(&g.node())
                    && g.info.as_ref().is_none_or(|i| i.exists())
                    && !failed.contains_key(&g.uuid);
                device(&g.uuid, healthy)
            })
            .collect()
    }

    fn refresh(&self) {
        self.list.set(self.health());
    }

    /// Takes `uuids` out of service until the plugin restarts.
    fn fail(&self, uuids: &[String], why: &str) {
        {
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            for uuid in uuids {
                tracing::warn!(%uuid, why, "GPU unhealthy");
                failed.entry(uuid.clone()).or_insert_with(|| why.to_string());
            }
        }
        self.refresh();
    }

    /// How a container sees `uuids`: their nodes, the control nodes, and
    /// NVIDIA_VISIBLE_DEVICES for the NVIDIA container tooling.
    fn expose(&self, uuids: &[String]) -> Result<api::ContainerAllocateResponse, tonic::Status> {
        let mut devices = Vec::new();
        for uuid in uuids {
            let gpu = self
                .gpus
                .iter()
                .find(|g| &g.uuid == uuid)
                .ok_or_else(|| tonic::Status::invalid_argument(format!("no GPU {uuid}")))?;
            devices.push(node(&gpu.node()));
        }
        for control in CONTROL_NODES.iter().filter(|p| self.present(p)) {
            devices.push(node(control));
        }
        Ok(api::ContainerAllocateResponse {
            envs: [("NVIDIA_VISIBLE_DEVICES".to_string(), uuids.join(","))].into(),
            devices,
            ..Default::default()
        })
    }
}

fn node(path: &str) -> api::DeviceSpec {
    api::DeviceSpec {
        container_path: path.into(),
        host_path: path.into(),
        permissions: "rw".into(),
    }
}

/// The GPUs an Xid critical error takes out of service: none for the Xids
/// an application causes, else the GPU it names, or all of them when NVML
/// does not say which.
fn xid_victims(xid: u64, on: Option<&str>, all: &[String]) -> Vec<String> {
    if APPLICATION_XIDS.contains(&xid) {
        return Vec::new();
    }
    match on {
        Some(uuid) => vec![uuid.to_string()],
        None => all.to_vec(),
    }
}

/// The thread that waits for the GPUs' Xid events; stopped and joined on
/// drop.
struct XidWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl XidWatch {
    fn start(nvml: Arc<Nvml>, plugin: Arc<Nvidia>) -> XidWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("nvml-xid".into())
            .spawn(move || watch_xids(&nvml, &plugin, &stopped));
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the Xid watcher; GPU health is not watched");
                None
            }
        };
        XidWatch { stop, thread }
    }
}

impl Drop for XidWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn watch_xids(nvml: &Nvml, plugin: &Nvidia, stop: &AtomicBool) {
    let set = match nvml.event_set() {
        Ok(set) => set,
        Err(e) => {
            tracing::error!(error = %e, "no NVML event set; GPU health is not watched");
            return;
        }
    };
    let mut watched: Vec<(nvml::Device, String)> = Vec::new();
    for gpu in &plugin.gpus {
        let Some(handle) = gpu.handle else { continue };
        match set.register(handle, nvml::XID_CRITICAL_ERROR) {
            Ok(()) => watched.push((handle, gpu.uuid.clone())),
            Err(e) if e.code == nvml::ERROR_NOT_SUPPORTED => {
                tracing::warn!(uuid = %gpu.uuid, "the GPU reports no Xid events; its health is not watched")
            }
            Err(e) => plugin.fail(
                std::slice::from_ref(&gpu.uuid),
                &format!("cannot watch its Xid events: {e}"),
            ),
        }
    }
    if watched.is_empty() {
        return;
    }
    let all: Vec<String> = watched.iter().map(|(_, u)| u.clone()).collect();
    let pause = Duration::from_millis(EVENT_WAIT_MS.into());
    while !stop.load(Ordering::Relaxed) {
        let event = match set.wait(EVENT_WAIT_MS) {
            Ok(event) => event,
            Err(e) if e.code == nvml::ERROR_TIMEOUT => continue,
            Err(e) => {
                if e.code == nvml::ERROR_GPU_IS_LOST {
                    plugin.fail(&all, &e.to_string());
                } else {
                    tracing::warn!(error = %e, "waiting for NVML events");
                }
                // The same error may come back at once: pace the retries.
                std::thread::sleep(pause);
                continue;
            }
        };
        if event.event_type & nvml::XID_CRITICAL_ERROR == 0 {
            continue;
        }
        let on = watched
            .iter()
            .find(|(d, _)| *d == event.device)
            .map(|(_, u)| u.clone())
            .or_else(|| nvml.uuid(event.device).ok().filter(|u| all.contains(u)));
        let victims = xid_victims(event.data, on.as_deref(), &all);
        if victims.is_empty() {
            tracing::info!(xid = event.data, gpu = ?on, "Xid caused by an application; the GPU stays healthy");
        } else {
            plugin.fail(&victims, &format!("Xid {} critical error", event.data));
        }
    }
}

struct NvidiaServer(Arc<Nvidia>);

#[tonic::async_trait]
impl api::device_plugin_server::DevicePlugin for NvidiaServer {
    async fn get_device_plugin_options(
        &self,
        _: tonic::Request<api::Empty>,
    ) -> Result<tonic::Response<api::DevicePluginOptions>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(
        &self,
        _: tonic::Request<api::Empty>,
    ) -> Result<tonic::Response<DeviceStream>, tonic::Status> {
        Ok(tonic::Response::new(self.0.list.stream()))
    }

    async fn get_preferred_allocation(
        &self,
        _: tonic::Request<api::PreferredAllocationRequest>,
    ) -> Result<tonic::Response<api::PreferredAllocationResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("no preferred allocation"))
    }

    async fn allocate(
        &self,
        request: tonic::Request<api::AllocateRequest>,
    ) -> Result<tonic::Response<api::AllocateResponse>, tonic::Status> {
        let container_responses = request
            .into_inner()
            .container_requests
            .iter()
            .map(|r| self.0.expose(&r.devices_ids))
            .collect::<Result<_, _>>()?;
        Ok(tonic::Response::new(api::AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _: tonic::Request<api::PreStartContainerRequest>,
    ) -> Result<tonic::Response<api::PreStartContainerResponse>, tonic::Status> {
        Ok(tonic::Response::new(api::PreStartContainerResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drivers_information_file_names_the_gpu() {
        let text = "Model: \t\t NVIDIA H200\nIRQ:   \t 45\nGPU UUID: \t GPU-8a3b-11\nVideo BIOS: \t ??.??\nBus Type: \t PCIe\nDevice Minor: \t 0\nBus Location: \t 0000:00:05.0\n";
        let gpu = parse_information(Path::new("/x/information"), text).unwrap();
        assert_eq!(
            (gpu.uuid.as_str(), gpu.model.as_str(), gpu.minor),
            ("GPU-8a3b-11", "NVIDIA H200", 0)
        );
        assert!(parse_information(Path::new("/x"), "Model: X\n").is_none());
    }

    #[test]
    fn no_driver_means_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = discover_driver(&dir.path().join("gpus"), Path::new("/dev")).unwrap_err();
        assert!(err.to_string().contains("no NVIDIA GPU on this machine"), "{err}");
        std::fs::create_dir(dir.path().join("gpus")).unwrap();
        assert!(discover_driver(&dir.path().join("gpus"), Path::new("/dev")).is_err());
    }

    #[test]
    fn the_driver_files_need_the_node_under_the_dev_root() {
        let dir = tempfile::tempdir().unwrap();
        let gpu = dir.path().join("gpus/0000:00:05.0");
        std::fs::create_dir_all(&gpu).unwrap();
        std::fs::write(gpu.join("information"), "Model: X\nGPU UUID: GPU-1\nDevice Minor: 3\n")
            .unwrap();
        let dev = dir.path().join("dev");
        std::fs::create_dir(&dev).unwrap();
        assert!(discover_driver(&dir.path().join("gpus"), &dev).is_err());
        std::fs::write(dev.join("nvidia3"), b"").unwrap();
        let found = discover_driver(&dir.path().join("gpus"), &dev).unwrap();
        assert_eq!((found[0].uuid.as_str(), found[0].node()), ("GPU-1", "/dev/nvidia3".into()));
    }

    #[test]
    fn application_xids_leave_the_gpu_healthy() {
        let all = ["GPU-a".to_string(), "GPU-b".to_string()];
        for xid in APPLICATION_XIDS {
            assert!(xid_victims(*xid, Some("GPU-a"), &all).is_empty(), "Xid {xid}");
        }
        assert_eq!(xid_victims(79, Some("GPU-b"), &all), ["GPU-b"]);
        assert_eq!(xid_victims(48, None, &all), all);
    }
}
