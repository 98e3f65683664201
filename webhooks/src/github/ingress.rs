//! `POST /webhook`: verify, remember, parse, enqueue, answer.
//!
//! The order is the security contract. Before a byte of the body is read: an announced
//! `Content-Length` over GitHub's 25 MB cap is refused (413), the `X-GitHub-Event` and
//! `X-GitHub-Delivery` headers are required (400), and a missing or malformed
//! `X-Hub-Signature-256` is refused (401). The body is then read while unverified: it counts
//! against one budget shared by every request ([`IngressLimits::unverified_body_budget`]), so
//! unsigned bodies cannot hold more memory than that however many arrive (503 with
//! `Retry-After` when it is spent), and it must arrive within the listener's body timeout
//! (408). At most [`IngressLimits::in_flight`] requests are past this point at once: the
//! others wait for their turn with their bodies unread, and after [`TURN_WAIT`] get 503 with
//! `Retry-After`. The HMAC is checked against every configured secret (401 with a short reason)
//! before a byte of the body is parsed. A verified delivery is then answered:
//!
//! | what it is                                   | status | what happens                        |
//! |----------------------------------------------|--------|-------------------------------------|
//! | a delivery id seen recently                  | 200    | nothing (a redelivery)              |
//! | `ping`                                       | 200    | logged and counted                  |
//! | an event or action Countersign ignores       | 202    | counted by event and action         |
//! | a body that does not parse                   | 202    | logged with the delivery id         |
//! | a handled event                              | 202    | queued for the bot's workers        |
//! | its issue or pull request holds its share    | 503    | forgotten, so a redelivery is taken |
//! | the whole backlog stays full                 | 503    | forgotten, so a redelivery is taken |
//!
//! A payload that fails to parse is never a 5xx: it could never succeed. Every refusal is
//! counted in `webhook_deliveries` by outcome.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header as http_header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};

use super::deliveries::{Backlog, Deliveries, Full, Queued, Subject};
use super::event::{Delivery, DeliveryId};
use super::parse::{Parsed, parse};
use super::signature::{SIGNATURE_HEADER, SignatureError, Verifier};

/// Where GitHub posts deliveries.
pub const WEBHOOK_PATH: &str = "/webhook";

/// GitHub caps payloads at 25 MB; larger bodies are refused with 413 before verification
/// (before reading them at all when their `Content-Length` says so).
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

/// Default of [`IngressLimits::unverified_body_budget`] (`--unverified-body-budget-mib 64`).
pub const DEFAULT_UNVERIFIED_BODY_BUDGET: usize = 64 * 1024 * 1024;

/// Default of [`IngressLimits::enqueue_timeout`]: a full backlog often frees a place within
/// this, while GitHub's 10-second delivery timeout is still far.
pub const DEFAULT_ENQUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// Default of [`IngressLimits::in_flight`] (`--max-in-flight 256`).
pub const DEFAULT_IN_FLIGHT: usize = 256;

/// Longest a request waits for its turn among [`IngressLimits::in_flight`] before it is
/// answered 503, its body unread: with the enqueue wait it stays within GitHub's 10-second
/// delivery timeout.
pub const TURN_WAIT: Duration = Duration::from_secs(5);

/// `Retry-After` of a 503 because unverified bodies hold the whole budget: they are read or
/// timed out within seconds.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(5);

/// `Retry-After` of a 503 because the backlog is full: handling it takes longer.
pub const OVERLOADED_RETRY_AFTER: Duration = Duration::from_secs(60);

/// First buffer for a body of unknown length; it doubles from there, each growth counted
/// against the unverified-body budget before it is allocated.
const FIRST_BODY_BUFFER: usize = 16 * 1024;

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
    /// A required header was missing or unusable, or the body broke off (400).
    BadRequest,
    /// The signature was missing, malformed, sha1-only or wrong (401).
    Unauthorized,
    /// The body is over GitHub's 25 MB cap, announced or counted (413).
    TooLarge,
    /// The body did not arrive within the listener's body timeout (408).
    BodyTimeout,
    /// Unverified bodies held the whole budget (503, `Retry-After`).
    Busy,
    /// The most requests in flight ([`IngressLimits::in_flight`]) stayed busy for
    /// [`TURN_WAIT`]; the body was not read (503, `Retry-After`).
    Saturated,
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
    /// The delivery's issue or pull request held its whole share of the backlog (503).
    SubjectOverloaded,
    /// The whole backlog stayed full (503).
    Overloaded,
}

