//! The REST calls the approval-gate reconciler makes about one pull request: reading it, its
//! files, commits, reviews and comments, the checks and statuses on its head, and writing our
//! check run, review requests and the merge.
//!
//! GitHub's JSON is parsed into private wire structs holding only the fields used, tolerant of
//! missing optional fields; a `null` (deleted, "ghost") account becomes `None`. The public
//! types are what the gate reasons about.

use http::Method;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{GitHubError, InstallationClient, seg};

/// A GitHub account as the gate needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Numeric user id (what approvals are bound to; logins can be renamed).
    pub id: u64,
    /// Login at the time of the call.
    pub login: String,
    /// Whether GitHub reports the account's `type` as `Bot`.
    pub is_bot: bool,
}

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
}

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
}

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
}

/// A check run's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// Queued.
    Queued,
    /// Running.
    InProgress,
    /// Done; a conclusion is required.
    Completed,
}

impl CheckStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }
}

/// A check run to create or update.
#[derive(Clone, Debug)]
pub struct CheckRunRequest<'a> {
    /// Check name, e.g. `countersign/approval`.
    pub name: &'a str,
    /// The commit it reports on (ignored by updates: a run stays on its commit).
    pub head_sha: &'a str,
    /// Status.
    pub status: CheckStatus,
    /// `success`, `failure`, `neutral`, `action_required`, …; sent only when completed.
    pub conclusion: Option<&'a str>,
    /// `output.title`.
    pub title: &'a str,
    /// `output.summary` (Markdown); cut to [`CHECK_SUMMARY_LIMIT`] with a marker.
    pub summary: &'a str,
    /// The "Details" link.
    pub details_url: Option<&'a str>,
    /// Our own reference (e.g. the gate's namespace/name).
    pub external_id: Option<&'a str>,
}

/// A check run on a commit, ours or another app's.
#[derive(Clone, Debug)]
pub struct CheckRunInfo {
    /// Check run id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// The app that created it (compare with our App id to skip our own check).
    pub app_id: Option<u64>,
    /// The commit.
    pub head_sha: String,
    /// `queued`, `in_progress`, `completed`, … (GitHub adds more for Actions).
    pub status: String,
    /// Conclusion once completed.
    pub conclusion: Option<String>,
}

/// One commit status (the older statuses API, per context).
#[derive(Clone, Debug)]
pub struct CommitStatusInfo {
    /// Context, e.g. `ci/jenkins`.
    pub context: String,
    /// `error`, `failure`, `pending` or `success`.
    pub state: String,
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

/// GitHub's limit on `output.summary`, in characters.
pub const CHECK_SUMMARY_LIMIT: usize = 65_535;
/// Appended to a summary cut to [`CHECK_SUMMARY_LIMIT`].
pub const TRUNCATION_MARKER: &str = "\n\n… (truncated)";

/// The account GitHub shows for deleted users.
const GHOST_ID: u64 = 10_137;

// ---- wire structs: only the fields used ----

/// A user object, lenient: GitHub sends `null`, and for unmatched commit identities
/// sometimes `{}`.
#[derive(Deserialize)]
struct WireUser {
    id: Option<u64>,
    login: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn actor(user: Option<WireUser>) -> Option<Actor> {
    let user = user?;
    Some(Actor {
        id: user.id?,
        login: user.login?,
        is_bot: user.kind.as_deref() == Some("Bot"),
    })
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
        author: actor(wire.user).unwrap_or_else(|| Actor {
            id: GHOST_ID,
            login: "ghost".to_owned(),
            is_bot: false,
        }),
        labels: wire.labels.into_iter().map(|l| l.name).collect(),
    })
}

#[derive(Deserialize)]
struct WireFile {
    filename: String,
    #[serde(default)]
    previous_filename: Option<String>,
    #[serde(default)]
    additions: u32,
    #[serde(default)]
    deletions: u32,
    status: String,
}

