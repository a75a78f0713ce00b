//! Typed verbs on one resource, in one namespace or across all of them.

use crate::client::{Client, Retry};
use crate::error::Error;
use crate::resource::ApiResource;
use berth_proto::api_v1::{
    DeleteRequest, GetRequest, ListRequest, PatchRequest, ScaleRequest, WatchRequest,
};
use berth_proto::apps_v1::{Deployment, ReplicaSet, Scale};
use berth_proto::core_v1::{Binding, ObjectReference, Pod};
use berth_proto::meta_v1::ObjectMeta;
use futures::{Stream, StreamExt};
use std::marker::PhantomData;
use std::pin::Pin;

/// The verbs of one resource. Built per namespace ([`Api::namespaced`]) or
/// for the whole cluster ([`Api::all`]: cluster-scoped resources, or lists
/// and watches across namespaces).
pub struct Api<T> {
    client: Client,
    namespace: String,
    _kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Api<T> {
    fn clone(&self) -> Self {
        Api { client: self.client.clone(), namespace: self.namespace.clone(), _kind: PhantomData }
    }
}

/// Which objects a list returns, and from which version of the state.
#[derive(Clone, Debug, Default)]
pub struct ListParams {
    pub label_selector: String,
    pub field_selector: String,
    /// At most this many items; 0 = all. The rest come with `continue_token`.
    pub limit: i64,
    pub continue_token: String,
    /// "" = linearizable; "0" = the answering peer's state; else at least
    /// this revision.
    pub resource_version: String,
}

/// One page of a list.
#[derive(Clone, Debug)]
pub struct ObjectList<T> {
    pub items: Vec<T>,
    /// The revision the list reflects: watch from here to follow on.
    pub resource_version: String,
    /// Non-empty when more items remain; pass it back in `ListParams`.
    pub continue_token: String,
}

#[derive(Clone, Debug, Default)]
pub struct WatchParams {
    pub label_selector: String,
    /// metadata.name, metadata.namespace, spec.nodeName, status.phase.
    pub field_selector: String,
    /// Ask for BOOKMARK events so a quiet watch still learns the revision.
    pub bookmarks: bool,
}

#[derive(Clone, Debug, Default)]
pub struct DeleteParams {
    pub grace_period_seconds: Option<i64>,
    /// Background (default), Foreground or Orphan.
    pub propagation_policy: String,
    /// Delete only if the object is still at this resourceVersion.
    pub precondition_resource_version: String,
}

/// A change seen by a watch.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    Deleted(T),
    /// Nothing changed up to this revision.
    Bookmark(String),
}

/// The events of one watch, in revision order; it ends with an error when
/// the watch is lost (Expired means: relist).
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<WatchEvent<T>, Error>> + Send>>;

impl<T: ApiResource> Api<T> {
    pub fn namespaced(client: &Client, namespace: &str) -> Api<T> {
        Api { client: client.clone(), namespace: namespace.to_string(), _kind: PhantomData }
    }

    pub fn all(client: &Client) -> Api<T> {
        Api::namespaced(client, "")
    }

    /// Creates the object; a namespaced object without a namespace goes to
    /// this Api's namespace.
    pub async fn create(&self, object: &T) -> Result<T, Error> {
        let mut object = object.clone();
        let meta = object.metadata_mut();
        if T::NAMESPACED && meta.namespace.is_empty() {
            meta.namespace = self.namespace.clone();
        }
        let retry = if meta.name.is_empty() { Retry::OnlyIfRefused } else { Retry::Safe };
        self.client.unary(T::SERVICE, "Create", object, retry).await
    }

    pub async fn get(&self, name: &str) -> Result<T, Error> {
        self.get_at(name, "").await
    }

    /// A read at `resource_version` ("0": whatever the answering peer has).
    pub async fn get_at(&self, name: &str, resource_version: &str) -> Result<T, Error> {
        let request = GetRequest {
            namespace: self.namespace.clone(),
            name: name.to_string(),
            resource_version: resource_version.to_string(),
        };
        self.client.unary(T::SERVICE, "Get", request, Retry::Safe).await
    }

