//! Engine semantics on small hand-written policies: every kind of condition, combining,
//! thresholds, tie-breaks, and compile errors that name their field.

use countersign_crds::RiskPolicySpec;
use countersign_crds::risk_policy::{RiskFactor, RiskLevel};
use countersign_policies::{
    AuthorKind, Change, ChangedFile, CompiledPolicy, PolicyError, PolicyErrors, SpecProblem,
};

const WORKFLOWS: &str = r#"
workflows:
  low: { name: standard, autoApprove: true }
  medium: { name: supervised, approvers: [{ role: developer }, { role: tech_lead }], timeout: 4h }
  high: { name: managed, approvers: [{ role: tech_lead }, { role: manager }], timeout: 24h, onTimeout: escalate, escalateTo: cto }
  critical: { name: executive, approvers: [{ role: manager }, { role: security_team }, { role: cto }], timeout: 72h, onTimeout: expire }
"#;

/// A spec from YAML; the standard workflows are added unless the snippet has its own.
fn spec(yaml: &str) -> RiskPolicySpec {
    let text = if yaml.contains("workflows:") {
        yaml.to_owned()
    } else {
        format!("{yaml}\n{WORKFLOWS}")
    };
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("test spec parses: {e}\n{text}"))
}

fn compile(yaml: &str) -> CompiledPolicy {
    CompiledPolicy::compile(&spec(yaml)).unwrap_or_else(|e| panic!("compiles: {e}"))
}

fn errors(yaml: &str) -> Vec<String> {
    match CompiledPolicy::compile(&spec(yaml)) {
        Ok(_) => panic!("expected compile errors for\n{yaml}"),
        Err(e) => e.errors().iter().map(ToString::to_string).collect(),
    }
}

fn matched(policy: &CompiledPolicy, change: &Change) -> Vec<String> {
    policy
        .evaluate(change)
        .matched_rules
        .into_iter()
        .map(|r| r.name)
        .collect()
}

#[test]
fn a_factor_is_the_highest_score_of_the_matching_rules_and_the_first_wins_ties() {
    let p = compile(
        r#"
rules:
  - { name: a, match: { paths: ["src/**"] }, set: { impact: 5 } }
  - { name: b, match: { paths: ["src/**"] }, set: { impact: 5, complexity: 3 } }
  - { name: c, match: { paths: ["src/db/**"] }, set: { impact: 7 } }
"#,
    );
    let a = p.evaluate(&Change::touching(["src/main.rs"]));
    assert_eq!(a.factor(RiskFactor::Impact).rule.as_deref(), Some("a"));
    assert_eq!(a.factor(RiskFactor::Complexity).rule.as_deref(), Some("b"));
    assert_eq!(a.factor(RiskFactor::BusinessImpact).score, 0);
    assert_eq!(a.factor(RiskFactor::BusinessImpact).rule, None);
    let a = p.evaluate(&Change::touching(["src/main.rs", "src/db/pool.rs"]));
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 7: src/db/pool.rs matched rule c (src/db/**)"
    );
    assert_eq!(a.score, 7);
}

#[test]
fn paths_name_the_first_file_and_count_the_others() {
    let p = compile(r#"rules: [{ name: rs, match: { paths: ["**/*.rs"] }, set: { impact: 5 } }]"#);
    let a = p.evaluate(&Change::touching([
        "README.md",
        "src/a.rs",
        "src/b.rs",
        "src/c.rs",
    ]));
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 5: src/a.rs and 2 other files matched rule rs (**/*.rs)"
    );
}

#[test]
fn single_star_stops_at_slashes_and_double_star_crosses_them() {
    let p = compile(
        r#"
rules:
  - { name: top, match: { paths: ["docs/*"] }, set: { impact: 3 } }
  - { name: deep, match: { paths: ["**/*.sql"] }, set: { impact: 9 } }
"#,
    );
    assert_eq!(matched(&p, &Change::touching(["docs/a.md"])), ["top"]);
    assert!(matched(&p, &Change::touching(["docs/sub/a.md"])).is_empty());
    assert_eq!(matched(&p, &Change::touching(["schema.sql"])), ["deep"]);
    assert_eq!(
        matched(&p, &Change::touching(["a/b/c/schema.sql"])),
        ["deep"]
    );
}

#[test]
fn except_paths_leave_files_out() {
    let p = compile(
        r#"
rules:
  - { name: code, match: { paths: ["**"], exceptPaths: ["**/*.md"] }, set: { impact: 5 } }
  - { name: implicit, match: { exceptPaths: ["**/*.md", "tests/**"] }, set: { complexity: 4 } }
"#,
    );
    assert!(matched(&p, &Change::touching(["README.md", "docs/x.md"])).is_empty());
    assert_eq!(matched(&p, &Change::touching(["tests/a.rs"])), ["code"]);
    let a = p.evaluate(&Change::touching(["README.md", "src/lib.rs"]));
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 5: src/lib.rs matched rule code (**)"
    );
    assert_eq!(
        a.factor(RiskFactor::Complexity).reason,
        "complexity 4: src/lib.rs matched rule implicit (except **/*.md, tests/**)"
    );
}

