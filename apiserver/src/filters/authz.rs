//! Authorization: whether the caller may do what the request asks.

use super::{RequestInfo, UserInfo};
use crate::error::ApiError;
use berth_proto::rbac_v1::{PolicyRule, RoleRef};

/// What one authorizer says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused, with the reason the caller is told.
    Deny(String),
    /// Not this authorizer's business; the next one decides.
    NoOpinion,
}

/// One source of permissions (RBAC rules, node authorization).
///
/// The chain asks authorizers in order and the first Allow or Deny is the
/// answer; when every one has no opinion the request is Forbidden. Runs on
/// every request, so it must not block; one that reads objects (RBAC roles)
/// keeps a cache that its own task refreshes.
pub trait Authorizer: Send + Sync {
    fn authorize(&self, info: &RequestInfo) -> Decision;

    /// Every rule that allows `user` something in `namespace` (cluster-wide
    /// rules included), for SelfSubjectRulesReview; None when this
    /// authorizer cannot list what it allows.
    fn rules_for(&self, _user: &UserInfo, _namespace: &str) -> Option<Vec<PolicyRule>> {
        None
    }

    /// The rules of the role `role` names (a Role in `namespace`, or a
    /// ClusterRole), for checking what a binding to it grants; None when
    /// this authorizer keeps no roles or has no such role.
    fn role_rules(&self, _role: &RoleRef, _namespace: &str) -> Option<Vec<PolicyRule>> {
        None
    }
}

/// Allows every request.
///
/// The pre-security default, the only authorizer until berth has RBAC;
/// then it goes, and only rules allow.
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &RequestInfo) -> Decision {
        Decision::Allow
    }

    fn rules_for(&self, _: &UserInfo, _: &str) -> Option<Vec<PolicyRule>> {
        Some(full_authority())
    }
}

/// Every permission there is: what cluster-admin holds.
pub(crate) fn full_authority() -> Vec<PolicyRule> {
    let all = vec!["*".to_string()];
    vec![
        PolicyRule {
            verbs: all.clone(),
            api_groups: all.clone(),
            resources: all.clone(),
            ..Default::default()
        },
        PolicyRule { verbs: all.clone(), non_resource_ur_ls: all, ..Default::default() },
    ]
}

/// An authorizer `berth server --authorization-mode` names, in Kubernetes'
/// spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorizationMode {
    AlwaysAllow,
    /// Node agents' credentials, for what agents do (see `NodeAuthorizer`).
    Node,
    Rbac,
}

impl std::str::FromStr for AuthorizationMode {
    type Err = String;

    fn from_str(mode: &str) -> Result<AuthorizationMode, String> {
        match mode {
            "AlwaysAllow" => Ok(AuthorizationMode::AlwaysAllow),
            "Node" => Ok(AuthorizationMode::Node),
            "RBAC" => Ok(AuthorizationMode::Rbac),
            other => {
                Err(format!("unknown authorization mode {other:?}; known: AlwaysAllow, Node, RBAC"))
            }
        }
    }
}

/// The authorizers of `modes`, in their order; RBAC's cache reads
/// `registry` until `stop`. No modes: everything is allowed.
pub fn authorizers(
    modes: &[AuthorizationMode],
    registry: &crate::Registry<berth_raft_store::Store>,
    stop: &tokio_util::sync::CancellationToken,
) -> Vec<Box<dyn Authorizer>> {
    if modes.is_empty() {
        return vec![Box::new(AlwaysAllow)];
    }
    modes
        .iter()
        .map(|mode| -> Box<dyn Authorizer> {
            match mode {
                AuthorizationMode::AlwaysAllow => Box::new(AlwaysAllow),
                AuthorizationMode::Node => Box::new(super::NodeAuthorizer),
                AuthorizationMode::Rbac => Box::new(super::Rbac::start(registry.clone(), stop)),
            }
        })
        .collect()
}

