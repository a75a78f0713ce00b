//! berth's typed gRPC API: a service per resource (Create, Get, List,
//! Update, UpdateStatus, Patch, Delete, Watch; Bind for pods; Scale for
//! ReplicaSets and Deployments), each verb written once in `verbs` and
//! served for every resource by one macro. Every request passes the
//! [`Filters`] first: authentication and authorization, and for writes
//! admission. Errors carry the Kubernetes Status in the gRPC status details.

mod defaults;
mod kinds;
mod validation;
mod verbs;

pub use verbs::BOOTSTRAP_NAMESPACES;

use crate::error::ApiError;
use crate::filters::{Filters, RequestInfo, UserInfo};
use crate::registry::{ListOptions, Registry, WatchEvent};
use berth_proto::api_v1::*;
use berth_proto::apps_v1::{
    Deployment, DeploymentList, ReplicaSet, ReplicaSetList, Scale, ScaleSpec, ScaleStatus,
};
use berth_proto::coordination_v1::{Lease, LeaseList};
use berth_proto::core_v1::{
    Binding, Event, EventList, Namespace, NamespaceList, Node, NodeList, Pod, PodList,
};
use berth_proto::meta_v1::{ListMeta, ObjectMeta};
use berth_proto::Resource;
use berth_raft_store::Store;
use kinds::{Kind, Workload};
use prost::Message;
use std::pin::Pin;
use std::time::Duration;
use tonic::{Request, Response, Status};
use verbs::Write;

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// Kubernetes' default lifetime of an Event.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

/// How often a watch that allows bookmarks gets one when nothing changes.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// An API error as a gRPC status with the Kubernetes Status in its details.
pub fn to_status(e: ApiError) -> Status {
    let details = e.status().encode_to_vec();
    Status::with_details(e.grpc_code(), e.to_string(), details.into())
}

/// The API's handlers over one registry.
#[derive(Clone)]
pub struct Api {
    registry: Registry<Store>,
    /// Ends every watch stream when the server stops.
    stop: tokio_util::sync::CancellationToken,
    events: std::sync::Arc<EventLeases>,
    limits: std::sync::Arc<Limits>,
    filters: std::sync::Arc<Filters>,
}

/// Requests (not counting watches) one peer serves at once by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
/// Watches one peer serves at once by default.
pub const DEFAULT_MAX_WATCHERS: usize = 10_000;

struct Limits {
    in_flight: tokio::sync::Semaphore,
    max_in_flight: usize,
    watchers: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    max_watchers: usize,
}

impl Limits {
    fn new(in_flight: usize, watchers: usize) -> Limits {
        Limits {
            in_flight: tokio::sync::Semaphore::new(in_flight),
            max_in_flight: in_flight,
            watchers: Default::default(),
            max_watchers: watchers,
        }
    }
}

/// Holds one watcher slot; frees it when the watch's task ends.
struct WatcherSlot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Events expire after a TTL through store leases, one shared by all the
/// events created within a minute, so there is no lease per event.
struct EventLeases {
    ttl: Duration,
    current: tokio::sync::Mutex<Option<(std::time::Instant, i64)>>,
}

/// How long one lease is shared by new events.
const EVENT_LEASE_REUSE: Duration = Duration::from_secs(60);

impl EventLeases {
    fn new(ttl: Duration) -> EventLeases {
        EventLeases { ttl, current: Default::default() }
    }

    /// The lease for an event created now: it outlives the TTL of every
    /// event attached to it by at most the reuse window.
    async fn lease(&self, registry: &Registry<Store>) -> Result<i64, ApiError> {
        let mut current = self.current.lock().await;
        if let Some((granted, id)) = *current {
            if granted.elapsed() < EVENT_LEASE_REUSE.min(self.ttl) {
                return Ok(id);
            }
        }
        let reuse = EVENT_LEASE_REUSE.min(self.ttl);
        let ttl = (self.ttl + reuse).as_secs().max(1) as i64;
        let id = berth_raft_store::KeyValue::lease_grant(registry.store(), ttl).await?;
        *current = Some((std::time::Instant::now(), id));
        Ok(id)
    }
}

