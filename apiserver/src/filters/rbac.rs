//! Role-based access control: a request is allowed when a rule of a role
//! bound to the caller (by name, or one of its groups, or as a service
//! account) matches its verb, API group, resource (with subresource, as
//! "pods/status"), object name and namespace, "*" matching anything.
//! ClusterRoleBindings grant their ClusterRole everywhere; a RoleBinding
//! grants its Role, or a ClusterRole's rules, in its own namespace.
//!
//! RBAC only adds permissions: it allows or has no opinion, never denies.
//! Requests must not wait on the store, so the four kinds are kept in a
//! cache that a task of this authorizer fills by listing them and keeps
//! current by watching, relisting when the watch ends or its window is
//! compacted away.

use super::{Authorizer, Decision, RequestInfo, UserInfo};
use crate::registry::{ListOptions, Registry, WatchEvent};
use berth_proto::rbac_v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use berth_proto::Resource;
use berth_raft_store::Store;
use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;
use tokio_util::sync::{CancellationToken, DropGuard};

/// How long the cache waits before listing again after the store failed.
const RETRY: Duration = Duration::from_millis(500);

/// Objects of one kind by (namespace, name).
type Objects<T> = BTreeMap<(String, String), T>;

/// What the rules are made of: the four kinds as last seen.
#[derive(Default)]
pub(crate) struct Policy {
    roles: Objects<Role>,
    cluster_roles: Objects<ClusterRole>,
    role_bindings: Objects<RoleBinding>,
    cluster_role_bindings: Objects<ClusterRoleBinding>,
}

/// A kind the cache holds.
trait Cached: Resource + Send + Sync + 'static {
    fn objects(policy: &mut Policy) -> &mut Objects<Self>;
}

macro_rules! cached {
    ($($ty:ty => $field:ident),*) => {$(
        impl Cached for $ty {
            fn objects(policy: &mut Policy) -> &mut Objects<Self> {
                &mut policy.$field
            }
        }
    )*};
}

cached!(Role => roles, ClusterRole => cluster_roles, RoleBinding => role_bindings,
    ClusterRoleBinding => cluster_role_bindings);

fn key<T: Resource>(object: &T) -> (String, String) {
    let meta = object.metadata();
    (meta.namespace.clone(), meta.name.clone())
}

impl Policy {
    /// A policy of these objects, as the cache would hold them.
    #[cfg(test)]
    pub(crate) fn of(
        roles: Vec<Role>,
        cluster_roles: Vec<ClusterRole>,
        role_bindings: Vec<RoleBinding>,
        cluster_role_bindings: Vec<ClusterRoleBinding>,
    ) -> Policy {
        fn map<T: Resource>(objects: Vec<T>) -> Objects<T> {
            objects.into_iter().map(|o| (key(&o), o)).collect()
        }
        Policy {
            roles: map(roles),
            cluster_roles: map(cluster_roles),
            role_bindings: map(role_bindings),
            cluster_role_bindings: map(cluster_role_bindings),
        }
    }

    fn cluster_role_rules(&self, name: &str) -> &[PolicyRule] {
        self.cluster_roles
            .get(&(String::new(), name.to_string()))
            .map_or(&[], |r| r.rules.as_slice())
    }

