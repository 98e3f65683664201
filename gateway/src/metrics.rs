//! Prometheus metrics of the gateway: its own under the `countersign_gateway` prefix, plus
//! the unprefixed series every Countersign server exports (`countersign_build_info`,
//! `process_*`, from `countersign_telemetry`). Labels are bounded: protocols, outcomes and
//! reasons, never names or tokens.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabel {
    protocol: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
    upstream: Family<UpstreamLabel, Counter>,
    tokens: Family<DirectionLabel, Counter>,
    cost: Counter,
    duration: Histogram,
    in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        // The root holds what every Countersign server exports without a prefix; the
        // gateway's own series are prefixed.
        let mut root = Registry::default();
        countersign_telemetry::register_common(&mut root, "gateway");
        let registry = root.sub_registry_with_prefix("countersign_gateway");
        let requests = Family::<RequestLabel, Counter>::default();
        let refused = Family::<ReasonLabel, Counter>::default();
        let upstream = Family::<UpstreamLabel, Counter>::default();
        let tokens = Family::<DirectionLabel, Counter>::default();
        let cost = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        let in_flight = Gauge::default();
        registry.register(
            "requests",
            "Requests from agents, by protocol and outcome (ok, refused, upstream_error)",
            requests.clone(),
        );
        registry.register(
            "refused",
            "Requests refused by the gateway itself, by reason",
            refused.clone(),
        );
        registry.register(
            "upstream_requests",
            "Requests sent to providers, by outcome (ok, retried, failed_over, error)",
            upstream.clone(),
        );
        registry.register(
            "tokens",
            "Tokens counted from providers' usage fields, by direction (input, output)",
            tokens.clone(),
        );
        registry.register(
            "cost_micro_cents",
            "Provider cost counted, in millionths of a US cent",
            cost.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from an agent's request to the end of its answer",
            duration.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests being forwarded now",
            in_flight.clone(),
        );
        Self {
            registry: root,
            requests,
            refused,
            upstream,
            tokens,
            cost,
            duration,
            in_flight,
        }
    }
}

impl Metrics {
    /// Counts a request's end.
    pub fn request(&self, protocol: &'static str, outcome: &'static str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabel { protocol, outcome })
            .inc();
        self.duration.observe(seconds);
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: &'static str) {
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Counts one request to a provider.
    pub fn upstream(&self, outcome: &'static str) {
        self.upstream
            .get_or_create(&UpstreamLabel { outcome })
            .inc();
    }

    /// Counts usage.
    pub fn usage(&self, input: u64, output: u64, cost_micro_cents: u64) {
        self.tokens
            .get_or_create(&DirectionLabel { direction: "input" })
            .inc_by(input);
        self.tokens
            .get_or_create(&DirectionLabel {
                direction: "output",
            })
            .inc_by(output);
        self.cost.inc_by(cost_micro_cents);
    }

    /// A request started (`+1`) or ended (`-1`).
    pub fn in_flight(&self, delta: i64) {
        self.in_flight.inc_by(delta);
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(%error, "cannot encode metrics");
        }
        out
    }
}
