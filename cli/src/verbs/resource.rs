//! The resources the verbs work on, chosen by name at run time, with their
//! objects handled in their JSON form (what printers and merges read).

use anyhow::{anyhow, bail, Result};
use berth_client::{Api, ApiResource, Client, DeleteParams, ListParams, WatchEvent, WatchParams};
use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Event, Namespace, Node, Pod};
use berth_proto::rbac_v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use berth_proto::{Object, Resource};
use futures::{Stream, StreamExt};
use serde_json::Value;
use std::pin::Pin;

/// A kind the verbs serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Node,
    Namespace,
    Deployment,
    ReplicaSet,
    Event,
    Lease,
    Role,
    ClusterRole,
    RoleBinding,
    ClusterRoleBinding,
}

/// Runs `$body` with `$t` bound to the Rust type of `$kind`.
macro_rules! with_type {
    ($kind:expr, $t:ident => $body:expr) => {
        match $kind {
            Kind::Pod => {
                type $t = Pod;
                $body
            }
            Kind::Node => {
                type $t = Node;
                $body
            }
            Kind::Namespace => {
                type $t = Namespace;
                $body
            }
            Kind::Deployment => {
                type $t = Deployment;
                $body
            }
            Kind::ReplicaSet => {
                type $t = ReplicaSet;
                $body
            }
            Kind::Event => {
                type $t = Event;
                $body
            }
            Kind::Lease => {
                type $t = Lease;
                $body
            }
            Kind::Role => {
                type $t = Role;
                $body
            }
            Kind::ClusterRole => {
                type $t = ClusterRole;
                $body
            }
            Kind::RoleBinding => {
                type $t = RoleBinding;
                $body
            }
            Kind::ClusterRoleBinding => {
                type $t = ClusterRoleBinding;
                $body
            }
        }
    };
}

pub const ALL: &[Kind] = &[
    Kind::Pod,
    Kind::Node,
    Kind::Namespace,
    Kind::Deployment,
    Kind::ReplicaSet,
    Kind::Event,
    Kind::Lease,
    Kind::Role,
    Kind::ClusterRole,
    Kind::RoleBinding,
    Kind::ClusterRoleBinding,
];

impl Kind {
    /// The kind a command-line name means: plural, singular, short name or
    /// Kind, in any case ("pods", "pod", "po", "Pod").
    pub fn parse(name: &str) -> Result<Kind> {
        let lower = name.to_ascii_lowercase();
        let lower = lower.split_once('.').map_or(lower.as_str(), |(head, _)| head);
        for kind in ALL {
            let (plural, kind_name, short) = (kind.plural(), kind.name(), kind.short_names());
            if lower == plural || lower == kind_name.to_ascii_lowercase() || short.contains(&lower)
            {
                return Ok(*kind);
            }
        }
        let known: Vec<&str> = ALL.iter().map(|k| k.plural()).collect();
        bail!("unknown resource type {name:?}; berth serves {}", known.join(", "))
    }

    /// The kind of a decoded manifest.
    pub fn of(object: &Object) -> Result<Kind> {
        Kind::parse(object.kind())
    }

    pub fn name(self) -> &'static str {
        with_type!(self, T => T::KIND)
    }

    pub fn plural(self) -> &'static str {
        with_type!(self, T => T::PLURAL)
    }

    pub fn namespaced(self) -> bool {
        with_type!(self, T => T::NAMESPACED)
    }

    fn short_names(self) -> &'static [&'static str] {
        with_type!(self, T => T::SHORT_NAMES)
    }

    /// `deployment.apps`, `pod`: how kubectl names a kind in its messages.
    pub fn qualified(self) -> String {
        let group = with_type!(self, T => T::GROUP);
        let lower = self.name().to_ascii_lowercase();
        if group.is_empty() {
            lower
        } else {
            format!("{lower}.{group}")
        }
    }
}

/// The verbs of one kind in one namespace ("" = all namespaces, or a
/// cluster-scoped kind), on JSON objects.
#[derive(Clone)]
pub struct Resources {
    pub kind: Kind,
    client: Client,
    namespace: String,
}