    /// Calls `visit` with every rule that applies to `user` in `namespace`
    /// ("" for cluster-wide rules only) until it answers true.
    fn any_rule(
        &self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&PolicyRule) -> bool,
    ) -> bool {
        for binding in self.cluster_role_bindings.values() {
            let Some(role) = binding.role_ref.as_ref().filter(|r| r.kind == "ClusterRole") else {
                continue;
            };
            if binding.subjects.iter().any(|s| applies(s, user, ""))
                && self.cluster_role_rules(&role.name).iter().any(&mut visit)
            {
                return true;
            }
        }
        if namespace.is_empty() {
            return false;
        }
        let start = (namespace.to_string(), String::new());
        for ((ns, _), binding) in self.role_bindings.range(start..) {
            if ns != namespace {
                break;
            }
            let Some(role) = binding.role_ref.as_ref() else { continue };
            if !binding.subjects.iter().any(|s| applies(s, user, namespace)) {
                continue;
            }
            let rules = self.referenced(role, namespace).unwrap_or_default();
            if rules.iter().any(&mut visit) {
                return true;
            }
        }
        false
    }

    /// The rules of the role a binding in `namespace` refers to; None when
    /// there is no such role.
    fn referenced(&self, role: &RoleRef, namespace: &str) -> Option<&[PolicyRule]> {
        match role.kind.as_str() {
            "Role" => self
                .roles
                .get(&(namespace.to_string(), role.name.clone()))
                .map(|r| r.rules.as_slice()),
            "ClusterRole" => self
                .cluster_roles
                .get(&(String::new(), role.name.clone()))
                .map(|r| r.rules.as_slice()),
            _ => None,
        }
    }

    pub(crate) fn allows(&self, info: &RequestInfo) -> bool {
        self.any_rule(&info.user, &info.namespace, |rule| allows(rule, info))
    }

    /// Every rule that applies to `user` in `namespace`.
    pub(crate) fn rules_for(&self, user: &UserInfo, namespace: &str) -> Vec<PolicyRule> {
        let mut rules = Vec::new();
        self.any_rule(user, namespace, |rule| {
            rules.push(rule.clone());
            false
        });
        rules
    }
}

/// Whether a binding's subject is `user`; `namespace` is the binding's
/// (a service account named without one is in it).
fn applies(subject: &Subject, user: &UserInfo, namespace: &str) -> bool {
    match subject.kind.as_str() {
        "User" => user.name == subject.name,
        "Group" => user.groups.contains(&subject.name),
        "ServiceAccount" => {
            let ns = if subject.namespace.is_empty() { namespace } else { &subject.namespace };
            !ns.is_empty()
                && user.name.strip_prefix("system:serviceaccount:").and_then(|r| r.split_once(':'))
                    == Some((ns, subject.name.as_str()))
        }
        _ => false,
    }
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|v| v == "*" || v == value)
}

/// Whether one rule allows the request.
pub(crate) fn allows(rule: &PolicyRule, info: &RequestInfo) -> bool {
    if !has(&rule.verbs, info.verb) {
        return false;
    }
    if info.resource.is_empty() {
        return !info.path.is_empty()
            && rule.non_resource_ur_ls.iter().any(|url| match url.strip_suffix('*') {
                Some(prefix) => info.path.starts_with(prefix),
                None => *url == info.path,
            });
    }
    if !has(&rule.api_groups, info.api_group) {
        return false;
    }
    let resource_matches = rule.resources.iter().any(|r| {
        if r == "*" {
            return true;
        }
        match info.subresource {
            "" => r == info.resource,
            sub => {
                r.strip_prefix(info.resource).and_then(|r| r.strip_prefix('/')) == Some(sub)
                    || r.strip_prefix("*/") == Some(sub)
            }
        }
    });
    resource_matches
        && (rule.resource_names.is_empty()
            || (!info.name.is_empty() && rule.resource_names.contains(&info.name)))
}

/// The RBAC authorizer over a cache of the roles and bindings.
pub struct Rbac {
    policy: Arc<RwLock<Policy>>,
    /// Stops the cache's task when the authorizer goes.
    _task: Option<DropGuard>,
}

impl Rbac {
    /// Starts the task that keeps the cache current; it ends when `stop`
    /// is cancelled or this authorizer is dropped. Until its first lists
    /// arrive the cache is empty, so only other authorizers allow.
    pub fn start(registry: Registry<Store>, stop: &CancellationToken) -> Rbac {
        let policy = Arc::new(RwLock::new(Policy::default()));
        let token = stop.child_token();
        tokio::spawn(keep_all(registry, policy.clone(), token.clone()));
        Rbac { policy, _task: Some(token.drop_guard()) }
    }

