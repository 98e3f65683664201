//! The two library choices of webhook ingest, measured on real GitHub payloads: ring's
//! HMAC-SHA256 against the `hmac` + `sha2` crates for checking `X-Hub-Signature-256`, and our
//! borrowed webhook models ([`countersign_webhooks::github::parse`]) against octocrab's typed
//! `WebhookEvent` for parsing, with untyped `serde_json::Value` as a reference.
//!
//! The payloads are the largest `pull_request` `opened` (24 KB) and `issues` `labeled` (12 KB)
//! examples of `@octokit/webhooks-examples`, fetched by `scripts/fixtures`.
//!
//! Run: `cargo bench -p countersign-webhooks --bench verify_parse` (release profile). Prints a
//! table of medians; numbers are recorded in docs/benchmarks.md. Not a test: nothing here
//! asserts on time, only that both sides of each comparison agree on every payload.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use countersign_webhooks::github::event::{Event, IssuesAction};
use countersign_webhooks::github::parse::{Parsed, parse};
use countersign_webhooks::github::signature::{Verifier, sign};
use hmac::{Hmac, Mac};
use octocrab::models::webhook_events::{WebhookEvent, WebhookEventPayload};
use serde_json::Value;
use sha2::Sha256;

const SECRET: &[u8] = b"a webhook secret of the usual length";

/// The largest example of `event` with `action`, serialised compactly as GitHub sends it.
fn example(index: &[Value], event: &str, action: &str) -> Vec<u8> {
    index
        .iter()
        .filter(|e| e["name"] == event)
        .flat_map(|e| e["examples"].as_array().expect("examples"))
        .filter(|e| e["action"] == action)
        .map(|e| serde_json::to_vec(e).expect("serialises"))
        .max_by_key(Vec::len)
        .unwrap_or_else(|| panic!("no {event}.{action} example"))
}

/// What both parsers must agree on: the fields Countersign's handlers read.
#[derive(Debug, PartialEq)]
struct Summary {
    number: u64,
    title: String,
    labels: Vec<String>,
    label: Option<String>,
    head_sha: Option<String>,
    base_branch: Option<String>,
    repository: String,
    sender: String,
    installation: Option<u64>,
}

fn ours(event: &str, body: &[u8]) -> Summary {
    let Ok(Parsed::Event(event)) = parse(event, body) else {
        panic!("{event} is a handled event");
    };
    match *event {
        Event::PullRequest(e) => Summary {
            number: e.pull_request.number,
            title: e.pull_request.title,
            labels: e.pull_request.labels,
            label: None,
            head_sha: Some(e.pull_request.head.sha),
            base_branch: Some(e.pull_request.base.branch),
            repository: e.repository.full_name(),
            sender: e.sender.login,
            installation: e.installation_id,
        },
        Event::Issues(e) => Summary {
            number: e.issue.number,
            title: e.issue.title,
            labels: e.issue.labels,
            label: match e.action {
                IssuesAction::Labeled(l) | IssuesAction::Unlabeled(l) => Some(l),
            },
            head_sha: None,
            base_branch: None,
            repository: e.repository.full_name(),
            sender: e.sender.login,
            installation: e.installation_id,
        },
        other => panic!("unexpected {other:?}"),
    }
}

fn octocrab_event(event: &str, body: &[u8]) -> WebhookEvent {
    WebhookEvent::try_from_header_and_body(event, body).expect("octocrab parses the example")
}

fn octocrab_summary(event: &str, body: &[u8]) -> Summary {
    let e = octocrab_event(event, body);
    let repository = e.repository.as_ref().expect("repository");
    let repository = format!(
        "{}/{}",
        repository.owner.as_ref().expect("owner").login,
        repository.name
    );
    let sender = e.sender.as_ref().expect("sender").login.clone();
    let installation = e.installation.as_ref().map(|i| i.id().into_inner());
    match e.specific {
        WebhookEventPayload::PullRequest(p) => Summary {
            number: p.pull_request.number,
            title: p.pull_request.title.clone().unwrap_or_default(),
            labels: (p.pull_request.labels.iter().flatten())
                .map(|l| l.name.clone())
                .collect(),
            label: None,
            head_sha: Some(p.pull_request.head.sha.clone()),
            base_branch: Some(p.pull_request.base.ref_field.clone()),
            repository,
            sender,
            installation,
        },
        WebhookEventPayload::Issues(p) => Summary {
            number: p.issue.number,
            title: p.issue.title.clone(),
            labels: p.issue.labels.iter().map(|l| l.name.clone()).collect(),
            label: p.label.as_ref().map(|l| l.name.clone()),
            head_sha: None,
            base_branch: None,
            repository,
            sender,
            installation,
        },
        other => panic!("unexpected {other:?}"),
    }
}

struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
    runs: usize,
}

