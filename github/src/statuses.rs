//! Commit statuses (the older statuses API): the latest state per context on a commit, which
//! auto-merge waits for like check runs.

use serde::Deserialize;

use crate::GitHubError;
use crate::installation::{InstallationClient, repo_path, seg};

/// One commit status (the older statuses API, per context).
#[derive(Clone, Debug)]
pub struct CommitStatusInfo {
    /// Context, e.g. `ci/jenkins`.
    pub context: String,
    /// `error`, `failure`, `pending` or `success`.
    pub state: String,
}

#[derive(Deserialize)]
struct WireStatus {
    context: String,
    state: String,
}

/// `GET /repos/{o}/{r}/commits/{ref}/status`.
#[derive(Deserialize)]
struct WireCombinedStatus {
    #[serde(default)]
    statuses: Vec<WireStatus>,
}

impl InstallationClient {
    /// The commit statuses on `sha`, latest per context (`GET …/commits/{ref}/status`,
    /// `statuses`), all pages.
    pub async fn commit_statuses(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<CommitStatusInfo>, GitHubError> {
        let path = format!("{}/commits/{}/status", repo_path(owner, repo), seg(sha));
        self.get_all_pages(&path, "commit status", |page: WireCombinedStatus| {
            page.statuses
                .into_iter()
                .map(|s| CommitStatusInfo {
                    context: s.context,
                    state: s.state,
                })
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::parse;
    use serde_json::json;

    #[test]
    fn combined_statuses_parse() {
        let combined = json!({
            "state": "success", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "total_count": 2,
            "statuses": [
                {"url": "https://api.github.com/repos/octocat/Hello-World/statuses/6dcb09b",
                 "id": 1, "state": "success", "description": "Build has completed successfully",
                 "target_url": "https://ci.example.com/1000/output",
                 "context": "continuous-integration/jenkins",
                 "created_at": "2012-07-20T01:19:13Z"},
                {"id": 2, "state": "pending", "context": "security/brakeman"}
            ]
        });
        let statuses = parse::<WireCombinedStatus>(combined).statuses;
        assert_eq!(statuses[0].context, "continuous-integration/jenkins");
        assert_eq!(statuses[1].state, "pending");
    }
}
