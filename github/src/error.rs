//! Why a GitHub call failed ([`GitHubError`], which callers branch on) and how GitHub's error
//! bodies are read.

use std::time::Duration;

use serde::Deserialize;

/// Why a GitHub call failed. Callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// 404.
    #[error("not found on GitHub: {0}")]
    NotFound(String),
    /// 401: the JWT or token was refused.
    #[error("GitHub refused the credentials: {0}")]
    Unauthorized(String),
    /// 403 that is not a rate limit.
    #[error("GitHub forbids this: {0}")]
    Forbidden(String),
    /// Still rate-limited after the retries.
    #[error("GitHub rate-limited the call; retry in {retry_after:?}")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// 5xx after the retries, or another unexpected status.
    #[error("GitHub answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// GitHub could not be reached.
    #[error("cannot reach GitHub: {0}")]
    Transport(String),
    /// An answer that is not what GitHub documents.
    #[error("unexpected answer from GitHub: {0}")]
    Decode(String),
    /// The App's configuration is unusable (bad key, bad URL).
    #[error("invalid GitHub App configuration: {0}")]
    Config(String),
}

impl GitHubError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Status { .. } | Self::Transport(_)
        )
    }
}

/// GitHub's error body: a message, and for 422s the validation errors that say what failed
/// (`{"message": "Validation Failed", "errors": [{"message": "A pull request already exists…"}]}`).
#[derive(Deserialize)]
pub(crate) struct Message {
    message: String,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

impl Message {
    /// The message with each validation error's own message (or code) appended.
    pub(crate) fn describe(self) -> String {
        let details: Vec<String> = self
            .errors
            .iter()
            .filter_map(|e| {
                e.get("message")
                    .or_else(|| e.get("code"))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        if details.is_empty() {
            self.message
        } else {
            format!("{} ({})", self.message, details.join("; "))
        }
    }
}

/// GitHub's own message from a [`GitHubError::Status`] message (`"{METHOD} {url}: {message}"`;
/// URLs hold no spaces, so the first `": "` ends the prefix).
pub(crate) fn github_message(what: &str) -> &str {
    what.split_once(": ").map_or(what, |(_, m)| m)
}