/// Times `runs` batches of `batch` calls after one warm-up batch; durations are per call.
fn measure<T>(runs: usize, batch: u32, mut f: impl FnMut() -> T) -> Stats {
    let mut time_batch = || {
        let start = Instant::now();
        for _ in 0..batch {
            black_box(f());
        }
        start.elapsed() / batch
    };
    time_batch(); // warm-up
    let mut times: Vec<Duration> = (0..runs).map(|_| time_batch()).collect();
    times.sort();
    Stats {
        median: times[times.len() / 2],
        min: times[0],
        max: times[times.len() - 1],
        runs,
    }
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

fn row(name: &str, s: &Stats) {
    println!(
        "| {name:<54} | {:>4} | {:>10} | {:>10} | {:>10} |",
        s.runs,
        us(s.median),
        us(s.min),
        us(s.max)
    );
}

fn ratio(name: &str, slow: &Stats, fast: &Stats) {
    println!(
        "{name}: {:.2}x",
        slow.median.as_secs_f64() / fast.median.as_secs_f64()
    );
}

/// Whether the CPU has the SHA instructions both libraries use when present.
fn sha_extensions() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("sha") {
        return "yes";
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("sha2") {
        return "yes";
    }
    "no"
}

/// One payload's timings.
struct Payload {
    name: &'static str,
    bytes: usize,
    ring: Stats,
    rust_crypto: Stats,
    verifier: Stats,
    borrowed: Stats,
    octocrab: Stats,
    value: Stats,
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(51);
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../tests/fixtures/node_modules/@octokit/webhooks-examples/api.github.com/index.json",
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/fixtures to fetch the webhook examples",
            path.display()
        )
    });
    let index: Vec<Value> = serde_json::from_str(&text).expect("index.json is JSON");
    let payloads = [
        (
            "pull_request.opened",
            "pull_request",
            example(&index, "pull_request", "opened"),
        ),
        (
            "issues.labeled",
            "issues",
            example(&index, "issues", "labeled"),
        ),
    ];

    let verifier = Verifier::new([SECRET]);
    let ring_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET);
    let rust_crypto_key = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    println!(
        "ring 0.17, hmac 0.12 + sha2 0.10; SHA extensions on this CPU: {}",
        sha_extensions()
    );

    let mut results = Vec::new();
    for (name, event, body) in &payloads {
        let header = sign(SECRET, body);
        let tag = ring::hmac::sign(&ring_key, body);
        let tag = tag.as_ref();
        let ring_verify = || ring::hmac::verify(&ring_key, body, tag).is_ok();
        let rust_crypto_verify = || {
            let mut mac = rust_crypto_key.clone();
            mac.update(body);
            mac.verify_slice(tag).is_ok()
        };
        // Both accept GitHub's signature and refuse a body with one bit flipped.
        let mut flipped = body.clone();
        flipped[body.len() / 2] ^= 1;
        assert!(ring_verify() && rust_crypto_verify(), "{name}: signature");
        assert!(ring::hmac::verify(&ring_key, &flipped, tag).is_err());
        let mut mac = rust_crypto_key.clone();
        mac.update(&flipped);
        assert!(mac.verify_slice(tag).is_err(), "{name}: flipped body");
        assert_eq!(
            verifier.verify(Some(header.as_bytes()), false, body),
            Ok(0),
            "{name}: Verifier"
        );
        // Both parsers read the same pull request or issue.
        let summary = ours(event, body);
        assert_eq!(summary, octocrab_summary(event, body), "{name}: parse");
        println!(
            "{name}: {} bytes; #{} {:?}, labels {:?}, {} by {}",
            body.len(),
            summary.number,
            summary.title,
            summary.labels,
            summary.repository,
            summary.sender
        );

        let ring = measure(runs, 2_000, ring_verify);
        let rust_crypto = measure(runs, 2_000, rust_crypto_verify);
        let verifier = measure(runs, 2_000, || {
            verifier.verify(Some(header.as_bytes()), false, body)
        });
        let borrowed = measure(runs, 200, || parse(event, body));
        let octocrab = measure(runs, 200, || octocrab_event(event, body));
        let value = measure(runs, 200, || {
            serde_json::from_slice::<Value>(body).expect("JSON")
        });
        results.push(Payload {
            name,
            bytes: body.len(),
            ring,
            rust_crypto,
            verifier,
            borrowed,
            octocrab,
            value,
        });
    }

    println!();
    println!(
        "| {:<54} | {:>4} | {:>10} | {:>10} | {:>10} |",
        "case (per delivery)", "runs", "median", "min", "max"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(56),
        "-".repeat(6),
        "-".repeat(12),
        "-".repeat(12),
        "-".repeat(12)
    );
    for p in &results {
        let name = p.name;
        row(&format!("{name}: HMAC verify, ring"), &p.ring);
        row(&format!("{name}: HMAC verify, hmac + sha2"), &p.rust_crypto);
        row(
            &format!("{name}: Verifier::verify (ring + header)"),
            &p.verifier,
        );
        row(&format!("{name}: parse, our borrowed models"), &p.borrowed);
        row(
            &format!("{name}: parse, octocrab WebhookEvent"),
            &p.octocrab,
        );
        row(&format!("{name}: parse, serde_json::Value"), &p.value);
    }
    println!();
    for p in &results {
        let name = p.name;
        let mbps = |s: &Stats| p.bytes as f64 / s.median.as_secs_f64() / 1e6;
        ratio(
            &format!("{name}: hmac + sha2 / ring"),
            &p.rust_crypto,
            &p.ring,
        );
        println!(
            "{name}: HMAC throughput ring {:.0} MB/s, hmac + sha2 {:.0} MB/s",
            mbps(&p.ring),
            mbps(&p.rust_crypto)
        );
        ratio(
            &format!("{name}: octocrab / borrowed"),
            &p.octocrab,
            &p.borrowed,
        );
        ratio(&format!("{name}: Value / borrowed"), &p.value, &p.borrowed);
    }
}
