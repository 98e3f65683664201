//! Parsing a verified body into an [`Event`](super::event::Event).
//!
//! The body is read once for its `action`; unhandled events and actions stop there. Handled ones
//! are deserialised into the borrowed models of [`payloads`] (only the fields handlers need) and
//! converted into the owned event types.

mod payloads;

use std::borrow::Cow;

use super::event::*;
use payloads as p;

/// What a verified delivery turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// An event Countersign acts on.
    Event(Box<Event>),
    /// A well-formed event (or action) Countersign does not act on: answered 202, counted.
    Unsupported {
        /// The `X-GitHub-Event` name.
        event: String,
        /// The payload's `action`, when it has one.
        action: Option<String>,
    },
}

/// A body that is not the JSON GitHub sends for its event.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse the {event} payload: {source}")]
pub struct ParseError {
    /// The `X-GitHub-Event` name.
    pub event: String,
    /// Where serde stopped.
    #[source]
    pub source: serde_json::Error,
}

/// Parses `body` of an `X-GitHub-Event: event` delivery.
pub fn parse(event: &str, body: &[u8]) -> Result<Parsed, ParseError> {
    let err = |source| ParseError {
        event: event.to_owned(),
        source,
    };
    // Every webhook payload is a JSON object; serde would otherwise read `[]` as a struct.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let not_object = serde::de::Error::custom("a webhook payload must be a JSON object");
        return Err(err(not_object));
    }
    let action: p::ActionOnly<'_> = serde_json::from_slice(body).map_err(err)?;
    let action = action.action;
    let unsupported = || Parsed::Unsupported {
        event: event.to_owned(),
        action: action.as_deref().map(str::to_owned),
    };
    let act = action.as_deref().unwrap_or("");
    let parsed = match event {
        "ping" => {
            let v: p::PingPayload<'_> = serde_json::from_slice(body).map_err(err)?;
            Some(Event::Ping(Ping {
                hook_id: v.hook_id,
                repository: v.repository.map(repo),
            }))
        }
        "issues" => parse_issues(act, body).map_err(err)?,
        "issue_comment" => parse_issue_comment(act, body).map_err(err)?,
        "pull_request" => parse_pull_request(act, body).map_err(err)?,
        "pull_request_review" => parse_review(act, body).map_err(err)?,
        "pull_request_review_comment" => parse_review_comment(act, body).map_err(err)?,
        "merge_group" => parse_merge_group(act, body).map_err(err)?,
        "check_run" => parse_check_run(act, body).map_err(err)?,
        "installation" => parse_installation(act, body).map_err(err)?,
        "installation_repositories" => parse_installation_repositories(act, body).map_err(err)?,
        _ => None,
    };
    Ok(match parsed {
        Some(e) => Parsed::Event(Box::new(e)),
        None => unsupported(),
    })
}

type R = Result<Option<Event>, serde_json::Error>;

fn own(s: Cow<'_, str>) -> String {
    s.into_owned()
}

fn repo(r: p::Repo<'_>) -> Repository {
    Repository {
        id: r.id,
        owner: own(r.owner.login),
        name: own(r.name),
    }
}

fn account(u: p::User<'_>) -> Account {
    let kind = match u.kind.as_deref() {
        Some("Bot") => AccountKind::Bot,
        Some("Organization") => AccountKind::Organization,
        _ => AccountKind::User,
    };
    Account {
        id: u.id,
        login: own(u.login),
        kind,
    }
}

fn labels(l: Vec<p::Label<'_>>) -> Vec<String> {
    l.into_iter().map(|l| own(l.name)).collect()
}

fn issue(i: p::IssuePayload<'_>) -> Issue {
    Issue {
        number: i.number,
        title: own(i.title),
        body: i.body.map(own),
        user: account(i.user),
        labels: labels(i.labels),
        open: i.state == "open",
        is_pull_request: i.pull_request.is_some(),
    }
}

fn git_ref(r: p::Ref<'_>) -> GitRef {
    GitRef {
        branch: own(r.branch),
        sha: own(r.sha),
        repo_full_name: r.repo.map(|r| own(r.full_name)),
    }
}

fn pull_request(pr: p::PullRequestPayload<'_>) -> PullRequest {
    PullRequest {
        number: pr.number,
        title: own(pr.title),
        user: account(pr.user),
        head: git_ref(pr.head),
        base: git_ref(pr.base),
        open: pr.state == "open",
        draft: pr.draft.unwrap_or(false),
        merged: pr.merged.unwrap_or(false),
        labels: labels(pr.labels),
    }
}

/// A required `label` that is missing makes the payload malformed.
fn label_name(label: Option<p::Label<'_>>) -> Result<String, serde_json::Error> {
    label
        .map(|l| own(l.name))
        .ok_or_else(|| serde::de::Error::missing_field("label"))
}

