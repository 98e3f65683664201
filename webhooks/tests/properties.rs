//! Properties of webhook verification and parsing, the first code an untrusted delivery
//! reaches: the signature check accepts exactly GitHub's signature, and parsing never
//! panics on arbitrary bytes or on damaged real payloads (`@octokit/webhooks-examples`,
//! fetched by `scripts/fixtures`) while keeping what it reads. The fuzz targets
//! `webhook_verify` and `webhook_parse` (docs/fuzzing.md) explore the same functions without
//! bounds.
//!
//! Each property runs `PROPTEST_CASES` cases (256 unless set); a failure prints its minimal
//! input and seed and is kept in `proptest-regressions/properties.txt`, which is committed.

use std::path::PathBuf;
use std::sync::OnceLock;

use countersign_webhooks::github::event::{Event, IssuesAction, PullRequestAction};
use countersign_webhooks::github::parse::{Parsed, parse};
use countersign_webhooks::github::signature::{SignatureError, Verifier, sign};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/properties.txt",
        ))),
        ..ProptestConfig::default()
    }
}

/// The events Countersign parses, and one it does not.
const EVENTS: &[&str] = &[
    "ping",
    "issues",
    "issue_comment",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "merge_group",
    "check_run",
    "installation",
    "installation_repositories",
    "star",
];

/// `(event, body)` of every `@octokit/webhooks-examples` payload, or of a few literal ones
/// when the fixtures are not fetched (with `CI=true` they must be).
fn examples() -> &'static [(String, Vec<u8>)] {
    static EXAMPLES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
            "../tests/fixtures/node_modules/@octokit/webhooks-examples/api.github.com/index.json",
        );
        let Ok(text) = std::fs::read_to_string(&path) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but the webhook examples are missing ({}); run scripts/fixtures",
                path.display()
            );
            eprintln!(
                "note: {} is missing; mutating literal payloads only",
                path.display()
            );
            return vec![
                (
                    "issues".into(),
                    labeled_issue("ai:backend", "T", None)
                        .to_string()
                        .into_bytes(),
                ),
                (
                    "pull_request".into(),
                    labeled_pull_request("risk:high").to_string().into_bytes(),
                ),
            ];
        };
        let index: Vec<Value> = serde_json::from_str(&text).expect("index.json is JSON");
        index
            .iter()
            .flat_map(|event| {
                let name = event["name"].as_str().expect("event name").to_owned();
                event["examples"]
                    .as_array()
                    .expect("examples")
                    .iter()
                    .map(move |e| (name.clone(), serde_json::to_vec(e).expect("serialises")))
            })
            .collect()
    })
}

fn repository() -> Value {
    json!({"id": 7, "name": "api", "owner": {"login": "acme"}})
}

fn sender() -> Value {
    json!({"id": 1, "login": "alice", "type": "User"})
}

fn labeled_issue(label: &str, title: &str, body: Option<&str>) -> Value {
    json!({
        "action": "labeled",
        "label": {"name": label},
        "issue": {
            "number": 42,
            "title": title,
            "body": body,
            "user": {"id": 2, "login": "bob", "type": "User"},
            "labels": [{"name": label}],
            "state": "open",
        },
        "repository": repository(),
        "sender": sender(),
        "installation": {"id": 9},
    })
}

fn labeled_pull_request(label: &str) -> Value {
    json!({
        "action": "labeled",
        "label": {"name": label},
        "pull_request": {
            "number": 5,
            "title": "P",
            "user": {"id": 3, "login": "cs[bot]", "type": "Bot"},
            "head": {"ref": "feat", "sha": "abc", "repo": {"full_name": "acme/api"}},
            "base": {"ref": "main", "sha": "def", "repo": null},
            "state": "open",
            "labels": [{"name": label}],
        },
        "repository": repository(),
        "sender": sender(),
    })
}

/// Any string, including JSON escapes, control characters and astral code points.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
    ]
}

fn one_byte_changed(bytes: &[u8], at: prop::sample::Index, xor: u8) -> Vec<u8> {
    let mut changed = bytes.to_vec();
    changed[at.index(bytes.len())] ^= xor;
    changed
}

