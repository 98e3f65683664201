//! Metrics of the GitHub client: every answer by method and status, the rate limit left
//! (from `X-RateLimit-Remaining`), and conditional requests answered `304 Not Modified` from
//! the ETag cache (free of rate limit). Registered by each binary under its own prefix, e.g.
//! `countersign_controller_github_requests_total`. Labels are bounded: methods and status
//! codes only.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    /// The HTTP status code, or `error` when no answer came (timeout, dropped connection).
    status: String,
}

/// The GitHub client's metrics; clones share the same series.
#[derive(Clone, Debug, Default)]
pub struct ClientMetrics {
    requests: Family<RequestLabels, Counter>,
    rate_limit_remaining: Gauge,
    conditional_hits: Counter,
}

impl ClientMetrics {
    /// Registers the series in `registry` (`github_requests_total`,
    /// `github_rate_limit_remaining`, `github_conditional_hits_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "github_requests",
            "GitHub API answers by method and status (error: no answer)",
            self.requests.clone(),
        );
        registry.register(
            "github_rate_limit_remaining",
            "Requests left in the current rate-limit window, as GitHub last reported",
            self.rate_limit_remaining.clone(),
        );
        registry.register(
            "github_conditional_hits",
            "Conditional GETs answered 304 Not Modified from the ETag cache (not rate limited)",
            self.conditional_hits.clone(),
        );
    }

    /// Records one answer (`status` None: no answer) and the rate limit it reported.
    pub(crate) fn record(
        &self,
        method: &http::Method,
        status: Option<http::StatusCode>,
        headers: Option<&http::HeaderMap>,
    ) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.as_u16().to_string());
        self.requests
            .get_or_create(&RequestLabels {
                method: method.as_str().to_owned(),
                status,
            })
            .inc();
        if let Some(remaining) = headers
            .and_then(|h| h.get("x-ratelimit-remaining"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<i64>().ok())
        {
            self.rate_limit_remaining.set(remaining);
        }
    }

    /// Records a conditional GET served from the cache.
    pub(crate) fn conditional_hit(&self) {
        self.conditional_hits.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_the_rate_limit_are_recorded() {
        let metrics = ClientMetrics::default();
        let mut registry = Registry::with_prefix("countersign_test");
        metrics.register(&mut registry);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-ratelimit-remaining", "4987".parse().expect("header"));
        metrics.record(
            &http::Method::GET,
            Some(http::StatusCode::OK),
            Some(&headers),
        );
        metrics.record(
            &http::Method::GET,
            Some(http::StatusCode::NOT_MODIFIED),
            None,
        );
        metrics.conditional_hit();
        metrics.record(&http::Method::POST, None, None);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        for line in [
            r#"countersign_test_github_requests_total{method="GET",status="200"} 1"#,
            r#"countersign_test_github_requests_total{method="GET",status="304"} 1"#,
            r#"countersign_test_github_requests_total{method="POST",status="error"} 1"#,
            "countersign_test_github_rate_limit_remaining 4987",
            "countersign_test_github_conditional_hits_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
