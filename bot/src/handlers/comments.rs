//! `issue_comment`: comment commands (`/countersign run`, `/countersign plan`, `/cancel`,
//! `/retry` steer runs; `/approve`, `/reject`, `/hold`, `/unhold` nudge the pull request's
//! gate or a run's plan;
//! `/risk`, `/help` answer). Commands are parsed as Markdown by [`crate::commands`]; on an
//! edit only commands the edit added run, and only when the author edited their own comment.
//!
//! A comment with a decision command on a pull request is bound to the head the pull request
//! had when the bot received it: the bot reads the head right away and records it on the gate
//! ([`COMMAND_HEADS_ANNOTATION`]). GitHub records no head for issue comments, and commit dates
//! can be forged, so the gate counts a comment the bot never received for no head.

use countersign_crds::keys::{
    COMMAND_HEADS_ANNOTATION, CommentRef, LAST_COMMAND_ANNOTATION, command_heads_value,
};
use countersign_crds::{Agent, AgentRun, ApprovalGate, Project, RunPhase, TaskSource};
use countersign_webhooks::github::event::{CommentAction, DeliveryId, IssueCommentEvent};
use kube::{Api, ResourceExt};

use super::runs::Asker;
use super::{HandleError, Handled, Handler, Ignored, Outcome, nudge};
use countersign_github::authz::{self, Denial};
use countersign_github::{InstallationClient, Reaction};
use countersign_policies::commands::MAX_COMMANDS_PER_COMMENT;
use countersign_policies::commands::{self, Command, CommandKind, Parsed};

use crate::objects::RunRequest;

impl Handler {
    /// Handles `issue_comment`.
    pub(crate) async fn on_comment(&self, delivery: &DeliveryId, e: &IssueCommentEvent) -> Handled {
        if authz::is_own_bot(&e.comment.user, &self.bot_login)
            || authz::is_own_bot(&e.sender, &self.bot_login)
        {
            return Ok(vec![Outcome::Ignored(Ignored::OwnBot)]);
        }
        // Commands go to the one Project managing the repository.
        let Some(project) = self.owner_of(&e.repository) else {
            return Ok(vec![Outcome::Ignored(Ignored::NoProject)]);
        };
        let project = &project;
        let parsed = match &e.action {
            CommentAction::Created => commands::parse_comment(&e.comment.body),
            CommentAction::Edited { previous_body } => {
                if e.sender.id != e.comment.user.id {
                    // Someone edited another person's comment: never run what they wrote,
                    // but let the gate re-read the comments and record the tampering.
                    let mut outcomes = if e.issue.is_pull_request {
                        self.mark_tampered(
                            &e.repository,
                            e.issue.number,
                            CommentRef::issue(e.comment.id),
                            delivery,
                        )
                        .await?
                    } else {
                        Vec::new()
                    };
                    outcomes.push(Outcome::Ignored(Ignored::EditedBySomeoneElse));
                    return Ok(outcomes);
                }
                commands::new_commands(previous_body.as_deref(), &e.comment.body)
            }
            CommentAction::Deleted => {
                // A deleted approval comment no longer counts: let the gate look again.
                return self.nudge_gate(project, e, delivery).await;
            }
        };
        if parsed.is_empty() {
            return Ok(vec![Outcome::Ignored(Ignored::NoCommands)]);
        }
        if let Err(denial) = authz::check_actor(&e.sender, &self.bot_login, &project.spec.triggers)
        {
            return Ok(vec![Outcome::Denied(denial)]);
        }
        let Some(github) = self.installation(e.installation_id, project).await? else {
            return Ok(vec![Outcome::Ignored(Ignored::NoInstallation)]);
        };
        let decides = parsed
            .iter()
            .any(|p| matches!(p, Parsed::Command(c) if c.kind() == CommandKind::Approval));
        if decides && e.issue.is_pull_request && e.action == CommentAction::Created {
            // Bound to the head now, before anything else happens.
            self.record_receipt(&github, project, e, delivery).await?;
        }
        let mut outcomes = Vec::new();
        for parsed in parsed.into_iter().take(MAX_COMMANDS_PER_COMMENT) {
            let outcome = match parsed {
                Parsed::Command(command) => {
                    self.run_command(&github, project, e, delivery, command)
                        .await?
                }
                Parsed::Invalid { text, problem } => {
                    let answer = format!(
                        "@{} I could not read `{}`: {problem}. Say `/help` for the commands.",
                        e.sender.login,
                        text.trim()
                    );
                    self.answer(&github, e, "invalid", &answer).await
                }
            };
            outcomes.push(outcome);
        }
        Ok(outcomes)
    }

