//! The pods' log and exec subresources over REST. `log` answers plain
//! text, streamed while it follows; `exec` speaks Kubernetes' remote
//! command protocol over a WebSocket (`v5.channel.k8s.io`, else
//! `v4.channel.k8s.io`), which kubectl uses by default. Both relay to the
//! pod's node through the same operations as the gRPC API.

use super::{error, parse_query};
use crate::api::Api;
use crate::error::ApiError;
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use berth_proto::api_v1::{
    pod_exec_input, pod_exec_output, PodExecInput, PodExecStart, PodLogsRequest, TerminalSize,
};
use berth_proto::remotecommand as rc;
use futures::StreamExt;
use std::collections::HashMap;

/// The routes of the streamed subresources, ahead of the generic ones.
pub(super) fn routes() -> Router<Api> {
    Router::new()
        .route("/api/v1/namespaces/{namespace}/pods/{name}/log", get(log))
        .route("/api/v1/namespaces/{namespace}/pods/{name}/exec", any(exec))
}

fn head(headers: &HeaderMap) -> tonic::Request<()> {
    let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
    tonic::Request::from_parts(metadata, Default::default(), ())
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
    match api.logs(&head(&headers), request).await {
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
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let raw = uri.query().unwrap_or("");
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
    // What the API can check is answered with its Status before any
    // upgrade; what the node says comes on the error channel, as in
    // Kubernetes.
    let target = match api.exec_target(&head(&headers), start).await {
        Ok(target) => target,
        Err(e) => return error(e),
    };
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade.protocols(rc::PROTOCOLS),
        Err(_) => {
            return error(ApiError::BadRequest(
                "exec streams are served over WebSocket (v5.channel.k8s.io or v4.channel.k8s.io); SPDY is not supported".into(),
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
