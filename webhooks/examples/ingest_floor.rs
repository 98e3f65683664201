//! The floor of `scripts/bench-ingest`: the least a Rust webhook endpoint can do per delivery.
//!
//! `POST /webhook`: the body's HMAC-SHA256 with ring against `X-Hub-Signature-256` (compared in
//! constant time; 401 when it does not match), the body parsed with `serde_json` into a
//! `Value` (400 when it does not parse), then 202. No delivery-id memory, no queue, no
//! metrics, no logs: what any server that verifies and parses must spend at least, so the
//! bot's cost above it is what its ingest does beyond that.
//!
//! ```console
//! $ cargo run --release -p countersign-webhooks --example ingest_floor -- 127.0.0.1:8090 SECRET
//! ```

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

const SIGNATURE_HEADER: &str = "x-hub-signature-256";

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(secret_file)) = (args.next(), args.next()) else {
        eprintln!("usage: ingest_floor ADDR SECRET_FILE");
        std::process::exit(2);
    };
    let secret = std::fs::read(&secret_file)?;
    let secret = secret.strip_suffix(b"\n").unwrap_or(&secret);
    let key = Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret));
    let app = Router::new()
        .route("/webhook", post(webhook))
        .with_state(key);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn webhook(
    State(key): State<Arc<ring::hmac::Key>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(tag) = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.as_bytes().strip_prefix(b"sha256="))
        .and_then(decode_hex)
    else {
        return StatusCode::UNAUTHORIZED;
    };
    if ring::hmac::verify(&key, &body, &tag).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    hex.chunks_exact(2)
        .map(|pair| {
            let high = char::from(pair[0]).to_digit(16)?;
            let low = char::from(pair[1]).to_digit(16)?;
            u8::try_from(high * 16 + low).ok()
        })
        .collect()
}