impl IngressOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::TooLarge => "too_large",
            Self::BodyTimeout => "body_timeout",
            Self::Busy => "busy",
            Self::Saturated => "saturated",
            Self::Duplicate => "duplicate",
            Self::Ping => "ping",
            Self::Unsupported => "unsupported",
            Self::Unparseable => "unparseable",
            Self::Queued => "queued",
            Self::SubjectOverloaded => "subject_overloaded",
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
    backlog: Gauge,
    unverified_bytes: Gauge,
}

impl IngressMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            deliveries: Family::default(),
            unsupported: Family::default(),
            latency: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            backlog: Gauge::default(),
            unverified_bytes: Gauge::default(),
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
        registry.register(
            "deliveries_queued",
            "Deliveries accepted and not yet handled (waiting for their turn or being handled)",
            metrics.backlog.clone(),
        );
        registry.register(
            "webhook_unverified_body_bytes",
            "Bytes of webhook request bodies held before their signature is checked",
            metrics.unverified_bytes.clone(),
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

/// The endpoint's limits.
#[derive(Clone, Debug)]
pub struct IngressLimits {
    /// Deliveries accepted and not yet handled, in all (`--queue`); a verified delivery that
    /// finds it full waits up to `enqueue_timeout`, then gets 503.
    pub backlog: usize,
    /// Of those, deliveries about one issue or pull request (`--queue-per-issue`), so one
    /// busy subject can never fill the backlog for the others.
    pub backlog_per_subject: usize,
    /// Bytes of request bodies held before their signature is checked, over all requests
    /// together (`--unverified-body-budget-mib`). At least [`MAX_BODY_BYTES`] to accept every
    /// delivery GitHub can send.
    pub unverified_body_budget: usize,
    /// How long a verified delivery waits for room in a full backlog before 503.
    pub enqueue_timeout: Duration,
    /// Requests read, verified, parsed and queued at once (`--max-in-flight`). The others
    /// wait their turn, their bodies unread, up to [`TURN_WAIT`]; then 503. A flood of
    /// connections so costs neither memory nor CPU beyond this many requests, and leaves the
    /// workers their share of the CPU.
    pub in_flight: usize,
}

impl Default for IngressLimits {
    fn default() -> Self {
        Self {
            backlog: 1024,
            backlog_per_subject: 64,
            unverified_body_budget: DEFAULT_UNVERIFIED_BODY_BUDGET,
            enqueue_timeout: DEFAULT_ENQUEUE_TIMEOUT,
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }
}

/// Everything the webhook endpoint needs.
pub struct Ingress {
    /// Checks `X-Hub-Signature-256`.
    pub verifier: Verifier,
    /// Recently seen delivery ids.
    pub deliveries: Deliveries,
    /// Counters and histograms.
    pub metrics: IngressMetrics,
    backlog: Arc<Backlog>,
    queue: mpsc::Sender<Queued>,
    budget: BodyBudget,
    enqueue_timeout: Duration,
    in_flight: Semaphore,
}

impl Ingress {
    /// The endpoint, and the receiving end of its queue: every delivery on it holds a place
    /// in the backlog until the receiver drops it (handled).
    pub fn new(
        verifier: Verifier,
        deliveries: Deliveries,
        metrics: IngressMetrics,
        limits: IngressLimits,
    ) -> (Self, mpsc::Receiver<Queued>) {
        let backlog = Backlog::new(
            limits.backlog,
            limits.backlog_per_subject,
            metrics.backlog.clone(),
        );
        // Every delivery sent holds a place in the backlog, so this channel is never full.
        let (queue, receiver) = mpsc::channel(backlog.capacity());
        let budget = BodyBudget::new(
            limits.unverified_body_budget,
            metrics.unverified_bytes.clone(),
        );
        let ingress = Self {
            verifier,
            deliveries,
            metrics,
            backlog,
            queue,
            budget,
            enqueue_timeout: limits.enqueue_timeout,
            in_flight: Semaphore::new(limits.in_flight.clamp(1, Semaphore::MAX_PERMITS)),
        };
        (ingress, receiver)
    }

    /// Deliveries accepted and not yet handled.
    pub fn backlog(&self) -> &Backlog {
        &self.backlog
    }

    /// This request's turn among the requests in flight, waiting up to [`TURN_WAIT`].
    async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(TURN_WAIT, self.in_flight.acquire())
            .await
            .ok()?
            .ok()
    }

    /// Bytes of unverified request bodies held right now.
    pub fn unverified_bytes(&self) -> usize {
        self.budget.total - self.budget.bytes.available_permits()
    }
}

/// The memory all unverified bodies may hold together, in bytes.
struct BodyBudget {
    bytes: Semaphore,
    total: usize,
    gauge: Gauge,
}

impl BodyBudget {
    fn new(total: usize, gauge: Gauge) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            bytes: Semaphore::new(total),
            total,
            gauge,
        }
    }
}

