//! Events: what the controllers did, recorded as core/v1 Events on the
//! objects they acted on (`berth describe` shows them). Recording never
//! waits on the API: controllers hand events to a bounded channel, and one
//! task owned by the leader's term writes them, counting repeats of the same
//! event on one Event object as Kubernetes' recorder does.

use crate::{Api, ApiResource, Client};
use berth_proto::core_v1::{Event, EventSource, ObjectReference};
use berth_proto::meta_v1::ObjectMeta;
use berth_proto::{MicroTime, Time};
use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Events waiting to be written; beyond this they are dropped (and counted)
/// rather than slowing a controller down.
const QUEUED_EVENTS: usize = 4096;
/// Distinct events whose Event object is remembered for counting repeats.
const REMEMBERED_EVENTS: usize = 4096;

/// Normal or Warning, as Kubernetes' Event.type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

struct Pending {
    involved: ObjectReference,
    component: &'static str,
    kind: EventType,
    reason: &'static str,
    message: String,
}

/// Hands events to the writer task; cheap to clone.
#[derive(Clone)]
pub struct EventRecorder {
    tx: mpsc::Sender<Pending>,
    component: &'static str,
}

impl EventRecorder {
    /// A recorder and the writer that must run for its events to be
    /// written; events are reported by `identity` (this replica).
    pub fn new(client: &Client, identity: &str) -> (EventRecorder, EventWriter) {
        let (tx, rx) = mpsc::channel(QUEUED_EVENTS);
        let writer = EventWriter {
            client: client.clone(),
            identity: identity.to_string(),
            rx,
            written: HashMap::new(),
        };
        (EventRecorder { tx, component: "controller-manager" }, writer)
    }

    /// The same recorder, reporting as `component` (e.g. "replicaset-controller").
    pub fn for_component(&self, component: &'static str) -> EventRecorder {
        EventRecorder { tx: self.tx.clone(), component }
    }

    pub fn normal<T: ApiResource>(&self, object: &T, reason: &'static str, message: String) {
        self.record(object, EventType::Normal, reason, message);
    }

    pub fn warning<T: ApiResource>(&self, object: &T, reason: &'static str, message: String) {
        self.record(object, EventType::Warning, reason, message);
    }

    pub fn record<T: ApiResource>(
        &self,
        object: &T,
        kind: EventType,
        reason: &'static str,
        message: String,
    ) {
        let involved = reference(object);
        tracing::debug!(object = %involved.name, kind = T::KIND, reason, %message, "event");
        let pending = Pending { involved, component: self.component, kind, reason, message };
        if self.tx.try_send(pending).is_err() {
            metrics::counter!("berth_controllers_events_dropped_total").increment(1);
        }
    }
}

/// A reference to `object` as an Event's involvedObject.
fn reference<T: ApiResource>(object: &T) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        kind: T::KIND.to_string(),
        api_version: T::API_VERSION.to_string(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: String::new(),
    }
}

/// What makes two events "the same" for counting.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Identity {
    uid: String,
    component: &'static str,
    kind: EventType,
    reason: &'static str,
    message: String,
}

/// Writes recorded events until its term ends.
pub struct EventWriter {
    client: Client,
    identity: String,
    rx: mpsc::Receiver<Pending>,
    /// The Event object each distinct event was last written to: its
    /// namespace and name.
    written: HashMap<Identity, (String, String)>,
}

impl EventWriter {
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let pending = tokio::select! {
                _ = stop.cancelled() => return,
                pending = self.rx.recv() => match pending { Some(p) => p, None => return },
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                () = self.write(pending) => {}
            }
        }
    }

    async fn write(&mut self, pending: Pending) {
        let identity = Identity {
            uid: pending.involved.uid.clone(),
            component: pending.component,
            kind: pending.kind,
            reason: pending.reason,
            message: pending.message.clone(),
        };
        let now = Time::now();
        if let Some((namespace, name)) = self.written.get(&identity).cloned() {
            let events: Api<Event> = Api::namespaced(&self.client, &namespace);
            // Expired, or unreadable now: a new Event says the same.
            if let Ok(Some(mut event)) = events.get_opt(&name).await {
                event.count += 1;
                event.last_timestamp = Some(now);
                match events.update(&event).await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "could not count a repeated event; writing a new one");
                    }
                }
            }
        }
        let namespace = match pending.involved.namespace.as_str() {
            // Cluster-scoped objects' events go where Kubernetes puts them.
            "" => "default".to_string(),
            ns => ns.to_string(),
        };
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let name = format!("{}.{:x}", pending.involved.name, nanos);
        let event = Event {
            metadata: Some(ObjectMeta {
                name: name.clone(),
                namespace: namespace.clone(),
                ..Default::default()
            }),
            involved_object: Some(pending.involved),
            reason: pending.reason.to_string(),
            message: pending.message,
            source: Some(EventSource {
                component: pending.component.to_string(),
                host: String::new(),
            }),
            first_timestamp: Some(now),
            last_timestamp: Some(now),
            count: 1,
            r#type: pending.kind.as_str().to_string(),
            event_time: Some(MicroTime::now()),
            reporting_component: pending.component.to_string(),
            reporting_instance: self.identity.clone(),
            ..Default::default()
        };
        match Api::<Event>::namespaced(&self.client, &namespace).create(&event).await {
            Ok(_) => {
                if self.written.len() >= REMEMBERED_EVENTS {
                    self.written.clear();
                }
                self.written.insert(identity, (namespace, name));
            }
            Err(e) => {
                metrics::counter!("berth_controllers_events_dropped_total").increment(1);
                tracing::debug!(error = %e, "could not write an event");
            }
        }
    }
}
