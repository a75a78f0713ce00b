//! The typed gRPC API over a real store: verbs, subresources, errors with
//! Kubernetes Status details, and watches.

use berth_apiserver::api::{services, Api};
use berth_apiserver::Registry;
use berth_proto::api_v1::deployments_client::DeploymentsClient;
use berth_proto::api_v1::namespaces_client::NamespacesClient;
use berth_proto::api_v1::pods_client::PodsClient;
use berth_proto::api_v1::{DeleteRequest, GetRequest, PatchRequest, ScaleRequest, WatchRequest};
use berth_proto::apps_v1::{Deployment, DeploymentSpec};
use berth_proto::core_v1::{Binding, Container, Namespace, ObjectReference, Pod, PodSpec};
use berth_proto::meta_v1::{LabelSelector, ObjectMeta, Status};
use berth_raft_store::{Store, StoreConfig};
use prost::Message;
use std::collections::BTreeMap;
use std::time::Duration;
use tonic::transport::Channel;

struct Fixture {
    channel: Channel,
    store: Store,
    stop: tokio_util::sync::CancellationToken,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(1, "api-test", dir.path().join("store"), "127.0.0.1:1");
    config.election_timeout = (Duration::from_millis(150), Duration::from_millis(300));
    config.heartbeat = Duration::from_millis(50);
    let store = Store::open(config).await.unwrap();
    store.initialize(BTreeMap::from([(1, "127.0.0.1:1".to_string())])).await.unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let api = Api::new(Registry::new(store.clone()), stop.clone())
        .with_event_ttl(Duration::from_secs(1))
        .with_limits(64, 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.bootstrap().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "bootstrap namespaces never created");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = services(api);
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(s.namespaces)
            .add_service(s.pods)
            .add_service(s.deployments)
            .add_service(s.leases)
            .add_service(s.events)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                token.cancelled(),
            )
            .await;
    });
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    Fixture { channel, store, stop, _dir: dir }
}

impl Fixture {
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

fn template() -> berth_proto::core_v1::PodTemplateSpec {
    berth_proto::core_v1::PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }),
        spec: pod("x").spec,
    }
}

