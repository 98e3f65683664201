use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;

fn default_policy() -> Value {
    serde_json::to_value(countersign_policies::default_policy()).expect("serialises")
}

fn review(object: Value, operation: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7f0e-1", "kind": {"group": "countersign.dev", "version": "v1alpha1", "kind": "RiskPolicy"},
            "resource": {"group": "countersign.dev", "version": "v1alpha1", "resource": "riskpolicies"},
            "name": "default", "namespace": "team", "operation": operation,
            "userInfo": {"username": "alice"}, "object": object, "dryRun": false
        }
    })
}

async fn post(body: Value) -> (StatusCode, Value) {
    let request = Request::post(crate::RISK_POLICY_ADMISSION_PATH)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = crate::app().oneshot(request).await.expect("router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn the_default_policy_is_allowed() {
    let (status, body) = post(review(default_policy(), "CREATE")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["uid"], "7f0e-1");
    assert_eq!(body["response"]["allowed"], true, "{body}");
    assert!(body["response"]["warnings"].is_null(), "{body}");
}

#[tokio::test]
async fn a_bad_glob_and_bad_rego_are_denied_with_their_fields() {
    let mut policy = default_policy();
    policy["spec"]["rules"][0]["match"]["onlyPaths"][0] = json!("docs/[");
    policy["spec"]["rego"] = json!({"module": "package countersign.risk\nfactors := {\"impact\": 3", "package": "countersign.risk"});
    let (status, body) = post(review(policy, "UPDATE")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["response"]["allowed"], false, "{body}");
    let message = body["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("spec.rules[0].match.onlyPaths[0]"),
        "{message}"
    );
    assert!(message.contains("spec.rego"), "{message}");
}

#[tokio::test]
async fn unusual_roles_are_allowed_with_a_warning() {
    let mut policy = default_policy();
    policy["spec"]["workflows"]["critical"]["approvers"][2]["role"] = json!("ciso");
    let (_, body) = post(review(policy, "CREATE")).await;
    assert_eq!(body["response"]["allowed"], true, "{body}");
    let warnings = body["response"]["warnings"].to_string();
    assert!(
        warnings.contains("spec.workflows.critical.approvers") && warnings.contains("ciso"),
        "{warnings}"
    );
}

#[tokio::test]
async fn deletes_pass_and_garbage_is_refused_cleanly() {
    let (_, body) = post(review(Value::Null, "DELETE")).await;
    assert_eq!(body["response"]["allowed"], true);
    let (_, body) = post(review(json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "RiskPolicy", "metadata": {"name": "x"}, "spec": {"rules": "nope"}}), "CREATE")).await;
    assert_eq!(body["response"]["allowed"], false);
    assert!(
        body["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not a valid RiskPolicy")
    );
    let (status, _) =
        post(json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(json!("not a review")).await;
    assert!(status.is_client_error());
}

#[test]
fn the_pure_review_lists_every_problem() {
    let mut policy = countersign_policies::default_policy();
    policy.spec.rules[0].matches.only_paths[0] = "docs/[".into();
    policy.spec.rules[1].matches.paths = vec!["src/{".into()];
    match review_risk_policy(&policy.spec) {
        Verdict::Deny { reasons } => assert_eq!(reasons.len(), 2, "{reasons:?}"),
        other => panic!("expected a denial, got {other:?}"),
    }
    assert_eq!(
        review_risk_policy(&countersign_policies::default_policy().spec),
        Verdict::Allow { warnings: vec![] }
    );
}
