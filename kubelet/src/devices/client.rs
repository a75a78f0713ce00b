//! The kubelet's client of one plugin's socket. Every call has a deadline,
//! so a plugin that hangs or answers garbage costs a failed call, never a
//! stuck kubelet.

use super::checkpoint::Exposure;
use super::error::DevicesError;
use api::device_plugin_client::DevicePluginClient;
use berth_proto::device_plugin_v1beta1 as api;
use std::future::Future;
use std::path::Path;
use std::time::Duration;
use tonic::transport::Channel;

pub(super) struct PluginClient {
    resource: String,
    client: DevicePluginClient<Channel>,
    pub options: api::DevicePluginOptions,
    deadline: Duration,
}

impl PluginClient {
    /// Connects to the plugin's socket and asks for its options.
    pub async fn connect(
        resource: &str,
        socket: &Path,
        deadline: Duration,
    ) -> Result<PluginClient, DevicesError> {
        let failed = |call, message: String| DevicesError::Plugin {
            resource: resource.to_string(),
            call,
            message,
        };
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))
                .map_err(|e| failed("connect", e.to_string()))?
                .connect_timeout(deadline)
                .timeout(deadline);
        let channel = tokio::time::timeout(deadline, endpoint.connect())
            .await
            .map_err(|_| failed("connect", format!("no connection within {deadline:?}")))?
            .map_err(|e| failed("connect", e.to_string()))?;
        let mut me = PluginClient {
            resource: resource.to_string(),
            client: DevicePluginClient::new(channel),
            options: Default::default(),
            deadline,
        };
        let mut client = me.client.clone();
        me.options = me
            .call("GetDevicePluginOptions", client.get_device_plugin_options(api::Empty {}))
            .await?;
        Ok(me)
    }

    async fn call<T>(
        &self,
        call: &'static str,
        f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, DevicesError> {
        let failed = |message: String| DevicesError::Plugin {
            resource: self.resource.clone(),
            call,
            message,
        };
        match tokio::time::timeout(self.deadline, f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(failed(status.to_string())),
            Err(_) => Err(failed(format!("no answer within {:?}", self.deadline))),
        }
    }

    /// The device list stream; the first answer within the deadline, the
    /// updates whenever the plugin sends them.
    pub async fn list_and_watch(
        &self,
    ) -> Result<tonic::Streaming<api::ListAndWatchResponse>, DevicesError> {
        let mut client = self.client.clone();
        self.call("ListAndWatch", client.list_and_watch(api::Empty {})).await
    }

    /// The plugin's pick of `size` among `available`; only called when its
    /// options say it has one.
    pub async fn preferred(
        &self,
        available: &[String],
        size: usize,
    ) -> Result<Vec<String>, DevicesError> {
        let mut client = self.client.clone();
        let request = api::PreferredAllocationRequest {
            container_requests: vec![api::ContainerPreferredAllocationRequest {
                available_device_i_ds: available.to_vec(),
                must_include_device_i_ds: Vec::new(),
                allocation_size: i32::try_from(size).unwrap_or(i32::MAX),
            }],
        };
        let response =
            self.call("GetPreferredAllocation", client.get_preferred_allocation(request)).await?;
        Ok(response
            .container_responses
            .into_iter()
            .next()
            .map(|r| r.device_i_ds)
            .unwrap_or_default())
    }

    /// How to expose `ids` to one container.
    pub async fn allocate(&self, ids: &[String]) -> Result<Exposure, DevicesError> {
        let mut client = self.client.clone();
        let request = api::AllocateRequest {
            container_requests: vec![api::ContainerAllocateRequest { devices_ids: ids.to_vec() }],
        };
        let response = self.call("Allocate", client.allocate(request)).await?;
        let [r] = <[api::ContainerAllocateResponse; 1]>::try_from(response.container_responses)
            .map_err(|got| DevicesError::Plugin {
                resource: self.resource.clone(),
                call: "Allocate",
                message: format!("{} container responses for 1 container request", got.len()),
            })?;
        Ok(Exposure {
            envs: r.envs,
            mounts: r
                .mounts
                .into_iter()
                .map(|m| (m.container_path, m.host_path, m.read_only))
                .collect(),
            devices: r
                .devices
                .into_iter()
                .map(|d| (d.container_path, d.host_path, d.permissions))
                .collect(),
            annotations: r.annotations,
        })
    }

    pub async fn pre_start(&self, ids: &[String]) -> Result<(), DevicesError> {
        let mut client = self.client.clone();
        let request = api::PreStartContainerRequest { devices_ids: ids.to_vec() };
        self.call("PreStartContainer", client.pre_start_container(request)).await.map(|_| ())
    }
}
