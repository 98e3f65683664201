//! The committed `crds/*.yaml` must be exactly what `countersign crds` generates, and the
//! generated CRDs must follow the API conventions of ARCHITECTURE.md §2.

use std::fs;
use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

fn crds_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/crds"))
}

#[test]
fn committed_crd_files_match_the_generated_ones() {
    let generated = countersign_crds::all();
    let mut committed: Vec<String> = fs::read_dir(crds_dir())
        .expect("crds/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    committed.sort();
    let mut expected: Vec<String> = generated
        .iter()
        .map(countersign_crds::generate::file_name)
        .collect();
    expected.sort();
    assert_eq!(
        committed, expected,
        "crds/*.yaml files differ from the generated set"
    );
    for crd in &generated {
        let name = countersign_crds::generate::file_name(crd);
        let on_disk = fs::read_to_string(crds_dir().join(&name)).expect("readable CRD file");
        let fresh = countersign_crds::to_yaml(crd).expect("renders");
        assert!(
            on_disk == fresh,
            "crds/{name} is stale: run `cargo run -- crds --out crds` and commit the result"
        );
    }
}

#[test]
fn the_cli_prints_every_crd() {
    let out = countersign::crds_cmd::render_all().expect("renders");
    let docs: Vec<CustomResourceDefinition> = out
        .split("\n---\n")
        .map(|d| d.trim_start_matches("---\n"))
        .map(|d| serde_yaml::from_str(d).expect("each document is a CRD"))
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|c| c.spec.names.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["Project", "Agent", "AgentRun", "ApprovalGate", "RiskPolicy"]
    );
}

#[test]
fn every_crd_follows_the_api_conventions() {
    for crd in countersign_crds::all() {
        let kind = &crd.spec.names.kind;
        assert_eq!(crd.spec.group, "countersign.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["countersign".to_owned()][..]),
            "{kind}"
        );
        assert!(
            crd.spec
                .names
                .short_names
                .as_ref()
                .is_some_and(|s| !s.is_empty()),
            "{kind} shortNames"
        );
        assert_eq!(crd.spec.versions.len(), 1);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(version.served && version.storage);
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{kind} status subresource"
        );
        let columns = version
            .additional_printer_columns
            .as_ref()
            .expect("printer columns");
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.first(), Some(&"Ready"), "{kind} columns {names:?}");
        assert_eq!(names.last(), Some(&"Age"), "{kind} columns {names:?}");
        assert!(
            names.len() >= 3,
            "{kind} needs a phase or summary column: {names:?}"
        );

        let schema = serde_json::to_value(
            version
                .schema
                .as_ref()
                .unwrap()
                .open_api_v3_schema
                .as_ref()
                .unwrap(),
        )
        .unwrap();
        let description = schema["description"].as_str().unwrap_or_default();
        assert!(
            !description.starts_with("Auto-generated"),
            "{kind} needs a human description"
        );
        let status = &schema["properties"]["status"]["properties"];
        assert_eq!(status["observedGeneration"]["type"], "integer", "{kind}");
        let conditions = &status["conditions"];
        assert_eq!(
            conditions["x-kubernetes-list-type"], "map",
            "{kind} conditions list-map"
        );
        assert_eq!(
            conditions["x-kubernetes-list-map-keys"],
            serde_json::json!(["type"]),
            "{kind}"
        );
        assert_undocumented_fields_absent(&schema, kind);
    }
}

#[test]
fn generated_yaml_has_no_empty_lists_or_float_bounds() {
    for crd in countersign_crds::all() {
        let yaml = countersign_crds::to_yaml(&crd).unwrap();
        for (i, line) in yaml.lines().enumerate() {
            let trimmed = line.trim();
            assert!(
                !trimmed.ends_with(": []"),
                "{}:{}: empty list `{trimmed}`",
                crd.spec.names.kind,
                i + 1
            );
            if trimmed.starts_with("minimum:") || trimmed.starts_with("maximum:") {
                assert!(!trimmed.contains('.'), "float bound `{trimmed}`");
            }
        }
    }
}

/// No field is named like a YAML 1.1 boolean (`on`, `yes`, `no`…): kubectl and other YAML 1.1
/// readers turn such a key into `true`/`false`, and the CRD or the object no longer applies.
#[test]
fn no_field_is_named_like_a_yaml_boolean() {
    fn walk(v: &serde_json::Value, path: &str, found: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let p = format!("{path}.{name}");
                let lower = name.to_ascii_lowercase();
                if ["on", "off", "yes", "no", "y", "n", "true", "false"].contains(&lower.as_str()) {
                    found.push(p.clone());
                }
                walk(prop, &p, found);
            }
        }
        if let Some(items) = v.get("items") {
            walk(items, &format!("{path}[]"), found);
        }
    }
    for crd in countersign_crds::all() {
        for version in &crd.spec.versions {
            let schema = serde_json::to_value(&version.schema).unwrap();
            let mut found = Vec::new();
            walk(&schema["openAPIV3Schema"], "", &mut found);
            assert!(found.is_empty(), "{}: {found:?}", crd.spec.names.kind);
        }
    }
}

/// Every property (spec and status) carries a description, since it is `kubectl explain` text.
fn assert_undocumented_fields_absent(schema: &serde_json::Value, kind: &str) {
    fn walk(v: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
            for (name, prop) in props {
                let p = format!("{path}.{name}");
                // metadata and apiVersion/kind are documented by Kubernetes itself.
                let standard =
                    path.is_empty() && ["metadata", "apiVersion", "kind"].contains(&name.as_str());
                // Condition fields come from k8s-openapi's documented type.
                if !standard && prop.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(prop, &p, missing);
            }
        }
        if let Some(items) = v.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    let mut missing = Vec::new();
    walk(schema, "", &mut missing);
    assert!(
        missing.is_empty(),
        "{kind}: fields without a description: {missing:?}"
    );
}
