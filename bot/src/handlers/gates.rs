//! Pull-request events, reviews, merge-queue requests and re-run requests of our check all
//! end at the pull request's ApprovalGate: created (or updated) by server-side apply from the
//! pull request in the payload, or nudged by annotation when the payload has no pull request.
//! Evaluating the gate is the controller's job; here the right object is touched, idempotently.
//!
//! Bots' pull requests get gates too (their changes need approval like anyone's), and so do
//! Countersign's own AI pull requests — the own-bot rule applies to triggers, not to gates.
//!
//! Some facts only a webhook carries are written onto the gate for the controller, as
//! annotations (read-modify-write with the resource version): who pushed
//! (`pull_request.synchronize` senders, [`PUSHERS_ANNOTATION`]), and which inline review
//! comments and review bodies someone other than their author edited
//! ([`TAMPERED_COMMENTS_ANNOTATION`]).

use std::collections::BTreeMap;

use countersign_crds::keys::{
    BOT_FIELD_MANAGER, CommentRef, LAST_DELIVERY_ANNOTATION, MERGE_GROUP_SHA_ANNOTATION,
    PUSHED_HEADS_ANNOTATION, PUSHERS_ANNOTATION, REVIEW_BODIES_ANNOTATION,
    TAMPERED_COMMENTS_ANNOTATION, pushed_heads_value, pushers_value, review_bodies_value,
    tampered_value,
};
use countersign_crds::{AgentRun, ApprovalGate, Project};
use countersign_webhooks::github::event::{
    CheckRunEvent, CommentAction, DeliveryId, MergeGroupEvent, PullRequest, PullRequestAction,
    PullRequestEvent, PullRequestReviewEvent, Repository, ReviewAction, ReviewCommentEvent,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::{HandleError, Handled, Handler, Ignored, Outcome, nudge};
use crate::objects::{self, AGENT_BRANCH_PREFIX};

/// The name of Countersign's one required check.
pub const CHECK_NAME: &str = "countersign/approval";

/// Attempts at a read-modify-write of a gate's annotations when others write at once.
const GATE_WRITE_ATTEMPTS: u32 = 5;

impl Handler {
    /// Handles `pull_request`. A push (`synchronize`) also records its sender as a pusher,
    /// whatever names the pushed commits carry.
    pub(crate) async fn on_pull_request(
        &self,
        delivery: &DeliveryId,
        e: &PullRequestEvent,
    ) -> Handled {
        // The pusher is on the gate before the gate is told about the push, so no
        // evaluation of the new head misses it.
        let push = matches!(
            e.action,
            PullRequestAction::Opened
                | PullRequestAction::Reopened
                | PullRequestAction::Synchronize
        );
        let owner = self.owner_of(&e.repository).filter(|_| push);
        if let Some(project) = &owner {
            self.record_push(project, e, delivery).await?;
        }
        let outcomes = self
            .apply_gates(delivery, &e.repository, &e.pull_request)
            .await?;
        if let Some(project) = &owner {
            // A gate created just now by this very event records its push too.
            self.record_push(project, e, delivery).await?;
        }
        Ok(outcomes)
    }

    /// Records the head this event's push brought, and for a `synchronize` who pushed it.
    async fn record_push(
        &self,
        project: &Project,
        e: &PullRequestEvent,
        delivery: &DeliveryId,
    ) -> Result<bool, HandleError> {
        let (id, login) = (e.sender.id, e.sender.login.clone());
        let head = e.pull_request.head.sha.clone();
        let pushed = e.action == PullRequestAction::Synchronize;
        self.update_gate_annotations(project, e.pull_request.number, delivery, |a| {
            let mut changes = Vec::new();
            if pushed && let Some(v) = pushers_value(a, id, &login) {
                changes.push((PUSHERS_ANNOTATION, v));
            }
            if let Some(v) = pushed_heads_value(a, &head) {
                changes.push((PUSHED_HEADS_ANNOTATION, v));
            }
            (!changes.is_empty()).then_some(changes)
        })
        .await
    }

    /// Handles `pull_request_review`. An edit of the review's body by someone other than the
    /// reviewer is recorded as tampering (commands in review bodies count like comments).
    pub(crate) async fn on_review(
        &self,
        delivery: &DeliveryId,
        e: &PullRequestReviewEvent,
    ) -> Handled {
        let number = e.pull_request.number;
        let tampering = e.action == ReviewAction::Edited && e.sender.id != e.review.user.id;
        // Recorded before the gate is nudged, so no evaluation counts the forged body.
        if tampering {
            self.mark_tampered(
                &e.repository,
                number,
                CommentRef::review(e.review.id),
                delivery,
            )
            .await?;
        }
        let mut outcomes = self
            .apply_gates(delivery, &e.repository, &e.pull_request)
            .await?;
        if tampering {
            outcomes.extend(
                self.mark_tampered(
                    &e.repository,
                    number,
                    CommentRef::review(e.review.id),
                    delivery,
                )
                .await?,
            );
        }
        let body = e.review.body.as_deref().unwrap_or_default();
        let decides = countersign_policies::commands::parse_comment(body)
            .iter()
            .any(|p| {
                matches!(p, countersign_policies::commands::Parsed::Command(c)
                if c.kind() == countersign_policies::commands::CommandKind::Approval)
            });
        if e.action == ReviewAction::Submitted
            && decides
            && let Some(project) = self.owner_of(&e.repository)
        {
            let (id, digest) = (e.review.id, countersign_github::body_digest(body));
            self.update_gate_annotations(&project, number, delivery, |a| {
                Some(vec![(
                    REVIEW_BODIES_ANNOTATION,
                    review_bodies_value(a, id, &digest),
                )])
            })
            .await?;
        }
        Ok(outcomes)
    }

    /// Handles `pull_request_review_comment`: inline comments may hold commands, so every
    /// change nudges the gate; an edit by someone other than the author is tampering.
    pub(crate) async fn on_review_comment(
        &self,
        delivery: &DeliveryId,
        e: &ReviewCommentEvent,
    ) -> Handled {
        let number = e.pull_request.number;
        let reference = CommentRef::review_comment(e.comment.id);
        let tampering =
            matches!(e.action, CommentAction::Edited { .. }) && e.sender.id != e.comment.user.id;
        // Recorded before the gate is nudged, so no evaluation counts the forged command.
        if tampering {
            self.mark_tampered(&e.repository, number, reference, delivery)
                .await?;
        }
        let mut outcomes = self
            .apply_gates(delivery, &e.repository, &e.pull_request)
            .await?;
        if tampering {
            outcomes.extend(
                self.mark_tampered(&e.repository, number, reference, delivery)
                    .await?,
            );
        }
        Ok(outcomes)
    }

    /// The Project managing the repository, if any.
    pub(crate) fn owner_of(&self, repository: &Repository) -> Option<super::ProjectRef> {
        self.projects
            .for_repository(&repository.owner, &repository.name)
    }

    /// Records on the gate of pull request `number` that `comment` was edited by someone
    /// other than its author (which also nudges the gate to look again).
    pub(crate) async fn mark_tampered(
        &self,
        repository: &Repository,
        number: u64,
        comment: CommentRef,
        delivery: &DeliveryId,
    ) -> Handled {
        let Some(project) = self.owner_of(repository) else {
            return Ok(vec![Outcome::Ignored(Ignored::NoProject)]);
        };
        let marked = self
            .update_gate_annotations(&project, number, delivery, |a| {
                Some(vec![(
                    TAMPERED_COMMENTS_ANNOTATION,
                    tampered_value(a, comment),
                )])
            })
            .await?;
        let name = countersign_crds::names::gate_name(&project.name_any(), number);
        Ok(vec![if marked {
            Outcome::Nudged {
                kind: "ApprovalGate",
                name,
            }
        } else {
            Outcome::Ignored(Ignored::NoGate)
        }])
    }

    /// Read-modify-writes annotations of the gate of pull request `number` (with its
    /// resource version, retried on conflicts): `edit` says what to set given the current
    /// annotations (`None`: nothing to change). The delivery is recorded too, nudging the
    /// controller. `Ok(false)` when there is no gate.
    pub(crate) async fn update_gate_annotations(
        &self,
        project: &Project,
        number: u64,
        delivery: &DeliveryId,
        edit: impl Fn(&BTreeMap<String, String>) -> Option<Vec<(&'static str, String)>>,
    ) -> Result<bool, HandleError> {
        let api: Api<ApprovalGate> = self.api(project);
        let name = countersign_crds::names::gate_name(&project.name_any(), number);
        for _ in 0..GATE_WRITE_ATTEMPTS {
            let Some(gate) = api.get_opt(&name).await? else {
                return Ok(false);
            };
            let Some(changes) = edit(gate.annotations()) else {
                return Ok(true);
            };
            let mut annotations: BTreeMap<&str, String> = changes.into_iter().collect();
            annotations.insert(LAST_DELIVERY_ANNOTATION, delivery.to_string());
            let patch = serde_json::json!({ "metadata": {
                "resourceVersion": gate.resource_version(),
                "annotations": annotations,
            }});
            let params = PatchParams {
                field_manager: Some(BOT_FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            match api.patch(&name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(false),
                Err(err) => return Err(err.into()),
            }
        }
        Err(HandleError::Conflict { name })
    }

    /// Handles `merge_group`: the gates of the queued pull requests are nudged with the
    /// merge-group commit that needs a conclusion.
    pub(crate) async fn on_merge_group(
        &self,
        delivery: &DeliveryId,
        e: &MergeGroupEvent,
    ) -> Handled {
        let extra = [(MERGE_GROUP_SHA_ANNOTATION, e.head_sha.as_str())];
        self.nudge_pull_requests(delivery, &e.repository, &e.pull_requests, &extra)
            .await
    }

    /// Handles `check_run`: a re-run of our check re-evaluates the gate; others are ignored.
    pub(crate) async fn on_check_run(&self, delivery: &DeliveryId, e: &CheckRunEvent) -> Handled {
        let ours = e.name == CHECK_NAME && e.app_id.is_none_or(|id| id == self.github.app_id());
        if !ours {
            return Ok(vec![Outcome::Ignored(Ignored::OtherCheck)]);
        }
        self.nudge_pull_requests(delivery, &e.repository, &e.pull_requests, &[])
            .await
    }

    async fn apply_gates(
        &self,
        delivery: &DeliveryId,
        repository: &Repository,
        pr: &PullRequest,
    ) -> Handled {
        let Some(project) = self.owner_of(repository) else {
            return Ok(vec![Outcome::Ignored(Ignored::NoProject)]);
        };
        Ok(vec![
            self.apply_gate(delivery, repository, &project, pr).await?,
        ])
    }

    async fn apply_gate(
        &self,
        delivery: &DeliveryId,
        repository: &Repository,
        project: &Project,
        pr: &PullRequest,
    ) -> Result<Outcome, HandleError> {
        let run = match pr.head.branch.strip_prefix(AGENT_BRANCH_PREFIX) {
            Some(name) if !name.is_empty() && kube_name(name) => {
                let runs: Api<AgentRun> = self.api(project);
                runs.get_opt(name).await?.map(|r| r.name_any())
            }
            _ => None,
        };
        let origin = objects::origin(pr, &repository.full_name(), &self.bot_login, |name| {
            run.as_deref() == Some(name)
        });
        let gate = objects::desired_gate(project, pr, &origin, delivery);
        let api: Api<ApprovalGate> = self.api(project);
        let name = gate.name_any();
        api.patch(
            &name,
            &PatchParams::apply(BOT_FIELD_MANAGER).force(),
            &Patch::Apply(&gate),
        )
        .await?;
        Ok(Outcome::GateApplied {
            namespace: project.namespace().unwrap_or_default(),
            name,
        })
    }

    async fn nudge_pull_requests(
        &self,
        delivery: &DeliveryId,
        repository: &Repository,
        numbers: &[u64],
        extra: &[(&str, &str)],
    ) -> Handled {
        let Some(project) = self.owner_of(repository) else {
            return Ok(vec![Outcome::Ignored(Ignored::NoProject)]);
        };
        let mut outcomes = Vec::new();
        let api: Api<ApprovalGate> = self.api(&project);
        for number in numbers {
            let name = countersign_crds::names::gate_name(&project.name_any(), *number);
            outcomes.push(if nudge(&api, &name, delivery, extra).await? {
                Outcome::Nudged {
                    kind: "ApprovalGate",
                    name,
                }
            } else {
                Outcome::Ignored(Ignored::NoGate)
            });
        }
        if outcomes.is_empty() {
            outcomes.push(Outcome::Ignored(Ignored::NoGate));
        }
        Ok(outcomes)
    }
}

/// Whether `name` could be a Kubernetes object name (so a branch like `countersign/../x`
/// never turns into an API path).
fn kube_name(name: &str) -> bool {
    name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !name.contains("..")
}
