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
//! plugin and then the validating phase of every plugin; status writes and
//! deletes run a validating phase on the stored object instead. Roles and
//! bindings are last checked against privilege escalation, which needs the
//! authorizers' answers (escalation.rs).
//!
//! The chain is public because it is assembled outside this crate (`berth
//! server` flags, the integration tests); what drives it stays crate-private.

mod admission;
mod audit;
mod authn;
mod authz;
mod escalation;
mod limits;
mod node;
mod node_restriction;
mod pod_security;
mod rbac;
mod service_account;
mod token;
mod x509;

pub use admission::{admission_plugins, Admission, AdmissionPlugin, Admitted};
pub use audit::{AuditConfig, AuditError, AuditEvent, AuditLog, AuditWriter, Oversight};
pub use authn::{Anonymous, Authenticator};
pub use authz::{authorizers, AlwaysAllow, AuthorizationMode, Authorizer, Decision};
pub(crate) use limits::{check_yaml, decode_body};
pub use limits::{Guards, GuardsError, MAX_REQUEST_BODY};
pub use node::{NodeAuthorizer, NODES_GROUP, NODE_USER_PREFIX};
pub use node_restriction::NodeRestriction;
pub use pod_security::{Level, PodSecurity, PodSecurityConfig, ENFORCE_LABEL, WARN_LABEL};
pub use rbac::Rbac;
pub use service_account::{
    service_account_user, ServiceAccountKey, ServiceAccountKeyError, ServiceAccounts,
    DEFAULT_TOKEN_DURATION, ISSUER as SERVICE_ACCOUNT_ISSUER,
};
pub use token::{
    bearer_token, TokenFile, TokenFileError, UnknownBearer, AUTHENTICATED, UNAUTHENTICATED,
};
pub use x509::ClientCertificates;

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
    /// A request for no resource (`resource` empty): its path, "/healthz".
    pub path: String,
    /// Set by authentication.
    pub user: UserInfo,
    /// A leader-elected writer's fencing token, set by admission's request
    /// phase; the registry checks it in the write's own transaction.
    pub fence: Option<Fence>,
    /// Where admission's warnings to the client go; set by admission's
    /// request phase from what the front end gave.
    pub warnings: Warnings,
}

/// Warnings for the client that admission adds to a write (`would violate
/// PodSecurity ...`). A front end that can deliver them (REST, as Warning
/// headers) puts one in the request's extensions and reads it after the
/// call; without one they go nowhere.
#[derive(Clone, Debug, Default)]
pub struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    /// Adds `warning` unless it is there already (a retried write's
    /// admission runs again).
    pub fn add(&self, warning: String) {
        if let Ok(mut warnings) = self.0.lock() {
            if !warnings.contains(&warning) {
                warnings.push(warning);
            }
        }
    }

    /// Every warning so far, in the order added.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().map(|w| w.clone()).unwrap_or_default()
    }
}

/// The same list, not merely the same words.
impl PartialEq for Warnings {
    fn eq(&self, other: &Warnings) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
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
            path: String::new(),
            user: UserInfo::default(),
            fence: None,
            warnings: Warnings::default(),
        }
    }

    /// A request for a non-resource URL (discovery, OpenAPI, /version).
    pub(crate) fn non_resource(verb: &'static str, path: &str) -> RequestInfo {
        RequestInfo {
            verb,
            api_group: "",
            resource: "",
            subresource: "",
            namespace: String::new(),
            name: String::new(),
            path: path.into(),
            user: UserInfo::default(),
            fence: None,
            warnings: Warnings::default(),
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
            admission: admission::default_chain(),
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

    /// The authorizers' decision on `info`, without refusing it.
    pub(crate) fn decide(&self, info: &RequestInfo) -> Decision {
        authz::decide(&self.authorizers, info)
    }

    /// What the authorizers allow `user` in `namespace`, and whether the
    /// list is incomplete.
    pub(crate) fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<berth_proto::rbac_v1::PolicyRule>, bool) {
        authz::rules_for(&self.authorizers, user, namespace)
    }

    /// Admission's request phase, once per write before the verb runs.
    pub(crate) fn admit_request(
        &self,
        request: &tonic::Request<()>,
        info: &mut RequestInfo,
    ) -> Result<(), ApiError> {
        if let Some(warnings) = request.extensions().get::<Warnings>() {
            info.warnings = warnings.clone();
        }
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
        admission::admit(&self.admission, info, object, old)?;
        escalation::confirm(self, info, object, old)
    }

    /// Admission's validating phase for a status write (`object`: what it
    /// stores) or a delete (None), on the `stored` object it changes.
    pub(crate) fn admit_stored(
        &self,
        info: &RequestInfo,
        object: Option<&dyn Admitted>,
        stored: &dyn Admitted,
    ) -> Result<(), ApiError> {
        admission::admit_stored(&self.admission, info, object, stored)
    }
}

#[cfg(test)]
pub(crate) fn request_info(verb: &'static str, name: &str) -> RequestInfo {
    RequestInfo::new::<berth_proto::core_v1::Pod>(verb, "", "default", name)
}
