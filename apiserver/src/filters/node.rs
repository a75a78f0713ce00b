//! Node authorization: what a node agent's credential may do, and nothing
//! about anyone else (`--authorization-mode=Node`).
//!
//! A node is the user `system:node:<name>` in the group `system:nodes`. It
//! may read nodes and pods, write its own Node and its status, its own
//! Lease in kube-node-lease, the status of pods and their deletion (whether
//! the pod is bound to it is checked against the stored pod by the
//! NodeRestriction admission plugin, which can see it), and events. Another
//! node's Node or Lease named in a request is denied outright; everything
//! else gets no opinion, for the next authorizer to decide.

use super::authz::{Authorizer, Decision};
use super::{RequestInfo, UserInfo};

/// The group every node's credential carries.
pub const NODES_GROUP: &str = "system:nodes";
/// A node's user name is this prefix and the node's name.
pub const NODE_USER_PREFIX: &str = "system:node:";
/// Where node agents keep their heartbeat Leases.
pub(super) const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The node `user` is, when it is one: `system:node:<name>` in
/// `system:nodes`.
pub(super) fn node_of(user: &UserInfo) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_USER_PREFIX)?;
    let in_group = user.groups.iter().any(|g| g == NODES_GROUP);
    (in_group && !name.is_empty()).then_some(name)
}