proptest! {
    #![proptest_config(config(256))]

    /// The signature GitHub computes is accepted with the index of the secret that made it
    /// (the first equal one when secrets repeat), whichever live secret that is.
    #[test]
    fn the_right_signature_is_accepted(
        secrets in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..4),
        pick in any::<prop::sample::Index>(),
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let verifier = Verifier::new(&secrets);
        let i = pick.index(secrets.len());
        let signature = sign(&secrets[i], &body);
        let first = secrets.iter().position(|s| *s == secrets[i]).expect("present");
        prop_assert_eq!(verifier.verify(Some(signature.as_bytes()), false, &body), Ok(first));
        prop_assert_eq!(verifier.verify(Some(signature.as_bytes()), true, &body), Ok(first));
    }

    /// Changing any one byte of the body refuses the delivery as a mismatch; changing any
    /// one byte of the signature refuses it as a mismatch (another hex digit) or as
    /// malformed (anything else).
    #[test]
    fn any_single_byte_change_is_refused(
        secret in prop::collection::vec(any::<u8>(), 0..40),
        body in prop::collection::vec(any::<u8>(), 1..512),
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let verifier = Verifier::new([&secret]);
        let signature = sign(&secret, &body);
        prop_assert_eq!(
            verifier.verify(Some(signature.as_bytes()), false, &one_byte_changed(&body, at, xor)),
            Err(SignatureError::Mismatch)
        );
        let header = one_byte_changed(signature.as_bytes(), at, xor);
        let i = at.index(header.len());
        let still_hex = i >= "sha256=".len() && matches!(header[i], b'0'..=b'9' | b'a'..=b'f');
        let expected = if still_hex { SignatureError::Mismatch } else { SignatureError::Malformed };
        prop_assert_eq!(verifier.verify(Some(&header), false, &body), Err(expected));
    }

    /// Any header at all is refused, with a reason, unless it is the signature.
    #[test]
    fn arbitrary_headers_are_refused(
        header in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            "sha256=[0-9a-fA-F]{60,68}".prop_map(String::into_bytes),
        ],
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let verifier = Verifier::new(["s3cret"]);
        let result = verifier.verify(Some(&header), false, &body);
        prop_assert_ne!(result, Err(SignatureError::Missing));
        prop_assert_eq!(result.is_ok(), header == sign(b"s3cret", &body).into_bytes());
    }

    /// Arbitrary bytes under any event name are an error or a parsed delivery, never a
    /// panic; parsing twice gives the same answer.
    #[test]
    fn arbitrary_bodies_never_panic(
        event in prop::sample::select(EVENTS),
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            "\\{(\"action\":\"[a-z_]{0,12}\",?)?[\"a-z:{}\\[\\],0-9 ]{0,120}\\}".prop_map(String::into_bytes),
        ],
    ) {
        let first = parse(event, &body);
        let second = parse(event, &body);
        prop_assert_eq!(first.as_ref().ok(), second.as_ref().ok());
        if let Ok(Parsed::Unsupported { event: name, .. }) = &first {
            prop_assert_eq!(name.as_str(), event);
        }
    }

    /// Real payloads damaged (bytes changed, cut short, parsed as another event) are an
    /// error or a parsed delivery, never a panic.
    #[test]
    fn damaged_real_payloads_never_panic(
        pick in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        other in prop::sample::select(EVENTS),
        as_other in any::<bool>(),
    ) {
        let (event, body) = &examples()[pick.index(examples().len())];
        let mut body = body.clone();
        for (at, byte) in flips {
            let i = at.index(body.len());
            body[i] = byte;
        }
        body.truncate(cut.index(body.len() + 1).max(body.len() / 2));
        let event = if as_other { other } else { event.as_str() };
        let _ = parse(event, &body);
    }

    /// The label and issue text of a labeled issue come through exactly, whatever they
    /// contain; so does the label of a labeled pull request.
    #[test]
    fn labeled_events_round_trip(
        label in any_text(),
        title in any_text(),
        body in proptest::option::of(any_text()),
    ) {
        let payload = labeled_issue(&label, &title, body.as_deref()).to_string();
        let parsed = parse("issues", payload.as_bytes());
        let Ok(Parsed::Event(event)) = parsed else {
            return Err(TestCaseError::fail(format!("not an event: {parsed:?}")));
        };
        let Event::Issues(issue) = *event else {
            return Err(TestCaseError::fail("not an issues event"));
        };
        prop_assert_eq!(issue.action, IssuesAction::Labeled(label.clone()));
        prop_assert_eq!(&issue.issue.title, &title);
        prop_assert_eq!(&issue.issue.body, &body);
        prop_assert_eq!(&issue.issue.labels, &vec![label.clone()]);

        let payload = labeled_pull_request(&label).to_string();
        let parsed = parse("pull_request", payload.as_bytes());
        let Ok(Parsed::Event(event)) = parsed else {
            return Err(TestCaseError::fail(format!("not an event: {parsed:?}")));
        };
        let Event::PullRequest(pr) = *event else {
            return Err(TestCaseError::fail("not a pull_request event"));
        };
        prop_assert_eq!(pr.action, PullRequestAction::Labeled(label));
    }
}

/// Every real example parses: into an event, or as an event Countersign ignores.
#[test]
fn every_real_example_parses() {
    let failures: Vec<String> = examples()
        .iter()
        .filter_map(|(event, body)| parse(event, body).err().map(|e| format!("{event}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
