//! The resources the REST front end serves, by group and plural, and how
//! kubectl should see them.

/// One resource as REST names it.
pub(super) struct RestKind {
    /// "" for the core group.
    pub group: &'static str,
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// Listed by `kubectl get all`.
    pub in_all: bool,
    pub subresources: &'static [&'static str],
}

pub(super) const KINDS: &[RestKind] = &[
    RestKind {
        group: "",
        plural: "namespaces",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        in_all: false,
        subresources: &["status"],
    },
    RestKind {
        group: "",
        plural: "nodes",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        in_all: false,
        subresources: &["status"],
    },
    RestKind {
        group: "",
        plural: "pods",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        in_all: true,
        subresources: &["status", "binding", "eviction"],
    },
    RestKind {
        group: "",
        plural: "events",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        in_all: false,
        subresources: &[],
    },
    RestKind {
        group: "apps",
        plural: "deployments",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        in_all: true,
        subresources: &["status", "scale"],
    },
    RestKind {
        group: "apps",
        plural: "replicasets",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        in_all: true,
        subresources: &["status", "scale"],
    },
    RestKind {
        group: "coordination.k8s.io",
        plural: "leases",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        in_all: false,
        subresources: &[],
    },
    RestKind {
        group: "rbac.authorization.k8s.io",
        plural: "roles",
        kind: "Role",
        namespaced: true,
        short_names: &[],
        in_all: false,
        subresources: &[],
    },
    RestKind {
        group: "rbac.authorization.k8s.io",
        plural: "clusterroles",
        kind: "ClusterRole",
        namespaced: false,
        short_names: &[],
        in_all: false,
        subresources: &[],
    },
    RestKind {
        group: "rbac.authorization.k8s.io",
        plural: "rolebindings",
        kind: "RoleBinding",
        namespaced: true,
        short_names: &[],
        in_all: false,
        subresources: &[],
    },
    RestKind {
        group: "rbac.authorization.k8s.io",
        plural: "clusterrolebindings",
        kind: "ClusterRoleBinding",
        namespaced: false,
        short_names: &[],
        in_all: false,
        subresources: &[],
    },
    RestKind {
        group: "authorization.k8s.io",
        plural: "selfsubjectaccessreviews",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
        short_names: &[],
        in_all: false,
        subresources: &[],
    },
    RestKind {
        group: "authorization.k8s.io",
        plural: "selfsubjectrulesreviews",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
        short_names: &[],
        in_all: false,
        subresources: &[],
    },
];

/// The group of the reviews a caller asks about its own permissions: they
/// are created and answered, never stored.
pub(super) const REVIEWS: &str = "authorization.k8s.io";

impl RestKind {
    /// The verbs discovery lists for the resource itself.
    pub(super) fn verbs(&self) -> Vec<&'static str> {
        if self.group == REVIEWS {
            return vec!["create"];
        }
        ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            .into_iter()
            .filter(|v| *v != "deletecollection" || self.namespaced)
            .collect()
    }
}

pub(super) fn find(group: &str, plural: &str) -> Option<&'static RestKind> {
    KINDS.iter().find(|k| k.group == group && k.plural == plural)
}
