//! Reads RiskPolicy manifests (YAML, possibly several documents) and checks them the way the
//! cluster would, plus what only the engine can check: globs and the Rego module. Used by
//! `countersign policy validate`, tests, and anything that loads a policy from a file.

use std::fmt::Write as _;

use countersign_crds::RiskPolicy;
use serde::Deserialize;

use crate::compile::CompiledPolicy;
use crate::error::{FieldPath, PolicyError};

const API_VERSION: &str = "countersign.dev/v1alpha1";
const KIND: &str = "RiskPolicy";

/// Why a manifest file could not be read as RiskPolicies at all.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A document is not valid YAML, or a RiskPolicy document does not fit the API types.
    /// serde_yaml's message names the field and the line.
    #[error("document {document}: {source}")]
    Yaml {
        /// 1-based position of the document in the stream.
        document: usize,
        /// serde_yaml's error.
        #[source]
        source: serde_yaml::Error,
    },
    /// The file holds no `countersign.dev/v1alpha1` RiskPolicy document.
    #[error("no {API_VERSION} {KIND} document found")]
    NoPolicy,
}

/// One RiskPolicy document of a manifest.
#[derive(Debug, Clone)]
pub struct PolicyDocument {
    /// 1-based position of the document in the stream.
    pub document: usize,
    /// `metadata.name`, or `<unnamed>`.
    pub name: String,
    /// The policy.
    pub policy: RiskPolicy,
    /// Fields the API types do not know (the apiserver would reject them), e.g.
    /// `spec.rules[0].match.pathz`.
    pub unknown_fields: Vec<FieldPath>,
}

/// The verdict on one RiskPolicy document.
#[derive(Debug)]
pub struct PolicyReport {
    /// 1-based position of the document in the stream.
    pub document: usize,
    /// `metadata.name`, or `<unnamed>`.
    pub name: String,
    /// Number of rules.
    pub rule_count: usize,
    /// Fields the API does not know.
    pub unknown_fields: Vec<FieldPath>,
    /// Compile errors, each naming its field.
    pub errors: Vec<PolicyError>,
}

impl PolicyReport {
    /// Whether the policy can be installed as written.
    pub fn is_ok(&self) -> bool {
        self.unknown_fields.is_empty() && self.errors.is_empty()
    }

    /// One line per problem, each starting with the field path.
    pub fn problems(&self) -> Vec<String> {
        self.unknown_fields
            .iter()
            .map(|f| format!("{f}: unknown field"))
            .chain(self.errors.iter().map(ToString::to_string))
            .collect()
    }
}

/// Parses every `countersign.dev/v1alpha1` RiskPolicy document of a YAML stream; documents
/// of other kinds are skipped.
pub fn parse_policies(yaml: &str) -> Result<Vec<PolicyDocument>, ManifestError> {
    let mut out = Vec::new();
    // First pass: find the RiskPolicy documents. Second pass: read them straight from the
    // text so serde_yaml's errors keep their line numbers.
    let kinds: Vec<bool> = serde_yaml::Deserializer::from_str(yaml)
        .enumerate()
        .map(|(i, doc)| {
            let value =
                serde_yaml::Value::deserialize(doc).map_err(|source| ManifestError::Yaml {
                    document: i + 1,
                    source,
                })?;
            Ok(value.get("kind").and_then(|k| k.as_str()) == Some(KIND)
                && value.get("apiVersion").and_then(|v| v.as_str()) == Some(API_VERSION))
        })
        .collect::<Result<_, ManifestError>>()?;
    for (i, doc) in serde_yaml::Deserializer::from_str(yaml).enumerate() {
        if !kinds.get(i).copied().unwrap_or(false) {
            continue;
        }
        let mut unknown = Vec::new();
        // apiVersion and kind were checked above; the generated type skips them.
        let policy: RiskPolicy = serde_ignored::deserialize(doc, |path| {
            let field = field_path(&path);
            if !matches!(field.as_str(), "apiVersion" | "kind") {
                unknown.push(field);
            }
        })
        .map_err(|source| ManifestError::Yaml {
            document: i + 1,
            source,
        })?;
        out.push(PolicyDocument {
            document: i + 1,
            name: policy
                .metadata
                .name
                .clone()
                .unwrap_or_else(|| "<unnamed>".to_owned()),
            policy,
            unknown_fields: unknown,
        });
    }
    if out.is_empty() {
        return Err(ManifestError::NoPolicy);
    }
    Ok(out)
}

/// Parses and compiles every RiskPolicy of a YAML stream, collecting all problems.
pub fn validate_policies(yaml: &str) -> Result<Vec<PolicyReport>, ManifestError> {
    Ok(parse_policies(yaml)?
        .into_iter()
        .map(|doc| {
            let errors = match CompiledPolicy::compile(&doc.policy.spec) {
                Ok(_) => Vec::new(),
                Err(errors) => errors.into_errors(),
            };
            PolicyReport {
                document: doc.document,
                name: doc.name,
                rule_count: doc.policy.spec.rules.len(),
                unknown_fields: doc.unknown_fields,
                errors,
            }
        })
        .collect())
}

/// The built-in default RiskPolicy ([`DEFAULT_POLICY_YAML`](crate::DEFAULT_POLICY_YAML)).
pub fn default_policy() -> RiskPolicy {
    parse_policies(crate::DEFAULT_POLICY_YAML)
        .ok()
        .and_then(|docs| docs.into_iter().next())
        .map(|doc| doc.policy)
        .expect("the built-in default RiskPolicy parses (tested in tests/default_policy.rs)")
}

/// `spec.rules[0].match.pathz` from serde_ignored's path.
fn field_path(path: &serde_ignored::Path<'_>) -> FieldPath {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut String) {
        use serde_ignored::Path;
        match path {
            Path::Root => {}
            Path::Seq { parent, index } => {
                walk(parent, out);
                let _ = write!(out, "[{index}]");
            }
            Path::Map { parent, key } => {
                walk(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut out = String::new();
    walk(path, &mut out);
    FieldPath(out)
}