#[test]
fn only_paths_need_every_file_and_at_least_one() {
    let p = compile(
        r#"
rules:
  - { name: docs, match: { onlyPaths: ["docs/**", "**/*.md"] }, set: { impact: 1 } }
  - { name: docs-but-vendored, match: { onlyPaths: ["docs/**"], exceptPaths: ["vendor/**"] }, set: { complexity: 1 } }
"#,
    );
    assert_eq!(
        matched(&p, &Change::touching(["docs/a.txt", "README.md"])),
        ["docs"]
    );
    assert!(matched(&p, &Change::touching(["docs/a.md", "src/a.rs"])).is_empty());
    assert!(matched(&p, &Change::default()).is_empty());
    assert_eq!(
        matched(&p, &Change::touching(["docs/a.txt", "vendor/x.c"])),
        ["docs-but-vendored"]
    );
    assert!(matched(&p, &Change::touching(["vendor/x.c"])).is_empty());
    let a = p.evaluate(&Change::touching(["docs/a.txt", "README.md"]));
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 1: all 2 changed files matched rule docs (only docs/**, **/*.md)"
    );
}

#[test]
fn labels_match_case_insensitively() {
    let p = compile(
        r#"rules: [{ name: hot, match: { labels: [hotfix, urgent] }, set: { businessImpact: 6 } }]"#,
    );
    let a = p.evaluate(&Change::touching(["src/a.rs"]).with_label("HotFix"));
    assert_eq!(
        a.factor(RiskFactor::BusinessImpact).reason,
        "businessImpact 6: label HotFix matched rule hot"
    );
    assert!(matched(&p, &Change::touching(["src/a.rs"]).with_label("bug")).is_empty());
}

#[test]
fn sizes_are_inclusive_lower_bounds() {
    let p = compile(
        r#"
rules:
  - { name: files, match: { minFiles: 3 }, set: { complexity: 6 } }
  - { name: lines, match: { minLines: 100 }, set: { complexity: 7 } }
"#,
    );
    assert!(matched(&p, &Change::touching(["a", "b"])).is_empty());
    assert_eq!(matched(&p, &Change::touching(["a", "b", "c"])), ["files"]);
    let change = Change {
        files: vec![ChangedFile::new("a", 60, 39)],
        ..Change::default()
    };
    assert!(matched(&p, &change).is_empty());
    let change = Change {
        files: vec![ChangedFile::new("a", 60, 40)],
        ..Change::default()
    };
    let a = p.evaluate(&change);
    assert_eq!(
        a.factor(RiskFactor::Complexity).reason,
        "complexity 7: 100 changed lines matched rule lines (≥ 100)"
    );
}

