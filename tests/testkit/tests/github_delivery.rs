//! Signed webhook deliveries verify against the secret with ring's HMAC, and only against it.

use countersign_testkit::github::{Delivery, HOOK_ID, TEST_APP_PRIVATE_KEY_PEM};
use ring::hmac;
use serde_json::json;

fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex) = signature.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(tag) = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
    else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, body, &tag).is_ok()
}

#[test]
fn signature_matches_githubs_documented_test_vector() {
    // https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries
    let d = Delivery::from_body(
        "ping",
        b"Hello, World!".to_vec(),
        "It's a Secret to Everybody",
    );
    assert_eq!(
        d.signature,
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    );
}

#[test]
fn delivery_verifies_only_with_its_secret_and_resigns() {
    let payload = json!({"action": "labeled", "issue": {"number": 42}});
    let d = Delivery::from_payload("issues", &payload, "s3cret").expect("payload serialises");
    assert!(verify("s3cret", &d.body, &d.signature));
    assert!(!verify("other", &d.body, &d.signature));
    assert_eq!(d.payload().expect("json"), payload);
    let r = d.signed_with("other");
    assert_eq!(r.id, d.id);
    assert!(verify("other", &r.body, &r.signature));
    assert_ne!(r.signature, d.signature);
}

#[test]
fn headers_and_request_carry_githubs_names() {
    let d = Delivery::from_payload("pull_request", &json!({"action": "opened"}), "k")
        .expect("payload serialises");
    let req = d.to_request("/webhook").expect("request builds");
    assert_eq!(req.method(), http::Method::POST);
    assert_eq!(req.uri().path(), "/webhook");
    let h = req.headers();
    assert_eq!(h["x-github-event"], "pull_request");
    assert_eq!(h["x-github-delivery"], d.id.as_str());
    assert_eq!(h["x-hub-signature-256"], d.signature.as_str());
    assert_eq!(h["x-github-hook-id"], HOOK_ID.to_string().as_str());
    assert_eq!(h["content-type"], "application/json");
    assert!(
        h["user-agent"]
            .to_str()
            .expect("ascii")
            .starts_with("GitHub-Hookshot/")
    );
    // GUID shape 8-4-4-4-12 and distinct per delivery.
    let parts: Vec<usize> = d.id.split('-').map(str::len).collect();
    assert_eq!(parts, vec![8, 4, 4, 4, 12]);
    let other = Delivery::from_payload("pull_request", &json!({}), "k").expect("serialises");
    assert_ne!(other.id, d.id);
}

#[test]
fn test_app_key_is_pkcs1_pem() {
    assert!(TEST_APP_PRIVATE_KEY_PEM.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
}
