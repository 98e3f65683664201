//! Prometheus metrics of the controller, registered once at start-up under the `countersign_controller` prefix.
//!
//! Labels are bounded: kinds, outcomes and error labels only, never names, numbers or SHAs.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabel {
    kind: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The controller's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    failures: Family<FailureLabel, Counter>,
    duration: Family<KindLabel, Histogram>,
    runs_finished: Family<OutcomeLabel, Counter>,
    queued_runs: Gauge,
    running_runs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("countersign_controller");
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<FailureLabel, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let runs_finished = Family::<OutcomeLabel, Counter>::default();
        let queued_runs = Gauge::default();
        let running_runs = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciliations started, by kind",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed, by kind and error",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time spent per reconciliation, by kind",
            duration.clone(),
        );
        registry.register(
            "agent_runs_finished",
            "Agent runs that reached a final phase, by phase",
            runs_finished.clone(),
        );
        registry.register(
            "agent_runs_queued",
            "Agent runs waiting for capacity",
            queued_runs.clone(),
        );
        registry.register(
            "agent_runs_running",
            "Agent runs holding capacity",
            running_runs.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            duration,
            runs_finished,
            queued_runs,
            running_runs,
        }
    }
}

/// Measures one reconciliation; records its duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&KindLabel { kind: self.kind })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    /// Counts a reconciliation of `kind` and times it until the timer is dropped.
    pub fn reconcile(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles.get_or_create(&KindLabel { kind }).inc();
        ReconcileTimer {
            metrics: self,
            kind,
            start: Instant::now(),
        }
    }

    /// Reconciliations of `kind` started so far (what `countersign_controller_reconciles_total`
    /// exports), for tests and diagnostics.
    pub fn reconciles_of(&self, kind: &'static str) -> u64 {
        self.reconciles.get_or_create(&KindLabel { kind }).get()
    }

    /// Counts a failed reconciliation by its bounded error label.
    pub fn reconcile_failed(&self, kind: &'static str, error: &'static str) {
        self.failures
            .get_or_create(&FailureLabel { kind, error })
            .inc();
    }

    /// Counts a run that reached a final phase.
    pub fn run_finished(&self, outcome: &'static str) {
        self.runs_finished
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Sets the number of queued and running runs.
    pub fn set_capacity(&self, queued: usize, running: usize) {
        self.queued_runs
            .set(i64::try_from(queued).unwrap_or(i64::MAX));
        self.running_runs
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// The text exposition format served on `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_exposed_with_the_prefix_and_bounded_labels() {
        let metrics = Metrics::default();
        drop(metrics.reconcile("AgentRun"));
        metrics.reconcile_failed("AgentRun", "kube_api");
        metrics.run_finished("Succeeded");
        metrics.set_capacity(2, 1);
        let text = metrics.encode();
        assert!(
            text.contains(r#"countersign_controller_reconciles_total{kind="AgentRun"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"countersign_controller_reconcile_failures_total{kind="AgentRun",error="kube_api"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"countersign_controller_agent_runs_finished_total{outcome="Succeeded"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("countersign_controller_agent_runs_queued 2"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"countersign_controller_reconcile_duration_seconds_count{kind="AgentRun"} 1"#
            ),
            "{text}"
        );
    }
}
