//! The REST calls the controller makes for agent runs: the App's bot account (the identity
//! agent commits are made as), opening the pull request for a pushed branch (idempotently),
//! labelling it, and finding the run's progress comment again.

use http::Method;
use serde::Deserialize;
use serde_json::json;

use super::{GitHubError, InstallationClient, seg};

/// The App's bot account, e.g. `countersign[bot]` with its user id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotAccount {
    /// Login, `<slug>[bot]`.
    pub login: String,
    /// User id, when GitHub has one for it.
    pub id: Option<u64>,
}

impl BotAccount {
    /// The git email GitHub attributes to this account:
    /// `<id>+<login>@users.noreply.github.com` (or without the id when unknown).
    pub fn noreply_email(&self) -> String {
        match self.id {
            Some(id) => format!("{id}+{}@users.noreply.github.com", self.login),
            None => format!("{}@users.noreply.github.com", self.login),
        }
    }
}

/// A pull request to open.
#[derive(Clone, Debug)]
pub struct NewPullRequest<'a> {
    /// Title.
    pub title: &'a str,
    /// Branch with the change (in the same repository).
    pub head: &'a str,
    /// Branch to merge into.
    pub base: &'a str,
    /// Markdown body.
    pub body: &'a str,
    /// Open it as a draft.
    pub draft: bool,
}

/// A pull request as opened or found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedPullRequest {
    /// Number.
    pub number: u64,
    /// Web address.
    pub html_url: Option<String>,
    /// Whether it is still open.
    pub open: bool,
}

#[derive(Deserialize)]
struct WirePull {
    number: u64,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

impl From<WirePull> for OpenedPullRequest {
    fn from(w: WirePull) -> Self {
        Self {
            number: w.number,
            html_url: w.html_url,
            open: w.state.as_deref() != Some("closed"),
        }
    }
}

impl InstallationClient {
    /// The App's bot account (`GET /users/<slug>[bot]`, asked as the installation: an App
    /// JWT may only call `/app` endpoints). A missing user id is not an error: commits then
    /// carry an email GitHub may not link to the account.
    pub async fn bot_account(&self) -> Result<BotAccount, GitHubError> {
        #[derive(Deserialize)]
        struct User {
            id: u64,
        }
        let login = format!("{}[bot]", self.app.slug().await?);
        let path = format!("/users/{}", seg(&login));
        let id = match self.send(Method::GET, &path, None).await {
            Ok(answer) => Some(answer.json::<User>("bot user")?.id),
            Err(GitHubError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(BotAccount { login, id })
    }

    /// The pull request (any state) whose head is `branch` of `owner/repo` itself, newest
    /// first (`GET …/pulls?head=owner:branch&state=all`).
    pub async fn pull_request_for_branch(
        &self,
        owner: &str,
        repo: &str,
        branch: &str,
    ) -> Result<Option<OpenedPullRequest>, GitHubError> {
        let path = format!(
            "/repos/{}/{}/pulls?state=all&head={}",
            seg(owner),
            seg(repo),
            seg(&format!("{owner}:{branch}"))
        );
        let answer = self.send(Method::GET, &path, None).await?;
        let mut pulls: Vec<WirePull> = answer.json("pull requests")?;
        pulls.sort_by_key(|p| std::cmp::Reverse(p.number));
        Ok(pulls.into_iter().next().map(OpenedPullRequest::from))
    }

    /// Opens a pull request, or finds the one already open for the same head (GitHub's 422
    /// "A pull request already exists"), so a repeated call after a lost status write opens
    /// nothing new.
    pub async fn open_pull_request(
        &self,
        owner: &str,
        repo: &str,
        pull: &NewPullRequest<'_>,
    ) -> Result<OpenedPullRequest, GitHubError> {
        let path = format!("/repos/{}/{}/pulls", seg(owner), seg(repo));
        let body = json!({
            "title": pull.title,
            "head": pull.head,
            "base": pull.base,
            "body": pull.body,
            "draft": pull.draft,
            "maintainer_can_modify": false,
        });
        match self.send(Method::POST, &path, Some(&body)).await {
            Ok(answer) => Ok(answer.json::<WirePull>("pull request")?.into()),
            Err(GitHubError::Status {
                status: 422,
                message,
            }) if message.contains("already exists") => self
                .pull_request_for_branch(owner, repo, pull.head)
                .await?
                .ok_or(GitHubError::Status {
                    status: 422,
                    message,
                }),
            Err(e) => Err(e),
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_emails_are_the_noreply_form_github_links() {
        let bot = BotAccount {
            login: "countersign[bot]".into(),
            id: Some(41),
        };
        assert_eq!(
            bot.noreply_email(),
            "41+countersign[bot]@users.noreply.github.com"
        );
        let unknown = BotAccount { id: None, ..bot };
        assert_eq!(
            unknown.noreply_email(),
            "countersign[bot]@users.noreply.github.com"
        );
    }

    #[test]
    fn pull_states_parse() {
        let open: OpenedPullRequest = serde_json::from_value::<WirePull>(json!({
            "number": 7, "html_url": "https://github.com/a/b/pull/7", "state": "open"
        }))
        .expect("documented shape")
        .into();
        assert!(open.open);
        let closed: OpenedPullRequest =
            serde_json::from_value::<WirePull>(json!({"number": 8, "state": "closed"}))
                .expect("documented shape")
                .into();
        assert!(!closed.open && closed.html_url.is_none());
    }
}
