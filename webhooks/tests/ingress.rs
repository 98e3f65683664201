//! `POST /webhook` end to end through the axum router: signatures (rotation, attacks), required
//! headers, the body cap, redeliveries, unsupported and unparseable payloads, and back-pressure.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use countersign_testkit::github::Delivery;
use countersign_webhooks::github::deliveries::{Deliveries, Queued};
use countersign_webhooks::github::event::Event;
use countersign_webhooks::github::ingress::{
    Ingress, IngressLimits, IngressMetrics, IngressOutcome, MAX_BODY_BYTES, WEBHOOK_PATH, router,
};
use countersign_webhooks::github::signature::Verifier;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tower::ServiceExt;

const SECRET: &str = "current-secret";
const OLD_SECRET: &str = "previous-secret";

struct Endpoint {
    ingress: Arc<Ingress>,
    queue: mpsc::Receiver<Queued>,
}

fn endpoint(capacity: usize) -> Endpoint {
    let (ingress, rx) = Ingress::new(
        Verifier::new([SECRET, OLD_SECRET]),
        Deliveries::new(1000, Duration::from_secs(3600)),
        IngressMetrics::register(&mut Registry::default()),
        IngressLimits {
            backlog: capacity,
            backlog_per_subject: capacity,
            enqueue_timeout: Duration::from_millis(50),
            ..IngressLimits::default()
        },
    );
    Endpoint {
        ingress: Arc::new(ingress),
        queue: rx,
    }
}

