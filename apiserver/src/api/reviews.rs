//! SelfSubjectAccessReview and SelfSubjectRulesReview: a caller asks what
//! it may do (`kubectl auth can-i`), and the authorizer chain that decides
//! its real requests answers. Created and answered, never stored.

use super::Api;
use crate::error::ApiError;
use crate::filters::{Decision, RequestInfo};
use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::authorization_v1::{
    NonResourceRule, ResourceRule, SelfSubjectAccessReview, SelfSubjectRulesReview,
    SubjectAccessReviewStatus, SubjectRulesReviewStatus,
};
use berth_proto::coordination_v1::Lease;
use berth_proto::core_v1::{Event, Namespace, Node, Pod};
use berth_proto::rbac_v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use berth_proto::Resource;
use std::collections::BTreeSet;
use std::sync::LazyLock;
use tonic::Request;

/// The group of the reviews.
pub(crate) const GROUP: &str = "authorization.k8s.io";
const VERSION: &str = "authorization.k8s.io/v1";

/// Stands for a resource, group or verb berth does not serve: only rules
/// for any ("*") match it.
const UNSERVED: &str = "\u{0}unserved";

/// The words a request's attributes may be made of: what berth serves and
/// what its rules name. The authorizers match on static words.
static WORDS: LazyLock<BTreeSet<&'static str>> = LazyLock::new(|| {
    macro_rules! served {
        ($($ty:ty),*) => { [$(<$ty>::GROUP, <$ty>::PLURAL),*] };
    }
    let served = served!(
        Namespace,
        Node,
        Pod,
        Event,
        ReplicaSet,
        Deployment,
        Lease,
        Role,
        ClusterRole,
        RoleBinding,
        ClusterRoleBinding
    );
    let verbs = [
        "*",
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "bind",
        "escalate",
        "impersonate",
    ];
    let subresources =
        ["status", "binding", "scale", "eviction", "log", "exec", "attach", "finalize"];
    let others = [GROUP, "selfsubjectaccessreviews", "selfsubjectrulesreviews", "events.k8s.io"];
    served.into_iter().chain(verbs).chain(subresources).chain(others).collect()
});

/// `word` as the static word it equals; an unserved one as [`UNSERVED`].
pub(crate) fn word(word: &str, unserved: &mut Vec<String>) -> &'static str {
    match WORDS.get(word) {
        Some(known) => known,
        None => {
            unserved.push(format!("{word:?}"));
            UNSERVED
        }
    }
}

impl Api {
    /// Whether the caller may do what the review describes.
    pub(crate) async fn access_review(
        &self,
        head: &Request<()>,
        mut review: SelfSubjectAccessReview,
    ) -> Result<SelfSubjectAccessReview, ApiError> {
        self.measured("create", "selfsubjectaccessreviews", async {
            let asker = self.allow(head, review_info("selfsubjectaccessreviews"))?;
            let spec = review.spec.clone().unwrap_or_default();
            let mut unserved = Vec::new();
            let mut info = match (&spec.resource_attributes, &spec.non_resource_attributes) {
                (Some(r), None) => {
                    let mut info = review_info("");
                    info.verb = word(&r.verb, &mut unserved);
                    info.api_group = word(&r.group, &mut unserved);
                    info.resource = word(&r.resource, &mut unserved);
                    info.subresource =
                        if r.subresource.is_empty() { "" } else { word(&r.subresource, &mut unserved) };
                    info.namespace = r.namespace.clone();
                    info.name = r.name.clone();
                    info
                }
                (None, Some(n)) => {
                    let mut info = review_info("");
                    info.resource = "";
                    info.verb = word(&n.verb, &mut unserved);
                    info.path = n.path.clone();
                    info
                }
                _ => {
                    return Err(ApiError::BadRequest(
                        "spec: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
                    ))
                }
            };
            info.user = asker.user;
            let mut status = match self.filters.decide(&info) {
                Decision::Allow => SubjectAccessReviewStatus { allowed: true, ..Default::default() },
                Decision::Deny(reason) => {
                    SubjectAccessReviewStatus { denied: true, reason, ..Default::default() }
                }
                Decision::NoOpinion => SubjectAccessReviewStatus::default(),
            };
            if !unserved.is_empty() {
                status.evaluation_error = format!(
                    "berth serves no {}; only rules for any (\"*\") were matched",
                    unserved.join(", ")
                );
            }
            review.api_version = VERSION.into();
            review.kind = "SelfSubjectAccessReview".into();
            review.status = Some(status);
            Ok(review)
        })
        .await
    }

    /// What the caller may do in the review's namespace.
    pub(crate) async fn rules_review(
        &self,
        head: &Request<()>,
        mut review: SelfSubjectRulesReview,
    ) -> Result<SelfSubjectRulesReview, ApiError> {
        self.measured("create", "selfsubjectrulesreviews", async {
            let asker = self.allow(head, review_info("selfsubjectrulesreviews"))?;
            let namespace = review.spec.as_ref().map(|s| s.namespace.clone()).unwrap_or_default();
            let (rules, incomplete) = self.filters.rules_for(&asker.user, &namespace);
            let mut status = SubjectRulesReviewStatus { incomplete, ..Default::default() };
            for rule in rules {
                if !rule.resources.is_empty() {
                    status.resource_rules.push(ResourceRule {
                        verbs: rule.verbs,
                        api_groups: rule.api_groups,
                        resources: rule.resources,
                        resource_names: rule.resource_names,
                    });
                } else if !rule.non_resource_ur_ls.is_empty() {
                    status.non_resource_rules.push(NonResourceRule {
                        verbs: rule.verbs,
                        non_resource_ur_ls: rule.non_resource_ur_ls,
                    });
                }
            }
            review.api_version = VERSION.into();
            review.kind = "SelfSubjectRulesReview".into();
            review.status = Some(status);
            Ok(review)
        })
        .await
    }
}

/// Creating a review of `resource` (a cluster-wide create of the
/// authorization group).
fn review_info(resource: &'static str) -> RequestInfo {
    let mut info = RequestInfo::new::<Namespace>("create", "", "", "");
    info.api_group = GROUP;
    info.resource = resource;
    info
}
