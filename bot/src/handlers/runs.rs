//! Starting, cancelling and retrying AgentRuns for an issue — shared by trigger labels and
//! comment commands. Every start is authorised first and idempotent per delivery: the run
//! records the delivery that created it, and names are deterministic per
//! (Project, issue, Agent, ordinal).

use countersign_crds::keys::{
    AGENT_LABEL, CREATED_BY_DELIVERY_ANNOTATION, ISSUE_LABEL, PROJECT_LABEL,
};
use countersign_crds::names::label_value;
use countersign_crds::{AgentRun, Project, RunPhase};
use countersign_webhooks::github::event::{Account, DeliveryId, Repository};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use super::{HandleError, Handler, Ignored, Outcome};
use crate::objects::{self, RunRequest};
use countersign_github::InstallationClient;
use countersign_github::authz::{self, Denial};

/// Attempts at finding a free ordinal when concurrent deliveries race for names.
const NAME_ATTEMPTS: u32 = 5;

/// Where the request came from, to answer a denial in the right place.
#[derive(Clone, Copy)]
pub(crate) struct Asker<'a> {
    /// The installation client.
    pub github: &'a InstallationClient,
    /// The repository.
    pub repository: &'a Repository,
    /// The issue.
    pub number: u64,
    /// The person.
    pub account: &'a Account,
    /// The comment that asked, if it was a command.
    pub comment: Option<u64>,
}

/// Whether a run is still working (or waiting on humans) rather than finished.
pub(crate) fn is_active(run: &AgentRun) -> bool {
    !run.status.as_ref().is_some_and(|s| s.phase.is_finished()) && !run.spec.cancel_requested
}

impl Handler {
    /// Decides whether the asker may start or steer runs on `project`. A denial is answered
    /// visibly (rate-limited) unless it is about a bot, which gets no reply at all.
    pub(crate) async fn authorize_trigger(
        &self,
        project: &Project,
        asker: &Asker<'_>,
    ) -> Result<Result<(), Denial>, HandleError> {
        let triggers = &project.spec.triggers;
        if let Err(denial) = authz::check_actor(asker.account, &self.bot_login, triggers) {
            return Ok(Err(denial));
        }
        let facts = self
            .authorizer
            .trigger_facts(asker.github, project, asker.account)
            .await?;
        if let Err(denial) = authz::check_trigger(asker.account, &facts, triggers) {
            self.reply(asker, denial.label(), &denial.explain(&asker.account.login))
                .await;
            return Ok(Err(denial));
        }
        Ok(Ok(()))
    }

    /// The runs of `project` on issue `number`, oldest first.
    pub(crate) async fn runs_for_issue(
        &self,
        project: &Project,
        number: u64,
    ) -> Result<Vec<AgentRun>, HandleError> {
        let api: Api<AgentRun> = self.api(project);
        let selector = format!(
            "{PROJECT_LABEL}={},{ISSUE_LABEL}={number}",
            label_value(&project.name_any())
        );
        let mut runs = api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items;
        runs.sort_by(|a, b| {
            (&a.metadata.creation_timestamp, &a.metadata.name)
                .cmp(&(&b.metadata.creation_timestamp, &b.metadata.name))
        });
        Ok(runs)
    }

    /// Creates the run `request` asks for, unless this delivery already created one or a run
    /// of the same Agent is still active on the issue.
    pub(crate) async fn create_run(
        &self,
        request: &RunRequest<'_>,
    ) -> Result<Outcome, HandleError> {
        let project = request.project;
        let api: Api<AgentRun> = self.api(project);
        let key = request.assignee.key();
        let agent_label = label_value(&key);
        let mut taken = Vec::new();
        for _ in 0..NAME_ATTEMPTS {
            let runs = self.runs_for_issue(project, request.issue.number).await?;
            if let Some(done) = created_by(&runs, request.delivery) {
                return Ok(Outcome::RunExists { name: done });
            }
            let same_agent: Vec<&AgentRun> = runs
                .iter()
                .filter(|r| r.labels().get(AGENT_LABEL) == Some(&agent_label))
                .collect();
            if let Some(active) = same_agent.iter().find(|r| is_active(r)) {
                return Ok(Outcome::Ignored(Ignored::AlreadyRunning(active.name_any())));
            }
            let name = free_name(
                &runs,
                &taken,
                &project.name_any(),
                request.issue.number,
                &key,
            );
            let run = objects::desired_run(request, &name);
            match api.create(&PostParams::default(), &run).await {
                Ok(created) => {
                    return Ok(Outcome::RunCreated {
                        namespace: created.namespace().unwrap_or_default(),
                        name: created.name_any(),
                    });
                }
                // Someone (a concurrent delivery, another bot replica, or kubectl with an
                // unlabelled object) took the name between our list and create: look again.
                Err(kube::Error::Api(status)) if status.code == 409 => taken.push(name),
                Err(e) => return Err(e.into()),
            }
        }
        Err(HandleError::NoFreeName {
            issue: request.issue.number,
        })
    }

