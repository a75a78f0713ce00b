//! The operations every front end calls: each passes the filters, runs its
//! verb and is counted, once, whatever protocol the request came in on.

use super::kinds::{Kind, Workload};
use super::{verbs, Api, WatcherSlot, BOOKMARK_EVERY};
use crate::error::ApiError;
use crate::filters::RequestInfo;
use crate::registry::{ListOptions, ListResult, WatchEvent};
use berth_proto::api_v1::{DeleteRequest, PatchRequest, ScaleRequest, WatchRequest};
use berth_proto::apps_v1::{Scale, ScaleSpec, ScaleStatus};
use berth_proto::core_v1::{Binding, Pod};
use berth_proto::meta_v1::ObjectMeta;
use tonic::Request;

/// A watch's events: the type (ADDED, MODIFIED, DELETED, BOOKMARK) and the
/// object; it ends after an error (Expired: relist).
type WatchEvents<T> = tokio_stream::wrappers::ReceiverStream<Result<(&'static str, T), ApiError>>;

/// What a request that writes `object` is about, for the filters.
fn about<T: Kind>(verb: &'static str, subresource: &'static str, object: &T) -> RequestInfo {
    let meta = object.metadata();
    let namespace = match verb {
        "create" => verbs::namespace_or_default(&meta.namespace),
        _ => &meta.namespace,
    };
    RequestInfo::new::<T>(verb, subresource, namespace, &meta.name)
}

impl Api {
    pub(crate) async fn create<T: Kind>(
        &self,
        head: &Request<()>,
        object: T,
    ) -> Result<T, ApiError> {
        self.measured("create", T::PLURAL, async {
            let write = self.write(head, about("create", "", &object))?;
            let lease = if object.expires() && !self.dry_run {
                self.events.lease(&self.registry).await?
            } else {
                0
            };
            verbs::create(&write, object, lease).await
        })
        .await
    }

    pub(crate) async fn get<T: Kind>(
        &self,
        head: &Request<()>,
        namespace: &str,
        name: &str,
        resource_version: &str,
    ) -> Result<T, ApiError> {
        self.measured("get", T::PLURAL, async {
            self.allow(head, RequestInfo::new::<T>("get", "", namespace, name))?;
            verbs::get(&self.registry, namespace, name, resource_version).await
        })
        .await
    }

    pub(crate) async fn list<T: Kind>(
        &self,
        head: &Request<()>,
        namespace: &str,
        options: &ListOptions,
    ) -> Result<ListResult<T>, ApiError> {
        self.measured("list", T::PLURAL, async {
            self.allow(head, RequestInfo::new::<T>("list", "", namespace, ""))?;
            verbs::list::<T>(&self.registry, namespace, options).await
        })
        .await
    }

    pub(crate) async fn update<T: Kind>(
        &self,
        head: &Request<()>,
        object: T,
    ) -> Result<T, ApiError> {
        self.measured("update", T::PLURAL, async {
            let write = self.write(head, about("update", "", &object))?;
            verbs::update(&write, object).await
        })
        .await
    }

    pub(crate) async fn update_status<T: Kind>(
        &self,
        head: &Request<()>,
        object: T,
    ) -> Result<T, ApiError> {
        self.measured("update_status", T::PLURAL, async {
            let write = self.write(head, about("update", "status", &object))?;
            verbs::update_status(&write, object).await
        })
        .await
    }

    pub(crate) async fn patch<T: Kind>(
        &self,
        head: &Request<()>,
        request: &PatchRequest,
    ) -> Result<T, ApiError> {
        self.measured("patch", T::PLURAL, async {
            let info = RequestInfo::new::<T>("patch", "", &request.namespace, &request.name);
            let write = self.write(head, info)?;
            verbs::patch(&write, request).await
        })
        .await
    }

    /// Server-side apply of `config` to `namespace/name` as the request's
    /// field manager; `force` takes over fields other managers own.
    pub(crate) async fn apply<T: Kind>(
        &self,
        head: &Request<()>,
        namespace: &str,
        name: &str,
        config: &serde_json::Value,
        force: bool,
    ) -> Result<T, ApiError> {
        self.measured("apply", T::PLURAL, async {
            let info = RequestInfo::new::<T>("patch", "", namespace, name);
            let mut write = self.write(head, info)?;
            let manager = std::mem::take(&mut write.manager);
            super::apply::apply_object(&write, namespace, name, config, &manager, force).await
        })
        .await
    }

    pub(crate) async fn delete<T: Kind>(
        &self,
        head: &Request<()>,
        request: &DeleteRequest,
    ) -> Result<T, ApiError> {
        self.measured("delete", T::PLURAL, async {
            let info = RequestInfo::new::<T>("delete", "", &request.namespace, &request.name);
            let write = self.write(head, info)?;
            verbs::delete(&write, request).await
        })
        .await
    }

    pub(crate) async fn bind(&self, head: &Request<()>, binding: Binding) -> Result<Pod, ApiError> {
        self.measured("bind", "pods", async {
            let meta = binding.metadata.clone().unwrap_or_default();
            let namespace = verbs::namespace_or_default(&meta.namespace);
            let info = RequestInfo::new::<Pod>("create", "binding", namespace, &meta.name);
            let write = self.write(head, info)?;
            verbs::bind(&write.registry, binding).await
        })
        .await
    }

    /// pods/eviction: the pod goes as a delete with the eviction's options
    /// would take it (gracefully when a node runs it). berth has no
    /// PodDisruptionBudgets, so no eviction is refused for one.
    pub(crate) async fn evict(
        &self,
        head: &Request<()>,
        request: &DeleteRequest,
    ) -> Result<Pod, ApiError> {
        self.measured("evict", "pods", async {
            let info =
                RequestInfo::new::<Pod>("create", "eviction", &request.namespace, &request.name);
            let write = self.write(head, info)?;
            verbs::delete(&write, request).await
        })
        .await
    }

    /// The scale subresource: sets spec.replicas through a normal update.
    pub(crate) async fn scale<T: Workload>(
        &self,
        head: &Request<()>,
        request: &ScaleRequest,
    ) -> Result<Scale, ApiError> {
        self.measured("scale", T::PLURAL, async {
            let info = RequestInfo::new::<T>("update", "scale", &request.namespace, &request.name);
            let write = self.write(head, info)?;
            if request.replicas < 0 {
                return Err(crate::registry::invalid::<T>(
                    &request.name,
                    "spec.replicas",
                    "must be greater than or equal to 0",
                ));
            }
            let mut object: T =
                verbs::get(&write.registry, &request.namespace, &request.name, "").await?;
            object.set_replicas(request.replicas);
            let object = verbs::update(&write, object).await?;
            Ok(scale_of(&object, request.replicas))
        })
        .await
    }

    /// The scale subresource as it stands.
    pub(crate) async fn get_scale<T: Workload>(
        &self,
        head: &Request<()>,
        namespace: &str,
        name: &str,
    ) -> Result<Scale, ApiError> {
        let object: T = self.get(head, namespace, name, "").await?;
        let replicas = object.replicas();
        Ok(scale_of(&object, replicas))
    }

    /// Every change after the request's resourceVersion, as (type, object).
    pub(crate) async fn watch<T: Kind>(
        &self,
        head: &Request<()>,
        request: &WatchRequest,
    ) -> Result<WatchEvents<T>, ApiError> {
        self.measured("watch", T::PLURAL, async {
            self.allow(head, RequestInfo::new::<T>("watch", "", &request.namespace, ""))?;
            self.open_watch(request)
        })
        .await
    }

    fn open_watch<T: Kind>(&self, request: &WatchRequest) -> Result<WatchEvents<T>, ApiError> {
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
                    Ok(WatchEvent::Added(o)) => Ok(("ADDED", o)),
                    Ok(WatchEvent::Modified(o)) => Ok(("MODIFIED", o)),
                    Ok(WatchEvent::Deleted(o)) => Ok(("DELETED", o)),
                    Ok(WatchEvent::Bookmark(rv)) => {
                        if !allow_bookmarks {
                            continue;
                        }
                        let mut marker = T::default();
                        marker.set_type_meta();
                        marker.metadata_mut().resource_version = rv;
                        Ok(("BOOKMARK", marker))
                    }
                    Err(e) => Err(e),
                };
                let last = message.is_err();
                if tx.send(message).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }
}

fn scale_of<T: Workload>(object: &T, replicas: i32) -> Scale {
    Scale {
        api_version: "autoscaling/v1".into(),
        kind: "Scale".into(),
        metadata: Some(ObjectMeta {
            name: object.metadata().name.clone(),
            namespace: object.metadata().namespace.clone(),
            resource_version: object.metadata().resource_version.clone(),
            uid: object.metadata().uid.clone(),
            creation_timestamp: object.metadata().creation_timestamp,
            ..Default::default()
        }),
        spec: Some(ScaleSpec { replicas }),
        status: Some(ScaleStatus {
            replicas: object.status_replicas(),
            selector: selector_string(object.selector()),
        }),
    }
}

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