/// The Kubernetes Status carried in a gRPC error.
fn status_of(e: &tonic::Status) -> Status {
    Status::decode(e.details()).expect("errors carry a Kubernetes Status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_through_their_lifecycle() {
    let f = fixture().await;
    let mut pods = PodsClient::new(f.channel.clone());
    let created = pods.create(pod("a")).await.unwrap().into_inner();
    assert_eq!(created.status.as_ref().unwrap().phase, "Pending");
    assert_eq!(created.metadata.as_ref().unwrap().generation, 1);

    // An unknown namespace is NotFound, with the Status to say so.
    let mut elsewhere = pod("b");
    elsewhere.metadata.as_mut().unwrap().namespace = "nope".into();
    let err = pods.create(elsewhere).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let status = status_of(&err);
    assert_eq!((status.reason.as_str(), status.code), ("NotFound", 404));

    // A spec change bumps generation; a status write leaves the spec alone.
    let mut changed = created.clone();
    changed.spec.as_mut().unwrap().containers[0].image = "busybox:1.36".into();
    changed.status.as_mut().unwrap().phase = "Running".into();
    let updated = pods.update(changed).await.unwrap().into_inner();
    assert_eq!(updated.metadata.as_ref().unwrap().generation, 2);
    assert_eq!(
        updated.status.as_ref().unwrap().phase,
        "Pending",
        "spec writers never change status"
    );
    let mut status_write = updated.clone();
    status_write.status.as_mut().unwrap().phase = "Running".into();
    status_write.spec.as_mut().unwrap().containers[0].image = "ignored".into();
    let after = pods.update_status(status_write).await.unwrap().into_inner();
    assert_eq!(after.status.as_ref().unwrap().phase, "Running");
    assert_eq!(after.spec.as_ref().unwrap().containers[0].image, "busybox:1.36");
    assert_eq!(after.metadata.as_ref().unwrap().generation, 2);

    // A stale resourceVersion is a Conflict.
    let err = pods.update(updated).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted);
    assert_eq!(status_of(&err).reason, "Conflict");

    // Merge patch.
    let patch = PatchRequest {
        namespace: "default".into(),
        name: "a".into(),
        patch_type: "application/merge-patch+json".into(),
        patch: br#"{"metadata":{"labels":{"app":"web"}}}"#.to_vec(),
    };
    let patched = pods.patch(patch).await.unwrap().into_inner();
    assert_eq!(patched.metadata.as_ref().unwrap().labels["app"], "web");
    let bad = PatchRequest {
        namespace: "default".into(),
        name: "a".into(),
        patch_type: String::new(),
        patch: br#"{"spec":{"nodeNmae":"x"}}"#.to_vec(),
    };
    let err = pods.patch(bad).await.unwrap_err();
    let status = status_of(&err);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(status.details.unwrap().causes[0].field, "spec.nodeNmae");

    // Bind once; a second bind is a Conflict.
    let binding = |node: &str| Binding {
        metadata: Some(ObjectMeta {
            name: "a".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        target: Some(ObjectReference {
            kind: "Node".into(),
            name: node.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let bound = pods.bind(binding("n1")).await.unwrap().into_inner();
    assert_eq!(bound.spec.as_ref().unwrap().node_name, "n1");
    assert!(bound
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .any(|c| c.r#type == "PodScheduled" && c.status == "True"));
    let err = pods.bind(binding("n2")).await.unwrap_err();
    assert!(status_of(&err).message.contains("already assigned to node \"n1\""), "{err:?}");

    // A bound pod is only marked for deletion until its node confirms with
    // a zero grace period.
    let delete = |grace: Option<i64>| DeleteRequest {
        namespace: "default".into(),
        name: "a".into(),
        grace_period_seconds: grace,
        ..Default::default()
    };
    let marked = pods.delete(delete(None)).await.unwrap().into_inner();
    let meta = marked.metadata.as_ref().unwrap();
    assert!(meta.deletion_timestamp.is_some());
    assert_eq!(meta.deletion_grace_period_seconds, Some(30));
    pods.delete(delete(Some(0))).await.unwrap();
    let err = pods
        .get(GetRequest { namespace: "default".into(), name: "a".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_hold_deletion_and_policies_are_recorded() {
    let f = fixture().await;
    let mut namespaces = NamespacesClient::new(f.channel.clone());
    let listed =
        namespaces.list(berth_proto::api_v1::ListRequest::default()).await.unwrap().into_inner();
    let names: Vec<String> =
        listed.items.iter().map(|n| n.metadata.as_ref().unwrap().name.clone()).collect();
    assert_eq!(names, ["default", "kube-node-lease", "kube-system"]);

    let mut pods = PodsClient::new(f.channel.clone());
    let mut held = pod("held");
    held.metadata.as_mut().unwrap().finalizers = vec!["example.com/keep".into()];
    pods.create(held).await.unwrap();
    let marked = pods
        .delete(DeleteRequest {
            namespace: "default".into(),
            name: "held".into(),
            propagation_policy: "Foreground".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let meta = marked.metadata.clone().unwrap();
    assert!(meta.deletion_timestamp.is_some());
    assert_eq!(meta.finalizers, ["example.com/keep", "foregroundDeletion"]);
    // Removing the last finalizer completes the deletion.
    let mut release = marked.clone();
    release.metadata.as_mut().unwrap().finalizers.clear();
    pods.update(release).await.unwrap();
    let err = pods
        .get(GetRequest { namespace: "default".into(), name: "held".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // A terminating namespace takes no new objects.
    namespaces
        .create(Namespace {
            metadata: Some(ObjectMeta {
                name: "going".into(),
                finalizers: vec!["kubernetes".into()],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    namespaces.delete(DeleteRequest { name: "going".into(), ..Default::default() }).await.unwrap();
    let mut late = pod("late");
    late.metadata.as_mut().unwrap().namespace = "going".into();
    let err = pods.create(late).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("being terminated"), "{err:?}");
    f.stop().await;
}

async fn next(
    w: &mut tonic::Streaming<berth_proto::api_v1::DeploymentWatchEvent>,
) -> berth_proto::api_v1::DeploymentWatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.message())
        .await
        .expect("in time")
        .expect("no error")
        .expect("open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_scale_and_watches_stream() {
    let f = fixture().await;
    let mut deployments = DeploymentsClient::new(f.channel.clone());
    let mut watch = deployments
        .watch(WatchRequest { namespace: "default".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let deployment = Deployment {
        metadata: Some(ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec {
            replicas: Some(2),
            selector: Some(LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: Some(template()),
            ..Default::default()
        }),
        ..Default::default()
    };
    deployments.create(deployment).await.unwrap();
    let scale = deployments
        .scale(ScaleRequest { namespace: "default".into(), name: "web".into(), replicas: 5 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scale.spec.unwrap().replicas, 5);
    assert_eq!(scale.status.unwrap().selector, "app=web");
    let err = deployments
        .scale(ScaleRequest { namespace: "default".into(), name: "web".into(), replicas: -1 })
        .await
        .unwrap_err();
    assert_eq!(status_of(&err).details.unwrap().causes[0].field, "spec.replicas");

    let added = next(&mut watch).await;
    assert_eq!(added.r#type, "ADDED");
    let modified = next(&mut watch).await;
    assert_eq!(modified.r#type, "MODIFIED");
    let spec = modified.object.unwrap().spec.unwrap();
    assert_eq!(spec.replicas, Some(5));
    f.stop().await;
}

/// Creates `object` and returns the causes of its rejection as
/// (field, message) pairs.
async fn rejected_pod(f: &Fixture, object: Pod) -> Vec<(String, String)> {
    let err = PodsClient::new(f.channel.clone()).create(object).await.expect_err("rejected");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    let status = status_of(&err);
    assert_eq!((status.reason.as_str(), status.code), ("Invalid", 422));
    status.details.unwrap().causes.into_iter().map(|c| (c.field, c.message)).collect()
}

fn has(causes: &[(String, String)], field: &str, words: &str) -> bool {
    causes.iter().any(|(f, m)| f == field && m.contains(words))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_validation_error_names_its_field() {
    use berth_proto::core_v1::{
        ContainerPort, ResourceRequirements, Toleration, Volume, VolumeMount,
    };
    use berth_proto::Quantity;
    let f = fixture().await;
    let with = |edit: fn(&mut Pod)| {
        let mut p = pod("ok");
        edit(&mut p);
        p
    };
    let cases: Vec<(Pod, &str, &str)> = vec![
        (
            with(|p| p.metadata.as_mut().unwrap().name = "Bad_Name".into()),
            "metadata.name",
            "RFC 1123",
        ),
        (
            with(|p| {
                p.metadata.as_mut().unwrap().labels.insert("-x".into(), "v".into());
            }),
            "metadata.labels[-x]",
            "alphanumeric",
        ),
        (
            with(|p| {
                p.metadata.as_mut().unwrap().labels.insert("app".into(), "bad value".into());
            }),
            "metadata.labels[app]",
            "63 characters",
        ),
        (
            with(|p| p.spec.as_mut().unwrap().containers.clear()),
            "spec.containers",
            "Required value",
        ),
        (
            with(|p| p.spec.as_mut().unwrap().containers[0].image.clear()),
            "spec.containers[0].image",
            "Required value",
        ),
        (
            with(|p| p.spec.as_mut().unwrap().containers[0].name = "Web".into()),
            "spec.containers[0].name",
            "RFC 1123",
        ),
        (
            with(|p| {
                let c = p.spec.as_ref().unwrap().containers[0].clone();
                p.spec.as_mut().unwrap().containers.push(c);
            }),
            "spec.containers[1].name",
            "Duplicate",
        ),
        (
            with(|p| p.spec.as_mut().unwrap().restart_policy = "Sometimes".into()),
            "spec.restartPolicy",
            "Unsupported value",
        ),
        (
            with(|p| p.spec.as_mut().unwrap().containers[0].image_pull_policy = "Maybe".into()),
            "spec.containers[0].imagePullPolicy",
            "Unsupported value",
        ),
        (
            with(|p| {
                p.spec.as_mut().unwrap().containers[0].ports =
                    vec![ContainerPort { container_port: 70000, ..Default::default() }]
            }),
            "spec.containers[0].ports[0].containerPort",
            "between 1 and 65535",
        ),
        (
            with(|p| {
                let q = |s: &str| s.parse::<Quantity>().unwrap();
                p.spec.as_mut().unwrap().containers[0].resources = Some(ResourceRequirements {
                    limits: [("cpu".to_string(), q("500m"))].into(),
                    requests: [("cpu".to_string(), q("1"))].into(),
                });
            }),
            "spec.containers[0].resources.requests[cpu]",
            "less than or equal to cpu limit",
        ),
        (
            with(|p| {
                p.spec.as_mut().unwrap().tolerations = vec![Toleration {
                    operator: "Exists".into(),
                    value: "x".into(),
                    ..Default::default()
                }]
            }),
            "spec.tolerations[0].operator",
            "must be empty",
        ),
        (
            with(|p| {
                p.spec.as_mut().unwrap().volumes =
                    vec![Volume { name: "v".into(), ..Default::default() }]
            }),
            "spec.volumes[0].emptyDir",
            "Required value",
        ),
        (
            with(|p| {
                p.spec.as_mut().unwrap().containers[0].volume_mounts = vec![VolumeMount {
                    name: "nope".into(),
                    mount_path: "/x".into(),
                    ..Default::default()
                }]
            }),
            "spec.containers[0].volumeMounts[0].name",
            "Not found",
        ),
        (
            with(|p| p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(-1)),
            "spec.terminationGracePeriodSeconds",
            "greater than or equal to 0",
        ),
        (
            with(|p| {
                p.spec.as_mut().unwrap().containers[0].liveness_probe = Some(Default::default())
            }),
            "spec.containers[0].livenessProbe",
            "Required value",
        ),
    ];
    for (object, field, words) in cases {
        let causes = rejected_pod(&f, object).await;
        assert!(has(&causes, field, words), "want {field} ({words}), got {causes:?}");
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_and_immutable_fields() {
    let f = fixture().await;
    let mut pods = PodsClient::new(f.channel.clone());
    let created = pods.create(pod("d")).await.unwrap().into_inner();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.restart_policy, "Always");
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(spec.scheduler_name, "default-scheduler");
    assert_eq!(
        spec.containers[0].image_pull_policy, "Always",
        "an untagged image is pulled always"
    );
    // Most of a pod's spec is immutable; the image is not.
    let mut moved = created.clone();
    moved.spec.as_mut().unwrap().restart_policy = "Never".into();
    let err = pods.update(moved).await.unwrap_err();
    let status = status_of(&err);
    assert_eq!(status.details.unwrap().causes[0].field, "spec");
    let mut image = created.clone();
    image.spec.as_mut().unwrap().containers[0].image = "busybox:1.37".into();
    pods.update(image).await.unwrap();

    // A deployment's selector must match its template and may not change.
    let mut deployments = DeploymentsClient::new(f.channel.clone());
    let mut mismatched = Deployment {
        metadata: Some(ObjectMeta {
            name: "web".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        spec: Some(DeploymentSpec {
            selector: Some(LabelSelector {
                match_labels: [("app".to_string(), "db".to_string())].into(),
                ..Default::default()
            }),
            template: Some(template()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = deployments.create(mismatched.clone()).await.unwrap_err();
    assert_eq!(status_of(&err).details.unwrap().causes[0].field, "spec.template.metadata.labels");
    mismatched
        .spec
        .as_mut()
        .unwrap()
        .selector
        .as_mut()
        .unwrap()
        .match_labels
        .insert("app".into(), "web".into());
    let created = deployments.create(mismatched).await.unwrap().into_inner();
    let spec = created.spec.clone().unwrap();
    assert_eq!((spec.replicas, spec.revision_history_limit), (Some(1), Some(10)));
    assert_eq!(spec.strategy.unwrap().r#type, "RollingUpdate");
    let mut reselect = created.clone();
    let labels = [("app".to_string(), "web".to_string()), ("tier".to_string(), "x".to_string())];
    reselect.spec.as_mut().unwrap().selector.as_mut().unwrap().match_labels = labels.clone().into();
    reselect.spec.as_mut().unwrap().template.as_mut().unwrap().metadata.as_mut().unwrap().labels =
        labels.into();
    let err = deployments.update(reselect).await.unwrap_err();
    let cause = &status_of(&err).details.unwrap().causes[0];
    assert_eq!(
        (cause.field.as_str(), cause.message.as_str()),
        ("spec.selector", "field is immutable")
    );
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_size_limit_are_refused() {
    let f = fixture().await;
    let mut big = pod("big");
    big.spec.as_mut().unwrap().containers[0].args = vec!["x".repeat(1600 * 1024)];
    let err = PodsClient::new(f.channel.clone()).create(big).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let status = status_of(&err);
    assert_eq!((status.reason.as_str(), status.code), ("RequestEntityTooLarge", 413));
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_writer_is_refused_once_another_holder_takes_the_lease() {
    use berth_proto::api_v1::leases_client::LeasesClient;
    use berth_proto::coordination_v1::{Lease, LeaseSpec};
    use berth_proto::MicroTime;
    let f = fixture().await;
    let mut leases = LeasesClient::new(f.channel.clone());
    let lease = |holder: &str| Lease {
        metadata: Some(ObjectMeta {
            name: "scheduler".into(),
            namespace: "kube-system".into(),
            ..Default::default()
        }),
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime::now()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let taken = leases.create(lease("a")).await.unwrap().into_inner();
    let token_a =
        format!("kube-system/scheduler/{}", taken.metadata.as_ref().unwrap().resource_version);
    let fenced = |name: &str, token: &str| {
        let mut request = tonic::Request::new(pod(name));
        request.metadata_mut().insert("berth-fence", token.parse().unwrap());
        request
    };
    let mut pods = PodsClient::new(f.channel.clone());
    pods.create(fenced("by-a", &token_a)).await.unwrap();

    // Renewing keeps the token valid: the holder did not change.
    let mut renewed = taken.clone();
    renewed.spec.as_mut().unwrap().renew_time =
        Some(MicroTime::from_unix(MicroTime::now().unix_seconds() + 1, 0));
    let renewed = leases.update(renewed).await.unwrap().into_inner();
    pods.create(fenced("by-a-again", &token_a)).await.unwrap();

    // Another holder takes the lease: a's writes are refused, b's pass.
    let mut stolen = renewed.clone();
    stolen.spec.as_mut().unwrap().holder_identity = Some("b".into());
    let stolen = leases.update(stolen).await.unwrap().into_inner();
    let token_b =
        format!("kube-system/scheduler/{}", stolen.metadata.as_ref().unwrap().resource_version);
    let err = pods.create(fenced("stale", &token_a)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("fenced"), "{err:?}");
    let err = pods
        .delete({
            let mut r = tonic::Request::new(DeleteRequest {
                namespace: "default".into(),
                name: "by-a".into(),
                ..Default::default()
            });
            r.metadata_mut().insert("berth-fence", token_a.parse().unwrap());
            r
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("fenced"), "{err:?}");
    pods.create(fenced("by-b", &token_b)).await.unwrap();
    let err = pods.create(fenced("junk", "no-slashes")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_expire_after_their_ttl() {
    use berth_proto::api_v1::events_client::EventsClient;
    use berth_proto::core_v1::Event;
    let f = fixture().await;
    let mut events = EventsClient::new(f.channel.clone());
    let event = Event {
        metadata: Some(ObjectMeta {
            name: "web.17c8".into(),
            namespace: "default".into(),
            ..Default::default()
        }),
        reason: "Scheduled".into(),
        message: "assigned".into(),
        r#type: "Normal".into(),
        ..Default::default()
    };
    events.create(event).await.unwrap();
    let get = || GetRequest {
        namespace: "default".into(),
        name: "web.17c8".into(),
        ..Default::default()
    };
    assert!(events.get(get()).await.is_ok());
    // The fixture's event TTL is one second (plus the lease-sharing window).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        match events.get(get()).await {
            Err(e) if e.code() == tonic::Code::NotFound => break,
            _ => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "the event never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_past_the_limit_are_refused_until_one_ends() {
    let f = fixture().await;
    let mut pods = PodsClient::new(f.channel.clone());
    let watch = || WatchRequest { namespace: "default".into(), ..Default::default() };
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(pods.watch(watch()).await.unwrap().into_inner());
    }
    let err = pods.watch(watch()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let status = status_of(&err);
    assert_eq!((status.reason.as_str(), status.code), ("TooManyRequests", 429));
    // A closed watch frees its slot once the server sees the stream go.
    drop(open.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match pods.watch(watch()).await {
            Ok(_) => break,
            Err(e) => assert_eq!(e.code(), tonic::Code::ResourceExhausted),
        }
        assert!(tokio::time::Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.stop().await;
}