impl Endpoint {
    async fn send(&self, request: Request<Body>) -> (StatusCode, String) {
        let response = tokio::time::timeout(
            Duration::from_secs(10),
            router(self.ingress.clone()).oneshot(request),
        )
        .await
        .expect("the endpoint answers")
        .expect("infallible");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn deliver(&self, delivery: &Delivery) -> (StatusCode, String) {
        self.send(delivery.to_request(WEBHOOK_PATH).expect("request"))
            .await
    }

    fn count(&self, event: &str, outcome: IngressOutcome) -> u64 {
        self.ingress.metrics.count(event, outcome)
    }
}

fn labeled(secret: &str) -> Delivery {
    let payload = serde_json::json!({
        "action": "labeled",
        "label": {"name": "ai:backend"},
        "issue": {"number": 42, "title": "Fix it", "body": "details",
                  "user": {"id": 2, "login": "bob", "type": "User"},
                  "labels": [{"name": "ai:backend"}], "state": "open"},
        "repository": {"id": 7, "name": "api", "full_name": "acme/api",
                       "owner": {"id": 1, "login": "acme", "type": "Organization"}},
        "sender": {"id": 3, "login": "alice", "type": "User"},
        "installation": {"id": 9}
    });
    Delivery::from_payload("issues", &payload, secret).expect("delivery")
}

fn with_header(delivery: &Delivery, name: &'static str, value: Option<&str>) -> Request<Body> {
    let mut request = delivery.to_request(WEBHOOK_PATH).expect("request");
    match value {
        Some(v) => {
            request
                .headers_mut()
                .insert(name, v.parse().expect("header value"));
        }
        None => {
            request.headers_mut().remove(name);
        }
    }
    request
}

#[tokio::test]
async fn a_signed_delivery_is_parsed_and_queued() {
    let mut e = endpoint(8);
    let delivery = labeled(SECRET);
    let (status, _) = e.deliver(&delivery).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let queued = e.queue.try_recv().expect("queued").delivery;
    assert_eq!(queued.id.as_str(), delivery.id);
    let Event::Issues(issues) = queued.event else {
        panic!("not an issues event: {:?}", queued.event)
    };
    assert_eq!(issues.issue.number, 42);
    assert_eq!(e.count("issues", IngressOutcome::Queued), 1);
}

#[tokio::test]
async fn the_previous_secret_still_verifies_during_rotation() {
    let mut e = endpoint(8);
    let (status, _) = e.deliver(&labeled(OLD_SECRET)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(e.queue.try_recv().is_ok());
}

#[tokio::test]
async fn signature_attacks_are_refused_before_parsing() {
    let mut e = endpoint(8);
    let good = labeled(SECRET);

    let (status, reason) = e.deliver(&labeled("someone-elses-secret")).await;
    assert_eq!(
        (status, reason.as_str()),
        (StatusCode::UNAUTHORIZED, "signature does not match")
    );

    let (status, reason) = e
        .send(with_header(&good, "x-hub-signature-256", None))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(reason.contains("missing"), "{reason}");

    let mut sha1_only = with_header(&good, "x-hub-signature-256", None);
    sha1_only.headers_mut().insert(
        "x-hub-signature",
        "sha1=0123456789abcdef0123456789abcdef01234567"
            .parse()
            .expect("value"),
    );
    let (status, reason) = e.send(sha1_only).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(reason.contains("sha1"), "{reason}");

    let upper = good.signature.to_uppercase();
    for malformed in ["sha256=zz", "md5=abc", "sha256=", upper.as_str()] {
        let (status, reason) = e
            .send(with_header(&good, "x-hub-signature-256", Some(malformed)))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{malformed}");
        assert!(reason.contains("malformed"), "{malformed}: {reason}");
    }

    // Same signature, one byte of the body changed.
    let mut tampered = good.clone();
    let at = tampered.body.len() - 3;
    tampered.body[at] ^= 1;
    let (status, _) = e.deliver(&tampered).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert!(e.queue.try_recv().is_err(), "nothing unverified is queued");
    assert_eq!(e.count("unverified", IngressOutcome::Unauthorized), 8);
    // A refused request does not burn the delivery id: the genuine one is still accepted.
    let (status, _) = e.deliver(&good).await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn event_and_delivery_headers_are_required() {
    let e = endpoint(8);
    let good = labeled(SECRET);
    for header in ["x-github-event", "x-github-delivery"] {
        let (status, reason) = e.send(with_header(&good, header, None)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{header}");
        assert!(reason.to_lowercase().contains(header), "{reason}");
    }
}

#[tokio::test]
async fn bodies_over_githubs_cap_are_refused_with_413() {
    let e = endpoint(8);
    let delivery = Delivery::from_body("issues", vec![b' '; MAX_BODY_BYTES + 1], SECRET);
    let (status, _) = e.deliver(&delivery).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_redelivery_is_answered_200_and_does_nothing() {
    let mut e = endpoint(2000);
    let delivery = labeled(SECRET);
    for _ in 0..1000 {
        let (status, _) = e.deliver(&delivery).await;
        assert!(status.is_success(), "{status}");
    }
    assert!(e.queue.try_recv().is_ok());
    assert!(e.queue.try_recv().is_err(), "queued exactly once");
    assert_eq!(e.count("issues", IngressOutcome::Duplicate), 999);
}

#[tokio::test]
async fn unknown_events_and_unparseable_payloads_are_202_and_counted() {
    let mut e = endpoint(8);
    let star = Delivery::from_payload("star", &serde_json::json!({"action": "created"}), SECRET)
        .expect("delivery");
    assert_eq!(e.deliver(&star).await.0, StatusCode::ACCEPTED);
    let transferred = Delivery::from_payload(
        "issues",
        &serde_json::json!({"action": "transferred"}),
        SECRET,
    )
    .expect("delivery");
    assert_eq!(e.deliver(&transferred).await.0, StatusCode::ACCEPTED);
    assert_eq!(e.count("star", IngressOutcome::Unsupported), 1);
    assert_eq!(e.count("issues", IngressOutcome::Unsupported), 1);

    for body in [
        &b"not json"[..],
        br#"{"action":"labeled","issue":7}"#,
        b"[]",
    ] {
        let broken = Delivery::from_body("issues", body.to_vec(), SECRET);
        let (status, _) = e.deliver(&broken).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{}",
            String::from_utf8_lossy(body)
        );
    }
    assert_eq!(e.count("issues", IngressOutcome::Unparseable), 3);
    assert!(e.queue.try_recv().is_err());
}

#[tokio::test]
async fn ping_is_answered_pong() {
    let mut e = endpoint(8);
    let ping = Delivery::from_payload(
        "ping",
        &serde_json::json!({"zen": "Keep it logically awesome.", "hook_id": 1}),
        SECRET,
    )
    .expect("delivery");
    assert_eq!(e.deliver(&ping).await, (StatusCode::OK, "pong".into()));
    assert!(e.queue.try_recv().is_err());
}

#[tokio::test]
async fn a_full_queue_answers_503_and_the_redelivery_is_taken_later() {
    let mut e = endpoint(1);
    assert_eq!(e.deliver(&labeled(SECRET)).await.0, StatusCode::ACCEPTED);
    let second = labeled(SECRET);
    assert_eq!(e.deliver(&second).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.count("issues", IngressOutcome::Overloaded), 1);
    drop(e.queue.try_recv().expect("first")); // handled: its place is given back
    assert_eq!(e.deliver(&second).await.0, StatusCode::ACCEPTED);
    assert_eq!(
        e.queue.try_recv().expect("second").delivery.id.as_str(),
        second.id
    );
}

#[tokio::test(start_paused = true)]
async fn past_the_requests_in_flight_a_request_waits_its_turn_then_gets_503_unread() {
    let (ingress, mut queue) = Ingress::new(
        Verifier::new([SECRET]),
        Deliveries::new(1000, Duration::from_secs(3600)),
        IngressMetrics::register(&mut Registry::default()),
        IngressLimits {
            backlog: 1,
            backlog_per_subject: 1,
            enqueue_timeout: Duration::from_secs(60),
            in_flight: 1,
            ..IngressLimits::default()
        },
    );
    let ingress = Arc::new(ingress);
    let send = |request: Request<Body>| {
        let router = router(ingress.clone());
        tokio::spawn(async move { router.oneshot(request).await.expect("infallible") })
    };
    // The first delivery takes the only place in the backlog (nobody handles it yet).
    let first = send(labeled(SECRET).to_request(WEBHOOK_PATH).expect("request"));
    assert_eq!(first.await.expect("task").status(), StatusCode::ACCEPTED);
    // The second waits for a place, holding the only turn.
    let mut second = labeled(SECRET);
    second.id = "a-second-delivery".to_owned();
    let second = send(second.to_request(WEBHOOK_PATH).expect("request"));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished(), "the second waits for a place");
    // The third's body never arrives: an answer proves it was never read.
    let mut third = labeled(SECRET);
    third.id = "a-third-delivery".to_owned();
    let mut third = third.to_request(WEBHOOK_PATH).expect("request");
    *third.body_mut() =
        Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    let started = tokio::time::Instant::now();
    let third = tokio::time::timeout(Duration::from_secs(30), send(third))
        .await
        .expect("answered without its body")
        .expect("task");
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        third.headers().get("retry-after").map(|v| v.to_str().ok()),
        Some(Some("5"))
    );
    assert_eq!(
        started.elapsed(),
        countersign_webhooks::github::ingress::TURN_WAIT
    );
    assert_eq!(
        ingress
            .metrics
            .count("unverified", IngressOutcome::Saturated),
        1
    );
    // Once the first is handled, the waiting second gets its place.
    drop(queue.recv().await.expect("the first delivery"));
    assert_eq!(second.await.expect("task").status(), StatusCode::ACCEPTED);
}
