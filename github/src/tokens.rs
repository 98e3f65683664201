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
    /// The App installation to use, when the Project names one.
    pub installation_id: Option<u64>,
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

/// A fixed token (for example a fine-grained personal access token limited to the managed
/// repositories) for clusters without a GitHub App. It is handed to every run as is, so
/// scope it narrowly; GitHub App installation tokens are the recommended setup.
#[derive(Clone, Debug)]
pub struct StaticToken {
    token: SecretString,
    /// Reported as the installation id in Project status; `0` means "not an App".
    installation_id: u64,
}

impl StaticToken {
    /// Uses `token` for every repository.
    pub fn new(token: SecretString) -> Self {
        Self {
            token,
            installation_id: 0,
        }
    }
}

#[async_trait]
impl TokenMinter for StaticToken {
    async fn repo_token(&self, _: &RepoRef) -> Result<RepoToken, MintError> {
        Ok(RepoToken {
            token: self.token.clone(),
            // A static token does not expire on its own; report a horizon an hour away so
            // callers that refresh before expiry keep working.
            expires_at: Timestamp::now()
                .saturating_add(jiff::SignedDuration::from_hours(1))
                .unwrap_or(Timestamp::MAX),
            installation_id: self.installation_id,
        })
    }

    async fn installation_for(&self, _: &RepoRef) -> Result<u64, MintError> {
        Ok(self.installation_id)
    }
}