    /// Records on the pull request's gate the head it has now, as the head comment
    /// `e.comment` was received at.
    async fn record_receipt(
        &self,
        github: &InstallationClient,
        project: &Project,
        e: &IssueCommentEvent,
        delivery: &DeliveryId,
    ) -> Result<(), HandleError> {
        let repo = &e.repository;
        let pr = github
            .pull_request(&repo.owner, &repo.name, e.issue.number)
            .await?;
        let (id, sha) = (e.comment.id, pr.head_sha);
        let recorded = self
            .update_gate_annotations(project, e.issue.number, delivery, |a| {
                Some(vec![(
                    COMMAND_HEADS_ANNOTATION,
                    command_heads_value(a, id, &sha),
                )])
            })
            .await?;
        if !recorded {
            tracing::info!(
                number = e.issue.number,
                "no gate yet to record the comment's head on; its decision will not count"
            );
        }
        Ok(())
    }

    async fn run_command(
        &self,
        github: &InstallationClient,
        project: &Project,
        e: &IssueCommentEvent,
        delivery: &DeliveryId,
        command: Command,
    ) -> Result<Outcome, HandleError> {
        let asker = Asker {
            github,
            repository: &e.repository,
            number: e.issue.number,
            account: &e.sender,
            comment: Some(e.comment.id),
        };
        let outcome = match &command {
            Command::Run {
                agent,
                instructions,
                breakdown,
            } => {
                if e.issue.is_pull_request {
                    let text = format!(
                        "`/countersign {}` works on issues; open an issue for the task and run it there.",
                        command.name()
                    );
                    return Ok(self.answer(github, e, "run-on-pr", &text).await);
                }
                if let Err(denial) = self.authorize_trigger(project, &asker).await? {
                    return Ok(Outcome::Denied(denial));
                }
                if !project.spec.triggers.maps_agent(agent.as_str()) {
                    let text = format!(
                        "This repository's Project does not let comments start the Agent `{}`. {}",
                        agent.as_str(),
                        mapped_agents_sentence(project)
                    );
                    self.answer(github, e, "unmapped-agent", &text).await;
                    return Ok(Outcome::Ignored(Ignored::UnmappedAgent(
                        agent.as_str().to_owned(),
                    )));
                }
                let agents: Api<Agent> = self.api(project);
                if agents.get_opt(agent.as_str()).await?.is_none() {
                    let text = format!(
                        "There is no Agent `{}` for this repository. {}",
                        agent.as_str(),
                        self.available_agents(project).await?
                    );
                    self.answer(github, e, "unknown-agent", &text).await;
                    return Ok(Outcome::Ignored(Ignored::UnknownAgent(
                        agent.as_str().to_owned(),
                    )));
                }
                let request = RunRequest {
                    project,
                    assignee: countersign_crds::project::Assignee::Agent(agent.as_str()),
                    issue: &e.issue,
                    requested_by: &e.sender,
                    source: TaskSource::Comment,
                    mode: None,
                    breakdown: *breakdown,
                    instructions: instructions.as_deref(),
                    delivery,
                    comment_id: Some(e.comment.id),
                };
                self.create_run(&request).await?
            }
            Command::Answer { text } => {
                // Steering a run is for whoever may start one on this repository.
                if let Err(denial) = self.authorize_trigger(project, &asker).await? {
                    return Ok(Outcome::Denied(denial));
                }
                self.answer_question(project, e, delivery, text).await?
            }
            Command::Cancel => {
                if let Err(denial) = self.authorize_trigger(project, &asker).await? {
                    return Ok(Outcome::Denied(denial));
                }
                self.cancel_runs(project, e.issue.number, None).await?
            }
            Command::Retry => {
                if let Err(denial) = self.authorize_trigger(project, &asker).await? {
                    return Ok(Outcome::Denied(denial));
                }
                self.retry_run(project, e.issue.number, delivery, e.comment.id, &e.sender)
                    .await?
            }
            Command::Approve | Command::Reject { .. } | Command::Hold | Command::Unhold => {
                if let Err(denial) = self
                    .authorize_approver(github, project, &asker, &command)
                    .await?
                {
                    return Ok(Outcome::Denied(denial));
                }
                if e.issue.is_pull_request {
                    let mut last = Outcome::Ignored(Ignored::NoGate);
                    for outcome in self.nudge_gate(project, e, delivery).await? {
                        last = outcome;
                    }
                    last
                } else {
                    self.steer_plan(project, e, delivery, &command).await?
                }
            }
            Command::Risk => {
                let text = self.risk_answer(project, e).await?;
                self.answer(github, e, "risk", &text).await
            }
            Command::Help => {
                let agents = project.spec.triggers.mapped_agents();
                self.answer(github, e, "help", &commands::help_text(&agents))
                    .await
            }
        };
        let reaction = match &outcome {
            Outcome::RunCreated { .. } => Some(Reaction::Rocket),
            Outcome::RunsCancelled { .. } | Outcome::Nudged { .. } => Some(Reaction::PlusOne),
            Outcome::RunExists { .. } | Outcome::GateApplied { .. } => None,
            Outcome::Ignored(Ignored::AlreadyRunning(_) | Ignored::NothingToDo(_)) => {
                Some(Reaction::Confused)
            }
            _ => None,
        };
        if let Some(reaction) = reaction {
            self.react(github, &e.repository, e.comment.id, reaction)
                .await;
        }
        Ok(outcome)
    }

