//! A container's image, pulled as its imagePullPolicy says, with
//! Kubernetes' back-off after a failed pull: the container waits with
//! reason ErrImagePull right after a failure and ImagePullBackOff until the
//! next try (10 s, doubling, at most 5 minutes), with Failed and BackOff
//! events on the pod.

use berth_client::EventRecorder;
use berth_proto::core_v1::{Container, Pod};
use berth_proto::cri_v1 as cri;
use cri::image_service_client::ImageServiceClient;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const BACKOFF_START: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Why a container waits for its image.
pub(super) struct Waiting {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

struct Backoff {
    next_try: Instant,
    delay: Duration,
    error: String,
}

pub(super) struct Puller {
    images: ImageServiceClient<Channel>,
    events: EventRecorder,
    /// Failed pulls by pod uid and container name.
    backoff: Mutex<HashMap<(String, String), Backoff>>,
}

impl Puller {
    pub(super) fn new(images: ImageServiceClient<Channel>, events: EventRecorder) -> Puller {
        Puller { images, events, backoff: Default::default() }
    }

    /// The image id to create `c` from, or why it has none yet; Err only
    /// when the runtime could not be asked.
    pub(super) async fn image(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<Result<String, Waiting>, tonic::Status> {
        let uid = pod.metadata.as_ref().map(|m| m.uid.clone()).unwrap_or_default();
        let key = (uid, c.name.clone());
        let image = &c.image;
        if let Some(b) = self.backoff.lock().expect("no panic while pulling").get(&key) {
            if Instant::now() < b.next_try {
                let message = format!("Back-off pulling image {image:?}: {}", b.error);
                self.events.normal(pod, "BackOff", message.clone());
                return Ok(Err(Waiting { reason: "ImagePullBackOff", message }));
            }
        }
        let wanted = Some(cri::ImageSpec { image: image.clone(), ..Default::default() });
        let mut images = self.images.clone();
        let present = images
            .image_status(cri::ImageStatusRequest { image: wanted.clone(), verbose: false })
            .await?
            .into_inner()
            .image
            .map(|i| i.id);
        match (present, c.image_pull_policy.as_str()) {
            (Some(id), policy) if policy != "Always" => {
                let message = format!("Container image {image:?} already present on machine");
                self.events.normal(pod, "Pulled", message);
                return Ok(Ok(id));
            }
            (None, "Never") => {
                let message =
                    format!("Container image {image:?} is not present with pull policy of Never");
                self.events.warning(pod, "ErrImageNeverPull", message.clone());
                return Ok(Err(Waiting { reason: "ErrImageNeverPull", message }));
            }
            _ => {}
        }
        self.events.normal(pod, "Pulling", format!("Pulling image {image:?}"));
        let started = Instant::now();
        let request = cri::PullImageRequest { image: wanted, ..Default::default() };
        match images.pull_image(request).await {
            Ok(pulled) => {
                let took = started.elapsed();
                self.backoff.lock().expect("no panic while pulling").remove(&key);
                let image_ref = pulled.into_inner().image_ref;
                // Asked by its id: a local source's name is no image name.
                let pulled_image =
                    cri::ImageSpec { image: image_ref.clone(), ..Default::default() };
                let message = match pulled_size(&mut images, Some(pulled_image)).await {
                    Some((layers, bytes)) => {
                        let summary = crate::image::pull_summary(layers, bytes, took);
                        format!("Pulled image {image:?} ({summary})")
                    }
                    None => format!("Pulled image {image:?} in {:.1} s", took.as_secs_f64()),
                };
                self.events.normal(pod, "Pulled", message);
                Ok(Ok(image_ref))
            }
            Err(e) => {
                let error = e.message().to_string();
                let message = format!("Failed to pull image {image:?}: {error}");
                self.events.warning(pod, "Failed", message.clone());
                let mut backoff = self.backoff.lock().expect("no panic while pulling");
                let delay = backoff
                    .get(&key)
                    .map_or(BACKOFF_START, |b| b.delay.saturating_mul(2).min(BACKOFF_MAX));
                backoff.insert(key, Backoff { next_try: Instant::now() + delay, delay, error });
                Ok(Err(Waiting { reason: "ErrImagePull", message }))
            }
        }
    }

    /// Forgets the pod's failed pulls.
    pub(super) fn forget(&self, uid: &str) {
        self.backoff.lock().expect("no panic while pulling").retain(|(u, _), _| u != uid);
    }
}

/// The pulled image's layer count (when the runtime's verbose status tells
/// it) and size, for the Pulled event.
async fn pulled_size(
    images: &mut ImageServiceClient<Channel>,
    image: Option<cri::ImageSpec>,
) -> Option<(Option<usize>, u64)> {
    let status = images
        .image_status(cri::ImageStatusRequest { image, verbose: true })
        .await
        .ok()?
        .into_inner();
    let size = status.image?.size;
    Some((status.info.get("info").and_then(|info| layer_count(info)), size))
}

/// Layers in a runtime's verbose image info: berth's `layers`, or the
/// image config's `rootfs.diff_ids` that containerd reports.
fn layer_count(info: &str) -> Option<usize> {
    let info: serde_json::Value = serde_json::from_str(info).ok()?;
    ["/layers", "/imageSpec/rootfs/diff_ids"]
        .iter()
        .find_map(|path| info.pointer(path)?.as_array().map(Vec::len))
}

#[cfg(test)]
mod tests {
    #[test]
    fn layers_are_counted_from_either_runtime() {
        assert_eq!(super::layer_count(r#"{"layers": ["sha256:a", "sha256:b"]}"#), Some(2));
        let containerd = r#"{"imageSpec": {"rootfs": {"type": "layers", "diff_ids": ["x"]}}}"#;
        assert_eq!(super::layer_count(containerd), Some(1));
        assert_eq!(super::layer_count(r#"{"config": {}}"#), None);
        assert_eq!(super::layer_count("not json"), None);
    }
}
