//! The pods' log, exec and attach subresources over REST. `log` answers
//! plain text, streamed while it follows; `exec` and `attach` speak
//! Kubernetes' remote command protocol over a WebSocket
//! (`v5.channel.k8s.io`, else `v4.channel.k8s.io`), which kubectl uses by
//! default, or over SPDY/3.1 (spdy.rs), which older kubectl uses. All relay
//! to the pod's node through the same operations as the gRPC API.

use super::{error, parse_query, spdy};
use crate::api::{Api, Session};
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use berth_proto::api_v1::{
    pod_exec_input, pod_exec_output, PodExecInput, PodExecOutput, PodExecStart, PodLogsRequest,
    TerminalSize,
};
use berth_proto::remotecommand as rc;
use futures::StreamExt;
use std::collections::HashMap;
use std::future::Future;

/// The routes of the streamed subresources, ahead of the generic ones.
pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/api/v1/namespaces/{namespace}/pods/{name}/log", get(log))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(exec))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/attach", any(attach))
}

/// The connection a request came on, where the peer's server put it.
type On = Option<axum::Extension<berth_tls::ConnectionInfo>>;

fn head(headers: &HeaderMap, on: On) -> tonic::Request<()> {
    super::head(headers, on.map(|axum::Extension(c)| c))
}

fn flag(query: &HashMap<String, String>, name: &str) -> bool {
    matches!(query.get(name).map(String::as_str), Some("true" | "1"))
}

fn number(query: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::BadRequest(format!("{name} must be an integer, not {v:?}"))),
    }
}

async fn log(
    State(api): State<Api>,
    Path((namespace, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    on: On,
) -> Response {
    let query = parse_query(uri.query().unwrap_or(""));
    let request = (|| {
        let request = PodLogsRequest {
            namespace: namespace.clone(),
            name: name.clone(),
            container: query.get("container").cloned().unwrap_or_default(),
            follow: flag(&query, "follow"),
            tail_lines: number(&query, "tailLines")?,
            previous: flag(&query, "previous"),
            since_seconds: number(&query, "sinceSeconds")?,
            timestamps: flag(&query, "timestamps"),
            limit_bytes: number(&query, "limitBytes")?,
        };
        let mut request = request;
        if let Some(since) = query.get("sinceTime").filter(|t| !t.is_empty()) {
            if request.since_seconds.is_some() {
                return Err(ApiError::BadRequest(
                    "at most one of sinceTime or sinceSeconds may be given".into(),
                ));
            }
            let at = berth_proto::Time::parse(since)
                .map_err(|e| ApiError::BadRequest(format!("sinceTime {since:?}: {e}")))?;
            // As seconds back from now, rounded up so no record is missed.
            let back = berth_proto::Time::now().unix_seconds() - at.unix_seconds() + 1;
            request.since_seconds = Some(back.max(1));
        }
        if request.tail_lines.is_some_and(|n| n < 0) || request.limit_bytes.is_some_and(|n| n < 1) {
            return Err(ApiError::BadRequest(
                "tailLines must be 0 or more and limitBytes 1 or more".into(),
            ));
        }
        Ok(request)
    })();
    let request = match request {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    match api.logs(&head(&headers, on), request).await {
        Ok(chunks) => {
            // A failure mid-stream can only cut the body short.
            let body = chunks.map(|c| c.map(|c| c.data).map_err(std::io::Error::other));
            (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], Body::from_stream(body))
                .into_response()
        }
        Err(e) => error(e),
    }
}

/// The command of an exec request: every `command` parameter, in order.
fn commands(query: &str) -> Vec<String> {
    query
        .split('&')
        .filter(|pair| pair.starts_with("command="))
        .filter_map(|pair| parse_query(pair).remove("command"))
        .collect()
}

async fn exec(
    State(api): State<Api>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    session(api, Session::Exec, namespace, name, request).await
}

async fn attach(
    State(api): State<Api>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    session(api, Session::Attach, namespace, name, request).await
}

/// An exec or attach: checked, then served on the upgraded connection.
async fn session(
    api: Api,
    session: Session,
    namespace: String,
    name: String,
    request: Request,
) -> Response {
    let (mut parts, _body) = request.into_parts();
    let raw = parts.uri.query().unwrap_or("");
    let query = parse_query(raw);
    let start = PodExecStart {
        namespace,
        name,
        container: query.get("container").cloned().unwrap_or_default(),
        command: commands(raw),
        stdin: flag(&query, "stdin"),
        stdout: flag(&query, "stdout"),
        stderr: flag(&query, "stderr"),
        tty: flag(&query, "tty"),
    };
    let wanted = spdy::Wanted {
        stdin: start.stdin,
        stdout: start.stdout,
        stderr: start.stderr,
        tty: start.tty,
    };
    // What the API can check is answered with its Status before any
    // upgrade; what the node says comes on the error channel, as in
    // Kubernetes.
    let on = parts.extensions.get::<berth_tls::ConnectionInfo>().cloned().map(axum::Extension);
    let target = match api.exec_target(&head(&parts.headers, on), session, start).await {
        Ok(target) => target,
        Err(e) => return error(e),
    };
    if spdy::is_upgrade(&parts.headers) {
        let stop = api.stopping();
        let start =
            move |input| async move { api.exec_on(target, input).await.map_err(|e| e.to_string()) };
        return spdy_upgrade(&mut parts, wanted, stop, start);
    }
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &api).await {
        Ok(upgrade) => upgrade.protocols(rc::PROTOCOLS),
        Err(_) => {
            return error(ApiError::BadRequest(
                "exec and attach streams are served over WebSocket (v5.channel.k8s.io or v4.channel.k8s.io) or SPDY/3.1".into(),
            ))
        }
    };
    let v5 =
        match upgrade.selected_protocol() {
            Some(p) => p.as_bytes() == rc::V5.as_bytes(),
            None => return error(ApiError::BadRequest(
                "the WebSocket offers no supported protocol (v5.channel.k8s.io, v4.channel.k8s.io)"
                    .into(),
            )),
        };
    upgrade.on_upgrade(move |mut socket| async move {
        let (input_tx, input_rx) = tokio::sync::mpsc::channel::<PodExecInput>(16);
        let input = tokio_stream::wrappers::ReceiverStream::new(input_rx);
        match api.exec_on(target, input).await {
            Ok(output) => relay(socket, v5, input_tx, output).await,
            Err(e) => {
                let frame = rc::frame(rc::ERROR, &rc::failure(&e.to_string()));
                let _ = socket.send(Message::Binary(frame.into())).await;
                let _ = socket.send(normal_close()).await;
            }
        }
    })
}

/// Answers a SPDY/3.1 upgrade and serves the session on the upgraded
/// connection; `start` begins it on the pod's node. The session's task
/// ends with the command, with the client's connection, or with `stop`
/// (the server's).
fn spdy_upgrade<F, Fut>(
    parts: &mut Parts,
    wanted: spdy::Wanted,
    stop: tokio_util::sync::CancellationToken,
    start: F,
) -> Response
where
    F: FnOnce(tokio_stream::wrappers::ReceiverStream<PodExecInput>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<tonic::Streaming<PodExecOutput>, String>> + Send,
{
    let Some(protocol) = spdy::choose_protocol(&parts.headers) else {
        return error(ApiError::BadRequest(format!(
            "SPDY streams need {} v5.channel.k8s.io or v4.channel.k8s.io",
            spdy::PROTOCOL_HEADER
        )));
    };
    let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
        return error(ApiError::BadRequest("this connection cannot be upgraded".into()));
    };
    tokio::spawn(stop.run_until_cancelled_owned(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                spdy::serve(hyper_util::rt::TokioIo::new(upgraded), wanted, start).await
            }
            Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
        }
    }));
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(spdy::UPGRADE));
    headers.insert(spdy::PROTOCOL_HEADER, HeaderValue::from_static(protocol));
    response
}

