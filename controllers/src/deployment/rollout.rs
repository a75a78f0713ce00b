//! The arithmetic of a rollout, apart from the API: how far the new
//! ReplicaSet may grow, how far the old ones may shrink, and how a scale
//! in the middle of a rollout is spread. Kubernetes' rules, with one
//! difference that makes the bounds hold at every moment rather than
//! eventually: a ReplicaSet counts as at least as many pods as its cache
//! still shows (deletions not yet seen count), and as at most as many
//! available pods as its spec keeps (pods about to be deleted do not).

use berth_proto::apps_v1::{Deployment, ReplicaSet};
use berth_proto::IntOrString;
use std::cmp::Ordering;

/// One of a Deployment's ReplicaSets with what the pod cache says of it.
#[derive(Clone, Debug)]
pub struct Counted<'a> {
    pub rs: &'a ReplicaSet,
    /// Active pods it controls.
    pub pods: i32,
    /// Of those, available (ready for minReadySeconds).
    pub available: i32,
}

impl Counted<'_> {
    pub fn spec(&self) -> i32 {
        self.rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
    }

    pub fn name(&self) -> &str {
        self.rs.metadata.as_ref().map_or("", |m| m.name.as_str())
    }

    /// Pods it may have: those wanted, and those still going.
    pub fn counted_pods(&self) -> i32 {
        self.spec().max(self.pods)
    }

    /// Pods sure to stay available: not more than it keeps.
    pub fn counted_available(&self) -> i32 {
        self.spec().min(self.available)
    }

    fn created(&self) -> (Option<berth_proto::Time>, &str) {
        (self.rs.metadata.as_ref().and_then(|m| m.creation_timestamp), self.name())
    }
}

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn is_rolling_update(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).is_none_or(|s| s.r#type != "Recreate")
}

/// maxSurge (rounded up) and maxUnavailable (rounded down) against
/// spec.replicas; both zero would stall a rollout, so unavailable becomes 1.
pub fn fenceposts(d: &Deployment) -> Result<(i32, i32), String> {
    if !is_rolling_update(d) {
        return Ok((0, 0));
    }
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.clone())
        .unwrap_or_default();
    let desired = replicas(d);
    let pct = |v: Option<IntOrString>, up: bool| {
        v.unwrap_or(IntOrString::String("25%".into()))
            .scaled_value(desired, up)
            .map_err(|e| e.to_string())
    };
    let surge = pct(rolling.max_surge, true)?.max(0);
    let unavailable = pct(rolling.max_unavailable, false)?.max(0);
    Ok(if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) })
}

/// maxUnavailable, never more than the replicas.
pub fn max_unavailable(d: &Deployment) -> Result<i32, String> {
    if !is_rolling_update(d) || replicas(d) == 0 {
        return Ok(0);
    }
    Ok(fenceposts(d)?.1.min(replicas(d)))
}

/// The size the new ReplicaSet may grow to now.
pub fn new_rs_replicas(d: &Deployment, all: &[Counted], new: &Counted) -> Result<i32, String> {
    if !is_rolling_update(d) {
        return Ok(replicas(d));
    }
    let (surge, _) = fenceposts(d)?;
    let current: i32 = all.iter().map(Counted::counted_pods).sum();
    let max_total = replicas(d) + surge;
    if current >= max_total {
        return Ok(new.spec());
    }
    let up = (max_total - current).min((replicas(d) - new.spec()).max(0));
    Ok(new.spec() + up)
}

/// Oldest first; ties by name.
pub fn by_age(a: &Counted, b: &Counted) -> Ordering {
    a.created().cmp(&b.created())
}