#[test]
fn author_kinds_and_base_branches() {
    let p = compile(
        r#"
rules:
  - { name: ai, match: { authorKinds: [ai, bot] }, set: { complexity: 6 } }
  - { name: release, match: { baseBranches: ["release/*", main] }, set: { businessImpact: 6 } }
"#,
    );
    assert_eq!(
        matched(&p, &Change::default().with_author_kind(AuthorKind::Ai)),
        ["ai"]
    );
    assert!(matched(&p, &Change::default().with_author_kind(AuthorKind::Human)).is_empty());
    assert_eq!(
        matched(&p, &Change::default().with_base_branch("release/1.2")),
        ["release"]
    );
    assert!(matched(&p, &Change::default().with_base_branch("release/1/2")).is_empty());
    assert!(
        matched(&p, &Change::default()).is_empty(),
        "unknown base branch"
    );
    let a = p.evaluate(&Change::default().with_base_branch("main"));
    assert_eq!(
        a.factor(RiskFactor::BusinessImpact).reason,
        "businessImpact 6: base branch main matched rule release (main)"
    );
}

#[test]
fn gitops_paths_true_and_false() {
    let p = compile(
        r#"
rules:
  - { name: deploy, match: { gitopsPaths: true }, set: { impact: 9 } }
  - { name: not-deploy, match: { gitopsPaths: false }, set: { impact: 2 } }
"#,
    );
    let deploy = Change::touching(["src/a.rs", "k8s/app.yaml"]).with_gitops_path("k8s/**");
    assert_eq!(matched(&p, &deploy), ["deploy"]);
    assert_eq!(
        matched(
            &p,
            &Change::touching(["src/a.rs"]).with_gitops_path("k8s/**")
        ),
        ["not-deploy"]
    );
    assert_eq!(
        matched(&p, &Change::touching(["k8s/app.yaml"])),
        ["not-deploy"]
    );
}