    /// Approval commands need an approver role; `/hold` and `/unhold` also accept anyone
    /// who may trigger runs (holding is always safe, like Prow's `/hold`).
    async fn authorize_approver(
        &self,
        github: &InstallationClient,
        project: &Project,
        asker: &Asker<'_>,
        command: &Command,
    ) -> Result<Result<(), Denial>, HandleError> {
        let roles = self
            .authorizer
            .roles(github, project, asker.account)
            .await?;
        if !roles.is_empty() {
            return Ok(Ok(()));
        }
        if matches!(command, Command::Hold | Command::Unhold) {
            return self.authorize_trigger(project, asker).await;
        }
        let denial = Denial::NoRole;
        self.reply(asker, denial.label(), &denial.explain(&asker.account.login))
            .await;
        Ok(Err(denial))
    }

    /// The first run on issue `number` in `phase` (waiting for people to steer it).
    async fn run_in_phase(
        &self,
        project: &Project,
        number: u64,
        phase: RunPhase,
    ) -> Result<Option<AgentRun>, HandleError> {
        Ok(self
            .runs_for_issue(project, number)
            .await?
            .into_iter()
            .find(|r| r.status.as_ref().is_some_and(|s| s.phase == phase)))
    }

    /// `/approve` or `/reject` on an issue steers a run waiting for its plan to be approved
    /// (control mode): the run is annotated and its controller continues or stops it.
    async fn steer_plan(
        &self,
        project: &Project,
        e: &IssueCommentEvent,
        delivery: &DeliveryId,
        command: &Command,
    ) -> Result<Outcome, HandleError> {
        let waiting = self
            .run_in_phase(project, e.issue.number, RunPhase::AwaitingPlanApproval)
            .await?;
        let Some(run) = waiting else {
            return Ok(Outcome::Ignored(Ignored::NothingToDo("plan approval")));
        };
        // The decision answers the plan on the issue now: that attempt's plan, and no later one.
        let plan_attempt = run
            .status
            .as_ref()
            .and_then(|s| s.plan.as_ref())
            .map_or(0, |p| p.attempt);
        let value = countersign_crds::keys::steering_value(
            command.name(),
            &delivery.to_string(),
            &e.sender.login,
            plan_attempt,
        );
        let api: Api<AgentRun> = self.api(project);
        nudge(
            &api,
            &run.name_any(),
            delivery,
            &[(LAST_COMMAND_ANNOTATION, &value)],
        )
        .await?;
        Ok(Outcome::Nudged {
            kind: "AgentRun",
            name: run.name_any(),
        })
    }

