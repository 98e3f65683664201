//! Countersign's GitHub client: the App's identity (JWT), installation tokens (cached until
//! shortly before they expire), repository-scoped tokens for agent runs, and the REST calls
//! the bot and controller make, with rate-limit-aware retries.
//!
//! CONTRACT STUB (skeleton): the App-client helper replaces these bodies; the signatures are
//! the contract the handlers are written against.

pub mod jwt;
pub mod parse;

use std::time::Duration;

use secrecy::SecretString;

/// How to reach GitHub as the App.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// The App's numeric id.
    pub app_id: u64,
    /// The App's private key (PEM, PKCS#1 or PKCS#8).
    pub private_key_pem: SecretString,
    /// API root, `https://api.github.com/` or `https://HOST/api/v3/` for GitHub Enterprise.
    pub base_url: String,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Retries of one call after 5xx answers and rate limits.
    pub max_retries: u32,
    /// Longest single wait a retry may take (a longer `Retry-After` fails the call).
    pub max_retry_wait: Duration,
}

/// A repository permission level as GitHub reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// No access.
    None,
    /// Read.
    Read,
    /// Triage.
    Triage,
    /// Write.
    Write,
    /// Maintain.
    Maintain,
    /// Admin.
    Admin,
}

/// Reactions Countersign adds as immediate feedback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reaction {
    /// 👍 `+1`.
    PlusOne,
    /// 👎 `-1`.
    MinusOne,
    /// 👀 `eyes`.
    Eyes,
    /// 🚀 `rocket`.
    Rocket,
    /// 😕 `confused`.
    Confused,
}

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

/// The GitHub App. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GitHubApp {}

impl GitHubApp {
    /// Builds the App client; fails on an unusable key or URL.
    pub fn new(config: AppConfig) -> Result<Self, GitHubError> {
        let _ = config;
        todo!("App client helper")
    }

    /// The App's id.
    pub fn app_id(&self) -> u64 {
        todo!("App client helper")
    }

    /// The App's slug (`GET /app`, cached); its bot account is `<slug>[bot]`.
    pub async fn slug(&self) -> Result<String, GitHubError> {
        todo!("App client helper")
    }

    /// The installation serving `owner/repo` (`GET /repos/{owner}/{repo}/installation`).
    pub async fn installation_for_repo(&self, owner: &str, repo: &str) -> Result<u64, GitHubError> {
        let _ = (owner, repo);
        todo!("App client helper")
    }

    /// A client acting as installation `id` (token minted on first use, cached, refreshed
    /// shortly before expiry).
    pub fn installation(&self, id: u64) -> InstallationClient {
        let _ = id;
        todo!("App client helper")
    }
}

/// Calls made as one installation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct InstallationClient {}

impl InstallationClient {
    /// The installation id.
    pub fn id(&self) -> u64 {
        todo!("App client helper")
    }

    /// `login`'s permission on `owner/repo`
    /// (`GET /repos/{owner}/{repo}/collaborators/{login}/permission`; 404 → `None`).
    pub async fn repo_permission(
        &self,
        owner: &str,
        repo: &str,
        login: &str,
    ) -> Result<Permission, GitHubError> {
        let _ = (owner, repo, login);
        todo!("App client helper")
    }

    /// User ids of every member of team `org/slug` (`GET /orgs/{org}/teams/{slug}/members`,
    /// all pages).
    pub async fn team_member_ids(&self, org: &str, slug: &str) -> Result<Vec<u64>, GitHubError> {
        let _ = (org, slug);
        todo!("App client helper")
    }

    /// Posts a comment on issue or pull request `number`; returns the comment id.
    pub async fn create_issue_comment(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<u64, GitHubError> {
        let _ = (owner, repo, number, body);
        todo!("App client helper")
    }

    /// Replaces the body of comment `comment_id`.
    pub async fn update_issue_comment(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let _ = (owner, repo, comment_id, body);
        todo!("App client helper")
    }

    /// Adds `reaction` to comment `comment_id`.
    pub async fn add_comment_reaction(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<(), GitHubError> {
        let _ = (owner, repo, comment_id, reaction);
        todo!("App client helper")
    }

    /// Adds `reaction` to issue or pull request `number`.
    pub async fn add_issue_reaction(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        reaction: Reaction,
    ) -> Result<(), GitHubError> {
        let _ = (owner, repo, number, reaction);
        todo!("App client helper")
    }
}
