//! Escalation prevention for the RBAC kinds, as Kubernetes has it: a user
//! may write a Role or ClusterRole only with rules it already holds (in the
//! role's namespace, or cluster-wide for a ClusterRole) unless it may
//! `escalate` that role, and a RoleBinding or ClusterRoleBinding only to a
//! role whose rules it holds where the binding grants them unless it may
//! `bind` that role. Members of `system:masters` pass.
//!
//! "Holds" is what the authorizer chain answers: every verb, group,
//! resource and name a rule lists is asked as a request of its own, "*"
//! included, so a "*" is held only through a rule that says "*". A word
//! berth does not serve is likewise held only through "*".
//!
//! Runs in admission's validating phase on every create and update of the
//! four kinds, after the chain's own plugins; an update that changes no
//! rules (a role) or no subjects (a binding) grants nothing new and passes.

use super::{Admitted, Decision, Filters, RequestInfo};
use crate::api::reviews::word;
use crate::error::ApiError;
use berth_proto::rbac_v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
};
use berth_proto::Resource;
use std::collections::BTreeMap;

/// The group whose members may grant anything.
const MASTERS: &str = "system:masters";

/// The most permissions (verb by group by resource by name, or verb by
/// URL) one write is checked for: each is an authorizer decision, and a
/// short list of each kind multiplies into many.
const MAX_CHECKS: usize = 20_000;

/// Refuses a write of a role or binding that would grant `info.user` more
/// than it holds; other kinds pass.
pub(super) fn confirm(
    filters: &Filters,
    info: &RequestInfo,
    object: &dyn Admitted,
    old: Option<&dyn Admitted>,
) -> Result<(), ApiError> {
    let (any, old) = (object.as_any(), old.map(Admitted::as_any));
    let namespace = object.metadata().namespace.as_str();
    let name = object.metadata().name.as_str();
    if let Some(role) = any.downcast_ref::<Role>() {
        let old = old.and_then(|o| o.downcast_ref::<Role>()).map(|o| &o.rules);
        let escalate = asking::<Role>(info, "escalate", namespace, name);
        confirm_role(filters, info, &role.rules, old, escalate, namespace)
    } else if let Some(role) = any.downcast_ref::<ClusterRole>() {
        let old = old.and_then(|o| o.downcast_ref::<ClusterRole>());
        let escalate = asking::<ClusterRole>(info, "escalate", "", name);
        confirm_role(filters, info, &role.rules, old.map(|o| &o.rules), escalate.clone(), "")?;
        // An aggregation rule can gather any rule, so setting or changing
        // one takes full authority (or escalate), as in Kubernetes. Asked
        // only then: most writes of a ClusterRole leave it alone.
        let aggregating = role.aggregation_rule.is_some()
            && old.is_none_or(|o| o.aggregation_rule != role.aggregation_rule);
        if aggregating
            && !privileged(info)
            && filters.decide(&escalate) != Decision::Allow
            && !missing(filters, info, &super::authz::full_authority(), "").is_empty()
        {
            return Err(ApiError::Forbidden(format!(
                "clusterroles.{} {name:?} is forbidden: must have cluster-admin privileges to use \
                 the aggregationRule",
                Role::GROUP
            )));
        }
        Ok(())
    } else if let Some(binding) = any.downcast_ref::<RoleBinding>() {
        let same = old
            .and_then(|o| o.downcast_ref::<RoleBinding>())
            .is_some_and(|o| o.subjects == binding.subjects && o.role_ref == binding.role_ref);
        if same {
            return Ok(());
        }
        confirm_binding(filters, info, binding.role_ref.as_ref(), namespace)
    } else if let Some(binding) = any.downcast_ref::<ClusterRoleBinding>() {
        let same = old
            .and_then(|o| o.downcast_ref::<ClusterRoleBinding>())
            .is_some_and(|o| o.subjects == binding.subjects && o.role_ref == binding.role_ref);
        if same {
            return Ok(());
        }
        confirm_binding(filters, info, binding.role_ref.as_ref(), "")
    } else {
        Ok(())
    }
}

