//! The device manager against real plugins served in this process over
//! unix sockets (the plugin side of the API through [`super::plugin`]):
//! deadlines, disconnection and the grace period, and the checkpoint
//! across a restart.

use super::plugin::{self, PluginRegistration};
use super::{DeviceConfig, DeviceManager, DevicesError, ResourceCount};
use berth_proto::core_v1::{Container, Pod, PodSpec, ResourceRequirements};
use berth_proto::device_plugin_v1beta1 as api;
use berth_proto::meta_v1::ObjectMeta;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

const RESOURCE: &str = "example.com/dev";

/// A plugin with `n` healthy devices whose Allocate answers at once, or
/// never (`hang`); its device streams end when `gone` is cancelled.
struct TestPlugin {
    n: usize,
    hang: bool,
    gone: CancellationToken,
}

type Stream = ReceiverStream<Result<api::ListAndWatchResponse, tonic::Status>>;

#[tonic::async_trait]
impl api::device_plugin_server::DevicePlugin for TestPlugin {
    async fn get_device_plugin_options(
        &self,
        _: tonic::Request<api::Empty>,
    ) -> Result<tonic::Response<api::DevicePluginOptions>, tonic::Status> {
        Ok(tonic::Response::new(Default::default()))
    }

    type ListAndWatchStream = Stream;

    async fn list_and_watch(
        &self,
        _: tonic::Request<api::Empty>,
    ) -> Result<tonic::Response<Stream>, tonic::Status> {
        let devices = (0..self.n)
            .map(|i| api::Device { id: format!("d{i}"), health: "Healthy".into(), topology: None })
            .collect();
        // One list; the stream stays open as long as the plugin serves.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(Ok(api::ListAndWatchResponse { devices })).await.ok();
        let gone = self.gone.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = gone.cancelled() => {}
            }
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }

    async fn get_preferred_allocation(
        &self,
        _: tonic::Request<api::PreferredAllocationRequest>,
    ) -> Result<tonic::Response<api::PreferredAllocationResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("none"))
    }

    async fn allocate(
        &self,
        request: tonic::Request<api::AllocateRequest>,
    ) -> Result<tonic::Response<api::AllocateResponse>, tonic::Status> {
        if self.hang {
            std::future::pending::<()>().await;
        }
        let container_responses = request
            .into_inner()
            .container_requests
            .into_iter()
            .map(|r| api::ContainerAllocateResponse {
                envs: [("DEVS".to_string(), r.devices_ids.join(","))].into(),
                ..Default::default()
            })
            .collect();
        Ok(tonic::Response::new(api::AllocateResponse { container_responses }))
    }

    async fn pre_start_container(
        &self,
        _: tonic::Request<api::PreStartContainerRequest>,
    ) -> Result<tonic::Response<api::PreStartContainerResponse>, tonic::Status> {
        Ok(tonic::Response::new(api::PreStartContainerResponse {}))
    }
}

/// A manager on `dir`, served until the returned token is cancelled.
fn manager(
    dir: &std::path::Path,
) -> (DeviceManager, CancellationToken, tokio::task::JoinHandle<()>) {
    let mut config = DeviceConfig::new(dir);
    config.call_timeout = Duration::from_millis(300);
    config.grace_period = Duration::from_millis(500);
    let stop = CancellationToken::new();
    let (m, serving) = DeviceManager::start(config, stop.clone()).unwrap();
    (m, stop, tokio::spawn(serving))
}

fn start_plugin(
    dir: &std::path::Path,
    n: usize,
    hang: bool,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let plugin = TestPlugin { n, hang, gone: stop.clone() };
    let registration = PluginRegistration {
        kubelet_socket: dir.join(super::KUBELET_SOCKET),
        endpoint: "test.sock".into(),
        resource_name: RESOURCE.into(),
        options: Default::default(),
        deadline: Duration::from_secs(5),
    };
    let token = stop.clone();
    let task =
        tokio::spawn(async move { plugin::serve(plugin, registration, token).await.unwrap() });
    (stop, task)
}

