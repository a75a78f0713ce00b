//! The CRI RuntimeService and ImageService over gRPC on a unix socket: each
//! call is translated to the [`Runtime`] or the image store, timed and
//! counted per method.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use berth_proto::cri_v1 as cri;
use cri::image_service_server::{ImageService, ImageServiceServer};
use cri::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::container::disk_usage;
use super::error::{CriError, Result};
use super::runtime::{Runtime, RuntimeConfig};
use super::state::now_nanos;
use super::streaming::Streams;
use crate::image::{Image, ImageError, ImageSource, PullOptions};

/// The runtime API version this service speaks.
const CRI_VERSION: &str = "v1";
const RUNTIME_NAME: &str = "berth";

/// A bound CRI server: its socket exists and accepts connections once
/// [`CriServer::serve`] runs.
pub struct CriServer {
    runtime: Arc<Runtime>,
    listener: UnixListener,
    socket: std::path::PathBuf,
    streams: Arc<Streams>,
}

impl CriServer {
    /// Opens the runtime (finding what a previous run left) and binds the
    /// socket, replacing a stale one.
    pub async fn bind(config: RuntimeConfig) -> Result<CriServer> {
        let runtime = Runtime::open(&config).await?;
        let socket = config.socket.clone();
        if let Some(dir) = socket.parent() {
            std::fs::create_dir_all(dir).map_err(CriError::io(dir))?;
        }
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(CriError::io(&socket)(e)),
        }
        let listener = UnixListener::bind(&socket).map_err(CriError::io(&socket))?;
        // Whoever reaches the socket runs anything as root: only root may.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(CriError::io(&socket))?;
        let streams = Streams::bind()?;
        tracing::info!(socket = %socket.display(), root = %runtime.root().display(), "CRI runtime service listening");
        Ok(CriServer { runtime, listener, socket, streams })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Serves until `stop` fires, then stops the runtime's watchers and
    /// removes the socket. Containers and sandboxes keep running.
    pub async fn serve(self, stop: CancellationToken) -> Result<()> {
        let service =
            Arc::new(CriService { runtime: self.runtime.clone(), streams: self.streams.clone() });
        let grpc = tonic::transport::Server::builder()
            .add_service(RuntimeServiceServer::from_arc(service.clone()))
            .add_service(ImageServiceServer::from_arc(service))
            .serve_with_incoming_shutdown(UnixListenerStream::new(self.listener), stop.cancelled());
        let streams = self.streams.clone().serve(self.runtime.clone(), stop.clone());
        let (served, ()) = tokio::join!(grpc, streams);
        self.runtime.shutdown().await;
        let _ = std::fs::remove_file(&self.socket);
        tracing::info!(socket = %self.socket.display(), "CRI runtime service stopped");
        served.map_err(|e| CriError::Serve(e.to_string()))
    }
}

/// Binds and serves until `stop` fires.
pub async fn serve(config: RuntimeConfig, stop: CancellationToken) -> Result<()> {
    CriServer::bind(config).await?.serve(stop).await
}

struct CriService {
    runtime: Arc<Runtime>,
    streams: Arc<Streams>,
}

/// Runs one call, logging failures and recording its duration and outcome
/// as `berth_kubelet_cri_requests_total` and
/// `berth_kubelet_cri_request_duration_seconds`.
async fn observe<T>(
    method: &'static str,
    call: impl Future<Output = Result<T>>,
) -> std::result::Result<Response<T>, Status> {
    let started = Instant::now();
    let result = call.await.map_err(|e| {
        // Clients poll for objects that are gone; that is no failure of ours.
        if matches!(e, CriError::NotFound { .. }) {
            tracing::debug!(method, error = %e, "CRI call for a missing object");
        } else {
            tracing::warn!(method, error = %e, "CRI call failed");
        }
        Status::from(e)
    });
    let code = result.as_ref().map_or_else(|s| s.code(), |_| tonic::Code::Ok);
    metrics::counter!("berth_kubelet_cri_requests_total", "method" => method, "code" => format!("{code:?}")).increment(1);
    metrics::histogram!("berth_kubelet_cri_request_duration_seconds", "method" => method)
        .record(started.elapsed().as_secs_f64());
    result.map(Response::new)
}

fn image_query(spec: Option<&cri::ImageSpec>) -> Result<String> {
    spec.map(|s| s.image.clone())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CriError::InvalidArgument("no image given".into()))
}

fn to_cri_image(image: &Image) -> cri::Image {
    let user = image.config.user.clone().unwrap_or_default();
    let name = user.split(':').next().unwrap_or_default();
    let (uid, username) = match name.parse::<i64>() {
        Ok(n) => (Some(cri::Int64Value { value: n }), String::new()),
        Err(_) => (None, name.to_string()),
    };
    cri::Image {
        id: image.id.to_string(),
        repo_tags: image.names.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(cri::ImageSpec { image: image.id.to_string(), ..Default::default() }),
        pinned: false,
    }
}

