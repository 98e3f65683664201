//! `/api/v1/validate`, `/api/v1/simulate` and `/admission/riskpolicies` through the bot's
//! router over HTTP.

mod support;

use countersign_bot::api::MAX_BODY_BYTES;
use countersign_bot::server::{HttpOptions, RISK_POLICY_ADMISSION_ROUTE};
use countersign_policies::DEFAULT_POLICY_YAML;
use serde_json::{Value, json};
use support::{https_request, post_json, request, serve_bot, serve_bot_with, try_https_request};

const BAD_POLICY: &str = r#"
apiVersion: countersign.dev/v1alpha1
kind: RiskPolicy
metadata:
  name: broken
spec:
  rules:
    - name: ok
      match: { paths: ["src/**"] }
      set: { impact: 5 }
    - name: bad-glob
      match: { paths: ["docs/**", "src/[oops"] }
      set: { impact: 3 }
  workflows:
    low: { name: standard, autoApprove: true }
    medium: { name: supervised, approvers: [{ role: developer }] }
    high: { name: managed, approvers: [{ role: tech_lead }] }
    critical: { name: executive, approvers: [{ role: cto }] }
"#;

/// Workflows every test policy can use.
fn workflows() -> Value {
    json!({
        "low": {"name": "standard", "autoApprove": true},
        "medium": {"name": "supervised", "approvers": [{"role": "developer"}]},
        "high": {"name": "managed", "approvers": [{"role": "tech_lead"}]},
        "critical": {"name": "executive", "approvers": [{"role": "cto"}]}
    })
}

