//! The resync's decisions, without IO: what to do about a labelled issue without a run, when
//! a handled labeling is settled, how a delivery is rebuilt from GitHub's answers and named,
//! and how long to wait between passes.

use std::time::Duration;

use countersign_github::authz::Denial;
use countersign_github::issues::current_labeling;
use countersign_github::{Actor, IssueEvent, IssueInfo, PullInfo, PullState};
use countersign_webhooks::github::event::{
    Account, AccountKind, DeliveryId, GitRef, Issue, PullRequest, Repository,
};
use jiff::Timestamp;

use super::JITTER;
use crate::handlers::{Ignored, Outcome};

/// Why a labelled issue without a run gets none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// The labeler may not start runs here (answered on the issue, as a delivery would be).
    Denied(Denial),
    /// Handling the labeling created nothing, for this reason.
    Ignored(Ignored),
    /// GitHub shows no `labeled` event for the label, so nobody can be authorised.
    NoLabelEvent,
    /// The labeler's account was deleted, so nobody can be authorised.
    DeletedLabeler,
    /// Labelled before the Project existed: its delivery would have found no Project.
    LabeledBeforeProject,
}

impl SkipReason {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Denied(_) => "denied",
            Self::Ignored(_) => "ignored",
            Self::NoLabelEvent => "no_label_event",
            Self::DeletedLabeler => "deleted_labeler",
            Self::LabeledBeforeProject => "labeled_before_project",
        }
    }
}

/// The first wait: a random fraction (`unit`, in `[0, 1)`) of [`JITTER`] of the interval.
pub fn first_wait(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(JITTER * unit.clamp(0.0, 1.0))
}

/// The wait between passes: the interval, give or take [`JITTER`] of it (`unit` in `[0, 1)`
/// picks where).
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

/// What to do about an open issue with a trigger label and no run of the label's Agent.
#[derive(Debug, PartialEq, Eq)]
pub enum IssueDecision<'a> {
    /// Handle the labeling as its `issues.labeled` delivery.
    Recover {
        /// The event that put the label on.
        event: &'a IssueEvent,
        /// Who did.
        labeler: &'a Account,
    },
    /// Decided in an earlier pass (the same labeling): nothing new to do.
    Settled,
    /// Leave it without a run.
    Skip {
        /// Why.
        reason: SkipReason,
        /// The labeling decided on, remembered so later passes stay quiet.
        labeling: Option<u64>,
    },
}

/// Decides about an issue carrying `label` that has no run of the label's Agent, from the
/// issue's events, the Project's creation time and what an earlier pass decided (`settled`:
/// the labeled event's id, `Some(None)` when it found none).
pub fn decide_issue<'a>(
    events: &'a [IssueEvent],
    label: &str,
    project_created: Option<Timestamp>,
    settled: Option<Option<u64>>,
) -> IssueDecision<'a> {
    let current = current_labeling(events, label);
    let labeling = current.map(|e| e.id);
    if settled == Some(labeling) {
        return IssueDecision::Settled;
    }
    let skip = |reason| IssueDecision::Skip { reason, labeling };
    let Some(event) = current else {
        return skip(SkipReason::NoLabelEvent);
    };
    if project_created.is_some_and(|created| event.created_at < created) {
        return skip(SkipReason::LabeledBeforeProject);
    }
    match &event.actor {
        Some(labeler) => IssueDecision::Recover { event, labeler },
        None => skip(SkipReason::DeletedLabeler),
    }
}

/// Why handling a recovered labeling left the issue without a run, when it is final for this
/// labeling (`None`: a run exists now, or the next pass should try again).
pub fn refusal(outcomes: &[Outcome]) -> Option<SkipReason> {
    let mut reason = None;
    for outcome in outcomes {
        match outcome {
            Outcome::RunCreated { .. } | Outcome::RunExists { .. } => return None,
            Outcome::Ignored(Ignored::NoInstallation | Ignored::AlreadyRunning(_)) => return None,
            Outcome::Denied(denial) => reason = Some(SkipReason::Denied(denial.clone())),
            Outcome::Ignored(why) => {
                reason.get_or_insert_with(|| SkipReason::Ignored(why.clone()));
            }
            _ => {}
        }
    }
    reason
}

/// The issue as an `issues` delivery carries it.
pub fn issue_of(info: &IssueInfo) -> Issue {
    Issue {
        number: info.number,
        title: info.title.clone(),
        body: info.body.clone(),
        user: info.author.clone(),
        labels: info.labels.clone(),
        open: info.open,
        is_pull_request: info.is_pull_request,
    }
}

/// The account as deliveries name it.
pub fn account_of(actor: &Actor) -> Account {
    Account {
        id: actor.id,
        login: actor.login.clone(),
        kind: if actor.is_bot {
            AccountKind::Bot
        } else {
            AccountKind::User
        },
    }
}

/// The pull request as a `pull_request` delivery carries it; `base_full_name` is the
/// repository's `owner/name`.
pub fn pull_request_of(pr: &PullInfo, base_full_name: &str) -> PullRequest {
    PullRequest {
        number: pr.number,
        title: pr.title.clone(),
        user: account_of(&pr.author),
        head: GitRef {
            branch: pr.head_ref.clone(),
            sha: pr.head_sha.clone(),
            repo_full_name: pr.head_repo.clone(),
        },
        base: GitRef {
            branch: pr.base_ref.clone(),
            sha: pr.base_sha.clone(),
            repo_full_name: Some(base_full_name.to_owned()),
        },
        open: pr.state == PullState::Open,
        draft: pr.draft,
        merged: pr.merged,
        labels: pr.labels.clone(),
    }
}

/// The id of the delivery standing in for the lost `issues.labeled` one: the labeled event's
/// (GitHub's event ids are unique), so every pass and replica names it alike.
pub fn labeled_delivery_id(event: &IssueEvent) -> DeliveryId {
    DeliveryId(format!("resync/issue-event/{}", event.id))
}

/// The id of the delivery standing in for the lost `pull_request.opened` one.
pub fn opened_delivery_id(repository: &Repository, pr: &PullInfo) -> DeliveryId {
    DeliveryId(format!(
        "resync/{}/pull/{}/{}",
        repository.full_name(),
        pr.number,
        pr.head_sha
    ))
}

#[cfg(test)]
mod tests;
