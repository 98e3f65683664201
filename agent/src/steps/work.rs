//! The `work` step: let the provider do the job in the checkout the `clone` step left, check
//! the change (guardrails, verify commands, with rounds of feedback), commit it locally and
//! report to the `push` step through `<workspace>/work-report.json`.
//!
//! This is the step where model-written code runs (the command provider, verify commands),
//! so it holds nothing worth stealing: no GitHub token is mounted, and the model is reached
//! through the provider gateway with the attempt's gateway token, which works only for this
//! attempt, within its budget, until the attempt ends. Its report is data for `push`, which
//! re-checks everything that matters. The process exits 0 whenever it could write a report
//! (whatever the outcome), so `push` always gets to write the attempt's result.

use std::time::Instant;

use countersign_crds::result::ResultOutcome;
use countersign_crds::task_file::TaskFile;

use super::{job_kind, read_task, read_token, write_text};
use crate::config::{MIN_WORK_TIME, StepArgs};
use crate::provider::{self, Budget, Gateway, Job, JobKind, Provider, ProviderError};
use crate::report::{WORK_REPORT_VERSION, WorkReport};
use crate::workspace::{Workspace, commit_message};
use crate::{guardrails, prompt, verify};

/// Verify rounds (the provider fixing what a verify command reported) before the attempt
/// gives up, on top of the turn budget that also bounds them.
pub const MAX_VERIFY_ROUNDS: u32 = 3;

/// Runs the work step and writes its report for `push` (and a line for people to the
/// termination log). Returns the report; an error only when the report could not be written.
pub fn run(args: &StepArgs) -> anyhow::Result<WorkReport> {
    let started = Instant::now();
    let report = attempt(args, started);
    let text = serde_json::to_vec(&report).expect("a work report always serialises");
    std::fs::write(args.work_report(), text).map_err(|e| {
        anyhow::anyhow!(
            "Cannot write the work report {}: {e}",
            args.work_report().display()
        )
    })?;
    let line = format!(
        "work ended {:?}{}",
        report.outcome,
        report
            .reason
            .as_deref()
            .map(|r| format!(": {}", crate::report::clean(r, 300)))
            .unwrap_or_default()
    );
    write_text(&args.termination_log, &line)?;
    tracing::info!(outcome = ?report.outcome, reason = report.reason.as_deref().unwrap_or(""), "work finished");
    Ok(report)
}

/// A report with only an outcome and a reason.
fn ended(outcome: ResultOutcome, reason: impl Into<String>) -> WorkReport {
    WorkReport::ended(outcome, reason)
}

/// A report with only an outcome.
fn blank(outcome: ResultOutcome) -> WorkReport {
    WorkReport {
        reason: None,
        ..WorkReport::ended(outcome, "")
    }
}

fn attempt(args: &StepArgs, started: Instant) -> WorkReport {
    let task = match read_task(&args.task_file()) {
        Ok(task) => task,
        Err(reason) => return ended(ResultOutcome::Failed, reason),
    };
    let gateway = match (
        args.gateway_url.as_deref().filter(|u| !u.trim().is_empty()),
        read_token(&args.gateway_token_file(), "gateway token"),
    ) {
        (Some(url), Ok(token)) => Gateway {
            url: url.trim().to_owned(),
            token,
            attempt: countersign_crds::attempt::attempt_key(
                &task.namespace,
                &task.run,
                task.attempt,
            ),
        },
        (None, _) => {
            return ended(
                ResultOutcome::Failed,
                "no provider gateway is configured (COUNTERSIGN_GATEWAY_URL)",
            );
        }
        (_, Err(reason)) => return ended(ResultOutcome::Failed, reason),
    };
    work(args, &task, &gateway, started)
}

