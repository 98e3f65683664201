//! `POST /webhook`: verify, remember, parse, enqueue, answer.
//!
//! CONTRACT STUB (skeleton): the ingress helper replaces the body of this module.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;

use super::deliveries::Deliveries;
use super::event::Delivery;
use super::signature::Verifier;

/// Where GitHub posts deliveries.
pub const WEBHOOK_PATH: &str = "/webhook";

/// GitHub caps payloads at 25 MB; larger bodies are refused with 413 before verification.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// Metrics of the webhook endpoint.
#[derive(Debug, Clone, Default)]
pub struct IngressMetrics {}

impl IngressMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let _ = registry;
        todo!("implemented by the ingress work")
    }
}

/// Everything the webhook endpoint needs.
pub struct Ingress {
    /// Checks `X-Hub-Signature-256`.
    pub verifier: Verifier,
    /// Recently seen delivery ids.
    pub deliveries: Deliveries,
    /// Where parsed deliveries go; bounded.
    pub queue: mpsc::Sender<Delivery>,
    /// Counters and histograms.
    pub metrics: IngressMetrics,
    /// How long a request waits for room on a full queue before answering 503.
    pub enqueue_timeout: Duration,
}

/// The router serving [`WEBHOOK_PATH`].
pub fn router(ingress: Arc<Ingress>) -> Router {
    let _ = ingress;
    todo!("implemented by the ingress work")
}
