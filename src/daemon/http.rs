//! The daemon's HTTP server (axum): `/healthz` (alive), `/readyz` (database reachable and
//! migrations applied), `/metrics` (Prometheus text format), and the read API with its page
//! (`crate::api`). `costledger serve` runs the same server without the schedules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::api::ApiState;
use crate::config::ServerLimits;
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
    metrics::describe_gauge!(
        "costledger_budget_ratio",
        "A budget's actual (kind=actual) or period-end forecast (kind=forecast) cost over its amount"
    );
    metrics::describe_counter!("costledger_http_requests_total", "HTTP requests, per route and status");
    metrics::describe_histogram!("costledger_http_request_duration_seconds", "HTTP request latency, per route");
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

/// `/healthz`, `/readyz` and `/metrics` (always open), then the API and the page (`crate::api`).
pub fn router(api: ApiState, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AppState { store: api.store.clone(), metrics })
        .merge(crate::api::router(api))
}

/// Bind and serve until `stop` is cancelled.
pub async fn serve(
    bind: SocketAddr,
    api: ApiState,
    metrics: PrometheusHandle,
    stop: CancellationToken,
    limits: ServerLimits,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (server.bind): is another process using the port?"))?;
    let app = router(api, metrics);
    Ok(tokio::spawn(accept_loop(listener, app, stop, limits)))
}

async fn accept_loop(listener: tokio::net::TcpListener, app: Router, stop: CancellationToken, limits: ServerLimits) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let conns = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (sock, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (EMFILE) or a reset before accept: wait, then go on.
                tracing::warn!(error = %e, "HTTP accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("costledger_http_connections_refused_total").increment(1);
            tracing::debug!(%peer, "HTTP connection refused: at server.max_connections");
            drop(sock);
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        conns.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                tower::ServiceExt::oneshot(app.clone(), req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(hyper_util::rt::TokioIo::new(sock), service);
            tokio::pin!(conn);
            let deadline = tokio::time::sleep(limits.connection_timeout);
            tokio::pin!(deadline);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                }
                _ = &mut deadline => {
                    tracing::debug!(%peer, "HTTP connection closed: open longer than server.connection_timeout_secs");
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn.as_mut()).await;
                }
            }
        });
    }
    conns.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), conns.wait()).await;
}