fn parse_issues(act: &str, body: &[u8]) -> R {
    if !matches!(act, "labeled" | "unlabeled") {
        return Ok(None);
    }
    let v: p::IssuesPayload<'_> = serde_json::from_slice(body)?;
    let name = label_name(v.label)?;
    let action = if act == "labeled" {
        IssuesAction::Labeled(name)
    } else {
        IssuesAction::Unlabeled(name)
    };
    Ok(Some(Event::Issues(IssuesEvent {
        action,
        issue: issue(v.issue),
        repository: repo(v.repository),
        sender: account(v.sender),
        installation_id: v.installation.map(|i| i.id),
    })))
}

fn parse_issue_comment(act: &str, body: &[u8]) -> R {
    if !matches!(act, "created" | "edited" | "deleted") {
        return Ok(None);
    }
    let v: p::IssueCommentPayload<'_> = serde_json::from_slice(body)?;
    let action = match act {
        "created" => CommentAction::Created,
        "edited" => CommentAction::Edited {
            previous_body: v.changes.and_then(|c| c.body).and_then(|b| b.from).map(own),
        },
        _ => CommentAction::Deleted,
    };
    Ok(Some(Event::IssueComment(IssueCommentEvent {
        action,
        issue: issue(v.issue),
        comment: Comment {
            id: v.comment.id,
            body: own(v.comment.body),
            user: account(v.comment.user),
        },
        repository: repo(v.repository),
        sender: account(v.sender),
        installation_id: v.installation.map(|i| i.id),
    })))
}

fn parse_pull_request(act: &str, body: &[u8]) -> R {
    let simple = match act {
        "opened" => Some(PullRequestAction::Opened),
        "synchronize" => Some(PullRequestAction::Synchronize),
        "reopened" => Some(PullRequestAction::Reopened),
        "ready_for_review" => Some(PullRequestAction::ReadyForReview),
        "converted_to_draft" => Some(PullRequestAction::ConvertedToDraft),
        "edited" => Some(PullRequestAction::Edited),
        "closed" => Some(PullRequestAction::Closed),
        "labeled" | "unlabeled" => None,
        _ => return Ok(None),
    };
    let v: p::PullRequestEventPayload<'_> = serde_json::from_slice(body)?;
    let action = match simple {
        Some(a) => a,
        None if act == "labeled" => PullRequestAction::Labeled(label_name(v.label)?),
        None => PullRequestAction::Unlabeled(label_name(v.label)?),
    };
    Ok(Some(Event::PullRequest(PullRequestEvent {
        action,
        pull_request: pull_request(v.pull_request),
        repository: repo(v.repository),
        sender: account(v.sender),
        installation_id: v.installation.map(|i| i.id),
    })))
}

fn review_state(s: &str) -> Result<ReviewState, serde_json::Error> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "approved" => ReviewState::Approved,
        "changes_requested" => ReviewState::ChangesRequested,
        "commented" => ReviewState::Commented,
        "dismissed" => ReviewState::Dismissed,
        "pending" => ReviewState::Pending,
        _ => {
            return Err(serde::de::Error::unknown_variant(
                s,
                &[
                    "approved",
                    "changes_requested",
                    "commented",
                    "dismissed",
                    "pending",
                ],
            ));
        }
    })
}

fn parse_review(act: &str, body: &[u8]) -> R {
    let action = match act {
        "submitted" => ReviewAction::Submitted,
        "dismissed" => ReviewAction::Dismissed,
        "edited" => ReviewAction::Edited,
        _ => return Ok(None),
    };
    let v: p::ReviewEventPayload<'_> = serde_json::from_slice(body)?;
    Ok(Some(Event::PullRequestReview(PullRequestReviewEvent {
        action,
        review: Review {
            id: v.review.id,
            state: review_state(&v.review.state)?,
            user: account(v.review.user),
            commit_id: v.review.commit_id.map(own),
            body: v.review.body.map(own),
        },
        previous_body: v.changes.and_then(|c| c.body).and_then(|b| b.from).map(own),
        pull_request: pull_request(v.pull_request),
        repository: repo(v.repository),
        sender: account(v.sender),
        installation_id: v.installation.map(|i| i.id),
    })))
}

