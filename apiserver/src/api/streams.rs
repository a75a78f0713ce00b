//! Logs, exec and attach: the pod's own node serves them, so the API finds
//! the pod's node and relays the stream to the node agent's
//! `KubeletStreams` service, over mutual TLS or with the cluster secret.
//! Every front end (gRPC, REST) calls these operations.

use super::{verbs, Api};
use crate::error::ApiError;
use crate::filters::RequestInfo;
use berth_proto::api_v1::kubelet_streams_client::KubeletStreamsClient;
use berth_proto::api_v1::{
    pod_exec_input, PodExecInput, PodExecOutput, PodExecStart, PodLogsChunk, PodLogsRequest,
};
use berth_proto::core_v1::{Node, Pod};
use futures::{Stream, StreamExt};
use std::time::Duration;
use tonic::Request;

/// How long connecting to a node agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The metadata key the cluster secret travels in, as a bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// The streamed sessions with a container: a command run in it, or its own
/// process's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Session {
    Exec,
    Attach,
}

impl Session {
    /// The pods subresource RBAC names it by.
    fn subresource(self) -> &'static str {
        match self {
            Session::Exec => "exec",
            Session::Attach => "attach",
        }
    }
}

/// A session the API has checked, and the client of the pod's node.
pub(crate) struct ExecTarget {
    session: Session,
    start: PodExecStart,
    client: KubeletStreamsClient<tonic::transport::Channel>,
}

impl Api {
    /// A container's log from the pod's node.
    pub(crate) async fn logs(
        &self,
        head: &Request<()>,
        mut request: PodLogsRequest,
    ) -> Result<tonic::Streaming<PodLogsChunk>, ApiError> {
        self.measured("get", "pods", async {
            self.allow(
                head,
                RequestInfo::new::<Pod>("get", "log", &request.namespace, &request.name),
            )?;
            let (pod, mut client) = self.pod_node(&request.namespace, &request.name).await?;
            request.container = container_of(&pod, &request.container)?;
            let call = self.authenticated(request)?;
            client.logs(call).await.map(|r| r.into_inner()).map_err(from_node)
        })
        .await
    }

    /// Starts `session` with the container on the pod's node: runs
    /// `start`'s command (exec), or joins the container's own streams
    /// (attach); `input` carries stdin, resizes and the close of stdin.
    pub(crate) async fn exec(
        &self,
        head: &Request<()>,
        session: Session,
        start: PodExecStart,
        input: impl Stream<Item = PodExecInput> + Send + 'static,
    ) -> Result<tonic::Streaming<PodExecOutput>, ApiError> {
        let target = self.exec_target(head, session, start).await?;
        self.exec_on(target, input).await
    }

