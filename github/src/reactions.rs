//! Reactions: the immediate feedback on a comment or an issue.

use http::Method;

use crate::GitHubError;
use crate::installation::{InstallationClient, seg};

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

impl InstallationClient {
    /// Adds `reaction` to comment `comment_id`.
    pub async fn add_comment_reaction(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/comments/{comment_id}/reactions",
            seg(owner),
            seg(repo)
        );
        let body = serde_json::json!({ "content": reaction.content() });
        self.send(Method::POST, &path, Some(&body)).await.map(drop)
    }

    /// Adds `reaction` to issue or pull request `number`.
    pub async fn add_issue_reaction(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        reaction: Reaction,
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/{number}/reactions",
            seg(owner),
            seg(repo)
        );
        let body = serde_json::json!({ "content": reaction.content() });
        self.send(Method::POST, &path, Some(&body)).await.map(drop)
    }
}