    /// `/countersign answer <text>` on an issue answers the question of the run waiting for
    /// one (guidance mode): the run is annotated with the answer and the attempt whose
    /// question it answers, and its controller goes on.
    async fn answer_question(
        &self,
        project: &Project,
        e: &IssueCommentEvent,
        delivery: &DeliveryId,
        text: &str,
    ) -> Result<Outcome, HandleError> {
        let waiting = self
            .run_in_phase(project, e.issue.number, RunPhase::AwaitingAnswer)
            .await?;
        let Some(run) = waiting else {
            return Ok(Outcome::Ignored(Ignored::NothingToDo("answer")));
        };
        let Some(attempt) = run
            .status
            .as_ref()
            .and_then(|s| s.questions.last())
            .map(|q| q.attempt)
        else {
            return Ok(Outcome::Ignored(Ignored::NothingToDo("answer")));
        };
        let value = countersign_crds::keys::answer_value(
            attempt,
            &delivery.to_string(),
            &e.sender.login,
            text,
        );
        let api: Api<AgentRun> = self.api(project);
        nudge(
            &api,
            &run.name_any(),
            delivery,
            &[(countersign_crds::keys::ANSWER_ANNOTATION, &value)],
        )
        .await?;
        Ok(Outcome::Nudged {
            kind: "AgentRun",
            name: run.name_any(),
        })
    }

    /// Nudges the gate of the commented pull request.
    async fn nudge_gate(
        &self,
        project: &Project,
        e: &IssueCommentEvent,
        delivery: &DeliveryId,
    ) -> Handled {
        if !e.issue.is_pull_request {
            return Ok(vec![Outcome::Ignored(Ignored::NoGate)]);
        }
        let api: Api<ApprovalGate> = self.api(project);
        let name = countersign_crds::names::gate_name(&project.name_any(), e.issue.number);
        let nudged = nudge(&api, &name, delivery, &[]).await?;
        Ok(vec![gate_outcome(nudged, name)])
    }

    async fn risk_answer(
        &self,
        project: &Project,
        e: &IssueCommentEvent,
    ) -> Result<String, HandleError> {
        if !e.issue.is_pull_request {
            return Ok("Risk is scored for pull requests; ask `/risk` on one.".to_owned());
        }
        let api: Api<ApprovalGate> = self.api(project);
        let name = countersign_crds::names::gate_name(&project.name_any(), e.issue.number);
        let gate = api.get_opt(&name).await?;
        Ok(crate::render::risk_summary(gate.as_ref()))
    }

    async fn available_agents(&self, project: &Project) -> Result<String, HandleError> {
        Ok(mapped_agents_sentence(project))
    }

    /// Posts an answer (rate-limited per person, issue and topic).
    async fn answer(
        &self,
        github: &InstallationClient,
        e: &IssueCommentEvent,
        topic: &'static str,
        text: &str,
    ) -> Outcome {
        let asker = Asker {
            github,
            repository: &e.repository,
            number: e.issue.number,
            account: &e.sender,
            comment: Some(e.comment.id),
        };
        self.reply(&asker, topic, text).await;
        Outcome::Answered(topic)
    }
}

/// What touching gate `name` came to: nudged, or there is no gate (yet).
fn gate_outcome(touched: bool, name: String) -> Outcome {
    if touched {
        Outcome::Nudged {
            kind: "ApprovalGate",
            name,
        }
    } else {
        Outcome::Ignored(Ignored::NoGate)
    }
}

/// The Agents comments may start here, as a sentence.
fn mapped_agents_sentence(project: &Project) -> String {
    let names = project.spec.triggers.mapped_agents();
    if names.is_empty() {
        "No Agents can be started from comments on this repository.".to_owned()
    } else {
        format!(
            "Available: {}.",
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}
