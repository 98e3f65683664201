//! Comments: issue (conversation) comments and inline review comments, read for commands and
//! written for the run's progress comment and replies.

use http::Method;
use jiff::Timestamp;
use serde::Deserialize;

use crate::GitHubError;
use crate::installation::{Id, InstallationClient, repo_path, seg};
use crate::users::{Actor, WireUser, actor};

/// An issue comment or an inline review comment.
#[derive(Clone, Debug)]
pub struct CommentInfo {
    /// Comment id.
    pub id: u64,
    /// Author (`None` for a deleted account).
    pub user: Option<Actor>,
    /// Markdown body.
    pub body: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last edit (equal to `created_at` when never edited).
    pub updated_at: Timestamp,
    /// For inline review comments: the commit the comment was written on, as GitHub
    /// recorded it (`original_commit_id`); `None` for issue comments.
    pub commit_id: Option<String>,
}

#[derive(Deserialize)]
struct WireComment {
    id: u64,
    #[serde(default)]
    user: Option<WireUser>,
    #[serde(default)]
    body: Option<String>,
    created_at: Timestamp,
    #[serde(default)]
    updated_at: Option<Timestamp>,
    #[serde(default)]
    original_commit_id: Option<String>,
}

impl From<WireComment> for CommentInfo {
    fn from(c: WireComment) -> Self {
        Self {
            id: c.id,
            user: actor(c.user),
            body: c.body.unwrap_or_default(),
            created_at: c.created_at,
            updated_at: c.updated_at.unwrap_or(c.created_at),
            commit_id: c.original_commit_id,
        }
    }
}

impl InstallationClient {
    /// Every comment on issue or pull request `number` (the conversation tab), all pages.
    pub async fn issue_comments(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<CommentInfo>, GitHubError> {
        let path = format!("{}/issues/{number}/comments", repo_path(owner, repo));
        self.get_all_pages(&path, "issue comments", |page: Vec<WireComment>| {
            page.into_iter().map(CommentInfo::from).collect()
        })
        .await
    }

    /// Every inline review comment of pull request `number`
    /// (`GET /repos/{o}/{r}/pulls/{n}/comments`), all pages.
    pub async fn review_comments(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<CommentInfo>, GitHubError> {
        let path = format!("{}/pulls/{number}/comments", repo_path(owner, repo));
        self.get_all_pages(&path, "review comments", |page: Vec<WireComment>| {
            page.into_iter().map(CommentInfo::from).collect()
        })
        .await
    }

    /// Posts a comment on issue or pull request `number`; returns the comment id. Not sent
    /// twice after an answer that leaves open whether it was posted (a 5xx, a timeout).
    pub async fn create_issue_comment(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<u64, GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/{number}/comments",
            seg(owner),
            seg(repo)
        );
        let body = serde_json::json!({ "body": body });
        let answer = self
            .send_once_only(Method::POST, &path, Some(&body))
            .await?;
        Ok(answer.json::<Id>("comment")?.id)
    }

    /// Replaces the body of comment `comment_id`.
    pub async fn update_issue_comment(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/comments/{comment_id}",
            seg(owner),
            seg(repo)
        );
        let body = serde_json::json!({ "body": body });
        self.send(Method::PATCH, &path, Some(&body)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{parse, user};
    use serde_json::json;

    #[test]
    fn comments_parse_issue_and_review_shapes() {
        let body = json!([
            {"id": 1, "node_id": "MDEyOklzc3VlQ29tbWVudDE=",
             "url": "https://api.github.com/repos/octocat/Hello-World/issues/comments/1",
             "body": "Me too", "user": user("octocat", 1, "User"),
             "created_at": "2011-04-14T16:00:49Z", "updated_at": "2011-04-14T16:05:49Z",
             "author_association": "COLLABORATOR"},
            {"id": 10, "pull_request_review_id": 42, "diff_hunk": "@@ -16,33 +16,40 @@",
             "path": "file1.txt", "position": 1, "commit_id": "6dcb09b5",
             "user": null, "body": "Great stuff!",
             "created_at": "2011-04-14T16:00:49Z", "updated_at": "2011-04-14T16:00:49Z"}
        ]);
        let comments: Vec<CommentInfo> = parse::<Vec<WireComment>>(body)
            .into_iter()
            .map(CommentInfo::from)
            .collect();
        assert_eq!(comments[0].body, "Me too");
        assert_eq!(comments[0].user.as_ref().map(|u| u.id), Some(1));
        assert!(comments[0].updated_at > comments[0].created_at, "edited");
        assert!(comments[1].user.is_none());
        assert_eq!(comments[1].updated_at, comments[1].created_at);
    }
}
