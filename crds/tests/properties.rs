//! Properties of the controller ↔ agent contract (the task file and the agent's result) and
//! of Go durations: generated values round-trip, and arbitrary input is refused with an
//! error, never a panic or a hang. The fuzz targets `go_duration`, `task_file` and
//! `agent_result` (docs/fuzzing.md) explore the same entry points without bounds.
//!
//! Each property runs `PROPTEST_CASES` cases (256 unless set); a failure prints its minimal
//! input and seed and is kept in `proptest-regressions/properties.txt`, which is committed.

use std::time::Duration;

use countersign_crds::GoDuration;
use countersign_crds::Usd;
use countersign_crds::agent_run::Usage;
use countersign_crds::result::{
    AgentResult, MAX_REPORT_CHARS, MAX_RESULT_BYTES, MAX_SUMMARY_CHARS, MAX_VERIFICATION_CHARS,
    RESULT_VERSION, ResultError, ResultOutcome,
};
use countersign_crds::task_file::{TASK_FILE_VERSION, TaskFile};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

/// The longest duration `GoDuration` reads, in nanoseconds (about 146 years; Go's limit is
/// twice that, but go-parse-duration checks each segment against `1 << 62`).
const MAX_PARSED_NANOS: u64 = 1 << 62;

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

/// Durations a person writes (whole units) and arbitrary ones down to the nanosecond.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..=10_000).prop_map(Duration::from_secs),
        (0u64..=100_000_000).prop_map(Duration::from_millis),
        (0u64..=MAX_PARSED_NANOS).prop_map(Duration::from_nanos),
    ]
}

/// Text in the Go duration grammar: `<digits>[.<digits>]<unit>`, repeated.
fn duration_text() -> impl Strategy<Value = String> {
    let segment = (
        "[0-9]{1,25}",
        proptest::option::of("[0-9]{0,30}"),
        prop::sample::select(vec!["ns", "us", "µs", "μs", "ms", "s", "m", "h"]),
    )
        .prop_map(|(int, frac, unit)| match frac {
            Some(frac) => format!("{int}.{frac}{unit}"),
            None => format!("{int}{unit}"),
        });
    prop::collection::vec(segment, 1..5).prop_map(|s| s.concat())
}

/// Strings with JSON's awkward characters: quotes, backslashes, control characters,
/// non-ASCII and astral code points.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
        proptest::string::string_regex(&format!("[a-z0-9 \"\\\\\n\t\u{0}é€😀…]{{0,{max}}}"))
            .expect("a valid regex"),
    ]
}

fn outcome() -> impl Strategy<Value = ResultOutcome> {
    prop::sample::select(vec![
        ResultOutcome::Succeeded,
        ResultOutcome::NoChanges,
        ResultOutcome::PlanReady,
        ResultOutcome::ProviderError,
        ResultOutcome::RateLimited,
        ResultOutcome::GuardrailViolation,
        ResultOutcome::Failed,
    ])
}

/// A result whose pointers are as large as the CRDs allow (a 63-character provider, the
/// `countersign/<run>` branch, a 40-hex commit) and whose free texts are anything up to
/// `max_text` characters.
fn agent_result(max_text: usize) -> impl Strategy<Value = AgentResult> {
    (
        outcome(),
        proptest::option::of("[a-z0-9-]{1,63}"),
        proptest::option::of("countersign/[a-z0-9-]{1,63}"),
        proptest::option::of("[0-9a-f]{40}"),
        (any::<u32>(), any::<u64>(), any::<u64>()),
        [
            proptest::option::of(text(max_text)),
            proptest::option::of(text(max_text)),
            proptest::option::of(text(max_text)),
            proptest::option::of(text(max_text)),
        ],
        (any::<u64>(), any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(outcome, provider, branch, commit, counts, texts, usage)| {
                let [summary, reason, report, verification] = texts;
                AgentResult {
                    version: RESULT_VERSION,
                    outcome,
                    provider,
                    branch,
                    commit,
                    files_changed: counts.0,
                    lines_added: counts.1,
                    lines_removed: counts.2,
                    summary,
                    reason,
                    report,
                    verification,
                    usage: Usage {
                        input_tokens: usage.0,
                        output_tokens: usage.1,
                        cost: Usd { cents: usage.2 },
                    },
                }
            },
        )
}

/// Whether `cut` is what `to_message` may have made of `original`: unchanged, or its first
/// characters followed by `…`.
fn is_shortened(original: &Option<String>, cut: &Option<String>) -> bool {
    match (original, cut) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(o), Some(c)) => {
            c == o
                || c.strip_suffix('…')
                    .is_some_and(|prefix| o.starts_with(prefix))
        }
    }
}

