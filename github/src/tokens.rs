//! Short-lived, repository-scoped GitHub credentials for agent runs.
//!
//! The controller asks a [`TokenMinter`] for a token just before it creates an agent pod and
//! puts it into that attempt's own Secret. The GitHub App implementation (installation tokens
//! narrowed to one repository with `contents: write`) is [`crate::GitHubApp`]; [`Unconfigured`] is
//! what a controller without GitHub credentials uses, so local clusters work and runs that
//! need a token fail with a clear reason instead of crashing.

use async_trait::async_trait;
use jiff::Timestamp;
use secrecy::SecretString;

/// A repository on GitHub.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RepoRef {
    /// Owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub name: String,
    /// The installation the Project's spec names, if any. Never used to act: the
    /// installation is always the one GitHub reports for the repository, and a different
    /// number here is an error ([`MintError::InstallationMismatch`]).
    pub expected_installation: Option<u64>,
}

/// A token that can clone and push to exactly one repository.
#[derive(Clone, Debug)]
pub struct RepoToken {
    /// The token, used as the password for `x-access-token` over HTTPS.
    pub token: SecretString,
    /// When GitHub stops accepting it.
    pub expires_at: Timestamp,
    /// The installation it was minted from.
    pub installation_id: u64,
}

/// Why no token could be minted. Callers branch on the variant: `NotConfigured` and
/// `InstallationNotFound` need a human, the others are worth retrying.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// This controller runs without GitHub App credentials.
    #[error("no GitHub App is configured for this controller")]
    NotConfigured,
    /// The App is not installed on the repository (or the installation id is wrong).
    #[error("the GitHub App is not installed on {owner}/{name}")]
    InstallationNotFound {
        /// Repository owner.
        owner: String,
        /// Repository name.
        name: String,
    },
    /// The Project names an installation, but GitHub reports another one for the
    /// repository.
    #[error(
        "the Project names GitHub App installation {expected}, but GitHub reports installation \
         {actual} for {owner}/{name}"
    )]
    InstallationMismatch {
        /// Repository owner.
        owner: String,
        /// Repository name.
        name: String,
        /// The installation the spec names.
        expected: u64,
        /// The installation GitHub reports.
        actual: u64,
    },
    /// GitHub rate-limited the request; try again after the given number of seconds.
    #[error("GitHub rate-limited the token request; retry in {retry_after_secs}s")]
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// GitHub could not be reached or answered with an error.
    #[error("GitHub is unavailable: {0}")]
    Unavailable(String),
}

impl MintError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Unavailable(_))
    }

    /// The `Ready` condition reason for a Project or run stopped by this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotConfigured => "NoCredentials",
            Self::InstallationNotFound { .. } => "InstallationNotFound",
            Self::InstallationMismatch { .. } => "InstallationMismatch",
            Self::RateLimited { .. } | Self::Unavailable(_) => "GitHubUnavailable",
        }
    }
}

/// Mints short-lived repository tokens and checks installations.
#[async_trait]
pub trait TokenMinter: Send + Sync {
    /// A token scoped to `repo` only that can push branches (`contents: write`), valid for
    /// at least the next few minutes.
    async fn repo_token(&self, repo: &RepoRef) -> Result<RepoToken, MintError>;

    /// A token scoped to `repo` only that can clone it and nothing else (`contents: read`).
    /// Minters that cannot narrow further hand out their [`TokenMinter::repo_token`].
    async fn read_token(&self, repo: &RepoRef) -> Result<RepoToken, MintError> {
        self.repo_token(repo).await
    }

    /// The installation id serving `repo`, to show in the Project's status.
    async fn installation_for(&self, repo: &RepoRef) -> Result<u64, MintError>;

    /// Whether GitHub credentials are configured at all.
    fn is_configured(&self) -> bool {
        true
    }

    /// Revokes `token`, a token this minter handed out (`DELETE /installation/token`,
    /// authenticated with the token itself). A token GitHub no longer accepts (revoked
    /// before, or expired) counts as revoked. Minters whose tokens are not theirs to revoke
    /// (a static token) do nothing.
    async fn revoke(&self, token: &SecretString) -> Result<Revoked, MintError> {
        let _ = token;
        Ok(Revoked::NotApplicable)
    }
}

/// What revoking a token did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoked {
    /// GitHub revoked it now.
    Now,
    /// GitHub did not accept it any more (revoked before, or expired): nothing left to do.
    Already,
    /// The minter's tokens are not revocable (a static token, no App).
    NotApplicable,
}

/// The minter of a controller started without GitHub App credentials.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unconfigured;

#[async_trait]
impl TokenMinter for Unconfigured {
    async fn repo_token(&self, _: &RepoRef) -> Result<RepoToken, MintError> {
        Err(MintError::NotConfigured)
    }

    async fn installation_for(&self, _: &RepoRef) -> Result<u64, MintError> {
        Err(MintError::NotConfigured)
    }

    fn is_configured(&self) -> bool {
        false
    }
}
