//! POST of SelfSubjectAccessReview and SelfSubjectRulesReview: the answer
//! comes back in the created object's status; nothing is stored.

use super::{json_response, method_not_allowed, Call, Target};
use crate::api::Api;
use crate::error::ApiError;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use berth_proto::authorization_v1::{SelfSubjectAccessReview, SelfSubjectRulesReview};

pub(super) async fn create(api: &Api, target: &Target, call: &Call) -> Result<Response, ApiError> {
    if call.method != Method::POST || !target.name.is_empty() {
        return Err(method_not_allowed(call));
    }
    let group = target.kind.group;
    let head = call.head();
    match target.kind.kind {
        "SelfSubjectAccessReview" => {
            let review: SelfSubjectAccessReview = call.object(group, target.kind.kind)?;
            let answered = api.access_review(&head, review).await?;
            Ok(json_response(StatusCode::CREATED, &answered))
        }
        "SelfSubjectRulesReview" => {
            let review: SelfSubjectRulesReview = call.object(group, target.kind.kind)?;
            let answered = api.rules_review(&head, review).await?;
            Ok(json_response(StatusCode::CREATED, &answered))
        }
        other => Err(ApiError::NotFound { kind: "resource".into(), name: other.into() }),
    }
}
