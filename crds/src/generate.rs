//! Renders the CustomResourceDefinitions from the Rust types, ready to commit as YAML.
//!
//! `#[derive(CustomResource)]` output is close but not GitOps-clean: it may emit empty lists
//! the apiserver drops (Argo CD then shows the CRD out of sync forever) and integer formats the
//! apiserver does not know, and its optional enums (`nullable: true` with an `enum`) refuse an
//! explicit `null` on a real apiserver, whose enum check rejects null even when the enum lists
//! it. Without `nullable`, the apiserver prunes an explicit `null` before validating, which is
//! exactly "absent" for an `Option`. [`all`] fixes all three, so what we commit is exactly what
//! the apiserver stores and accepts.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use crate::{Agent, AgentRun, ApprovalGate, Project, RiskPolicy};

/// Integer formats the apiserver understands; others (schemars' `uint8`, `uint64`, …) are
/// dropped, with `minimum: 0` keeping their meaning.
const KNOWN_INTEGER_FORMATS: [&str; 2] = ["int32", "int64"];

/// Keys whose empty list the apiserver drops on storage.
const DROPPED_WHEN_EMPTY: [&str; 5] = [
    "categories",
    "additionalPrinterColumns",
    "shortNames",
    "required",
    "selectableFields",
];

/// Every Countersign CRD, in a stable order, cleaned for GitOps.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        Project::crd(),
        Agent::crd(),
        AgentRun::crd(),
        ApprovalGate::crd(),
        RiskPolicy::crd(),
    ]
    .into_iter()
    .map(clean)
    .collect()
}

/// The committed file name of a CRD, e.g. `agentruns.countersign.dev.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// Renders one CRD as a YAML document (with the leading `---`).
///
/// Bounds such as `minimum` are `f64` in the typed CRD and would print as `1.0`; the apiserver
/// stores `1`, so whole numbers are written as integers to keep GitOps diffs empty.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let mut value = serde_json::to_value(crd).expect("a CRD always serialises to JSON");
    integral_floats_to_integers(&mut value);
    Ok(format!("---\n{}", serde_yaml::to_string(&value)?))
}

fn integral_floats_to_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                *value = Value::from(f as i64);
            }
        }
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

fn clean(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let mut value = serde_json::to_value(&crd).expect("a CRD always serialises to JSON");
    clean_value(&mut value);
    serde_json::from_value(value).expect("cleaning keeps a CRD a valid CRD")
}

fn clean_value(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, v| {
                !(DROPPED_WHEN_EMPTY.contains(&key.as_str())
                    && v.as_array().is_some_and(Vec::is_empty))
            });
            let integer = map.get("type").and_then(Value::as_str) == Some("integer");
            if integer
                && map
                    .get("format")
                    .and_then(Value::as_str)
                    .is_some_and(|f| !KNOWN_INTEGER_FORMATS.contains(&f))
            {
                map.remove("format");
            }
            // An optional enum is not `nullable`: the apiserver then prunes `field: null`
            // (absent, i.e. `None`) instead of refusing it as a value outside the enum.
            if map.contains_key("enum") && map.get("nullable") == Some(&Value::Bool(true)) {
                map.remove("nullable");
            }
            map.values_mut().for_each(clean_value);
        }
        Value::Array(items) => items.iter_mut().for_each(clean_value),
        _ => {}
    }
}
