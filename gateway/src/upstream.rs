//! One request to one provider: the body as that provider must get it (its model, usage in
//! streams), the headers (its key, never the agent's token), the HTTP client (hyper-util with
//! rustls and ring, HTTP/1.1, the system's roots), and what an answer means for failover
//! (429, 408, 5xx and 529 are worth another try; `Retry-After` is read in seconds).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use crate::plan::{ANTHROPIC_VERSION, Protocol, Upstream};

/// The HTTP client to providers.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Sent as `User-Agent` to providers.
pub const USER_AGENT: &str = concat!("countersign-gateway/", env!("CARGO_PKG_VERSION"));

/// Builds the client: HTTPS with the system's root certificates (and plain HTTP, for
/// in-cluster model servers), HTTP/1.1, connections kept alive.
pub fn client() -> HttpClient {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = match hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(provider.clone())
    {
        Ok(builder) => builder,
        Err(error) => {
            tracing::warn!(%error, "no system root certificates: only plain-HTTP providers can be reached");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config)
        }
    };
    let https = builder.https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https)
}

/// The request body for `upstream`: the client's JSON with the provider's model (when the
/// provider entry names one) and, for OpenAI streams, usage in the last chunk.
pub fn body_for(request: &Value, upstream: &Upstream, streaming: bool) -> Bytes {
    let mut body = request.clone();
    if let Some(model) = &upstream.model {
        body["model"] = Value::String(model.clone());
    }
    if streaming && upstream.protocol == Protocol::OpenAi {
        body["stream_options"]["include_usage"] = Value::Bool(true);
    }
    Bytes::from(serde_json::to_vec(&body).expect("a JSON value always serialises"))
}

/// The request to `upstream` with `key`, carrying over only the client headers the protocol
/// needs (`anthropic-version`, `anthropic-beta`, `accept`).
pub fn request_for(
    upstream: &Upstream,
    key: Option<&SecretString>,
    client_headers: &HeaderMap,
    body: Bytes,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut builder = Request::builder()
        .method(Method::POST)
        .uri(&upstream.url)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::USER_AGENT, USER_AGENT);
    if let Some(accept) = client_headers.get(header::ACCEPT) {
        builder = builder.header(header::ACCEPT, accept.clone());
    }
    match upstream.protocol {
        Protocol::OpenAi => {
            if let Some(key) = key {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose_secret()))
                    .unwrap_or_else(|_| HeaderValue::from_static(""));
                value.set_sensitive(true);
                builder = builder.header(header::AUTHORIZATION, value);
            }
        }
        Protocol::Anthropic => {
            let version = client_headers
                .get("anthropic-version")
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static(ANTHROPIC_VERSION));
            builder = builder.header("anthropic-version", version);
            if let Some(beta) = client_headers.get("anthropic-beta") {
                builder = builder.header("anthropic-beta", beta.clone());
            }
            if let Some(key) = key {
                let mut value = HeaderValue::from_str(key.expose_secret())
                    .unwrap_or_else(|_| HeaderValue::from_static(""));
                value.set_sensitive(true);
                builder = builder.header("x-api-key", value);
            }
        }
    }
    builder.body(Full::new(body))
}

/// Whether an answer with `status` is worth another try (here or at the next provider).
pub fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500..=599)
}

/// `Retry-After` in seconds, when sent.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The wait before retry number `retry` (0-based) without `Retry-After`: 250 ms doubling,
/// at most `cap`.
pub fn backoff(retry: u32, cap: Duration) -> Duration {
    Duration::from_millis(250)
        .saturating_mul(2u32.saturating_pow(retry.min(16)))
        .min(cap)
}

/// `body` with every occurrence of `key` replaced (providers echo wrong keys in errors).
pub fn scrub(body: &[u8], key: Option<&SecretString>) -> Bytes {
    let Some(key) = key.map(|k| k.expose_secret()).filter(|k| k.len() >= 4) else {
        return Bytes::copy_from_slice(body);
    };
    let text = String::from_utf8_lossy(body);
    if text.contains(key) {
        Bytes::from(text.replace(key, "[redacted]"))
    } else {
        Bytes::copy_from_slice(body)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn upstream(protocol: Protocol, model: Option<&str>) -> Upstream {
        Upstream {
            provider: "p".into(),
            protocol,
            url: "http://model/v1/chat/completions".into(),
            model: model.map(str::to_owned),
            key: None,
            retries: 1,
            input_cents_per_million: 0,
            output_cents_per_million: 0,
        }
    }

    #[test]
    fn bodies_get_the_providers_model_and_stream_usage() {
        let request = json!({"model": "asked", "messages": [], "stream": true});
        let body = body_for(
            &request,
            &upstream(Protocol::OpenAi, Some("fallback-model")),
            true,
        );
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["model"], "fallback-model");
        assert_eq!(v["stream_options"]["include_usage"], true);
        let body = body_for(&request, &upstream(Protocol::Anthropic, None), true);
        let v: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["model"], "asked");
        assert!(v.get("stream_options").is_none());
    }

    #[test]
    fn the_key_goes_in_the_protocols_header_and_the_token_stays_behind() {
        let mut client = HeaderMap::new();
        client.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer csgw_token"),
        );
        client.insert("x-api-key", HeaderValue::from_static("csgw_token"));
        client.insert("anthropic-beta", HeaderValue::from_static("tools-2024"));
        let key = SecretString::from("sk-real");
        let openai = request_for(
            &upstream(Protocol::OpenAi, None),
            Some(&key),
            &client,
            Bytes::new(),
        )
        .expect("request");
        assert_eq!(openai.headers()[header::AUTHORIZATION], "Bearer sk-real");
        assert!(openai.headers().get("x-api-key").is_none());
        let anthropic = request_for(
            &upstream(Protocol::Anthropic, None),
            Some(&key),
            &client,
            Bytes::new(),
        )
        .expect("request");
        assert_eq!(anthropic.headers()["x-api-key"], "sk-real");
        assert_eq!(anthropic.headers()["anthropic-version"], ANTHROPIC_VERSION);
        assert_eq!(anthropic.headers()["anthropic-beta"], "tools-2024");
        assert!(anthropic.headers().get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn failover_signals_are_read_from_the_answer() {
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(retryable(StatusCode::from_u16(529).expect("529")));
        assert!(!retryable(StatusCode::UNAUTHORIZED));
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        assert_eq!(
            backoff(0, Duration::from_secs(30)),
            Duration::from_millis(250)
        );
        assert_eq!(
            backoff(10, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        let key = SecretString::from("sk-real-key");
        assert_eq!(
            &scrub(b"Incorrect API key provided: sk-real-key", Some(&key))[..],
            b"Incorrect API key provided: [redacted]"
        );
    }
}
