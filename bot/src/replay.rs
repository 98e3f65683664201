//! `countersign replay FILE…`: sends recorded webhook deliveries to a running bot, signed
//! with its secret, the way Prow's `phony` does. For people debugging their setup: record a
//! delivery from the App's "Advanced → Recent Deliveries" page (or `gh api
//! /app/hook/deliveries/ID`), then replay it against a port-forwarded bot.
//!
//! A file is either GitHub's delivery object (`{"guid", "event", "request": {"headers",
//! "payload"}}`, as the API returns it) or a bare payload, whose event then comes from
//! `--event` or a name such as `issues.labeled.json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use countersign_webhooks::github::ingress::{DELIVERY_HEADER, EVENT_HEADER, WEBHOOK_PATH};
use countersign_webhooks::github::signature::{SIGNATURE_HEADER, sign};
use http::{HeaderValue, Method};
use octocrab::Octocrab;
use serde_json::Value;

/// `countersign replay`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Recorded deliveries (JSON), sent in order.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// The bot's webhook URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080/webhook",
        value_name = "URL"
    )]
    pub url: String,

    /// File holding the webhook secret to sign with.
    #[arg(long, env = "GITHUB_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub secret_file: PathBuf,

    /// Event name for files that hold a bare payload (default: from the file name,
    /// `issues.labeled.json` → `issues`).
    #[arg(long)]
    pub event: Option<String>,

    /// Send the recorded delivery id instead of a fresh one (the bot then answers a second
    /// replay as a duplicate, exactly as it treats GitHub's redeliveries).
    #[arg(long)]
    pub keep_delivery_id: bool,
}

/// One delivery ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// `X-GitHub-Event`.
    pub event: String,
    /// The recorded `X-GitHub-Delivery`, when the file has one.
    pub delivery_id: Option<String>,
    /// The exact body to sign and send.
    pub body: Vec<u8>,
}

/// Reads a recorded delivery from `text` (named `path`, for the event-name fallback).
pub fn read_recorded(path: &Path, text: &str, event: Option<&str>) -> anyhow::Result<Recorded> {
    let value: Value =
        serde_json::from_str(text).with_context(|| format!("{} is not JSON", path.display()))?;
    let Some(object) = value.as_object() else {
        bail!("{} is not a JSON object", path.display());
    };
    if let Some(request) = object.get("request").and_then(Value::as_object) {
        let headers = request.get("headers").and_then(Value::as_object);
        let header = |name: &str| {
            headers.and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.as_str())
                    .map(str::to_owned)
            })
        };
        let event = event
            .map(str::to_owned)
            .or_else(|| header(EVENT_HEADER))
            .or_else(|| {
                object
                    .get("event")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .with_context(|| format!("{} names no event; pass --event", path.display()))?;
        let payload = request
            .get("payload")
            .with_context(|| format!("{} has no request.payload", path.display()))?;
        let delivery_id = header(DELIVERY_HEADER).or_else(|| {
            object
                .get("guid")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        return Ok(Recorded {
            event,
            delivery_id,
            body: serde_json::to_vec(payload)?,
        });
    }
    let event = match event {
        Some(e) => e.to_owned(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('.').next())
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .with_context(|| {
                format!("cannot tell the event of {}; pass --event", path.display())
            })?,
    };
    Ok(Recorded {
        event,
        delivery_id: None,
        body: text.as_bytes().to_vec(),
    })
}

/// A fresh delivery id in GitHub's format (a random UUID).
pub fn fresh_delivery_id() -> String {
    let b: [u8; 16] = rand::random();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Sends every file; prints one line per delivery with the bot's answer. Fails when a file
/// is unreadable or the bot cannot be reached; a non-2xx answer is reported and counted.
pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let secret = std::fs::read_to_string(&args.secret_file)
        .with_context(|| format!("Cannot read {}", args.secret_file.display()))?;
    let secret = secret.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!secret.is_empty(), "The webhook secret file is empty");
    let url = if args.url.ends_with(WEBHOOK_PATH) || args.url.contains('?') {
        args.url.clone()
    } else {
        format!("{}{WEBHOOK_PATH}", args.url.trim_end_matches('/'))
    };
    let http = Octocrab::builder()
        .set_connect_timeout(Some(Duration::from_secs(10)))
        .set_read_timeout(Some(Duration::from_secs(30)))
        .build()
        .context("Cannot build the HTTP client")?;
    let mut refused = 0;
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("Cannot read {}", path.display()))?;
        let recorded = read_recorded(path, &text, args.event.as_deref())?;
        let id = match (&recorded.delivery_id, args.keep_delivery_id) {
            (Some(id), true) => id.clone(),
            _ => fresh_delivery_id(),
        };
        let (status, answer) = send(&http, &url, secret, &recorded, &id).await?;
        println!(
            "{} {} ({}) → {} {}",
            path.display(),
            recorded.event,
            id,
            status,
            answer.trim()
        );
        if !(200..300).contains(&status) {
            refused += 1;
        }
    }
    anyhow::ensure!(
        refused == 0,
        "{refused} of {} deliveries were refused",
        args.files.len()
    );
    Ok(())
}

async fn send(
    http: &Octocrab,
    url: &str,
    secret: &str,
    recorded: &Recorded,
    id: &str,
) -> anyhow::Result<(u16, String)> {
    let header =
        |v: &str| HeaderValue::from_str(v).with_context(|| format!("bad header value {v:?}"));
    let request = http::Request::builder()
        .method(Method::POST)
        .uri(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, "countersign-replay")
        .header(EVENT_HEADER, header(&recorded.event)?)
        .header(DELIVERY_HEADER, header(id)?)
        .header(
            SIGNATURE_HEADER,
            header(&sign(secret.as_bytes(), &recorded.body))?,
        )
        .body(octocrab::OctoBody::from(Bytes::from(recorded.body.clone())))
        .context("Cannot build the request")?;
    let response = http
        .execute(request)
        .await
        .with_context(|| format!("Cannot reach the bot at {url}"))?;
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_delivery_objects_keep_event_id_and_payload() {
        let text = r#"{"guid":"g-1","event":"issues","action":"labeled",
            "request":{"headers":{"X-GitHub-Event":"issues","X-GitHub-Delivery":"d-1"},
                       "payload":{"action":"labeled","n":1}}}"#;
        let r = read_recorded(Path::new("x.json"), text, None).expect("reads");
        assert_eq!(r.event, "issues");
        assert_eq!(r.delivery_id.as_deref(), Some("d-1"));
        let body: Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["n"], 1);
    }

    #[test]
    fn bare_payloads_take_the_event_from_the_file_name_or_flag() {
        let text = r#"{"action":"labeled"}"#;
        let r = read_recorded(Path::new("dir/issues.labeled.json"), text, None).expect("reads");
        assert_eq!(r.event, "issues");
        assert_eq!(r.body, text.as_bytes(), "sent byte for byte");
        let r = read_recorded(Path::new("a.json"), text, Some("issue_comment")).expect("reads");
        assert_eq!(r.event, "issue_comment");
    }

    #[test]
    fn non_objects_are_refused_with_the_file_name() {
        let err = read_recorded(Path::new("bad.json"), "[1]", None).expect_err("refused");
        assert!(err.to_string().contains("bad.json"), "{err}");
        let err = read_recorded(Path::new("bad.json"), "nope", None).expect_err("refused");
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn fresh_ids_look_like_uuids_and_differ() {
        let a = fresh_delivery_id();
        assert_eq!(a.len(), 36);
        assert_eq!(a.matches('-').count(), 4);
        assert_ne!(a, fresh_delivery_id());
    }
}
