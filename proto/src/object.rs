//! What each API type is in the API (group, version, kind, plural, scope),
//! and `Object`, a manifest of any supported kind.

use crate::apps_v1::{Deployment, ReplicaSet};
use crate::codec::{self, DecodeError};
use crate::coordination_v1::Lease;
use crate::core_v1::{Event, Namespace, Node, Pod};
use crate::meta_v1::ObjectMeta;
use crate::rbac_v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::LazyLock;

/// An API type: its place in the API and access to its common parts.
pub trait Resource:
    prost::Message + Default + Clone + PartialEq + Serialize + DeserializeOwned
{
    /// API group; empty for the core group.
    const GROUP: &'static str;
    const VERSION: &'static str;
    /// `apiVersion` as written in manifests: "v1", "apps/v1", ...
    const API_VERSION: &'static str;
    const KIND: &'static str;
    /// Lower-case plural used in URLs and store keys: "pods".
    const PLURAL: &'static str;
    const NAMESPACED: bool;
    const SHORT_NAMES: &'static [&'static str];

    fn metadata(&self) -> &ObjectMeta;
    fn metadata_mut(&mut self) -> &mut ObjectMeta;
    fn type_meta(&self) -> (&str, &str);
    fn set_type_meta(&mut self);
}

static EMPTY_META: LazyLock<ObjectMeta> = LazyLock::new(ObjectMeta::default);

macro_rules! resources {
    ($( $ty:ident: $group:literal, $version:literal, $api_version:literal, $plural:literal,
        namespaced = $namespaced:literal, short = [$($short:literal),*]; )*) => {
        $(
            impl Resource for $ty {
                const GROUP: &'static str = $group;
                const VERSION: &'static str = $version;
                const API_VERSION: &'static str = $api_version;
                const KIND: &'static str = stringify!($ty);
                const PLURAL: &'static str = $plural;
                const NAMESPACED: bool = $namespaced;
                const SHORT_NAMES: &'static [&'static str] = &[$($short),*];

                fn metadata(&self) -> &ObjectMeta {
                    self.metadata.as_ref().unwrap_or(&EMPTY_META)
                }
                fn metadata_mut(&mut self) -> &mut ObjectMeta {
                    self.metadata.get_or_insert_with(ObjectMeta::default)
                }
                fn type_meta(&self) -> (&str, &str) {
                    (&self.api_version, &self.kind)
                }
                fn set_type_meta(&mut self) {
                    self.api_version = Self::API_VERSION.to_string();
                    self.kind = Self::KIND.to_string();
                }
            }
        )*

        /// A manifest of any supported kind.
        #[derive(Clone, Debug, PartialEq)]
        pub enum Object {
            $( $ty($ty), )*
        }

        impl Object {
            /// Decodes one JSON document, choosing the type from its
            /// apiVersion and kind.
            pub fn from_json(bytes: &[u8]) -> Result<Object, DecodeError> {
                let types: TypeMeta = codec::from_json(bytes)?;
                match (types.api_version.as_str(), types.kind.as_str()) {
                    $( ($api_version, stringify!($ty)) => Ok(Object::$ty(codec::from_json(bytes)?)), )*
                    _ => Err(types.unsupported()),
                }
            }

            fn from_yaml_document(text: &str) -> Result<Object, DecodeError> {
                let types: TypeMeta = codec::from_yaml(text)?;
                match (types.api_version.as_str(), types.kind.as_str()) {
                    $( ($api_version, stringify!($ty)) => Ok(Object::$ty(codec::from_yaml(text)?)), )*
                    _ => Err(types.unsupported()),
                }
            }

            pub fn kind(&self) -> &'static str {
                match self { $( Object::$ty(_) => $ty::KIND, )* }
            }

            pub fn api_version(&self) -> &'static str {
                match self { $( Object::$ty(_) => $ty::API_VERSION, )* }
            }

            pub fn plural(&self) -> &'static str {
                match self { $( Object::$ty(_) => $ty::PLURAL, )* }
            }

            pub fn namespaced(&self) -> bool {
                match self { $( Object::$ty(_) => $ty::NAMESPACED, )* }
            }

            pub fn metadata(&self) -> &ObjectMeta {
                match self { $( Object::$ty(o) => o.metadata(), )* }
            }

            pub fn metadata_mut(&mut self) -> &mut ObjectMeta {
                match self { $( Object::$ty(o) => o.metadata_mut(), )* }
            }

            pub fn to_json(&self) -> Vec<u8> {
                match self { $( Object::$ty(o) => codec::to_json(o), )* }
            }

            pub fn to_yaml(&self) -> String {
                match self { $( Object::$ty(o) => codec::to_yaml(o), )* }
            }

            /// The protobuf encoding, as the store keeps it.
            pub fn encode_to_vec(&self) -> Vec<u8> {
                match self { $( Object::$ty(o) => prost::Message::encode_to_vec(o), )* }
            }

            /// Decodes the protobuf encoding of a `kind` object, as the store
            /// reads it back; `None` for a kind that is not served.
            pub fn from_protobuf(kind: &str, bytes: &[u8]) -> Option<Result<Object, prost::DecodeError>> {
                match kind {
                    $( stringify!($ty) => Some(<$ty as prost::Message>::decode(bytes).map(Object::$ty)), )*
                    _ => None,
                }
            }
        }

        /// Every supported (apiVersion, kind), for error messages and discovery.
        pub(crate) const SUPPORTED: &[(&str, &str)] = &[ $( ($api_version, stringify!($ty)), )* ];
    };
}

