//! The typed gRPC front end: one service per resource, each method a thin
//! adapter over the API's operations. Errors become gRPC statuses with the
//! Kubernetes Status in their details.

use super::streams::Session;
use super::Api;
use crate::error::ApiError;
use crate::filters::Warnings;
use crate::registry::ListOptions;
use berth_proto::api_v1::*;
use berth_proto::apps_v1::{Deployment, DeploymentList, ReplicaSet, ReplicaSetList, Scale};
use berth_proto::coordination_v1::{Lease, LeaseList};
use berth_proto::core_v1::{
    Binding, Event, EventList, Namespace, NamespaceList, Node, NodeList, Pod, PodList,
};
use berth_proto::meta_v1::ListMeta;
use berth_proto::rbac_v1::{
    ClusterRole, ClusterRoleBinding, ClusterRoleBindingList, ClusterRoleList, Role, RoleBinding,
    RoleBindingList, RoleList,
};
use berth_proto::Resource;
use futures::StreamExt;
use prost::Message;
use std::pin::Pin;
use tonic::{Request, Response, Status};

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

/// An API error as a gRPC status with the Kubernetes Status in its details.
pub fn to_status(e: ApiError) -> Status {
    let details = e.status().encode_to_vec();
    Status::with_details(e.grpc_code(), e.to_string(), details.into())
}

/// The result as the call's answer; the warnings admission gave the
/// request (`would violate PodSecurity ...`) go with it as `warning`
/// metadata, one value each, as Kubernetes sends Warning headers.
fn reply<T>(head: &Request<()>, result: Result<T, ApiError>) -> Result<Response<T>, Status> {
    let mut response = result.map(Response::new).map_err(to_status)?;
    if let Some(warnings) = head.extensions().get::<Warnings>() {
        for warning in warnings.all() {
            if let Ok(value) = warning.parse() {
                response.metadata_mut().append(WARNING, value);
            }
        }
    }
    Ok(response)
}

/// The metadata key of a warning for the client.
pub const WARNING: &str = "warning";

/// A request as its headers and connection, apart from its body: what the
/// filters look at, with a place for admission's warnings.
fn split<R>(request: Request<R>) -> (Request<()>, R) {
    let (metadata, mut extensions, body) = request.into_parts();
    extensions.insert(Warnings::default());
    (Request::from_parts(metadata, extensions, ()), body)
}

fn list_options(r: &ListRequest) -> ListOptions {
    ListOptions {
        label_selector: r.label_selector.clone(),
        field_selector: r.field_selector.clone(),
        limit: r.limit,
        continue_token: r.r#continue.clone(),
        resource_version: r.resource_version.clone(),
    }
}

