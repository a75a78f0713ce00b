//! The roles and bindings every cluster starts with (Kubernetes' bootstrap
//! policy, for the resources berth serves): cluster-admin, admin, edit and
//! view for people, and one role per control-plane component with exactly
//! what it calls. Created at start like the bootstrap namespaces, and
//! reconciled as Kubernetes reconciles them: an existing one that keeps the
//! `rbac.authorization.kubernetes.io/autoupdate` annotation other than
//! "false" gets the rules (or subjects) it lacks, so a newer berth's
//! defaults reach an older cluster; rules a person added stay.

use super::kinds::Kind;
use super::rbac::GROUP;
use super::verbs::{self, Write};
use super::Api;
use crate::error::ApiError;
use crate::filters::{RequestInfo, UserInfo, AUTHENTICATED, UNAUTHENTICATED};
use berth_proto::meta_v1::{LabelSelector, ObjectMeta};
use berth_proto::rbac_v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use std::collections::BTreeMap;

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const READ_WRITE: &[&str] =
    &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/// The group whose members may do anything.
pub(crate) const MASTERS: &str = "system:masters";
/// The role, and the group bound to it, that reads the health URLs and
/// `/metrics` (what a Prometheus scraper's credential carries).
const MONITORING: &str = "system:monitoring";
pub(crate) const SCHEDULER: &str = "system:kube-scheduler";
pub(crate) const CONTROLLER_MANAGER: &str = "system:kube-controller-manager";
/// Where the components' leader-election Leases live.
const LEADER_LOCKS: &str = "kube-system";

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    PolicyRule {
        verbs: owned(verbs),
        api_groups: owned(groups),
        resources: owned(resources),
        ..Default::default()
    }
}

fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    let owned = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    PolicyRule { verbs: owned(verbs), non_resource_ur_ls: owned(urls), ..Default::default() }
}

fn meta(namespace: &str, name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        namespace: namespace.into(),
        labels: BTreeMap::from([("kubernetes.io/bootstrapping".into(), "rbac-defaults".into())]),
        annotations: BTreeMap::from([(AUTOUPDATE.into(), "true".into())]),
        ..Default::default()
    })
}

fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole { metadata: meta("", name), rules, ..Default::default() }
}

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        kind: kind.into(),
        api_group: GROUP.into(),
        name: name.into(),
        namespace: String::new(),
    }
}

fn role_ref(kind: &str, name: &str) -> Option<RoleRef> {
    Some(RoleRef { api_group: GROUP.into(), kind: kind.into(), name: name.into() })
}

fn view() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            &[""],
            &["pods", "pods/log", "pods/status", "events", "namespaces", "namespaces/status"],
        ),
        rule(
            READ,
            &["apps"],
            &[
                "deployments",
                "deployments/scale",
                "deployments/status",
                "replicasets",
                "replicasets/scale",
                "replicasets/status",
            ],
        ),
    ]
}

/// What edit adds to view.
fn edit_only() -> Vec<PolicyRule> {
    vec![
        rule(WRITE, &[""], &["pods"]),
        rule(&["create"], &[""], &["pods/exec", "pods/attach", "pods/eviction"]),
        rule(
            WRITE,
            &["apps"],
            &["deployments", "deployments/scale", "replicasets", "replicasets/scale"],
        ),
    ]
}

/// What admin adds to edit.
fn admin_only() -> Vec<PolicyRule> {
    vec![rule(READ_WRITE, &[GROUP], &["roles", "rolebindings"])]
}

/// The label that puts a ClusterRole's rules into the aggregated role
/// `into` (admin, edit or view).
fn aggregate_to(into: &str) -> String {
    format!("rbac.authorization.k8s.io/aggregate-to-{into}")
}

/// admin, edit and view are aggregated as in Kubernetes: each is the union
/// of the roles labelled `aggregate-to-<name>` (view's rules go into edit,
/// edit's into admin, and anyone's role can add to them). They are written
/// with the rules aggregation gives them, so they hold before the
/// controller-manager first runs (in the order it gives them, the rules
/// of the selected roles by their names, so it has nothing to rewrite).
fn aggregated_roles() -> Vec<ClusterRole> {
    let edit = [edit_only(), view()].concat();
    let admin = [edit.clone(), admin_only()].concat();
    let mut roles = Vec::new();
    for (name, rules, into, only) in [
        ("admin", admin, None, admin_only()),
        ("edit", edit, Some("admin"), edit_only()),
        ("view", view(), Some("edit"), view()),
    ] {
        let mut role = cluster_role(name, rules);
        let selector = LabelSelector {
            match_labels: BTreeMap::from([(aggregate_to(name), "true".into())]),
            ..Default::default()
        };
        role.aggregation_rule = Some(AggregationRule { cluster_role_selectors: vec![selector] });
        if let (Some(into), Some(meta)) = (into, role.metadata.as_mut()) {
            meta.labels.insert(aggregate_to(into), "true".into());
        }
        roles.push(role);
        let mut part = cluster_role(&format!("system:aggregate-to-{name}"), only);
        if let Some(meta) = part.metadata.as_mut() {
            meta.labels.insert(aggregate_to(name), "true".into());
        }
        roles.push(part);
    }
    roles
}

