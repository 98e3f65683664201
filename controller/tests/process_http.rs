//! The controller's HTTP endpoints in process (`Router::oneshot`): `/metrics` in OpenMetrics
//! text with the reconcilers' and the process's metrics, `/healthz`, and `/readyz` following
//! leadership.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use countersign_controller::leader::{Leadership, leadership_channel};
use countersign_controller::metrics::Metrics;
use countersign_controller::server::{AppState, OPENMETRICS_CONTENT_TYPE, app};
use tokio::sync::watch;
use tower::ServiceExt;

const WAIT: Duration = Duration::from_secs(10);

struct Http {
    metrics: Arc<Metrics>,
    leadership: watch::Sender<Leadership>,
    state: AppState,
}

fn http() -> Http {
    let metrics = Arc::new(Metrics::default());
    let (leadership, rx) = leadership_channel();
    let state = AppState {
        metrics: metrics.clone(),
        leadership: rx,
    };
    Http {
        metrics,
        leadership,
        state,
    }
}

/// GET `path`; returns the status, content type and body.
async fn get(state: &AppState, path: &str) -> (StatusCode, String, String) {
    let request = Request::get(path).body(Body::empty()).expect("request");
    let response = tokio::time::timeout(WAIT, app(state.clone()).oneshot(request))
        .await
        .expect("answers in time")
        .expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = tokio::time::timeout(WAIT, axum::body::to_bytes(response.into_body(), 1 << 20))
        .await
        .expect("body in time")
        .expect("body");
    (
        status,
        content_type,
        String::from_utf8(body.to_vec()).expect("utf-8"),
    )
}

#[tokio::test]
async fn metrics_are_openmetrics_text_with_the_leader_gauge() {
    let h = http();
    drop(h.metrics.reconcile("AgentRun"));
    h.metrics.run_finished("Succeeded");

    let (status, content_type, body) = get(&h.state, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, OPENMETRICS_CONTENT_TYPE);
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(
        body.contains(r#"countersign_controller_reconciles_total{kind="AgentRun"} 1"#),
        "{body}"
    );
    assert!(
        body.contains(r#"countersign_controller_agent_runs_finished_total{outcome="Succeeded"} 1"#),
        "{body}"
    );
    assert!(body.contains("countersign_controller_leader 0\n"), "{body}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert_eq!(body.matches("# EOF").count(), 1, "one exposition: {body}");

    h.leadership.send_replace(Leadership::Leader);
    let (_, _, body) = get(&h.state, "/metrics").await;
    assert!(body.contains("countersign_controller_leader 1\n"), "{body}");
}

/// Readiness follows leadership while liveness never does: a standby, starting or failing
/// replica must be taken out of rotation, not restarted (a `/healthz` tied to leadership would
/// make the kubelet kill every standby replica).
#[tokio::test]
async fn readyz_follows_leadership_and_healthz_does_not() {
    let h = http();
    let cases = [
        (
            Leadership::Starting,
            StatusCode::SERVICE_UNAVAILABLE,
            "has not reached the API server",
        ),
        (Leadership::Standby, StatusCode::OK, "standby"),
        (Leadership::Leader, StatusCode::OK, "leader"),
        (Leadership::Unelected, StatusCode::OK, "leader election off"),
        (
            Leadership::Failing {
                error: "leases \"countersign-controller\" is forbidden".into(),
            },
            StatusCode::SERVICE_UNAVAILABLE,
            "leader election is failing: leases \"countersign-controller\" is forbidden",
        ),
        (
            Leadership::Stopped,
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down",
        ),
    ];
    for (state, expected, says) in cases {
        h.leadership.send_replace(state.clone());
        let (status, _, body) = get(&h.state, "/readyz").await;
        assert_eq!(status, expected, "{state:?}: {body}");
        assert!(body.contains(says), "{state:?}: {body}");
        let (live, _, body) = get(&h.state, "/healthz").await;
        assert_eq!(
            (live, body.as_str()),
            (StatusCode::OK, "ok\n"),
            "{state:?}: liveness is not leadership"
        );
    }
}
