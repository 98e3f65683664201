//! The optional Rego module: it can raise factors and add reasons, never lower them; compile
//! errors name the line; runtime failures fail closed.

use countersign_crds::RiskPolicySpec;
use countersign_crds::risk_policy::{RiskFactor, RiskLevel};
use countersign_policies::{
    AuthorKind, AutoApprove, Change, CompiledPolicy, PolicyError, REGO_RULE, RegoVerdict,
    SpecProblem,
};

fn spec_with_rego(module: &str) -> RiskPolicySpec {
    let yaml = r#"
rules:
  - { name: code, match: { paths: ["src/**", "billing/**"] }, set: { impact: 5, complexity: 5 } }
  - { name: docs, match: { onlyPaths: ["docs/**"] }, set: { impact: 1 } }
workflows:
  low: { name: standard, autoApprove: true }
  medium: { name: supervised, approvers: [{ role: developer }, { role: tech_lead }] }
  high: { name: managed, approvers: [{ role: tech_lead }, { role: manager }] }
  critical: { name: executive, approvers: [{ role: manager }, { role: security_team }, { role: cto }] }
"#;
    let mut spec: RiskPolicySpec = serde_yaml::from_str(yaml).expect("test spec parses");
    spec.rego = Some(countersign_crds::risk_policy::RegoModule {
        module: module.to_owned(),
        package: "countersign.risk".to_owned(),
    });
    spec
}

fn compile(module: &str) -> CompiledPolicy {
    CompiledPolicy::compile(&spec_with_rego(module)).unwrap_or_else(|e| panic!("compiles: {e}"))
}

const BILLING: &str = r#"
package countersign.risk

billing_files := [f.path | some f in input.files; startswith(f.path, "billing/")]

factors["businessImpact"] := 9 if count(billing_files) > 0

factors["impact"] := 2 if count(billing_files) > 0

factors["complexity"] := 8 if input.authorKind == "ai"

reasons contains sprintf("%s touches billing", [billing_files[0]]) if count(billing_files) > 0

reasons contains "AI-written change" if input.authorKind == "ai"
"#;

#[test]
fn rego_raises_factors_with_its_reasons() {
    let p = compile(BILLING);
    assert!(p.has_rego());
    let a = p.evaluate(&Change::touching(["billing/invoice.rs"]));
    let b = a.factor(RiskFactor::BusinessImpact);
    assert_eq!((b.score, b.rule.as_deref()), (9, Some(REGO_RULE)));
    assert_eq!(
        b.reason,
        "businessImpact 9: billing/invoice.rs touches billing"
    );
    assert_eq!((a.score, a.level), (9, RiskLevel::Critical));
    assert_eq!(
        a.rego,
        Some(RegoVerdict::Evaluated {
            raised: vec![RiskFactor::BusinessImpact],
            reasons: vec!["billing/invoice.rs touches billing".to_owned()],
        })
    );
}

#[test]
fn rego_cannot_lower_a_factor() {
    let p = compile(BILLING);
    let a = p.evaluate(&Change::touching(["billing/invoice.rs"]));
    let impact = a.factor(RiskFactor::Impact);
    assert_eq!((impact.score, impact.rule.as_deref()), (5, Some("code")));
}

#[test]
fn rego_sees_the_change_as_input() {
    let p = compile(BILLING);
    let a = p.evaluate(&Change::touching(["src/a.rs"]).with_author_kind(AuthorKind::Ai));
    assert_eq!(
        a.factor(RiskFactor::Complexity).reason,
        "complexity 8: AI-written change"
    );
    let a = p.evaluate(&Change::touching(["docs/a.md"]));
    assert_eq!(
        a.score, 1,
        "undefined factors leave the native scores: {a:#?}"
    );
    assert!(a.workflow.auto_approves());
}