    /// An authorizer over fixed objects.
    #[cfg(test)]
    pub(crate) fn fixed(policy: Policy) -> Rbac {
        Rbac { policy: Arc::new(RwLock::new(policy)), _task: None }
    }
}

impl Authorizer for Rbac {
    fn authorize(&self, info: &RequestInfo) -> Decision {
        let policy = self.policy.read().unwrap_or_else(PoisonError::into_inner);
        if policy.allows(info) {
            Decision::Allow
        } else {
            Decision::NoOpinion
        }
    }

    fn rules_for(&self, user: &UserInfo, namespace: &str) -> Option<Vec<PolicyRule>> {
        let policy = self.policy.read().unwrap_or_else(PoisonError::into_inner);
        Some(policy.rules_for(user, namespace))
    }

    fn role_rules(&self, role: &RoleRef, namespace: &str) -> Option<Vec<PolicyRule>> {
        let policy = self.policy.read().unwrap_or_else(PoisonError::into_inner);
        policy.referenced(role, namespace).map(<[PolicyRule]>::to_vec)
    }
}

async fn keep_all(registry: Registry<Store>, policy: Arc<RwLock<Policy>>, stop: CancellationToken) {
    tokio::join!(
        keep::<Role>(&registry, &policy, &stop),
        keep::<ClusterRole>(&registry, &policy, &stop),
        keep::<RoleBinding>(&registry, &policy, &stop),
        keep::<ClusterRoleBinding>(&registry, &policy, &stop),
    );
}

