//! The controller's small HTTP server: `/metrics` for Prometheus, `/healthz` for the liveness
//! probe and `/readyz` for the readiness probe. It reads the shared [`Metrics`] and the
//! [`Leadership`] channel; it never touches the API server itself.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::leader::Leadership;
use crate::metrics::Metrics;

/// Content type of `/metrics` (prometheus-client writes OpenMetrics text).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the handlers read.
#[derive(Clone)]
pub struct AppState {
    /// The reconcilers' metrics.
    pub metrics: Arc<Metrics>,
    /// Leadership as published by [`crate::leader`].
    pub leadership: watch::Receiver<Leadership>,
}

/// Process-level metrics that are read from the leadership channel at scrape time.
struct ProcessMetrics {
    registry: Registry,
    leader: Gauge,
}

impl ProcessMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("countersign_controller");
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica runs the controllers (holds the Lease, or election is off)",
            leader.clone(),
        );
        Self { registry, leader }
    }
}

#[derive(Clone)]
struct Shared {
    app: AppState,
    process: Arc<ProcessMetrics>,
}

/// The router: `GET /metrics`, `GET /healthz`, `GET /readyz`.
pub fn app(state: AppState) -> Router {
    let shared = Shared {
        app: state,
        process: Arc::new(ProcessMetrics::new()),
    };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let acting = shared.app.leadership.borrow().is_acting();
    shared.process.leader.set(i64::from(acting));
    let mut body = shared.app.metrics.encode();
    // Both registries end their exposition with `# EOF`; keep only the last one.
    if let Some(stripped) = body.strip_suffix("# EOF\n") {
        body.truncate(stripped.len());
    }
    if let Err(error) =
        prometheus_client::encoding::text::encode(&mut body, &shared.process.registry)
    {
        tracing::error!(%error, "cannot encode process metrics");
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response()
}

/// Alive as long as the process can answer at all.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready while the process does what it should: leading, or standing by with a working
/// election. Not ready before the first answer about the Lease, while it cannot be read or
/// renewed, and during shutdown.
async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    match shared.app.leadership.borrow().readiness() {
        Ok(why) => (StatusCode::OK, format!("ok: {why}\n")),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
