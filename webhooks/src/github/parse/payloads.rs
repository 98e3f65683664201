//! Borrowed serde models of the webhook payloads: only the fields handlers need, everything
//! else is skipped by serde without allocating.

use std::borrow::Cow;

use serde::Deserialize;

/// Just the `action`, read first to route a delivery cheaply.
#[derive(Deserialize)]
pub(super) struct ActionOnly<'a> {
    #[serde(borrow, default)]
    pub action: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct Owner<'a> {
    #[serde(borrow)]
    pub login: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct Repo<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub owner: Owner<'a>,
}

#[derive(Deserialize)]
pub(super) struct User<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub login: Cow<'a, str>,
    #[serde(borrow, rename = "type", default)]
    pub kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct InstallationRef {
    pub id: u64,
}

#[derive(Deserialize)]
pub(super) struct Label<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct IssuePayload<'a> {
    #[serde(deserialize_with = "item_number")]
    pub number: u64,
    #[serde(borrow)]
    pub title: Cow<'a, str>,
    #[serde(borrow, default)]
    pub body: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub user: User<'a>,
    #[serde(borrow, default)]
    pub labels: Vec<Label<'a>>,
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    #[serde(default)]
    pub pull_request: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
pub(super) struct IssuesPayload<'a> {
    #[serde(borrow)]
    pub issue: IssuePayload<'a>,
    #[serde(borrow, default)]
    pub label: Option<Label<'a>>,
    #[serde(borrow)]
    pub repository: Repo<'a>,
    #[serde(borrow)]
    pub sender: User<'a>,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
}

#[derive(Deserialize)]
pub(super) struct CommentPayload<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub body: Cow<'a, str>,
    #[serde(borrow)]
    pub user: User<'a>,
}

#[derive(Deserialize)]
pub(super) struct From<'a> {
    #[serde(borrow, default)]
    pub from: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct Changes<'a> {
    #[serde(borrow, default)]
    pub body: Option<From<'a>>,
}

#[derive(Deserialize)]
pub(super) struct IssueCommentPayload<'a> {
    #[serde(borrow)]
    pub issue: IssuePayload<'a>,
    #[serde(borrow)]
    pub comment: CommentPayload<'a>,
    #[serde(borrow, default)]
    pub changes: Option<Changes<'a>>,
    #[serde(borrow)]
    pub repository: Repo<'a>,
    #[serde(borrow)]
    pub sender: User<'a>,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
}

#[derive(Deserialize)]
pub(super) struct FullName<'a> {
    #[serde(borrow)]
    pub full_name: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct Ref<'a> {
    #[serde(borrow, rename = "ref")]
    pub branch: Cow<'a, str>,
    #[serde(borrow)]
    pub sha: Cow<'a, str>,
    #[serde(borrow, default)]
    pub repo: Option<FullName<'a>>,
}

#[derive(Deserialize)]
pub(super) struct PullRequestPayload<'a> {
    #[serde(deserialize_with = "item_number")]
    pub number: u64,
    #[serde(borrow)]
    pub title: Cow<'a, str>,
    #[serde(borrow)]
    pub user: User<'a>,
    #[serde(borrow)]
    pub head: Ref<'a>,
    #[serde(borrow)]
    pub base: Ref<'a>,
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    #[serde(default)]
    pub draft: Option<bool>,
    #[serde(default)]
    pub merged: Option<bool>,
    #[serde(borrow, default)]
    pub labels: Vec<Label<'a>>,
}

#[derive(Deserialize)]
pub(super) struct PullRequestEventPayload<'a> {
    #[serde(borrow)]
    pub pull_request: PullRequestPayload<'a>,
    #[serde(borrow, default)]
    pub label: Option<Label<'a>>,
    #[serde(borrow)]
    pub repository: Repo<'a>,
    #[serde(borrow)]
    pub sender: User<'a>,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
}

#[derive(Deserialize)]
pub(super) struct ReviewPayload<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub user: User<'a>,
    #[serde(borrow)]
    pub state: Cow<'a, str>,
    #[serde(borrow, default)]
    pub commit_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub body: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct ReviewEventPayload<'a> {
    #[serde(borrow)]
    pub review: ReviewPayload<'a>,
    #[serde(borrow, default)]
    pub changes: Option<Changes<'a>>,
    #[serde(borrow)]
    pub pull_request: PullRequestPayload<'a>,
    #[serde(borrow)]
    pub repository: Repo<'a>,
    #[serde(borrow)]
    pub sender: User<'a>,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
}

