//! The typed GitHub events Countersign acts on: only the fields a handler needs, owned, so a
//! parsed delivery can wait on the bot's queue after the request that carried it has been
//! answered.
//!
//! Parsing ([`super::parse`]) turns a verified body into one of these or into
//! [`super::parse::Parsed::Unsupported`]; every closed set of values (actions, review states,
//! account kinds) is an enum here so handlers never compare strings. Accounts are
//! [`countersign_github::users::Account`]s, shared with the GitHub client and authorisation.

pub use countersign_github::users::{Account, AccountKind};

/// The `X-GitHub-Delivery` id: a GUID GitHub keeps across redeliveries of the same event.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(pub String);

impl DeliveryId {
    /// The id as GitHub sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One verified, parsed delivery.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// GitHub's delivery id.
    pub id: DeliveryId,
    /// What happened.
    pub event: Event,
}

/// Every event Countersign handles, by `X-GitHub-Event` name.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// `ping`: sent once when the webhook is created.
    Ping(Ping),
    /// `issues` (labeled, unlabeled).
    Issues(IssuesEvent),
    /// `issue_comment` (created, edited, deleted), on issues and pull requests alike.
    IssueComment(IssueCommentEvent),
    /// `pull_request` (opened, synchronize, reopened, ready_for_review, labeled, unlabeled,
    /// closed, edited, converted_to_draft).
    PullRequest(PullRequestEvent),
    /// `pull_request_review` (submitted, dismissed, edited).
    PullRequestReview(PullRequestReviewEvent),
    /// `pull_request_review_comment` (created, edited, deleted): inline comments on the diff.
    PullRequestReviewComment(ReviewCommentEvent),
    /// `merge_group` (checks_requested, destroyed).
    MergeGroup(MergeGroupEvent),
    /// `check_run` (rerequested, requested_action).
    CheckRun(CheckRunEvent),
    /// `installation` (created, deleted, suspend, unsuspend, new_permissions_accepted).
    Installation(InstallationEvent),
    /// `installation_repositories` (added, removed).
    InstallationRepositories(InstallationRepositoriesEvent),
}

impl Event {
    /// The `X-GitHub-Event` name, for logs and bounded metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ping(_) => "ping",
            Self::Issues(_) => "issues",
            Self::IssueComment(_) => "issue_comment",
            Self::PullRequest(_) => "pull_request",
            Self::PullRequestReview(_) => "pull_request_review",
            Self::PullRequestReviewComment(_) => "pull_request_review_comment",
            Self::MergeGroup(_) => "merge_group",
            Self::CheckRun(_) => "check_run",
            Self::Installation(_) => "installation",
            Self::InstallationRepositories(_) => "installation_repositories",
        }
    }

    /// The repository the event happened in, when it is about one.
    pub fn repository(&self) -> Option<&Repository> {
        match self {
            Self::Ping(p) => p.repository.as_ref(),
            Self::Issues(e) => Some(&e.repository),
            Self::IssueComment(e) => Some(&e.repository),
            Self::PullRequest(e) => Some(&e.repository),
            Self::PullRequestReview(e) => Some(&e.repository),
            Self::PullRequestReviewComment(e) => Some(&e.repository),
            Self::MergeGroup(e) => Some(&e.repository),
            Self::CheckRun(e) => Some(&e.repository),
            Self::Installation(_) | Self::InstallationRepositories(_) => None,
        }
    }

    /// The installation the delivery came through (absent for plain repository webhooks).
    pub fn installation_id(&self) -> Option<u64> {
        match self {
            Self::Ping(_) => None,
            Self::Issues(e) => e.installation_id,
            Self::IssueComment(e) => e.installation_id,
            Self::PullRequest(e) => e.installation_id,
            Self::PullRequestReview(e) => e.installation_id,
            Self::PullRequestReviewComment(e) => e.installation_id,
            Self::MergeGroup(e) => e.installation_id,
            Self::CheckRun(e) => e.installation_id,
            Self::Installation(e) => Some(e.installation_id),
            Self::InstallationRepositories(e) => Some(e.installation_id),
        }
    }

    /// Who caused the event.
    pub fn sender(&self) -> Option<&Account> {
        match self {
            Self::Ping(_) => None,
            Self::Issues(e) => Some(&e.sender),
            Self::IssueComment(e) => Some(&e.sender),
            Self::PullRequest(e) => Some(&e.sender),
            Self::PullRequestReview(e) => Some(&e.sender),
            Self::PullRequestReviewComment(e) => Some(&e.sender),
            Self::MergeGroup(e) => e.sender.as_ref(),
            Self::CheckRun(e) => Some(&e.sender),
            Self::Installation(e) => Some(&e.sender),
            Self::InstallationRepositories(e) => Some(&e.sender),
        }
    }
}

/// A repository, as named in an event.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repository {
    /// GitHub's numeric repository id.
    pub id: u64,
    /// Owner login (user or organisation).
    pub owner: String,
    /// Repository name.
    pub name: String,
}

impl Repository {
    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }
}

