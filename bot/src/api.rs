//! `/api/v1`: stateless tools for policy authors, backed by the same engine the controller
//! runs.
//!
//! - `POST /api/v1/validate`: RiskPolicy manifests (YAML or JSON, one or several documents)
//!   → every problem with its field path, as admission would report it.
//! - `POST /api/v1/simulate`: a policy, a change and hypothetical reviewers → the risk
//!   assessment, the requirements per role, each reviewer's decision valid or why not, the
//!   resulting phase, and the check run Countersign would publish.
//!
//! Bodies are capped at [`MAX_BODY_BYTES`] (413 beyond). Nothing here touches the cluster or
//! GitHub. Evaluations run off the request threads, a few at a time, within a time limit and
//! (in `countersign bot`) a memory limit ([`runner`]); they are served on the internal
//! listener only.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use countersign_policies::{CompiledPolicy, ManifestError, PolicyError, parse_policies};
use countersign_webhooks::admission::{Verdict, review_risk_policy};
use serde::Serialize;
use serde_json::{Value, json};

pub mod runner;
mod simulate;

pub use runner::{Endpoint, Isolation, PolicyLimits, PolicyRunner};
pub use simulate::{SimulateRequest, simulate};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The `/api/v1` routes, evaluating through `runner` (never on the request threads).
pub fn router(runner: PolicyRunner) -> Router {
    Router::new()
        .route("/api/v1/validate", post(validate_handler))
        .route("/api/v1/simulate", post(simulate_handler))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(runner)
}

async fn validate_handler(State(runner): State<PolicyRunner>, body: Bytes) -> Response {
    let (status, value) = runner.run(Endpoint::Validate, body).await;
    (status, axum::Json(value)).into_response()
}

async fn simulate_handler(State(runner): State<PolicyRunner>, body: Bytes) -> Response {
    let (status, value) = runner.run(Endpoint::Simulate, body).await;
    (status, axum::Json(value)).into_response()
}

/// A client fault, answered with `{"error": …}` (and details when there are some).
#[derive(Debug)]
pub enum ApiError {
    /// The body cannot be read as what the endpoint expects.
    BadRequest(String),
    /// The body is well-formed, but its policy does not compile.
    InvalidPolicy(Vec<FieldError>),
}

impl ApiError {
    /// The status and JSON body this error is answered with.
    pub fn status_and_body(self) -> (StatusCode, Value) {
        match self {
            Self::BadRequest(error) => (StatusCode::BAD_REQUEST, json!({ "error": error })),
            Self::InvalidPolicy(errors) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "error": "the policy does not compile", "errors": errors }),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.status_and_body();
        (status, axum::Json(body)).into_response()
    }
}

/// One problem of a policy, at its field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// E.g. `spec.rules[3].match.paths[1]`.
    pub field: String,
    /// What is wrong there.
    pub message: String,
}

impl FieldError {
    pub(crate) fn from_policy_error(error: &PolicyError) -> Self {
        let field = error.field().to_string();
        let full = error.to_string();
        let message = full
            .strip_prefix(field.as_str())
            .map(|rest| rest.trim_start_matches(':').trim_start().to_owned())
            .filter(|m| !m.is_empty())
            .unwrap_or(full);
        Self { field, message }
    }
}

/// The verdict on one document of a validate request.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVerdict {
    /// `metadata.name`, or `<unnamed>`.
    pub name: String,
    /// 1-based position in the body.
    pub document: usize,
    /// Number of rules.
    pub rules: usize,
    /// Every problem; empty when the policy can be installed.
    pub errors: Vec<FieldError>,
    /// Things admission would warn about (unknown roles).
    pub warnings: Vec<String>,
}

/// Validates every RiskPolicy of `text` (YAML, or JSON: one object or an array).
pub fn validate_text(text: &str) -> Result<Vec<PolicyVerdict>, ApiError> {
    let yaml = json_as_yaml(text)?;
    let docs = parse_policies(yaml.as_deref().unwrap_or(text)).map_err(|e| match e {
        ManifestError::NoPolicy => ApiError::BadRequest(e.to_string()),
        ManifestError::Yaml { .. } => ApiError::BadRequest(format!("cannot parse the body: {e}")),
    })?;
    Ok(docs
        .into_iter()
        .map(|doc| {
            let mut errors: Vec<FieldError> = doc
                .unknown_fields
                .iter()
                .map(|f| FieldError {
                    field: f.to_string(),
                    message: "unknown field".to_owned(),
                })
                .collect();
            if let Err(compile) = CompiledPolicy::compile(&doc.policy.spec) {
                errors.extend(compile.errors().iter().map(FieldError::from_policy_error));
            }
            let warnings = match (errors.is_empty(), review_risk_policy(&doc.policy.spec)) {
                (true, Verdict::Allow { warnings }) => warnings,
                _ => Vec::new(),
            };
            PolicyVerdict {
                name: doc.name,
                document: doc.document,
                rules: doc.policy.spec.rules.len(),
                errors,
                warnings,
            }
        })
        .collect())
}

/// A JSON body (object or array of objects) as a YAML stream; `None` when the body is not
/// JSON (it is read as YAML then).
fn json_as_yaml(text: &str) -> Result<Option<String>, ApiError> {
    let trimmed = text.trim_start();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        return Ok(None);
    }
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("cannot parse the body as JSON: {e}")))?;
    let documents = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    let mut out = String::new();
    for doc in documents {
        let yaml = serde_yaml::to_string(&doc)
            .map_err(|e| ApiError::BadRequest(format!("cannot read the JSON document: {e}")))?;
        out.push_str("---\n");
        out.push_str(&yaml);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_split_the_field_from_the_message() {
        let spec = serde_json::from_value::<countersign_crds::RiskPolicySpec>(json!({
            "rules": [{"name": "a", "match": {"paths": ["src/[x"]}, "set": {"impact": 3}}],
            "workflows": {
                "low": {"name": "standard", "autoApprove": true},
                "medium": {"name": "supervised", "approvers": [{"role": "developer"}]},
                "high": {"name": "managed", "approvers": [{"role": "tech_lead"}]},
                "critical": {"name": "executive", "approvers": [{"role": "cto"}]}
            }
        }))
        .expect("spec");
        let Err(errors) = CompiledPolicy::compile(&spec) else {
            panic!("a bad glob must not compile");
        };
        let e = FieldError::from_policy_error(&errors.errors()[0]);
        assert_eq!(e.field, "spec.rules[0].match.paths[0]");
        assert!(e.message.starts_with("invalid glob"), "{}", e.message);
    }

    #[test]
    fn json_arrays_become_several_documents() {
        let yaml = json_as_yaml(r#"[{"a": 1}, {"b": 2}]"#)
            .expect("json")
            .expect("is json");
        assert_eq!(yaml.matches("---").count(), 2);
        assert!(json_as_yaml("apiVersion: v1").expect("yaml").is_none());
        assert!(matches!(
            json_as_yaml("{nope"),
            Err(ApiError::BadRequest(_))
        ));
    }
}
