//! The default RiskPolicy (policies/manifests/default-riskpolicy.yaml) against realistic
//! changes, one table row per case; together the rows exercise every rule of the manifest.

use std::collections::BTreeSet;
use std::path::Path;

use countersign_crds::RiskPolicy;
use countersign_crds::risk_policy::{RiskFactor, RiskLevel, TimeoutAction};
use countersign_policies::{
    Assessment, AuthorKind, AutoApprove, Change, ChangedFile, CompiledPolicy, HitSource,
};

fn default_policy() -> CompiledPolicy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/default-riskpolicy.yaml");
    let text = std::fs::read_to_string(&path).expect("the default manifest is readable");
    let policy: RiskPolicy = serde_yaml::from_str(&text).expect("the default manifest parses");
    assert_eq!(policy.metadata.name.as_deref(), Some("default"));
    CompiledPolicy::compile(&policy.spec).expect("the default policy compiles")
}

/// What a row expects.
struct Case {
    name: &'static str,
    change: Change,
    level: RiskLevel,
    score: u8,
    workflow: &'static str,
    roles: &'static [&'static str],
    auto_approve: bool,
    /// The rule that set the highest factor.
    top_rule: &'static str,
}

fn case(
    name: &'static str,
    change: Change,
    level: RiskLevel,
    score: u8,
    workflow: &'static str,
    top_rule: &'static str,
) -> Case {
    let (roles, auto_approve): (&'static [&'static str], bool) = match workflow {
        "standard" => (&[], true),
        "supervised" => (&["developer", "tech_lead"], false),
        "managed" => (&["tech_lead", "manager"], false),
        "executive" => (&["manager", "security_team", "cto"], false),
        other => panic!("unknown workflow {other}"),
    };
    Case {
        name,
        change,
        level,
        score,
        workflow,
        roles,
        auto_approve,
        top_rule,
    }
}

fn many_files(n: usize, dir: &str) -> Change {
    Change::touching((0..n).map(|i| format!("{dir}/generated_{i}.rs")))
}

