//! /livez, /readyz and /metrics, and the peer's HTTP server that serves
//! them beside the REST API.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use berth_raft_store::Store;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Installs the process-wide Prometheus recorder once and returns its handle.
pub(crate) fn install_metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests in one
            // process); then this handle just renders nothing of its own.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[derive(Clone)]
struct Peer {
    store: Store,
    metrics: PrometheusHandle,
}

/// /livez, /readyz and /metrics; the caller decides who may get them.
pub(crate) fn routes(store: Store, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Peer { store, metrics })
}

/// Serves `app` (the REST API and the routes above) on the peer's HTTP port.
pub(crate) async fn serve(listener: berth_tls::Acceptor, app: Router, stop: CancellationToken) {
    // Each request carries its connection's ConnectionInfo (the client
    // certificate's subject) for authentication, as gRPC requests do.
    let app = app.layer(axum::middleware::map_request(connection_info));
    let served = axum::serve(Listener(listener), app.into_make_service_with_connect_info::<From>())
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "health endpoint failed");
    }
}

/// Ready = a leader is known and a linearizable read completes here.
async fn readyz(State(peer): State<Peer>) -> (StatusCode, String) {
    if peer.store.leader().is_none() {
        return (StatusCode::SERVICE_UNAVAILABLE, "no leader\n".into());
    }
    match tokio::time::timeout(Duration::from_secs(2), peer.store.read_barrier()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n".into()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "read index timed out\n".into()),
    }
}

async fn render(State(peer): State<Peer>) -> String {
    metrics::gauge!("berth_store_watchers_current").set(peer.store.watchers() as f64);
    peer.metrics.render()
}

/// The peer's HTTP connections, TLS or plain, for axum.
struct Listener(berth_tls::Acceptor);

impl axum::serve::Listener for Listener {
    type Io = berth_tls::Connection;
    type Addr = berth_tls::ConnectionInfo;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let connection = self.0.accept().await;
        let info = connection.info().clone();
        (connection, info)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(berth_tls::ConnectionInfo { remote: Some(self.0.local_addr()?), ..Default::default() })
    }
}

/// Who a connection is from, as axum hands it to each request.
#[derive(Clone)]
struct From(berth_tls::ConnectionInfo);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Listener>> for From {
    fn connect_info(stream: axum::serve::IncomingStream<'_, Listener>) -> From {
        From(stream.remote_addr().clone())
    }
}

/// Puts the connection's ConnectionInfo into the request's extensions,
/// where the filters look for it.
async fn connection_info(mut request: axum::extract::Request) -> axum::extract::Request {
    let info =
        request.extensions().get::<axum::extract::ConnectInfo<From>>().map(|c| c.0 .0.clone());
    if let Some(info) = info {
        request.extensions_mut().insert(info);
    }
    request
}