/// The step after its inputs were read.
fn work(args: &StepArgs, task: &TaskFile, gateway: &Gateway, started: Instant) -> WorkReport {
    let deadline = started
        + task
            .limits
            .timeout
            .0
            .saturating_sub(args.reserve.0)
            .max(MIN_WORK_TIME);
    let mut budget = Budget::new(task.limits.clone(), &task.provider, deadline);
    let dir = args.repo_dir();
    tracing::info!(
        run = %task.run,
        attempt = task.attempt,
        provider = %task.provider.name,
        mode = ?task.mode,
        "starting work"
    );
    let mut workspace = match Workspace::open(&dir) {
        Ok(ws) => ws,
        Err(e) => {
            return ended(
                ResultOutcome::Failed,
                format!("cannot open the checkout: {e}"),
            );
        }
    };
    let kind = job_kind(task);
    if kind == JobKind::Change
        && let Err(e) = workspace.create_branch(&task.branch)
    {
        return ended(
            ResultOutcome::Failed,
            format!("cannot create the branch: {e}"),
        );
    }
    let mut agent = match provider::provider_via_gateway(&task.provider, gateway, &dir) {
        Ok(agent) => agent,
        Err(e) => return failed(&e),
    };
    let job = Job {
        may_ask: task.may_ask && kind == JobKind::Change,
        milestones: (kind == JobKind::Analyse).then(|| crate::milestones::Milestones::new(gateway)),
        kind: kind.clone(),
        prompt: prompt::task_prompt(task, &kind),
    };
    let work = match agent.start(&job, &mut budget) {
        Ok(work) => work,
        Err(e) => return failed(&e),
    };
    let report = match kind {
        // Guidance mode: the model stopped to ask; whatever it changed so far is dropped
        // (the next attempt starts again from the base, with the answer).
        JobKind::Change if work.question.is_some() => WorkReport {
            report: work.question.clone(),
            summary: Some(work.summary.clone()),
            ..blank(ResultOutcome::Question)
        },
        JobKind::Plan | JobKind::Breakdown => WorkReport {
            report: Some(work.report.clone().unwrap_or_else(|| work.summary.clone())),
            summary: Some(work.summary.clone()),
            ..blank(ResultOutcome::PlanReady)
        },
        JobKind::Analyse => WorkReport {
            report: Some(work.report.clone().unwrap_or_else(|| work.summary.clone())),
            summary: Some("Analysis written".into()),
            ..blank(ResultOutcome::NoChanges)
        },
        JobKind::Change => finish_change(task, &mut workspace, agent.as_mut(), &mut budget, work),
    };
    if let Some(text) = &report.report {
        // The result keeps a shortened report; the log keeps all of it.
        tracing::info!(report = %text, "the agent's report");
    }
    report
}

fn failed(error: &ProviderError) -> WorkReport {
    let outcome = match error {
        ProviderError::RateLimited(_) => ResultOutcome::RateLimited,
        ProviderError::Unavailable(_)
        | ProviderError::Refused(_)
        | ProviderError::BadResponse(_) => ResultOutcome::ProviderError,
        ProviderError::OutOfBudget(_) | ProviderError::Command(_) | ProviderError::Denied(_) => {
            ResultOutcome::Failed
        }
    };
    ended(outcome, error.to_string())
}

/// After the provider's work: check, verify (giving the provider another round when a
/// verify command fails), commit and push.
fn finish_change(
    task: &TaskFile,
    workspace: &mut Workspace,
    agent: &mut dyn Provider,
    budget: &mut Budget,
    mut work: provider::Work,
) -> WorkReport {
    let mut rounds = 0;
    let (changes, verification) = loop {
        let changes = match workspace.changes() {
            Ok(changes) => changes,
            Err(e) => {
                return ended(
                    ResultOutcome::Failed,
                    format!("cannot read the change: {e}"),
                );
            }
        };
        if changes.files.is_empty() {
            let mut result = ended(
                ResultOutcome::NoChanges,
                countersign_crds::result::NOTHING_CHANGED,
            );
            result.summary = Some(work.summary.clone()).filter(|s| !s.is_empty());
            return result;
        }
        if let Err(violation) = guardrails::check(&changes, &task.limits, &task.guardrails) {
            return ended(ResultOutcome::GuardrailViolation, violation.to_string());
        }
        if task.verify.is_empty() {
            break (changes, None);
        }
        // Verify commands run code the model just wrote: nothing of ours in their environment.
        let env = verify::environment(&[]);
        let report = verify::run_all(&task.verify, workspace.path(), &env, budget.remaining());
        rounds += 1;
        if report.passed {
            let line = if rounds > 1 {
                format!("{} ({rounds} rounds)", report.summary_line)
            } else {
                report.summary_line.clone()
            };
            break (changes, Some(line));
        }
        if rounds >= MAX_VERIFY_ROUNDS || budget.exhausted().is_some() {
            return ended(
                ResultOutcome::Failed,
                format!(
                    "verification still fails after {rounds} round(s): {}",
                    report.summary_line
                ),
            );
        }
        tracing::info!(
            round = rounds,
            "verification failed; asking the provider to fix it"
        );
        work = match agent.follow_up(&report.feedback, budget) {
            Ok(work) => work,
            Err(e) => {
                let mut result = failed(&e);
                result.reason = Some(format!("{e} (while fixing: {})", report.summary_line));
                return result;
            }
        };
    };
    let message = commit_message(
        &crate::prompt::one_line(&task.task.title),
        &work.summary,
        &[],
    );
    let commit = match workspace.commit(&changes, &task.commit_author, &message) {
        Ok(commit) => commit,
        Err(e) => return ended(ResultOutcome::Failed, format!("cannot commit: {e}")),
    };
    tracing::info!(commit = %commit, files = changes.files.len(), "committed the change for the push step");
    WorkReport {
        version: WORK_REPORT_VERSION,
        outcome: ResultOutcome::Succeeded,
        commit: Some(commit),
        summary: Some(work.summary).filter(|s| !s.is_empty()),
        reason: None,
        report: None,
        verification,
    }
}
