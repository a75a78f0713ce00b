//! What the controllers need to know about pods and ownership, in one place:
//! which pods count, which are ready and available, who controls an object,
//! and the order in which a scale-down picks its victims.

use berth_client::ApiResource;
use berth_proto::core_v1::{Pod, PodTemplateSpec};
use berth_proto::meta_v1::{ObjectMeta, OwnerReference};
use berth_proto::Resource;
use berth_proto::Time;
use std::cmp::Ordering;

/// A pod that counts towards a workload's replicas: not being deleted and
/// not finished.
pub fn is_active(pod: &Pod) -> bool {
    pod.metadata().deletion_timestamp.is_none() && !is_terminal(pod)
}

/// Succeeded or Failed: the pod will never run again.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed")
}

pub fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().map_or("", |s| s.phase.as_str())
}

/// When the pod's Ready condition last became True; None while not ready.
pub fn ready_since(pod: &Pod) -> Option<Time> {
    let status = pod.status.as_ref()?;
    let ready = status.conditions.iter().find(|c| c.r#type == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.unwrap_or_default())
}

pub fn is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Ready for at least `min_ready_seconds` at `now`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: Time) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(since) => since.unix_seconds() + i64::from(min_ready_seconds) <= now.unix_seconds(),
    }
}

/// Seconds until a ready pod becomes available; None when it is not ready
/// or already available.
pub fn seconds_until_available(pod: &Pod, min_ready_seconds: i32, now: Time) -> Option<i64> {
    let since = ready_since(pod)?;
    let left = since.unix_seconds() + i64::from(min_ready_seconds) - now.unix_seconds();
    (left > 0).then_some(left)
}

pub fn is_bound(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|s| !s.node_name.is_empty())
}

/// The owner reference with controller: true, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references.iter().find(|r| r.controller == Some(true))
}

/// A controller reference to `owner`: what a ReplicaSet puts on its pods
/// and a Deployment on its ReplicaSets. It blocks the owner's foreground
/// deletion until the dependent is gone, as Kubernetes' controllers set it.
pub fn controller_reference<T: ApiResource>(owner: &T) -> OwnerReference {
    let meta = owner.metadata();
    OwnerReference {
        api_version: T::API_VERSION.to_string(),
        kind: T::KIND.to_string(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The characters of a generated name's suffix: Kubernetes' alphabet,
/// without vowels (no words) or look-alike digits.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `prefix` and five random characters, as Kubernetes generates names. The
/// name is chosen here rather than by generateName so a create that is
/// retried after a lost answer cannot make a second pod.
pub fn generate_name(prefix: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + 5);
    name.push_str(prefix);
    let mut bits = u64::from(getrandom::u32().unwrap_or_else(|_| fallback_entropy()))
        | (u64::from(getrandom::u32().unwrap_or_else(|_| fallback_entropy())) << 32);
    for _ in 0..5 {
        name.push(SUFFIX_ALPHABET[(bits % SUFFIX_ALPHABET.len() as u64) as usize] as char);
        bits /= SUFFIX_ALPHABET.len() as u64;
    }
    name
}

/// When the OS has no randomness to give, the clock's nanoseconds still
/// make a collision unlikely (and a collision is only an AlreadyExists).
fn fallback_entropy() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A new pod of `template`, controlled by `owner`, named after it.
pub fn pod_from_template<T: ApiResource>(template: &PodTemplateSpec, owner: &T) -> Pod {
    let from = template.metadata.clone().unwrap_or_default();
    let owner_meta = owner.metadata();
    Pod {
        metadata: Some(ObjectMeta {
            name: generate_name(&format!("{}-", owner_meta.name)),
            namespace: owner_meta.namespace.clone(),
            labels: from.labels,
            annotations: from.annotations,
            owner_references: vec![controller_reference(owner)],
            finalizers: from.finalizers,
            ..Default::default()
        }),
        spec: template.spec.clone(),
        ..Default::default()
    }
}

/// The order in which a scale-down deletes pods, most expendable first:
/// unscheduled before scheduled, Pending before Unknown before Running,
/// not ready before ready, ready for less time before longer, newer
/// before older (Kubernetes' ActivePods ordering, without restart counts).
pub fn deletion_order(a: &Pod, b: &Pod) -> Ordering {
    let phase_rank = |p: &Pod| match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    is_bound(a)
        .cmp(&is_bound(b))
        .then_with(|| phase_rank(a).cmp(&phase_rank(b)))
        .then_with(|| is_ready(a).cmp(&is_ready(b)))
        // Ready later means ready for less time: first to go.
        .then_with(|| ready_since(b).cmp(&ready_since(a)))
        .then_with(|| b.metadata().creation_timestamp.cmp(&a.metadata().creation_timestamp))
        .then_with(|| b.metadata().name.cmp(&a.metadata().name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::core_v1::{PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<i64>, created: i64) -> Pod {
        Pod {
            metadata: Some(ObjectMeta {
                name: name.into(),
                creation_timestamp: Some(Time::from_unix(created, 0)),
                ..Default::default()
            }),
            spec: Some(PodSpec { node_name: node.into(), ..Default::default() }),
            status: Some(PodStatus {
                phase: phase.into(),
                conditions: ready_at
                    .map(|at| PodCondition {
                        r#type: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time::from_unix(at, 0)),
                        ..Default::default()
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn scale_down_takes_unscheduled_then_not_ready_then_newest() {
        let mut pods = [
            pod("old-ready", "n1", "Running", Some(100), 10),
            pod("new-ready", "n1", "Running", Some(100), 20),
            pod("running-not-ready", "n1", "Running", None, 5),
            pod("unscheduled", "", "Pending", None, 1),
            pod("pending-on-node", "n2", "Pending", None, 1),
        ];
        pods.sort_by(deletion_order);
        let names: Vec<&str> = pods.iter().map(|p| p.metadata().name.as_str()).collect();
        assert_eq!(
            names,
            ["unscheduled", "pending-on-node", "running-not-ready", "new-ready", "old-ready"]
        );
    }

    #[test]
    fn a_pod_is_available_once_ready_for_min_ready_seconds() {
        let p = pod("p", "n1", "Running", Some(100), 1);
        assert!(is_available(&p, 0, Time::from_unix(100, 0)));
        assert!(!is_available(&p, 10, Time::from_unix(105, 0)));
        assert_eq!(seconds_until_available(&p, 10, Time::from_unix(105, 0)), Some(5));
        assert!(is_available(&p, 10, Time::from_unix(110, 0)));
        assert!(!is_available(&pod("q", "n1", "Running", None, 1), 0, Time::from_unix(200, 0)));
    }
}
