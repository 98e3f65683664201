//! The resync's metrics (`countersign_bot_resync_*`), registered in the bot's registry by
//! [`crate::metrics::Metrics`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListingLabels {
    listing: &'static str,
    answer: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

/// The resync's series (`countersign_bot_resync_*`). Labels are bounded: results, kinds,
/// reasons, listing names and error labels.
#[derive(Clone, Debug, Default)]
pub struct ResyncMetrics {
    passes: Family<ResultLabel, Counter>,
    recovered: Family<KindLabel, Counter>,
    skipped: Family<ReasonLabel, Counter>,
    listings: Family<ListingLabels, Counter>,
    failures: Family<ErrorLabel, Counter>,
}

impl ResyncMetrics {
    /// Creates the series and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "resync_passes",
            "Resync passes, by result (complete, or partial when a Project failed)",
            metrics.passes.clone(),
        );
        registry.register(
            "resync_recovered",
            "Objects the resync created for deliveries that never arrived, by kind",
            metrics.recovered.clone(),
        );
        registry.register(
            "resync_skipped",
            "Labelled issues the resync found without a run and left so, by reason",
            metrics.skipped.clone(),
        );
        registry.register(
            "resync_listings",
            "GitHub listings the resync read, by listing and answer (not_modified: every page a 304, free of rate limit)",
            metrics.listings.clone(),
        );
        registry.register(
            "resync_failures",
            "Projects whose resync failed (tried again next pass), by error",
            metrics.failures.clone(),
        );
        metrics
    }

    pub(super) fn pass(&self, result: &'static str) {
        self.passes.get_or_create(&ResultLabel { result }).inc();
    }

    pub(super) fn recovered(&self, kind: &'static str) {
        self.recovered.get_or_create(&KindLabel { kind }).inc();
    }

    pub(super) fn skipped(&self, reason: &'static str) {
        self.skipped.get_or_create(&ReasonLabel { reason }).inc();
    }

    pub(super) fn listing(&self, listing: &'static str, not_modified: bool) {
        let answer = if not_modified {
            "not_modified"
        } else {
            "modified"
        };
        self.listings
            .get_or_create(&ListingLabels { listing, answer })
            .inc();
    }

    pub(super) fn failure(&self, error: &'static str) {
        self.failures.get_or_create(&ErrorLabel { error }).inc();
    }
}
