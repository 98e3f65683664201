//! Pull requests: reading one and its changed files, listing the open ones, finding or opening the pull request for
//! an agent's branch (idempotently), and merging.
//!
//! GitHub's JSON is parsed into private wire structs holding only the fields used, tolerant of
//! missing optional fields; a `null` (deleted, "ghost") account becomes `None`.

use http::Method;
use serde::Deserialize;
use serde_json::json;

use crate::GitHubError;
use crate::error::github_message;
use crate::installation::{InstallationClient, Listing, repo_path, seg};
use crate::users::{Actor, GHOST_ID, WireUser, actor};

/// Whether a pull request is open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullState {
    /// Open (draft or ready).
    Open,
    /// Closed, merged or not.
    Closed,
}

/// A pull request (`GET /repos/{o}/{r}/pulls/{n}`).
#[derive(Clone, Debug)]
pub struct PullInfo {
    /// Number.
    pub number: u64,
    /// Title.
    pub title: String,
    /// Open or closed.
    pub state: PullState,
    /// Whether it was merged.
    pub merged: bool,
    /// Whether it is a draft.
    pub draft: bool,
    /// Head commit.
    pub head_sha: String,
    /// Head branch name.
    pub head_ref: String,
    /// `owner/name` of the head repository (differs for forks; `None` when the fork is gone).
    pub head_repo: Option<String>,
    /// Base branch name.
    pub base_ref: String,
    /// The base branch's commit when the pull request was last updated.
    pub base_sha: String,
    /// How many files the pull request changes, as GitHub counts them (its file listing
    /// stops at 3000).
    pub changed_files: Option<u64>,
    /// How many commits the pull request has (its commit listing stops at 250).
    pub commits: Option<u64>,
    /// Who opened it (GitHub's `ghost` account, id 10137, when the account was deleted).
    pub author: Actor,
    /// Label names.
    pub labels: Vec<String>,
}

/// One changed file of a pull request.
#[derive(Clone, Debug)]
pub struct PullFile {
    /// Path after the change.
    pub path: String,
    /// Path before a rename.
    pub previous_path: Option<String>,
    /// Lines added.
    pub additions: u32,
    /// Lines deleted.
    pub deletions: u32,
    /// `added`, `removed`, `modified`, `renamed`, `copied`, `changed` or `unchanged`.
    pub status: String,
    /// The blob SHA GitHub lists for the file (after the change; the removed blob for a
    /// deletion).
    pub sha: Option<String>,
    /// The file's unified diff (hunks only); absent for binary and very large files.
    pub patch: Option<String>,
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

/// How to merge a pull request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeMethod {
    /// A merge commit.
    Merge,
    /// One squashed commit.
    Squash,
    /// Rebased commits.
    Rebase,
}

impl MergeMethod {
    fn as_str(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Squash => "squash",
            Self::Rebase => "rebase",
        }
    }
}

/// What a merge attempt did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged; `sha` is the resulting commit on the base branch.
    Merged {
        /// The merge (or squash/rebase) commit.
        sha: String,
    },
    /// GitHub refused (405 not mergeable, 409 head moved, 422 invalid); its message.
    NotMergeable(String),
}

#[derive(Deserialize)]
struct WireLabel {
    name: String,
}

#[derive(Deserialize)]
struct WireRepo {
    full_name: String,
}

#[derive(Deserialize)]
struct WireBranch {
    sha: String,
    #[serde(rename = "ref")]
    branch: String,
    #[serde(default)]
    repo: Option<WireRepo>,
}

#[derive(Deserialize)]
struct WirePull {
    number: u64,
    title: String,
    state: String,
    #[serde(default)]
    merged: Option<bool>,
    #[serde(default)]
    merged_at: Option<String>,
    #[serde(default)]
    draft: Option<bool>,
    head: WireBranch,
    base: WireBranch,
    #[serde(default)]
    user: Option<WireUser>,
    #[serde(default)]
    labels: Vec<WireLabel>,
    #[serde(default)]
    changed_files: Option<u64>,
    #[serde(default)]
    commits: Option<u64>,
}

fn pull_info(wire: WirePull) -> Result<PullInfo, GitHubError> {
    let state = match wire.state.as_str() {
        "open" => PullState::Open,
        "closed" => PullState::Closed,
        other => {
            return Err(GitHubError::Decode(format!(
                "pull request #{}: state {other:?}",
                wire.number
            )));
        }
    };
    Ok(PullInfo {
        number: wire.number,
        title: wire.title,
        state,
        merged: wire.merged.unwrap_or(false) || wire.merged_at.is_some(),
        draft: wire.draft.unwrap_or(false),
        head_sha: wire.head.sha,
        head_ref: wire.head.branch,
        head_repo: wire.head.repo.map(|r| r.full_name),
        base_ref: wire.base.branch,
        base_sha: wire.base.sha,
        changed_files: wire.changed_files,
        commits: wire.commits,
        author: actor(wire.user).unwrap_or_else(|| Actor {
            id: GHOST_ID,
            login: "ghost".to_owned(),
            is_bot: false,
        }),
        labels: wire.labels.into_iter().map(|l| l.name).collect(),
    })
}

