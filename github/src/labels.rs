//! Labels on issues and pull requests.

use http::Method;
use serde_json::json;

use crate::GitHubError;
use crate::installation::{InstallationClient, seg};

impl InstallationClient {
    /// Adds `labels` to issue or pull request `number` (GitHub creates unknown labels).
    pub async fn add_labels(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        labels: &[String],
    ) -> Result<(), GitHubError> {
        if labels.is_empty() {
            return Ok(());
        }
        let path = format!("/repos/{}/{}/issues/{number}/labels", seg(owner), seg(repo));
        let body = json!({ "labels": labels });
        self.send(Method::POST, &path, Some(&body)).await.map(drop)
    }
}
