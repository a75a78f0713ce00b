//! The API: every verb on every resource (create, get, list, update,
//! update status, patch, delete, watch; bind for pods; scale for
//! ReplicaSets and Deployments), written once in `verbs` and reached
//! through one set of operations (`ops`) that pass the [`Filters`] first —
//! authentication and authorization, and for writes admission — and count
//! every request. Front ends adapt them: typed gRPC (`grpc`, errors carry
//! the Kubernetes Status in the gRPC details) and the Kubernetes REST API.

mod apply;
mod defaults;
mod grpc;
pub(crate) mod kinds;
mod ops;
pub(crate) mod policy;
mod rbac;
pub(crate) mod reviews;
mod streams;
mod validation;
mod verbs;

pub use grpc::{services, to_status, ApiServices, SERVICE_NAMES};
pub(crate) use streams::Session;
pub use verbs::BOOTSTRAP_NAMESPACES;

use crate::error::ApiError;
use crate::filters::{Filters, RequestInfo, UserInfo};
use crate::registry::Registry;
use berth_proto::core_v1::Namespace;
use berth_proto::meta_v1::ObjectMeta;
use berth_raft_store::Store;
use std::time::Duration;
use tonic::Request;
use verbs::Write;

/// Kubernetes' default lifetime of an Event.
pub const DEFAULT_EVENT_TTL: Duration = Duration::from_secs(3600);

/// How often a watch that allows bookmarks gets one when nothing changes.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// The API over one registry, for every front end.
#[derive(Clone)]
pub struct Api {
    registry: Registry<Store>,
    /// Ends every watch stream when the server stops.
    stop: tokio_util::sync::CancellationToken,
    events: std::sync::Arc<EventLeases>,
    limits: std::sync::Arc<Limits>,
    filters: std::sync::Arc<Filters>,
    /// Writes are admitted and validated but store nothing (dryRun=All).
    dry_run: bool,
    /// The field manager writes are recorded under (fieldManager); by
    /// default the client's User-Agent up to its first `/`.
    field_manager: Option<String>,
    /// Authenticates the relays of logs and exec to node agents.
    kubelet_secret: Option<std::sync::Arc<str>>,
    /// How this peer dials node agents over mutual TLS (its peer
    /// certificate); None: plain TCP with the cluster secret.
    kubelet_tls: Option<berth_tls::ClientTls>,
    /// The audit log and the per-user in-flight limit.
    oversight: crate::filters::Oversight,
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
            dry_run: false,
            field_manager: None,
            kubelet_secret: None,
            kubelet_tls: None,
            oversight: Default::default(),
        }
    }

    /// Requests pass `filters` instead of the default chain (everyone
    /// anonymous and allowed; writes fenced, defaulted and validated).
    pub fn with_filters(mut self, filters: Filters) -> Api {
        self.filters = std::sync::Arc::new(filters);
        self
    }

    /// Every request is audited and limited per user as `oversight` says.
    pub fn with_oversight(mut self, oversight: crate::filters::Oversight) -> Api {
        self.oversight = oversight;
        self
    }

    /// The same API for one dry-run request: writes pass every filter,
    /// admission and validation, and answer with the object they would have
    /// stored, but store nothing.
    pub(crate) fn dry_run(mut self) -> Api {
        self.dry_run = true;
        self
    }

    /// The same API for one request whose writes are recorded under
    /// `manager` in managedFields.
    pub(crate) fn field_manager(mut self, manager: &str) -> Api {
        self.field_manager = Some(manager.to_string());
        self
    }

    /// The field manager of a request: as set, or from its User-Agent.
    fn manager_of(&self, request: &Request<()>) -> String {
        if let Some(manager) = &self.field_manager {
            return manager.clone();
        }
        let agent = request.metadata().get("user-agent").and_then(|a| a.to_str().ok());
        match agent.and_then(|a| a.split('/').next()).filter(|a| !a.is_empty()) {
            Some(agent) => agent.chars().take(128).collect(),
            None => "unknown".into(),
        }
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
        call: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        let started = std::time::Instant::now();
        // On the heap: every operation's future nests here, and front ends
        // that match over every kind would otherwise carry them all inline.
        let limited = Box::pin(async {
            match self.limits.in_flight.try_acquire() {
                Ok(_permit) => {
                    let in_flight = metrics::gauge!("berth_apiserver_requests_in_flight");
                    in_flight.increment(1.0);
                    let result = call.await;
                    in_flight.decrement(1.0);
                    result
                }
                Err(_) => Err(ApiError::TooManyRequests(format!(
                    "more than {} requests in flight on this peer; retry shortly",
                    self.limits.max_in_flight
                ))),
            }
        });
        // Audited, and limited per user once the filters know the user.
        let result = self.oversight.run(verb, resource, limited).await;
        let code = match &result {
            Ok(_) => "OK".to_string(),
            Err(e) => format!("{:?}", e.grpc_code()),
        };
        metrics::counter!("berth_apiserver_requests_total", "verb" => verb, "resource" => resource, "code" => code)
            .increment(1);
        metrics::histogram!("berth_apiserver_request_duration_seconds", "verb" => verb, "resource" => resource)
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Logs and exec are relayed to node agents with `secret` (the
    /// cluster secret the agents hold); without one they are unavailable.
    /// Logs and exec are relayed to node agents over mutual TLS, this peer
    /// presenting its peer certificate.
    pub fn with_kubelet_tls(mut self, tls: Option<berth_tls::ClientTls>) -> Api {
        self.kubelet_tls = tls;
        self
    }

    pub fn with_kubelet_secret(mut self, secret: Option<String>) -> Api {
        self.kubelet_secret = secret.map(Into::into);
        self
    }

    /// Events expire `ttl` after they are created (one hour by default).
    pub fn with_event_ttl(mut self, ttl: Duration) -> Api {
        self.events = std::sync::Arc::new(EventLeases::new(ttl));
        self
    }

    /// Authentication, then authorization: every request passes both.
    fn allow(&self, request: &Request<()>, mut info: RequestInfo) -> Result<RequestInfo, ApiError> {
        self.oversight.admit(&info)?;
        info.user = self.filters.authenticate(request)?;
        self.oversight.admit(&info)?;
        self.filters.authorize(&info)?;
        Ok(info)
    }

    /// Whether the caller may `get` the non-resource URL `path`.
    pub(crate) fn allow_path(&self, request: &Request<()>, path: &str) -> Result<(), ApiError> {
        self.allow(request, RequestInfo::non_resource("get", path)).map(|_| ())
    }

    /// A write passes authentication, authorization and admission's request
    /// phase, then goes to a registry fenced by the token admission found.
    fn write(&self, request: &Request<()>, info: RequestInfo) -> Result<Write<'_>, ApiError> {
        let mut info = self.allow(request, info)?;
        self.filters.admit_request(request, &mut info)?;
        let registry = match &info.fence {
            Some(fence) => self.registry.fenced(fence.clone()),
            None => self.registry.clone(),
        };
        let registry = if self.dry_run { registry.dry_run() } else { registry };
        let manager = self.manager_of(request);
        Ok(Write { registry, filters: &self.filters, info, manager })
    }

    /// Creates the namespaces, roles and bindings every cluster starts
    /// with, if missing.
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
            let write = Write {
                registry: self.registry.clone(),
                filters: &self.filters,
                info,
                manager: "berth-apiserver".into(),
            };
            match verbs::create(&write, ns, 0).await {
                Ok(_) | Err(ApiError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.bootstrap_policy().await
    }
}