/// How the old ReplicaSets shrink in one step of a rolling update: first
/// the pods that are not available (they serve no one), then available
/// ones down to minAvailable. Answers (name, new size) for each change.
pub fn old_scale_down(
    d: &Deployment,
    all: &[Counted],
    old: &[Counted],
    new: Option<&Counted>,
) -> Result<Vec<(String, i32)>, String> {
    let old_pods: i32 = old.iter().map(Counted::spec).sum();
    if old_pods == 0 {
        return Ok(Vec::new());
    }
    let all_pods: i32 = all.iter().map(Counted::counted_pods).sum();
    let min_available = replicas(d) - max_unavailable(d)?;
    let new_unavailable = new.map_or(0, |n| n.spec() - n.counted_available());
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(Vec::new());
    }
    let mut sizes: Vec<(String, i32, i32)> = {
        let mut sorted: Vec<&Counted> = old.iter().collect();
        sorted.sort_by(|a, b| by_age(a, b));
        sorted.iter().map(|c| (c.name().to_string(), c.spec(), c.counted_available())).collect()
    };
    // Unhealthy first, within what the bound allows.
    let mut cleaned = 0;
    for (_, spec, available) in sizes.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let unhealthy = (*spec - *available).max(0);
        let down = unhealthy.min(max_scaled_down - cleaned);
        *spec -= down;
        cleaned += down;
    }
    // Then available pods, down to minAvailable.
    let available: i32 = old.iter().map(Counted::counted_available).sum::<i32>()
        + new.map_or(0, Counted::counted_available);
    let mut budget = (available - min_available).max(0);
    for (_, spec, available) in sizes.iter_mut() {
        if budget == 0 {
            break;
        }
        let down = (*spec).min(budget).min(*available);
        *spec -= down;
        budget -= down;
    }
    Ok(old
        .iter()
        .filter_map(|c| {
            let size = sizes.iter().find(|(n, ..)| n == c.name())?.1;
            (size != c.spec()).then(|| (c.name().to_string(), size))
        })
        .collect())
}

