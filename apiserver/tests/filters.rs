//! The request filters over a real store: a chain with custom authorizers,
//! authenticators and admission plugins decides what the gRPC API does.

use berth_apiserver::api::{services, Api};
use berth_apiserver::filters::{
    Admission, Admitted, Authenticator, Authorizer, Decision, Filters, RequestInfo, UserInfo,
};
use berth_apiserver::{ApiError, Registry};
use berth_proto::api_v1::pods_client::PodsClient;
use berth_proto::api_v1::{DeleteRequest, GetRequest};
use berth_proto::core_v1::{Container, Pod, PodSpec};
use berth_proto::meta_v1::{ObjectMeta, Status};
use berth_raft_store::{Store, StoreConfig};
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::Channel;

/// One apiserver peer, serving pods through `filters`.
struct Guarded {
    channel: Channel,
    store: Store,
    stop: tokio_util::sync::CancellationToken,
    _dir: tempfile::TempDir,
}

async fn guarded(filters: Filters) -> Guarded {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(1, "filters-test", dir.path().join("store"), "127.0.0.1:1");
    config.election_timeout = (Duration::from_millis(150), Duration::from_millis(300));
    config.heartbeat = Duration::from_millis(50);
    let store = Store::open(config).await.unwrap();
    store.initialize(BTreeMap::from([(1, "127.0.0.1:1".to_string())])).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let api = Api::new(Registry::new(store.clone()), stop.clone()).with_filters(filters);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.bootstrap().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "bootstrap namespaces never created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pods = services(api).pods;
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(pods)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                token.cancelled(),
            )
            .await;
    });
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    Guarded { channel, store, stop, _dir: dir }
}

impl Guarded {
    async fn stop(self) {
        self.stop.cancel();
        self.store.shutdown().await;
    }
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: Some(ObjectMeta {
            name: name.into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: "busybox".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn status_of(e: &tonic::Status) -> Status {
    Status::decode(e.details()).expect("errors carry a Kubernetes Status")
}

/// Pods may not be deleted here; everything else is someone else's call.
struct KeepPods;

impl Authorizer for KeepPods {
    fn authorize(&self, info: &RequestInfo) -> Decision {
        if info.resource == "pods" && info.verb == "delete" {
            Decision::Deny("pods are kept on this cluster".into())
        } else {
            Decision::NoOpinion
        }
    }
}

/// Labels every created object with who created it.
struct CreatedBy;

impl Admission for CreatedBy {
    fn mutate(
        &self,
        info: &RequestInfo,
        object: &mut dyn Admitted,
        _old: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        if info.verb == "create" {
            let user = info.user.name.replace(':', ".");
            object.metadata_mut().labels.insert("created-by".into(), user);
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denying_authorizer_stops_deletes_but_not_reads() {
    let mut filters = Filters::default();
    filters.authorizers.insert(0, Box::new(KeepPods));
    let server = guarded(filters).await;
    let mut pods = PodsClient::new(server.channel.clone());
    pods.create(pod("web")).await.unwrap();

    let err = pods
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    let status = status_of(&err);
    assert_eq!((status.reason.as_str(), status.code), ("Forbidden", 403));
    assert!(status.message.contains("pods are kept on this cluster"), "{status:?}");

    let get = GetRequest { namespace: "default".into(), name: "web".into(), ..Default::default() };
    let kept = pods.get(get).await.unwrap().into_inner();
    assert_eq!(kept.metadata.unwrap().name, "web");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_admission_adds_on_create_is_stored() {
    let mut filters = Filters::default();
    filters.admission.push(Box::new(CreatedBy));
    let server = guarded(filters).await;
    let mut pods = PodsClient::new(server.channel.clone());
    pods.create(pod("web")).await.unwrap();

    let get = GetRequest { namespace: "default".into(), name: "web".into(), ..Default::default() };
    let stored = pods.get(get).await.unwrap().into_inner();
    let labels = stored.metadata.unwrap().labels;
    assert_eq!(labels.get("created-by").map(String::as_str), Some("system.anonymous"));
    // The default plugins still ran around it.
    assert_eq!(stored.spec.unwrap().restart_policy, "Always");
    server.stop().await;
}

/// Accepts only callers that send the `x-user` header.
struct NamedUsers;

impl Authenticator for NamedUsers {
    fn authenticate(&self, request: &tonic::Request<()>) -> Result<Option<UserInfo>, ApiError> {
        match request.metadata().get("x-user").and_then(|v| v.to_str().ok()) {
            Some(name) => Ok(Some(UserInfo { name: name.into(), groups: Vec::new() })),
            None => Err(ApiError::Unauthorized("send x-user".into())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_no_authenticator_accepts_are_unauthenticated() {
    let filters = Filters { authenticators: vec![Box::new(NamedUsers)], ..Filters::default() };
    let server = guarded(filters).await;
    let mut pods = PodsClient::new(server.channel.clone());
    let get =
        || GetRequest { namespace: "default".into(), name: "web".into(), ..Default::default() };

    let err = pods.get(get()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    let status = status_of(&err);
    assert_eq!((status.reason.as_str(), status.code), ("Unauthorized", 401));

    let mut named = tonic::Request::new(get());
    named.metadata_mut().insert("x-user", "alice".parse().unwrap());
    let err = pods.get(named).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "past the filters: {err:?}");
    server.stop().await;
}
