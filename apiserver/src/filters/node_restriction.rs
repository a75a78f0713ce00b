//! NodeRestriction admission: a node's writes reach only what is its own,
//! judged by the objects themselves, which authorization cannot see.
//!
//! A node (`system:node:<name>` in `system:nodes`) may write only its own
//! Node and its own Lease in kube-node-lease, and may write the status of,
//! delete or evict only pods bound to it (the stored pod's spec.nodeName).
//! It may not create pods or change a pod's spec. Whatever else a node is
//! allowed (by RBAC, say) is not narrowed here; other users pass untouched.

use super::admission::{Admission, Admitted};
use super::node::{node_of, NODE_LEASE_NAMESPACE};
use super::RequestInfo;
use crate::error::ApiError;
use berth_proto::core_v1::Pod;

/// See the module comment.
pub struct NodeRestriction;

impl Admission for NodeRestriction {
    fn validate(
        &self,
        info: &RequestInfo,
        object: &dyn Admitted,
        old: Option<&dyn Admitted>,
    ) -> Result<(), ApiError> {
        let Some(node) = node_of(&info.user) else { return Ok(()) };
        match object.kind() {
            "Pod" if old.is_none() => Err(refuse(node, "may not create pods")),
            "Pod" => Err(refuse(node, "may only change the status of pods, not their spec")),
            _ => own_object(node, object).and(old.map_or(Ok(()), |old| own_object(node, old))),
        }
    }

    fn validate_stored(
        &self,
        info: &RequestInfo,
        _object: Option<&dyn Admitted>,
        stored: &dyn Admitted,
    ) -> Result<(), ApiError> {
        let Some(node) = node_of(&info.user) else { return Ok(()) };
        if stored.kind() != "Pod" {
            return own_object(node, stored);
        }
        let bound_to = stored
            .as_any()
            .downcast_ref::<Pod>()
            .and_then(|pod| pod.spec.as_ref())
            .map_or("", |spec| spec.node_name.as_str());
        if bound_to == node {
            return Ok(());
        }
        let meta = stored.metadata();
        let what = match (info.verb, info.subresource) {
            (_, "status") => "write the status of",
            (_, "eviction") => "evict",
            _ => "delete",
        };
        Err(refuse(
            node,
            &format!(
                "may only {what} pods bound to it; pod {}/{} is bound to {bound_to:?}",
                meta.namespace, meta.name
            ),
        ))
    }
}

/// Refuses `object` unless it is a Node or node Lease of `node`'s own;
/// other kinds are not this plugin's business.
fn own_object(node: &str, object: &dyn Admitted) -> Result<(), ApiError> {
    let meta = object.metadata();
    match object.kind() {
        "Node" if meta.name != node => {
            Err(refuse(node, &format!("may only change its own Node, not {:?}", meta.name)))
        }
        "Lease" if meta.namespace != NODE_LEASE_NAMESPACE || meta.name != node => Err(refuse(
            node,
            &format!(
                "may only change its own Lease {NODE_LEASE_NAMESPACE}/{node}, not {}/{}",
                meta.namespace, meta.name
            ),
        )),
        _ => Ok(()),
    }
}