/// The request header a leader-elected writer's fencing token travels in:
/// `<lease namespace>/<lease name>/<revision it took the lease at>`.
pub const FENCE_HEADER: &str = "berth-fence";

impl Api {
    /// The API over `registry`; its watch streams end when `stop` is
    /// cancelled, so a server can shut down while clients still watch.
    pub fn new(registry: Registry<Store>, stop: tokio_util::sync::CancellationToken) -> Api {
        Api {
            registry,
            stop,
            events: std::sync::Arc::new(EventLeases::new(DEFAULT_EVENT_TTL)),
            limits: std::sync::Arc::new(Limits::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_MAX_WATCHERS)),
            filters: std::sync::Arc::new(Filters::default()),
        }
    }

    /// Requests pass `filters` instead of the default chain (everyone
    /// anonymous and allowed; writes fenced, defaulted and validated).
    pub fn with_filters(mut self, filters: Filters) -> Api {
        self.filters = std::sync::Arc::new(filters);
        self
    }

    /// At most `in_flight` requests (watches aside) and `watchers` watches
    /// at once on this peer; more get TooManyRequests instead of queueing
    /// without bound.
    pub fn with_limits(mut self, in_flight: usize, watchers: usize) -> Api {
        self.limits = std::sync::Arc::new(Limits::new(in_flight, watchers));
        self
    }

    /// Runs one request within the in-flight limit and counts it by verb,
    /// resource and code, with its latency and the requests in flight.
    async fn measured<T>(
        &self,
        verb: &'static str,
        resource: &'static str,
        call: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let started = std::time::Instant::now();
        let result = match self.limits.in_flight.try_acquire() {
            Ok(_permit) => {
                let in_flight = metrics::gauge!("berth_apiserver_requests_in_flight");
                in_flight.increment(1.0);
                let result = call.await;
                in_flight.decrement(1.0);
                result
            }
            Err(_) => Err(to_status(ApiError::TooManyRequests(format!(
                "more than {} requests in flight on this peer; retry shortly",
                self.limits.max_in_flight
            )))),
        };
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(status) => format!("{:?}", status.code()),
        };
        metrics::counter!("berth_apiserver_requests_total", "verb" => verb, "resource" => resource, "code" => code)
            .increment(1);
        metrics::histogram!("berth_apiserver_request_duration_seconds", "verb" => verb, "resource" => resource)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Events expire `ttl` after they are created (one hour by default).
    pub fn with_event_ttl(mut self, ttl: Duration) -> Api {
        self.events = std::sync::Arc::new(EventLeases::new(ttl));
        self
    }

    /// Authentication, then authorization: every request passes both.
    fn allow(&self, request: &Request<()>, mut info: RequestInfo) -> Result<RequestInfo, Status> {
        info.user = self.filters.authenticate(request).map_err(to_status)?;
        self.filters.authorize(&info).map_err(to_status)?;
        Ok(info)
    }

    /// A write passes authentication, authorization and admission's request
    /// phase, then goes to a registry fenced by the token admission found.
    fn write(&self, request: &Request<()>, info: RequestInfo) -> Result<Write<'_>, Status> {
        let mut info = self.allow(request, info)?;
        self.filters.admit_request(request, &mut info).map_err(to_status)?;
        let registry = match &info.fence {
            Some(fence) => self.registry.fenced(fence.clone()),
            None => self.registry.clone(),
        };
        Ok(Write { registry, filters: &self.filters, info })
    }

    /// Creates the namespaces every cluster starts with, if missing.
    pub async fn bootstrap(&self) -> Result<(), ApiError> {
        for name in BOOTSTRAP_NAMESPACES {
            let ns = Namespace {
                metadata: Some(ObjectMeta { name: name.to_string(), ..Default::default() }),
                ..Default::default()
            };
            // The server's own write: admitted, not authenticated.
            let mut info = RequestInfo::new::<Namespace>("create", "", "", name);
            info.user =
                UserInfo { name: "system:apiserver".into(), groups: vec!["system:masters".into()] };
            let write = Write { registry: self.registry.clone(), filters: &self.filters, info };
            match verbs::create(&write, ns, 0).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn watch<T, E>(
        &self,
        request: WatchRequest,
        wrap: fn(String, T) -> E,
    ) -> Result<Stream<E>, ApiError>
    where
        T: kinds::Kind + Send + 'static,
        E: Send + 'static,
    {
        let watchers = &self.limits.watchers;
        if watchers.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= self.limits.max_watchers {
            watchers.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            return Err(ApiError::TooManyRequests(format!(
                "more than {} watches on this peer; retry later or on another peer",
                self.limits.max_watchers
            )));
        }
        let slot = WatcherSlot(watchers.clone());
        let namespace =
            (T::NAMESPACED && !request.namespace.is_empty()).then_some(request.namespace.as_str());
        let bookmarks = request.allow_watch_bookmarks.then_some(BOOKMARK_EVERY);
        let mut watch = self.registry.watch::<T>(
            namespace,
            &request.resource_version,
            &request.label_selector,
            &request.field_selector,
            bookmarks,
        )?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let allow_bookmarks = request.allow_watch_bookmarks;
        let stop = self.stop.clone();
        // The task ends when the client goes away (the send fails), the
        // watch ends or the server stops; it owns the store watch, which
        // stops with it.
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let event = tokio::select! {
                    _ = stop.cancelled() => return,
                    // The client went away: free the watch at once.
                    _ = tx.closed() => return,
                    event = watch.next() => match event { Some(e) => e, None => return },
                };
                let message = match event {
                    Ok(WatchEvent::Added(o)) => Ok(wrap("ADDED".into(), o)),
                    Ok(WatchEvent::Modified(o)) => Ok(wrap("MODIFIED".into(), o)),
                    Ok(WatchEvent::Deleted(o)) => Ok(wrap("DELETED".into(), o)),
                    Ok(WatchEvent::Bookmark(rv)) => {
                        if !allow_bookmarks {
                            continue;
                        }
                        let mut marker = T::default();
                        marker.set_type_meta();
                        marker.metadata_mut().resource_version = rv;
                        Ok(wrap("BOOKMARK".into(), marker))
                    }
                    Err(e) => Err(to_status(e)),
                };
                let last = message.is_err();
                if tx.send(message).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    /// The scale subresource: sets spec.replicas through a normal update.
    async fn scale<T: Workload>(
        &self,
        r: Request<ScaleRequest>,
    ) -> Result<Response<Scale>, Status> {
        self.measured("scale", T::PLURAL, async {
            let (head, request) = split(r);
            let info = RequestInfo::new::<T>("update", "scale", &request.namespace, &request.name);
            let write = self.write(&head, info)?;
            if request.replicas < 0 {
                let e = crate::registry::invalid::<T>(
                    &request.name,
                    "spec.replicas",
                    "must be greater than or equal to 0",
                );
                return Err(to_status(e));
            }
            let mut object: T = verbs::get(&write.registry, &request.namespace, &request.name, "")
                .await
                .map_err(to_status)?;
            object.set_replicas(request.replicas);
            let object = verbs::update(&write, object).await.map_err(to_status)?;
            Ok(Response::new(Scale {
                api_version: "autoscaling/v1".into(),
                kind: "Scale".into(),
                metadata: Some(ObjectMeta {
                    name: object.metadata().name.clone(),
                    namespace: object.metadata().namespace.clone(),
                    resource_version: object.metadata().resource_version.clone(),
                    uid: object.metadata().uid.clone(),
                    ..Default::default()
                }),
                spec: Some(ScaleSpec { replicas: request.replicas }),
                status: Some(ScaleStatus {
                    replicas: object.status_replicas(),
                    selector: selector_string(object.selector()),
                }),
            }))
        })
        .await
    }
}

/// A request as its headers and connection, apart from its body: what the
/// filters look at.
fn split<R>(request: Request<R>) -> (Request<()>, R) {
    let (metadata, extensions, body) = request.into_parts();
    (Request::from_parts(metadata, extensions, ()), body)
}

/// What a request that writes `object` is about, for the filters.
fn about<T: Kind>(verb: &'static str, subresource: &'static str, object: &T) -> RequestInfo {
    let meta = object.metadata();
    let namespace = match verb {
        "create" => verbs::namespace_or_default(&meta.namespace),
        _ => &meta.namespace,
    };
    RequestInfo::new::<T>(verb, subresource, namespace, &meta.name)
}

fn list_options(r: &ListRequest) -> ListOptions {
    ListOptions {
        label_selector: r.label_selector.clone(),
        field_selector: r.field_selector.clone(),
        limit: r.limit,
        continue_token: r.r#continue.clone(),
        resource_version: r.resource_version.clone(),
    }
}

macro_rules! resource_service {
    ($module:ident :: $trait:ident, $ty:ty, $list:ident, $event:ident { $($extra:tt)* }) => {
        #[tonic::async_trait]
        impl $module::$trait for Api {
            async fn create(&self, r: Request<$ty>) -> Result<Response<$ty>, Status> {
                self.measured("create", <$ty>::PLURAL, async {
                    let (head, object) = split(r);
                    let write = self.write(&head, about("create", "", &object))?;
                    let lease = if object.expires() { self.events.lease(&self.registry).await.map_err(to_status)? } else { 0 };
                    verbs::create(&write, object, lease).await.map(Response::new).map_err(to_status)
                })
                .await
            }

            async fn get(&self, r: Request<GetRequest>) -> Result<Response<$ty>, Status> {
                self.measured("get", <$ty>::PLURAL, async {
                    let (head, r) = split(r);
                    self.allow(&head, RequestInfo::new::<$ty>("get", "", &r.namespace, &r.name))?;
                    verbs::get(&self.registry, &r.namespace, &r.name, &r.resource_version)
                        .await
                        .map(Response::new)
                        .map_err(to_status)
                })
                .await
            }

            async fn list(&self, r: Request<ListRequest>) -> Result<Response<$list>, Status> {
                self.measured("list", <$ty>::PLURAL, async {
                    let (head, r) = split(r);
                    self.allow(&head, RequestInfo::new::<$ty>("list", "", &r.namespace, ""))?;
                    let result =
                        verbs::list::<$ty>(&self.registry, &r.namespace, &list_options(&r)).await.map_err(to_status)?;
                    Ok(Response::new($list {
                        api_version: <$ty>::API_VERSION.into(),
                        kind: format!("{}List", <$ty>::KIND),
                        metadata: Some(ListMeta {
                            resource_version: result.resource_version,
                            r#continue: result.continue_token,
                            remaining_item_count: None,
                        }),
                        items: result.items,
                    }))
                })
                .await
            }

            async fn update(&self, r: Request<$ty>) -> Result<Response<$ty>, Status> {
                self.measured("update", <$ty>::PLURAL, async {
                    let (head, object) = split(r);
                    let write = self.write(&head, about("update", "", &object))?;
                    verbs::update(&write, object).await.map(Response::new).map_err(to_status)
                })
                .await
            }

            async fn update_status(&self, r: Request<$ty>) -> Result<Response<$ty>, Status> {
                self.measured("update_status", <$ty>::PLURAL, async {
                    let (head, object) = split(r);
                    let write = self.write(&head, about("update", "status", &object))?;
                    verbs::update_status(&write.registry, object)
                        .await
                        .map(Response::new)
                        .map_err(to_status)
                })
                .await
            }

            async fn patch(&self, r: Request<PatchRequest>) -> Result<Response<$ty>, Status> {
                self.measured("patch", <$ty>::PLURAL, async {
                    let (head, r) = split(r);
                    let write = self.write(&head, RequestInfo::new::<$ty>("patch", "", &r.namespace, &r.name))?;
                    verbs::patch(&write, &r).await.map(Response::new).map_err(to_status)
                })
                .await
            }

            async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<$ty>, Status> {
                self.measured("delete", <$ty>::PLURAL, async {
                    let (head, r) = split(r);
                    let write = self.write(&head, RequestInfo::new::<$ty>("delete", "", &r.namespace, &r.name))?;
                    verbs::delete(&write.registry, &r).await.map(Response::new).map_err(to_status)
                })
                .await
            }

            type WatchStream = Stream<$event>;

            async fn watch(&self, r: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
                self.measured("watch", <$ty>::PLURAL, async {
                    let (head, r) = split(r);
                    self.allow(&head, RequestInfo::new::<$ty>("watch", "", &r.namespace, ""))?;
                    Api::watch::<$ty, $event>(self, r, |r#type, object| $event { r#type, object: Some(object) })
                        .map(Response::new)
                        .map_err(to_status)
                })
                .await
            }

            $($extra)*
        }
    };
}

resource_service!(namespaces_server::Namespaces, Namespace, NamespaceList, NamespaceWatchEvent {});
resource_service!(nodes_server::Nodes, Node, NodeList, NodeWatchEvent {});
resource_service!(events_server::Events, Event, EventList, EventWatchEvent {});
resource_service!(leases_server::Leases, Lease, LeaseList, LeaseWatchEvent {});
resource_service!(pods_server::Pods, Pod, PodList, PodWatchEvent {
    async fn bind(&self, r: Request<Binding>) -> Result<Response<Pod>, Status> {
        self.measured("bind", "pods", async {
            let (head, binding) = split(r);
            let meta = binding.metadata.clone().unwrap_or_default();
            let namespace = verbs::namespace_or_default(&meta.namespace);
            let write = self.write(&head, RequestInfo::new::<Pod>("create", "binding", namespace, &meta.name))?;
            verbs::bind(&write.registry, binding).await.map(Response::new).map_err(to_status)
        })
        .await
    }
});
resource_service!(replica_sets_server::ReplicaSets, ReplicaSet, ReplicaSetList, ReplicaSetWatchEvent {
    async fn scale(&self, r: Request<ScaleRequest>) -> Result<Response<Scale>, Status> {
        self.scale::<ReplicaSet>(r).await
    }
});
resource_service!(deployments_server::Deployments, Deployment, DeploymentList, DeploymentWatchEvent {
    async fn scale(&self, r: Request<ScaleRequest>) -> Result<Response<Scale>, Status> {
        self.scale::<Deployment>(r).await
    }
});

/// A LabelSelector in the string form a Scale reports.
fn selector_string(selector: Option<&berth_proto::meta_v1::LabelSelector>) -> String {
    let Some(selector) = selector else { return String::new() };
    let mut terms: Vec<String> =
        selector.match_labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for e in &selector.match_expressions {
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, e.values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, e.values.join(",")),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    terms.join(",")
}

/// The full gRPC names of the API's services.
pub const SERVICE_NAMES: &[&str] = &[
    "berth.api.v1.Namespaces",
    "berth.api.v1.Nodes",
    "berth.api.v1.Pods",
    "berth.api.v1.Events",
    "berth.api.v1.ReplicaSets",
    "berth.api.v1.Deployments",
    "berth.api.v1.Leases",
];

/// Every resource service of the API, to add to a tonic server.
pub struct ApiServices {
    pub namespaces: namespaces_server::NamespacesServer<Api>,
    pub nodes: nodes_server::NodesServer<Api>,
    pub pods: pods_server::PodsServer<Api>,
    pub events: events_server::EventsServer<Api>,
    pub replica_sets: replica_sets_server::ReplicaSetsServer<Api>,
    pub deployments: deployments_server::DeploymentsServer<Api>,
    pub leases: leases_server::LeasesServer<Api>,
}

pub fn services(api: Api) -> ApiServices {
    ApiServices {
        namespaces: namespaces_server::NamespacesServer::new(api.clone()),
        nodes: nodes_server::NodesServer::new(api.clone()),
        pods: pods_server::PodsServer::new(api.clone()),
        events: events_server::EventsServer::new(api.clone()),
        replica_sets: replica_sets_server::ReplicaSetsServer::new(api.clone()),
        deployments: deployments_server::DeploymentsServer::new(api.clone()),
        leases: leases_server::LeasesServer::new(api),
    }
}
