//! The gateway's own refusals, answered in the protocol of the request (OpenAI's
//! `{"error": {...}}` or Anthropic's `{"type": "error", "error": {...}}`) with an error type
//! starting with `countersign_`, so an agent can tell the gateway's word from a provider's:
//! a spent budget (`402`) or an ended attempt (`401`) is final, a busy gateway (`429` with
//! `Retry-After`) is not. Messages are for people and never contain a token or a key.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::budget::Exhausted;
use crate::plan::Protocol;

/// Why the gateway refuses a request itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No token, or one no attempt registered.
    Unauthorized(&'static str),
    /// The token's attempt ended (or its work step did).
    Ended(&'static str),
    /// The token was presented for another attempt than its own.
    WrongAttempt,
    /// A budget is spent.
    Budget(Exhausted),
    /// Too many requests of the Agent are in flight; try again shortly.
    Busy,
    /// The run, its Agent or Project is gone, or the Agent has no provider for the protocol.
    NotServed(String),
    /// The request is not a JSON object.
    BadRequest(String),
    /// The gateway cannot do its job now (the usage ledger cannot be read).
    Unavailable(String),
    /// A fixed allowance is used up (an attempt's milestones); trying again does not help.
    Limit(String),
}

impl Denial {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Denial::Unauthorized(_) => "unauthorized",
            Denial::Ended(_) => "attempt_ended",
            Denial::WrongAttempt => "wrong_attempt",
            Denial::Budget(e) => e.label(),
            Denial::Busy => "busy",
            Denial::NotServed(_) => "not_served",
            Denial::BadRequest(_) => "bad_request",
            Denial::Unavailable(_) => "unavailable",
            Denial::Limit(_) => "limit",
        }
    }

    fn status_kind_message(&self) -> (StatusCode, &'static str, String) {
        match self {
            Denial::Unauthorized(why) => (
                StatusCode::UNAUTHORIZED,
                "countersign_unauthorized",
                format!("Countersign gateway: {why}"),
            ),
            Denial::Ended(why) => (
                StatusCode::UNAUTHORIZED,
                "countersign_token_expired",
                format!("Countersign gateway: the token is no longer valid: {why}"),
            ),
            Denial::WrongAttempt => (
                StatusCode::FORBIDDEN,
                "countersign_wrong_attempt",
                "Countersign gateway: this token belongs to another attempt".into(),
            ),
            Denial::Budget(e) => (
                StatusCode::PAYMENT_REQUIRED,
                "countersign_budget_exhausted",
                format!("Countersign gateway: budget exhausted: {e}"),
            ),
            Denial::Busy => (
                StatusCode::TOO_MANY_REQUESTS,
                "countersign_busy",
                "Countersign gateway: too many requests of this Agent in flight".into(),
            ),
            Denial::NotServed(why) => (
                StatusCode::FORBIDDEN,
                "countersign_not_served",
                format!("Countersign gateway: {why}"),
            ),
            Denial::BadRequest(why) => (
                StatusCode::BAD_REQUEST,
                "countersign_bad_request",
                format!("Countersign gateway: {why}"),
            ),
            Denial::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "countersign_unavailable",
                format!("Countersign gateway: {why}"),
            ),
            Denial::Limit(why) => (
                StatusCode::TOO_MANY_REQUESTS,
                "countersign_limit",
                format!("Countersign gateway: {why}"),
            ),
        }
    }

    /// The answer in `protocol`'s error shape.
    pub fn respond(&self, protocol: Protocol) -> Response {
        let (status, kind, message) = self.status_kind_message();
        let mut response = error_response(protocol, status, kind, &message);
        if matches!(self, Denial::Busy) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// An error answer in `protocol`'s shape.
pub fn error_response(
    protocol: Protocol,
    status: StatusCode,
    kind: &str,
    message: &str,
) -> Response {
    let body = match protocol {
        Protocol::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": kind}})
        }
        Protocol::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refusals_speak_the_requests_protocol() {
        let denial = Denial::Budget(Exhausted::AttemptTokens { used: 5, max: 5 });
        let response = denial.respond(Protocol::Anthropic);
        assert_eq!(response.status(), StatusCode::PAYMENT_REQUIRED);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "countersign_budget_exhausted");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("maxTokens"))
        );
        let busy = Denial::Busy.respond(Protocol::OpenAi);
        assert_eq!(busy.headers()[header::RETRY_AFTER], "1");
    }
}