/// A role's `rules` (replacing `old`, on an update), held in `namespace`
/// ("" for a ClusterRole) unless `escalate` is allowed.
fn confirm_role(
    filters: &Filters,
    info: &RequestInfo,
    rules: &[PolicyRule],
    old: Option<&Vec<PolicyRule>>,
    escalate: RequestInfo,
    namespace: &str,
) -> Result<(), ApiError> {
    if old.is_some_and(|old| old.as_slice() == rules)
        || privileged(info)
        || filters.decide(&escalate) == Decision::Allow
    {
        return Ok(());
    }
    confirm_held(filters, info, rules, namespace)
}

/// A binding in `namespace` ("" for a ClusterRoleBinding) to `role`.
fn confirm_binding(
    filters: &Filters,
    info: &RequestInfo,
    role: Option<&RoleRef>,
    namespace: &str,
) -> Result<(), ApiError> {
    // Validation has refused a binding without a role already.
    let Some(role) = role else { return Ok(()) };
    if privileged(info) {
        return Ok(());
    }
    let bind = match role.kind.as_str() {
        "Role" => asking::<Role>(info, "bind", namespace, &role.name),
        _ => asking::<ClusterRole>(info, "bind", namespace, &role.name),
    };
    if filters.decide(&bind) == Decision::Allow {
        return Ok(());
    }
    let rules = filters
        .authorizers
        .iter()
        .find_map(|authorizer| authorizer.role_rules(role, namespace))
        .ok_or_else(|| {
            let resource = if role.kind == "Role" { Role::PLURAL } else { ClusterRole::PLURAL };
            ApiError::Forbidden(format!("{resource}.{} {:?} not found", Role::GROUP, role.name))
        })?;
    confirm_held(filters, info, &rules, namespace)
}

fn privileged(info: &RequestInfo) -> bool {
    info.user.groups.iter().any(|g| g == MASTERS)
}

/// The writer asking to `verb` the `T` named `name` in `namespace`
/// (escalate or bind it).
fn asking<T: Resource>(
    info: &RequestInfo,
    verb: &'static str,
    namespace: &str,
    name: &str,
) -> RequestInfo {
    let mut request = RequestInfo::new::<Role>(verb, "", namespace, name);
    request.resource = T::PLURAL;
    request.user = info.user.clone();
    request
}

/// Forbidden, naming what is missing, unless the chain allows the writer
/// every permission `rules` list in `namespace`.
fn confirm_held(
    filters: &Filters,
    info: &RequestInfo,
    rules: &[PolicyRule],
    namespace: &str,
) -> Result<(), ApiError> {
    let checks: usize = rules
        .iter()
        .map(|r| {
            let targets = r.non_resource_ur_ls.len()
                + r.api_groups.len() * r.resources.len() * r.resource_names.len().max(1);
            r.verbs.len() * targets
        })
        .sum();
    if checks > MAX_CHECKS {
        return Err(ApiError::Forbidden(format!(
            "user {:?} is attempting to grant {checks} RBAC permissions at once, more than the \
             {MAX_CHECKS} berth checks; it takes a user who may escalate or bind the role",
            info.user.name
        )));
    }
    let missing = missing(filters, info, rules, namespace);
    if missing.is_empty() {
        return Ok(());
    }
    let groups: Vec<String> = info.user.groups.iter().map(|g| format!("{g:?}")).collect();
    Err(ApiError::Forbidden(format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        info.user.name,
        groups.join(" "),
        missing.join("\n")
    )))
}

