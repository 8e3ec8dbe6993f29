//! The daemon's HTTP server (axum): `/healthz` (alive), `/readyz` (database reachable and
//! migrations applied), `/metrics` (Prometheus text format).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::ledger::LedgerStore;

/// Install the Prometheus recorder (process-wide) and describe the series.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("costledger_run_duration_seconds".into()),
            &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0],
        )
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    metrics::describe_counter!("costledger_runs_total", "Job runs by job and status (ok, failed, skipped, cancelled)");
    metrics::describe_counter!("costledger_rows_ingested_total", "Charge lines loaded, per source");
    metrics::describe_counter!("costledger_rows_quarantined_total", "Rows quarantined, per source");
    metrics::describe_counter!("costledger_api_calls_total", "Provider API calls, per source (some cost money)");
    metrics::describe_histogram!("costledger_run_duration_seconds", "Run duration, per job");
    metrics::describe_gauge!(
        "costledger_source_last_success_timestamp_seconds",
        "Unix time of the last successful run, per source"
    );
    metrics::describe_gauge!("costledger_source_last_run_ok", "1 when the last run of the source succeeded, else 0");
    metrics::describe_gauge!(
        "costledger_unallocated_amount",
        "Unallocated spend after the last reconcile, per currency (rounded to 2 places)"
    );
    metrics::describe_gauge!("costledger_findings", "Findings of the last reconcile");
    metrics::gauge!("costledger_up").set(1.0);
    Ok(handle)
}

#[derive(Clone)]
struct AppState {
    store: Arc<dyn LedgerStore>,
    metrics: PrometheusHandle,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match tokio::time::timeout(std::time::Duration::from_secs(5), s.store.ready()).await {
        Ok(Ok(true)) => (StatusCode::OK, "ready\n".to_string()),
        Ok(Ok(false)) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: migrations not applied\n".to_string()),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}\n")),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: the database did not answer within 5 s\n".to_string()),
    }
}

async fn metrics_text(State(s): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render())
}

pub fn router(store: Arc<dyn LedgerStore>, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { store, metrics })
}

/// Bind and serve until `stop` is cancelled.
pub async fn serve(
    bind: SocketAddr,
    store: Arc<dyn LedgerStore>,
    metrics: PrometheusHandle,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (server.bind): is another process using the port?"))?;
    let app = router(store, metrics);
    Ok(tokio::spawn(async move {
        let r = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        if let Err(e) = r {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }))
}