/// The part of the budget one request holds; given back when dropped.
struct Held<'b> {
    budget: &'b BodyBudget,
    permit: Option<SemaphorePermit<'b>>,
    bytes: usize,
}

impl<'b> Held<'b> {
    fn none(budget: &'b BodyBudget) -> Self {
        Self {
            budget,
            permit: None,
            bytes: 0,
        }
    }

    /// Takes `more` bytes of the budget now, or reports that it is spent.
    fn grow(&mut self, more: usize) -> bool {
        let Ok(n) = u32::try_from(more) else {
            return false;
        };
        let Ok(permit) = self.budget.bytes.try_acquire_many(n) else {
            return false;
        };
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        self.bytes += more;
        self.budget.gauge.inc_by(gauge_value(more));
        true
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.gauge.dec_by(gauge_value(self.bytes));
    }
}

fn gauge_value(bytes: usize) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Why an unverified body was not read whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unread {
    /// Over [`MAX_BODY_BYTES`].
    TooLarge,
    /// The unverified-body budget is spent.
    Busy,
    /// The listener's body timeout ran out.
    TimedOut,
    /// The client broke off or sent a malformed body.
    Broken,
}

/// Reads `body` whole, holding budget for every byte of buffer before it is allocated.
async fn read_unverified(
    budget: &BodyBudget,
    mut body: Body,
) -> Result<(Vec<u8>, Held<'_>), Unread> {
    let hint = body.size_hint();
    if hint.lower() > MAX_BODY_BYTES as u64 {
        return Err(Unread::TooLarge);
    }
    // With a known length the buffer never grows past it.
    let limit = hint
        .upper()
        .and_then(|upper| usize::try_from(upper).ok())
        .map_or(MAX_BODY_BYTES, |upper| upper.min(MAX_BODY_BYTES));
    let mut held = Held::none(budget);
    let mut buffer = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            if timed_out(&error) {
                Unread::TimedOut
            } else {
                Unread::Broken
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers carry nothing the signature covers
        };
        let needed = buffer.len() + data.len();
        if needed > MAX_BODY_BYTES {
            return Err(Unread::TooLarge);
        }
        if needed > held.bytes {
            let doubled = held.bytes.saturating_mul(2).max(FIRST_BODY_BUFFER);
            let target = needed.max(doubled.min(limit));
            if !held.grow(target - held.bytes) {
                return Err(Unread::Busy);
            }
            buffer.reserve_exact(target - buffer.len());
        }
        buffer.extend_from_slice(&data);
    }
    Ok((buffer, held))
}

/// Whether a body error is the listener's body timeout (an `io::ErrorKind::TimedOut`
/// somewhere in its chain).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = error.source();
    }
    false
}

/// The router serving [`WEBHOOK_PATH`].
pub fn router(ingress: Arc<Ingress>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .with_state(ingress)
}

/// Label for requests whose event name cannot be trusted yet.
const UNVERIFIED: &str = "unverified";

async fn webhook(State(ingress): State<Arc<Ingress>>, request: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let (outcome, event, response) = accept(&ingress, &parts.headers, body).await;
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

/// A 503 asking the sender to come back after `after`.
fn retry_later(after: Duration, text: &'static str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(http_header::RETRY_AFTER, after.as_secs().to_string())],
        text,
    )
        .into_response()
}

