//! Countersign's inbound HTTP: Kubernetes admission review for Countersign kinds (today) and
//! GitHub webhook deliveries (with the bot).
//!
//! Deciding is pure ([`admission::review_risk_policy`]); the axum handlers only translate
//! between HTTP and those functions. [`app`] is the router the serving binary mounts.

pub mod admission;
pub mod github;

use axum::Router;
use axum::routing::post;

/// Path of the validating admission endpoint for RiskPolicies.
pub const RISK_POLICY_ADMISSION_PATH: &str = "/admission/v1/riskpolicies";

/// The webhooks router.
pub fn app() -> Router {
    Router::new().route(
        RISK_POLICY_ADMISSION_PATH,
        post(admission::risk_policy_handler),
    )
}
