//! Every manifest we ship (examples/, policies/manifests/, policies/examples/) must
//! be accepted by the generated CRDs exactly as the apiserver would: no unknown fields, no
//! schema violations, no failing CEL rule, and it must deserialise into the Rust types. A set
//! of broken manifests must be rejected with a message naming the field.

use std::fs;
use std::path::{Path, PathBuf};

use countersign_testkit::schema::{self, FieldError};
use serde_json::{Value, json};

fn manifest_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["examples", "policies/manifests", "policies/examples"] {
        for entry in fs::read_dir(root.join(dir)).expect("manifest dir exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn load(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).expect("readable manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).expect("valid YAML");
            serde_json::to_value(value).expect("YAML maps to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    load(&path).remove(0)
}

fn schema_for(kind: &str) -> Value {
    let crd = countersign_crds::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .expect("schema")
        .open_api_v3_schema
        .expect("openAPIV3Schema");
    serde_json::to_value(schema).expect("schema as JSON")
}

/// What the apiserver does on create: prune (rejecting unknown fields, as `kubectl apply`'s
/// default strict field validation does), default, validate.
fn admit(obj: &Value, old: Option<&Value>) -> Result<Value, Vec<String>> {
    let kind = obj["kind"].as_str().expect("kind");
    let schema = schema_for(kind);
    let mut obj = obj.clone();
    let unknown = schema::prune(&schema, &mut obj);
    if !unknown.is_empty() {
        return Err(unknown
            .iter()
            .map(|p| format!("unknown field \"{p}\""))
            .collect());
    }
    schema::apply_defaults(&schema, &mut obj);
    let errors: Vec<FieldError> = schema::validate(&schema, &obj, old);
    if errors.is_empty() {
        Ok(obj)
    } else {
        Err(errors.iter().map(ToString::to_string).collect())
    }
}

fn deserialise_typed(obj: &Value) {
    let kind = obj["kind"].as_str().unwrap();
    let result = match kind {
        "Project" => serde_json::from_value::<countersign_crds::Project>(obj.clone()).map(drop),
        "Agent" => serde_json::from_value::<countersign_crds::Agent>(obj.clone()).map(drop),
        "AgentRun" => serde_json::from_value::<countersign_crds::AgentRun>(obj.clone()).map(drop),
        "ApprovalGate" => {
            serde_json::from_value::<countersign_crds::ApprovalGate>(obj.clone()).map(drop)
        }
        "RiskPolicy" => {
            serde_json::from_value::<countersign_crds::RiskPolicy>(obj.clone()).map(drop)
        }
        other => panic!("unexpected kind {other}"),
    };
    result.unwrap_or_else(|e| panic!("{kind} does not deserialise: {e}"));
}

#[test]
fn every_shipped_manifest_is_accepted_and_deserialises() {
    let files = manifest_files();
    let mut kinds = Vec::new();
    for file in &files {
        for obj in load(file) {
            let admitted =
                admit(&obj, None).unwrap_or_else(|e| panic!("{} rejected: {e:#?}", file.display()));
            deserialise_typed(&admitted);
            kinds.push(admitted["kind"].as_str().unwrap().to_owned());
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "Agent",
            "Agent",
            "Agent",
            "AgentRun",
            "Project",
            "RiskPolicy",
            "RiskPolicy"
        ],
        "{files:?}"
    );
}

#[test]
fn the_example_agents_cover_the_three_provider_kinds_with_a_fallback() {
    let backend = example("examples/agent-backend.yaml");
    let kinds: Vec<&str> = backend["spec"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["openai", "openai"],
        "backend has a fallback provider"
    );
    assert_eq!(
        example("examples/agent-frontend.yaml")["spec"]["providers"][0]["kind"],
        "anthropic"
    );
    assert_eq!(
        example("examples/agent-qa.yaml")["spec"]["providers"][0]["kind"],
        "command"
    );
}

/// Applies `edit` to a shipped manifest and expects a rejection mentioning `field` and `words`.
fn assert_rejected(
    file: &str,
    old: Option<&Value>,
    edit: impl FnOnce(&mut Value),
    field: &str,
    words: &str,
) {
    let mut obj = example(file);
    edit(&mut obj);
    let errors = admit(&obj, old).expect_err("the broken manifest must be rejected");
    assert!(
        errors
            .iter()
            .any(|e| e.contains(field) && e.contains(words)),
        "expected an error naming {field:?} with {words:?}, got {errors:#?}"
    );
}

#[test]
fn a_risk_factor_above_ten_is_rejected() {
    assert_rejected(
        "policies/manifests/default-riskpolicy.yaml",
        None,
        |p| p["spec"]["rules"][0]["set"]["impact"] = json!(11),
        "spec.rules[0].set.impact",
        "should be less than or equal to 10",
    );
}

#[test]
fn an_unknown_agent_role_is_rejected() {
    assert_rejected(
        "examples/agent-backend.yaml",
        None,
        |a| a["spec"]["role"] = json!("wizard"),
        "spec.role",
        "Unsupported value: \"wizard\"",
    );
}

#[test]
fn an_invalid_approver_role_name_is_rejected() {
    assert_rejected(
        "policies/manifests/default-riskpolicy.yaml",
        None,
        |p| p["spec"]["workflows"]["medium"]["approvers"][0]["role"] = json!("Tech Lead"),
        "spec.workflows.medium.approvers[0].role",
        "should match",
    );
}

#[test]
fn mutating_an_immutable_field_is_rejected() {
    let stored = admit(&example("examples/agentrun.yaml"), None).expect("example is valid");
    assert_rejected(
        "examples/agentrun.yaml",
        Some(&stored),
        |r| r["spec"]["agentRef"]["name"] = json!("frontend"),
        "spec.agentRef",
        "agentRef is immutable",
    );
    assert_rejected(
        "examples/agentrun.yaml",
        Some(&stored),
        |r| r["spec"]["task"]["title"] = json!("Something else entirely"),
        "spec.task",
        "task is immutable",
    );
    // Changing a mutable field of the same object is fine.
    let mut cancelled = stored.clone();
    cancelled["spec"]["cancelRequested"] = json!(true);
    admit(&cancelled, Some(&stored)).expect("cancelRequested is mutable");
}

#[test]
fn a_project_without_a_repository_is_rejected() {
    assert_rejected(
        "examples/project.yaml",
        None,
        |p| {
            p["spec"].as_object_mut().unwrap().remove("repository");
        },
        "spec.repository",
        "Required value",
    );
}

#[test]
fn cross_field_rules_are_enforced() {
    assert_rejected(
        "policies/manifests/default-riskpolicy.yaml",
        None,
        |p| p["spec"]["thresholds"] = json!({"medium": 8, "high": 5, "critical": 9}),
        "spec.thresholds",
        "thresholds must rise",
    );
    assert_rejected(
        "policies/manifests/default-riskpolicy.yaml",
        None,
        |p| {
            p["spec"]["workflows"]["high"]
                .as_object_mut()
                .unwrap()
                .remove("escalateTo");
        },
        "spec.workflows.high",
        "onTimeout escalate needs escalateTo",
    );
    assert_rejected(
        "examples/agent-qa.yaml",
        None,
        |a| {
            a["spec"]["providers"][0]
                .as_object_mut()
                .unwrap()
                .remove("command");
        },
        "spec.providers[0]",
        "needs `command`",
    );
}

#[test]
fn bad_durations_and_unknown_fields_are_rejected() {
    assert_rejected(
        "examples/agent-backend.yaml",
        None,
        |a| a["spec"]["limits"]["timeout"] = json!("thirty minutes"),
        "spec.limits.timeout",
        "should match",
    );
    assert_rejected(
        "examples/agent-backend.yaml",
        None,
        |a| a["spec"]["maxConcurrentRun"] = json!(3),
        "spec.maxConcurrentRun",
        "unknown field",
    );
}