    /// Asks every active run on the issue (of `agent`, or of any Agent) to stop.
    pub(crate) async fn cancel_runs(
        &self,
        project: &Project,
        number: u64,
        agent: Option<&str>,
    ) -> Result<Outcome, HandleError> {
        let api: Api<AgentRun> = self.api(project);
        let agent_label = agent.map(label_value);
        let mut names = Vec::new();
        for run in self.runs_for_issue(project, number).await? {
            let matches_agent = agent_label
                .as_ref()
                .is_none_or(|a| run.labels().get(AGENT_LABEL) == Some(a));
            if !matches_agent || !is_active(&run) {
                continue;
            }
            let patch = serde_json::json!({ "spec": { "cancelRequested": true } });
            let params = PatchParams {
                field_manager: Some(countersign_crds::keys::BOT_FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            };
            match api
                .patch(&run.name_any(), &params, &Patch::Merge(&patch))
                .await
            {
                Ok(_) => names.push(run.name_any()),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(if names.is_empty() {
            Outcome::Ignored(Ignored::NothingToDo("cancel"))
        } else {
            Outcome::RunsCancelled { names }
        })
    }

    /// Starts the most recent unsuccessful run on the issue again, as a new run.
    pub(crate) async fn retry_run(
        &self,
        project: &Project,
        number: u64,
        delivery: &DeliveryId,
        comment: u64,
        asked_by: &Account,
    ) -> Result<Outcome, HandleError> {
        let api: Api<AgentRun> = self.api(project);
        let mut taken = Vec::new();
        for _ in 0..NAME_ATTEMPTS {
            let runs = self.runs_for_issue(project, number).await?;
            if let Some(done) = created_by(&runs, delivery) {
                return Ok(Outcome::RunExists { name: done });
            }
            if let Some(active) = runs.iter().find(|r| is_active(r)) {
                return Ok(Outcome::Ignored(Ignored::AlreadyRunning(active.name_any())));
            }
            let Some(previous) = runs.iter().rev().find(|r| {
                r.status.as_ref().is_some_and(|s| {
                    matches!(
                        s.phase,
                        RunPhase::Failed | RunPhase::TimedOut | RunPhase::Cancelled
                    )
                }) || r.spec.cancel_requested
            }) else {
                return Ok(Outcome::Ignored(Ignored::NothingToDo("retry")));
            };
            let agent = previous.spec.assignee().key();
            let name = free_name(&runs, &taken, &project.name_any(), number, &agent);
            let run = objects::retried_run(previous, project, &name, delivery, comment, asked_by);
            match api.create(&PostParams::default(), &run).await {
                Ok(created) => {
                    return Ok(Outcome::RunCreated {
                        namespace: created.namespace().unwrap_or_default(),
                        name: created.name_any(),
                    });
                }
                Err(kube::Error::Api(status)) if status.code == 409 => taken.push(name),
                Err(e) => return Err(e.into()),
            }
        }
        Err(HandleError::NoFreeName { issue: number })
    }
}

/// The run this delivery created, if any.
fn created_by(runs: &[AgentRun], delivery: &DeliveryId) -> Option<String> {
    runs.iter()
        .find(|r| {
            r.annotations()
                .get(CREATED_BY_DELIVERY_ANNOTATION)
                .map(String::as_str)
                == Some(delivery.as_str())
        })
        .map(ResourceExt::name_any)
}

/// The first run name for (project, issue, agent) not taken by a listed run or by a name
/// that already conflicted.
fn free_name(
    runs: &[AgentRun],
    taken: &[String],
    project: &str,
    issue: u64,
    agent: &str,
) -> String {
    (1..u32::MAX)
        .map(|ordinal| objects::run_name(project, issue, agent, ordinal))
        .find(|name| !taken.contains(name) && !runs.iter().any(|r| r.name_any() == *name))
        .unwrap_or_else(|| objects::run_name(project, issue, agent, u32::MAX))
}