/// The close that ends a session well: clients take any other as an error.
fn normal_close() -> Message {
    Message::Close(Some(CloseFrame { code: close_code::NORMAL, reason: "".into() }))
}

/// Relays one exec between the client's WebSocket and the node's stream
/// until the command ends or the client goes away.
async fn relay(
    mut socket: WebSocket,
    v5: bool,
    input: tokio::sync::mpsc::Sender<PodExecInput>,
    mut output: tonic::Streaming<berth_proto::api_v1::PodExecOutput>,
) {
    let mut input = Some(input);
    loop {
        tokio::select! {
            message = socket.recv() => {
                let send = |i: pod_exec_input::Input| PodExecInput { input: Some(i) };
                let forwarded = match message {
                    Some(Ok(Message::Binary(data))) => match data.split_first() {
                        Some((&rc::STDIN, body)) => Some(send(pod_exec_input::Input::Stdin(body.to_vec()))),
                        Some((&rc::RESIZE, body)) => rc::parse_resize(body).map(|(width, height)| {
                            send(pod_exec_input::Input::Resize(TerminalSize { width, height }))
                        }),
                        Some((&rc::CLOSE, [rc::STDIN])) if v5 => {
                            Some(send(pod_exec_input::Input::CloseStdin(true)))
                        }
                        _ => None,
                    },
                    // The client is gone: dropping the node's stream
                    // ends the command there.
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => None,
                };
                if let (Some(message), Some(tx)) = (forwarded, &input) {
                    if tx.send(message).await.is_err() {
                        input = None;
                    }
                }
            }
            message = output.message() => {
                let frame = match message {
                    Ok(Some(o)) => match o.output {
                        Some(pod_exec_output::Output::Stdout(data)) => rc::frame(rc::STDOUT, &data),
                        Some(pod_exec_output::Output::Stderr(data)) => rc::frame(rc::STDERR, &data),
                        Some(pod_exec_output::Output::ExitCode(code)) => {
                            rc::frame(rc::ERROR, &rc::exit_status(code))
                        }
                        None => continue,
                    },
                    Ok(None) => break,
                    Err(status) => rc::frame(rc::ERROR, &rc::failure(status.message())),
                };
                let last = frame.first() == Some(&rc::ERROR);
                if socket.send(Message::Binary(frame.into())).await.is_err() || last {
                    break;
                }
            }
        }
    }
    let _ = socket.send(normal_close()).await;
}