#[tokio::test]
async fn validate_accepts_the_default_policy_as_yaml_and_json() {
    let served = serve_bot(HttpOptions::default()).await;
    let answer = request(
        served.addr,
        "POST",
        "/api/v1/validate",
        "application/yaml",
        DEFAULT_POLICY_YAML,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["valid"], true, "{body}");
    assert_eq!(body["policies"][0]["name"], "default");
    assert_eq!(body["policies"][0]["errors"], json!([]));

    let policy = serde_json::to_value(countersign_policies::default_policy()).expect("json");
    let answer = post_json(served.addr, "/api/v1/validate", &json!([policy, policy])).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["valid"], true, "{body}");
    assert_eq!(body["policies"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn validate_names_the_broken_field() {
    let served = serve_bot(HttpOptions::default()).await;
    let two = format!("{DEFAULT_POLICY_YAML}\n---\n{BAD_POLICY}");
    let answer = request(
        served.addr,
        "POST",
        "/api/v1/validate",
        "application/yaml",
        two,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json();
    assert_eq!(body["valid"], false, "{body}");
    let broken = &body["policies"][1];
    assert_eq!(broken["name"], "broken");
    assert_eq!(broken["errors"][0]["field"], "spec.rules[1].match.paths[1]");
    let message = broken["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("invalid glob"), "{message}");
    assert_eq!(body["policies"][0]["errors"], json!([]));
}

#[tokio::test]
async fn validate_refuses_garbage_and_huge_bodies() {
    let served = serve_bot(HttpOptions::default()).await;
    let answer = request(
        served.addr,
        "POST",
        "/api/v1/validate",
        "application/yaml",
        "kind: [unclosed",
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(
        answer.json()["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );

    let answer = request(
        served.addr,
        "POST",
        "/api/v1/validate",
        "application/json",
        "{\"not\": \"a policy\"}",
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.body);

    let huge = format!("# {}\n{DEFAULT_POLICY_YAML}", "x".repeat(MAX_BODY_BYTES));
    let answer = request(
        served.addr,
        "POST",
        "/api/v1/validate",
        "application/yaml",
        huge,
    )
    .await;
    assert_eq!(answer.status, 413, "{}", answer.body);
}

async fn simulate(body: Value) -> Value {
    let served = serve_bot(HttpOptions::default()).await;
    let answer = post_json(served.addr, "/api/v1/simulate", &body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.json()
}

#[tokio::test]
async fn simulate_auto_approves_a_docs_only_change() {
    let body = simulate(json!({
        "change": {"files": [{"path": "docs/install.md", "additions": 12}]},
        "pullRequest": {"author": {"login": "alice", "id": 1}}
    }))
    .await;
    assert_eq!(body["phase"], "Approved", "{body}");
    assert_eq!(body["risk"]["level"], "low");
    assert_eq!(body["risk"]["workflow"], "standard");
    assert!(body["autoApproved"].as_str().is_some(), "{body}");
    assert_eq!(body["requirements"], json!([]));
    assert_eq!(body["check"]["conclusion"], "success");
    assert_eq!(body["check"]["status"], "completed");
}

#[tokio::test]
async fn simulate_approves_a_feature_with_developer_and_tech_lead() {
    let body = simulate(json!({
        "change": {"files": [{"path": "src/widgets/list.rs", "additions": 40, "deletions": 3}]},
        "pullRequest": {"author": {"login": "alice", "id": 1}},
        "reviewers": [
            {"login": "dave", "id": 11, "roles": ["developer"], "decision": "approve"},
            {"login": "lena", "id": 12, "roles": ["tech_lead"], "decision": "approve"}
        ]
    }))
    .await;
    assert_eq!(body["risk"]["level"], "medium", "{body}");
    assert_eq!(body["risk"]["workflow"], "supervised");
    assert!(
        body["risk"]["factors"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("src/widgets/list.rs")),
        "{body}"
    );
    assert_eq!(body["phase"], "Approved", "{body}");
    let requirements = body["requirements"].as_array().expect("requirements");
    assert_eq!(requirements.len(), 2);
    for (role, who) in [("developer", "dave"), ("tech_lead", "lena")] {
        let r = requirements
            .iter()
            .find(|r| r["role"] == role)
            .expect("role");
        assert_eq!(r["needed"], 1);
        assert_eq!(r["have"], 1);
        assert_eq!(r["approvedBy"], json!([who]));
    }
    assert!(
        body["reviewers"]
            .as_array()
            .expect("reviewers")
            .iter()
            .all(|r| r["valid"] == true)
    );
    assert_eq!(body["check"]["conclusion"], "success");
}

#[tokio::test]
async fn simulate_refuses_the_requesters_approval_of_an_ai_pull_request() {
    let body = simulate(json!({
        "change": {"files": [{"path": "src/widgets/list.rs", "additions": 40}]},
        "pullRequest": {
            "author": {"login": "countersign[bot]", "id": 99},
            "aiGenerated": true,
            "requester": {"login": "rita", "id": 12}
        },
        "reviewers": [
            {"login": "dave", "id": 11, "roles": ["developer"], "decision": "approve"},
            {"login": "rita", "id": 12, "roles": ["tech_lead"], "decision": "approve"}
        ]
    }))
    .await;
    assert_eq!(body["phase"], "Pending", "{body}");
    let rita = body["reviewers"]
        .as_array()
        .expect("reviewers")
        .iter()
        .find(|r| r["login"] == "rita")
        .expect("rita")
        .clone();
    assert_eq!(rita["valid"], false, "{body}");
    assert_eq!(rita["invalidReason"], "requester");
    assert_eq!(body["check"]["status"], "in_progress");
    assert_eq!(body["check"]["conclusion"], Value::Null);
    assert!(
        body["check"]["title"]
            .as_str()
            .is_some_and(|t| t.starts_with("Waiting for tech_lead")),
        "{body}"
    );
}

#[tokio::test]
async fn simulate_reports_a_policy_that_does_not_compile() {
    let served = serve_bot(HttpOptions::default()).await;
    let answer = post_json(
        served.addr,
        "/api/v1/simulate",
        &json!({
            "policy": {
                "rules": [{"name": "x", "match": {"paths": ["a/[b"]}, "set": {"impact": 1}}],
                "workflows": workflows()
            },
            "change": {"files": [{"path": "a/b"}]}
        }),
    )
    .await;
    assert_eq!(answer.status, 422, "{}", answer.body);
    assert_eq!(
        answer.json()["errors"][0]["field"],
        "spec.rules[0].match.paths[0]"
    );
    let answer = post_json(served.addr, "/api/v1/simulate", &json!({"chnage": {}})).await;
    assert_eq!(answer.status, 400, "{}", answer.body);
}

fn admission_review(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "7f0e-1",
            "kind": {"group": "countersign.dev", "version": "v1alpha1", "kind": "RiskPolicy"},
            "resource": {"group": "countersign.dev", "version": "v1alpha1", "resource": "riskpolicies"},
            "name": "default", "namespace": "team", "operation": "CREATE",
            "userInfo": {"username": "alice"}, "object": object, "dryRun": false
        }
    })
}

#[tokio::test]
async fn admission_allows_and_denies_through_the_router() {
    let served = serve_bot(HttpOptions::default()).await;
    let good = serde_json::to_value(countersign_policies::default_policy()).expect("json");
    let answer = post_json(
        served.addr,
        RISK_POLICY_ADMISSION_ROUTE,
        &admission_review(good),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let review = answer.json();
    assert_eq!(review["response"]["uid"], "7f0e-1");
    assert_eq!(review["response"]["allowed"], true, "{review}");

    let bad = serde_json::to_value(
        countersign_policies::parse_policies(BAD_POLICY).expect("parses")[0]
            .policy
            .clone(),
    )
    .expect("json");
    let answer = post_json(
        served.addr,
        RISK_POLICY_ADMISSION_ROUTE,
        &admission_review(bad),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let review = answer.json();
    assert_eq!(review["response"]["allowed"], false, "{review}");
    let message = review["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("spec.rules[1].match.paths[1]"), "{review}");
}

#[tokio::test]
async fn admission_is_served_over_https() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert_file = dir.path().join("tls.crt");
    let key_file = dir.path().join("tls.key");
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).expect("write key");
    let (config, certificates) =
        countersign_bot::tls::load(&cert_file, &key_file).expect("load TLS files");
    let served = serve_bot_with(HttpOptions::default(), Some(config)).await;

    let good = serde_json::to_value(countersign_policies::default_policy()).expect("json");
    let answer = https_request(
        served.addr,
        certified.cert.der(),
        "POST",
        RISK_POLICY_ADMISSION_ROUTE,
        "application/json",
        admission_review(good).to_string(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["response"]["allowed"], true);

    // A key file is not a certificate.
    assert!(countersign_bot::tls::load(&key_file, &key_file).is_err());

    // A renewed certificate (cert-manager rewrites the Secret's files) is served to new
    // connections without a restart; a broken pair written meanwhile is ignored.
    let watch = tokio::spawn(countersign_bot::tls::watch_files(
        &cert_file,
        &key_file,
        certificates,
        std::time::Duration::from_millis(20),
    ));
    std::fs::write(&cert_file, "not a certificate").expect("break cert");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("renewed certificate");
    std::fs::write(&key_file, renewed.key_pair.serialize_pem()).expect("write key");
    std::fs::write(&cert_file, renewed.cert.pem()).expect("write cert");
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            if let Some(answer) = try_https_request(
                served.addr,
                renewed.cert.der(),
                "GET",
                "/healthz",
                "text/plain",
                String::new(),
            )
            .await
            {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the renewed certificate is served within 10 s");
    assert_eq!(answered.status, 200);
    watch.abort();
}
