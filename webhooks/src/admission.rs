//! Validating admission for RiskPolicy: the CRD schema and CEL rules catch shape errors;
//! this catches what only the risk engine knows — globs that do not compile, Rego modules
//! with syntax or semantic errors, duplicate rule names — before a broken policy is stored
//! and every gate that uses it stalls.
//!
//! Kubernetes sends an `AdmissionReview`; the answer is always `200` with `allowed` set,
//! and a denial lists every problem with its field path, as `kubectl apply` prints it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use countersign_crds::risk_policy::RiskPolicySpec;
use countersign_crds::{RiskPolicy, RoleName};
use countersign_policies::CompiledPolicy;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

/// Roles every Countersign installation knows; others are allowed (roles are extensible)
/// but earn a warning, since a typo there makes a workflow unsatisfiable.
const WELL_KNOWN_ROLES: [&str; 5] = [
    RoleName::DEVELOPER,
    RoleName::TECH_LEAD,
    RoleName::MANAGER,
    RoleName::SECURITY_TEAM,
    RoleName::CTO,
];

/// The verdict on one RiskPolicy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Store it; warnings are shown to the user by kubectl.
    Allow {
        /// Things worth a second look.
        warnings: Vec<String>,
    },
    /// Refuse it, with every reason.
    Deny {
        /// Each problem, prefixed with its field path.
        reasons: Vec<String>,
    },
}

/// Decides whether a RiskPolicy spec may be stored.
pub fn review_risk_policy(spec: &RiskPolicySpec) -> Verdict {
    if let Err(errors) = CompiledPolicy::compile(spec) {
        return Verdict::Deny {
            reasons: errors.errors().iter().map(ToString::to_string).collect(),
        };
    }
    let workflows = [
        ("low", &spec.workflows.low),
        ("medium", &spec.workflows.medium),
        ("high", &spec.workflows.high),
        ("critical", &spec.workflows.critical),
    ];
    let mut warnings = Vec::new();
    for (level, workflow) in workflows {
        let roles = workflow
            .approvers
            .iter()
            .map(|a| (&a.role, "approvers"))
            .chain(workflow.escalate_to.iter().map(|r| (r, "escalateTo")));
        for (role, field) in roles {
            if !WELL_KNOWN_ROLES.contains(&role.as_str()) {
                warnings.push(format!(
                    "spec.workflows.{level}.{field}: role {:?} is not one of {}; make sure your Projects bind it",
                    role.as_str(),
                    WELL_KNOWN_ROLES.join(", ")
                ));
            }
        }
    }
    Verdict::Allow { warnings }
}

/// `POST` handler for `AdmissionReview`s of RiskPolicies.
pub async fn risk_policy_handler(Json(review): Json<AdmissionReview<DynamicObject>>) -> Response {
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(err) => {
            tracing::warn!(error = %err, "admission review without a request");
            return (
                StatusCode::BAD_REQUEST,
                "an AdmissionReview with a request is required",
            )
                .into_response();
        }
    };
    // Compiling a policy (and probing its Rego module) is CPU work: off the threads that
    // answer requests, so a slow module cannot delay webhook deliveries (docs/security.md,
    // item 12). A panic in it is an internal error, never a crashed server.
    let uid = request.uid.clone();
    match tokio::task::spawn_blocking(move || respond(&request)).await {
        Ok(response) => Json(response.into_review()).into_response(),
        Err(err) => {
            tracing::error!(error = %err, %uid, "RiskPolicy admission review failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "the review failed").into_response()
        }
    }
}

fn respond(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return response;
    }
    let Some(object) = &request.object else {
        return response.deny("the request carries no object");
    };
    let policy: RiskPolicy = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(policy) => policy,
        Err(err) => return response.deny(format!("not a valid RiskPolicy: {err}")),
    };
    match review_risk_policy(&policy.spec) {
        Verdict::Allow { warnings } if warnings.is_empty() => response,
        Verdict::Allow { warnings } => {
            let mut response = response;
            response.warnings = Some(warnings);
            response
        }
        Verdict::Deny { reasons } => {
            tracing::info!(name = %request.name, namespace = ?request.namespace, "denied a RiskPolicy");
            response.deny(reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests;
