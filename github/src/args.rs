//! The command-line and environment settings of the GitHub App, shared by every binary that
//! acts as the App (`countersign bot` and `countersign controller` flatten them).

use std::path::PathBuf;

use anyhow::Context as _;
use countersign_crds::GoDuration;
use secrecy::SecretString;

use crate::{AppConfig, GitHubApp};

/// GitHub's public API root.
pub const DEFAULT_GITHUB_API: &str = "https://api.github.com/";

/// How to act as the GitHub App.
#[derive(clap::Args, Debug, Clone)]
pub struct GitHubAppArgs {
    /// The GitHub App's numeric id (App settings → "App ID").
    #[arg(long, env = "GITHUB_APP_ID", value_name = "ID")]
    pub github_app_id: Option<u64>,

    /// File holding the App's private key (PEM, as downloaded from the App settings).
    #[arg(long, env = "GITHUB_APP_PRIVATE_KEY_FILE", value_name = "FILE")]
    pub github_app_private_key_file: Option<PathBuf>,

    /// GitHub's REST API root: `https://api.github.com/`, or `https://HOST/api/v3/` for
    /// GitHub Enterprise Server.
    #[arg(long, env = "GITHUB_API_URL", default_value = DEFAULT_GITHUB_API, value_name = "URL")]
    pub github_api_url: String,

    /// Timeout of one GitHub request.
    #[arg(long, env = "GITHUB_REQUEST_TIMEOUT", default_value = "15s")]
    pub github_request_timeout: GoDuration,

    /// Retries of one GitHub call after 5xx answers, dropped connections and rate limits.
    #[arg(long, env = "GITHUB_MAX_RETRIES", default_value_t = 4)]
    pub github_max_retries: u32,

    /// Longest single wait for a rate limit to pass; a longer `Retry-After` fails the call
    /// (and the delivery is retried later) instead of blocking a worker.
    #[arg(long, env = "GITHUB_MAX_RETRY_WAIT", default_value = "90s")]
    pub github_max_retry_wait: GoDuration,
}

impl GitHubAppArgs {
    /// The App client, or `None` when no App id is configured. A configured id without a
    /// readable key is an error, not a silent fallback.
    pub fn app(&self) -> anyhow::Result<Option<GitHubApp>> {
        let Some(app_id) = self.github_app_id else {
            return Ok(None);
        };
        let path = self.github_app_private_key_file.as_ref().context(
            "--github-app-id is set but --github-app-private-key-file (GITHUB_APP_PRIVATE_KEY_FILE) is not",
        )?;
        let pem = std::fs::read_to_string(path).with_context(|| {
            format!("Cannot read the GitHub App private key {}", path.display())
        })?;
        let app = GitHubApp::new(AppConfig {
            app_id,
            private_key_pem: SecretString::from(pem),
            base_url: self.github_api_url.clone(),
            request_timeout: self.github_request_timeout.0,
            max_retries: self.github_max_retries,
            max_retry_wait: self.github_max_retry_wait.0,
        })?;
        Ok(Some(app))
    }
}
