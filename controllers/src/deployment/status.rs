//! A Deployment's status: replica counts from its ReplicaSets' pods, and the
//! Available and Progressing conditions (with progressDeadlineSeconds).

use super::rollout::{self, Counted};
use berth_proto::apps_v1::{Deployment, DeploymentCondition, DeploymentStatus};
use berth_proto::Time;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";

/// Progressing reasons, as Kubernetes names them.
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";

/// Counts for the status from the ReplicaSets and their pods.
pub fn calculate(
    d: &Deployment,
    all: &[Counted],
    new: Option<&Counted>,
    ready: i32,
) -> DeploymentStatus {
    let current = d.status.clone().unwrap_or_default();
    let replicas: i32 = all.iter().map(|c| c.pods).sum();
    let available: i32 = all.iter().map(|c| c.available).sum();
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.as_ref().map_or(0, |m| m.generation),
        replicas,
        updated_replicas: new.map_or(0, |n| n.pods),
        ready_replicas: ready,
        available_replicas: available,
        unavailable_replicas: (rollout::replicas(d) - available).max(0),
        conditions: current.conditions.clone(),
        collision_count: current.collision_count,
    };
    let min_available = rollout::replicas(d) - rollout::max_unavailable(d).unwrap_or(0);
    if available >= min_available {
        set_condition(
            &mut status,
            AVAILABLE,
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        );
    } else {
        set_condition(
            &mut status,
            AVAILABLE,
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        );
    }
    status
}

pub fn condition<'a>(status: &'a DeploymentStatus, kind: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.iter().find(|c| c.r#type == kind)
}

/// Sets a condition; its transition time moves only when its status does,
/// and its update time only when something about it changes.
pub fn set_condition(
    status: &mut DeploymentStatus,
    kind: &str,
    value: &str,
    reason: &str,
    message: &str,
) {
    let now = Time::now();
    match status.conditions.iter_mut().find(|c| c.r#type == kind) {
        Some(c) if c.status == value && c.reason == reason && c.message == message => {}
        Some(c) => {
            if c.status != value {
                c.last_transition_time = Some(now);
            }
            c.status = value.into();
            c.reason = reason.into();
            c.message = message.into();
            c.last_update_time = Some(now);
        }
        None => status.conditions.push(DeploymentCondition {
            r#type: kind.into(),
            status: value.into(),
            reason: reason.into(),
            message: message.into(),
            last_update_time: Some(now),
            last_transition_time: Some(now),
        }),
    }
}

pub fn remove_condition(status: &mut DeploymentStatus, kind: &str) {
    status.conditions.retain(|c| c.r#type != kind);
}

/// Every replica updated, existing and available, and the generation seen.
pub fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let want = rollout::replicas(d);
    status.updated_replicas == want
        && status.replicas == want
        && status.available_replicas == want
        && status.observed_generation >= d.metadata.as_ref().map_or(0, |m| m.generation)
}

/// Whether the rollout moved since the last status.
pub fn progressed(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    new.updated_replicas > old.updated_replicas
        || new.ready_replicas > old.ready_replicas
        || new.available_replicas > old.available_replicas
        || new.replicas < old.replicas
}

/// Seconds left before the progress deadline passes; None without one.
pub fn deadline_left(d: &Deployment, status: &DeploymentStatus) -> Option<i64> {
    let deadline = i64::from(d.spec.as_ref()?.progress_deadline_seconds?);
    let c = condition(status, PROGRESSING)?;
    if c.reason == NEW_RS_AVAILABLE || c.reason == TIMED_OUT || c.status != "True" {
        return None;
    }
    let from = c.last_update_time?.unix_seconds();
    Some(from + deadline - Time::now().unix_seconds())
}
