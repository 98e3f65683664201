//! Repositories: what the App reads about one besides its content (its numeric id, which
//! webhook payloads carry and the bot keys per-repository state by).

use http::Method;

use crate::GitHubError;
use crate::installation::{Id, InstallationClient, repo_path};

impl InstallationClient {
    /// The numeric id of `owner/repo` (`GET /repos/{owner}/{repo}`, a conditional request
    /// after the first).
    pub async fn repository_id(&self, owner: &str, repo: &str) -> Result<u64, GitHubError> {
        let answer = self
            .send(Method::GET, &repo_path(owner, repo), None)
            .await?;
        Ok(answer.json::<Id>("repository")?.id)
    }
}