fn parse_review_comment(act: &str, body: &[u8]) -> R {
    if !matches!(act, "created" | "edited" | "deleted") {
        return Ok(None);
    }
    let v: p::ReviewCommentEventPayload<'_> = serde_json::from_slice(body)?;
    let action = match act {
        "created" => CommentAction::Created,
        "edited" => CommentAction::Edited {
            previous_body: v.changes.and_then(|c| c.body).and_then(|b| b.from).map(own),
        },
        _ => CommentAction::Deleted,
    };
    Ok(Some(Event::PullRequestReviewComment(ReviewCommentEvent {
        action,
        comment: ReviewComment {
            id: v.comment.id,
            body: v.comment.body.map(own).unwrap_or_default(),
            user: account(v.comment.user),
            commit_id: v.comment.original_commit_id.map(own),
        },
        pull_request: pull_request(v.pull_request),
        repository: repo(v.repository),
        sender: account(v.sender),
        installation_id: v.installation.map(|i| i.id),
    })))
}

/// `refs/heads/gh-readonly-queue/<base>/pr-<N>-<sha>` → `[N]`; anything else → `[]`.
pub fn merge_group_pull_requests(head_ref: &str) -> Vec<u64> {
    let Some(rest) = head_ref.strip_prefix("refs/heads/gh-readonly-queue/") else {
        return Vec::new();
    };
    let Some((_, last)) = rest.rsplit_once('/') else {
        return Vec::new();
    };
    last.strip_prefix("pr-")
        .and_then(|s| s.split_once('-'))
        .and_then(|(n, _)| n.parse().ok())
        .into_iter()
        .collect()
}

fn parse_merge_group(act: &str, body: &[u8]) -> R {
    let action = match act {
        "checks_requested" => MergeGroupAction::ChecksRequested,
        "destroyed" => MergeGroupAction::Destroyed,
        _ => return Ok(None),
    };
    let v: p::MergeGroupEventPayload<'_> = serde_json::from_slice(body)?;
    let mg = v.merge_group;
    Ok(Some(Event::MergeGroup(MergeGroupEvent {
        action,
        pull_requests: merge_group_pull_requests(&mg.head_ref),
        head_sha: own(mg.head_sha),
        head_ref: own(mg.head_ref),
        base_ref: own(mg.base_ref),
        repository: repo(v.repository),
        sender: v.sender.map(account),
        installation_id: v.installation.map(|i| i.id),
    })))
}

fn parse_check_run(act: &str, body: &[u8]) -> R {
    if !matches!(act, "rerequested" | "requested_action") {
        return Ok(None);
    }
    let v: p::CheckRunEventPayload<'_> = serde_json::from_slice(body)?;
    let action = if act == "rerequested" {
        CheckRunAction::Rerequested
    } else {
        let id = v
            .requested_action
            .map(|a| own(a.identifier))
            .ok_or_else(|| serde::de::Error::missing_field("requested_action"))?;
        CheckRunAction::RequestedAction(id)
    };
    let cr = v.check_run;
    Ok(Some(Event::CheckRun(CheckRunEvent {
        action,
        check_run_id: cr.id,
        name: own(cr.name),
        head_sha: own(cr.head_sha),
        app_id: cr.app.map(|a| a.id),
        pull_requests: cr.pull_requests.into_iter().map(|n| n.number).collect(),
        repository: repo(v.repository),
        sender: account(v.sender),
        installation_id: v.installation.map(|i| i.id),
    })))
}

fn installed(list: Option<Vec<p::RepoName<'_>>>) -> Vec<InstalledRepository> {
    list.unwrap_or_default()
        .into_iter()
        .map(|r| InstalledRepository {
            id: r.id,
            full_name: own(r.full_name),
        })
        .collect()
}

fn parse_installation(act: &str, body: &[u8]) -> R {
    let action = match act {
        "created" => InstallationAction::Created,
        "deleted" => InstallationAction::Deleted,
        "suspend" => InstallationAction::Suspend,
        "unsuspend" => InstallationAction::Unsuspend,
        "new_permissions_accepted" => InstallationAction::NewPermissionsAccepted,
        _ => return Ok(None),
    };
    let v: p::InstallationEventPayload<'_> = serde_json::from_slice(body)?;
    Ok(Some(Event::Installation(InstallationEvent {
        action,
        installation_id: v.installation.id,
        account: own(v.installation.account.login),
        repositories: installed(v.repositories),
        sender: account(v.sender),
    })))
}

fn parse_installation_repositories(act: &str, body: &[u8]) -> R {
    let action = match act {
        "added" => InstallationRepositoriesAction::Added,
        "removed" => InstallationRepositoriesAction::Removed,
        _ => return Ok(None),
    };
    let v: p::InstallationEventPayload<'_> = serde_json::from_slice(body)?;
    Ok(Some(Event::InstallationRepositories(
        InstallationRepositoriesEvent {
            action,
            installation_id: v.installation.id,
            account: own(v.installation.account.login),
            added: installed(v.repositories_added),
            removed: installed(v.repositories_removed),
            sender: account(v.sender),
        },
    )))
}

#[cfg(test)]
mod tests;
