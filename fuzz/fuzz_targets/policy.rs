//! RiskPolicy manifests (`parse_policies`, `CompiledPolicy::compile`, `evaluate`) from
//! untrusted YAML. Never panics; every compiled policy scores a set of changes (fixed ones
//! and one whose paths are the input's lines) within 0..=10, deterministically, at a level
//! its thresholds give, and never auto-approves an incomplete change.
#![no_main]

use countersign_policies::{AuthorKind, Change, CompiledPolicy, MAX_SCORE, parse_policies};
use libfuzzer_sys::fuzz_target;

fn changes(text: &str) -> Vec<Change> {
    let fuzzed: Vec<&str> = text.lines().filter(|l| !l.is_empty()).take(20).collect();
    vec![
        Change::touching(["README.md"]),
        Change::touching(["src/main.rs", "docs/guide.md"])
            .with_label("formatting")
            .with_base_branch("main"),
        Change::touching([".github/workflows/ci.yml", "deploy/production/app.yaml"])
            .with_author_kind(AuthorKind::Ai)
            .with_gitops_path("deploy/production")
            .with_file("migrations/0001.sql", 900, 40),
        Change::touching(fuzzed.iter().copied())
            .with_label(fuzzed.first().copied().unwrap_or(""))
            .with_gitops_path(fuzzed.last().copied().unwrap_or("**")),
        Change::touching(["src/lib.rs"]).incomplete_because("GitHub listed 3000 of 3500 files"),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = parse_policies(text) else {
        return;
    };
    for doc in documents {
        let Ok(policy) = CompiledPolicy::compile(&doc.policy.spec) else {
            continue;
        };
        for change in changes(text) {
            let assessment = policy.evaluate(&change);
            assert!(assessment.score <= MAX_SCORE);
            assert!(assessment.factors.iter().all(|f| f.score <= MAX_SCORE));
            assert_eq!(assessment.level, policy.level_of(assessment.score));
            assert!(assessment.workflow.level >= assessment.level);
            if change.incomplete.is_some() {
                assert!(!assessment.workflow.auto_approves());
                assert!(assessment.factors.iter().all(|f| f.score == MAX_SCORE));
            }
            if !assessment.never_auto_approve.is_empty() {
                assert!(!assessment.workflow.auto_approves());
            }
            assert_eq!(
                policy.evaluate(&change),
                assessment,
                "evaluation is deterministic"
            );
        }
    }
});
