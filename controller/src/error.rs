//! The reconcilers' error type. Each variant has a bounded metric label and decides the
//! backoff: transient API trouble retries soon; problems that need a change to the spec or
//! the cluster are written to status conditions instead and are not errors at all.

use std::time::Duration;

/// Why a reconciliation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// GitHub could not mint a token right now.
    #[error("cannot obtain GitHub credentials: {0}")]
    Token(#[source] countersign_github::tokens::MintError),
    /// The Project may not act for its repository (or who owns it is not known yet).
    #[error("the Project may not act for its repository: {0}")]
    NotOwner(String),
    /// A GitHub call for a run (its pull request, its progress comment) failed.
    #[error("GitHub call failed: {0}")]
    GitHub(#[from] countersign_github::GitHubError),
    /// An object could not be built or serialised (a bug, not an input problem).
    #[error("cannot serialise {what}: {source}")]
    Serialize {
        /// What was being serialised.
        what: &'static str,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// A bounded label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => "conflict",
            Self::Kube(_) => "kube_api",
            Self::Token(_) => "github_token",
            Self::NotOwner(_) => "not_owner",
            Self::GitHub(_) => "github_api",
            Self::Serialize { .. } => "serialize",
        }
    }

    /// How long to wait before trying again.
    pub fn backoff(&self) -> Duration {
        match self {
            Self::Kube(kube::Error::Api(status)) if status.code == 409 => {
                Duration::from_millis(200)
            }
            Self::Kube(_) => Duration::from_secs(1),
            Self::Token(countersign_github::tokens::MintError::RateLimited {
                retry_after_secs,
            }) => Duration::from_secs((*retry_after_secs).clamp(1, 3600)),
            Self::Token(_) => Duration::from_secs(15),
            Self::NotOwner(_) => Duration::from_secs(30),
            Self::GitHub(countersign_github::GitHubError::RateLimited { retry_after }) => {
                (*retry_after).clamp(Duration::from_secs(1), Duration::from_secs(3600))
            }
            Self::GitHub(e) if e.is_transient() => Duration::from_secs(5),
            Self::GitHub(_) => Duration::from_secs(60),
            Self::Serialize { .. } => Duration::from_secs(60),
        }
    }
}

/// Result of a reconciler step.
pub type Result<T, E = Error> = std::result::Result<T, E>;