/// Spreads a change of spec.replicas over the active ReplicaSets in
/// proportion to their sizes (their share of max-replicas when they were
/// last scaled), the remainder to the largest. Answers the new sizes of the
/// ReplicaSets that change. `max_replicas` is each one's max-replicas
/// annotation (None: the Deployment's status replicas stand in).
pub fn proportional(
    d: &Deployment,
    active: &[(Counted, Option<i32>)],
) -> Result<Vec<(String, i32)>, String> {
    let (surge, _) = fenceposts(d)?;
    let desired = replicas(d);
    let allowed = if desired > 0 { desired + surge } else { 0 };
    let current: i32 = active.iter().map(|(c, _)| c.spec()).sum();
    let to_add = allowed - current;
    if to_add == 0 {
        return Ok(Vec::new());
    }
    let mut order: Vec<&(Counted, Option<i32>)> = active.iter().collect();
    // Growing favours the largest (newest on ties); shrinking takes from the
    // largest (oldest on ties) first.
    order.sort_by(|(a, _), (b, _)| {
        b.spec().cmp(&a.spec()).then_with(|| if to_add > 0 { by_age(b, a) } else { by_age(a, b) })
    });
    let status_replicas = d.status.as_ref().map_or(0, |s| s.replicas);
    let mut added = 0;
    let mut sizes: Vec<(String, i32)> = Vec::new();
    for (c, max_annotated) in &order {
        let mut proportion = 0;
        if c.spec() > 0 && added != to_add {
            let fraction = if desired == 0 {
                -c.spec()
            } else {
                let base = max_annotated.unwrap_or(status_replicas);
                if base > 0 {
                    let scaled = f64::from(c.spec()) * f64::from(desired + surge) / f64::from(base);
                    scaled.round() as i32 - c.spec()
                } else {
                    0
                }
            };
            let left = to_add - added;
            proportion = if to_add > 0 { fraction.min(left) } else { fraction.max(left) };
        }
        added += proportion;
        sizes.push((c.name().to_string(), c.spec() + proportion));
    }
    if added != to_add {
        if let Some(first) = sizes.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
    }
    Ok(sizes
        .into_iter()
        .filter(|(name, size)| active.iter().any(|(c, _)| c.name() == name && c.spec() != *size))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::apps_v1::{
        DeploymentSpec, DeploymentStatus, DeploymentStrategy, ReplicaSetSpec,
        RollingUpdateDeployment,
    };
    use berth_proto::meta_v1::ObjectMeta;
    use berth_proto::Time;

    fn deployment(replicas: i32, surge: &str, unavailable: &str) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    r#type: "RollingUpdate".into(),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(IntOrString::String(surge.into())),
                        max_unavailable: Some(IntOrString::String(unavailable.into())),
                    }),
                }),
                ..Default::default()
            }),
            status: Some(DeploymentStatus { replicas, ..Default::default() }),
            ..Default::default()
        }
    }

    fn rs(name: &str, spec: i32, created: i64) -> ReplicaSet {
        ReplicaSet {
            metadata: Some(ObjectMeta {
                name: name.into(),
                creation_timestamp: Some(Time::from_unix(created, 0)),
                ..Default::default()
            }),
            spec: Some(ReplicaSetSpec { replicas: Some(spec), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn percentages_round_as_kubernetes_does() {
        assert_eq!(fenceposts(&deployment(10, "25%", "25%")), Ok((3, 2)));
        assert_eq!(fenceposts(&deployment(20, "25%", "25%")), Ok((5, 5)));
        assert_eq!(fenceposts(&deployment(3, "0%", "0%")), Ok((0, 1)), "a rollout never stalls");
        assert!(fenceposts(&deployment(3, "x", "1")).is_err());
    }

    #[test]
    fn the_new_replica_set_grows_within_max_surge_counting_pods_still_going() {
        let d = deployment(20, "25%", "25%");
        let (old, new) = (rs("old", 20, 1), rs("new", 0, 2));
        let counted_old = Counted { rs: &old, pods: 20, available: 20 };
        let counted_new = Counted { rs: &new, pods: 0, available: 0 };
        let all = [counted_old.clone(), counted_new.clone()];
        assert_eq!(new_rs_replicas(&d, &all, &counted_new), Ok(5));
        // The old set was scaled to 15 but its 20 pods are still there.
        let old15 = rs("old", 15, 1);
        let going = [Counted { rs: &old15, pods: 20, available: 20 }, counted_new.clone()];
        assert_eq!(new_rs_replicas(&d, &going, &counted_new), Ok(5));
    }

    #[test]
    fn old_replica_sets_shrink_no_further_than_min_available() {
        let d = deployment(20, "25%", "25%");
        let (old, new) = (rs("old", 20, 1), rs("new", 5, 2));
        // New pods not yet available: nothing may go below 15 available.
        let old_c = Counted { rs: &old, pods: 20, available: 20 };
        let new_c = Counted { rs: &new, pods: 5, available: 0 };
        let all = [old_c.clone(), new_c.clone()];
        assert_eq!(
            old_scale_down(&d, &all, std::slice::from_ref(&old_c), Some(&new_c)),
            Ok(vec![("old".into(), 15)])
        );
        // An old set whose status still counts pods it is deleting.
        let old15 = rs("old", 15, 1);
        let stale = Counted { rs: &old15, pods: 20, available: 20 };
        let new_ready = Counted { rs: &new, pods: 5, available: 5 };
        let all = [stale.clone(), new_ready.clone()];
        let plan = old_scale_down(&d, &all, &[stale], Some(&new_ready)).unwrap();
        assert_eq!(plan, vec![("old".to_string(), 10)], "15 + 5 available, 10 + 5 kept after");
    }

    #[test]
    fn a_scale_in_mid_rollout_is_spread_in_proportion() {
        // 10 replicas, surge 3: old 8 + new 5 = 13 = 10 + 3. Scaled to 20
        // (surge 5): 25 allowed, 12 to add.
        let mut d = deployment(20, "25%", "25%");
        d.status.as_mut().unwrap().replicas = 13;
        let (old, new) = (rs("old", 8, 1), rs("new", 5, 2));
        let active = [
            (Counted { rs: &old, pods: 8, available: 8 }, Some(13)),
            (Counted { rs: &new, pods: 5, available: 0 }, Some(13)),
        ];
        let mut plan = proportional(&d, &active).unwrap();
        plan.sort();
        assert_eq!(plan, vec![("new".to_string(), 10), ("old".to_string(), 15)]);
    }
}
