//! Commits: a pull request's commits (who authored, committed and when, and their trees) and
//! the tree of any commit, to tell a clean rebase from a changed pull request.

use http::Method;
use jiff::Timestamp;
use serde::Deserialize;

use crate::GitHubError;
use crate::installation::{InstallationClient, repo_path, seg};
use crate::users::{Actor, WireUser, actor};

/// One commit of a pull request.
#[derive(Clone, Debug)]
pub struct PullCommit {
    /// Commit id.
    pub sha: String,
    /// Its tree (equal trees: the same content, e.g. after a clean rebase).
    pub tree_sha: String,
    /// The GitHub account of the git author, when GitHub could match one.
    pub author: Option<Actor>,
    /// The GitHub account of the git committer, when GitHub could match one.
    pub committer: Option<Actor>,
    /// The git committer date (the author date when there is none).
    pub committed_at: Option<Timestamp>,
}

#[derive(Deserialize)]
struct WireSha {
    sha: String,
}

#[derive(Deserialize)]
struct WireGitIdentity {
    #[serde(default)]
    date: Option<Timestamp>,
}

#[derive(Deserialize)]
struct WireGitCommit {
    tree: WireSha,
    #[serde(default)]
    author: Option<WireGitIdentity>,
    #[serde(default)]
    committer: Option<WireGitIdentity>,
}

#[derive(Deserialize)]
pub(crate) struct WireCommit {
    sha: String,
    commit: WireGitCommit,
    #[serde(default)]
    author: Option<WireUser>,
    #[serde(default)]
    committer: Option<WireUser>,
}

impl From<WireCommit> for PullCommit {
    fn from(c: WireCommit) -> Self {
        let date = |i: Option<WireGitIdentity>| i.and_then(|i| i.date);
        let authored = date(c.commit.author);
        Self {
            sha: c.sha,
            tree_sha: c.commit.tree.sha,
            author: actor(c.author),
            committer: actor(c.committer),
            committed_at: date(c.commit.committer).or(authored),
        }
    }
}

/// `GET /repos/{o}/{r}/git/commits/{sha}`.
#[derive(Deserialize)]
struct WireGitCommitObject {
    tree: WireSha,
}

impl InstallationClient {
    /// Every commit of pull request `number`, oldest first, all pages (GitHub lists at most
    /// 250).
    pub async fn pull_request_commits(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<PullCommit>, GitHubError> {
        let path = format!("{}/pulls/{number}/commits", repo_path(owner, repo));
        self.get_all_pages(&path, "pull request commits", |page: Vec<WireCommit>| {
            page.into_iter().map(PullCommit::from).collect()
        })
        .await
    }

    /// The tree of commit `sha` (`GET /repos/{o}/{r}/git/commits/{sha}`); `None` when GitHub
    /// does not know the commit (404, or 422 for a malformed id).
    pub async fn commit_tree(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
    ) -> Result<Option<String>, GitHubError> {
        let path = format!("{}/git/commits/{}", repo_path(owner, repo), seg(sha));
        match self.send(Method::GET, &path, None).await {
            Ok(answer) => Ok(Some(
                answer.json::<WireGitCommitObject>("git commit")?.tree.sha,
            )),
            Err(GitHubError::NotFound(_) | GitHubError::Status { status: 422, .. }) => Ok(None),
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
    fn commits_parse_with_unmatched_identities() {
        let body = json!([
            {"sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e", "node_id": "MDY6Q29tbWl0",
             "commit": {
                "author": {"name": "Monalisa Octocat", "email": "support@github.com",
                           "date": "2011-04-14T16:00:49Z"},
                "committer": {"name": "Monalisa Octocat", "email": "support@github.com",
                              "date": "2011-04-15T16:00:49Z"},
                "message": "Fix all the bugs",
                "tree": {"url": "https://api.github.com/repos/octocat/Hello-World/tree/6dcb09b",
                         "sha": "7638417db6d59f3c431d3e1f261cc637155684cd"},
                "comment_count": 0},
             "author": user("octocat", 1, "User"),
             "committer": user("web-flow", 19864447, "User"),
             "parents": [{"sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"}]},
            {"sha": "1111111111111111111111111111111111111111",
             "commit": {"author": {"name": "bot", "date": "2011-04-16T16:00:49Z"},
                        "committer": null,
                        "tree": {"sha": "2222222222222222222222222222222222222222"}},
             "author": null, "committer": {}}
        ]);
        let commits: Vec<PullCommit> = parse::<Vec<WireCommit>>(body)
            .into_iter()
            .map(PullCommit::from)
            .collect();
        assert_eq!(
            commits[0].tree_sha,
            "7638417db6d59f3c431d3e1f261cc637155684cd"
        );
        assert_eq!(commits[0].author.as_ref().map(|a| a.id), Some(1));
        assert_eq!(
            commits[0].committer.as_ref().map(|a| a.login.as_str()),
            Some("web-flow")
        );
        assert_eq!(
            commits[0].committed_at,
            Some("2011-04-15T16:00:49Z".parse().expect("ts"))
        );
        assert!(commits[1].author.is_none() && commits[1].committer.is_none());
        assert_eq!(
            commits[1].committed_at,
            Some("2011-04-16T16:00:49Z".parse().expect("ts")),
            "falls back to the author date"
        );
    }

    #[test]
    fn git_commit_object_gives_its_tree() {
        let body = json!({
            "sha": "7638417db6d59f3c431d3e1f261cc637155684cd", "node_id": "MDY6Q29tbWl0",
            "author": {"date": "2014-11-07T22:01:45Z", "name": "Monalisa Octocat",
                       "email": "octocat@github.com"},
            "tree": {"url": "https://api.github.com/repos/octocat/Hello-World/git/trees/691272",
                     "sha": "691272480426f78a0138979dd3ce63b77f706feb"},
            "message": "added readme, because im a good github citizen",
            "parents": [], "verification": {"verified": false, "reason": "unsigned"}
        });
        assert_eq!(
            parse::<WireGitCommitObject>(body).tree.sha,
            "691272480426f78a0138979dd3ce63b77f706feb"
        );
    }
}