/// What of `rules` the chain does not allow the writer in `namespace`,
/// one line per resource (or URL) with its missing verbs, in Kubernetes'
/// compact form.
fn missing(
    filters: &Filters,
    info: &RequestInfo,
    rules: &[PolicyRule],
    namespace: &str,
) -> Vec<String> {
    // (is a URL, group, resource or URL, name) -> verbs not held; resource
    // rules first.
    let mut missing: BTreeMap<(bool, String, String, String), Vec<String>> = BTreeMap::new();
    let mut ask = RequestInfo::new::<Role>("get", "", "", "");
    ask.user = info.user.clone();
    let mut unserved = Vec::new();
    for rule in rules {
        for verb in &rule.verbs {
            ask.verb = word(verb, &mut unserved);
            for url in &rule.non_resource_ur_ls {
                (ask.api_group, ask.resource, ask.subresource) = ("", "", "");
                (ask.namespace, ask.name, ask.path) = (String::new(), String::new(), url.clone());
                if filters.decide(&ask) != Decision::Allow {
                    let key = (true, String::new(), url.clone(), String::new());
                    add(missing.entry(key).or_default(), verb);
                }
            }
            for group in &rule.api_groups {
                ask.api_group = word(group, &mut unserved);
                for resource in &rule.resources {
                    let (plural, sub) = resource.split_once('/').unwrap_or((resource, ""));
                    ask.resource = word(plural, &mut unserved);
                    ask.subresource = if sub.is_empty() { "" } else { word(sub, &mut unserved) };
                    let unnamed = [String::new()];
                    let names = match rule.resource_names.as_slice() {
                        [] => &unnamed[..],
                        names => names,
                    };
                    for name in names {
                        ask.namespace = namespace.to_string();
                        (ask.name, ask.path) = (name.clone(), String::new());
                        if filters.decide(&ask) != Decision::Allow {
                            let key = (false, group.clone(), resource.clone(), name.clone());
                            add(missing.entry(key).or_default(), verb);
                        }
                    }
                }
            }
        }
    }
    let quoted =
        |list: &[String]| list.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" ");
    missing
        .into_iter()
        .map(|((url, group, resource, name), verbs)| {
            let verbs = quoted(&verbs);
            if url {
                return format!("{{NonResourceURLs:[{resource:?}], Verbs:[{verbs}]}}");
            }
            let names = match name.as_str() {
                "" => String::new(),
                name => format!(" ResourceNames:[{name:?}],"),
            };
            format!("{{APIGroups:[{group:?}], Resources:[{resource:?}],{names} Verbs:[{verbs}]}}")
        })
        .collect()
}

