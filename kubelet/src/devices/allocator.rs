//! Which devices a container gets: only healthy devices that no other
//! container holds (a pod's init containers' devices may pass on to its
//! regular containers, since init containers have finished by then), the
//! plugin's preference first.

use super::checkpoint::Allocations;
use std::collections::{BTreeMap, BTreeSet};

/// The healthy devices of `resource` that a container of pod `uid` may
/// take; `reusable` names that pod's containers whose devices it may share
/// (its init containers, for a regular container).
pub(super) fn free(
    devices: &BTreeMap<String, bool>,
    allocations: &Allocations,
    resource: &str,
    uid: &str,
    reusable: &[String],
) -> Vec<String> {
    let held: BTreeSet<&String> = allocations
        .iter()
        .flat_map(|(pod, containers)| {
            containers
                .iter()
                .filter(move |(name, _)| !(pod == uid && reusable.contains(name)))
                .filter_map(|(_, resources)| resources.get(resource))
                .flat_map(|a| &a.device_ids)
        })
        .collect();
    devices
        .iter()
        .filter(|(id, healthy)| **healthy && !held.contains(id))
        .map(|(id, _)| id.clone())
        .collect()
}

/// `wanted` of `free`: the plugin's `preferred` ones that are free first,
/// then the rest in order; None when there are not enough.
pub(super) fn choose(free: &[String], wanted: usize, preferred: &[String]) -> Option<Vec<String>> {
    if free.len() < wanted {
        return None;
    }
    let mut chosen: Vec<String> = Vec::with_capacity(wanted);
    for id in preferred.iter().chain(free) {
        if chosen.len() == wanted {
            break;
        }
        if free.contains(id) && !chosen.contains(id) {
            chosen.push(id.clone());
        }
    }
    Some(chosen)
}

#[cfg(test)]
mod tests {
    use super::super::checkpoint::Allocation;
    use super::*;

    fn devices(ids: &[(&str, bool)]) -> BTreeMap<String, bool> {
        ids.iter().map(|(id, h)| (id.to_string(), *h)).collect()
    }

    fn held(entries: &[(&str, &str, &[&str])]) -> Allocations {
        let mut out = Allocations::new();
        for (uid, container, ids) in entries {
            out.entry(uid.to_string())
                .or_default()
                .entry(container.to_string())
                .or_default()
                .insert(
                    "r".into(),
                    Allocation {
                        device_ids: ids.iter().map(|s| s.to_string()).collect(),
                        ..Default::default()
                    },
                );
        }
        out
    }

    #[test]
    fn held_and_unhealthy_devices_are_not_free() {
        let d = devices(&[("a", true), ("b", true), ("c", false), ("d", true)]);
        let a = held(&[("pod-1", "app", &["b"])]);
        assert_eq!(free(&d, &a, "r", "pod-2", &[]), ["a", "d"]);
        // Another resource's allocations do not count.
        assert_eq!(free(&d, &a, "other", "pod-2", &[]), ["a", "b", "d"]);
    }

    #[test]
    fn a_pods_init_container_devices_pass_to_its_containers_only() {
        let d = devices(&[("a", true), ("b", true)]);
        let a = held(&[("pod-1", "init", &["a"])]);
        assert_eq!(free(&d, &a, "r", "pod-1", &["init".into()]), ["a", "b"]);
        assert_eq!(free(&d, &a, "r", "pod-2", &["init".into()]), ["b"]);
    }

    #[test]
    fn choice_prefers_the_plugins_picks_and_never_overcommits() {
        let f: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(choose(&f, 2, &[]).unwrap(), ["a", "b"]);
        assert_eq!(choose(&f, 2, &["c".into()]).unwrap(), ["c", "a"]);
        // A preference for a device that is not free is ignored.
        assert_eq!(choose(&f, 2, &["x".into(), "c".into(), "c".into()]).unwrap(), ["c", "a"]);
        assert_eq!(choose(&f, 3, &[]).unwrap().len(), 3);
        assert!(choose(&f, 4, &[]).is_none());
        assert_eq!(choose(&f, 0, &[]).unwrap(), Vec::<String>::new());
    }
}
