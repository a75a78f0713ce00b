//! The rbac.authorization.k8s.io/v1 kinds as the registry writes them:
//! roles are all rules and bindings all subjects and a role reference (no
//! spec or status), validated as Kubernetes validates them.

use super::kinds::Kind;
use super::validation::{object_meta, Causes, NameRule};
use berth_proto::labels::Selector;
use berth_proto::meta_v1::StatusCause;
use berth_proto::rbac_v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
use berth_proto::Resource;

/// The API group of roles, and of users and groups as subjects.
pub(crate) const GROUP: &str = "rbac.authorization.k8s.io";

fn cause(causes: &mut Causes, field: String, reason: &str, message: String) {
    causes.0.push(StatusCause { reason: reason.into(), message, field });
}

fn required(causes: &mut Causes, field: String) {
    cause(causes, field, "FieldValueRequired", "Required value".into());
}

fn not_supported(causes: &mut Causes, field: String, value: &str, allowed: &[&str]) {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    let message = format!("Unsupported value: {value:?}: supported values: {}", quoted.join(", "));
    cause(causes, field, "FieldValueNotSupported", message);
}

/// Role and binding names are path segments, so `system:kube-scheduler`
/// is a valid one.
fn meta<T: Resource>(object: &T) -> Causes {
    let mut causes = Causes::default();
    object_meta(&mut causes, object.metadata(), NameRule::Any);
    causes
}

fn rules(causes: &mut Causes, rules: &[PolicyRule], namespaced: bool) {
    for (i, rule) in rules.iter().enumerate() {
        let at = |field: &str| format!("rules[{i}].{field}");
        if rule.verbs.is_empty() {
            cause(
                causes,
                at("verbs"),
                "FieldValueRequired",
                "verbs must contain at least one value".into(),
            );
        }
        if !rule.non_resource_ur_ls.is_empty() {
            if namespaced {
                cause(
                    causes,
                    at("nonResourceURLs"),
                    "FieldValueInvalid",
                    "namespaced rules cannot apply to non-resource URLs".into(),
                );
            }
            if !rule.api_groups.is_empty() || !rule.resources.is_empty() {
                cause(
                    causes,
                    at("nonResourceURLs"),
                    "FieldValueInvalid",
                    "rules cannot apply to both regular resources and non-resource URLs".into(),
                );
            }
            continue;
        }
        if rule.api_groups.is_empty() {
            cause(
                causes,
                at("apiGroups"),
                "FieldValueRequired",
                "resource rules must supply at least one api group".into(),
            );
        }
        if rule.resources.is_empty() {
            cause(
                causes,
                at("resources"),
                "FieldValueRequired",
                "resource rules must supply at least one resource".into(),
            );
        }
    }
}

/// `role_kinds`: what the binding may refer to.
fn binding(
    causes: &mut Causes,
    subjects: &[Subject],
    role: Option<&RoleRef>,
    role_kinds: &[&str],
    namespaced: bool,
) {
    match role {
        None => required(causes, "roleRef".into()),
        Some(role) => {
            if role.api_group != GROUP {
                not_supported(causes, "roleRef.apiGroup".into(), &role.api_group, &[GROUP]);
            }
            if !role_kinds.contains(&role.kind.as_str()) {
                not_supported(causes, "roleRef.kind".into(), &role.kind, role_kinds);
            }
            if role.name.is_empty() {
                required(causes, "roleRef.name".into());
            } else if role.name.contains('/') || role.name.contains('%') {
                cause(
                    causes,
                    "roleRef.name".into(),
                    "FieldValueInvalid",
                    format!("Invalid value: {:?}: may not contain '/' or '%'", role.name),
                );
            }
        }
    }
    for (i, subject) in subjects.iter().enumerate() {
        let at = |field: &str| format!("subjects[{i}].{field}");
        if subject.name.is_empty() {
            required(causes, at("name"));
        }
        match subject.kind.as_str() {
            "ServiceAccount" => {
                if !subject.api_group.is_empty() {
                    not_supported(causes, at("apiGroup"), &subject.api_group, &[""]);
                }
                if !namespaced && subject.namespace.is_empty() {
                    required(causes, at("namespace"));
                }
            }
            "User" | "Group" => {
                if subject.api_group != GROUP {
                    not_supported(causes, at("apiGroup"), &subject.api_group, &[GROUP]);
                }
            }
            other => not_supported(causes, at("kind"), other, &["ServiceAccount", "User", "Group"]),
        }
    }
}