#[derive(Deserialize)]
struct WireOpenedPull {
    number: u64,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    state: Option<String>,
}

impl From<WireOpenedPull> for OpenedPullRequest {
    fn from(w: WireOpenedPull) -> Self {
        Self {
            number: w.number,
            html_url: w.html_url,
            open: w.state.as_deref() != Some("closed"),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct WireFile {
    filename: String,
    #[serde(default)]
    previous_filename: Option<String>,
    #[serde(default)]
    additions: u32,
    #[serde(default)]
    deletions: u32,
    status: String,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    patch: Option<String>,
}

impl From<WireFile> for PullFile {
    fn from(f: WireFile) -> Self {
        Self {
            path: f.filename,
            previous_path: f.previous_filename,
            additions: f.additions,
            deletions: f.deletions,
            status: f.status,
            sha: f.sha,
            patch: f.patch,
        }
    }
}

/// Files as GitHub lists them (pull request files and the compare API share the shape).
pub(crate) fn files_of(wire: Vec<WireFile>) -> Vec<PullFile> {
    wire.into_iter().map(PullFile::from).collect()
}

#[derive(Deserialize)]
struct WireMerge {
    #[serde(default)]
    merged: bool,
    #[serde(default)]
    sha: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

fn merge_outcome(wire: WireMerge) -> MergeOutcome {
    match (wire.merged, wire.sha) {
        (true, Some(sha)) => MergeOutcome::Merged { sha },
        _ => MergeOutcome::NotMergeable(
            wire.message
                .unwrap_or_else(|| "GitHub did not merge".to_owned()),
        ),
    }
}

impl InstallationClient {
    /// Pull request `number` (`GET /repos/{o}/{r}/pulls/{n}`).
    pub async fn pull_request(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<PullInfo, GitHubError> {
        let path = format!("{}/pulls/{number}", repo_path(owner, repo));
        let answer = self.send(Method::GET, &path, None).await?;
        pull_info(answer.json("pull request")?)
    }

    /// Every open pull request of `owner/repo` (`GET …/pulls?state=open`), all pages, newest
    /// first, read with conditional requests: an unchanged listing costs a `304` per page.
    pub async fn open_pull_requests(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<Listing<PullInfo>, GitHubError> {
        let path = format!("{}/pulls?state=open", repo_path(owner, repo));
        let listing = self
            .list_all_pages(&path, "pull requests", |page: Vec<WirePull>| page)
            .await?;
        Ok(Listing {
            items: listing
                .items
                .into_iter()
                .map(pull_info)
                .collect::<Result<_, _>>()?,
            not_modified: listing.not_modified,
        })
    }

    /// Every changed file of pull request `number` GitHub lists, all pages (at most 3000;
    /// compare with [`PullInfo::changed_files`] to know whether that is all of them).
    pub async fn pull_request_files(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<PullFile>, GitHubError> {
        let path = format!("{}/pulls/{number}/files", repo_path(owner, repo));
        self.get_all_pages(&path, "pull request files", |page: Vec<WireFile>| {
            page.into_iter().map(PullFile::from).collect()
        })
        .await
    }

    /// The pull request (any state) whose head is `branch` of `owner/repo` itself, or
    /// `fork-owner:branch` of a fork, newest first (`GET …/pulls?head=owner:branch&state=all`).
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
            seg(&if branch.contains(':') {
                // A fork's branch, `fork-owner:branch` (fork mode).
                branch.to_owned()
            } else {
                format!("{owner}:{branch}")
            })
        );
        let answer = self.send(Method::GET, &path, None).await?;
        let mut pulls: Vec<WireOpenedPull> = answer.json("pull requests")?;
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
            Ok(answer) => Ok(answer.json::<WireOpenedPull>("pull request")?.into()),
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

    /// Merges pull request `number` if its head is still `sha`
    /// (`PUT …/pulls/{n}/merge`). GitHub's refusals (405 not mergeable, 409 head moved, 422)
    /// are an outcome, not an error.
    pub async fn merge_pull_request(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        sha: &str,
        method: MergeMethod,
    ) -> Result<MergeOutcome, GitHubError> {
        let path = format!("{}/pulls/{number}/merge", repo_path(owner, repo));
        let body = json!({"sha": sha, "merge_method": method.as_str()});
        match self.send(Method::PUT, &path, Some(&body)).await {
            Ok(answer) => Ok(merge_outcome(answer.json("merge")?)),
            Err(GitHubError::Status {
                status: 405 | 409 | 422,
                message,
            }) => Ok(MergeOutcome::NotMergeable(
                github_message(&message).to_owned(),
            )),
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
    fn a_pull_request_from_a_fork_parses() {
        // Shape of GitHub's "Get a pull request" example, trimmed.
        let body = json!({
            "url": "https://api.github.com/repos/octocat/Hello-World/pulls/1347",
            "id": 1, "node_id": "MDExOlB1bGxSZXF1ZXN0MQ==", "number": 1347,
            "state": "open", "locked": true, "title": "Amazing new feature",
            "user": user("octocat", 1, "User"),
            "body": "Please pull these awesome changes in!",
            "labels": [{"id": 208045946, "name": "bug", "color": "f29513", "default": true}],
            "created_at": "2011-01-26T19:01:12Z", "merged_at": null,
            "head": {"label": "octocat:new-topic", "ref": "new-topic",
                "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
                "user": user("octocat", 1, "User"),
                "repo": {"id": 1296269, "name": "Hello-World", "full_name": "octocat/Hello-World"}},
            "base": {"label": "octocat:master", "ref": "master",
                "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
                "repo": {"id": 1296269, "name": "Hello-World", "full_name": "octocat/Hello-World"}},
            "draft": false, "merged": false, "mergeable": true, "commits": 3,
            "additions": 100, "deletions": 3, "changed_files": 5
        });
        let pr = pull_info(parse(body)).expect("valid");
        assert_eq!(pr.number, 1347);
        assert_eq!(pr.state, PullState::Open);
        assert!(!pr.merged && !pr.draft);
        assert_eq!(pr.head_sha, "6dcb09b5b57875f334f61aebed695e2e4193db5e");
        assert_eq!(pr.head_ref, "new-topic");
        assert_eq!(pr.head_repo.as_deref(), Some("octocat/Hello-World"));
        assert_eq!(pr.base_ref, "master");
        assert_eq!(
            pr.author,
            Actor {
                id: 1,
                login: "octocat".into(),
                is_bot: false
            }
        );
        assert_eq!(pr.labels, ["bug"]);
    }

    #[test]
    fn a_merged_pull_request_of_a_deleted_fork_and_account_parses() {
        let body = json!({
            "number": 7, "state": "closed", "title": "t", "user": null,
            "merged_at": "2026-01-01T00:00:00Z",
            "head": {"ref": "x", "sha": "a".repeat(40), "repo": null},
            "base": {"ref": "main", "sha": "b".repeat(40), "repo": {"full_name": "o/r"}}
        });
        let pr = pull_info(parse(body)).expect("valid");
        assert_eq!(pr.state, PullState::Closed);
        assert!(pr.merged, "merged_at alone says merged");
        assert!(!pr.draft);
        assert_eq!(pr.head_repo, None);
        assert_eq!(pr.author.login, "ghost");
        assert!(pr.labels.is_empty());
        let weird = json!({"number": 7, "state": "merged", "title": "t",
            "head": {"ref": "x", "sha": "a"}, "base": {"ref": "y", "sha": "b"}});
        assert!(matches!(
            pull_info(parse(weird)),
            Err(GitHubError::Decode(_))
        ));
    }

    #[test]
    fn files_parse_with_renames() {
        let body = json!([
            {"sha": "bbcd538c8e72b8c175046e27cc8f907076331401", "filename": "file1.txt",
             "status": "added", "additions": 103, "deletions": 21, "changes": 124,
             "blob_url": "https://github.com/octocat/Hello-World/blob/6dcb09b/file1.txt",
             "patch": "@@ -132,7 +132,7 @@ module Test @@ -1000,7 +1000,7 @@ module Test"},
            {"sha": "cccd538c8e72b8c175046e27cc8f907076331401", "filename": "new/name.rs",
             "previous_filename": "old/name.rs", "status": "renamed",
             "additions": 0, "deletions": 0, "changes": 0}
        ]);
        let files: Vec<PullFile> = parse::<Vec<WireFile>>(body)
            .into_iter()
            .map(PullFile::from)
            .collect();
        assert_eq!(files[0].path, "file1.txt");
        assert_eq!((files[0].additions, files[0].deletions), (103, 21));
        assert_eq!(files[0].previous_path, None);
        assert_eq!(files[1].status, "renamed");
        assert_eq!(files[1].previous_path.as_deref(), Some("old/name.rs"));
    }

    #[test]
    fn merge_answers_map_to_outcomes() {
        let merged = json!({"sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e",
            "merged": true, "message": "Pull Request successfully merged"});
        assert_eq!(
            merge_outcome(parse(merged)),
            MergeOutcome::Merged {
                sha: "6dcb09b5b57875f334f61aebed695e2e4193db5e".into()
            }
        );
        let not = json!({"merged": false, "message": "Base branch was modified"});
        assert_eq!(
            merge_outcome(parse(not)),
            MergeOutcome::NotMergeable("Base branch was modified".into())
        );
        assert_eq!(
            github_message(
                "PUT http://127.0.0.1:1/repos/o/r/pulls/1/merge: Head branch was modified. Review and try the merge again."
            ),
            "Head branch was modified. Review and try the merge again."
        );
    }

    #[test]
    fn pull_states_parse() {
        let open: OpenedPullRequest = serde_json::from_value::<WireOpenedPull>(json!({
            "number": 7, "html_url": "https://github.com/a/b/pull/7", "state": "open"
        }))
        .expect("documented shape")
        .into();
        assert!(open.open);
        let closed: OpenedPullRequest =
            serde_json::from_value::<WireOpenedPull>(json!({"number": 8, "state": "closed"}))
                .expect("documented shape")
                .into();
        assert!(!closed.open && closed.html_url.is_none());
    }
}
