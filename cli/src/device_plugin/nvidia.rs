//! `berth device-plugin nvidia`: this machine's NVIDIA GPUs as
//! nvidia.com/gpu, found through the driver's /proc/driver/nvidia/gpus and
//! the /dev/nvidiaN nodes; the device id is the GPU's UUID. Allocate
//! exposes the GPU's node and the driver's control nodes and sets
//! NVIDIA_VISIBLE_DEVICES. A GPU whose node or driver entry goes away is
//! reported unhealthy.

use super::devices::{device, DeviceList, DeviceStream};
use super::KubeletArgs;
use anyhow::{bail, Result};
use berth_proto::device_plugin_v1beta1 as api;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const RESOURCE: &str = "nvidia.com/gpu";
const GPUS: &str = "/proc/driver/nvidia/gpus";
/// Every container with a GPU needs these too, where the driver has them.
const CONTROL_NODES: &[&str] = &["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"];

#[derive(clap::Args)]
pub struct NvidiaArgs {
    #[command(flatten)]
    kubelet: KubeletArgs,
}

/// One GPU as the driver describes it.
#[derive(Clone, Debug, PartialEq)]
struct Gpu {
    uuid: String,
    model: String,
    /// /dev/nvidia<minor>
    minor: u32,
    /// Its /proc/driver/nvidia/gpus/<bus id>/information file.
    info: PathBuf,
}

impl Gpu {
    fn node(&self) -> String {
        format!("/dev/nvidia{}", self.minor)
    }

    fn healthy(&self) -> bool {
        self.info.exists() && Path::new(&self.node()).exists()
    }
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
        info: info.to_path_buf(),
    })
}

/// The GPUs the driver lists, or why there are none.
fn discover(gpus: &Path) -> Result<Vec<Gpu>> {
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
            Some(gpu) if Path::new(&gpu.node()).exists() => found.push(gpu),
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

pub fn run(args: &NvidiaArgs) -> Result<()> {
    let gpus = discover(Path::new(GPUS))?;
    for g in &gpus {
        tracing::info!(uuid = %g.uuid, model = %g.model, node = %g.node(), "GPU found");
    }
    let list = Arc::new(DeviceList::new(health(&gpus)));
    let plugin = Arc::new(Nvidia { gpus, list });
    let watcher = plugin.clone();
    let watch = move |stop: tokio_util::sync::CancellationToken| async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return watcher.list.close(),
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            watcher.list.set(health(&watcher.gpus));
        }
    };
    let endpoint = super::endpoint("berth", RESOURCE);
    super::serve(NvidiaServer(plugin), watch, &args.kubelet, endpoint, RESOURCE, Default::default())
}

fn health(gpus: &[Gpu]) -> Vec<api::Device> {
    gpus.iter().map(|g| device(&g.uuid, g.healthy())).collect()
}

struct Nvidia {
    gpus: Vec<Gpu>,
    list: Arc<DeviceList>,
}

impl Nvidia {
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
        for control in CONTROL_NODES.iter().filter(|p| Path::new(p).exists()) {
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
        let err = discover(&dir.path().join("gpus")).unwrap_err().to_string();
        assert!(err.contains("no NVIDIA GPU on this machine"), "{err}");
        std::fs::create_dir(dir.path().join("gpus")).unwrap();
        assert!(discover(&dir.path().join("gpus")).is_err());
    }
}
