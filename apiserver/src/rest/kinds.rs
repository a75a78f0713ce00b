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
];

pub(super) fn find(group: &str, plural: &str) -> Option<&'static RestKind> {
    KINDS.iter().find(|k| k.group == group && k.plural == plural)
}