/// `ping`.
#[derive(Clone, Debug, PartialEq)]
pub struct Ping {
    /// The webhook's id.
    pub hook_id: Option<u64>,
    /// The repository, for repository webhooks.
    pub repository: Option<Repository>,
}

/// An issue (or the issue side of a pull request, for comments).
#[derive(Clone, Debug, PartialEq)]
pub struct Issue {
    /// The issue number.
    pub number: u64,
    /// Title as written (untrusted).
    pub title: String,
    /// Body as written (untrusted; sanitise before use).
    pub body: Option<String>,
    /// Who opened it.
    pub user: Account,
    /// The labels it carries now.
    pub labels: Vec<String>,
    /// Whether it is still open.
    pub open: bool,
    /// Whether this "issue" is a pull request (comments on pull requests arrive as
    /// `issue_comment`).
    pub is_pull_request: bool,
}

/// `issues` actions Countersign handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuesAction {
    /// A label was added; it names the label.
    Labeled(String),
    /// A label was removed; it names the label.
    Unlabeled(String),
}

/// `issues`.
#[derive(Clone, Debug, PartialEq)]
pub struct IssuesEvent {
    /// What happened.
    pub action: IssuesAction,
    /// The issue.
    pub issue: Issue,
    /// Where.
    pub repository: Repository,
    /// Who.
    pub sender: Account,
    /// Through which installation.
    pub installation_id: Option<u64>,
}

/// A comment on an issue or pull request.
#[derive(Clone, Debug, PartialEq)]
pub struct Comment {
    /// The comment id (unique across the repository).
    pub id: u64,
    /// The body as it is now (untrusted).
    pub body: String,
    /// Who wrote it.
    pub user: Account,
}

/// `issue_comment` actions Countersign handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommentAction {
    /// A new comment.
    Created,
    /// A comment was edited; `previous_body` is the body before the edit when GitHub sent it
    /// (`changes.body.from`). Only commands that were not in it run.
    Edited {
        /// The body before the edit.
        previous_body: Option<String>,
    },
    /// A comment was deleted.
    Deleted,
}

/// `issue_comment`.
#[derive(Clone, Debug, PartialEq)]
pub struct IssueCommentEvent {
    /// What happened.
    pub action: CommentAction,
    /// The issue or pull request commented on.
    pub issue: Issue,
    /// The comment.
    pub comment: Comment,
    /// Where.
    pub repository: Repository,
    /// Who (for edits, the editor, who may differ from the author).
    pub sender: Account,
    /// Through which installation.
    pub installation_id: Option<u64>,
}

/// One end of a pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitRef {
    /// Branch name, e.g. `main` or `countersign/payments-api-issue-42-backend`.
    pub branch: String,
    /// Commit SHA.
    pub sha: String,
    /// `owner/name` of the repository the branch lives in (differs from the base for forks;
    /// absent when the fork was deleted).
    pub repo_full_name: Option<String>,
}

/// A pull request.
#[derive(Clone, Debug, PartialEq)]
pub struct PullRequest {
    /// The pull request number.
    pub number: u64,
    /// Title (untrusted).
    pub title: String,
    /// Who opened it.
    pub user: Account,
    /// The branch it merges.
    pub head: GitRef,
    /// The branch it merges into.
    pub base: GitRef,
    /// Open or closed.
    pub open: bool,
    /// Whether it is a draft.
    pub draft: bool,
    /// Whether it has merged.
    pub merged: bool,
    /// The labels it carries now.
    pub labels: Vec<String>,
}

/// `pull_request` actions Countersign handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PullRequestAction {
    /// Opened.
    Opened,
    /// New commits were pushed (or the branch was force-pushed).
    Synchronize,
    /// Reopened after being closed.
    Reopened,
    /// Taken out of draft.
    ReadyForReview,
    /// Turned into a draft.
    ConvertedToDraft,
    /// A label was added; it names the label.
    Labeled(String),
    /// A label was removed; it names the label.
    Unlabeled(String),
    /// Title, body or base branch changed.
    Edited,
    /// Closed, merged or not (see [`PullRequest::merged`]).
    Closed,
}

/// `pull_request`.
#[derive(Clone, Debug, PartialEq)]
pub struct PullRequestEvent {
    /// What happened.
    pub action: PullRequestAction,
    /// The pull request after the change.
    pub pull_request: PullRequest,
    /// Where.
    pub repository: Repository,
    /// Who.
    pub sender: Account,
    /// Through which installation.
    pub installation_id: Option<u64>,
}

/// A review's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReviewState {
    /// Approved.
    Approved,
    /// Requested changes.
    ChangesRequested,
    /// Commented without a verdict.
    Commented,
    /// Dismissed by a maintainer.
    Dismissed,
    /// Not submitted yet.
    Pending,
}

/// A pull request review.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    /// The review id.
    pub id: u64,
    /// Who reviewed.
    pub user: Account,
    /// The verdict.
    pub state: ReviewState,
    /// The head commit the review was given on.
    pub commit_id: Option<String>,
    /// The review's text (untrusted; commands in it count like comment commands).
    pub body: Option<String>,
}