pub type JsonWatch = Pin<Box<dyn Stream<Item = Result<(&'static str, Value)>> + Send>>;

fn to_value<T: Resource>(mut object: T) -> Value {
    object.set_type_meta();
    // Serializing an API object to JSON cannot fail: its map keys are strings.
    serde_json::from_slice(&berth_proto::to_json(&object)).unwrap_or(Value::Null)
}

fn from_value<T: Resource>(value: &Value) -> Result<T> {
    let bytes = serde_json::to_vec(value)?;
    berth_proto::from_json(&bytes).map_err(|e| anyhow!("{e}"))
}

impl Resources {
    pub fn new(client: &Client, kind: Kind, namespace: &str) -> Resources {
        let namespace = if kind.namespaced() { namespace.to_string() } else { String::new() };
        Resources { kind, client: client.clone(), namespace }
    }

    /// The verbs of `kind` in this namespace.
    pub fn sibling(&self, kind: Kind) -> Resources {
        Resources::new(&self.client, kind, &self.namespace)
    }

    fn api<T: ApiResource>(&self) -> Api<T> {
        Api::namespaced(&self.client, &self.namespace)
    }

    pub async fn get(&self, name: &str) -> Result<Value, berth_client::Error> {
        with_type!(self.kind, T => self.api::<T>().get(name).await.map(to_value))
    }

    pub async fn get_opt(&self, name: &str) -> Result<Option<Value>, berth_client::Error> {
        with_type!(self.kind, T => Ok(self.api::<T>().get_opt(name).await?.map(to_value)))
    }

    /// Every matching object (all pages) and the list's revision.
    pub async fn list(
        &self,
        label_selector: &str,
        field_selector: &str,
    ) -> Result<(Vec<Value>, String), berth_client::Error> {
        let mut params = ListParams {
            label_selector: label_selector.to_string(),
            field_selector: field_selector.to_string(),
            limit: 500,
            ..Default::default()
        };
        let mut items = Vec::new();
        loop {
            let (page, revision, next) = with_type!(self.kind, T => {
                let list = self.api::<T>().list(&params).await?;
                let items: Vec<Value> = list.items.into_iter().map(to_value).collect();
                (items, list.resource_version, list.continue_token)
            });
            items.extend(page);
            if next.is_empty() {
                return Ok((items, revision));
            }
            params.continue_token = next;
        }
    }

    /// Creates the object given in its JSON form.
    pub async fn create(&self, object: &Value) -> Result<Value> {
        with_type!(self.kind, T => {
            let typed: T = from_value(object)?;
            Ok(to_value(self.api::<T>().create(&typed).await?))
        })
    }

    /// Applies a JSON merge patch.
    pub async fn patch(&self, name: &str, patch: &Value) -> Result<Value, berth_client::Error> {
        with_type!(self.kind, T => self.api::<T>().patch(name, patch).await.map(to_value))
    }

    pub async fn delete(
        &self,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Value, berth_client::Error> {
        with_type!(self.kind, T => self.api::<T>().delete(name, params).await.map(to_value))
    }

    /// The changes after `revision`, as (ADDED|MODIFIED|DELETED, object).
    pub async fn watch(
        &self,
        params: &WatchParams,
        revision: &str,
    ) -> Result<JsonWatch, berth_client::Error> {
        with_type!(self.kind, T => {
            let stream = self.api::<T>().watch(params, revision).await?;
            let mapped = stream.filter_map(|event| async move {
                match event {
                    Ok(WatchEvent::Added(o)) => Some(Ok(("ADDED", to_value(o)))),
                    Ok(WatchEvent::Modified(o)) => Some(Ok(("MODIFIED", to_value(o)))),
                    Ok(WatchEvent::Deleted(o)) => Some(Ok(("DELETED", to_value(o)))),
                    Ok(WatchEvent::Bookmark(_)) => None,
                    Err(e) => Some(Err(anyhow::Error::from(e))),
                }
            });
            Ok(Box::pin(mapped) as JsonWatch)
        })
    }
}

/// The object as YAML in berth's normal form (typed field order).
pub fn to_yaml(value: &Value) -> String {
    match serde_json::to_vec(value).ok().and_then(|b| Object::from_json(&b).ok()) {
        Some(object) => object.to_yaml(),
        None => serde_yaml_ng::to_string(value).unwrap_or_default(),
    }
}

/// The object as indented JSON.
pub fn to_json_pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// A string field by JSON pointer ("" when absent).
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

pub fn name_of(value: &Value) -> &str {
    str_at(value, "/metadata/name")
}

pub fn namespace_of(value: &Value) -> &str {
    str_at(value, "/metadata/namespace")
}