async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod(uid: &str, count: i64) -> Pod {
    let q = berth_proto::Quantity::from_int(count, berth_proto::QuantityFormat::DecimalSI);
    Pod {
        metadata: Some(ObjectMeta { uid: uid.into(), ..Default::default() }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                resources: Some(ResourceRequirements {
                    limits: [(RESOURCE.to_string(), q)].into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn devices_of(m: &DeviceManager, uid: &str) -> String {
    let mut config = berth_proto::cri_v1::ContainerConfig::default();
    futures::executor::block_on(m.prepare(uid, "app", &mut config)).unwrap();
    config.envs.iter().find(|e| e.key == "DEVS").map(|e| e.value.clone()).unwrap_or_default()
}

fn count(m: &DeviceManager) -> Option<ResourceCount> {
    m.counts().get(RESOURCE).copied()
}

#[tokio::test]
async fn a_hanging_plugin_costs_a_failed_admission_not_a_stuck_kubelet() {
    let dir = tempfile::tempdir().unwrap();
    let (m, stop, served) = manager(dir.path());
    let (stop_plugin, plugin) = start_plugin(dir.path(), 2, true);
    until("the devices are healthy", || count(&m).is_some_and(|c| c.allocatable == 2)).await;
    let err = m.admit(&pod("p1", 1)).await.unwrap_err();
    assert!(matches!(err, DevicesError::Plugin { call: "Allocate", .. }), "{err}");
    // Nothing stays reserved: both devices are still free for the next try.
    let again = m.admit(&pod("p2", 2)).await.unwrap_err();
    assert!(matches!(again, DevicesError::Plugin { .. }), "{again}");
    stop_plugin.cancel();
    plugin.await.unwrap();
    stop.cancel();
    served.await.unwrap();
}

#[tokio::test]
async fn a_gone_plugins_devices_turn_unhealthy_then_leave() {
    let dir = tempfile::tempdir().unwrap();
    let (m, stop, served) = manager(dir.path());
    let (stop_plugin, plugin) = start_plugin(dir.path(), 2, false);
    until("the devices are healthy", || {
        count(&m) == Some(ResourceCount { capacity: 2, allocatable: 2 })
    })
    .await;
    stop_plugin.cancel();
    plugin.await.unwrap();
    until("the devices are unhealthy", || {
        count(&m) == Some(ResourceCount { capacity: 2, allocatable: 0 })
    })
    .await;
    let err = m.admit(&pod("p1", 1)).await.unwrap_err();
    assert!(matches!(err, DevicesError::Disconnected(_)) && err.is_transient(), "{err}");
    until("the devices are removed", || count(&m).is_none()).await;
    let err = m.admit(&pod("p1", 1)).await.unwrap_err();
    assert!(matches!(err, DevicesError::NoPlugin(_)) && !err.is_transient(), "{err}");
    stop.cancel();
    served.await.unwrap();
    assert!(!dir.path().join(super::KUBELET_SOCKET).exists(), "the socket goes with the manager");
}

#[tokio::test]
async fn a_restarted_manager_keeps_the_allocations_it_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let (m, stop, served) = manager(dir.path());
    let (stop_plugin, plugin) = start_plugin(dir.path(), 3, false);
    until("the devices are healthy", || count(&m).is_some_and(|c| c.allocatable == 3)).await;
    m.admit(&pod("p1", 2)).await.unwrap();
    assert_eq!(devices_of(&m, "p1"), "d0,d1");
    // Admission again (a resync) changes nothing.
    m.admit(&pod("p1", 2)).await.unwrap();
    assert_eq!(devices_of(&m, "p1"), "d0,d1");
    stop.cancel();
    served.await.unwrap();

    // A new manager on the same folder; the plugin registers again.
    let (m, stop, served) = manager(dir.path());
    assert_eq!(devices_of(&m, "p1"), "d0,d1", "known before the plugin is back");
    until("the plugin is back", || count(&m).is_some_and(|c| c.allocatable == 3)).await;
    let err = m.admit(&pod("p2", 2)).await.unwrap_err();
    assert!(matches!(err, DevicesError::Insufficient { available: 1, .. }), "{err}");
    m.admit(&pod("p3", 1)).await.unwrap();
    assert_eq!(devices_of(&m, "p3"), "d2");
    // A gone pod's devices are free again.
    m.retain_pods(&["p3".to_string()].into());
    m.admit(&pod("p2", 2)).await.unwrap();
    assert_eq!(devices_of(&m, "p2"), "d0,d1");
    stop_plugin.cancel();
    plugin.await.unwrap();
    stop.cancel();
    served.await.unwrap();
}

#[tokio::test]
async fn a_corrupt_checkpoint_stops_the_manager_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("berth_device_checkpoint"), "sha256:00\n{}").unwrap();
    let started = DeviceManager::start(DeviceConfig::new(dir.path()), CancellationToken::new());
    let Err(err) = started else { panic!("a corrupt checkpoint was accepted") };
    assert!(matches!(err, DevicesError::Checkpoint { .. }), "{err}");
    assert!(!dir.path().join(super::KUBELET_SOCKET).exists(), "nothing served");
}
