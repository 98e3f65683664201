//! Item 12: the policy API evaluates Rego out of the way of webhook deliveries. Here the
//! memory cap: a Rego module that allocates without bound is run by the real `countersign`
//! binary's `policy-api-worker` under the limit the bot sets, and is answered 422 instead of
//! taking the bot's memory; an ordinary request through the same worker is answered.
//! (The flood and listener tests are in bot/tests/http_surface.rs.)

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Bytes;
use countersign_bot::api::{Endpoint, Isolation, PolicyLimits, PolicyRunner};
use serde_json::json;

/// A runner like `countersign bot`'s: one worker process per evaluation, 128 MiB of heap.
fn runner() -> PolicyRunner {
    PolicyRunner::new(PolicyLimits {
        concurrency: 1,
        timeout: Duration::from_secs(30),
        isolation: Isolation::Process {
            program: PathBuf::from(env!("CARGO_BIN_EXE_countersign")),
            memory_limit: 128 * 1024 * 1024,
        },
    })
}

fn simulate_body(rego: Option<&str>) -> Bytes {
    let mut policy = serde_json::to_value(countersign_policies::default_policy().spec)
        .expect("the default policy serialises");
    if let Some(module) = rego {
        policy["rego"] = json!({"package": "countersign.risk", "module": module});
    }
    Bytes::from(
        json!({"policy": policy, "change": {"files": [{"path": "src/a.rs", "additions": 1}]}})
            .to_string(),
    )
}

/// Builds an array of fifty million numbers (gigabytes as Rego values).
const GREEDY_REGO: &str = "package countersign.risk\n\nbig := numbers.range(1, 50000000)\n\nfactors[\"impact\"] := 1 if {\n  count(big) > 0\n}\n";

#[tokio::test]
async fn a_policy_that_allocates_without_bound_is_refused_not_fatal() {
    let runner = runner();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(60),
        runner.run(Endpoint::Simulate, simulate_body(Some(GREEDY_REGO))),
    )
    .await
    .expect("an answer in time");
    assert_eq!(status.as_u16(), 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("memory"),
        "{body}"
    );

    // The same worker answers an ordinary simulation.
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(60),
        runner.run(Endpoint::Simulate, simulate_body(None)),
    )
    .await
    .expect("an answer in time");
    assert_eq!(status.as_u16(), 200, "{body}");
    assert!(body["risk"]["level"].is_string(), "{body}");
}
