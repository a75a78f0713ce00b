//! The agent's stream server: the `KubeletStreams` gRPC service the API
//! server relays `Logs` and `Exec` to. Every call must carry the cluster
//! secret (`authorization: Bearer <secret>`); others are refused.
//!
//! Logs are read from the file the runtime names in the container's CRI
//! status. Exec goes through CRI: `Exec` answers with a URL on the
//! runtime's streaming server, which speaks Kubernetes' remote command
//! protocol over a WebSocket; this server relays between it and the gRPC
//! stream, so any CRI runtime's streaming server (berth's, containerd's)
//! serves it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use berth_proto::api_v1::kubelet_streams_server::{KubeletStreams, KubeletStreamsServer};
use berth_proto::api_v1::{
    pod_exec_input, pod_exec_output, PodExecInput, PodExecOutput, PodExecStart, PodLogsChunk,
    PodLogsRequest,
};
use berth_proto::cri_v1 as cri;
use berth_proto::remotecommand as rc;
use cri::runtime_service_client::RuntimeServiceClient;
use futures::{SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::logs::{self, LogOptions};

const NAME: &str = "io.kubernetes.pod.name";
const NAMESPACE: &str = "io.kubernetes.pod.namespace";
const CONTAINER: &str = "io.kubernetes.container.name";

/// The stream server's listening socket, bound before the Node is
/// registered so the Node can publish its port.
pub(super) struct StreamServer {
    listener: tokio::net::TcpListener,
}

impl StreamServer {
    pub(super) async fn bind(addr: SocketAddr) -> std::io::Result<StreamServer> {
        Ok(StreamServer { listener: tokio::net::TcpListener::bind(addr).await? })
    }

    pub(super) fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or_default()
    }

    /// Serves until `stop`, reaching the runtime at `socket`, to the
    /// `callers` it lets in.
    pub(super) async fn serve(
        self,
        socket: PathBuf,
        callers: Callers,
        stop: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let channel =
            tonic::transport::Endpoint::from_shared(format!("unix://{}", socket.display()))?
                .connect_lazy();
        let service = Streams { runtime: RuntimeServiceClient::new(channel) };
        tracing::info!(addr = ?self.listener.local_addr().ok(), "node stream server listening");
        let (tls, check) = match callers {
            Callers::Peers(tls) => (Some(tls), Check::Peers),
            Callers::Secret(secret) => {
                (None, Check::Secret(format!("Bearer {secret}").into_bytes().into()))
            }
        };
        let incoming = berth_tls::Acceptor::new(self.listener, tls).into_stream();
        tonic::transport::Server::builder()
            .add_service(KubeletStreamsServer::with_interceptor(service, move |r| check.admit(r)))
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
    }
}

/// Whom the stream server lets in.
pub(super) enum Callers {
    /// Over mutual TLS with this server certificate: API server peers of
    /// the cluster (certificates of its CA in group `system:peers`).
    Peers(berth_tls::ServerTls),
    /// Over plain TCP: callers presenting the cluster secret.
    Secret(String),
}

#[derive(Clone)]
enum Check {
    Peers,
    Secret(Arc<[u8]>),
}