/// The `Content-Length` a request announces, when it announces one.
fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(http_header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

type Accepted = (IngressOutcome, String, Response);

fn refused_signature(id: &str, event: &str, err: SignatureError) -> Accepted {
    tracing::warn!(delivery = id, event, error = %err, "refused webhook delivery");
    let reason = match err {
        SignatureError::Missing => "missing X-Hub-Signature-256 header",
        SignatureError::Malformed => "malformed X-Hub-Signature-256 header",
        SignatureError::Sha1Only => "sha1 signatures are not accepted; use X-Hub-Signature-256",
        SignatureError::Mismatch => "signature does not match",
    };
    (
        IngressOutcome::Unauthorized,
        UNVERIFIED.to_owned(),
        answer(StatusCode::UNAUTHORIZED, reason),
    )
}

fn refused_body(id: &str, event: &str, unread: Unread) -> Accepted {
    tracing::warn!(delivery = id, event, reason = ?unread, "webhook body not read");
    let (outcome, response) = match unread {
        Unread::TooLarge => (
            IngressOutcome::TooLarge,
            answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload over GitHub's 25 MB cap",
            ),
        ),
        Unread::Busy => (
            IngressOutcome::Busy,
            retry_later(BUSY_RETRY_AFTER, "busy reading other requests; retry later"),
        ),
        Unread::TimedOut => (
            IngressOutcome::BodyTimeout,
            answer(StatusCode::REQUEST_TIMEOUT, "body not received in time"),
        ),
        Unread::Broken => (
            IngressOutcome::BadRequest,
            answer(StatusCode::BAD_REQUEST, "body not received whole"),
        ),
    };
    (outcome, UNVERIFIED.to_owned(), response)
}

async fn accept(ingress: &Ingress, headers: &HeaderMap, body: Body) -> Accepted {
    let unverified = || UNVERIFIED.to_owned();
    if announced_length(headers).is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return refused_body("-", "-", Unread::TooLarge);
    }
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
    // A missing or malformed header is refused before the body is read: the verifier checks
    // the header before it looks at the body, so an empty body tells those cases apart.
    if let Err(
        err @ (SignatureError::Missing | SignatureError::Malformed | SignatureError::Sha1Only),
    ) = ingress.verifier.verify(signature, sha1, &[])
    {
        return refused_signature(id, event, err);
    }
    // Held until the answer: through reading, verifying, parsing and waiting for a place.
    let Some(_turn) = ingress.turn().await else {
        tracing::warn!(
            delivery = id,
            event,
            "too many requests in flight; answered 503"
        );
        return (
            IngressOutcome::Saturated,
            unverified(),
            retry_later(BUSY_RETRY_AFTER, "busy with other requests; retry later"),
        );
    };
    let (body, held) = match read_unverified(&ingress.budget, body).await {
        Ok(read) => read,
        Err(unread) => return refused_body(id, event, unread),
    };
    if let Err(err) = ingress.verifier.verify(signature, sha1, &body) {
        return refused_signature(id, event, err);
    }
    drop(held); // verified: no longer counted against the unverified-body budget
    let event_name = event.to_owned();
    if !ingress.deliveries.first_time(id, Instant::now()) {
        tracing::debug!(delivery = id, event, "redelivery ignored");
        return (
            IngressOutcome::Duplicate,
            event_name,
            answer(StatusCode::OK, "already received"),
        );
    }
    let parsed = match parse(event, &body) {
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
    // The payload is parsed into owned values: the body need not wait for a place with it.
    drop(body);
    let subject = Subject::of(&event_body);
    let delivery = Delivery {
        id: DeliveryId(id.to_owned()),
        event: event_body,
    };
    let full = match ingress
        .backlog
        .admit(subject, ingress.enqueue_timeout)
        .await
    {
        Ok(slot) => match ingress.queue.try_send(Queued { delivery, slot }) {
            Ok(()) => {
                return (
                    IngressOutcome::Queued,
                    event_name,
                    answer(StatusCode::ACCEPTED, "queued"),
                );
            }
            // The workers stopped (shutting down): nobody will handle it.
            Err(_) => Full::Everything,
        },
        Err(full) => full,
    };
    // Not taken: forget the id so a redelivery (GitHub's UI or API, `countersign replay`) is
    // accepted. GitHub does not redeliver by itself.
    ingress.deliveries.forget(id);
    let outcome = match full {
        Full::Everything => {
            tracing::warn!(delivery = id, event, "delivery backlog full; answered 503");
            IngressOutcome::Overloaded
        }
        Full::Subject => {
            tracing::warn!(
                delivery = id,
                event,
                ?subject,
                "this issue or pull request holds its whole share of the backlog; answered 503"
            );
            IngressOutcome::SubjectOverloaded
        }
    };
    (
        outcome,
        event_name,
        retry_later(
            OVERLOADED_RETRY_AFTER,
            "busy; redeliver this delivery later",
        ),
    )
}