#[test]
fn factors_without_reasons_say_so() {
    let p = compile("package countersign.risk\n\nfactors := {\"impact\": 6}\n");
    let a = p.evaluate(&Change::touching(["src/a.rs"]));
    assert_eq!(
        a.factor(RiskFactor::Impact).reason,
        "impact 6: set by the Rego module"
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let module = "package countersign.risk\n\nfactors := {\"impact\": 6}\n\nreasons contains x if {\n  x := [1, 2\n}\n";
    let err = CompiledPolicy::compile(&spec_with_rego(module)).expect_err("a syntax error fails");
    match &err.errors()[0] {
        PolicyError::Rego {
            field,
            line,
            message,
            ..
        } => {
            assert_eq!(field.as_str(), "spec.rego.module");
            assert!(matches!(line, Some(6 | 7)), "line {line:?}: {message}");
            assert!(!message.contains("-->"), "{message}");
        }
        other => panic!("expected a Rego error, got {other:?}"),
    }
    assert!(
        err.to_string().starts_with("spec.rego.module line "),
        "{err}"
    );
}

#[test]
fn semantic_errors_are_found_at_compile_time() {
    let module = "package countersign.risk\n\nfactors := {\"impact\": y}\n";
    let err =
        CompiledPolicy::compile(&spec_with_rego(module)).expect_err("an unsafe variable fails");
    assert!(
        matches!(err.errors()[0], PolicyError::Rego { line: Some(3), .. }),
        "{err}"
    );
}

#[test]
fn the_package_must_match() {
    let err = CompiledPolicy::compile(&spec_with_rego("package acme.risk\n\nfactors := {}\n"))
        .expect_err("a package mismatch fails");
    assert!(matches!(
        &err.errors()[0],
        PolicyError::Spec {
            problem: SpecProblem::RegoPackageMismatch { declared, .. },
            ..
        } if declared == "acme.risk"
    ));
}

#[test]
fn bad_output_fails_closed() {
    for module in [
        "package countersign.risk\n\nfactors := {\"impact\": 11}\n",
        "package countersign.risk\n\nfactors := {\"risk\": 3}\n",
        "package countersign.risk\n\nfactors := [1]\n",
        "package countersign.risk\n\nfactors := {\"impact\": 1}\n\nreasons := 7\n",
    ] {
        let p = compile(module);
        let a = p.evaluate(&Change::touching(["docs/a.md"]));
        assert_eq!((a.score, a.level), (10, RiskLevel::Critical), "{module}");
        assert!(
            matches!(a.rego, Some(RegoVerdict::Failed { .. })),
            "{module}"
        );
        assert!(
            a.factor(RiskFactor::Impact)
                .reason
                .contains("the Rego module failed, so the policy fails closed"),
            "{a:#?}"
        );
        assert!(matches!(a.workflow.auto_approve, AutoApprove::NotOffered));
    }
}

#[test]
fn runtime_errors_fail_closed() {
    // Conflicting values for one key only show up for some inputs.
    let module = r#"
package countersign.risk

factors["impact"] := 3 if { some f in input.files; f.path == "a" }
factors["impact"] := 4 if { some f in input.files; f.path == "b" }
"#;
    let p = compile(module);
    assert_eq!(
        p.evaluate(&Change::touching(["a"]))
            .factor(RiskFactor::Impact)
            .score,
        3
    );
    let a = p.evaluate(&Change::touching(["a", "b"]));
    assert!(matches!(a.rego, Some(RegoVerdict::Failed { .. })), "{a:#?}");
    assert_eq!(a.score, 10);
}

#[test]
fn the_example_manifest_raises_billing_and_big_ai_changes() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/rego-riskpolicy.yaml");
    let text = std::fs::read_to_string(path).expect("readable");
    let policy: countersign_crds::RiskPolicy = serde_yaml::from_str(&text).expect("parses");
    let p = CompiledPolicy::compile(&policy.spec).unwrap_or_else(|e| panic!("compiles: {e}"));
    let a = p.evaluate(&Change::touching(["billing/invoice.go"]));
    assert_eq!((a.score, a.level), (9, RiskLevel::Critical));
    assert_eq!(
        a.factor(RiskFactor::BusinessImpact).reason,
        "businessImpact 9: billing/invoice.go touches billing"
    );
    let big_ai = Change::default()
        .with_file("src/engine.rs", 250, 100)
        .with_author_kind(AuthorKind::Ai);
    let a = p.evaluate(&big_ai);
    assert_eq!(
        a.factor(RiskFactor::Complexity).reason,
        "complexity 7: an AI agent changed 350 lines"
    );
    assert_eq!(a.level, RiskLevel::Medium);
}