fn usd() -> impl Strategy<Value = String> {
    (0u64..1_000_000_000, proptest::option::of(0u64..100)).prop_map(|(d, c)| match c {
        Some(c) => format!("{d}.{c:02}"),
        None => d.to_string(),
    })
}

fn user() -> impl Strategy<Value = Value> {
    ("[a-zA-Z0-9-]{1,39}", proptest::option::of(1u64..u64::MAX)).prop_map(|(login, id)| match id {
        Some(id) => json!({"login": login, "id": id}),
        None => json!({"login": login}),
    })
}

/// A task file as the controller writes it, as JSON, with every optional part present or
/// not. Built as JSON so it also checks that what the controller writes is what the agent
/// reads.
fn task_json() -> impl Strategy<Value = Value> {
    let task = (
        proptest::option::of(1u64..100_000),
        text(64),
        proptest::option::of(text(200)),
        proptest::option::of(text(100)),
        proptest::option::of(user()),
        prop::collection::vec(user(), 0..3),
        prop::sample::select(vec!["issueLabel", "comment", "kubectl"]),
    )
        .prop_map(
            |(issue, title, body, instructions, by, requesters, source)| {
                let mut task = json!({"title": title, "source": source});
                if let Some(n) = issue {
                    task["issueNumber"] = json!(n);
                }
                if let Some(b) = body {
                    task["body"] = json!(b);
                }
                if let Some(i) = instructions {
                    task["instructions"] = json!(i);
                }
                if let Some(u) = by {
                    task["requestedBy"] = u;
                }
                if !requesters.is_empty() {
                    task["requesters"] = json!(requesters);
                }
                task
            },
        );
    let provider = (
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
        prop::sample::select(vec!["openai", "anthropic", "command"]),
        proptest::option::of("[a-z0-9./:-]{1,40}"),
        proptest::option::of(0u32..=10),
        proptest::option::of(usd()),
        prop::collection::vec(text(16), 1..4),
    )
        .prop_map(|(name, kind, model, retries, price, command)| {
            let mut p = json!({"name": name, "kind": kind});
            if let Some(m) = model {
                p["model"] = json!(m);
                p["baseUrl"] = json!(format!("https://{m}"));
            }
            if let Some(r) = retries {
                p["retries"] = json!(r);
            }
            if let Some(price) = price {
                p["inputPricePerMillion"] = json!(price);
                p["outputPricePerMillion"] = json!(price);
            }
            if kind == "command" {
                p["command"] = json!({"command": command, "api": "anthropic"});
            }
            p
        });
    let limits = (
        duration(),
        1u32..1000,
        1000u64..100_000_000,
        usd(),
        1u32..10_000,
    )
        .prop_map(|(timeout, turns, tokens, cost, files)| {
            json!({
                "timeout": GoDuration(timeout).to_string(),
                "maxTurns": turns,
                "maxTokens": tokens,
                "maxCost": cost,
                "maxChangedFiles": files,
                "maxChangedLines": files * 10,
            })
        });
    let verify = prop::collection::vec(
        (
            "[a-z0-9]{1,20}",
            prop::collection::vec(text(16), 1..4),
            proptest::option::of(duration()),
        )
            .prop_map(|(name, command, timeout)| {
                let mut v = json!({"name": name, "command": command});
                if let Some(t) = timeout {
                    v["timeout"] = json!(GoDuration(t).to_string());
                }
                v
            }),
        0..3,
    );
    (
        ("[a-z0-9-]{1,63}", "[a-z0-9-]{1,63}", 1u32..10),
        (
            "[a-zA-Z0-9-]{1,39}",
            "[a-zA-Z0-9._-]{1,100}",
            proptest::option::of("[a-z]{1,10}"),
        ),
        task,
        prop::sample::select(vec!["autonomous", "control", "guidance", "observation"]),
        provider,
        limits,
        prop::collection::vec("[a-z*/.{},]{1,20}", 0..3),
        verify,
        proptest::option::of(text(200)),
    )
        .prop_map(
            |(
                (ns, run, attempt),
                (owner, name, fork),
                task,
                mode,
                provider,
                limits,
                globs,
                verify,
                plan,
            )| {
                let mut repository = json!({
                    "owner": owner,
                    "name": name,
                    "defaultBranch": "main",
                    "cloneUrl": format!("https://github.com/{owner}/{name}.git"),
                });
                if let Some(fork) = fork {
                    repository["pushUrl"] = json!(format!("https://github.com/{fork}/{name}.git"));
                }
                let mut file = json!({
                    "version": TASK_FILE_VERSION,
                    "namespace": ns,
                    "run": run,
                    "attempt": attempt,
                    "repository": repository,
                    "branch": format!("countersign/{run}"),
                    "task": task,
                    "mode": mode,
                    "provider": provider,
                    "limits": limits,
                    "guardrails": {"forbiddenPaths": globs, "allowedPaths": globs},
                    "verify": verify,
                    "commitAuthor": {
                        "name": "countersign[bot]",
                        "email": "1+countersign[bot]@users.noreply.github.com",
                    },
                });
                if let Some(plan) = plan {
                    file["approvedPlan"] = json!(plan);
                }
                file
            },
        )
}