impl Check {
    fn admit(&self, request: Request<()>) -> Result<Request<()>, Status> {
        match self {
            Check::Peers => {
                let connection = request.extensions().get::<berth_tls::ConnectionInfo>();
                let client = connection.and_then(|c| c.client.as_ref());
                if client
                    .is_some_and(|c| c.organizations.iter().any(|o| o == berth_tls::PEERS_GROUP))
                {
                    Ok(request)
                } else {
                    Err(Status::unauthenticated(
                        "logs and exec are served to the cluster's API server peers only",
                    ))
                }
            }
            Check::Secret(expected) => {
                let given = request.metadata().get("authorization").map(|v| v.as_bytes());
                match given {
                    Some(given) if same_secret(given, expected) => Ok(request),
                    _ => Err(Status::unauthenticated("logs and exec need the cluster secret")),
                }
            }
        }
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

struct Streams {
    runtime: RuntimeServiceClient<Channel>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// A relay's output, with the task feeding it: dropping the stream (the
/// caller went away) stops the task.
struct Relay<T> {
    output: tokio_stream::wrappers::ReceiverStream<Result<T, Status>>,
    _task: AbortOnDrop,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Stream for Relay<T> {
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        Pin::new(&mut self.output).poll_next(cx)
    }
}

fn relay<T: Send + 'static>(
    run: impl FnOnce(
        mpsc::Sender<Result<T, Status>>,
    ) -> Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(run(tx));
    Box::pin(Relay {
        output: tokio_stream::wrappers::ReceiverStream::new(rx),
        _task: AbortOnDrop(task),
    })
}

impl Streams {
    /// The pod's container: its latest instance, or with `previous` the one
    /// before it, as CRI lists them.
    async fn container(
        &self,
        namespace: &str,
        pod: &str,
        name: &str,
        previous: bool,
    ) -> Result<cri::Container, Status> {
        let filter = cri::ContainerFilter {
            label_selector: [
                (NAMESPACE.to_string(), namespace.to_string()),
                (NAME.to_string(), pod.to_string()),
                (CONTAINER.to_string(), name.to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let mut found = self
            .runtime
            .clone()
            .list_containers(cri::ListContainersRequest { filter: Some(filter) })
            .await?
            .into_inner()
            .containers;
        found.sort_by_key(|c| c.created_at);
        let wanted = match previous {
            true => found.len().checked_sub(2).and_then(|i| found.get(i)),
            false => found.last(),
        };
        wanted.cloned().ok_or_else(|| match previous {
            true => Status::not_found(format!(
                "previous terminated container {name:?} in pod {pod:?} not found"
            )),
            false => Status::failed_precondition(format!(
                "container {name:?} in pod {pod:?} is waiting to start"
            )),
        })
    }

    async fn status(&self, id: &str) -> Result<cri::ContainerStatus, Status> {
        self.runtime
            .clone()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            })
            .await?
            .into_inner()
            .status
            .ok_or_else(|| Status::not_found(format!("container {id} has no status")))
    }
}

#[tonic::async_trait]
impl KubeletStreams for Streams {
    type LogsStream = BoxStream<PodLogsChunk>;

    async fn logs(
        &self,
        request: Request<PodLogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let r = request.into_inner();
        let container = self.container(&r.namespace, &r.name, &r.container, r.previous).await?;
        let status = self.status(&container.id).await?;
        if status.log_path.is_empty() {
            return Err(Status::failed_precondition(format!(
                "container {:?} in pod {:?} has no log",
                r.container, r.name
            )));
        }
        let path = PathBuf::from(status.log_path);
        let options = LogOptions {
            // A previous instance has ended: there is nothing to follow.
            follow: r.follow && !r.previous,
            tail_lines: r.tail_lines,
            since_seconds: r.since_seconds,
            timestamps: r.timestamps,
            limit_bytes: r.limit_bytes,
        };
        let runtime = Streams { runtime: self.runtime.clone() };
        let id = container.id;
        Ok(Response::new(relay(move |tx| {
            Box::pin(async move {
                let send = |data: Vec<u8>| {
                    let tx = tx.clone();
                    async move { tx.send(Ok(PodLogsChunk { data })).await.is_ok() }
                };
                let running = || async {
                    runtime
                        .status(&id)
                        .await
                        .is_ok_and(|s| s.state == cri::ContainerState::ContainerRunning as i32)
                };
                if let Err(e) = logs::stream(&path, &options, send, running).await {
                    let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                }
            })
        })))
    }

    type ExecStream = BoxStream<PodExecOutput>;

    async fn exec(
        &self,
        request: Request<tonic::Streaming<PodExecInput>>,
    ) -> Result<Response<Self::ExecStream>, Status> {
        let mut input = request.into_inner();
        let start = first_start(&mut input, "an exec").await?;
        let url = self.prepare(&start, false).await?;
        let (ws, protocol) = connect(&url).await?;
        Ok(Response::new(relay(move |tx| Box::pin(exec_relay(ws, protocol, input, tx)))))
    }

    type AttachStream = BoxStream<PodExecOutput>;

    async fn attach(
        &self,
        request: Request<tonic::Streaming<PodExecInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut input = request.into_inner();
        let start = first_start(&mut input, "an attach").await?;
        if !start.command.is_empty() {
            return Err(Status::invalid_argument("an attach runs no command"));
        }
        let url = self.prepare(&start, true).await?;
        let (ws, protocol) = connect(&url).await?;
        // The runtime's last word is a status as an exec's is.
        Ok(Response::new(relay(move |tx| Box::pin(exec_relay(ws, protocol, input, tx)))))
    }
}

/// The start message `what` (an exec, an attach) must begin with.
async fn first_start(
    input: &mut tonic::Streaming<PodExecInput>,
    what: &str,
) -> Result<PodExecStart, Status> {
    match input.message().await? {
        Some(PodExecInput { input: Some(pod_exec_input::Input::Start(start)) }) => Ok(start),
        _ => Err(Status::invalid_argument(format!("{what} starts with its start message"))),
    }
}

impl Streams {
    /// Asks the runtime for an exec (or, with `attach`, an attach) session
    /// in the pod's running container.
    async fn prepare(&self, start: &PodExecStart, attach: bool) -> Result<String, Status> {
        let container =
            self.container(&start.namespace, &start.name, &start.container, false).await?;
        if container.state != cri::ContainerState::ContainerRunning as i32 {
            return Err(Status::failed_precondition(format!(
                "container {:?} in pod {:?} is not running",
                start.container, start.name
            )));
        }
        // A terminal has one output stream.
        let stderr = start.stderr && !start.tty;
        let mut runtime = self.runtime.clone();
        let url = match attach {
            false => {
                let request = cri::ExecRequest {
                    container_id: container.id,
                    cmd: start.command.clone(),
                    tty: start.tty,
                    stdin: start.stdin,
                    stdout: start.stdout,
                    stderr,
                };
                runtime.exec(request).await?.into_inner().url
            }
            true => {
                let request = cri::AttachRequest {
                    container_id: container.id,
                    stdin: start.stdin,
                    tty: start.tty,
                    stdout: start.stdout,
                    stderr,
                };
                runtime.attach(request).await?.into_inner().url
            }
        };
        Ok(url)
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Connects to a runtime's streaming URL, offering v5 then v4.
async fn connect(url: &str) -> Result<(Ws, &'static str), Status> {
    let failed = |what: &str| Status::unavailable(format!("runtime stream {url}: {what}"));
    let ws_url = match url.strip_prefix("http://") {
        Some(rest) => format!("ws://{rest}"),
        None => return Err(failed("only http:// streaming URLs are supported")),
    };
    let mut request = ws_url.as_str().into_client_request().map_err(|e| failed(&e.to_string()))?;
    let authority = request
        .uri()
        .authority()
        .map(|a| {
            (
                a.host().trim_matches(|c| c == '[' || c == ']').to_string(),
                a.port_u16().unwrap_or(80),
            )
        })
        .ok_or_else(|| failed("no host"))?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        http::HeaderValue::from_str(&rc::PROTOCOLS.join(", "))
            .map_err(|e| failed(&e.to_string()))?,
    );
    let tcp = tokio::net::TcpStream::connect((authority.0.as_str(), authority.1))
        .await
        .map_err(|e| failed(&e.to_string()))?;
    let (ws, response) =
        tokio_tungstenite::client_async(request, tcp).await.map_err(|e| failed(&e.to_string()))?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .and_then(|p| rc::PROTOCOLS.into_iter().find(|known| *known == p.trim()))
        .unwrap_or(rc::V4);
    Ok((ws, chosen))
}

/// Relays the caller's input to the runtime's stream and its output back,
/// ending with the exit code (or the error the runtime reports).
async fn exec_relay(
    ws: Ws,
    protocol: &'static str,
    mut input: tonic::Streaming<PodExecInput>,
    tx: mpsc::Sender<Result<PodExecOutput, Status>>,
) {
    let (mut sink, mut stream) = ws.split();
    let output = |o: pod_exec_output::Output| PodExecOutput { output: Some(o) };
    let mut input_open = true;
    loop {
        tokio::select! {
            message = input.message(), if input_open => {
                let frame = match message {
                    Ok(Some(PodExecInput { input: Some(i) })) => match i {
                        pod_exec_input::Input::Stdin(data) => Some(rc::frame(rc::STDIN, &data)),
                        pod_exec_input::Input::Resize(size) => {
                            Some(rc::frame(rc::RESIZE, &rc::resize(size.width, size.height)))
                        }
                        pod_exec_input::Input::CloseStdin(true) if protocol == rc::V5 => {
                            Some(vec![rc::CLOSE, rc::STDIN])
                        }
                        _ => None,
                    },
                    Ok(Some(_)) => None,
                    // The caller is done sending (or gone): stdin ends, the
                    // command goes on.
                    Ok(None) | Err(_) => {
                        input_open = false;
                        (protocol == rc::V5).then(|| vec![rc::CLOSE, rc::STDIN])
                    }
                };
                if let Some(frame) = frame {
                    if sink.send(Message::binary(frame)).await.is_err() {
                        input_open = false;
                    }
                }
            }
            message = stream.next() => {
                let data = match message {
                    Some(Ok(Message::Binary(data))) => data,
                    Some(Ok(Message::Close(_))) | None => {
                        let _ = tx.send(Err(Status::aborted("the runtime closed the exec stream without an exit status"))).await;
                        return;
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(Status::unavailable(format!("runtime exec stream: {e}")))).await;
                        return;
                    }
                    Some(Ok(_)) => continue,
                };
                let Some((&channel, body)) = data.split_first() else { continue };
                let sent = match channel {
                    rc::STDOUT => tx.send(Ok(output(pod_exec_output::Output::Stdout(body.to_vec())))).await,
                    rc::STDERR => tx.send(Ok(output(pod_exec_output::Output::Stderr(body.to_vec())))).await,
                    rc::ERROR => {
                        let last = match rc::parse_status(body) {
                            Ok(code) => Ok(output(pod_exec_output::Output::ExitCode(code))),
                            Err(message) => Err(Status::internal(message)),
                        };
                        let _ = tx.send(last).await;
                        let _ = sink.close().await;
                        return;
                    }
                    _ => Ok(()),
                };
                if sent.is_err() {
                    // The caller went away: closing the stream ends the command.
                    let _ = sink.close().await;
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::api_v1::kubelet_streams_client::KubeletStreamsClient;
    use berth_tls::{ClientTls, ClusterCa, Subject, Trust};

    /// A stream server over mutual TLS, in front of a runtime that is not
    /// there: a caller it lets in gets the runtime's failure, one it does
    /// not gets Unauthenticated.
    #[tokio::test]
    async fn over_tls_only_the_clusters_api_server_peers_get_in() {
        let ca = ClusterCa::create("streams").unwrap();
        let trust = Trust::from_pem(ca.cert_pem()).unwrap();
        let node = ca
            .issue(&Subject {
                common_name: "system:node:n1".into(),
                organizations: vec!["system:nodes".into()],
                hosts: vec!["127.0.0.1".into()],
                server: true,
                validity: None,
            })
            .unwrap();
        let tls = berth_tls::ServerTls::new(&node, &trust, berth_tls::Protocol::Grpc).unwrap();
        let server = StreamServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = format!("127.0.0.1:{}", server.port());
        let stop = CancellationToken::new();
        let dir = tempfile::tempdir().unwrap();
        let serving = tokio::spawn(server.serve(
            dir.path().join("no-runtime.sock"),
            Callers::Peers(tls),
            stop.clone(),
        ));

        let call = |tls: ClientTls| {
            let addr = addr.clone();
            async move {
                let channel = berth_tls::endpoint(&addr, Some(&tls)).unwrap().connect_lazy();
                let request = PodLogsRequest { name: "p".into(), ..Default::default() };
                KubeletStreamsClient::new(channel).logs(request).await.map(|_| ()).unwrap_err()
            }
        };
        let issued =
            |subject: Subject| ClientTls::new(trust.clone(), Some(ca.issue(&subject).unwrap()));
        let peer = issued(berth_tls::peer_subject(1, vec![]));
        assert_ne!(call(peer).await.code(), tonic::Code::Unauthenticated);
        let user = issued(Subject {
            common_name: "admin".into(),
            organizations: vec!["system:masters".into()],
            ..Default::default()
        });
        assert_eq!(call(user).await.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            call(ClientTls::new(trust.clone(), None)).await.code(),
            tonic::Code::Unauthenticated
        );
        let stranger = ClusterCa::create("other").unwrap();
        let stranger_peer = ClientTls::new(
            trust.clone(),
            Some(stranger.issue(&berth_tls::peer_subject(1, vec![])).unwrap()),
        );
        assert_ne!(call(stranger_peer).await.code(), tonic::Code::Ok);

        stop.cancel();
        serving.await.unwrap().unwrap();
    }
}
