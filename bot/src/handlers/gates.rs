//! Pull-request events, reviews, merge-queue requests and re-run requests of our check all
//! end at the pull request's ApprovalGate: created (or updated) by server-side apply from the
//! pull request in the payload, or nudged by annotation when the payload has no pull request.
//! Evaluating the gate is the controller's job; here the right object is touched, idempotently.
//!
//! Bots' pull requests get gates too (their changes need approval like anyone's), and so do
//! Countersign's own AI pull requests — the own-bot rule applies to triggers, not to gates.

use countersign_crds::keys::{BOT_FIELD_MANAGER, MERGE_GROUP_SHA_ANNOTATION};
use countersign_crds::{AgentRun, ApprovalGate, Project};
use countersign_webhooks::github::event::{
    CheckRunEvent, DeliveryId, MergeGroupEvent, PullRequest, PullRequestEvent,
    PullRequestReviewEvent, Repository,
};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::{HandleError, Handled, Handler, Ignored, Outcome, nudge};
use crate::objects::{self, AGENT_BRANCH_PREFIX};

/// The name of Countersign's one required check.
pub const CHECK_NAME: &str = "countersign/approval";

impl Handler {
    /// Handles `pull_request`.
    pub(crate) async fn on_pull_request(
        &self,
        delivery: &DeliveryId,
        e: &PullRequestEvent,
    ) -> Handled {
        self.apply_gates(delivery, &e.repository, &e.pull_request)
            .await
    }

    /// Handles `pull_request_review`.
    pub(crate) async fn on_review(
        &self,
        delivery: &DeliveryId,
        e: &PullRequestReviewEvent,
    ) -> Handled {
        self.apply_gates(delivery, &e.repository, &e.pull_request)
            .await
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
        let projects = self
            .projects
            .for_repository(&repository.owner, &repository.name);
        if projects.is_empty() {
            return Ok(vec![Outcome::Ignored(Ignored::NoProject)]);
        }
        let mut outcomes = Vec::new();
        for project in &projects {
            outcomes.push(self.apply_gate(delivery, repository, project, pr).await?);
        }
        Ok(outcomes)
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
        let projects = self
            .projects
            .for_repository(&repository.owner, &repository.name);
        if projects.is_empty() {
            return Ok(vec![Outcome::Ignored(Ignored::NoProject)]);
        }
        let mut outcomes = Vec::new();
        for project in &projects {
            let api: Api<ApprovalGate> = self.api(project);
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
