//! What ties a Deployment to its ReplicaSets over time: the pod-template
//! hash that names each template, the revision annotations, and the
//! history that revisionHistoryLimit keeps.

use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::core_v1::PodTemplateSpec;
use berth_proto::Resource;

/// The label (on a ReplicaSet's selector, template and pods) that tells one
/// template's pods from another's.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The revision of a ReplicaSet, and of its Deployment's current template.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a ReplicaSet held before a rollback made it current.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// spec.replicas of the Deployment when it last scaled the ReplicaSet.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// spec.replicas + maxSurge then: the base of proportional scaling.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Set on a Deployment to roll back to that revision ("0": the previous).
/// apps/v1 has no spec.rollbackTo; this annotation carries the request, and
/// the controller removes it once handled.
pub const ROLLBACK_TO: &str = "deployment.berth.io/rollback-to";

/// The characters a hash is written in: no vowels, no look-alike digits.
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// A short, stable name for a pod template: FNV-1a over its JSON form (maps
/// are ordered, so equal templates hash alike), and over the collision
/// count when a name was already taken by another template.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(template).unwrap_or_default());
    if let Some(count) = collision_count {
        feed(&count.to_le_bytes());
    }
    hash.to_string().bytes().map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char).collect()
}

/// Whether two templates are the same once the hash label is set aside.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

pub fn without_hash(template: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(meta) = t.metadata.as_mut() {
        meta.labels.remove(POD_TEMPLATE_HASH);
    }
    t
}

/// A ReplicaSet's revision; 0 when it has none.
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata().annotations.get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

pub fn max_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    sets.into_iter().map(revision).max().unwrap_or(0)
}

/// The revision before the newest one among `sets`; 0 when there is none.
pub fn previous_revision<'a>(sets: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    let mut revisions: Vec<i64> = sets.into_iter().map(revision).filter(|r| *r > 0).collect();
    revisions.sort_unstable();
    revisions.dedup();
    revisions.iter().rev().nth(1).copied().unwrap_or(0)
}

/// Gives the ReplicaSet `revision` if it has an older one, keeping the old
/// one in its history; answers whether anything changed.
pub fn set_revision(rs: &mut ReplicaSet, new_revision: i64) -> bool {
    let old = revision(rs);
    if old >= new_revision {
        return false;
    }
    let annotations = &mut rs.metadata_mut().annotations;
    if old > 0 {
        let history = annotations.get(REVISION_HISTORY).cloned().unwrap_or_default();
        let history = if history.is_empty() { old.to_string() } else { format!("{history},{old}") };
        annotations.insert(REVISION_HISTORY.into(), history);
    }
    annotations.insert(REVISION.into(), new_revision.to_string());
    true
}

/// Records the replicas a ReplicaSet was scaled for; answers whether
/// anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = &mut rs.metadata_mut().annotations;
    let mut changed = false;
    for (key, value) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.into(), value);
            changed = true;
        }
    }
    changed
}

pub fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata().annotations.get(key).and_then(|v| v.parse().ok())
}

/// The old ReplicaSets history may drop, oldest revision first: beyond
/// revisionHistoryLimit, scaled to zero, with no pods left, and fully
/// observed by their controller.
pub fn beyond_history<'a>(deployment: &Deployment, old: &[&'a ReplicaSet]) -> Vec<&'a ReplicaSet> {
    let Some(limit) = deployment.spec.as_ref().and_then(|s| s.revision_history_limit) else {
        return Vec::new();
    };
    let mut alive: Vec<&ReplicaSet> =
        old.iter().copied().filter(|rs| rs.metadata().deletion_timestamp.is_none()).collect();
    let excess = alive.len().saturating_sub(limit.max(0) as usize);
    alive.sort_by_key(|rs| revision(rs));
    alive
        .into_iter()
        .take(excess)
        .filter(|rs| {
            let status = rs.status.clone().unwrap_or_default();
            rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) == 0
                && status.replicas == 0
                && status.observed_generation >= rs.metadata().generation
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::meta_v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: BTreeMap::from([("app".to_string(), "web".to_string())]),
                ..Default::default()
            }),
            spec: Some(berth_proto::core_v1::PodSpec {
                containers: vec![berth_proto::core_v1::Container {
                    name: "c".into(),
                    image: image.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_template_hashes_the_same_every_time_and_differently_from_another() {
        let a = template("web:1");
        assert_eq!(template_hash(&a, None), template_hash(&a.clone(), None));
        assert_ne!(template_hash(&a, None), template_hash(&template("web:2"), None));
        assert_ne!(
            template_hash(&a, None),
            template_hash(&a, Some(1)),
            "a collision moves the name"
        );
        assert!(template_hash(&a, None).bytes().all(|b| ALPHABET.contains(&b)));
        let mut labelled = a.clone();
        labelled.metadata.as_mut().unwrap().labels.insert(POD_TEMPLATE_HASH.into(), "x".into());
        assert!(equal_ignoring_hash(&a, &labelled));
    }

    #[test]
    fn revisions_move_forward_and_keep_their_history() {
        let mut rs = ReplicaSet::default();
        assert!(set_revision(&mut rs, 1));
        assert!(!set_revision(&mut rs, 1), "a revision never goes back");
        assert!(set_revision(&mut rs, 3));
        assert_eq!(revision(&rs), 3);
        assert_eq!(rs.metadata().annotations.get(REVISION_HISTORY).map(String::as_str), Some("1"));
        let mut other = ReplicaSet::default();
        set_revision(&mut other, 2);
        assert_eq!(previous_revision([&rs, &other]), 2);
        assert_eq!(max_revision([&rs, &other]), 3);
    }
}
