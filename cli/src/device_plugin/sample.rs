//! `berth device-plugin sample`: N devices of a resource named by flag,
//! each backed by a file `<dir>/<id>` that Allocate mounts read-only at
//! /devices/<id> in the container, with the ids in the env. A device is
//! unhealthy while `<dir>/<id>.unhealthy` exists.

use super::devices::{device, DeviceList, DeviceStream};
use super::KubeletArgs;
use anyhow::{bail, Context, Result};
use berth_proto::device_plugin_v1beta1 as api;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The env variable that lists a container's sample devices.
const ENV: &str = "BERTH_SAMPLE_DEVICES";
/// The sample asks for every optional call, so they all get exercised.
const OPTIONS: api::DevicePluginOptions =
    api::DevicePluginOptions { pre_start_required: true, get_preferred_allocation_available: true };

#[derive(clap::Args)]
pub struct SampleArgs {
    /// The extended resource advertised
    #[arg(long, default_value = "example.com/dev")]
    resource: String,
    /// How many devices (dev-0 .. dev-N-1)
    #[arg(long, default_value_t = 2)]
    devices: usize,
    /// Where the device files (and health files) are
    #[arg(long)]
    dir: PathBuf,
    #[command(flatten)]
    kubelet: KubeletArgs,
}

struct Sample {
    dir: PathBuf,
    ids: Vec<String>,
    list: Arc<DeviceList>,
}

impl Sample {
    fn health(&self) -> Vec<api::Device> {
        let unhealthy = |id: &String| self.dir.join(format!("{id}.unhealthy")).exists();
        self.ids.iter().map(|id| device(id, !unhealthy(id))).collect()
    }

    fn known(&self, ids: &[String]) -> Result<(), tonic::Status> {
        match ids.iter().find(|id| !self.ids.contains(id)) {
            Some(id) => Err(tonic::Status::invalid_argument(format!("no device {id:?}"))),
            None => Ok(()),
        }
    }
}

pub fn run(args: &SampleArgs) -> Result<()> {
    if args.devices == 0 {
        bail!("--devices must be at least 1");
    }
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let ids: Vec<String> = (0..args.devices).map(|i| format!("dev-{i}")).collect();
    for id in &ids {
        let path = args.dir.join(id);
        std::fs::write(&path, format!("{id}\n"))
            .with_context(|| format!("write {}", path.display()))?;
    }
    let list = Arc::new(DeviceList::new(Vec::new()));
    let sample = Arc::new(Sample { dir: args.dir.clone(), ids, list: list.clone() });
    list.set(sample.health());
    let watcher = sample.clone();
    let watch = move |stop: tokio_util::sync::CancellationToken| async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return watcher.list.close(),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            watcher.list.set(watcher.health());
        }
    };
    let endpoint = super::endpoint("berth-sample", &args.resource);
    super::serve(SampleServer(sample), watch, &args.kubelet, endpoint, &args.resource, OPTIONS)
}

struct SampleServer(Arc<Sample>);

#[tonic::async_trait]
impl api::device_plugin_server::DevicePlugin for SampleServer {
    async fn get_device_plugin_options(
        &self,
        _: tonic::Request<api::Empty>,
    ) -> Result<tonic::Response<api::DevicePluginOptions>, tonic::Status> {
        Ok(tonic::Response::new(OPTIONS))
    }

    type ListAndWatchStream = DeviceStream;

    async fn list_and_watch(
        &self,
        _: tonic::Request<api::Empty>,
    ) -> Result<tonic::Response<DeviceStream>, tonic::Status> {
        Ok(tonic::Response::new(self.0.list.stream()))
    }

    /// The highest-numbered available devices first, so the choice is
    /// visibly the plugin's.
    async fn get_preferred_allocation(
        &self,
        request: tonic::Request<api::PreferredAllocationRequest>,
    ) -> Result<tonic::Response<api::PreferredAllocationResponse>, tonic::Status> {
        let mut container_responses = Vec::new();
        for r in request.into_inner().container_requests {
            let mut ids = r.must_include_device_i_ds.clone();
            let mut available = r.available_device_i_ds.clone();
            available.sort();
            for id in available.into_iter().rev() {
                if ids.len() >= r.allocation_size.max(0) as usize {
                    break;
                }
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            container_responses
                .push(api::ContainerPreferredAllocationResponse { device_i_ds: ids });
        }
        Ok(tonic::Response::new(api::PreferredAllocationResponse { container_responses }))
    }

    async fn allocate(
        &self,
        request: tonic::Request<api::AllocateRequest>,
    ) -> Result<tonic::Response<api::AllocateResponse>, tonic::Status> {
        let mut container_responses = Vec::new();
        for r in request.into_inner().container_requests {
            self.0.known(&r.devices_ids)?;
            let mounts = r
                .devices_ids
                .iter()
                .map(|id| api::Mount {
                    container_path: format!("/devices/{id}"),
                    host_path: self.0.dir.join(id).display().to_string(),
                    read_only: true,
                })
                .collect();
            tracing::info!(devices = ?r.devices_ids, "allocated");
            container_responses.push(api::ContainerAllocateResponse {
                envs: [(ENV.to_string(), r.devices_ids.join(","))].into(),
                mounts,
                ..Default::default()
            });
        }
        Ok(tonic::Response::new(api::AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        request: tonic::Request<api::PreStartContainerRequest>,
    ) -> Result<tonic::Response<api::PreStartContainerResponse>, tonic::Status> {
        self.0.known(&request.into_inner().devices_ids)?;
        Ok(tonic::Response::new(api::PreStartContainerResponse {}))
    }
}
