//! Reading RiskPolicy manifests from YAML: multi-document streams, other kinds skipped,
//! unknown fields and compile errors reported with their field paths.

use countersign_policies::{ManifestError, parse_policies, validate_policies};

const TWO_POLICIES: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: unrelated }
---
apiVersion: countersign.dev/v1alpha1
kind: RiskPolicy
metadata: { name: good }
spec:
  rules: [{ name: a, match: { paths: ["src/**"] }, set: { impact: 5 } }]
  workflows:
    low: { name: standard, autoApprove: true }
    medium: { name: supervised, approvers: [{ role: developer }] }
    high: { name: managed, approvers: [{ role: manager }] }
    critical: { name: executive, approvers: [{ role: cto }] }
---
apiVersion: countersign.dev/v1alpha1
kind: RiskPolicy
metadata: { name: broken }
spec:
  rules: [{ name: a, match: { pathz: ["src/**"], paths: ["src/["] }, set: { impact: 5 } }]
  workflows:
    low: { name: standard, autoApprove: true }
    medium: { name: supervised, approvers: [{ role: developer }] }
    high: { name: managed, approvers: [{ role: manager }] }
    critical: { name: executive, approvers: [{ role: cto }] }
"#;

#[test]
fn multi_document_streams_yield_each_policy() {
    let docs = parse_policies(TWO_POLICIES).expect("parses");
    let names: Vec<(usize, &str)> = docs.iter().map(|d| (d.document, d.name.as_str())).collect();
    assert_eq!(names, [(2, "good"), (3, "broken")]);
}

#[test]
fn validation_reports_unknown_fields_and_compile_errors_by_field() {
    let reports = validate_policies(TWO_POLICIES).expect("parses");
    assert!(reports[0].is_ok(), "{:?}", reports[0].problems());
    assert_eq!(reports[0].rule_count, 1);
    let problems = reports[1].problems();
    assert_eq!(problems[0], "spec.rules[0].match.pathz: unknown field");
    assert!(
        problems[1].starts_with(r#"spec.rules[0].match.paths[0]: invalid glob "src/[""#),
        "{problems:?}"
    );
}

#[test]
fn yaml_errors_name_the_document_and_line() {
    let text = "apiVersion: countersign.dev/v1alpha1\nkind: RiskPolicy\nmetadata: { name: x }\nspec:\n  rules: [{ name: a, set: { impact: high } }]\n  workflows: {}\n";
    let err = parse_policies(text).expect_err("a wrong type fails");
    let msg = err.to_string();
    assert!(matches!(err, ManifestError::Yaml { document: 1, .. }));
    assert!(msg.contains("line 5"), "{msg}");
}

#[test]
fn a_file_without_policies_is_an_error() {
    let err = parse_policies("apiVersion: v1\nkind: ConfigMap\n").expect_err("no policy");
    assert!(matches!(err, ManifestError::NoPolicy));
}