/// Authorizes node agents for what they call: see the module comment.
pub struct NodeAuthorizer;

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, info: &RequestInfo) -> Decision {
        let Some(node) = node_of(&info.user) else { return Decision::NoOpinion };
        let own = info.name == node;
        let allow_if = |allowed: bool| if allowed { Decision::Allow } else { Decision::NoOpinion };
        match (info.api_group, info.resource, info.subresource) {
            ("", "nodes", subresource) => {
                // create names the Node in its object; an empty name there is
                // not the node's own either.
                let named = !info.name.is_empty() || info.verb == "create";
                if named && !own {
                    return Decision::Deny(format!(
                        "node {node:?} may only reach its own Node, not {:?}",
                        info.name
                    ));
                }
                match subresource {
                    "" => allow_if(matches!(
                        info.verb,
                        "get" | "list" | "watch" | "create" | "update" | "patch"
                    )),
                    "status" => allow_if(matches!(info.verb, "get" | "update" | "patch")),
                    _ => Decision::NoOpinion,
                }
            }
            ("coordination.k8s.io", "leases", "") if info.namespace == NODE_LEASE_NAMESPACE => {
                let named = !info.name.is_empty() || info.verb == "create";
                if named && !own {
                    return Decision::Deny(format!(
                        "node {node:?} may only reach its own Lease, not {:?}",
                        info.name
                    ));
                }
                allow_if(named && matches!(info.verb, "get" | "create" | "update" | "patch"))
            }
            ("", "pods", "") => allow_if(matches!(info.verb, "get" | "list" | "watch" | "delete")),
            ("", "pods", "status") => allow_if(matches!(info.verb, "update" | "patch")),
            // The event recorder counts a repeated event by reading and
            // updating the one it wrote.
            ("", "events", "") => {
                allow_if(matches!(info.verb, "get" | "create" | "update" | "patch"))
            }
            _ => Decision::NoOpinion,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::coordination_v1::Lease;
    use berth_proto::core_v1::{Event, Namespace, Node, Pod};

    fn node_user(name: &str) -> UserInfo {
        UserInfo {
            name: format!("system:node:{name}"),
            groups: vec![NODES_GROUP.into(), "system:authenticated".into()],
        }
    }

    fn ask<T: berth_proto::Resource>(
        user: &UserInfo,
        verb: &'static str,
        subresource: &'static str,
        namespace: &str,
        name: &str,
    ) -> Decision {
        let mut info = RequestInfo::new::<T>(verb, subresource, namespace, name);
        info.user = user.clone();
        NodeAuthorizer.authorize(&info)
    }

    fn denied(decision: Decision) -> bool {
        matches!(decision, Decision::Deny(_))
    }

    #[test]
    fn only_node_users_in_the_nodes_group_are_its_business() {
        let admin = UserInfo { name: "system:admin".into(), groups: vec!["system:masters".into()] };
        assert_eq!(ask::<Node>(&admin, "get", "", "", "a"), Decision::NoOpinion);
        // The name without the group, or the group without a node name.
        let no_group = UserInfo { name: "system:node:a".into(), groups: Vec::new() };
        assert_eq!(ask::<Node>(&no_group, "get", "", "", "a"), Decision::NoOpinion);
        let no_name = UserInfo { name: "system:node:".into(), groups: vec![NODES_GROUP.into()] };
        assert_eq!(ask::<Pod>(&no_name, "list", "", "", ""), Decision::NoOpinion);
        assert_eq!(node_of(&node_user("a")), Some("a"));
    }

    #[test]
    fn a_node_writes_its_own_node_and_its_status() {
        let a = node_user("a");
        for verb in ["get", "create", "update", "patch"] {
            assert_eq!(ask::<Node>(&a, verb, "", "", "a"), Decision::Allow, "{verb}");
        }
        for verb in ["get", "update", "patch"] {
            assert_eq!(ask::<Node>(&a, verb, "status", "", "a"), Decision::Allow, "{verb}");
        }
        assert_eq!(ask::<Node>(&a, "list", "", "", ""), Decision::Allow);
        assert_eq!(ask::<Node>(&a, "watch", "", "", ""), Decision::Allow);
        // Deleting itself is not something the agent does.
        assert_eq!(ask::<Node>(&a, "delete", "", "", "a"), Decision::NoOpinion);
    }

    #[test]
    fn another_nodes_node_is_denied() {
        let a = node_user("a");
        for verb in ["get", "create", "update", "patch", "delete"] {
            assert!(denied(ask::<Node>(&a, verb, "", "", "b")), "{verb}");
        }
        assert!(denied(ask::<Node>(&a, "update", "status", "", "b")));
        assert!(denied(ask::<Node>(&a, "create", "", "", "")));
    }

    #[test]
    fn a_node_keeps_its_own_lease_only() {
        let a = node_user("a");
        for verb in ["get", "create", "update", "patch"] {
            let decision = ask::<Lease>(&a, verb, "", NODE_LEASE_NAMESPACE, "a");
            assert_eq!(decision, Decision::Allow, "{verb}");
        }
        for verb in ["get", "create", "update", "delete"] {
            assert!(denied(ask::<Lease>(&a, verb, "", NODE_LEASE_NAMESPACE, "b")), "{verb}");
        }
        assert_eq!(ask::<Lease>(&a, "delete", "", NODE_LEASE_NAMESPACE, "a"), Decision::NoOpinion);
        assert_eq!(ask::<Lease>(&a, "list", "", NODE_LEASE_NAMESPACE, ""), Decision::NoOpinion);
        // Leader-election leases elsewhere are not a node's.
        assert_eq!(ask::<Lease>(&a, "get", "", "kube-system", "a"), Decision::NoOpinion);
    }

    #[test]
    fn a_node_reads_pods_and_writes_their_status_and_deletion() {
        let a = node_user("a");
        for verb in ["get", "list", "watch", "delete"] {
            assert_eq!(ask::<Pod>(&a, verb, "", "default", "web"), Decision::Allow, "{verb}");
        }
        assert_eq!(ask::<Pod>(&a, "update", "status", "default", "web"), Decision::Allow);
        assert_eq!(ask::<Pod>(&a, "patch", "status", "default", "web"), Decision::Allow);
        for verb in ["create", "update", "patch"] {
            assert_eq!(ask::<Pod>(&a, verb, "", "default", "web"), Decision::NoOpinion, "{verb}");
        }
        assert_eq!(ask::<Pod>(&a, "create", "binding", "default", "web"), Decision::NoOpinion);
        assert_eq!(ask::<Pod>(&a, "create", "eviction", "default", "web"), Decision::NoOpinion);
    }

    #[test]
    fn a_node_records_events_and_nothing_else() {
        let a = node_user("a");
        for verb in ["get", "create", "update", "patch"] {
            assert_eq!(ask::<Event>(&a, verb, "", "default", "e"), Decision::Allow, "{verb}");
        }
        assert_eq!(ask::<Event>(&a, "delete", "", "default", "e"), Decision::NoOpinion);
        assert_eq!(ask::<Namespace>(&a, "get", "", "", "default"), Decision::NoOpinion);
        assert_eq!(ask::<Namespace>(&a, "create", "", "", "mine"), Decision::NoOpinion);
    }
}
