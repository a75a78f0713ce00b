//! `berth device-plugin`: device plugins speaking the kubelet device-plugin
//! API v1beta1, for berth's agent or Kubernetes' kubelet. `sample`
//! advertises devices backed by files (for trying and testing the device
//! path end to end); `nvidia` advertises this machine's NVIDIA GPUs.

mod devices;
mod nvidia;
mod nvml;
mod sample;

use anyhow::{Context, Result};
use berth_kubelet::devices::plugin::{self, PluginRegistration};
use berth_proto::device_plugin_v1beta1 as api;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct DevicePluginArgs {
    #[command(subcommand)]
    plugin: Plugin,
}

#[derive(clap::Subcommand)]
enum Plugin {
    /// Advertise N devices backed by files in --dir; a device is unhealthy
    /// while the file <dir>/<id>.unhealthy exists
    Sample(sample::SampleArgs),
    /// Advertise this machine's NVIDIA GPUs as nvidia.com/gpu (device id:
    /// the GPU's UUID); exits non-zero when there is none
    Nvidia(nvidia::NvidiaArgs),
}

/// Where a plugin registers.
#[derive(clap::Args, Clone)]
struct KubeletArgs {
    /// The kubelet's Registration socket; the plugin's own socket goes
    /// beside it
    #[arg(long, default_value = "/var/lib/kubelet/device-plugins/kubelet.sock")]
    kubelet_socket: PathBuf,
}

pub fn run(args: &DevicePluginArgs) -> ExitCode {
    crate::init_logging();
    let result = match &args.plugin {
        Plugin::Sample(a) => sample::run(a),
        Plugin::Nvidia(a) => nvidia::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth device-plugin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A socket file name for `resource`, unique per resource.
fn endpoint(prefix: &str, resource: &str) -> String {
    let safe: String =
        resource.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    format!("{prefix}-{safe}.sock")
}

/// Serves `server` registered as `resource`, with `watch` (which follows
/// the devices' health) beside it, until SIGINT or SIGTERM.
fn serve<P, W>(
    server: P,
    watch: impl FnOnce(tokio_util::sync::CancellationToken) -> W,
    kubelet: &KubeletArgs,
    endpoint: String,
    resource: &str,
    options: api::DevicePluginOptions,
) -> Result<()>
where
    P: api::device_plugin_server::DevicePlugin,
    W: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
    runtime.block_on(async {
        let stop = tokio_util::sync::CancellationToken::new();
        let registration = PluginRegistration {
            kubelet_socket: kubelet.kubelet_socket.clone(),
            endpoint,
            resource_name: resource.to_string(),
            options,
            deadline: Duration::from_secs(10),
        };
        tracing::info!(resource, kubelet = %kubelet.kubelet_socket.display(), "device plugin starting");
        let (signalled, served, ()) = tokio::join!(
            crate::endpoints::stop_on_signal(stop.clone()),
            async {
                let served = plugin::serve(server, registration, stop.clone()).await;
                stop.cancel();
                served
            },
            watch(stop.clone())
        );
        signalled?;
        served.context("the device plugin stopped")
    })
}
