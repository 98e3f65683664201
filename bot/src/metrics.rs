//! Prometheus metrics of the bot under the `countersign_bot` prefix: the listeners' (timeouts),
//! the webhook endpoint's (deliveries by event and outcome, request latency, the backlog, the
//! unverified bytes held), the handlers' (outcomes, failures, handling latency) and the
//! resync's ([`ResyncMetrics`]). Labels are bounded: listener, timeout, event names, kinds,
//! outcome, reason and error labels only.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use countersign_webhooks::github::ingress::IngressMetrics;

use crate::listener::ConnectionMetrics;
use crate::resync::ResyncMetrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    event: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    event: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

/// The bot's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The webhook endpoint's metrics (registered in the same registry).
    pub ingress: IngressMetrics,
    /// The listeners' timeouts (registered in the same registry).
    pub connections: ConnectionMetrics,
    /// The resync's passes, recoveries and `304`s (registered in the same registry).
    pub resync: ResyncMetrics,
    outcomes: Family<OutcomeLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    retries: Family<EventLabel, Counter>,
    handling: Family<EventLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        // Unprefixed series every server exports (`countersign_build_info`, `process_*`) in
        // the root; the bot's own under `countersign_bot_`.
        let mut root = Registry::default();
        countersign_telemetry::register_common(&mut root, "bot");
        let registry = root.sub_registry_with_prefix("countersign_bot");
        let ingress = IngressMetrics::register(registry);
        let connections = ConnectionMetrics::register(registry);
        let resync = ResyncMetrics::register(registry);
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let retries = Family::<EventLabel, Counter>::default();
        let handling = Family::<EventLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register(
            "delivery_outcomes",
            "What handling deliveries did, by event and outcome",
            outcomes.clone(),
        );
        registry.register(
            "delivery_failures",
            "Deliveries whose handling failed for good, by event and error",
            failures.clone(),
        );
        registry.register(
            "delivery_retries",
            "Handling attempts repeated after a transient failure, by event",
            retries.clone(),
        );
        registry.register(
            "delivery_handling_seconds",
            "Time from dequeuing a delivery to finishing it, by event",
            handling.clone(),
        );
        Self {
            registry: root,
            ingress,
            connections,
            resync,
            outcomes,
            failures,
            retries,
            handling,
        }
    }
}

impl Metrics {
    /// Counts one outcome of a delivery of `event`.
    pub fn outcome(&self, event: &'static str, outcome: &'static str) {
        self.outcomes
            .get_or_create(&OutcomeLabels { event, outcome })
            .inc();
    }

    /// Counts a delivery that failed for good.
    pub fn failure(&self, event: &'static str, error: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { event, error })
            .inc();
    }

    /// Counts a retried handling attempt.
    pub fn retry(&self, event: &'static str) {
        self.retries.get_or_create(&EventLabel { event }).inc();
    }

    /// Records how long handling a delivery took.
    pub fn handled(&self, event: &'static str, seconds: f64) {
        self.handling
            .get_or_create(&EventLabel { event })
            .observe(seconds);
    }

    /// Registers the GitHub client's metrics (`countersign_bot_github_*`); call before the
    /// metrics are shared.
    pub fn register_github(&mut self, github: &countersign_github::metrics::ClientMetrics) {
        github.register(self.registry.sub_registry_with_prefix("countersign_bot"));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "cannot encode metrics");
        }
        out
    }
}