macro_rules! resource_service {
    ($module:ident :: $trait:ident, $ty:ty, $list:ident, $event:ident { $($extra:tt)* }) => {
        #[tonic::async_trait]
        impl $module::$trait for Api {
            async fn create(&self, r: Request<$ty>) -> Result<Response<$ty>, Status> {
                let (head, object) = split(r);
                reply(&head, Api::create(self, &head, object).await)
            }

            async fn get(&self, r: Request<GetRequest>) -> Result<Response<$ty>, Status> {
                let (head, r) = split(r);
                reply(&head, Api::get(self, &head, &r.namespace, &r.name, &r.resource_version).await)
            }

            async fn list(&self, r: Request<ListRequest>) -> Result<Response<$list>, Status> {
                let (head, r) = split(r);
                let result = Api::list::<$ty>(self, &head, &r.namespace, &list_options(&r)).await;
                reply(&head, result.map(|result| $list {
                    api_version: <$ty>::API_VERSION.into(),
                    kind: format!("{}List", <$ty>::KIND),
                    metadata: Some(ListMeta {
                        resource_version: result.resource_version,
                        r#continue: result.continue_token,
                        remaining_item_count: None,
                    }),
                    items: result.items,
                }))
            }

            async fn update(&self, r: Request<$ty>) -> Result<Response<$ty>, Status> {
                let (head, object) = split(r);
                reply(&head, Api::update(self, &head, object).await)
            }

            async fn update_status(&self, r: Request<$ty>) -> Result<Response<$ty>, Status> {
                let (head, object) = split(r);
                reply(&head, Api::update_status(self, &head, object).await)
            }

            async fn patch(&self, r: Request<PatchRequest>) -> Result<Response<$ty>, Status> {
                let (head, r) = split(r);
                reply(&head, Api::patch(self, &head, &r).await)
            }

            async fn delete(&self, r: Request<DeleteRequest>) -> Result<Response<$ty>, Status> {
                let (head, r) = split(r);
                reply(&head, Api::delete(self, &head, &r).await)
            }

            type WatchStream = Stream<$event>;

            async fn watch(&self, r: Request<WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
                let (head, r) = split(r);
                let events = Api::watch::<$ty>(self, &head, &r).await.map_err(to_status)?;
                let stream: Self::WatchStream = Box::pin(events.map(|event| match event {
                    Ok((r#type, object)) => Ok($event { r#type: r#type.into(), object: Some(object) }),
                    Err(e) => Err(to_status(e)),
                }));
                Ok(Response::new(stream))
            }

            $($extra)*
        }
    };
}

resource_service!(namespaces_server::Namespaces, Namespace, NamespaceList, NamespaceWatchEvent {});
resource_service!(nodes_server::Nodes, Node, NodeList, NodeWatchEvent {});
resource_service!(events_server::Events, Event, EventList, EventWatchEvent {});
resource_service!(leases_server::Leases, Lease, LeaseList, LeaseWatchEvent {});
resource_service!(roles_server::Roles, Role, RoleList, RoleWatchEvent {});
resource_service!(
    cluster_roles_server::ClusterRoles,
    ClusterRole,
    ClusterRoleList,
    ClusterRoleWatchEvent {}
);
resource_service!(
    role_bindings_server::RoleBindings,
    RoleBinding,
    RoleBindingList,
    RoleBindingWatchEvent {}
);
resource_service!(
    cluster_role_bindings_server::ClusterRoleBindings,
    ClusterRoleBinding,
    ClusterRoleBindingList,
    ClusterRoleBindingWatchEvent {}
);
resource_service!(pods_server::Pods, Pod, PodList, PodWatchEvent {
    async fn bind(&self, r: Request<Binding>) -> Result<Response<Pod>, Status> {
        let (head, binding) = split(r);
        reply(&head, Api::bind(self, &head, binding).await)
    }

    type LogsStream = Stream<PodLogsChunk>;

    async fn logs(&self, r: Request<PodLogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let (head, r) = split(r);
        let chunks = Api::logs(self, &head, r).await.map_err(to_status)?;
        Ok(Response::new(Box::pin(chunks.map(|c| c.map_err(relayed)))))
    }

    type ExecStream = Stream<PodExecOutput>;

    async fn exec(&self, r: Request<tonic::Streaming<PodExecInput>>) -> Result<Response<Self::ExecStream>, Status> {
        session(self, r, Session::Exec).await
    }

    type AttachStream = Stream<PodExecOutput>;

    async fn attach(&self, r: Request<tonic::Streaming<PodExecInput>>) -> Result<Response<Self::AttachStream>, Status> {
        session(self, r, Session::Attach).await
    }
});

/// An exec or attach: the first message is its start, the rest its input.
async fn session(
    api: &Api,
    r: Request<tonic::Streaming<PodExecInput>>,
    session: Session,
) -> Result<Response<Stream<PodExecOutput>>, Status> {
    let (head, mut input) = split(r);
    let start = match input.message().await? {
        Some(PodExecInput { input: Some(pod_exec_input::Input::Start(start)) }) => start,
        _ => {
            return Err(Status::invalid_argument("the first message of a stream must be its start"))
        }
    };
    // The client's stream ends (or breaks) the input; either closes it.
    let input = input
        .take_while(|m| futures::future::ready(m.is_ok()))
        .filter_map(|m| futures::future::ready(m.ok()));
    let output = Api::exec(api, &head, session, start, input).await.map_err(to_status)?;
    Ok(Response::new(Box::pin(output.map(|o| o.map_err(relayed)))))
}

/// A node agent's error in the middle of a stream, passed on as the API's.
fn relayed(status: Status) -> Status {
    to_status(super::streams::from_node(status))
}
resource_service!(replica_sets_server::ReplicaSets, ReplicaSet, ReplicaSetList, ReplicaSetWatchEvent {
    async fn scale(&self, r: Request<ScaleRequest>) -> Result<Response<Scale>, Status> {
        let (head, r) = split(r);
        reply(&head, Api::scale::<ReplicaSet>(self, &head, &r).await)
    }
});
resource_service!(deployments_server::Deployments, Deployment, DeploymentList, DeploymentWatchEvent {
    async fn scale(&self, r: Request<ScaleRequest>) -> Result<Response<Scale>, Status> {
        let (head, r) = split(r);
        reply(&head, Api::scale::<Deployment>(self, &head, &r).await)
    }
});

/// The full gRPC names of the API's services.
pub const SERVICE_NAMES: &[&str] = &[
    "berth.api.v1.Namespaces",
    "berth.api.v1.Nodes",
    "berth.api.v1.Pods",
    "berth.api.v1.Events",
    "berth.api.v1.ReplicaSets",
    "berth.api.v1.Deployments",
    "berth.api.v1.Leases",
    "berth.api.v1.Roles",
    "berth.api.v1.ClusterRoles",
    "berth.api.v1.RoleBindings",
    "berth.api.v1.ClusterRoleBindings",
];

/// Every resource service of the API, to add to a tonic server.
pub struct ApiServices {
    pub namespaces: namespaces_server::NamespacesServer<Api>,
    pub nodes: nodes_server::NodesServer<Api>,
    pub pods: pods_server::PodsServer<Api>,
    pub events: events_server::EventsServer<Api>,
    pub replica_sets: replica_sets_server::ReplicaSetsServer<Api>,
    pub deployments: deployments_server::DeploymentsServer<Api>,
    pub leases: leases_server::LeasesServer<Api>,
    pub roles: roles_server::RolesServer<Api>,
    pub cluster_roles: cluster_roles_server::ClusterRolesServer<Api>,
    pub role_bindings: role_bindings_server::RoleBindingsServer<Api>,
    pub cluster_role_bindings: cluster_role_bindings_server::ClusterRoleBindingsServer<Api>,
}

pub fn services(api: Api) -> ApiServices {
    ApiServices {
        namespaces: namespaces_server::NamespacesServer::new(api.clone()),
        nodes: nodes_server::NodesServer::new(api.clone()),
        pods: pods_server::PodsServer::new(api.clone()),
        events: events_server::EventsServer::new(api.clone()),
        replica_sets: replica_sets_server::ReplicaSetsServer::new(api.clone()),
        deployments: deployments_server::DeploymentsServer::new(api.clone()),
        leases: leases_server::LeasesServer::new(api.clone()),
        roles: roles_server::RolesServer::new(api.clone()),
        cluster_roles: cluster_roles_server::ClusterRolesServer::new(api.clone()),
        role_bindings: role_bindings_server::RoleBindingsServer::new(api.clone()),
        cluster_role_bindings: cluster_role_bindings_server::ClusterRoleBindingsServer::new(api),
    }
}
