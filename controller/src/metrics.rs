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

/// A Kubernetes API request: its verb as RBAC names it and the resource (with its
/// subresource, `agentruns/status`). Bounded: the controller only talks to the kinds it
/// manages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KubeRequestLabel {
    verb: &'static str,
    resource: String,
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
    kube_requests: Family<KubeRequestLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        // The root holds what every Countersign server exports without a prefix
        // (`countersign_build_info`, `process_*`); the controller's own series are prefixed.
        let mut root = Registry::default();
        countersign_telemetry::register_common(&mut root, "controller");
        let registry = root.sub_registry_with_prefix(PREFIX);
        let reconciles = Family::<KindLabel, Counter>::default();
        let failures = Family::<FailureLabel, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 14))
        });
        let runs_finished = Family::<OutcomeLabel, Counter>::default();
        let queued_runs = Gauge::default();
        let running_runs = Gauge::default();
        let kube_requests = Family::<KubeRequestLabel, Counter>::default();
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
        registry.register(
            "kube_requests",
            "Requests sent to the Kubernetes API (leader election aside), by verb and resource; \
             a watch counts once when it starts",
            kube_requests.clone(),
        );
        Self {
            registry: root,
            reconciles,
            failures,
            duration,
            runs_finished,
            queued_runs,
            running_runs,
            kube_requests,
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

/// The prefix of the controller's own series.
pub const PREFIX: &str = "countersign_controller";

impl Metrics {
    /// Registers the GitHub client's metrics (`countersign_controller_github_*`); call before
    /// the metrics are shared.
    pub fn register_github(&mut self, github: &countersign_github::metrics::ClientMetrics) {
        github.register(self.registry.sub_registry_with_prefix(PREFIX));
    }

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

    /// Counts a request about to be sent to the Kubernetes API.
    pub fn kube_request(&self, method: &http::Method, uri: &http::Uri) {
        let (verb, resource) = kube_verb_and_resource(method, uri);
        self.kube_requests
            .get_or_create(&KubeRequestLabel { verb, resource })
            .inc();
    }

    /// The text exposition format served on `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The verb (as RBAC names it) and resource (`pods`, `agentruns/status`) of a Kubernetes API
/// request, from its method and path: `/api/v1/…` or `/apis/GROUP/VERSION/…`, then
/// optionally `namespaces/NS/`, then `RESOURCE[/NAME[/SUBRESOURCE]]`. Anything else (discovery,
/// `/version`) is resource `other`.
fn kube_verb_and_resource(method: &http::Method, uri: &http::Uri) -> (&'static str, String) {
    let parts: Vec<&str> = uri.path().split('/').filter(|p| !p.is_empty()).collect();
    let rest = match parts.as_slice() {
        ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => rest,
        _ => &[][..],
    };
    // `namespaces/NS/RESOURCE…` is namespaced; `namespaces[/NS]` alone is the Namespace.
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [] => ("other".to_owned(), false),
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        http::Method::GET if watch => "watch",
        http::Method::GET if named => "get",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE if named => "delete",
        http::Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_requests_are_named_by_verb_and_resource() {
        let cases = [
            (
                "GET",
                "/api/v1/namespaces/ns/pods?labelSelector=a",
                "list",
                "pods",
            ),
            (
                "GET",
                "/api/v1/namespaces/ns/pods?watch=true&resourceVersion=1",
                "watch",
                "pods",
            ),
            ("GET", "/api/v1/namespaces/ns/secrets/s", "get", "secrets"),
            ("POST", "/api/v1/namespaces/ns/events", "create", "events"),
            ("GET", "/api/v1/namespaces/ns", "get", "namespaces"),
            ("GET", "/api/v1/namespaces", "list", "namespaces"),
            (
                "PATCH",
                "/apis/countersign.dev/v1alpha1/namespaces/ns/agentruns/r/status?fieldManager=x",
                "patch",
                "agentruns/status",
            ),
            (
                "GET",
                "/apis/countersign.dev/v1alpha1/agents",
                "list",
                "agents",
            ),
            ("DELETE", "/api/v1/namespaces/ns/pods/p", "delete", "pods"),
            (
                "DELETE",
                "/api/v1/namespaces/ns/pods",
                "deletecollection",
                "pods",
            ),
            (
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/l",
                "update",
                "leases",
            ),
            ("GET", "/version", "list", "other"),
        ];
        for (method, uri, verb, resource) in cases {
            let method: http::Method = method.parse().expect("method");
            let uri: http::Uri = uri.parse().expect("uri");
            assert_eq!(
                kube_verb_and_resource(&method, &uri),
                (verb, resource.to_owned()),
                "{method} {uri}"
            );
        }
        let metrics = Metrics::default();
        metrics.kube_request(
            &http::Method::GET,
            &"/api/v1/namespaces/ns/pods".parse().expect("uri"),
        );
        metrics.kube_request(
            &http::Method::GET,
            &"/api/v1/namespaces/ns/pods".parse().expect("uri"),
        );
        assert!(
            metrics.encode().contains(
                r#"countersign_controller_kube_requests_total{verb="list",resource="pods"} 2"#
            ),
            "{}",
            metrics.encode()
        );
    }

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