fn add(verbs: &mut Vec<String>, verb: &str) {
    if !verbs.iter().any(|v| v == verb) {
        verbs.push(verb.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy;
    use crate::filters::rbac::Policy;
    use crate::filters::{Authorizer, Rbac, UserInfo};
    use berth_proto::meta_v1::ObjectMeta;
    use berth_proto::rbac_v1::Subject;

    fn meta(namespace: &str, name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta { name: name.into(), namespace: namespace.into(), ..Default::default() })
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            verbs: strings(verbs),
            api_groups: strings(groups),
            resources: strings(resources),
            ..Default::default()
        }
    }

    fn role_ref(kind: &str, name: &str) -> Option<RoleRef> {
        Some(RoleRef { api_group: Role::GROUP.into(), kind: kind.into(), name: name.into() })
    }

    fn grant(namespace: &str, user: &str, kind: &str, role: &str) -> RoleBinding {
        RoleBinding {
            metadata: meta(namespace, &format!("{user}-{role}")),
            subjects: vec![Subject {
                kind: "User".into(),
                api_group: Role::GROUP.into(),
                name: user.into(),
                namespace: String::new(),
            }],
            role_ref: role_ref(kind, role),
            ..Default::default()
        }
    }

    fn role(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
        Role { metadata: meta(namespace, name), rules, ..Default::default() }
    }

    fn user(name: &str) -> UserInfo {
        UserInfo { name: name.into(), groups: vec!["system:authenticated".into()] }
    }

    /// RBAC over the bootstrap policy and `roles` and `bindings`.
    fn rbac(roles: Vec<Role>, bindings: Vec<RoleBinding>) -> Filters {
        let mut all_bindings = policy::role_bindings();
        all_bindings.extend(bindings);
        let mut all_roles = policy::roles();
        all_roles.extend(roles);
        let policy = Policy::of(
            all_roles,
            policy::cluster_roles(),
            all_bindings,
            policy::cluster_role_bindings(),
        );
        let rbac: Box<dyn Authorizer> = Box::new(Rbac::fixed(policy));
        Filters { authorizers: vec![rbac], ..Filters::default() }
    }

    /// `who` creating `object`.
    fn create(filters: &Filters, who: &UserInfo, object: &dyn Admitted) -> Result<(), ApiError> {
        let mut info = RequestInfo::new::<Role>("create", "", "", "");
        info.user = who.clone();
        confirm(filters, &info, object, None)
    }

    fn refused(result: Result<(), ApiError>) -> String {
        match result {
            Err(ApiError::Forbidden(message)) => message,
            other => panic!("not Forbidden: {other:?}"),
        }
    }

    #[test]
    fn an_admin_of_a_namespace_grants_only_what_it_holds_there() {
        let filters = rbac(Vec::new(), vec![grant("x", "alice", "ClusterRole", "admin")]);
        let alice = user("alice");
        create(&filters, &alice, &grant("x", "bob", "ClusterRole", "edit")).unwrap();
        create(&filters, &alice, &grant("x", "bob", "ClusterRole", "admin")).unwrap();
        let message =
            refused(create(&filters, &alice, &grant("x", "bob", "ClusterRole", "cluster-admin")));
        assert_eq!(
            message,
            "user \"alice\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC \
             permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], Verbs:[\"*\"]}\n\
             {NonResourceURLs:[\"*\"], Verbs:[\"*\"]}"
        );
        // Not in another namespace, and not cluster-wide.
        refused(create(&filters, &alice, &grant("y", "bob", "ClusterRole", "edit")));
        let cluster_wide = ClusterRoleBinding {
            metadata: meta("", "bob-view"),
            subjects: grant("", "bob", "", "").subjects,
            role_ref: role_ref("ClusterRole", "view"),
            ..Default::default()
        };
        refused(create(&filters, &alice, &cluster_wide));

        let readers = role("x", "readers", vec![rule(&["get", "list"], &[""], &["pods"])]);
        create(&filters, &alice, &readers).unwrap();
        let nodes = role(
            "x",
            "nodes",
            vec![rule(&["get"], &[""], &["pods"]), rule(&["get", "list"], &[""], &["nodes"])],
        );
        let message = refused(create(&filters, &alice, &nodes));
        assert!(
            message.ends_with(
                "not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\" \"list\"]}"
            ),
            "{message}"
        );
        refused(create(&filters, &alice, &role("y", "readers", readers.rules.clone())));
        let cluster_readers = ClusterRole {
            metadata: meta("", "readers"),
            rules: readers.rules.clone(),
            ..Default::default()
        };
        refused(create(&filters, &alice, &cluster_readers));
    }

    #[test]
    fn a_wildcard_is_held_only_through_a_wildcard() {
        let pods = role("x", "pods", vec![rule(&["*"], &[""], &["pods"])]);
        let filters = rbac(vec![pods.clone()], vec![grant("x", "alice", "Role", "pods")]);
        let alice = user("alice");
        create(&filters, &alice, &role("x", "a", vec![rule(&["get", "delete"], &[""], &["pods"])]))
            .unwrap();
        create(&filters, &alice, &pods).unwrap();
        // Every pod subresource is not "pods".
        refused(create(
            &filters,
            &alice,
            &role("x", "b", vec![rule(&["get"], &[""], &["pods/*"])]),
        ));
        refused(create(&filters, &alice, &role("x", "c", vec![rule(&["get"], &["*"], &["pods"])])));

        let readers = role("x", "readers", vec![rule(&["get", "list"], &[""], &["pods"])]);
        let filters = rbac(vec![readers.clone()], vec![grant("x", "bob", "Role", "readers")]);
        let bob = user("bob");
        let message =
            refused(create(&filters, &bob, &role("x", "d", vec![rule(&["*"], &[""], &["pods"])])));
        assert!(message.ends_with("Resources:[\"pods\"], Verbs:[\"*\"]}"), "{message}");
        // A resource berth does not serve is held only through "*".
        let secrets = role("x", "e", vec![rule(&["get"], &[""], &["secrets"])]);
        let message = refused(create(&filters, &bob, &secrets));
        assert!(message.ends_with("Resources:[\"secrets\"], Verbs:[\"get\"]}"), "{message}");
    }

    #[test]
    fn resource_names_limit_what_a_rule_grants() {
        let one =
            PolicyRule { resource_names: strings(&["web"]), ..rule(&["get"], &[""], &["pods"]) };
        let filters = rbac(
            vec![role("x", "one", vec![one.clone()])],
            vec![grant("x", "alice", "Role", "one")],
        );
        let alice = user("alice");
        create(&filters, &alice, &role("x", "a", vec![one.clone()])).unwrap();
        let two = PolicyRule { resource_names: strings(&["web", "db"]), ..one };
        let message = refused(create(&filters, &alice, &role("x", "b", vec![two])));
        assert!(
            message.ends_with(
                "{APIGroups:[\"\"], Resources:[\"pods\"], ResourceNames:[\"db\"], Verbs:[\"get\"]}"
            ),
            "{message}"
        );
        refused(create(&filters, &alice, &role("x", "c", vec![rule(&["get"], &[""], &["pods"])])));
    }

    #[test]
    fn bind_and_escalate_allow_what_is_not_held() {
        let binder = role(
            "x",
            "binder",
            vec![PolicyRule {
                resource_names: strings(&["cluster-admin"]),
                ..rule(&["bind"], &[Role::GROUP], &["clusterroles"])
            }],
        );
        let escalator =
            role("x", "escalator", vec![rule(&["escalate"], &[Role::GROUP], &["roles"])]);
        let filters = rbac(
            vec![binder, escalator],
            vec![grant("x", "carol", "Role", "binder"), grant("x", "dave", "Role", "escalator")],
        );
        let (carol, dave) = (user("carol"), user("dave"));
        create(&filters, &carol, &grant("x", "bob", "ClusterRole", "cluster-admin")).unwrap();
        refused(create(&filters, &carol, &grant("x", "bob", "ClusterRole", "admin")));
        refused(create(&filters, &carol, &grant("y", "bob", "ClusterRole", "cluster-admin")));
        let anything = role("x", "anything", vec![rule(&["*"], &["*"], &["*"])]);
        create(&filters, &dave, &anything).unwrap();
        refused(create(&filters, &dave, &role("y", "anything", anything.rules.clone())));
        refused(create(&filters, &dave, &grant("x", "bob", "ClusterRole", "view")));
    }

    #[test]
    fn an_aggregation_rule_takes_full_authority_or_escalate() {
        use berth_proto::meta_v1::LabelSelector;
        use berth_proto::rbac_v1::AggregationRule;
        let cluster_role = |name: &str, rules: Vec<PolicyRule>| ClusterRole {
            metadata: meta("", name),
            rules,
            ..Default::default()
        };
        let mut cluster_roles = policy::cluster_roles();
        cluster_roles.push(cluster_role(
            "role-writer",
            vec![
                rule(&["create", "update"], &[Role::GROUP], &["clusterroles"]),
                rule(&["get", "list"], &[""], &["pods"]),
            ],
        ));
        cluster_roles.push(cluster_role(
            "escalator",
            vec![rule(&["escalate"], &[Role::GROUP], &["clusterroles"])],
        ));
        let mut bindings = policy::cluster_role_bindings();
        for (user, role) in [("alice", "role-writer"), ("carol", "escalator")] {
            let binding = grant("", user, "ClusterRole", role);
            bindings.push(ClusterRoleBinding {
                metadata: binding.metadata,
                subjects: binding.subjects,
                role_ref: binding.role_ref,
                ..Default::default()
            });
        }
        let policy = Policy::of(policy::roles(), cluster_roles, policy::role_bindings(), bindings);
        let rbac: Box<dyn Authorizer> = Box::new(Rbac::fixed(policy));
        let filters = Filters { authorizers: vec![rbac], ..Filters::default() };

        let readers = cluster_role("readers", vec![rule(&["get"], &[""], &["pods"])]);
        let alice = user("alice");
        create(&filters, &alice, &readers).unwrap();
        let selector = LabelSelector {
            match_labels: [("aggregate-to-readers".to_string(), "true".to_string())].into(),
            ..Default::default()
        };
        let aggregated = ClusterRole {
            aggregation_rule: Some(AggregationRule { cluster_role_selectors: vec![selector] }),
            ..readers.clone()
        };
        let message = refused(create(&filters, &alice, &aggregated));
        assert_eq!(
            message,
            "clusterroles.rbac.authorization.k8s.io \"readers\" is forbidden: must have \
             cluster-admin privileges to use the aggregationRule"
        );
        let mut info = RequestInfo::new::<Role>("update", "", "", "readers");
        info.user = alice.clone();
        refused(confirm(&filters, &info, &aggregated, Some(&readers)));
        // Leaving an existing rule as it is takes nothing.
        let mut relabelled = aggregated.clone();
        relabelled.metadata.as_mut().unwrap().labels.insert("team".into(), "a".into());
        confirm(&filters, &info, &relabelled, Some(&aggregated)).unwrap();
        create(&filters, &user("carol"), &aggregated).unwrap();
        let root = UserInfo { name: "root".into(), groups: vec![MASTERS.into()] };
        create(&filters, &root, &aggregated).unwrap();
    }

    #[test]
    fn a_role_too_large_to_check_is_refused_but_for_the_privileged() {
        let filters = rbac(Vec::new(), vec![grant("x", "alice", "ClusterRole", "admin")]);
        let names: Vec<String> = (0..2000).map(|i| format!("r{i}")).collect();
        let huge = PolicyRule {
            resource_names: names,
            ..rule(&["get", "list"], &["", "apps"], &["pods", "deployments", "replicasets"])
        };
        let message =
            refused(create(&filters, &user("alice"), &role("x", "huge", vec![huge.clone()])));
        assert!(message.contains("24000 RBAC permissions"), "{message}");
        let root = UserInfo { name: "root".into(), groups: vec![MASTERS.into()] };
        create(&filters, &root, &role("x", "huge", vec![huge])).unwrap();
    }

    #[test]
    fn system_masters_grant_anything_even_with_no_authorizer() {
        let filters = Filters { authorizers: Vec::new(), ..Filters::default() };
        let root = UserInfo { name: "root".into(), groups: vec![MASTERS.into()] };
        create(&filters, &root, &grant("x", "bob", "ClusterRole", "no-such-role")).unwrap();
        create(&filters, &root, &role("x", "all", vec![rule(&["*"], &["*"], &["*"])])).unwrap();
        // Anyone else may bind nothing that cannot be looked up.
        let message =
            refused(create(&filters, &user("alice"), &grant("x", "bob", "ClusterRole", "gone")));
        assert_eq!(message, "clusterroles.rbac.authorization.k8s.io \"gone\" not found");
    }

    #[test]
    fn an_update_is_checked_only_when_it_grants_something_new() {
        let big = role("x", "big", vec![rule(&["get"], &[""], &["nodes"])]);
        let filters = rbac(Vec::new(), vec![grant("x", "alice", "ClusterRole", "admin")]);
        let mut info = RequestInfo::new::<Role>("update", "", "x", "big");
        info.user = user("alice");
        let mut relabelled = big.clone();
        relabelled.metadata.as_mut().unwrap().labels.insert("team".into(), "a".into());
        confirm(&filters, &info, &relabelled, Some(&big)).unwrap();
        let mut more = big.clone();
        more.rules.push(rule(&["list"], &[""], &["nodes"]));
        refused(confirm(&filters, &info, &more, Some(&big)));

        let binding = grant("x", "bob", "ClusterRole", "cluster-admin");
        confirm(&filters, &info, &binding, Some(&binding)).unwrap();
        let mut another = binding.clone();
        another.subjects[0].name = "eve".into();
        refused(confirm(&filters, &info, &another, Some(&binding)));
    }

    #[test]
    fn admission_runs_the_check_and_other_kinds_pass() {
        let filters = rbac(Vec::new(), vec![grant("x", "alice", "ClusterRole", "edit")]);
        let mut info = RequestInfo::new::<Role>("create", "", "x", "nodes");
        info.user = user("alice");
        let mut nodes = role("x", "nodes", vec![rule(&["get"], &[""], &["nodes"])]);
        refused(filters.admit(&info, &mut nodes, None));
        let mut pod = berth_proto::core_v1::Pod {
            metadata: meta("x", "web"),
            spec: Some(berth_proto::core_v1::PodSpec {
                containers: vec![berth_proto::core_v1::Container {
                    name: "c".into(),
                    image: "busybox".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        filters.admit(&crate::filters::request_info("create", "web"), &mut pod, None).unwrap();
    }
}