    /// The object, or None when it does not exist.
    pub async fn get_opt(&self, name: &str) -> Result<Option<T>, Error> {
        match self.get(name).await {
            Ok(object) => Ok(Some(object)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, params: &ListParams) -> Result<ObjectList<T>, Error> {
        let request = ListRequest {
            namespace: self.namespace.clone(),
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
            limit: params.limit,
            r#continue: params.continue_token.clone(),
            resource_version: params.resource_version.clone(),
        };
        let list: T::List = self.client.unary(T::SERVICE, "List", request, Retry::Safe).await?;
        let (meta, items) = T::into_items(list);
        Ok(ObjectList {
            items,
            resource_version: meta.resource_version,
            continue_token: meta.r#continue,
        })
    }

    /// Writes spec and metadata; the object's resourceVersion must be the
    /// stored one, or the answer is a Conflict.
    pub async fn update(&self, object: &T) -> Result<T, Error> {
        self.client.unary(T::SERVICE, "Update", object.clone(), Retry::Safe).await
    }

    /// Writes the status only.
    pub async fn update_status(&self, object: &T) -> Result<T, Error> {
        self.client.unary(T::SERVICE, "UpdateStatus", object.clone(), Retry::Safe).await
    }

    /// A JSON merge patch (RFC 7386).
    pub async fn patch(&self, name: &str, patch: &serde_json::Value) -> Result<T, Error> {
        let request = PatchRequest {
            namespace: self.namespace.clone(),
            name: name.to_string(),
            patch_type: "application/merge-patch+json".into(),
            patch: patch.to_string().into_bytes(),
        };
        self.client.unary(T::SERVICE, "Patch", request, Retry::Safe).await
    }

    /// Deletes the object, or marks it for deletion when finalizers or a
    /// grace period hold it; the answer is the object as it was left.
    pub async fn delete(&self, name: &str, params: &DeleteParams) -> Result<T, Error> {
        let request = DeleteRequest {
            namespace: self.namespace.clone(),
            name: name.to_string(),
            grace_period_seconds: params.grace_period_seconds,
            propagation_policy: params.propagation_policy.clone(),
            precondition_resource_version: params.precondition_resource_version.clone(),
        };
        self.client.unary(T::SERVICE, "Delete", request, Retry::Safe).await
    }

    /// The changes after `resource_version` ("" or "0": after now).
    pub async fn watch(
        &self,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream<T>, Error> {
        let request = WatchRequest {
            namespace: self.namespace.clone(),
            resource_version: resource_version.to_string(),
            label_selector: params.label_selector.clone(),
            field_selector: params.field_selector.clone(),
            allow_watch_bookmarks: params.bookmarks,
        };
        let stream =
            self.client.server_stream::<_, T::WatchEvent>(T::SERVICE, "Watch", request).await?;
        Ok(Box::pin(stream.map(|item| {
            let (kind, object) = T::into_event(item?);
            match kind.as_str() {
                "ADDED" => Ok(WatchEvent::Added(object)),
                "MODIFIED" => Ok(WatchEvent::Modified(object)),
                "DELETED" => Ok(WatchEvent::Deleted(object)),
                "BOOKMARK" => Ok(WatchEvent::Bookmark(object.metadata().resource_version.clone())),
                other => Err(Error::from(tonic::Status::internal(format!(
                    "the server sent a watch event of unknown type {other:?}"
                )))),
            }
        })))
    }
}

impl Api<Pod> {
    /// Assigns the pod to a node, once: a second bind is a Conflict.
    pub async fn bind(&self, name: &str, node: &str) -> Result<Pod, Error> {
        let binding = Binding {
            api_version: "v1".into(),
            kind: "Binding".into(),
            metadata: Some(ObjectMeta {
                name: name.to_string(),
                namespace: self.namespace.clone(),
                ..Default::default()
            }),
            target: Some(ObjectReference {
                kind: "Node".into(),
                name: node.to_string(),
                ..Default::default()
            }),
        };
        self.client.unary(Pod::SERVICE, "Bind", binding, Retry::Safe).await
    }
}

/// Resources with a scale subresource.
pub trait Scalable: ApiResource {}
impl Scalable for ReplicaSet {}
impl Scalable for Deployment {}

impl<T: Scalable> Api<T> {
    /// Sets spec.replicas through the scale subresource.
    pub async fn scale(&self, name: &str, replicas: i32) -> Result<Scale, Error> {
        let request =
            ScaleRequest { namespace: self.namespace.clone(), name: name.to_string(), replicas };
        self.client.unary(T::SERVICE, "Scale", request, Retry::Safe).await
    }
}