resources! {
    Namespace: "", "v1", "v1", "namespaces", namespaced = false, short = ["ns"];
    Node: "", "v1", "v1", "nodes", namespaced = false, short = ["no"];
    Pod: "", "v1", "v1", "pods", namespaced = true, short = ["po"];
    Event: "", "v1", "v1", "events", namespaced = true, short = ["ev"];
    ReplicaSet: "apps", "v1", "apps/v1", "replicasets", namespaced = true, short = ["rs"];
    Deployment: "apps", "v1", "apps/v1", "deployments", namespaced = true, short = ["deploy"];
    Lease: "coordination.k8s.io", "v1", "coordination.k8s.io/v1", "leases", namespaced = true, short = [];
    Role: "rbac.authorization.k8s.io", "v1", "rbac.authorization.k8s.io/v1", "roles", namespaced = true, short = [];
    ClusterRole: "rbac.authorization.k8s.io", "v1", "rbac.authorization.k8s.io/v1", "clusterroles", namespaced = false, short = [];
    RoleBinding: "rbac.authorization.k8s.io", "v1", "rbac.authorization.k8s.io/v1", "rolebindings", namespaced = true, short = [];
    ClusterRoleBinding: "rbac.authorization.k8s.io", "v1", "rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced = false, short = [];
}

/// The two fields that say what a manifest is; the rest is ignored here and
/// checked strictly by the typed decode that follows.
#[derive(Deserialize)]
struct TypeMeta {
    #[serde(default, rename = "apiVersion")]
    api_version: String,
    #[serde(default)]
    kind: String,
}

impl TypeMeta {
    fn unsupported(&self) -> DecodeError {
        if self.api_version.is_empty() {
            return DecodeError::at("apiVersion", "required field is missing");
        }
        if self.kind.is_empty() {
            return DecodeError::at("kind", "required field is missing");
        }
        let same_kind: Vec<&str> =
            SUPPORTED.iter().filter(|(_, k)| *k == self.kind).map(|(v, _)| *v).collect();
        if !same_kind.is_empty() {
            return DecodeError::at(
                "apiVersion",
                format!(
                    "{:?} is not served for kind {}; use {}",
                    self.api_version,
                    self.kind,
                    same_kind.join(" or ")
                ),
            );
        }
        let kinds: Vec<&str> = SUPPORTED.iter().map(|(_, k)| *k).collect();
        DecodeError::at(
            "kind",
            format!(
                "unsupported kind {:?} (apiVersion {}); supported kinds: {}",
                self.kind,
                self.api_version,
                kinds.join(", ")
            ),
        )
    }
}

impl Object {
    /// Decodes a YAML text of one or more documents separated by `---`,
    /// skipping empty documents; errors carry the line in the whole text.
    pub fn from_yaml_documents(text: &str) -> Result<Vec<Object>, DecodeError> {
        let mut objects = Vec::new();
        for (first_line, document) in split_yaml_documents(text) {
            let blank =
                document.lines().all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
            if blank {
                continue;
            }
            let object =
                Object::from_yaml_document(document).map_err(|e| e.shift_lines(first_line))?;
            objects.push(object);
        }
        Ok(objects)
    }
}

/// Splits at `---` lines; yields each document with the number of lines
/// before it, so positions can be reported against the whole text.
fn split_yaml_documents(text: &str) -> Vec<(usize, &str)> {
    let mut documents = Vec::new();
    let mut start = 0;
    let mut start_line = 0;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end();
        let is_separator =
            bare == "---" || bare.starts_with("--- ") || bare.starts_with("---\t") || bare == "...";
        if is_separator {
            documents.push((start_line, &text[start..offset]));
            start = offset + line.len();
            start_line = index + 1;
        }
        offset += line.len();
    }
    documents.push((start_line, &text[start..]));
    documents
}
