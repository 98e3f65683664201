//! `POST /webhook`: verify, remember, parse, enqueue, answer.
//!
//! The order is the security contract: the body is read (capped at GitHub's 25 MB, 413 above),
//! the `X-GitHub-Event` and `X-GitHub-Delivery` headers are required (400), and the
//! `X-Hub-Signature-256` HMAC is checked against every configured secret (401 with a short
//! reason) before a byte of the body is parsed. A verified delivery is then answered:
//!
//! | what it is                                | status | what happens                       |
//! |-------------------------------------------|--------|------------------------------------|
//! | a delivery id seen recently               | 200    | nothing (a redelivery)             |
//! | `ping`                                    | 200    | logged and counted                 |
//! | an event or action Countersign ignores    | 202    | counted by event and action        |
//! | a body that does not parse                | 202    | logged with the delivery id        |
//! | a handled event                           | 202    | queued for the bot's workers       |
//! | a handled event while the queue stays full| 503    | forgotten, so a redelivery is taken|
//!
//! A payload that fails to parse is never a 5xx: GitHub would only redeliver the same bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;

use super::deliveries::Deliveries;
use super::event::{Delivery, DeliveryId};
use super::parse::{Parsed, parse};
use super::signature::{SIGNATURE_HEADER, SignatureError, Verifier};

/// Where GitHub posts deliveries.
pub const WEBHOOK_PATH: &str = "/webhook";

/// GitHub caps payloads at 25 MB; larger bodies are refused with 413 before verification.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// The event-name header.
pub const EVENT_HEADER: &str = "x-github-event";
/// The delivery-id header.
pub const DELIVERY_HEADER: &str = "x-github-delivery";
/// The legacy SHA-1 signature header (never accepted on its own).
pub const SHA1_SIGNATURE_HEADER: &str = "x-hub-signature";

/// Longest event name or delivery id accepted (GitHub's are far shorter).
const MAX_HEADER_CHARS: usize = 128;

/// What the endpoint did with one request; the `outcome` label of the deliveries counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IngressOutcome {
    /// A required header was missing or unusable (400).
    BadRequest,
    /// The signature was missing, malformed, sha1-only or wrong (401).
    Unauthorized,
    /// A redelivery of a recently seen id (200).
    Duplicate,
    /// A ping (200).
    Ping,
    /// An event or action Countersign does not act on (202).
    Unsupported,
    /// A verified body that does not parse (202).
    Unparseable,
    /// Queued for the workers (202).
    Queued,
    /// The queue stayed full (503).
    Overloaded,
}

impl IngressOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Duplicate => "duplicate",
            Self::Ping => "ping",
            Self::Unsupported => "unsupported",
            Self::Unparseable => "unparseable",
            Self::Queued => "queued",
            Self::Overloaded => "overloaded",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    event: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnsupportedLabels {
    event: String,
    action: String,
}

/// Metrics of the webhook endpoint.
///
/// The `event` label only ever holds a name from a verified delivery (GitHub's small set of
/// event names); unverified requests are counted under `event="unverified"`, so an attacker
/// cannot grow the label set.
#[derive(Debug, Clone)]
pub struct IngressMetrics {
    deliveries: Family<DeliveryLabels, Counter>,
    unsupported: Family<UnsupportedLabels, Counter>,
    latency: Histogram,
}

impl IngressMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            deliveries: Family::default(),
            unsupported: Family::default(),
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
        };
        registry.register(
            "webhook_deliveries",
            "Webhook requests by event and what the endpoint did with them",
            metrics.deliveries.clone(),
        );
        registry.register(
            "webhook_unsupported",
            "Verified deliveries of events or actions Countersign does not act on",
            metrics.unsupported.clone(),
        );
        registry.register(
            "webhook_request_seconds",
            "Time to verify, parse and enqueue one webhook request",
            metrics.latency.clone(),
        );
        metrics
    }

    /// How many requests for `event` ended as `outcome`.
    pub fn count(&self, event: &str, outcome: IngressOutcome) -> u64 {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                event: event.to_owned(),
                outcome: outcome.as_str(),
            })
            .get()
    }

    fn record(&self, event: &str, outcome: IngressOutcome) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                event: event.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc();
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
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ingress)
}

