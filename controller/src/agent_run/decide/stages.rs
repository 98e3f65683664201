//! The stages after a successful attempt, and the control-mode plan stage: plans waiting for
//! `/approve` or `/reject`, pushed changes waiting for their pull request, pull requests
//! followed through their ApprovalGate. Part of the pure [`super::decide`].

use countersign_crds::agent_run::{Attempt, PlanDecision, RunPlan};
use countersign_crds::keys::steering_command;
use countersign_crds::result::NOTHING_CHANGED;
use countersign_crds::{Agent, AgentRun, AgentRunStatus, GatePhase, RunMode, RunPhase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{Action, Admission, Decision, Inputs, PodView, finish, start_attempt};

/// Whether the run's plan is approved (recorded, or approved by a command not yet recorded)
/// and no attempt after the plan exists.
pub(super) fn approved_plan_waits(run: &AgentRun, pods: &[PodView]) -> bool {
    let Some(status) = run.status.as_ref() else {
        return false;
    };
    let Some(plan) = &status.plan else {
        return false;
    };
    let approved = match &plan.decision {
        Some(decision) => decision.approved,
        None => steering_command(run.annotations()).is_some_and(|c| c.approved),
    };
    // An approved breakdown is carried out by child runs, not by another attempt.
    approved && status.breakdown.is_none() && nothing_after(status, pods, plan.attempt)
}

/// Whether no attempt after `attempt` exists yet (in the status or as a pod).
pub(super) fn nothing_after(status: &AgentRunStatus, pods: &[PodView], attempt: u32) -> bool {
    status.attempts.iter().all(|a| a.number <= attempt) && pods.iter().all(|p| p.attempt <= attempt)
}

/// How the run is steered: its own mode, else its Agent's default.
fn mode(i: &Inputs<'_>) -> RunMode {
    run_mode(i.run, i.agent)
}

/// How a run is steered: its own mode, else its Agent's default, else autonomous.
pub(crate) fn run_mode(run: &AgentRun, agent: Option<&Agent>) -> RunMode {
    run.spec
        .mode
        .or(agent.map(|a| a.spec.default_mode))
        .unwrap_or_default()
}

/// Whether the run's first stage proposes a work breakdown instead of a change: an
/// architect Agent's run, or one asked to plan (`spec.breakdown`), that is not a follow-up
/// (which works on another run's pull request), unless it only observes. A sub-task breaks
/// down only `within_depth`: it has fewer ancestors than the Project's `maxBreakdownDepth`
/// (1 by default, so by default sub-tasks never do).
pub(crate) fn breaks_down(run: &AgentRun, agent: Option<&Agent>, within_depth: bool) -> bool {
    within_depth
        && run.spec.follow_up_of.is_none()
        && (run.spec.breakdown
            || agent.is_some_and(|a| a.spec.role == countersign_crds::AgentRole::Architect))
        && run_mode(run, agent) != RunMode::Observation
}

/// The run's plan once a human approved it.
pub(crate) fn approved_plan(status: &AgentRunStatus) -> Option<&RunPlan> {
    status
        .plan
        .as_ref()
        .filter(|p| p.decision.as_ref().is_some_and(|d| d.approved))
}

/// The attempt number after which the coding stage starts: the plan's attempt once a plan was
/// approved, else 0. Retries are counted per stage.
pub(super) fn coding_stage_start(status: &AgentRunStatus) -> u32 {
    approved_plan(status)
        .map_or(0, |p| p.attempt)
        .max(super::guidance::stage_start(status))
}

/// The phase of a working attempt: `Planning` while a control-mode run has no approved plan.
pub(super) fn working_phase(i: &Inputs<'_>, status: &AgentRunStatus) -> RunPhase {
    if mode(i) == RunMode::Control && coding_stage_start(status) == 0 {
        RunPhase::Planning
    } else {
        RunPhase::Running
    }
}

/// What follows a successful attempt: a plan waits for its decision, a pushed change gets
/// its pull request and follows it, anything else (no changes, an analysis) is done.
pub(super) fn after_success(i: &Inputs<'_>, d: &mut Decision, last: &Attempt) {
    if super::guidance::asked_by(&d.status, last) {
        return super::guidance::follow(i, d, last);
    }
    if let Some(plan) = d.status.plan.clone().filter(|p| p.attempt == last.number) {
        return follow_plan(i, d, plan, last);
    }
    if let Some(target) = i.follow_up {
        // A follow-up adds to another run's pull request: it is done once it pushed (the
        // gate evaluates the new head) or found nothing to add.
        let n = target.pull_request.number;
        d.status.pull_request = Some(target.pull_request.clone());
        let message = match d.status.commit.as_deref() {
            Some(commit) => format!(
                "Pushed {} to pull request #{n}; its gate evaluates the change again",
                short(commit)
            ),
            None => match last.reason.as_deref() {
                Some(reason) if !reason.is_empty() && reason != NOTHING_CHANGED => {
                    d.actions.push(Action::PostFindings {
                        pull_request: n,
                        attempt: last.number,
                        findings: reason.to_owned(),
                    });
                    format!("Nothing to add to #{n}; its findings are a review on it")
                }
                _ => format!("Nothing to add to pull request #{n}"),
            },
        };
        return finish(d, RunPhase::Succeeded, message, i.now);
    }
    if let Some(commit) = d.status.commit.clone() {
        let branch = d.status.branch.clone().unwrap_or_default();
        let Some(pr) = d.status.pull_request.clone() else {
            if i.can_open_pull_requests {
                d.status.phase = RunPhase::Running;
                d.status.message = Some(format!("Pushed {branch}; opening the pull request"));
                d.actions.push(Action::OpenPullRequest);
            } else {
                let message = format!(
                    "Pushed {branch} at {}; no GitHub App is configured, so no pull request was opened",
                    short(&commit)
                );
                finish(d, RunPhase::Succeeded, message, i.now);
            }
            return;
        };
        let n = pr.number;
        match i.gate {
            Some(GatePhase::Merged) => finish(
                d,
                RunPhase::Succeeded,
                format!("Pull request #{n} merged"),
                i.now,
            ),
            Some(GatePhase::Closed) => finish(
                d,
                RunPhase::Failed,
                format!("Pull request #{n} was closed without merging"),
                i.now,
            ),
            // A gate the cache does not show (yet) leaves the message as it was: a gate
            // created moments ago is not reported gone and then back.
            None if d.status.phase == RunPhase::PullRequestOpen && d.status.message.is_some() => {}
            gate => {
                d.status.phase = RunPhase::PullRequestOpen;
                d.status.message = Some(match gate {
                    Some(phase) => format!("Pull request #{n} is open; its gate is {phase:?}"),
                    None => format!("Pull request #{n} is open"),
                });
            }
        }
        return;
    }
    let message = match last.reason.as_deref() {
        Some(reason) if !reason.is_empty() => reason.to_owned(),
        _ if mode(i) == RunMode::Observation => "The analysis is posted on the issue".to_owned(),
        _ => "The agent found nothing to change".to_owned(),
    };
    finish(d, RunPhase::Succeeded, message, i.now);
}

/// A control-mode plan: wait for `/approve` or `/reject`, record the decision, and start
/// coding (through admission) or end the run.
fn follow_plan(i: &Inputs<'_>, d: &mut Decision, mut plan: RunPlan, last: &Attempt) {
    if plan.decision.is_none() {
        // A decision answers the plan that was on the issue when it was given; one about an
        // earlier plan (or one recorded without the attempt) decides nothing here.
        let command = steering_command(i.run.annotations())
            .filter(|c| c.plan_attempt.is_none_or(|a| a == plan.attempt));
        let Some(command) = command else {
            d.status.phase = RunPhase::AwaitingPlanApproval;
            d.status.message = Some(
                "The plan is posted on the issue; an approver answers /approve or /reject".into(),
            );
            return;
        };
        plan.decision = Some(PlanDecision {
            approved: command.approved,
            by: command.by,
            delivery: Some(command.delivery).filter(|d| !d.is_empty()),
            time: Time(i.now),
        });
        d.status.plan = Some(plan.clone());
    }
    let decision = plan.decision.as_ref().expect("set just above when missing");
    let by = decision
        .by
        .as_deref()
        .map_or_else(String::new, |l| format!(" by @{l}"));
    if !decision.approved {
        let what = if d.status.breakdown.is_some() {
            "Breakdown"
        } else {
            "Plan"
        };
        return finish(
            d,
            RunPhase::Cancelled,
            format!("{what} rejected{by}"),
            i.now,
        );
    }
    if d.status.breakdown.is_some() {
        return super::children::coordinate(i, d);
    }
    match &i.admission {
        Some(Admission::Admit) => {
            let provider = provider_index(i, &last.provider);
            start_attempt(i, d, last.number + 1, provider);
        }
        Some(Admission::Wait(why)) => {
            d.status.phase = RunPhase::Queued;
            d.status.message = Some(format!("Plan approved{by}; {why}"));
            d.requeue = Some(i.settings.wait_requeue);
        }
        None => d.requeue = Some(i.settings.wait_requeue),
    }
}

/// Index of the provider entry `name` in the Agent (0 when unknown).
pub(super) fn provider_index(i: &Inputs<'_>, name: &str) -> usize {
    i.agent
        .and_then(|a| a.spec.providers.iter().position(|p| p.name == name))
        .unwrap_or(0)
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}