/// Every bootstrap ClusterRole.
pub(crate) fn cluster_roles() -> Vec<ClusterRole> {
    let mut roles = vec![
        cluster_role("cluster-admin", vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])]),
        cluster_role(
            "system:basic-user",
            vec![rule(
                &["create"],
                &["authorization.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(&["get"], &["/healthz", "/livez", "/readyz", "/version", "/version/"])],
        ),
        cluster_role(
            MONITORING,
            vec![urls(
                &["get"],
                &[
                    "/healthz",
                    "/healthz/*",
                    "/livez",
                    "/livez/*",
                    "/metrics",
                    "/readyz",
                    "/readyz/*",
                ],
            )],
        ),
        cluster_role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            SCHEDULER,
            vec![
                rule(READ, &[""], &["pods", "nodes"]),
                rule(&["create"], &[""], &["pods/binding"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["create", "patch", "update"], &["", "events.k8s.io"], &["events"]),
            ],
        ),
        cluster_role(
            CONTROLLER_MANAGER,
            vec![
                // ReplicaSets make and remove pods; node lifecycle evicts
                // them and marks them not ready; the garbage collector edits
                // owner references and finalizers.
                rule(
                    &["create", "delete", "get", "list", "patch", "update", "watch"],
                    &[""],
                    &["pods"],
                ),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(&["get", "list", "patch", "update", "watch"], &[""], &["nodes"]),
                rule(&["patch", "update"], &[""], &["nodes/status"]),
                rule(
                    &["delete", "get", "list", "patch", "update", "watch"],
                    &[""],
                    &["namespaces"],
                ),
                rule(&["update"], &[""], &["namespaces/status", "namespaces/finalize"]),
                rule(
                    &["create", "delete", "get", "list", "patch", "update", "watch"],
                    &["apps"],
                    &["deployments", "replicasets"],
                ),
                rule(
                    &["patch", "update"],
                    &["apps"],
                    &["deployments/status", "replicasets/status"],
                ),
                // Node heartbeats are read; a namespace's leases and events
                // are removed with it.
                rule(&["delete", "get", "list", "watch"], &["coordination.k8s.io"], &["leases"]),
                rule(
                    &["create", "delete", "list", "patch", "update", "watch"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                // ClusterRole aggregation writes the rules of aggregated
                // roles, which may be anyone's.
                rule(&["escalate", "get", "list", "update", "watch"], &[GROUP], &["clusterroles"]),
            ],
        ),
    ];
    roles.extend(aggregated_roles());
    roles
}

/// Every bootstrap ClusterRoleBinding (each named after its role).
pub(crate) fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    let bind = |role: &str, subject: Subject| ClusterRoleBinding {
        metadata: meta("", role),
        subjects: vec![subject],
        role_ref: role_ref("ClusterRole", role),
        ..Default::default()
    };
    vec![
        bind("cluster-admin", subject("Group", MASTERS)),
        bind("system:basic-user", subject("Group", AUTHENTICATED)),
        bind("system:discovery", subject("Group", AUTHENTICATED)),
        bind(MONITORING, subject("Group", MONITORING)),
        ClusterRoleBinding {
            subjects: vec![subject("Group", AUTHENTICATED), subject("Group", UNAUTHENTICATED)],
            ..bind("system:public-info-viewer", subject("Group", AUTHENTICATED))
        },
        bind(SCHEDULER, subject("User", SCHEDULER)),
        bind(CONTROLLER_MANAGER, subject("User", CONTROLLER_MANAGER)),
    ]
}

/// The leader-election Roles in kube-system, one per component.
pub(crate) fn roles() -> Vec<Role> {
    [SCHEDULER, CONTROLLER_MANAGER]
        .into_iter()
        .map(|component| Role {
            metadata: meta(LEADER_LOCKS, &leader_locking(component)),
            rules: vec![rule(&["create", "get", "update"], &["coordination.k8s.io"], &["leases"])],
            ..Default::default()
        })
        .collect()
}

/// `system::leader-locking-kube-scheduler`, as Kubernetes names it.
fn leader_locking(component: &str) -> String {
    format!("system::leader-locking-{}", component.trim_start_matches("system:"))
}

pub(crate) fn role_bindings() -> Vec<RoleBinding> {
    [SCHEDULER, CONTROLLER_MANAGER]
        .into_iter()
        .map(|component| RoleBinding {
            metadata: meta(LEADER_LOCKS, &leader_locking(component)),
            subjects: vec![subject("User", component)],
            role_ref: role_ref("Role", &leader_locking(component)),
            ..Default::default()
        })
        .collect()
}

impl Api {
    /// Creates the bootstrap roles and bindings that are missing.
    pub(super) async fn bootstrap_policy(&self) -> Result<(), ApiError> {
        for role in cluster_roles() {
            self.reconcile(role, |want, have: &mut ClusterRole| {
                let labels = add_labels(want, have);
                let selectors = add_selectors(want, have);
                add_rules(&want.rules, &mut have.rules) | labels | selectors
            })
            .await?;
        }
        for binding in cluster_role_bindings() {
            self.reconcile(binding, |want, have: &mut ClusterRoleBinding| {
                add_subjects(&want.subjects, &mut have.subjects)
            })
            .await?;
        }
        for role in roles() {
            self.reconcile(role, |want, have: &mut Role| add_rules(&want.rules, &mut have.rules))
                .await?;
        }
        for binding in role_bindings() {
            self.reconcile(binding, |want, have: &mut RoleBinding| {
                add_subjects(&want.subjects, &mut have.subjects)
            })
            .await?;
        }
        Ok(())
    }

    /// Creates `object`, or brings the existing one up to it with `fill`
    /// (which says whether it changed anything) unless its autoupdate
    /// annotation is "false". The server's own writes: admitted, not
    /// authenticated. Another peer reconciling at the same time wins a
    /// conflict; the next start looks again.
    async fn reconcile<T: Kind>(
        &self,
        object: T,
        fill: impl Fn(&T, &mut T) -> bool,
    ) -> Result<(), ApiError> {
        let meta = object.metadata().clone();
        let write = |verb: &'static str| {
            let mut info = RequestInfo::new::<T>(verb, "", &meta.namespace, &meta.name);
            info.user = UserInfo { name: "system:apiserver".into(), groups: vec![MASTERS.into()] };
            Write {
                registry: self.registry.clone(),
                filters: &self.filters,
                info,
                manager: "berth-apiserver".into(),
            }
        };
        match verbs::create(&write("create"), object.clone(), 0).await {
            Ok(_) => return Ok(()),
            Err(ApiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        let mut existing: T = verbs::get(&self.registry, &meta.namespace, &meta.name, "").await?;
        let opted_out =
            existing.metadata().annotations.get(AUTOUPDATE).is_some_and(|v| v == "false");
        if opted_out || !fill(&object, &mut existing) {
            return Ok(());
        }
        tracing::info!(kind = T::KIND, name = %meta.name, "bootstrap policy object brought up to date");
        match verbs::update(&write("update"), existing).await {
            Ok(_) | Err(ApiError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The annotation by which a bootstrap object opts out of reconciliation.
const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// Appends the rules of `want` that `have` lacks; whether it did.
fn add_rules(want: &[PolicyRule], have: &mut Vec<PolicyRule>) -> bool {
    let missing: Vec<PolicyRule> = want.iter().filter(|r| !have.contains(r)).cloned().collect();
    have.extend(missing.iter().cloned());
    !missing.is_empty()
}

/// Adds the labels of `want` that `have` lacks (those that aggregate a
/// role into another); whether it did.
fn add_labels(want: &ClusterRole, have: &mut ClusterRole) -> bool {
    let (Some(want), Some(have)) = (want.metadata.as_ref(), have.metadata.as_mut()) else {
        return false;
    };
    let mut added = false;
    for (key, value) in &want.labels {
        if !have.labels.contains_key(key) {
            have.labels.insert(key.clone(), value.clone());
            added = true;
        }
    }
    added
}

/// Adds the aggregation selectors of `want` that `have` lacks; whether it
/// did.
fn add_selectors(want: &ClusterRole, have: &mut ClusterRole) -> bool {
    let Some(want) = &want.aggregation_rule else { return false };
    let have = have.aggregation_rule.get_or_insert_with(Default::default);
    let missing: Vec<LabelSelector> = want
        .cluster_role_selectors
        .iter()
        .filter(|s| !have.cluster_role_selectors.contains(s))
        .cloned()
        .collect();
    have.cluster_role_selectors.extend(missing.iter().cloned());
    !missing.is_empty()
}

/// Appends the subjects of `want` that `have` lacks; whether it did.
fn add_subjects(want: &[Subject], have: &mut Vec<Subject>) -> bool {
    let missing: Vec<Subject> = want.iter().filter(|s| !have.contains(s)).cloned().collect();
    have.extend(missing.iter().cloned());
    !missing.is_empty()
}
