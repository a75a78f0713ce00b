//! The plugin side of the API, for device plugins built on berth: serve a
//! `DevicePlugin` on its own socket beside the kubelet's and register it,
//! and register again whenever the kubelet's socket is recreated (a
//! restarted kubelet forgets its plugins' sessions).

use super::error::DevicesError;
use super::registration::VERSION;
use api::device_plugin_server::{DevicePlugin, DevicePluginServer};
use api::registration_client::RegistrationClient;
use berth_proto::device_plugin_v1beta1 as api;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

/// Where and as what a plugin registers.
#[derive(Clone, Debug)]
pub struct PluginRegistration {
    /// The kubelet's Registration socket; the plugin's own socket goes in
    /// the same folder.
    pub kubelet_socket: PathBuf,
    /// The plugin's socket's file name.
    pub endpoint: String,
    pub resource_name: String,
    pub options: api::DevicePluginOptions,
    /// The deadline of each registration call.
    pub deadline: Duration,
}

async fn register(r: &PluginRegistration) -> Result<(), tonic::Status> {
    let endpoint =
        tonic::transport::Endpoint::from_shared(format!("unix://{}", r.kubelet_socket.display()))
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
            .connect_timeout(r.deadline)
            .timeout(r.deadline);
    let channel =
        endpoint.connect().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let request = api::RegisterRequest {
        version: VERSION.into(),
        endpoint: r.endpoint.clone(),
        resource_name: r.resource_name.clone(),
        options: Some(r.options),
    };
    match tokio::time::timeout(r.deadline, RegistrationClient::new(channel).register(request)).await
    {
        Ok(answer) => answer.map(|_| ()),
        Err(_) => Err(tonic::Status::deadline_exceeded("the kubelet did not answer")),
    }
}

/// The identity of the kubelet's socket file, which changes when a
/// kubelet binds it anew (an inode number may be reused at once; the
/// change time in nanoseconds is not).
fn socket_identity(path: &Path) -> Option<(u64, u64, i64, i64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}

/// Serves `plugin` and keeps it registered until `stop`. A refused
/// registration ends it with the kubelet's reason; a kubelet that is not
/// there yet is waited for. On `stop` the server shuts down gracefully,
/// for at most `deadline`: the plugin's ListAndWatch streams should end
/// when it stops.
pub async fn serve<P: DevicePlugin>(
    plugin: P,
    registration: PluginRegistration,
    stop: CancellationToken,
) -> Result<(), DevicesError> {
    let dir = registration.kubelet_socket.parent().unwrap_or(Path::new("/")).to_path_buf();
    let socket = dir.join(&registration.endpoint);
    // A plugin may start before the kubelet has made the folder.
    std::fs::create_dir_all(&dir).map_err(DevicesError::io(&dir))?;
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DevicesError::io(&socket)(e)),
    }
    let listener = tokio::net::UnixListener::bind(&socket).map_err(DevicesError::io(&socket))?;
    let server_stop = stop.child_token();
    let server = tonic::transport::Server::builder()
        .add_service(DevicePluginServer::new(plugin))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), server_stop.cancelled());
    tokio::pin!(server);
    let mut registered_with = None;
    let result = loop {
        let kubelet = socket_identity(&registration.kubelet_socket);
        if kubelet.is_some() && kubelet != registered_with {
            match register(&registration).await {
                Ok(()) => {
                    tracing::info!(
                        resource = %registration.resource_name,
                        kubelet = %registration.kubelet_socket.display(),
                        "registered with the kubelet"
                    );
                    registered_with = kubelet;
                }
                Err(status) if status.code() == tonic::Code::InvalidArgument => {
                    break Err(DevicesError::Registration(status.message().to_string()));
                }
                Err(status) => {
                    tracing::warn!(error = %status, "could not register with the kubelet; retrying")
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            served = &mut server => {
                break served.map_err(|source| DevicesError::Serve { path: socket.clone(), source });
            }
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    server_stop.cancel();
    let _ = tokio::time::timeout(registration.deadline, server).await;
    let _ = std::fs::remove_file(&socket);
    result
}