fn cases() -> Vec<Case> {
    use RiskLevel::*;
    vec![
        case(
            "docs only",
            Change::touching(["docs/guide/install.md", "README.md", "LICENSE"]),
            Low,
            1,
            "standard",
            "docs-only",
        ),
        case(
            "an image under docs",
            Change::touching(["docs/img/flow.svg", "docs/flow.md"]),
            Low,
            1,
            "standard",
            "docs-only",
        ),
        case(
            "a Python script under docs is code",
            Change::touching(["docs/tools/build.py"]),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
        case(
            "shell, JavaScript and TypeScript under docs are code",
            Change::touching([
                "docs/serve.sh",
                "docs/theme/site.js",
                "docs/theme/plugin.cjs",
                "docs/theme/plugin.mjs",
                "docs/theme/nav.ts",
            ]),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
        case(
            "build configs under docs are code",
            Change::touching([
                "docs/conf.py",
                "docs/package.json",
                "docs/Makefile",
                "docs/mkdocs.yml",
            ]),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
        case(
            "a prettier config that executes is code",
            Change::touching([".prettierrc.js", "web/.prettierrc.cjs"]),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
        case(
            "agent instructions",
            Change::touching(["CLAUDE.md"]),
            High,
            8,
            "managed",
            "agent-instructions",
        ),
        case(
            "agent instructions in any directory and any case",
            Change::touching(["services/api/Agents.md", ".cursorrules"]),
            High,
            8,
            "managed",
            "agent-instructions",
        ),
        case(
            "Copilot instructions",
            Change::touching([".github/copilot-instructions.md"]),
            High,
            8,
            "managed",
            "agent-instructions",
        ),
        case(
            "formatter settings only",
            Change::touching([".editorconfig", "rustfmt.toml"]),
            Low,
            1,
            "standard",
            "docs-only",
        ),
        case(
            "formatting label on docs",
            Change::touching(["docs/api.md"]).with_label("Formatting"),
            Low,
            2,
            "standard",
            "formatting",
        ),
        case(
            "formatting label does not lower a code change",
            Change::touching(["src/lib.rs"]).with_label("formatting"),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
        case(
            "feature under src",
            Change::touching([
                "src/orders/checkout.rs",
                "src/orders/mod.rs",
                "tests/checkout.rs",
                "docs/orders.md",
            ]),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
        case(
            "requirements.txt is not documentation",
            Change::touching(["requirements.txt"]),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
        case(
            "feature by an AI agent",
            Change::touching(["web/src/components/Cart.tsx"]).with_author_kind(AuthorKind::Ai),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
        case(
            "large diff",
            Change::default().with_file("src/engine.rs", 700, 150),
            Medium,
            7,
            "supervised",
            "large-change",
        ),
        case(
            "wide change",
            many_files(60, "src/generated"),
            Medium,
            6,
            "supervised",
            "wide-change",
        ),
        case(
            "architecture decision record",
            Change::touching(["docs/adr/0007-event-sourcing.md"]),
            High,
            8,
            "managed",
            "architecture",
        ),
        case(
            "public API definition",
            Change::touching(["services/billing/api/v1/billing.proto"]),
            High,
            8,
            "managed",
            "architecture",
        ),
        case(
            "authentication code",
            Change::touching(["src/auth/session.rs", "src/auth/mod.rs"]),
            High,
            8,
            "managed",
            "security-code",
        ),
        case(
            "secrets handling",
            Change::touching(["controller/src/secrets.rs"]),
            High,
            8,
            "managed",
            "security-code",
        ),
        case(
            "data migration",
            Change::touching(["migrations/0042_add_index.sql", "src/db.rs"]),
            Critical,
            9,
            "executive",
            "data-migration",
        ),
        case(
            "a migration whatever its case",
            Change::touching(["Migrations/0042_drop.SQL"]),
            Critical,
            9,
            "executive",
            "data-migration",
        ),
        case(
            "deploy script",
            Change::touching(["scripts/deploy-prod.sh"]),
            Critical,
            9,
            "executive",
            "deploy-scripts",
        ),
        case(
            "release script in a subdirectory",
            Change::touching(["tools/ci/release.py"]),
            Critical,
            9,
            "executive",
            "deploy-scripts",
        ),
        case(
            "rails migration",
            Change::touching(["db/migrate/20240101_add_users.rb"]),
            Critical,
            9,
            "executive",
            "data-migration",
        ),
        case(
            "CI workflow",
            Change::touching([".github/workflows/ci.yml"]),
            Critical,
            9,
            "executive",
            "ci-workflows",
        ),
        case(
            "CODEOWNERS",
            Change::touching(["CODEOWNERS"]),
            Critical,
            10,
            "executive",
            "codeowners-and-policy",
        ),
        case(
            "the policy itself",
            Change::touching(["policies/manifests/default-riskpolicy.yaml"]),
            Critical,
            10,
            "executive",
            "codeowners-and-policy",
        ),
        case(
            "a RiskPolicy under any name",
            Change::touching(["ops/team-risk_policy.yml"]),
            Critical,
            10,
            "executive",
            "codeowners-and-policy",
        ),
        case(
            "a Countersign Project manifest",
            Change::touching(["examples/project.yaml"]),
            Critical,
            10,
            "executive",
            "codeowners-and-policy",
        ),
        case(
            "anything under .countersign",
            Change::touching([".countersign/notes.md"]),
            Critical,
            10,
            "executive",
            "codeowners-and-policy",
        ),
        case(
            "production manifests",
            Change::touching(["deploy/production/api/deployment.yaml"]),
            Critical,
            10,
            "executive",
            "production-manifests",
        ),
        case(
            "GitOps path",
            Change::touching(["clusters/eu-1/apps/api.yaml"]).with_gitops_path("clusters/**"),
            Critical,
            10,
            "executive",
            "production-deploy",
        ),
        case(
            "GitOps directory without wildcards",
            Change::touching(["environments/prod/values.yaml"])
                .with_gitops_path("environments/prod"),
            Critical,
            10,
            "executive",
            "production-deploy",
        ),
        case(
            "outside the GitOps paths",
            Change::touching(["src/main.rs"]).with_gitops_path("clusters/**"),
            Medium,
            5,
            "supervised",
            "code-change",
        ),
    ]
}

fn check(policy: &CompiledPolicy, c: &Case) -> Assessment {
    let a = policy.evaluate(&c.change);
    let ctx = format!("case {:?}: {a:#?}", c.name);
    assert_eq!(a.level, c.level, "{ctx}");
    assert_eq!(a.score, c.score, "{ctx}");
    assert_eq!(a.workflow.name, c.workflow, "{ctx}");
    let roles: Vec<&str> = a.workflow.roles().map(|r| r.as_str()).collect();
    assert_eq!(roles, c.roles, "{ctx}");
    assert!(a.workflow.approvers.iter().all(|r| r.count == 1), "{ctx}");
    assert_eq!(a.workflow.auto_approves(), c.auto_approve, "{ctx}");
    let top = a
        .factors
        .iter()
        .find(|f| f.score == a.score)
        .expect("max combine: some factor equals the score");
    assert_eq!(top.rule.as_deref(), Some(c.top_rule), "{ctx}");
    assert!(top.reason.contains(c.top_rule), "{ctx}");
    a
}

#[test]
fn every_row_gets_the_expected_decision() {
    let policy = default_policy();
    for c in cases() {
        check(&policy, &c);
    }
}

#[test]
fn the_rows_cover_every_rule_of_the_default_policy() {
    let policy = default_policy();
    let mut matched = BTreeSet::new();
    for c in cases() {
        for rule in policy.evaluate(&c.change).matched_rules {
            matched.insert(rule.name);
        }
    }
    let all: BTreeSet<String> = policy.rule_names().map(str::to_owned).collect();
    let missing: Vec<_> = all.difference(&matched).collect();
    assert!(missing.is_empty(), "rules no row exercises: {missing:?}");
}

#[test]
fn workflows_follow_the_seed_matrix() {
    let policy = default_policy();
    let w = |level| policy.workflow(level);
    assert!(w(RiskLevel::Low).auto_approve);
    let sod = policy.separation_of_duties();
    assert!(sod.exclude_author && sod.exclude_requester && sod.exclude_committers);
    assert_eq!(
        w(RiskLevel::Medium)
            .timeout
            .map(|d| d.to_string())
            .as_deref(),
        Some("4h")
    );
    assert_eq!(w(RiskLevel::Medium).on_timeout, TimeoutAction::Remind);
    assert_eq!(
        w(RiskLevel::High).timeout.map(|d| d.to_string()).as_deref(),
        Some("24h")
    );
    assert_eq!(w(RiskLevel::High).on_timeout, TimeoutAction::Escalate);
    assert_eq!(
        w(RiskLevel::High).escalate_to.as_ref().map(|r| r.as_str()),
        Some("cto")
    );
    assert_eq!(
        w(RiskLevel::High).escalation_mode,
        Some(countersign_crds::risk_policy::EscalationMode::StandIn),
        "the cto stands in for the missing approver"
    );
    assert_eq!(
        w(RiskLevel::Critical)
            .timeout
            .map(|d| d.to_string())
            .as_deref(),
        Some("72h")
    );
    assert_eq!(w(RiskLevel::Critical).on_timeout, TimeoutAction::Expire);
    for (score, level) in [
        (0, RiskLevel::Low),
        (4, RiskLevel::Low),
        (5, RiskLevel::Medium),
        (7, RiskLevel::Medium),
        (8, RiskLevel::High),
        (9, RiskLevel::Critical),
        (10, RiskLevel::Critical),
    ] {
        assert_eq!(policy.level_of(score), level, "score {score}");
    }
}

#[test]
fn migration_reason_names_the_file_the_rule_and_the_glob() {
    let policy = default_policy();
    let a = policy.evaluate(&Change::touching(["migrations/0042_add_index.sql"]));
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 9: migrations/0042_add_index.sql matched rule data-migration (migrations/**)"
    );
    assert_eq!(
        a.workflow.timeout.map(|d| d.to_string()).as_deref(),
        Some("72h")
    );
    assert_eq!(a.workflow.on_timeout, TimeoutAction::Expire);
}

#[test]
fn critical_paths_are_never_auto_approved() {
    let policy = default_policy();
    for path in [
        "migrations/0042_add_index.sql",
        "services/users/migrations/0001_init.py",
        ".github/workflows/ci.yml",
        "CODEOWNERS",
        "policies/manifests/default-riskpolicy.yaml",
        ".countersign/riskpolicy.yaml",
        "deploy/production/api/deployment.yaml",
        "Jenkinsfile",
    ] {
        let a = policy.evaluate(&Change::touching([path]));
        assert_eq!(a.level, RiskLevel::Critical, "{path}: {a:#?}");
        assert!(
            a.never_auto_approve
                .iter()
                .any(|h| h.path == path && h.source == HitSource::Policy),
            "{path} should be a never-auto-approve hit: {a:#?}"
        );
        assert!(!a.workflow.auto_approves(), "{path}");
    }
}

#[test]
fn gitops_paths_are_never_auto_approved() {
    let policy = default_policy();
    let change = Change::touching(["clusters/eu-1/apps/api.yaml"]).with_gitops_path("clusters/**");
    let a = policy.evaluate(&change);
    let hit = &a.never_auto_approve[0];
    assert_eq!(
        (hit.path.as_str(), hit.glob.as_str(), hit.source),
        (
            "clusters/eu-1/apps/api.yaml",
            "clusters/**",
            HitSource::GitOps
        )
    );
    assert_eq!(
        a.factor(RiskFactor::BusinessImpact).reason,
        "businessImpact 10: clusters/eu-1/apps/api.yaml matched rule production-deploy (GitOps paths clusters/**)"
    );
}

#[test]
fn docs_only_auto_approves_with_the_reason_recorded() {
    let policy = default_policy();
    let a = policy.evaluate(&Change::touching(["docs/guide/install.md"]));
    match &a.workflow.auto_approve {
        AutoApprove::Approved { reason } => {
            assert_eq!(
                reason,
                "score 1 is low (below medium 5); workflow standard auto-approves"
            )
        }
        other => panic!("expected auto-approval, got {other:?}"),
    }
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 1: docs/guide/install.md matched rule docs-only (only **/*.md)"
    );
}

#[test]
fn docs_under_dot_github_need_a_human_from_the_next_workflow() {
    let policy = default_policy();
    let a = policy.evaluate(&Change::touching([".github/ISSUE_TEMPLATE/bug_report.md"]));
    assert_eq!(a.level, RiskLevel::Low);
    assert_eq!(a.workflow.level, RiskLevel::Medium);
    assert_eq!(a.workflow.name, "supervised");
    match &a.workflow.auto_approve {
        AutoApprove::Blocked { reason } => assert_eq!(
            reason,
            "auto-approve is off: .github/ISSUE_TEMPLATE/bug_report.md matched never-auto-approve \
             path .github/**; workflow supervised (medium) applies instead of standard"
        ),
        other => panic!("expected a blocked auto-approval, got {other:?}"),
    }
}

#[test]
fn the_assessment_fits_the_approval_gate_status() {
    let policy = default_policy();
    let a = policy.evaluate(&Change::touching(["src/auth/session.rs"]));
    let status = a.to_risk_assessment();
    assert_eq!(
        (status.score, status.level, status.workflow.as_str()),
        (8, RiskLevel::High, "managed")
    );
    assert_eq!(status.factors.len(), 3);
    assert_eq!(status.factors[0].rule.as_deref(), Some("security-code"));
    assert_eq!(status.factors[1].rule.as_deref(), Some("code-change"));
    let json = serde_json::to_value(&a).expect("serialises");
    assert_eq!(json["workflow"]["autoApprove"]["decision"], "notOffered");
    let back: Assessment = serde_json::from_value(json).expect("round-trips");
    assert_eq!(back, a);
}

#[test]
fn an_empty_change_is_low() {
    let policy = default_policy();
    let a = policy.evaluate(&Change::default());
    assert_eq!((a.score, a.level), (0, RiskLevel::Low));
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 0: no rule set it"
    );
}

#[test]
fn the_built_in_copy_is_the_manifest() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/default-riskpolicy.yaml");
    let text = std::fs::read_to_string(path).expect("readable");
    assert_eq!(countersign_policies::DEFAULT_POLICY_YAML, text);
    assert_eq!(
        countersign_policies::default_policy().spec,
        serde_yaml::from_str::<RiskPolicy>(&text)
            .expect("parses")
            .spec
    );
}

#[test]
fn every_manifest_in_policies_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = 0;
    for dir in ["manifests", "examples"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("policy dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("readable");
            for report in countersign_policies::validate_policies(&text).expect("parses") {
                assert!(
                    report.is_ok(),
                    "{}: {:?}",
                    path.display(),
                    report.problems()
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 2,
        "expected the default policy and the Rego example"
    );
}

#[test]
fn line_counts_come_from_the_files() {
    let change = Change {
        files: vec![
            ChangedFile::new("src/a.rs", 500, 299),
            ChangedFile::new("src/b.rs", 1, 0),
        ],
        ..Change::default()
    };
    let a = default_policy().evaluate(&change);
    assert_eq!(
        a.factor(RiskFactor::Complexity).reason,
        "complexity 7: 800 changed lines matched rule large-change (≥ 800)"
    );
}

#[test]
fn paths_match_whatever_their_case_unless_a_rule_says_otherwise() {
    let mut spec = countersign_policies::default_policy().spec;
    let rule = spec
        .rules
        .iter_mut()
        .find(|r| r.name == "data-migration")
        .expect("data-migration");
    rule.matches.case_sensitive = true;
    let exact = CompiledPolicy::compile(&spec).expect("compiles");
    let a = exact.evaluate(&Change::touching(["Migrations/0042_drop.SQL"]));
    let rules: Vec<&str> = a.matched_rules.iter().map(|r| r.name.as_str()).collect();
    assert!(!rules.contains(&"data-migration"), "{rules:?}");
    // Never-auto-approve paths are never case-sensitive.
    assert!(
        a.never_auto_approve
            .iter()
            .any(|h| h.glob == "**/*.sql" && h.path == "Migrations/0042_drop.SQL"),
        "{:?}",
        a.never_auto_approve
    );
    let a = exact.evaluate(&Change::touching(["migrations/0042_drop.sql"]));
    assert_eq!(a.level, RiskLevel::Critical);
}

#[test]
fn an_incomplete_change_fails_closed_at_the_highest_level() {
    let policy = default_policy();
    let change = Change::touching(["docs/a.md"])
        .incomplete_because("GitHub listed 3000 of 3002 changed files");
    let a = policy.evaluate(&change);
    assert_eq!((a.level, a.score), (RiskLevel::Critical, 10));
    assert!(!a.workflow.auto_approves());
    for f in &a.factors {
        assert_eq!(
            f.rule.as_deref(),
            Some(countersign_policies::INCOMPLETE_RULE)
        );
        assert!(f.reason.contains("3000 of 3002"), "{}", f.reason);
    }
}