#[test]
fn all_conditions_must_hold_and_the_reason_lists_each() {
    let p = compile(
        r#"
rules:
  - name: ai-infra
    match: { paths: ["infra/**"], authorKinds: [ai], labels: [terraform] }
    set: { impact: 8 }
  - { name: baseline, set: { complexity: 1 } }
"#,
    );
    let change = Change::touching(["infra/main.tf"])
        .with_author_kind(AuthorKind::Ai)
        .with_label("terraform");
    let a = p.evaluate(&change);
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 8: infra/main.tf (infra/**) and label terraform and author kind ai matched rule ai-infra"
    );
    assert_eq!(
        a.factor(RiskFactor::Complexity).reason,
        "complexity 1: every change matched rule baseline"
    );
    let human = Change::touching(["infra/main.tf"]).with_label("terraform");
    assert_eq!(matched(&p, &human), ["baseline"]);
}

#[test]
fn weighted_combine_rounds_up() {
    let p = compile(
        r#"
rules:
  - { name: r, match: { paths: ["**"] }, set: { impact: 7, complexity: 5, businessImpact: 3 } }
  - { name: big, match: { labels: [big] }, set: { impact: 9 } }
combine: { method: weighted, weights: { impact: 50, complexity: 30, businessImpact: 20 } }
"#,
    );
    // 7*50 + 5*30 + 3*20 = 560 → 5.6 → 6
    let a = p.evaluate(&Change::touching(["src/a.rs"]));
    assert_eq!((a.score, a.level), (6, RiskLevel::Medium));
    // 9*50 + 5*30 + 3*20 = 660 → 6.6 → 7
    assert_eq!(
        p.evaluate(&Change::touching(["a"]).with_label("big")).score,
        7
    );
    // Exact: 0 stays 0.
    assert_eq!(p.evaluate(&Change::default()).score, 0);
}

#[test]
fn thresholds_pick_the_level() {
    let p = compile(
        r#"
rules: [{ name: r, match: { labels: [x] }, set: { impact: 1 } }]
thresholds: { medium: 3, high: 6, critical: 10 }
"#,
    );
    let levels: Vec<RiskLevel> = (0..=10).map(|s| p.level_of(s)).collect();
    use RiskLevel::*;
    assert_eq!(
        levels,
        [
            Low, Low, Low, Medium, Medium, Medium, High, High, High, High, Critical
        ]
    );
}

#[test]
fn bad_globs_name_the_field_and_all_are_reported() {
    let errs = errors(
        r#"
rules:
  - { name: ok, match: { paths: ["src/**"] }, set: { impact: 1 } }
  - { name: a, match: { paths: ["src/**", "src/["] }, set: { impact: 1 } }
  - { name: b, match: { exceptPaths: ["{a,b"], baseBranches: ["release/[0-9"] }, set: { impact: 1 } }
neverAutoApprovePaths: ["ok/**", "[z-a]"]
"#,
    );
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            r#"spec.rules[1].match.paths[1]: invalid glob "src/[": unclosed character class"#
        ),
        "{errs:#?}"
    );
    assert!(
        errs[1].starts_with(r#"spec.rules[2].match.exceptPaths[0]: invalid glob "{a,b": "#),
        "{errs:#?}"
    );
    assert!(
        errs[2].starts_with(r#"spec.rules[2].match.baseBranches[0]: invalid glob"#),
        "{errs:#?}"
    );
    assert!(
        errs[3].starts_with(r#"spec.neverAutoApprovePaths[1]: invalid glob "[z-a]": "#),
        "{errs:#?}"
    );
}

#[test]
fn glob_errors_are_typed() {
    let err: PolicyErrors = CompiledPolicy::compile(&spec(
        r#"rules: [{ name: a, match: { paths: ["src/["] }, set: { impact: 1 } }]"#,
    ))
    .expect_err("a bad glob fails");
    match &err.errors()[0] {
        PolicyError::Glob { field, glob, .. } => {
            assert_eq!(
                (field.as_str(), glob.as_str()),
                ("spec.rules[0].match.paths[0]", "src/[")
            );
        }
        other => panic!("expected a glob error, got {other:?}"),
    }
}

#[test]
fn semantic_problems_name_the_field() {
    let errs = errors(
        r#"
rules:
  - { name: a, set: { impact: 11 } }
  - { name: a, set: {} }
combine: { method: weighted, weights: { impact: 50, complexity: 30, businessImpact: 10 } }
thresholds: { medium: 6, high: 5, critical: 9 }
workflows:
  low: { name: standard }
  medium: { name: supervised, approvers: [{ role: developer }, { role: developer, count: 11 }] }
  high: { name: managed, approvers: [{ role: manager }], onTimeout: escalate }
  critical: { name: executive, approvers: [{ role: cto }], escalationMode: additional }
"#,
    );
    let expected = [
        "spec.rules[0].set.impact: score 11 is out of range 0..10",
        "spec.rules[1].name: duplicate rule name \"a\"",
        "spec.rules[1].set: set at least one of impact, complexity, businessImpact",
        "spec.combine.weights: weights must add up to 100, not 90",
        "spec.thresholds: thresholds must rise within 1..10: medium 6 < high 5 < critical 9",
        "spec.workflows.low.approvers: a workflow without autoApprove needs approvers",
        "spec.workflows.medium.approvers[1].count: count 11 is out of range 1..10",
        "spec.workflows.medium.approvers[1].role: role \"developer\" is listed twice",
        "spec.workflows.high.escalateTo: onTimeout escalate needs escalateTo",
        "spec.workflows.critical.escalationMode: escalationMode applies only to onTimeout escalate",
    ];
    assert_eq!(errs, expected);
}

#[test]
fn weighted_without_weights_is_an_error() {
    let err = CompiledPolicy::compile(&spec(
        r#"
rules: [{ name: a, set: { impact: 1 } }]
combine: { method: weighted }
"#,
    ))
    .expect_err("fails");
    assert!(matches!(
        err.errors()[0],
        PolicyError::Spec {
            problem: SpecProblem::MissingWeights,
            ..
        }
    ));
}

#[test]
fn compiled_policies_are_shareable() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<CompiledPolicy>();
}