fn refuse(node: &str, what: &str) -> ApiError {
    ApiError::Forbidden(format!("node {node:?} {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filters::{Filters, UserInfo};
    use berth_proto::coordination_v1::Lease;
    use berth_proto::core_v1::{Event, Node, PodSpec};
    use berth_proto::meta_v1::ObjectMeta;
    use berth_proto::Resource;

    fn as_user<T: Resource>(
        user: &str,
        verb: &'static str,
        subresource: &'static str,
        object: &T,
    ) -> RequestInfo {
        let meta = object.metadata();
        let mut info = RequestInfo::new::<T>(verb, subresource, &meta.namespace, &meta.name);
        let groups = match user.starts_with("system:node:") {
            true => vec!["system:nodes".into(), "system:authenticated".into()],
            false => vec!["system:masters".into()],
        };
        info.user = UserInfo { name: user.into(), groups };
        info
    }

    fn meta(namespace: &str, name: &str) -> Option<ObjectMeta> {
        Some(ObjectMeta { namespace: namespace.into(), name: name.into(), ..Default::default() })
    }

    fn pod_on(node: &str) -> Pod {
        Pod {
            metadata: meta("default", "web"),
            spec: Some(PodSpec { node_name: node.into(), ..Default::default() }),
            ..Default::default()
        }
    }

    fn node(name: &str) -> Node {
        Node { metadata: meta("", name), ..Default::default() }
    }

    fn lease(namespace: &str, name: &str) -> Lease {
        Lease { metadata: meta(namespace, name), ..Default::default() }
    }

    fn forbidden(result: Result<(), ApiError>) -> bool {
        matches!(result, Err(ApiError::Forbidden(_)))
    }

    #[test]
    fn pod_status_and_deletion_only_for_pods_bound_to_the_node() {
        let (mine, theirs, unbound) = (pod_on("a"), pod_on("b"), pod_on(""));
        let status = as_user("system:node:a", "update", "status", &mine);
        assert_eq!(NodeRestriction.validate_stored(&status, Some(&mine), &mine), Ok(()));
        let err = NodeRestriction.validate_stored(&status, Some(&mine), &theirs).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"forbidden: node "a" may only write the status of pods bound to it; pod default/web is bound to "b""#
        );
        let delete = as_user("system:node:a", "delete", "", &mine);
        assert_eq!(NodeRestriction.validate_stored(&delete, None, &mine), Ok(()));
        assert!(forbidden(NodeRestriction.validate_stored(&delete, None, &theirs)));
        assert!(forbidden(NodeRestriction.validate_stored(&delete, None, &unbound)));
        let evict = as_user("system:node:a", "create", "eviction", &mine);
        assert!(forbidden(NodeRestriction.validate_stored(&evict, None, &theirs)));
    }

    #[test]
    fn a_node_neither_creates_pods_nor_changes_their_spec() {
        let pod = pod_on("a");
        let create = as_user("system:node:a", "create", "", &pod);
        assert!(forbidden(NodeRestriction.validate(&create, &pod, None)));
        let update = as_user("system:node:a", "update", "", &pod);
        assert!(forbidden(NodeRestriction.validate(&update, &pod, Some(&pod))));
    }

    #[test]
    fn a_node_writes_only_its_own_node_and_lease() {
        let (a, b) = (node("a"), node("b"));
        let write = as_user("system:node:a", "update", "", &a);
        assert_eq!(NodeRestriction.validate(&write, &a, Some(&a)), Ok(()));
        assert_eq!(NodeRestriction.validate(&write, &a, None), Ok(()));
        assert!(forbidden(NodeRestriction.validate(&write, &b, Some(&b))));
        assert!(forbidden(NodeRestriction.validate_stored(&write, Some(&b), &b)));
        assert_eq!(NodeRestriction.validate_stored(&write, Some(&a), &a), Ok(()));

        let own = lease(NODE_LEASE_NAMESPACE, "a");
        assert_eq!(NodeRestriction.validate(&write, &own, None), Ok(()));
        assert!(forbidden(NodeRestriction.validate(
            &write,
            &lease(NODE_LEASE_NAMESPACE, "b"),
            None
        )));
        assert!(forbidden(NodeRestriction.validate(&write, &lease("kube-system", "a"), None)));
        assert!(forbidden(NodeRestriction.validate_stored(&write, None, &lease("x", "a"))));
    }

    #[test]
    fn other_users_and_other_kinds_pass() {
        let theirs = pod_on("b");
        let admin = as_user("system:admin", "delete", "", &theirs);
        assert_eq!(NodeRestriction.validate_stored(&admin, None, &theirs), Ok(()));
        assert_eq!(NodeRestriction.validate(&admin, &node("b"), None), Ok(()));
        let event = Event { metadata: meta("default", "e"), ..Default::default() };
        let write = as_user("system:node:a", "create", "", &event);
        assert_eq!(NodeRestriction.validate(&write, &event, None), Ok(()));
    }

    #[test]
    fn in_the_chain_it_refuses_through_the_stored_phase() {
        let mut filters = Filters::default();
        filters.admission.push(Box::new(NodeRestriction));
        let theirs = pod_on("b");
        let status = as_user("system:node:a", "update", "status", &theirs);
        assert!(forbidden(filters.admit_stored(&status, Some(&theirs), &theirs)));
        let mine = pod_on("a");
        assert_eq!(filters.admit_stored(&status, Some(&mine), &mine), Ok(()));
    }
}
