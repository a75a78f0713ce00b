//! ClusterRole aggregation: a ClusterRole with an aggregationRule gets as
//! its rules the union of the rules of every other ClusterRole that one of
//! its selectors matches, kept up to date as they change. This is how the
//! bootstrap admin, edit and view roles take in rules labelled
//! `rbac.authorization.k8s.io/aggregate-to-edit: "true"` and the like.

use crate::runner::{Action, Reconciler};
use crate::Error;
use berth_client::{Api, Cache, Client, Informer, InformerParams, WorkQueue};
use berth_proto::labels::Selector;
use berth_proto::rbac_v1::{AggregationRule, ClusterRole, PolicyRule};
use berth_proto::Resource;
use std::time::Duration;

pub const NAME: &str = "clusterrole-aggregation";

pub struct AggregationController {
    client: Client,
    roles: Cache<ClusterRole>,
}

/// How soon a key is looked at again while the ClusterRole cache fills.
const UNSYNCED_RECHECK: Duration = Duration::from_millis(100);

impl AggregationController {
    /// The controller and its own informer over ClusterRoles (no other
    /// controller reads them, so a controller-manager that runs without
    /// this one needs no right to list them); the caller runs the informer.
    pub fn new(
        client: &Client,
        resync: Duration,
        queue: &WorkQueue<String>,
    ) -> (AggregationController, Informer<ClusterRole>) {
        let params = InformerParams { resync: Some(resync), ..Default::default() };
        let mut informer: Informer<ClusterRole> = Informer::new(Api::all(client), params);
        let roles = informer.cache();
        // Any role may be selected by any aggregated one (labels change),
        // so every change looks at every aggregated role again.
        let (cache, queue) = (roles.clone(), queue.clone());
        informer.on_change(move |change| {
            let changed = change.object();
            if changed.aggregation_rule.is_some() {
                queue.add(changed.metadata().name.clone());
            }
            for role in cache.list() {
                if role.aggregation_rule.is_some() {
                    queue.add(role.metadata().name.clone());
                }
            }
        });
        (AggregationController { client: client.clone(), roles }, informer)
    }
}

impl Reconciler for AggregationController {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn reconcile(&self, name: &str) -> Result<Action, Error> {
        // A union over a half-filled cache would drop rules.
        if !self.roles.is_synced() {
            return Ok(Action::Requeue(UNSYNCED_RECHECK));
        }
        let Some(role) = self.roles.get(name) else { return Ok(Action::AwaitChange) };
        let Some(rule) = &role.aggregation_rule else { return Ok(Action::AwaitChange) };
        let rules = aggregate(name, rule, &self.roles.list())?;
        if rules == role.rules {
            return Ok(Action::AwaitChange);
        }
        let mut updated = role.as_ref().clone();
        updated.rules = rules;
        tracing::info!(role = %name, rules = updated.rules.len(), "aggregated ClusterRole updated");
        // Written against the cached resourceVersion: a conflict means the
        // cache was stale, and the newer object comes back through it.
        match Api::<ClusterRole>::all(&self.client).update(&updated).await {
            Ok(_) => Ok(Action::AwaitChange),
            Err(e) if e.is_not_found() => Ok(Action::AwaitChange),
            Err(e) => Err(e.into()),
        }
    }
}

/// The rules of every role in `roles` (but `name` itself) that a selector
/// of `rule` matches, in the order of the roles' names, each rule once.
fn aggregate(
    name: &str,
    rule: &AggregationRule,
    roles: &[std::sync::Arc<ClusterRole>],
) -> Result<Vec<PolicyRule>, Error> {
    let selectors = rule
        .cluster_role_selectors
        .iter()
        .map(|s| Selector::from_label_selector(Some(s)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(&format!("clusterrole {name}"), e))?;
    let mut selected: Vec<&ClusterRole> = roles
        .iter()
        .map(|r| r.as_ref())
        .filter(|r| r.metadata().name != name)
        .filter(|r| selectors.iter().any(|s| s.matches(&r.metadata().labels)))
        .collect();
    selected.sort_by(|a, b| a.metadata().name.cmp(&b.metadata().name));
    let mut rules: Vec<PolicyRule> = Vec::new();
    for rule in selected.into_iter().flat_map(|r| &r.rules) {
        if !rules.contains(rule) {
            rules.push(rule.clone());
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::meta_v1::{LabelSelector, ObjectMeta};
    use std::sync::Arc;

    fn role(name: &str, label: Option<&str>, verbs: &[&str]) -> Arc<ClusterRole> {
        Arc::new(ClusterRole {
            metadata: Some(ObjectMeta {
                name: name.into(),
                labels: label
                    .map(|l| [(l.to_string(), "true".to_string())].into())
                    .unwrap_or_default(),
                ..Default::default()
            }),
            rules: vec![PolicyRule {
                verbs: verbs.iter().map(|v| v.to_string()).collect(),
                api_groups: vec![String::new()],
                resources: vec!["pods".into()],
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn selecting(label: &str) -> AggregationRule {
        AggregationRule {
            cluster_role_selectors: vec![LabelSelector {
                match_labels: [(label.to_string(), "true".to_string())].into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn the_union_of_the_selected_roles_rules_in_name_order_each_once() {
        let roles = vec![
            role("b", Some("to-readers"), &["list"]),
            role("a", Some("to-readers"), &["get"]),
            role("c", Some("to-readers"), &["get"]),
            role("d", Some("elsewhere"), &["delete"]),
            // The aggregated role matches its own selector: not counted.
            role("readers", Some("to-readers"), &["watch"]),
        ];
        let rules = aggregate("readers", &selecting("to-readers"), &roles).unwrap();
        let verbs: Vec<&str> = rules.iter().map(|r| r.verbs[0].as_str()).collect();
        assert_eq!(verbs, ["get", "list"]);
        assert!(aggregate("readers", &selecting("none"), &roles).unwrap().is_empty());
    }

    #[test]
    fn a_selector_that_does_not_parse_is_an_error_not_an_empty_role() {
        let mut bad = selecting("x");
        bad.cluster_role_selectors[0].match_expressions.push(
            berth_proto::meta_v1::LabelSelectorRequirement {
                key: "k".into(),
                operator: "Sometimes".into(),
                values: Vec::new(),
            },
        );
        assert!(matches!(aggregate("r", &bad, &[]), Err(Error::Invalid { .. })));
    }
}