proptest! {
    #![proptest_config(config(256))]

    /// Every duration a policy or CRD can hold prints in a form that parses back to it.
    #[test]
    fn go_durations_round_trip_through_display(d in duration()) {
        let shown = GoDuration(d).to_string();
        prop_assert_eq!(shown.parse::<GoDuration>(), Ok(GoDuration(d)), "{}", shown);
    }

    /// Beyond that limit, and far beyond Go's range, parsing the display form is an
    /// error, not a wrap-around or a panic.
    #[test]
    fn durations_beyond_the_limit_are_refused(
        d in prop_oneof![
            ((MAX_PARSED_NANOS + 1)..=u64::MAX).prop_map(Duration::from_nanos),
            (u64::MAX / 1_000_000_000..u64::MAX).prop_map(Duration::from_secs),
        ]
    ) {
        let shown = GoDuration(d).to_string();
        prop_assert!(shown.parse::<GoDuration>().is_err(), "{}", shown);
    }

    /// Text in the grammar parses (or is refused as too long) without panicking or hanging,
    /// and what parses is stable through display; whole units add up exactly.
    #[test]
    fn grammatical_durations_parse_exactly(text in duration_text()) {
        if let Ok(d) = text.parse::<GoDuration>() {
            prop_assert_eq!(d.to_string().parse::<GoDuration>(), Ok(d));
            if !text.contains('.') && d.0.as_nanos() < u128::from(MAX_PARSED_NANOS) / 2 {
                prop_assert_eq!(d.0.as_nanos(), whole_units(&text));
            }
        }
    }

    /// Any text at all: an error or a duration that round-trips.
    #[test]
    fn arbitrary_text_never_panics_as_a_duration(text in "\\PC{0,40}|[0-9.hmsuµn+-]{0,40}") {
        if let Ok(d) = text.parse::<GoDuration>() {
            prop_assert_eq!(d.to_string().parse::<GoDuration>(), Ok(d));
        }
    }

    /// A result that fits the termination message unshortened comes back exactly.
    #[test]
    fn small_results_round_trip_exactly(result in agent_result(300)) {
        let message = result.to_message();
        prop_assert!(message.len() <= MAX_RESULT_BYTES);
        let fits = serde_json::to_string(&result).expect("serialises").len() <= MAX_RESULT_BYTES;
        let within_caps = [
            (&result.summary, MAX_SUMMARY_CHARS),
            (&result.reason, MAX_SUMMARY_CHARS),
            (&result.report, MAX_REPORT_CHARS),
            (&result.verification, MAX_VERIFICATION_CHARS),
        ]
        .iter()
        .all(|(t, cap)| t.as_ref().is_none_or(|t| t.chars().count() <= *cap));
        let parsed = AgentResult::parse(&message);
        if fits && within_caps {
            prop_assert_eq!(parsed, Ok(result));
        } else {
            prop_assert!(parsed.is_ok(), "{:?}", parsed);
        }
    }

    /// Any result fits the termination message, parses, and keeps its outcome, pointers,
    /// counts and usage; its free texts are only ever shortened, with `…`.
    #[test]
    fn large_results_are_shortened_to_fit(result in agent_result(2500)) {
        let message = result.to_message();
        prop_assert!(message.len() <= MAX_RESULT_BYTES, "{}", message.len());
        let parsed = AgentResult::parse(&message).expect("a rendered result parses");
        prop_assert_eq!(parsed.outcome, result.outcome);
        prop_assert_eq!(&parsed.provider, &result.provider);
        prop_assert_eq!(&parsed.branch, &result.branch);
        prop_assert_eq!(&parsed.commit, &result.commit);
        prop_assert_eq!(
            (parsed.files_changed, parsed.lines_added, parsed.lines_removed),
            (result.files_changed, result.lines_added, result.lines_removed)
        );
        prop_assert_eq!(&parsed.usage, &result.usage);
        prop_assert!(is_shortened(&result.summary, &parsed.summary));
        prop_assert!(is_shortened(&result.reason, &parsed.reason));
        prop_assert!(is_shortened(&result.report, &parsed.report));
        prop_assert!(is_shortened(&result.verification, &parsed.verification));
    }

    /// Rendering ends whatever the pointers hold: the message fits when the pointers do,
    /// and is refused as too large otherwise.
    #[test]
    fn rendering_ends_for_any_pointers(
        mut result in agent_result(300),
        branch in "[a-z]{0,5000}",
    ) {
        result.branch = Some(branch);
        let message = result.to_message();
        let bare = AgentResult { summary: None, reason: None, report: None, verification: None, ..result.clone() };
        if serde_json::to_string(&bare).expect("serialises").len() <= MAX_RESULT_BYTES {
            prop_assert!(AgentResult::parse(&message).is_ok());
        } else {
            prop_assert_eq!(AgentResult::parse(&message), Err(ResultError::TooLarge(message.len())));
        }
    }

    /// Whatever a pod writes to its termination message is a result or a readable error.
    #[test]
    fn arbitrary_messages_never_panic(message in "\\PC{0,200}|\\{\"version\":[0-9]{1,20},\"outcome\":\"[a-zA-Z]{0,20}\"[^}]{0,80}\\}") {
        match AgentResult::parse(&message) {
            Ok(result) => prop_assert_eq!(result.version, RESULT_VERSION),
            Err(ResultError::TooLarge(n)) => prop_assert!(n > MAX_RESULT_BYTES),
            Err(ResultError::UnsupportedVersion(v)) => prop_assert_ne!(v, RESULT_VERSION),
            Err(ResultError::Empty) => prop_assert!(message.trim().is_empty()),
            Err(ResultError::Malformed(_)) => {}
        }
    }

    /// A task file the controller writes is read back by the agent as the same value, and
    /// serialising that value gives the same document again.
    #[test]
    fn task_files_round_trip(doc in task_json()) {
        let task: TaskFile = serde_json::from_value(doc.clone()).expect("a generated task file parses");
        let bytes = serde_json::to_vec(&task).expect("serialises");
        let again: TaskFile = serde_json::from_slice(&bytes).expect("parses back");
        prop_assert_eq!(&again, &task);
        prop_assert_eq!(serde_json::to_value(&again).expect("serialises"), serde_json::to_value(&task).expect("serialises"));
    }

    /// A damaged task file (bytes flipped, cut short) is an error or a task file, never a
    /// panic.
    #[test]
    fn damaged_task_files_never_panic(
        doc in task_json(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = serde_json::to_vec(&doc).expect("serialises");
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        if let Ok(task) = serde_json::from_slice::<TaskFile>(&bytes) {
            let again: TaskFile = serde_json::from_slice(&serde_json::to_vec(&task).expect("serialises")).expect("parses back");
            prop_assert_eq!(again, task);
        }
    }
}

/// The nanoseconds of a duration in whole units (`1h30m`, `5000ms`).
fn whole_units(text: &str) -> u128 {
    let mut total = 0u128;
    let mut number = String::new();
    let mut unit = String::new();
    let mut flush = |number: &mut String, unit: &mut String| {
        if number.is_empty() {
            return;
        }
        let size: u128 = match unit.as_str() {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            other => panic!("unit {other}"),
        };
        total += number.parse::<u128>().expect("digits") * size;
        number.clear();
        unit.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            if !unit.is_empty() {
                flush(&mut number, &mut unit);
            }
            number.push(c);
        } else {
            unit.push(c);
        }
    }
    flush(&mut number, &mut unit);
    total
}