/// Lists `T` into the cache, then applies its changes, relisting whenever
/// the watch ends, until `stop`.
async fn keep<T: Cached>(
    registry: &Registry<Store>,
    policy: &RwLock<Policy>,
    stop: &CancellationToken,
) {
    let everything = ListOptions::default();
    loop {
        let listed = tokio::select! {
            _ = stop.cancelled() => return,
            listed = registry.list::<T>(None, &everything) => listed,
        };
        let watch = listed.and_then(|listed| {
            let watch = registry.watch::<T>(None, &listed.resource_version, "", "", None)?;
            let objects = listed.items.into_iter().map(|o| (key(&o), o)).collect();
            *T::objects(&mut policy.write().unwrap_or_else(PoisonError::into_inner)) = objects;
            Ok(watch)
        });
        let mut watch = match watch {
            Ok(watch) => watch,
            Err(e) => {
                tracing::debug!(kind = T::KIND, error = %e, "rbac cache cannot list yet");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        loop {
            let event = tokio::select! {
                _ = stop.cancelled() => return,
                event = watch.next() => event,
            };
            let mut policy = policy.write().unwrap_or_else(PoisonError::into_inner);
            match event {
                Some(Ok(WatchEvent::Added(o) | WatchEvent::Modified(o))) => {
                    T::objects(&mut policy).insert(key(&o), o);
                }
                Some(Ok(WatchEvent::Deleted(o))) => {
                    T::objects(&mut policy).remove(&key(&o));
                }
                Some(Ok(WatchEvent::Bookmark(_))) => {}
                Some(Err(e)) => {
                    tracing::debug!(kind = T::KIND, error = %e, "rbac cache relists");
                    break;
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy;
    use berth_proto::meta_v1::ObjectMeta;
    use berth_proto::rbac_v1::RoleRef;

    const VERBS: &[&str] =
        &["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"];

    /// Every resource (and subresource) the matrix asks about, with its group.
    const RESOURCES: &[(&str, &str)] = &[
        ("", "pods"),
        ("", "pods/status"),
        ("", "pods/binding"),
        ("", "pods/log"),
        ("", "pods/exec"),
        ("", "pods/attach"),
        ("", "pods/eviction"),
        ("", "nodes"),
        ("", "nodes/status"),
        ("", "namespaces"),
        ("", "namespaces/status"),
        ("", "namespaces/finalize"),
        ("", "events"),
        ("apps", "deployments"),
        ("apps", "deployments/status"),
        ("apps", "deployments/scale"),
        ("apps", "replicasets"),
        ("apps", "replicasets/status"),
        ("apps", "replicasets/scale"),
        ("coordination.k8s.io", "leases"),
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("rbac.authorization.k8s.io", "clusterrolebindings"),
        ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ];

    const CLUSTER_SCOPED: &[&str] =
        &["nodes", "namespaces", "clusterroles", "clusterrolebindings", "selfsubjectaccessreviews"];

    fn request(
        user: &UserInfo,
        verb: &'static str,
        group: &'static str,
        resource: &'static str,
        namespace: &str,
        name: &str,
    ) -> RequestInfo {
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        let namespace = if CLUSTER_SCOPED.contains(&resource) { "" } else { namespace };
        let mut info =
            RequestInfo::new::<berth_proto::core_v1::Pod>(verb, subresource, namespace, name);
        info.api_group = group;
        info.resource = resource;
        info.user = user.clone();
        info
    }

    fn bootstrap() -> Rbac {
        Rbac::fixed(Policy::of(
            policy::roles(),
            policy::cluster_roles(),
            policy::role_bindings(),
            policy::cluster_role_bindings(),
        ))
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo { name: name.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    fn binding(namespace: &str, role_kind: &str, role: &str, subject: Subject) -> RoleBinding {
        RoleBinding {
            metadata: Some(ObjectMeta {
                name: format!("{role}-{}", subject.name),
                namespace: namespace.into(),
                ..Default::default()
            }),
            subjects: vec![subject],
            role_ref: Some(RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: role_kind.into(),
                name: role.into(),
            }),
            ..Default::default()
        }
    }

    fn subject(kind: &str, name: &str, namespace: &str) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: namespace.into(),
            api_group: String::new(),
        }
    }

    /// What each role may do: resource -> verbs, in the matrix's terms;
    /// everything else is refused.
    fn expected(role: &str) -> Vec<(&'static str, &'static str)> {
        const R: &str = "get list watch";
        const ALL: &str = "get list watch create update patch delete deletecollection";
        let view = vec![
            ("pods", R),
            ("pods/status", R),
            ("pods/log", R),
            ("events", R),
            ("namespaces", R),
            ("namespaces/status", R),
            ("deployments", R),
            ("deployments/status", R),
            ("deployments/scale", R),
            ("replicasets", R),
            ("replicasets/status", R),
            ("replicasets/scale", R),
        ];
        let mut edit = view.clone();
        for written in
            ["pods", "deployments", "deployments/scale", "replicasets", "replicasets/scale"]
        {
            edit.retain(|(r, _)| *r != written);
            edit.push((written, ALL));
        }
        edit.extend([
            ("pods/exec", "create"),
            ("pods/attach", "create"),
            ("pods/eviction", "create"),
        ]);
        let mut admin = edit.clone();
        admin.extend([("roles", ALL), ("rolebindings", ALL)]);
        match role {
            "view" => view,
            "edit" => edit,
            "admin" => admin,
            "system:kube-scheduler" => vec![
                ("pods", R),
                ("nodes", R),
                ("pods/binding", "create"),
                ("pods/status", "update patch"),
                ("events", "create update patch"),
            ],
            "system:kube-controller-manager" => vec![
                ("pods", "get list watch create update patch delete"),
                ("pods/status", "update patch"),
                ("nodes", "get list watch update patch"),
                ("nodes/status", "update patch"),
                ("namespaces", "get list watch update patch delete"),
                ("namespaces/status", "update"),
                ("namespaces/finalize", "update"),
                ("deployments", "get list watch create update patch delete"),
                ("replicasets", "get list watch create update patch delete"),
                ("deployments/status", "update patch"),
                ("replicasets/status", "update patch"),
                ("leases", "get list watch delete"),
                ("events", "list watch create update patch delete"),
                ("clusterroles", "get list watch update"),
            ],
            "system:basic-user" => vec![("selfsubjectaccessreviews", "create")],
            other => panic!("no expectations for {other}"),
        }
    }

    /// Each bootstrap role, granted cluster-wide, against each verb on each
    /// resource: allowed exactly where the role says.
    #[test]
    fn bootstrap_roles_allow_exactly_their_rules() {
        let roles = [
            "view",
            "edit",
            "admin",
            "system:kube-scheduler",
            "system:kube-controller-manager",
            "system:basic-user",
        ];
        for role in roles {
            let crb = ClusterRoleBinding {
                metadata: Some(ObjectMeta { name: "grant".into(), ..Default::default() }),
                subjects: vec![subject("User", "carol", "")],
                role_ref: Some(RoleRef {
                    api_group: "rbac.authorization.k8s.io".into(),
                    kind: "ClusterRole".into(),
                    name: role.into(),
                }),
                ..Default::default()
            };
            let rbac =
                Rbac::fixed(Policy::of(Vec::new(), policy::cluster_roles(), Vec::new(), vec![crb]));
            let carol = user("carol", &[]);
            let allowed = expected(role);
            for (group, resource) in RESOURCES {
                for verb in VERBS {
                    let want = allowed
                        .iter()
                        .any(|(r, verbs)| r == resource && verbs.split(' ').any(|v| v == *verb));
                    let info = request(&carol, verb, group, resource, "team", "");
                    let got = rbac.authorize(&info) == Decision::Allow;
                    assert_eq!(got, want, "{role}: {verb} {resource} (group {group:?})");
                }
            }
        }
    }

    #[test]
    fn cluster_admin_is_everything_for_system_masters_only() {
        let rbac = bootstrap();
        let admin = user("root", &["system:masters", "system:authenticated"]);
        let nobody = user("mallory", &["system:authenticated"]);
        for (group, resource) in RESOURCES {
            for verb in VERBS {
                let info = request(&admin, verb, group, resource, "team", "x");
                assert_eq!(rbac.authorize(&info), Decision::Allow, "{verb} {resource}");
            }
        }
        let mut path = request(&admin, "get", "", "pods", "", "");
        (path.resource, path.path) = ("", "/metrics".into());
        assert_eq!(rbac.authorize(&path), Decision::Allow);
        // An authenticated user with no binding of its own: only the
        // reviews of its own permissions and discovery.
        for (group, resource) in RESOURCES {
            for verb in VERBS {
                let info = request(&nobody, verb, group, resource, "team", "");
                let want = *resource == "selfsubjectaccessreviews" && *verb == "create";
                assert_eq!(rbac.authorize(&info) == Decision::Allow, want, "{verb} {resource}");
            }
        }
        path.user = nobody.clone();
        assert_eq!(rbac.authorize(&path), Decision::NoOpinion);
        path.path = "/apis/apps/v1".into();
        assert_eq!(rbac.authorize(&path), Decision::Allow);
        path.verb = "post";
        assert_eq!(rbac.authorize(&path), Decision::NoOpinion);
    }

    #[test]
    fn the_scheduler_binds_but_never_deletes_and_locks_only_in_kube_system() {
        let rbac = bootstrap();
        let scheduler = user("system:kube-scheduler", &["system:authenticated"]);
        let ask = |verb, group, resource, ns: &str| {
            rbac.authorize(&request(&scheduler, verb, group, resource, ns, "p"))
        };
        assert_eq!(ask("create", "", "pods/binding", "team"), Decision::Allow);
        assert_eq!(ask("delete", "", "pods", "team"), Decision::NoOpinion);
        for verb in ["get", "create", "update"] {
            assert_eq!(ask(verb, "coordination.k8s.io", "leases", "kube-system"), Decision::Allow);
            assert_eq!(ask(verb, "coordination.k8s.io", "leases", "team"), Decision::NoOpinion);
        }
        assert_eq!(
            ask("delete", "coordination.k8s.io", "leases", "kube-system"),
            Decision::NoOpinion
        );
        let manager = user("system:kube-controller-manager", &[]);
        let info = request(&manager, "update", "coordination.k8s.io", "leases", "kube-system", "m");
        assert_eq!(rbac.authorize(&info), Decision::Allow);
    }

    #[test]
    fn a_role_binding_grants_a_cluster_role_in_its_namespace_only() {
        let bindings = vec![binding("team", "ClusterRole", "edit", subject("User", "alice", ""))];
        let rbac =
            Rbac::fixed(Policy::of(Vec::new(), policy::cluster_roles(), bindings, Vec::new()));
        let alice = user("alice", &[]);
        let ask = |verb, group, resource, ns: &str| {
            rbac.authorize(&request(&alice, verb, group, resource, ns, ""))
        };
        assert_eq!(ask("create", "", "pods", "team"), Decision::Allow);
        assert_eq!(ask("create", "", "pods", "other"), Decision::NoOpinion);
        // A list across all namespaces is not a list in "team".
        assert_eq!(ask("list", "", "pods", ""), Decision::NoOpinion);
        assert_eq!(ask("get", "", "nodes", "team"), Decision::NoOpinion);
        assert_eq!(ask("update", "apps", "deployments/scale", "team"), Decision::Allow);
        // RBAC never denies: what it does not allow, it leaves to others.
        for (group, resource) in RESOURCES {
            for verb in VERBS {
                let decision = rbac.authorize(&request(&alice, verb, group, resource, "x", ""));
                assert_eq!(decision, Decision::NoOpinion, "{verb} {resource}");
            }
        }
    }

    #[test]
    fn roles_apply_in_their_namespace_to_users_groups_and_service_accounts() {
        let role = Role {
            metadata: Some(ObjectMeta {
                name: "reader".into(),
                namespace: "team".into(),
                ..Default::default()
            }),
            rules: vec![PolicyRule {
                verbs: vec!["get".into()],
                api_groups: vec!["".into(), "apps".into()],
                resources: vec!["pods".into(), "*/scale".into()],
                resource_names: vec!["web".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let bindings = vec![
            binding("team", "Role", "reader", subject("Group", "devs", "")),
            binding("team", "Role", "reader", subject("ServiceAccount", "ci", "")),
            // A Role of another namespace is not this one's.
            binding("other", "Role", "reader", subject("User", "bob", "")),
        ];
        let rbac = Rbac::fixed(Policy::of(vec![role], Vec::new(), bindings, Vec::new()));
        let dev = user("dana", &["devs"]);
        let ci = user("system:serviceaccount:team:ci", &["system:serviceaccounts"]);
        let other_ci = user("system:serviceaccount:other:ci", &[]);
        let bob = user("bob", &[]);
        let get = |who: &UserInfo, resource, name| {
            let group = if resource == "replicasets/scale" { "apps" } else { "" };
            rbac.authorize(&request(who, "get", group, resource, "team", name))
        };
        assert_eq!(get(&dev, "pods", "web"), Decision::Allow);
        assert_eq!(get(&ci, "pods", "web"), Decision::Allow);
        assert_eq!(get(&dev, "replicasets/scale", "web"), Decision::Allow);
        assert_eq!(get(&dev, "pods", "db"), Decision::NoOpinion);
        // resourceNames never match a request without a name (a list).
        assert_eq!(get(&dev, "pods", ""), Decision::NoOpinion);
        assert_eq!(get(&dev, "pods/status", "web"), Decision::NoOpinion);
        assert_eq!(get(&other_ci, "pods", "web"), Decision::NoOpinion);
        assert_eq!(get(&bob, "pods", "web"), Decision::NoOpinion);
        let rules = rbac.rules_for(&dev, "team").unwrap();
        assert_eq!(rules.len(), 1);
        assert!(rbac.rules_for(&dev, "other").unwrap().is_empty());
    }
}
