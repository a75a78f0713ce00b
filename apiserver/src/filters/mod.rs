//! The filters every API request passes before the registry, in this order:
//! authentication (who is asking), authorization (may they), and for writes
//! admission (is the request, and the object it stores, acceptable once
//! defaulted). Each step is a chain of plugins behind one trait, so the
//! security work can add client certificates, tokens, RBAC and admission
//! plugins without touching the verb handlers.
//!
//! Every request: the authenticators until one knows the caller, then the
//! authorizers until one decides. Every write then runs each admission
//! plugin's request phase (the fencing token is read there), and the verb
//! runs, on each object it is about to store, the mutating phase of every
//! plugin and then the validating phase of every plugin.
//!
//! The chain is public because it is assembled outside this crate (`berth
//! server` flags, the integration tests); what drives it stays crate-private.

mod admission;
mod authn;
mod authz;

pub use admission::{Admission, Admitted};
pub use authn::{Anonymous, Authenticator};
pub use authz::{AlwaysAllow, Authorizer, Decision};

use crate::error::ApiError;
use crate::registry::Fence;
use berth_proto::Resource;

/// Who is asking, as the authenticator that recognised them says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

/// What one request asks to do, in Kubernetes' terms (what RBAC rules
/// match on), built once per request by its handler.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestInfo {
    /// get, list, watch, create, update, patch or delete. A status write is
    /// an update of the `status` subresource, a bind a create of `binding`,
    /// a scale an update of `scale`, as in Kubernetes.
    pub verb: &'static str,
    /// "" for the core group, "apps", "coordination.k8s.io".
    pub api_group: &'static str,
    /// The resource's plural: "pods".
    pub resource: &'static str,
    /// "", "status", "binding" or "scale".
    pub subresource: &'static str,
    /// Empty for cluster-scoped resources, and for lists and watches across
    /// all namespaces.
    pub namespace: String,
    /// Empty for lists and watches, and for creates that generate a name.
    pub name: String,
    /// Set by authentication.
    pub user: UserInfo,
    /// A leader-elected writer's fencing token, set by admission's request
    /// phase; the registry checks it in the write's own transaction.
    pub fence: Option<Fence>,
}

impl RequestInfo {
    /// A request on `T`, before anyone has looked at who sent it.
    pub(crate) fn new<T: Resource>(
        verb: &'static str,
        subresource: &'static str,
        namespace: &str,
        name: &str,
    ) -> RequestInfo {
        RequestInfo {
            verb,
            api_group: T::GROUP,
            resource: T::PLURAL,
            subresource,
            namespace: if T::NAMESPACED { namespace.into() } else { String::new() },
            name: name.into(),
            user: UserInfo::default(),
            fence: None,
        }
    }
}

/// The filter chain in front of the registry. Each list runs in order; see
/// the traits for how a chain decides.
pub struct Filters {
    /// Asked in order until one recognises the caller.
    pub authenticators: Vec<Box<dyn Authenticator>>,
    /// Asked in order until one allows or denies.
    pub authorizers: Vec<Box<dyn Authorizer>>,
    /// Every plugin runs on every write. Removing the default ones removes
    /// fencing, defaulting or validation.
    pub admission: Vec<Box<dyn Admission>>,
}

/// Before the security work: everyone is anonymous and allowed everything;
/// writes are fenced, defaulted and validated.
impl Default for Filters {
    fn default() -> Filters {
        Filters {
            authenticators: vec![Box::new(Anonymous)],
            authorizers: vec![Box::new(AlwaysAllow)],
            admission: vec![
                Box::new(admission::Fencing),
                Box::new(admission::Defaults),
                Box::new(admission::Validation),
            ],
        }
    }
}

impl Filters {
    /// Who sent `request`; Unauthorized when no authenticator knows them.
    pub(crate) fn authenticate(&self, request: &tonic::Request<()>) -> Result<UserInfo, ApiError> {
        authn::authenticate(&self.authenticators, request)
    }

    /// Whether `info.user` may do what `info` says; Forbidden if not.
    pub(crate) fn authorize(&self, info: &RequestInfo) -> Result<(), ApiError> {
        authz::authorize(&self.authorizers, info)
    }

    /// Admission's request phase, once per write before the verb runs.
    pub(crate) fn admit_request(
        &self,
        request: &tonic::Request<()>,
        info: &mut RequestInfo,
    ) -> Result<(), ApiError> {
        admission::admit_request(&self.admission, request, info)
    }

    /// Admission's object phases, on an object about to be stored (`old`:
    /// the stored one it replaces, for updates).
    pub(crate) fn admit(
        &self,
        info: &RequestInfo,
        object: &mut dyn Admitted,
        old: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        admission::admit(&self.admission, info, object, old)
    }
}

#[cfg(test)]
pub(crate) fn request_info(verb: &'static str, name: &str) -> RequestInfo {
    RequestInfo::new::<berth_proto::core_v1::Pod>(verb, "", "default", name)
}