/// Regressions found by fuzzing (docs/fuzzing.md), each with the input that failed.
mod regressions {
    use super::*;

    /// go-parse-duration 0.1 looped forever on a fraction longer than an i64 holds.
    #[test]
    fn long_fractions_parse_without_hanging() {
        let d: GoDuration = "1.12345678901234567890123s".parse().expect("Go accepts it");
        assert_eq!(d.0, Duration::from_nanos(1_123_456_789));
        let d: GoDuration = "0.000000000000000000000001h"
            .parse()
            .expect("Go accepts it");
        assert_eq!(d.0, Duration::ZERO);
        // The input the fuzz target timed out on (seed 1, after 11,449 runs).
        let found = format!("1.8{}\u{2}{}10000h", "0".repeat(25), "\0".repeat(7));
        assert!(found.parse::<GoDuration>().is_err());
    }

    /// A sum of segments over the per-segment limit printed as one segment that did not
    /// parse back (found by the `go_duration` fuzz target); such sums are refused now.
    #[test]
    fn accepted_durations_print_in_a_form_that_parses_back() {
        assert!(
            "25674h4547757002.5s6.854775707s"
                .parse::<GoDuration>()
                .is_err()
        );
        let longest = GoDuration(Duration::from_nanos(MAX_PARSED_NANOS));
        assert_eq!(longest.to_string().parse::<GoDuration>(), Ok(longest));
        let over = GoDuration(Duration::from_nanos(MAX_PARSED_NANOS + 1));
        assert!(over.to_string().parse::<GoDuration>().is_err());
    }