/// `pull_request_review` actions Countersign handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReviewAction {
    /// A review was submitted.
    Submitted,
    /// A review was dismissed.
    Dismissed,
    /// A review's body was edited.
    Edited,
}

/// `pull_request_review`.
#[derive(Clone, Debug, PartialEq)]
pub struct PullRequestReviewEvent {
    /// What happened.
    pub action: ReviewAction,
    /// The review.
    pub review: Review,
    /// For `edited`: the body before the edit, when GitHub sent it (`changes.body.from`).
    pub previous_body: Option<String>,
    /// The pull request reviewed.
    pub pull_request: PullRequest,
    /// Where.
    pub repository: Repository,
    /// Who.
    pub sender: Account,
    /// Through which installation.
    pub installation_id: Option<u64>,
}

/// An inline review comment.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewComment {
    /// The comment id (its own id space, distinct from issue comments').
    pub id: u64,
    /// The body as it is now (untrusted).
    pub body: String,
    /// Who wrote it.
    pub user: Account,
    /// The commit it was written on (`original_commit_id`).
    pub commit_id: Option<String>,
}

/// `pull_request_review_comment`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReviewCommentEvent {
    /// What happened (`Edited` carries the body before the edit).
    pub action: CommentAction,
    /// The comment.
    pub comment: ReviewComment,
    /// The pull request commented on.
    pub pull_request: PullRequest,
    /// Where.
    pub repository: Repository,
    /// Who (for edits, the editor, who may differ from the author).
    pub sender: Account,
    /// Through which installation.
    pub installation_id: Option<u64>,
}

/// `merge_group` actions Countersign handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeGroupAction {
    /// The merge queue wants checks on a new merge-group commit.
    ChecksRequested,
    /// The merge group was merged or removed from the queue.
    Destroyed,
}

/// `merge_group`.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeGroupEvent {
    /// What happened.
    pub action: MergeGroupAction,
    /// The merge-group commit that needs a conclusion.
    pub head_sha: String,
    /// Its ref, e.g. `refs/heads/gh-readonly-queue/main/pr-42-<sha>`.
    pub head_ref: String,
    /// The branch it merges into, e.g. `refs/heads/main`.
    pub base_ref: String,
    /// The pull request numbers in the group, read from `head_ref` (GitHub names only the
    /// newest pull request there).
    pub pull_requests: Vec<u64>,
    /// Where.
    pub repository: Repository,
    /// Who (GitHub sends the merge queue's own account, or none).
    pub sender: Option<Account>,
    /// Through which installation.
    pub installation_id: Option<u64>,
}

/// `check_run` actions Countersign handles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckRunAction {
    /// Someone pressed "Re-run" on the check.
    Rerequested,
    /// Someone pressed a button the check offered; it names the button's identifier.
    RequestedAction(String),
}

/// `check_run`.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckRunEvent {
    /// What happened.
    pub action: CheckRunAction,
    /// The check run id.
    pub check_run_id: u64,
    /// The check's name, e.g. `countersign/approval`.
    pub name: String,
    /// The commit the check is on.
    pub head_sha: String,
    /// The id of the App that owns the check.
    pub app_id: Option<u64>,
    /// Pull requests (numbers) in this repository whose head is `head_sha`.
    pub pull_requests: Vec<u64>,
    /// Where.
    pub repository: Repository,
    /// Who.
    pub sender: Account,
    /// Through which installation.
    pub installation_id: Option<u64>,
}

/// `installation` actions Countersign handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallationAction {
    /// The App was installed.
    Created,
    /// The App was uninstalled.
    Deleted,
    /// The installation was suspended.
    Suspend,
    /// The installation was unsuspended.
    Unsuspend,
    /// The account accepted new permissions.
    NewPermissionsAccepted,
}

/// A repository named by an installation event (no owner field: read from `full_name`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct InstalledRepository {
    /// GitHub's numeric repository id.
    pub id: u64,
    /// `owner/name`.
    pub full_name: String,
}

/// `installation`.
#[derive(Clone, Debug, PartialEq)]
pub struct InstallationEvent {
    /// What happened.
    pub action: InstallationAction,
    /// The installation id.
    pub installation_id: u64,
    /// The account (user or organisation) the App is installed on.
    pub account: String,
    /// The repositories the installation covers, when GitHub lists them (selected
    /// repositories only).
    pub repositories: Vec<InstalledRepository>,
    /// Who.
    pub sender: Account,
}

/// `installation_repositories` actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallationRepositoriesAction {
    /// Repositories were added to the installation.
    Added,
    /// Repositories were removed from the installation.
    Removed,
}

/// `installation_repositories`.
#[derive(Clone, Debug, PartialEq)]
pub struct InstallationRepositoriesEvent {
    /// What happened.
    pub action: InstallationRepositoriesAction,
    /// The installation id.
    pub installation_id: u64,
    /// The account the App is installed on.
    pub account: String,
    /// Repositories added.
    pub added: Vec<InstalledRepository>,
    /// Repositories removed.
    pub removed: Vec<InstalledRepository>,
    /// Who.
    pub sender: Account,
}
