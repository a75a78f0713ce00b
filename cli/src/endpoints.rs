//! /healthz (and /livez), /leaderz and /metrics over HTTP for the
//! control-loop subcommands (scheduler, controller-manager): one place, so
//! each exposes the same.

use anyhow::{Context, Result};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use berth_client::FenceToken;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::net::SocketAddr;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Installs the Prometheus recorder and serves the endpoints on `addr`
/// until `stop`; /leaderz answers 200 while `leading` holds a token. Call
/// before the component records anything.
pub async fn serve(
    addr: SocketAddr,
    leading: watch::Receiver<Option<FenceToken>>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>> {
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).context("install the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listen on {addr} for /healthz and /metrics"))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/livez", get(|| async { "ok\n" }))
        .route("/leaderz", get(move || std::future::ready(leaderz(&leading))))
        .route("/metrics", get(move || std::future::ready(handle.render())));
    Ok(tokio::spawn(async move {
        let served =
            axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "health and metrics endpoint failed");
        }
    }))
}

fn leaderz(leading: &watch::Receiver<Option<FenceToken>>) -> (StatusCode, String) {
    match leading.borrow().as_ref() {
        Some(token) => (StatusCode::OK, format!("leading with {token}\n")),
        None => (StatusCode::SERVICE_UNAVAILABLE, "standing by\n".into()),
    }
}

/// Waits for SIGINT or SIGTERM, then cancels `stop`.
pub async fn stop_on_signal(stop: CancellationToken) -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = stop.cancelled() => {}
    }
    stop.cancel();
    Ok(())
}

/// The API server peers from a comma-separated list.
pub fn peers(list: &str) -> Result<Vec<String>> {
    let peers: Vec<String> =
        list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(String::from).collect();
    anyhow::ensure!(!peers.is_empty(), "--server needs at least one API server address");
    Ok(peers)
}

/// A replica name that differs between processes and hosts.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}-{}", std::process::id())
}