    /// Checks a session as far as the API can (who asks, the pod, its
    /// phase, the container) and finds the pod's node, without starting
    /// anything.
    pub(crate) async fn exec_target(
        &self,
        head: &Request<()>,
        session: Session,
        mut start: PodExecStart,
    ) -> Result<ExecTarget, ApiError> {
        self.measured("create", "pods", async {
            self.allow(
                head,
                RequestInfo::new::<Pod>(
                    "create",
                    session.subresource(),
                    &start.namespace,
                    &start.name,
                ),
            )?;
            match session {
                Session::Exec if start.command.is_empty() => {
                    return Err(ApiError::BadRequest(
                        "you must specify at least one command for the container".into(),
                    ))
                }
                Session::Attach if !start.command.is_empty() => {
                    return Err(ApiError::BadRequest(
                        "an attach runs no command: it joins the container's own process".into(),
                    ))
                }
                _ => {}
            }
            let (pod, client) = self.pod_node(&start.namespace, &start.name).await?;
            let phase = pod.status.as_ref().map(|s| s.phase.as_str()).unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                let what = match session {
                    Session::Exec => "exec into",
                    Session::Attach => "attach to",
                };
                return Err(ApiError::BadRequest(format!(
                    "cannot {what} a container in a completed pod; current phase is {phase}"
                )));
            }
            start.container = container_of(&pod, &start.container)?;
            Ok(ExecTarget { session, start, client })
        })
        .await
    }

    /// Starts a checked session on the pod's node.
    pub(crate) async fn exec_on(
        &self,
        target: ExecTarget,
        input: impl Stream<Item = PodExecInput> + Send + 'static,
    ) -> Result<tonic::Streaming<PodExecOutput>, ApiError> {
        let ExecTarget { session, start, mut client } = target;
        let first = PodExecInput { input: Some(pod_exec_input::Input::Start(start)) };
        let call = self.authenticated(futures::stream::once(async { first }).chain(input))?;
        let started = match session {
            Session::Exec => client.exec(call).await,
            Session::Attach => client.attach(call).await,
        };
        started.map(|r| r.into_inner()).map_err(from_node)
    }

    /// Cancelled when the server stops: streams served outside a request
    /// (upgraded connections) end with it.
    pub(crate) fn stopping(&self) -> tokio_util::sync::CancellationToken {
        self.stop.clone()
    }

    /// A request to a node agent: over mutual TLS this peer's certificate
    /// says who it is; over plain TCP the request carries the cluster secret.
    fn authenticated<T>(&self, message: T) -> Result<Request<T>, ApiError> {
        if self.kubelet_tls.is_some() {
            return Ok(Request::new(message));
        }
        let Some(secret) = &self.kubelet_secret else {
            return Err(ApiError::Unavailable(
                "this peer has neither TLS nor a cluster secret, so it cannot reach node agents \
                 for logs and exec"
                    .into(),
            ));
        };
        let mut request = Request::new(message);
        let value = format!("Bearer {secret}")
            .parse()
            .map_err(|_| ApiError::Internal("the cluster secret is not a valid header".into()))?;
        request.metadata_mut().insert(AUTHORIZATION, value);
        Ok(request)
    }

    /// The pod, and a client of its node's agent.
    async fn pod_node(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<(Pod, KubeletStreamsClient<tonic::transport::Channel>), ApiError> {
        let pod: Pod = verbs::get(&self.registry, namespace, name, "").await?;
        let node_name = pod.spec.as_ref().map(|s| s.node_name.clone()).unwrap_or_default();
        if node_name.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "pod {name:?} is not scheduled to a node yet"
            )));
        }
        let node: Node = match verbs::get(&self.registry, "", &node_name, "").await {
            Ok(node) => node,
            Err(ApiError::NotFound { .. }) => {
                return Err(ApiError::Unavailable(format!(
                    "node {node_name:?} of pod {name:?} is gone"
                )))
            }
            Err(e) => return Err(e),
        };
        let endpoint = kubelet_endpoint(&node).ok_or_else(|| {
            ApiError::Unavailable(format!("node {node_name:?} publishes no kubelet endpoint"))
        })?;
        let channel = berth_tls::endpoint(&endpoint, self.kubelet_tls.as_ref())
            .map_err(|e| {
                ApiError::Internal(format!("node {node_name:?} endpoint {endpoint}: {e}"))
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
            .map_err(|e| {
                ApiError::Unavailable(format!(
                    "cannot reach the agent of node {node_name:?} at {endpoint}: {e}"
                ))
            })?;
        Ok((pod, KubeletStreamsClient::new(channel)))
    }
}

/// The node agent's address: its InternalIP (else ExternalIP, else
/// Hostname) and the kubelet port it publishes.
fn kubelet_endpoint(node: &Node) -> Option<String> {
    let status = node.status.as_ref()?;
    let port = status.daemon_endpoints.as_ref()?.kubelet_endpoint.as_ref()?.port;
    if port <= 0 {
        return None;
    }
    let address = ["InternalIP", "ExternalIP", "Hostname"].iter().find_map(|kind| {
        status.addresses.iter().find(|a| a.r#type == *kind && !a.address.is_empty())
    })?;
    Some(match address.address.parse::<std::net::Ipv6Addr>() {
        Ok(v6) => format!("[{v6}]:{port}"),
        Err(_) => format!("{}:{port}", address.address),
    })
}

/// The container a request means: the one named, or the pod's only one
/// (or the one the `kubectl.kubernetes.io/default-container` annotation
/// names), as Kubernetes chooses.
fn container_of(pod: &Pod, named: &str) -> Result<String, ApiError> {
    let meta = pod.metadata.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let names: Vec<&str> =
        spec.containers.iter().chain(&spec.init_containers).map(|c| c.name.as_str()).collect();
    if !named.is_empty() {
        return match names.contains(&named) {
            true => Ok(named.to_string()),
            false => Err(ApiError::BadRequest(format!(
                "container {named} is not valid for pod {}",
                meta.name
            ))),
        };
    }
    if let Some(default) = meta.annotations.get("kubectl.kubernetes.io/default-container") {
        if names.contains(&default.as_str()) {
            return Ok(default.clone());
        }
    }
    match spec.containers.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => Err(ApiError::BadRequest(format!("pod {} has no containers", meta.name))),
        many => Err(ApiError::BadRequest(format!(
            "a container name must be specified for pod {}, choose one of: [{}]",
            meta.name,
            many.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(" ")
        ))),
    }
}

/// A node agent's refusal as the API error a client should see: what the
/// node says about the container is the caller's mistake (BadRequest), a
/// node that cannot serve is Unavailable.
pub(crate) fn from_node(status: tonic::Status) -> ApiError {
    use tonic::Code;
    match status.code() {
        Code::NotFound | Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            ApiError::BadRequest(status.message().to_string())
        }
        Code::Unauthenticated | Code::PermissionDenied => ApiError::Internal(format!(
            "the node agent refused this peer's credentials: {}",
            status.message()
        )),
        Code::Internal => ApiError::Internal(format!("node agent: {}", status.message())),
        _ => ApiError::Unavailable(format!("node agent: {}", status.message())),
    }
}