/// Users and groups named without their group get it, as Kubernetes'
/// defaulting does.
fn default_subjects(subjects: &mut [Subject]) {
    for subject in subjects {
        if subject.api_group.is_empty() && matches!(subject.kind.as_str(), "User" | "Group") {
            subject.api_group = GROUP.into();
        }
    }
}

fn role_ref_update(causes: &mut Causes, old: Option<&RoleRef>, new: Option<&RoleRef>) {
    if old != new {
        cause(causes, "roleRef".into(), "FieldValueInvalid", "cannot change roleRef".into());
    }
}

/// Each selector must parse, and there must be one.
fn aggregation(causes: &mut Causes, rule: &AggregationRule) {
    if rule.cluster_role_selectors.is_empty() {
        required(causes, "aggregationRule.clusterRoleSelectors".into());
    }
    for (i, selector) in rule.cluster_role_selectors.iter().enumerate() {
        if let Err(e) = Selector::from_label_selector(Some(selector)) {
            let field = format!("aggregationRule.clusterRoleSelectors[{i}]");
            cause(causes, field, "FieldValueInvalid", e.to_string());
        }
    }
}

impl Kind for Role {
    fn keep_status_of(&mut self, _: &Self) {}
    fn keep_spec_of(&mut self, from: &Self) {
        self.rules = from.rules.clone();
    }
    fn spec_changed(&self, from: &Self) -> bool {
        self.rules != from.rules
    }
    fn name_rule(&self) -> NameRule {
        NameRule::Any
    }
    fn validate(&self) -> Causes {
        let mut causes = meta(self);
        rules(&mut causes, &self.rules, true);
        causes
    }
}

impl Kind for ClusterRole {
    fn keep_status_of(&mut self, _: &Self) {}
    fn keep_spec_of(&mut self, from: &Self) {
        self.rules = from.rules.clone();
        self.aggregation_rule = from.aggregation_rule.clone();
    }
    fn spec_changed(&self, from: &Self) -> bool {
        self.rules != from.rules || self.aggregation_rule != from.aggregation_rule
    }
    fn name_rule(&self) -> NameRule {
        NameRule::Any
    }
    fn validate(&self) -> Causes {
        let mut causes = meta(self);
        rules(&mut causes, &self.rules, false);
        if let Some(rule) = &self.aggregation_rule {
            aggregation(&mut causes, rule);
        }
        causes
    }
}

macro_rules! binding {
    ($($ty:ty, namespaced = $namespaced:literal, roles = $roles:expr;)*) => {$(
        impl Kind for $ty {
            fn keep_status_of(&mut self, _: &Self) {}
            fn keep_spec_of(&mut self, from: &Self) {
                self.subjects = from.subjects.clone();
                self.role_ref = from.role_ref.clone();
            }
            fn spec_changed(&self, from: &Self) -> bool {
                self.subjects != from.subjects || self.role_ref != from.role_ref
            }
            fn name_rule(&self) -> NameRule {
                NameRule::Any
            }
            fn apply_defaults(&mut self) {
                default_subjects(&mut self.subjects);
            }
            fn validate(&self) -> Causes {
                let mut causes = meta(self);
                binding(&mut causes, &self.subjects, self.role_ref.as_ref(), $roles, $namespaced);
                causes
            }
            fn validate_update(&self, old: &Self) -> Causes {
                let mut causes = Causes::default();
                role_ref_update(&mut causes, old.role_ref.as_ref(), self.role_ref.as_ref());
                causes
            }
        }
    )*};
}