/// Label for requests whose event name cannot be trusted yet.
const UNVERIFIED: &str = "unverified";

async fn webhook(State(ingress): State<Arc<Ingress>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let (outcome, event, response) = accept(&ingress, &headers, &body).await;
    ingress.metrics.record(&event, outcome);
    ingress
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    response
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.len() <= MAX_HEADER_CHARS)
}

fn answer(status: StatusCode, text: impl Into<String>) -> Response {
    (status, text.into()).into_response()
}

async fn accept(
    ingress: &Ingress,
    headers: &HeaderMap,
    body: &[u8],
) -> (IngressOutcome, String, Response) {
    let unverified = || UNVERIFIED.to_owned();
    let Some(event) = header(headers, EVENT_HEADER) else {
        return (
            IngressOutcome::BadRequest,
            unverified(),
            answer(StatusCode::BAD_REQUEST, "missing X-GitHub-Event header"),
        );
    };
    let Some(id) = header(headers, DELIVERY_HEADER) else {
        return (
            IngressOutcome::BadRequest,
            unverified(),
            answer(StatusCode::BAD_REQUEST, "missing X-GitHub-Delivery header"),
        );
    };
    let signature = headers.get(SIGNATURE_HEADER).map(|v| v.as_bytes());
    let sha1 = headers.contains_key(SHA1_SIGNATURE_HEADER);
    if let Err(err) = ingress.verifier.verify(signature, sha1, body) {
        tracing::warn!(delivery = id, event, error = %err, "refused webhook delivery");
        let reason = match err {
            SignatureError::Missing => "missing X-Hub-Signature-256 header",
            SignatureError::Malformed => "malformed X-Hub-Signature-256 header",
            SignatureError::Sha1Only => "sha1 signatures are not accepted; use X-Hub-Signature-256",
            SignatureError::Mismatch => "signature does not match",
        };
        return (
            IngressOutcome::Unauthorized,
            unverified(),
            answer(StatusCode::UNAUTHORIZED, reason),
        );
    }
    let event_name = event.to_owned();
    if !ingress.deliveries.first_time(id, Instant::now()) {
        tracing::debug!(delivery = id, event, "redelivery ignored");
        return (
            IngressOutcome::Duplicate,
            event_name,
            answer(StatusCode::OK, "already received"),
        );
    }
    let parsed = match parse(event, body) {
        Ok(parsed) => parsed,
        Err(err) => {
            tracing::warn!(delivery = id, event, error = %err, "webhook payload does not parse");
            return (
                IngressOutcome::Unparseable,
                event_name,
                answer(StatusCode::ACCEPTED, "payload not understood; ignored"),
            );
        }
    };
    let event_body = match parsed {
        Parsed::Unsupported { event, action } => {
            ingress
                .metrics
                .unsupported
                .get_or_create(&UnsupportedLabels {
                    event: event.clone(),
                    action: action.clone().unwrap_or_default(),
                })
                .inc();
            tracing::debug!(delivery = id, event, action, "event not handled; ignored");
            return (
                IngressOutcome::Unsupported,
                event_name,
                answer(StatusCode::ACCEPTED, "event not handled; ignored"),
            );
        }
        Parsed::Event(event) => *event,
    };
    if let super::event::Event::Ping(ping) = &event_body {
        tracing::info!(delivery = id, hook = ping.hook_id, "webhook ping");
        return (
            IngressOutcome::Ping,
            event_name,
            answer(StatusCode::OK, "pong"),
        );
    }
    let delivery = Delivery {
        id: DeliveryId(id.to_owned()),
        event: event_body,
    };
    match ingress
        .queue
        .send_timeout(delivery, ingress.enqueue_timeout)
        .await
    {
        Ok(()) => (
            IngressOutcome::Queued,
            event_name,
            answer(StatusCode::ACCEPTED, "queued"),
        ),
        Err(SendTimeoutError::Timeout(_) | SendTimeoutError::Closed(_)) => {
            // Not taken: forget the id so GitHub's (or the user's) redelivery is accepted.
            ingress.deliveries.forget(id);
            tracing::warn!(delivery = id, event, "delivery queue full; answered 503");
            (
                IngressOutcome::Overloaded,
                event_name,
                answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy; redeliver this delivery later",
                ),
            )
        }
    }
}
