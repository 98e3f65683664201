//! API errors rendered as `meta/v1 Status` bodies, worded like the real kube-apiserver so that
//! `kube::Error::Api` and kubectl parse and print them the same way.

use serde_json::{Value, json};

/// An error answer: HTTP code, machine-readable `reason`, message and optional `details`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u32>,
}

/// Names a resource the way error messages do: `pods`, `agentruns.countersign.dev`.
pub(crate) fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
        .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn conflict_message(
        group: &str,
        plural: &str,
        name: &str,
        message: String,
        causes: Vec<Value>,
    ) -> Self {
        Self::new(409, "Conflict", message)
            .with_details(json!({"name": name, "group": group, "kind": plural, "causes": causes}))
    }

    pub fn precondition(group: &str, plural: &str, name: &str, message: String) -> Self {
        Self::new(409, "Conflict", message)
            .with_details(json!({"name": name, "group": group, "kind": plural}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// 422 with one cause per field error, message as `Kind.group "name" is invalid: ...`.
    pub fn invalid(group: &str, kind: &str, name: &str, causes: &[(String, String)]) -> Self {
        let qualified_kind = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let rendered: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let summary = if rendered.len() == 1 {
            rendered[0].clone()
        } else {
            format!("[{}]", rendered.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
            .collect();
        Self::new(
            422,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {summary}"),
        )
        .with_details(json!({"name": name, "group": group, "kind": kind, "causes": causes}))
    }

    /// 422 for a missing `fieldManager` on an apply patch, exactly as kube-apiserver words it.
    pub fn apply_needs_field_manager() -> Self {
        Self::new(
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        )
        .with_details(json!({
            "name": "", "group": "meta.k8s.io", "kind": "PatchOptions",
            "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]
        }))
    }

    /// 500 with an empty reason: what kube-apiserver answers when server-side apply cannot
    /// build a typed object (e.g. a field the CRD's schema does not declare).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    pub fn unsupported_media(message: impl Into<String>) -> Self {
        Self::new(415, "UnsupportedMediaType", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn too_large_rv() -> Self {
        Self::new(504, "Timeout", "Too large resource version")
            .with_details(json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}))
    }

    pub fn injected(code: u16, retry_after: Option<u32>) -> Self {
        let mut e = match code {
            429 => Self::new(
                429,
                "TooManyRequests",
                "injected fault: too many requests, please try again later",
            ),
            503 => Self::new(
                503,
                "ServiceUnavailable",
                "injected fault: the server is currently unable to handle the request",
            ),
            504 => Self::new(
                504,
                "Timeout",
                "injected fault: the server was unable to return a response in the time allotted",
            ),
            _ => Self::new(
                500,
                "InternalError",
                "Internal error occurred: injected fault",
            ),
        };
        e.retry_after = retry_after;
        if let Some(secs) = retry_after {
            e.details = Some(json!({"retryAfterSeconds": secs}));
        }
        e
    }

    /// The `meta/v1 Status` body.
    pub fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.code, self.reason, self.message)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// A JSON patch that cannot be applied (e.g. a failed `test` op or missing path).
    pub fn unprocessable_patch(message: String) -> Self {
        Self::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {message}"),
        )
    }
}