/// The first decision in the chain; Forbidden unless it is Allow.
pub(super) fn authorize(chain: &[Box<dyn Authorizer>], info: &RequestInfo) -> Result<(), ApiError> {
    let reason = match decide(chain, info) {
        Decision::Allow => return Ok(()),
        Decision::Deny(reason) => reason,
        Decision::NoOpinion => String::new(),
    };
    tracing::debug!(
        user = %info.user.name,
        verb = info.verb,
        resource = info.resource,
        subresource = info.subresource,
        namespace = %info.namespace,
        name = %info.name,
        reason = %reason,
        "request forbidden"
    );
    Err(ApiError::Forbidden(refusal(info, &reason)))
}

/// The first Allow or Deny in the chain; NoOpinion when nobody decides.
pub(super) fn decide(chain: &[Box<dyn Authorizer>], info: &RequestInfo) -> Decision {
    chain
        .iter()
        .map(|authorizer| authorizer.authorize(info))
        .find(|decision| *decision != Decision::NoOpinion)
        .unwrap_or(Decision::NoOpinion)
}

/// Every rule the chain can list for `user` in `namespace`, and whether
/// some authorizer could not list its own (the list is then incomplete).
pub(super) fn rules_for(
    chain: &[Box<dyn Authorizer>],
    user: &UserInfo,
    namespace: &str,
) -> (Vec<PolicyRule>, bool) {
    let mut rules = Vec::new();
    let mut incomplete = false;
    for authorizer in chain {
        match authorizer.rules_for(user, namespace) {
            Some(more) => rules.extend(more),
            None => incomplete = true,
        }
    }
    (rules, incomplete)
}

/// Kubernetes' wording: `User "u" cannot delete resource "pods" in API
/// group "" in the namespace "default": <reason>` (`at the cluster scope`
/// without a namespace; `cannot get path "/healthz"` for no resource).
fn refusal(info: &RequestInfo, reason: &str) -> String {
    let reason = match reason {
        "" => String::new(),
        reason => format!(": {reason}"),
    };
    if info.resource.is_empty() {
        return format!(
            "User {:?} cannot {} path {:?}{reason}",
            info.user.name, info.verb, info.path
        );
    }
    let resource = match info.subresource {
        "" => info.resource.to_string(),
        sub => format!("{}/{sub}", info.resource),
    };
    let namespace = match info.namespace.as_str() {
        "" => " at the cluster scope".to_string(),
        ns => format!(" in the namespace {ns:?}"),
    };
    format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?}{namespace}{reason}",
        info.user.name, info.verb, info.api_group
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::request_info;

    /// The same answer to everything.
    struct Says(Decision);

    impl Authorizer for Says {
        fn authorize(&self, _: &RequestInfo) -> Decision {
            self.0.clone()
        }
    }

    fn chain(decisions: &[Decision]) -> Vec<Box<dyn Authorizer>> {
        decisions.iter().map(|d| Box::new(Says(d.clone())) as Box<dyn Authorizer>).collect()
    }

    #[test]
    fn the_first_decision_wins() {
        let info = request_info("delete", "web");
        let deny = Decision::Deny("not today".into());
        let err = authorize(&chain(&[Decision::NoOpinion, deny.clone(), Decision::Allow]), &info)
            .unwrap_err();
        assert_eq!(
            err,
            ApiError::Forbidden(
                r#"User "" cannot delete resource "pods" in API group "" in the namespace "default": not today"#
                    .into()
            )
        );
        assert_eq!(err.grpc_code(), tonic::Code::PermissionDenied);
        assert_eq!(authorize(&chain(&[Decision::NoOpinion, Decision::Allow, deny]), &info), Ok(()));
    }

    #[test]
    fn no_opinion_from_anyone_is_forbidden() {
        let info = request_info("get", "web");
        let err =
            authorize(&chain(&[Decision::NoOpinion, Decision::NoOpinion]), &info).unwrap_err();
        assert!(matches!(err, ApiError::Forbidden(_)), "{err:?}");
        assert!(matches!(authorize(&[], &info), Err(ApiError::Forbidden(_))));
    }

    #[test]
    fn always_allow_allows() {
        let allow: Vec<Box<dyn Authorizer>> = vec![Box::new(AlwaysAllow)];
        assert_eq!(authorize(&allow, &request_info("create", "")), Ok(()));
    }
}
