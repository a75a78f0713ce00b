//! What the plugins share: the advertised device list, sent to every
//! ListAndWatch stream whenever it changes.

use berth_proto::device_plugin_v1beta1 as api;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

pub type DeviceStream = ReceiverStream<Result<api::ListAndWatchResponse, tonic::Status>>;

/// The current device list; the watchers see each change.
pub struct DeviceList {
    tx: watch::Sender<Vec<api::Device>>,
    closed: tokio_util::sync::CancellationToken,
}

impl DeviceList {
    pub fn new(devices: Vec<api::Device>) -> DeviceList {
        DeviceList { tx: watch::channel(devices).0, closed: Default::default() }
    }

    /// Replaces the list; watchers hear of it only if it changed.
    pub fn set(&self, devices: Vec<api::Device>) {
        self.tx.send_if_modified(|current| {
            let changed = *current != devices;
            *current = devices;
            changed
        });
    }

    /// Ends every stream (the plugin is stopping).
    pub fn close(&self) {
        self.closed.cancel();
    }

    /// A ListAndWatch stream: the list now, then every change. Its
    /// forwarding task ends when the kubelet drops the stream or the list
    /// is closed.
    pub fn stream(&self) -> DeviceStream {
        let mut rx = self.tx.subscribe();
        let closed = self.closed.clone();
        let (out, stream) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let devices = rx.borrow_and_update().clone();
                let message = api::ListAndWatchResponse { devices };
                if out.send(Ok(message)).await.is_err() {
                    return;
                }
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { return },
                    _ = out.closed() => return,
                    _ = closed.cancelled() => return,
                }
            }
        });
        ReceiverStream::new(stream)
    }
}

pub fn device(id: &str, healthy: bool) -> api::Device {
    let health = if healthy { berth_kubelet::devices::HEALTHY } else { "Unhealthy" };
    api::Device { id: id.to_string(), health: health.into(), topology: None }
}
