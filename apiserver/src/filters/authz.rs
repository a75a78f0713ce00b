//! Authorization: whether the caller may do what the request asks.

use super::RequestInfo;
use crate::error::ApiError;

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
}

/// The first decision in the chain; Forbidden unless it is Allow.
pub(super) fn authorize(chain: &[Box<dyn Authorizer>], info: &RequestInfo) -> Result<(), ApiError> {
    let reason = chain.iter().find_map(|authorizer| match authorizer.authorize(info) {
        Decision::Allow => Some(None),
        Decision::Deny(reason) => Some(Some(reason)),
        Decision::NoOpinion => None,
    });
    let reason = match reason {
        Some(None) => return Ok(()),
        Some(Some(reason)) => reason,
        None => String::new(),
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

/// Kubernetes' wording: `User "u" cannot delete resource "pods" in API
/// group "" in the namespace "default": <reason>`.
fn refusal(info: &RequestInfo, reason: &str) -> String {
    let resource = match info.subresource {
        "" => info.resource.to_string(),
        sub => format!("{}/{sub}", info.resource),
    };
    let namespace = match info.namespace.as_str() {
        "" => String::new(),
        ns => format!(" in the namespace {ns:?}"),
    };
    let reason = match reason {
        "" => String::new(),
        reason => format!(": {reason}"),
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