impl From<WireFile> for PullFile {
    fn from(f: WireFile) -> Self {
        Self {
            path: f.filename,
            previous_path: f.previous_filename,
            additions: f.additions,
            deletions: f.deletions,
            status: f.status,
        }
    }
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
struct WireCommit {
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
}

impl From<WireReview> for ReviewInfo {
    fn from(r: WireReview) -> Self {
        Self {
            id: r.id,
            user: actor(r.user),
            state: ReviewState::from_github(&r.state),
            commit_id: r.commit_id,
            submitted_at: r.submitted_at,
        }
    }
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
}

impl From<WireComment> for CommentInfo {
    fn from(c: WireComment) -> Self {
        Self {
            id: c.id,
            user: actor(c.user),
            body: c.body.unwrap_or_default(),
            created_at: c.created_at,
            updated_at: c.updated_at.unwrap_or(c.created_at),
        }
    }
}

#[derive(Deserialize)]
struct WireApp {
    id: u64,
}

#[derive(Deserialize)]
struct WireCheckRun {
    id: u64,
    name: String,
    #[serde(default)]
    app: Option<WireApp>,
    head_sha: String,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
}

impl From<WireCheckRun> for CheckRunInfo {
    fn from(c: WireCheckRun) -> Self {
        Self {
            id: c.id,
            name: c.name,
            app_id: c.app.map(|a| a.id),
            head_sha: c.head_sha,
            status: c.status,
            conclusion: c.conclusion,
        }
    }
}

/// `GET /repos/{o}/{r}/commits/{ref}/check-runs`.
#[derive(Deserialize)]
struct WireCheckRuns {
    #[serde(default)]
    check_runs: Vec<WireCheckRun>,
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

/// `summary` cut on a char boundary to at most [`CHECK_SUMMARY_LIMIT`] bytes, marker
/// included. Bytes bound characters, so this holds whichever GitHub counts.
fn truncate_summary(summary: &str) -> std::borrow::Cow<'_, str> {
    if summary.len() <= CHECK_SUMMARY_LIMIT {
        return summary.into();
    }
    let mut end = CHECK_SUMMARY_LIMIT - TRUNCATION_MARKER.len();
    while !summary.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATION_MARKER}", &summary[..end]).into()
}

/// The JSON body of a check-run create (`create`) or update. Only a completed run carries a
/// conclusion (with `completed_at = now`): GitHub completes a run as soon as it sees one.
fn check_run_body(run: &CheckRunRequest<'_>, create: bool, now: Timestamp) -> Value {
    let mut body = json!({
        "name": run.name,
        "status": run.status.as_str(),
        "output": {"title": run.title, "summary": truncate_summary(run.summary)},
    });
    if create {
        body["head_sha"] = json!(run.head_sha);
    }
    if run.status == CheckStatus::Completed {
        if let Some(conclusion) = run.conclusion {
            body["conclusion"] = json!(conclusion);
        }
        body["completed_at"] = json!(now.to_string());
    }
    if let Some(url) = run.details_url {
        body["details_url"] = json!(url);
    }
    if let Some(id) = run.external_id {
        body["external_id"] = json!(id);
    }
    body
}

/// GitHub's own message from a [`GitHubError::Status`] message (`"{METHOD} {url}: {message}"`;
/// URLs hold no spaces, so the first `": "` ends the prefix).
fn github_message(what: &str) -> &str {
    what.split_once(": ").map_or(what, |(_, m)| m)
}

impl InstallationClient {
    fn repo_path(owner: &str, repo: &str) -> String {
        format!("/repos/{}/{}", seg(owner), seg(repo))
    }