binding! {
    RoleBinding, namespaced = true, roles = &["Role", "ClusterRole"];
    ClusterRoleBinding, namespaced = false, roles = &["ClusterRole"];
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::meta_v1::ObjectMeta;

    fn named(name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta { name: name.into(), namespace: "default".into(), ..Default::default() })
    }

    fn fields(causes: Causes) -> Vec<String> {
        causes.0.into_iter().map(|c| c.field).collect()
    }

    fn user(name: &str) -> Subject {
        Subject { kind: "User".into(), name: name.into(), ..Default::default() }
    }

    fn role_ref(kind: &str, name: &str) -> Option<RoleRef> {
        Some(RoleRef { api_group: GROUP.into(), kind: kind.into(), name: name.into() })
    }

    #[test]
    fn rules_need_verbs_groups_and_resources_or_urls() {
        let good = PolicyRule {
            verbs: vec!["get".into()],
            api_groups: vec!["".into()],
            resources: vec!["pods".into()],
            ..Default::default()
        };
        let role = Role {
            metadata: named("system:reader"),
            rules: vec![good.clone()],
            ..Default::default()
        };
        assert!(Kind::validate(&role).0.is_empty());
        let bad =
            PolicyRule { verbs: vec![], resources: vec!["pods".into()], ..Default::default() };
        let role = Role { metadata: named("r"), rules: vec![good, bad], ..Default::default() };
        assert_eq!(fields(Kind::validate(&role)), ["rules[1].verbs", "rules[1].apiGroups"]);
        let urls = PolicyRule {
            verbs: vec!["get".into()],
            non_resource_ur_ls: vec!["/healthz".into()],
            ..Default::default()
        };
        let role = Role { metadata: named("r"), rules: vec![urls.clone()], ..Default::default() };
        assert_eq!(fields(Kind::validate(&role)), ["rules[0].nonResourceURLs"]);
        let cluster_role =
            ClusterRole { metadata: named("r"), rules: vec![urls], ..Default::default() };
        assert!(Kind::validate(&cluster_role).0.is_empty());
    }

    #[test]
    fn an_aggregation_rule_needs_selectors_that_parse() {
        use berth_proto::meta_v1::{LabelSelector, LabelSelectorRequirement};
        let mut role = ClusterRole {
            metadata: named("r"),
            aggregation_rule: Some(AggregationRule::default()),
            ..Default::default()
        };
        assert_eq!(fields(Kind::validate(&role)), ["aggregationRule.clusterRoleSelectors"]);
        let bad = LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: "k".into(),
                operator: "Sometimes".into(),
                values: vec![],
            }],
            ..Default::default()
        };
        let good = LabelSelector {
            match_labels: [("k".to_string(), "v".to_string())].into(),
            ..Default::default()
        };
        role.aggregation_rule =
            Some(AggregationRule { cluster_role_selectors: vec![good.clone(), bad] });
        assert_eq!(fields(Kind::validate(&role)), ["aggregationRule.clusterRoleSelectors[1]"]);
        role.aggregation_rule = Some(AggregationRule { cluster_role_selectors: vec![good] });
        assert!(Kind::validate(&role).0.is_empty());
    }

    #[test]
    fn bindings_refer_to_roles_of_rbac_and_name_known_subjects() {
        let mut rb = RoleBinding {
            metadata: named("read"),
            subjects: vec![user("alice")],
            role_ref: role_ref("ClusterRole", "view"),
            ..Default::default()
        };
        Kind::apply_defaults(&mut rb);
        assert_eq!(rb.subjects[0].api_group, GROUP);
        assert!(Kind::validate(&rb).0.is_empty());
        let crb = ClusterRoleBinding {
            metadata: named("read"),
            subjects: vec![
                Subject { kind: "ServiceAccount".into(), name: "x".into(), ..Default::default() },
                Subject { kind: "Robot".into(), name: "r2".into(), ..Default::default() },
            ],
            role_ref: role_ref("Role", "view"),
            ..Default::default()
        };
        assert_eq!(
            fields(Kind::validate(&crb)),
            ["roleRef.kind", "subjects[0].namespace", "subjects[1].kind"]
        );
        let no_ref = RoleBinding { metadata: named("x"), ..Default::default() };
        assert_eq!(fields(Kind::validate(&no_ref)), ["roleRef"]);
    }

    #[test]
    fn the_role_reference_cannot_change() {
        let old = RoleBinding {
            metadata: named("read"),
            subjects: vec![user("alice")],
            role_ref: role_ref("ClusterRole", "view"),
            ..Default::default()
        };
        let mut more = old.clone();
        more.subjects.push(user("bob"));
        assert!(Kind::validate_update(&more, &old).0.is_empty());
        let mut other = old.clone();
        other.role_ref = role_ref("ClusterRole", "edit");
        let causes = Kind::validate_update(&other, &old).0;
        assert_eq!(causes[0].message, "cannot change roleRef");
    }
}
