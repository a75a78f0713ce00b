//! What the client needs to know of each resource: its gRPC service, and the
//! list and watch-event messages that carry it.

use berth_proto::api_v1::*;
use berth_proto::apps_v1::{Deployment, DeploymentList, ReplicaSet, ReplicaSetList};
use berth_proto::coordination_v1::{Lease, LeaseList};
use berth_proto::core_v1::{
    Event, EventList, Namespace, NamespaceList, Node, NodeList, Pod, PodList,
};
use berth_proto::meta_v1::ListMeta;
use berth_proto::rbac_v1::{
    ClusterRole, ClusterRoleBinding, ClusterRoleBindingList, ClusterRoleList, Role, RoleBinding,
    RoleBindingList, RoleList,
};
use berth_proto::Resource;

/// A resource served by berth's typed gRPC API.
pub trait ApiResource:
    Resource + prost::Message + Default + Clone + PartialEq + Send + Sync + 'static
{
    /// The full gRPC service name, e.g. `berth.api.v1.Pods`.
    const SERVICE: &'static str;
    type List: prost::Message + Default + Send + 'static;
    type WatchEvent: prost::Message + Default + Send + 'static;

    fn into_items(list: Self::List) -> (ListMeta, Vec<Self>);
    /// The event's type (ADDED, MODIFIED, DELETED, BOOKMARK) and object.
    fn into_event(event: Self::WatchEvent) -> (String, Self);
    /// The node a pod is bound to; None for everything else.
    fn node_name(&self) -> Option<&str> {
        None
    }
}

macro_rules! api_resource {
    ($($ty:ty, $list:ty, $event:ty, $service:literal $(, { $($extra:tt)* })? ;)*) => {$(
        impl ApiResource for $ty {
            const SERVICE: &'static str = $service;
            type List = $list;
            type WatchEvent = $event;

            fn into_items(list: $list) -> (ListMeta, Vec<$ty>) {
                (list.metadata.unwrap_or_default(), list.items)
            }

            fn into_event(event: $event) -> (String, $ty) {
                (event.r#type, event.object.unwrap_or_default())
            }
            $($($extra)*)?
        }
    )*};
}

api_resource! {
    Namespace, NamespaceList, NamespaceWatchEvent, "berth.api.v1.Namespaces";
    Node, NodeList, NodeWatchEvent, "berth.api.v1.Nodes";
    Event, EventList, EventWatchEvent, "berth.api.v1.Events";
    ReplicaSet, ReplicaSetList, ReplicaSetWatchEvent, "berth.api.v1.ReplicaSets";
    Deployment, DeploymentList, DeploymentWatchEvent, "berth.api.v1.Deployments";
    Lease, LeaseList, LeaseWatchEvent, "berth.api.v1.Leases";
    Role, RoleList, RoleWatchEvent, "berth.api.v1.Roles";
    ClusterRole, ClusterRoleList, ClusterRoleWatchEvent, "berth.api.v1.ClusterRoles";
    RoleBinding, RoleBindingList, RoleBindingWatchEvent, "berth.api.v1.RoleBindings";
    ClusterRoleBinding, ClusterRoleBindingList, ClusterRoleBindingWatchEvent, "berth.api.v1.ClusterRoleBindings";
    Pod, PodList, PodWatchEvent, "berth.api.v1.Pods", {
        fn node_name(&self) -> Option<&str> {
            self.spec.as_ref().map(|s| s.node_name.as_str()).filter(|n| !n.is_empty())
        }
    };
}