    /// Pull request `number` (`GET /repos/{o}/{r}/pulls/{n}`).
    pub async fn pull_request(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<PullInfo, GitHubError> {
        let path = format!("{}/pulls/{number}", Self::repo_path(owner, repo));
        let answer = self.send(Method::GET, &path, None).await?;
        pull_info(answer.json("pull request")?)
    }

    /// Every changed file of pull request `number`, all pages (GitHub lists at most 3000).
    pub async fn pull_request_files(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<PullFile>, GitHubError> {
        let path = format!("{}/pulls/{number}/files", Self::repo_path(owner, repo));
        self.get_all_pages(&path, "pull request files", |page: Vec<WireFile>| {
            page.into_iter().map(PullFile::from).collect()
        })
        .await
    }

    /// Every commit of pull request `number`, oldest first, all pages (GitHub lists at most
    /// 250).
    pub async fn pull_request_commits(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<PullCommit>, GitHubError> {
        let path = format!("{}/pulls/{number}/commits", Self::repo_path(owner, repo));
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
        let path = format!("{}/git/commits/{}", Self::repo_path(owner, repo), seg(sha));
        match self.send(Method::GET, &path, None).await {
            Ok(answer) => Ok(Some(
                answer.json::<WireGitCommitObject>("git commit")?.tree.sha,
            )),
            Err(GitHubError::NotFound(_) | GitHubError::Status { status: 422, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every review of pull request `number`, oldest first, all pages.
    pub async fn pull_request_reviews(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<ReviewInfo>, GitHubError> {
        let path = format!("{}/pulls/{number}/reviews", Self::repo_path(owner, repo));
        self.get_all_pages(&path, "pull request reviews", |page: Vec<WireReview>| {
            page.into_iter().map(ReviewInfo::from).collect()
        })
        .await
    }

    /// Every comment on issue or pull request `number` (the conversation tab), all pages.
    pub async fn issue_comments(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<CommentInfo>, GitHubError> {
        let path = format!("{}/issues/{number}/comments", Self::repo_path(owner, repo));
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
        let path = format!("{}/pulls/{number}/comments", Self::repo_path(owner, repo));
        self.get_all_pages(&path, "review comments", |page: Vec<WireComment>| {
            page.into_iter().map(CommentInfo::from).collect()
        })
        .await
    }

    /// Creates check run `run` on `run.head_sha`; returns its id.
    pub async fn create_check_run(
        &self,
        owner: &str,
        repo: &str,
        run: &CheckRunRequest<'_>,
    ) -> Result<u64, GitHubError> {
        let path = format!("{}/check-runs", Self::repo_path(owner, repo));
        let body = check_run_body(run, true, Timestamp::now());
        let answer = self.send(Method::POST, &path, Some(&body)).await?;
        Ok(answer.json::<super::Id>("check run")?.id)
    }

    /// Updates check run `id` to `run` (its commit stays).
    pub async fn update_check_run(
        &self,
        owner: &str,
        repo: &str,
        id: u64,
        run: &CheckRunRequest<'_>,
    ) -> Result<(), GitHubError> {
        let path = format!("{}/check-runs/{id}", Self::repo_path(owner, repo));
        let body = check_run_body(run, false, Timestamp::now());
        self.send(Method::PATCH, &path, Some(&body)).await.map(drop)
    }

    /// Every check run on commit `sha`, of every app (`GET …/commits/{sha}/check-runs`), all
    /// pages.
    pub async fn check_runs_for_ref(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<CheckRunInfo>, GitHubError> {
        let path = format!(
            "{}/commits/{}/check-runs",
            Self::repo_path(owner, repo),
            seg(sha)
        );
        self.get_all_pages(&path, "check runs", |page: WireCheckRuns| {
            page.check_runs
                .into_iter()
                .map(CheckRunInfo::from)
                .collect()
        })
        .await
    }

    /// The commit statuses on `sha`, latest per context (`GET …/commits/{ref}/status`,
    /// `statuses`), all pages.
    pub async fn commit_statuses(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<CommitStatusInfo>, GitHubError> {
        let path = format!(
            "{}/commits/{}/status",
            Self::repo_path(owner, repo),
            seg(sha)
        );
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
            Self::repo_path(owner, repo)
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
        let path = format!("{}/pulls/{number}/merge", Self::repo_path(owner, repo));
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

    fn user(login: &str, id: u64, kind: &str) -> Value {
        json!({
            "login": login, "id": id, "node_id": "MDQ6VXNlcjE=", "type": kind,
            "avatar_url": "https://github.com/images/error/octocat_happy.gif",
            "url": format!("https://api.github.com/users/{login}"), "site_admin": false
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).expect("GitHub's documented shape parses")
    }

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

    #[test]
    fn check_runs_and_statuses_parse() {
        let runs = json!({"total_count": 2, "check_runs": [
            {"id": 4, "head_sha": "ce587453ced02b1526dfb4cb910479d431683101",
             "node_id": "MDg6Q2hlY2tSdW40", "external_id": "", "status": "completed",
             "conclusion": "neutral", "name": "mighty_readme",
             "started_at": "2018-05-04T01:14:52Z", "completed_at": "2018-05-04T01:14:52Z",
             "output": {"title": "Mighty Readme report", "summary": "There are 0 failures"},
             "app": {"id": 1, "slug": "octoapp", "name": "Octocat App"},
             "pull_requests": []},
            {"id": 5, "head_sha": "ce587453ced02b1526dfb4cb910479d431683101",
             "status": "in_progress", "conclusion": null, "name": "build", "app": null}
        ]});
        let runs: Vec<CheckRunInfo> = parse::<WireCheckRuns>(runs)
            .check_runs
            .into_iter()
            .map(CheckRunInfo::from)
            .collect();
        assert_eq!(runs[0].app_id, Some(1));
        assert_eq!(runs[0].conclusion.as_deref(), Some("neutral"));
        assert_eq!(runs[1].app_id, None);
        assert_eq!(runs[1].status, "in_progress");
        assert_eq!(runs[1].conclusion, None);

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

    fn request(status: CheckStatus, conclusion: Option<&'static str>) -> CheckRunRequest<'static> {
        CheckRunRequest {
            name: "countersign/approval",
            head_sha: "abc",
            status,
            conclusion,
            title: "Waiting",
            summary: "| role | needed |",
            details_url: Some("https://countersign.example/g/1"),
            external_id: Some("team-a/gate-1"),
        }
    }

    #[test]
    fn check_run_bodies_send_a_conclusion_only_when_completed() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().expect("ts");
        let running = check_run_body(
            &request(CheckStatus::InProgress, Some("success")),
            true,
            now,
        );
        assert_eq!(running["status"], "in_progress");
        assert_eq!(running["head_sha"], "abc");
        assert!(running.get("conclusion").is_none());
        assert!(running.get("completed_at").is_none());
        assert_eq!(running["output"]["title"], "Waiting");
        assert_eq!(running["details_url"], "https://countersign.example/g/1");
        assert_eq!(running["external_id"], "team-a/gate-1");

        let done = check_run_body(
            &request(CheckStatus::Completed, Some("failure")),
            false,
            now,
        );
        assert_eq!(done["conclusion"], "failure");
        assert_eq!(done["completed_at"], "2026-12-04T10:00:00Z");
        assert!(done.get("head_sha").is_none(), "updates keep the commit");

        let queued = check_run_body(
            &CheckRunRequest {
                details_url: None,
                external_id: None,
                ..request(CheckStatus::Queued, None)
            },
            true,
            now,
        );
        assert_eq!(queued["status"], "queued");
        assert!(queued.get("details_url").is_none() && queued.get("external_id").is_none());
    }

    #[test]
    fn long_summaries_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_summary("short"), "short");
        let exact = "x".repeat(CHECK_SUMMARY_LIMIT);
        assert_eq!(truncate_summary(&exact).len(), CHECK_SUMMARY_LIMIT);
        // Three-byte characters, so the cut falls inside one unless it backs off.
        let long = "€".repeat(CHECK_SUMMARY_LIMIT);
        let cut = truncate_summary(&long);
        assert!(cut.len() <= CHECK_SUMMARY_LIMIT);
        assert!(cut.ends_with(TRUNCATION_MARKER));
        assert!(
            cut.trim_end_matches(TRUNCATION_MARKER)
                .chars()
                .all(|c| c == '€')
        );
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
