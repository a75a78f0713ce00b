//! /livez, /readyz and /metrics over HTTP, beside the REST API.

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

pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    store: Store,
    metrics: PrometheusHandle,
    api: Router,
    stop: CancellationToken,
) {
    let app = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render))
        .with_state(Peer { store, metrics })
        .merge(api);
    let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
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