    /// `to_message` looped forever once every free text was down to `…` and the pointers
    /// alone were over the limit (found by the `agent_result` fuzz target).
    #[test]
    fn oversized_pointers_end_the_shortening() {
        let result = AgentResult {
            version: RESULT_VERSION,
            outcome: ResultOutcome::Succeeded,
            provider: Some("openrouter".into()),
            branch: Some("c".repeat(MAX_RESULT_BYTES)),
            commit: None,
            files_changed: 0,
            lines_added: 0,
            lines_removed: 0,
            summary: Some("Return 404".into()),
            reason: Some("x".into()),
            report: None,
            verification: Some("unit-tests passed".into()),
            usage: Usage::default(),
        };
        let message = result.to_message();
        assert_eq!(
            AgentResult::parse(&message),
            Err(ResultError::TooLarge(message.len()))
        );
    }

    /// go-parse-duration 0.1 added segments without an overflow check (a panic in debug
    /// builds, a wrapped sum otherwise).
    #[test]
    fn segment_sums_that_overflow_are_refused() {
        let text = "4611686018427387903ns".repeat(3);
        assert!(text.parse::<GoDuration>().is_err());
    }

    /// A long fraction followed by another `.` is still refused, as Go refuses it.
    #[test]
    fn a_second_point_after_a_long_fraction_is_refused() {
        assert!("1.11111111111111111111.5s".parse::<GoDuration>().is_err());
        assert!("1.5.5s".parse::<GoDuration>().is_err());
        assert!("1h0".parse::<GoDuration>().is_err());
    }
}
