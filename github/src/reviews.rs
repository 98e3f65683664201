//! Reviews: every review of a pull request (state, reviewer, the commit it was given on) and
//! review requests.

use http::Method;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::json;

use crate::GitHubError;
use crate::error::github_message;
use crate::installation::{Id, InstallationClient, repo_path};
use crate::users::{Actor, WireUser, actor};

/// A review's state as GitHub reports it over REST.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewState {
    /// `APPROVED`.
    Approved,
    /// `CHANGES_REQUESTED`.
    ChangesRequested,
    /// `COMMENTED`.
    Commented,
    /// `DISMISSED`.
    Dismissed,
    /// `PENDING` (started, not submitted).
    Pending,
    /// Anything else GitHub may add.
    Other,
}

impl ReviewState {
    /// Parses GitHub's review state, in either case (REST sends upper, webhooks lower case).
    pub fn from_github(state: &str) -> Self {
        match state.to_ascii_uppercase().as_str() {
            "APPROVED" => Self::Approved,
            "CHANGES_REQUESTED" => Self::ChangesRequested,
            "COMMENTED" => Self::Commented,
            "DISMISSED" => Self::Dismissed,
            "PENDING" => Self::Pending,
            _ => Self::Other,
        }
    }
}

/// A review of a pull request.
#[derive(Clone, Debug)]
pub struct ReviewInfo {
    /// Review id.
    pub id: u64,
    /// Reviewer (`None` for a deleted account).
    pub user: Option<Actor>,
    /// State.
    pub state: ReviewState,
    /// The head commit the review was given on.
    pub commit_id: Option<String>,
    /// When it was submitted (`None` while pending).
    pub submitted_at: Option<Timestamp>,
    /// The review's text (Markdown; commands in it count like comment commands).
    pub body: String,
}

#[derive(Deserialize)]
struct WireReview {
    id: u64,
    #[serde(default)]
    user: Option<WireUser>,
    state: String,
    #[serde(default)]
    commit_id: Option<String>,
    #[serde(default)]
    submitted_at: Option<Timestamp>,
    #[serde(default)]
    body: Option<String>,
}

impl From<WireReview> for ReviewInfo {
    fn from(r: WireReview) -> Self {
        Self {
            id: r.id,
            user: actor(r.user),
            state: ReviewState::from_github(&r.state),
            commit_id: r.commit_id,
            submitted_at: r.submitted_at,
            body: r.body.unwrap_or_default(),
        }
    }
}

impl InstallationClient {
    /// Every review of pull request `number`, oldest first, all pages.
    pub async fn pull_request_reviews(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<ReviewInfo>, GitHubError> {
        let path = format!("{}/pulls/{number}/reviews", repo_path(owner, repo));
        self.get_all_pages(&path, "pull request reviews", |page: Vec<WireReview>| {
            page.into_iter().map(ReviewInfo::from).collect()
        })
        .await
    }

    /// Submits a review of pull request `number` that only comments (`POST …/pulls/{n}/reviews`,
    /// `event: COMMENT`) on its current head; returns the review's id. Not sent twice after
    /// an answer that leaves open whether it was posted (a 5xx, a timeout).
    pub async fn comment_review(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<u64, GitHubError> {
        let path = format!("{}/pulls/{number}/reviews", repo_path(owner, repo));
        let body = json!({"event": "COMMENT", "body": body});
        let answer = self
            .send_once_only(Method::POST, &path, Some(&body))
            .await?;
        Ok(answer.json::<Id>("review")?.id)
    }

    /// Requests reviews of pull request `number` from `users` (logins) and `teams` (slugs)
    /// (`POST …/pulls/{n}/requested_reviewers`). GitHub's 422 (e.g. the author asked to
    /// review their own pull request, or someone without access) is logged and ignored:
    /// a missing request is a nuisance, not a reason to fail a reconcile.
    pub async fn request_reviewers(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        users: &[String],
        teams: &[String],
    ) -> Result<(), GitHubError> {
        if users.is_empty() && teams.is_empty() {
            return Ok(());
        }
        let path = format!(
            "{}/pulls/{number}/requested_reviewers",
            repo_path(owner, repo)
        );
        let body = json!({"reviewers": users, "team_reviewers": teams});
        match self.send(Method::POST, &path, Some(&body)).await {
            Ok(_) => Ok(()),
            Err(GitHubError::Status {
                status: 422,
                message,
            }) => {
                tracing::info!(
                    owner,
                    repo,
                    number,
                    reason = github_message(&message),
                    "GitHub refused the review request"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{parse, user};
    use serde_json::json;

    #[test]
    fn reviews_parse_including_pending_and_ghosts() {
        let body = json!([
            {"id": 80, "node_id": "MDE3OlB1bGxSZXF1ZXN0UmV2aWV3ODA=",
             "user": user("octocat", 1, "User"),
             "body": "Here is the body for the review.", "state": "APPROVED",
             "html_url": "https://github.com/octocat/Hello-World/pull/12#pullrequestreview-80",
             "submitted_at": "2019-11-17T17:43:43Z",
             "commit_id": "ecdd80bb57125d7ba9641ffaa4d7d2c19d3f3091",
             "author_association": "COLLABORATOR"},
            {"id": 81, "user": null, "body": "", "state": "CHANGES_REQUESTED",
             "submitted_at": "2019-11-18T17:43:43Z", "commit_id": "ecdd80bb"},
            {"id": 82, "user": user("dependabot[bot]", 49699333, "Bot"), "state": "PENDING",
             "commit_id": null},
            {"id": 83, "user": user("mona", 2, "User"), "state": "DISMISSED",
             "submitted_at": "2019-11-19T17:43:43Z"},
            {"id": 84, "user": user("mona", 2, "User"), "state": "commented"},
            {"id": 85, "user": user("mona", 2, "User"), "state": "SOMETHING_NEW"}
        ]);
        let reviews: Vec<ReviewInfo> = parse::<Vec<WireReview>>(body)
            .into_iter()
            .map(ReviewInfo::from)
            .collect();
        let states: Vec<_> = reviews.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [
                ReviewState::Approved,
                ReviewState::ChangesRequested,
                ReviewState::Pending,
                ReviewState::Dismissed,
                ReviewState::Commented,
                ReviewState::Other
            ]
        );
        assert_eq!(
            reviews[0].commit_id.as_deref(),
            Some("ecdd80bb57125d7ba9641ffaa4d7d2c19d3f3091")
        );
        assert!(reviews[0].submitted_at.is_some());
        assert!(reviews[1].user.is_none(), "a deleted reviewer");
        assert!(reviews[2].user.as_ref().is_some_and(|u| u.is_bot));
        assert!(reviews[2].submitted_at.is_none() && reviews[2].commit_id.is_none());
    }

    #[test]
    fn review_states_parse_in_either_case() {
        assert_eq!(ReviewState::from_github("approved"), ReviewState::Approved);
        assert_eq!(
            ReviewState::from_github("CHANGES_REQUESTED"),
            ReviewState::ChangesRequested
        );
    }
}