#[derive(Deserialize)]
pub(super) struct ReviewCommentPayload<'a> {
    pub id: u64,
    #[serde(borrow, default)]
    pub body: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub user: User<'a>,
    #[serde(borrow, default)]
    pub original_commit_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct ReviewCommentEventPayload<'a> {
    #[serde(borrow)]
    pub comment: ReviewCommentPayload<'a>,
    #[serde(borrow, default)]
    pub changes: Option<Changes<'a>>,
    #[serde(borrow)]
    pub pull_request: PullRequestPayload<'a>,
    #[serde(borrow)]
    pub repository: Repo<'a>,
    #[serde(borrow)]
    pub sender: User<'a>,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
}

#[derive(Deserialize)]
pub(super) struct MergeGroupPayload<'a> {
    #[serde(borrow)]
    pub head_sha: Cow<'a, str>,
    #[serde(borrow)]
    pub head_ref: Cow<'a, str>,
    #[serde(borrow)]
    pub base_ref: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct MergeGroupEventPayload<'a> {
    #[serde(borrow)]
    pub merge_group: MergeGroupPayload<'a>,
    #[serde(borrow)]
    pub repository: Repo<'a>,
    #[serde(borrow, default)]
    pub sender: Option<User<'a>>,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
}

#[derive(Deserialize)]
pub(super) struct Number {
    #[serde(deserialize_with = "item_number")]
    pub number: u64,
}

#[derive(Deserialize)]
pub(super) struct AppRef {
    pub id: u64,
}

#[derive(Deserialize)]
pub(super) struct CheckRunPayload<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(borrow)]
    pub head_sha: Cow<'a, str>,
    #[serde(default)]
    pub app: Option<AppRef>,
    #[serde(default)]
    pub pull_requests: Vec<Number>,
}

#[derive(Deserialize)]
pub(super) struct RequestedAction<'a> {
    #[serde(borrow)]
    pub identifier: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct CheckRunEventPayload<'a> {
    #[serde(borrow)]
    pub check_run: CheckRunPayload<'a>,
    #[serde(borrow, default)]
    pub requested_action: Option<RequestedAction<'a>>,
    #[serde(borrow)]
    pub repository: Repo<'a>,
    #[serde(borrow)]
    pub sender: User<'a>,
    #[serde(default)]
    pub installation: Option<InstallationRef>,
}

#[derive(Deserialize)]
pub(super) struct InstallationPayload<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub account: Owner<'a>,
}

#[derive(Deserialize)]
pub(super) struct RepoName<'a> {
    pub id: u64,
    #[serde(borrow)]
    pub full_name: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct InstallationEventPayload<'a> {
    #[serde(borrow)]
    pub installation: InstallationPayload<'a>,
    #[serde(borrow, default)]
    pub repositories: Option<Vec<RepoName<'a>>>,
    #[serde(borrow, default)]
    pub repositories_added: Option<Vec<RepoName<'a>>>,
    #[serde(borrow, default)]
    pub repositories_removed: Option<Vec<RepoName<'a>>>,
    #[serde(borrow)]
    pub sender: User<'a>,
}

#[derive(Deserialize)]
pub(super) struct PingPayload<'a> {
    #[serde(default)]
    pub hook_id: Option<u64>,
    #[serde(borrow, default)]
    pub repository: Option<Repo<'a>>,
}

/// The largest issue or pull-request number Kubernetes can store (an `int64` field).
const MAX_ITEM_NUMBER: u64 = i64::MAX as u64;

/// An issue or pull-request number: GitHub numbers them from 1. A delivery naming 0 or a
/// number no Kubernetes object can hold is refused when parsed, instead of being accepted and
/// then failing at every write of the object it would create.
fn item_number<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let number = <u64 as Deserialize>::deserialize(deserializer)?;
    if (1..=MAX_ITEM_NUMBER).contains(&number) {
        Ok(number)
    } else {
        Err(serde::de::Error::custom(format!(
            "number {number} is not an issue or pull request number (1 to {MAX_ITEM_NUMBER})"
        )))
    }
}
