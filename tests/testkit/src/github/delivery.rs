//! Signed webhook deliveries: the bytes and headers GitHub's Hookshot sends.
//!
//! A [`Delivery`] is built from an event name and a JSON payload (ours or a real octokit
//! example) and signed with the webhook secret exactly as GitHub does:
//! `X-Hub-Signature-256: sha256=<lowercase hex HMAC-SHA256 of the raw body>`.

use axum::body::Body;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use ring::hmac;

/// The `X-GitHub-Hook-ID` every fake delivery carries.
pub const HOOK_ID: u64 = 424_242;

/// The `User-Agent` GitHub's webhook sender uses (`GitHub-Hookshot/<build>`).
pub const USER_AGENT: &str = "GitHub-Hookshot/044aadd";

/// Why a delivery could not be built or sent.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The payload could not be serialised to JSON.
    #[error("cannot serialise the webhook payload")]
    Serialise(#[source] serde_json::Error),
    /// A header value (event name, id) is not a valid HTTP header value.
    #[error("invalid header value for {0}")]
    Header(&'static str),
    /// The request could not be assembled.
    #[error("cannot build the webhook request")]
    Request(#[source] http::Error),
}

/// One signed webhook delivery, ready to post or to feed to `Router::oneshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The `X-GitHub-Event` name, e.g. `issues` or `pull_request`.
    pub event: String,
    /// The `X-GitHub-Delivery` GUID.
    pub id: String,
    /// The raw JSON body, byte for byte what was signed.
    pub body: Vec<u8>,
    /// The `X-Hub-Signature-256` value: `sha256=` + lowercase hex HMAC-SHA256 of `body`.
    pub signature: String,
}

impl Delivery {
    /// Builds a delivery for an arbitrary payload (e.g. a real octokit example), signed with
    /// `secret`, with a fresh random GUID.
    pub fn from_payload(
        event: &str,
        payload: &serde_json::Value,
        secret: &str,
    ) -> Result<Self, DeliveryError> {
        let body = serde_json::to_vec(payload).map_err(DeliveryError::Serialise)?;
        Ok(Self::from_body(event, body, secret))
    }

    /// Builds a delivery for raw body bytes, signed with `secret`, with a fresh random GUID.
    pub fn from_body(event: &str, body: Vec<u8>, secret: &str) -> Self {
        let signature = sign(secret, &body);
        Self {
            event: event.to_owned(),
            id: random_guid(),
            body,
            signature,
        }
    }

    /// The same delivery (same id and body) re-signed with another secret.
    pub fn signed_with(&self, secret: &str) -> Self {
        Self {
            signature: sign(secret, &self.body),
            ..self.clone()
        }
    }

    /// The body parsed as JSON.
    pub fn payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// The headers GitHub sends with this delivery.
    pub fn headers(&self) -> Result<HeaderMap, DeliveryError> {
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| -> Result<(), DeliveryError> {
            let value = HeaderValue::from_str(value).map_err(|_| DeliveryError::Header(name))?;
            headers.insert(HeaderName::from_static(name), value);
            Ok(())
        };
        put("x-github-event", &self.event)?;
        put("x-github-delivery", &self.id)?;
        put("x-hub-signature-256", &self.signature)?;
        put("x-github-hook-id", &HOOK_ID.to_string())?;
        put("x-github-hook-installation-target-type", "integration")?;
        put("content-type", "application/json")?;
        put("user-agent", USER_AGENT)?;
        Ok(headers)
    }

    /// A `POST path` request carrying this delivery, for `tower::ServiceExt::oneshot`.
    pub fn to_request(&self, path: &str) -> Result<Request<Body>, DeliveryError> {
        let mut builder = Request::post(path);
        for (name, value) in &self.headers()? {
            builder = builder.header(name, value);
        }
        builder
            .body(Body::from(self.body.clone()))
            .map_err(DeliveryError::Request)
    }
}

/// `sha256=` + lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    let tag = hmac::sign(&key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for byte in tag.as_ref() {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A random version-4 style GUID, as GitHub uses for `X-GitHub-Delivery`.
fn random_guid() -> String {
    let n: u128 = rand::random();
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-4{}-a{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

/// Sends `payload` as a signed `event` delivery through `router` (the bot's HTTP surface,
/// in process) and returns the status it answered.
///
/// # Panics
/// When the payload cannot be signed or the router fails (mistakes in the test itself).
pub async fn deliver_to(
    router: &axum::Router,
    event: &str,
    payload: &serde_json::Value,
    secret: &str,
) -> http::StatusCode {
    use tower::ServiceExt as _;
    let delivery = Delivery::from_payload(event, payload, secret).expect("a signable payload");
    let request = delivery.to_request("/webhook").expect("a valid request");
    router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers")
        .status()
}

/// Waits until `router` answers `GET /readyz` with 200 (the bot has read its Projects).
///
/// # Panics
/// When it is not ready within `timeout`.
pub async fn wait_until_ready(router: &axum::Router, timeout: std::time::Duration) {
    use tower::ServiceExt as _;
    tokio::time::timeout(timeout, async {
        loop {
            let request = http::Request::get("/readyz")
                .body(axum::body::Body::empty())
                .expect("a valid request");
            let response = router.clone().oneshot(request).await.expect("an answer");
            if response.status().is_success() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the bot is ready in time");
}