#[tonic::async_trait]
impl RuntimeService for CriService {
    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> std::result::Result<Response<cri::VersionResponse>, Status> {
        observe("Version", async {
            Ok(cri::VersionResponse {
                version: "0.1.0".into(),
                runtime_name: RUNTIME_NAME.into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime_api_version: CRI_VERSION.into(),
            })
        })
        .await
    }

    async fn status(
        &self,
        _: Request<cri::StatusRequest>,
    ) -> std::result::Result<Response<cri::StatusResponse>, Status> {
        observe("Status", async {
            let condition =
                |kind: &str, status: bool, reason: &str, message: &str| cri::RuntimeCondition {
                    r#type: kind.into(),
                    status,
                    reason: reason.into(),
                    message: message.into(),
                };
            Ok(cri::StatusResponse {
                status: Some(cri::RuntimeStatus {
                    conditions: vec![
                        condition("RuntimeReady", true, "", ""),
                        // Pods get their own network namespace with loopback
                        // only until CNI plugins are wired in.
                        condition(
                            "NetworkReady",
                            false,
                            "NoNetworkPlugin",
                            "pod network namespaces have loopback only; CNI is not configured",
                        ),
                    ],
                }),
                info: Default::default(),
            })
        })
        .await
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> std::result::Result<Response<cri::RunPodSandboxResponse>, Status> {
        let req = request.into_inner();
        observe("RunPodSandbox", async {
            if !req.runtime_handler.is_empty() {
                return Err(CriError::InvalidArgument(format!(
                    "unknown runtime handler {:?}",
                    req.runtime_handler
                )));
            }
            let config =
                req.config.ok_or_else(|| CriError::InvalidArgument("no sandbox config".into()))?;
            let id = self.runtime.run_sandbox(config).await?;
            Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
        })
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> std::result::Result<Response<cri::StopPodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        observe("StopPodSandbox", async {
            self.runtime.stop_sandbox(&id).await?;
            Ok(cri::StopPodSandboxResponse {})
        })
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> std::result::Result<Response<cri::RemovePodSandboxResponse>, Status> {
        let id = request.into_inner().pod_sandbox_id;
        observe("RemovePodSandbox", async {
            self.runtime.remove_sandbox(&id).await?;
            Ok(cri::RemovePodSandboxResponse {})
        })
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> std::result::Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let req = request.into_inner();
        observe("PodSandboxStatus", async {
            self.runtime.sandbox_status(&req.pod_sandbox_id, req.verbose)
        })
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> std::result::Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter;
        observe("ListPodSandbox", async {
            Ok(cri::ListPodSandboxResponse { items: self.runtime.list_sandboxes(filter) })
        })
        .await
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> std::result::Result<Response<cri::CreateContainerResponse>, Status> {
        let req = request.into_inner();
        observe("CreateContainer", async {
            let config = req
                .config
                .ok_or_else(|| CriError::InvalidArgument("no container config".into()))?;
            let id = self.runtime.create_container(&req.pod_sandbox_id, config).await?;
            Ok(cri::CreateContainerResponse { container_id: id })
        })
        .await
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> std::result::Result<Response<cri::StartContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        observe("StartContainer", async {
            self.runtime.start_container(&id).await?;
            Ok(cri::StartContainerResponse {})
        })
        .await
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> std::result::Result<Response<cri::StopContainerResponse>, Status> {
        let req = request.into_inner();
        observe("StopContainer", async {
            self.runtime.stop_container(&req.container_id, req.timeout).await?;
            Ok(cri::StopContainerResponse {})
        })
        .await
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> std::result::Result<Response<cri::RemoveContainerResponse>, Status> {
        let id = request.into_inner().container_id;
        observe("RemoveContainer", async {
            self.runtime.remove_container(&id).await?;
            Ok(cri::RemoveContainerResponse {})
        })
        .await
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> std::result::Result<Response<cri::ListContainersResponse>, Status> {
        let filter = request.into_inner().filter;
        observe("ListContainers", async {
            Ok(cri::ListContainersResponse { containers: self.runtime.list_containers(filter) })
        })
        .await
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> std::result::Result<Response<cri::ContainerStatusResponse>, Status> {
        let req = request.into_inner();
        observe("ContainerStatus", async {
            self.runtime.container_status(&req.container_id, req.verbose)
        })
        .await
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> std::result::Result<Response<cri::UpdateContainerResourcesResponse>, Status> {
        let req = request.into_inner();
        observe("UpdateContainerResources", async {
            self.runtime.update_resources(&req.container_id, req.linux).await?;
            Ok(cri::UpdateContainerResourcesResponse {})
        })
        .await
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> std::result::Result<Response<cri::ExecSyncResponse>, Status> {
        let req = request.into_inner();
        observe("ExecSync", async {
            self.runtime.exec_sync(&req.container_id, req.cmd, req.timeout).await
        })
        .await
    }

    async fn exec(
        &self,
        request: Request<cri::ExecRequest>,
    ) -> std::result::Result<Response<cri::ExecResponse>, Status> {
        let req = request.into_inner();
        observe("Exec", async {
            Ok(cri::ExecResponse { url: self.streams.exec(&self.runtime, req)? })
        })
        .await
    }

    async fn attach(
        &self,
        request: Request<cri::AttachRequest>,
    ) -> std::result::Result<Response<cri::AttachResponse>, Status> {
        let req = request.into_inner();
        observe("Attach", async {
            Ok(cri::AttachResponse { url: self.streams.attach(&self.runtime, req)? })
        })
        .await
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> std::result::Result<Response<cri::ContainerStatsResponse>, Status> {
        let id = request.into_inner().container_id;
        observe("ContainerStats", async {
            Ok(cri::ContainerStatsResponse { stats: Some(self.runtime.container_stats(&id)?) })
        })
        .await
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> std::result::Result<Response<cri::ListContainerStatsResponse>, Status> {
        let filter = request.into_inner().filter;
        observe("ListContainerStats", async {
            Ok(cri::ListContainerStatsResponse {
                stats: self.runtime.list_container_stats(filter)?,
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl ImageService for CriService {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> std::result::Result<Response<cri::ListImagesResponse>, Status> {
        let filter = request.into_inner().filter.and_then(|f| f.image);
        observe("ListImages", async {
            let images = self.runtime.images();
            let wanted = filter.map(|s| s.image).filter(|s| !s.is_empty());
            let list = match wanted {
                Some(q) => images.status(&q)?.into_iter().collect(),
                None => images.list(),
            };
            Ok(cri::ListImagesResponse { images: list.iter().map(to_cri_image).collect() })
        })
        .await
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> std::result::Result<Response<cri::ImageStatusResponse>, Status> {
        let req = request.into_inner();
        observe("ImageStatus", async {
            let query = image_query(req.image.as_ref())?;
            let image = match self.runtime.images().status(&query) {
                Ok(found) => found,
                // A name that cannot exist is simply not present.
                Err(ImageError::InvalidReference { .. }) => None,
                Err(e) => return Err(e.into()),
            };
            let mut info = std::collections::BTreeMap::new();
            if req.verbose {
                if let Some(i) = &image {
                    let layers: Vec<String> = i.layers.iter().map(|l| l.digest.to_string()).collect();
                    let detail = serde_json::json!({"config": i.config, "platform": i.platform, "layers": layers});
                    info.insert("info".to_string(), detail.to_string());
                }
            }
            Ok(cri::ImageStatusResponse { image: image.as_ref().map(to_cri_image), info })
        })
        .await
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> std::result::Result<Response<cri::PullImageResponse>, Status> {
        let req = request.into_inner();
        observe("PullImage", async {
            let query = image_query(req.image.as_ref())?;
            if req.auth.as_ref().is_some_and(|a| *a != cri::AuthConfig::default()) {
                // Credentials come from the store's registry configuration.
                tracing::warn!(image = %query, "ignoring per-request registry credentials");
            }
            let source: ImageSource = query.parse()?;
            // The store's pull future is not Send (a closure over borrowed
            // layer descriptors), which a gRPC handler must be; it runs to
            // completion on a blocking thread instead, still on this runtime.
            let images = self.runtime.images().clone();
            let handle = tokio::runtime::Handle::current();
            let image = tokio::task::spawn_blocking(move || {
                handle.block_on(images.pull(&source, &PullOptions::default()))
            })
            .await
            .map_err(|e| CriError::Task(format!("pull: {e}")))??;
            tracing::info!(image = %query, id = %image.id, "image pulled");
            Ok(cri::PullImageResponse { image_ref: image.id.to_string() })
        })
        .await
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> std::result::Result<Response<cri::RemoveImageResponse>, Status> {
        let req = request.into_inner();
        observe("RemoveImage", async {
            let query = image_query(req.image.as_ref())?;
            match self.runtime.images().remove(&query) {
                Ok(()) | Err(ImageError::NotFound(_)) => Ok(cri::RemoveImageResponse {}),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn image_fs_info(
        &self,
        _: Request<cri::ImageFsInfoRequest>,
    ) -> std::result::Result<Response<cri::ImageFsInfoResponse>, Status> {
        observe("ImageFsInfo", async {
            let root = self.runtime.images().root().to_path_buf();
            // Layers and blobs; container rootfs are mounts and counted per container.
            let (bytes, inodes) = tokio::task::spawn_blocking(move || {
                ["blobs", "layers"]
                    .iter()
                    .map(|d| disk_usage(&root.join(d)))
                    .fold((0, 0), |(b, i), (db, di)| (b + db, i + di))
            })
            .await
            .map_err(|e| CriError::Task(format!("disk usage: {e}")))?;
            let usage = cri::FilesystemUsage {
                timestamp: now_nanos(),
                fs_id: Some(cri::FilesystemIdentifier {
                    mountpoint: self.runtime.images().root().display().to_string(),
                }),
                used_bytes: Some(cri::UInt64Value { value: bytes }),
                inodes_used: Some(cri::UInt64Value { value: inodes }),
            };
            Ok(cri::ImageFsInfoResponse {
                image_filesystems: vec![usage],
                container_filesystems: Vec::new(),
            })
        })
        .await
    }
}
