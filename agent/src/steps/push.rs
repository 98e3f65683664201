//! The `push` step: trusted code that turns the `work` step's untrusted report into the
//! attempt's result, the only result the controller reads.
//!
//! It reads the report strictly and caps its texts, takes the base commit from the `clone`
//! step's hand-off (a volume the work step does not mount), and for a change: reads the
//! reported commit's tree from the workspace's objects into a repository of its own
//! ([`crate::publish`]), describes the change against the base itself, re-checks the
//! guardrails (forbidden paths, size, binary files, secrets, the push token), writes a new
//! commit as the App's bot with its own message and trailers, and pushes only
//! `refs/heads/<branch>` to the task's push URL. Plans and analyses push nothing. Whatever
//! happens, the result goes to the termination log.

use countersign_crds::result::{AgentResult, ResultOutcome};
use countersign_crds::task_file::TaskFile;
use git2::Oid;
use secrecy::{ExposeSecret as _, SecretString};

use super::clone::Handoff;
use super::{
    blank, ended, job_kind, read_capped, read_task, read_token, set_git_timeouts, write_text,
};
use crate::config::StepArgs;
use crate::guardrails;
use crate::provider::JobKind;
use crate::publish::Fresh;
use crate::report::{MAX_REPORT_BYTES, WorkReport};
use crate::workspace::{ChangeSet, commit_message};

/// Runs the push step and writes the result to the termination log. Returns the result, or
/// an error only when even the result could not be written.
pub fn run(args: &StepArgs) -> anyhow::Result<AgentResult> {
    let result = match read_task(&args.task_file()) {
        Ok(task) => {
            let mut result = decide(args, &task);
            result.provider = Some(task.provider.name.clone());
            result
        }
        Err(reason) => ended(ResultOutcome::Failed, reason),
    };
    write_text(&args.termination_log, &result.to_message())?;
    tracing::info!(
        outcome = ?result.outcome,
        files = result.files_changed,
        reason = result.reason.as_deref().unwrap_or(""),
        "attempt finished"
    );
    Ok(result)
}

fn decide(args: &StepArgs, task: &TaskFile) -> AgentResult {
    let report = match read_capped(&args.work_report(), MAX_REPORT_BYTES)
        .map_err(|e| e.to_string())
        .and_then(|bytes| WorkReport::parse_untrusted(&bytes))
    {
        Ok(report) => report,
        Err(why) => {
            return ended(
                ResultOutcome::Failed,
                format!("the work step left no readable report ({why}); nothing was pushed"),
            );
        }
    };
    let passed_on = |outcome| AgentResult {
        summary: report.summary.clone(),
        reason: report.reason.clone(),
        report: report.report.clone(),
        verification: report.verification.clone(),
        ..blank(outcome)
    };
    match (job_kind(task), report.outcome) {
        // Failures are passed on as the work step said (its texts capped): they end or
        // retry only this run.
        (
            _,
            outcome @ (ResultOutcome::Failed
            | ResultOutcome::ProviderError
            | ResultOutcome::RateLimited
            | ResultOutcome::GuardrailViolation),
        ) => passed_on(outcome),
        (JobKind::Change, ResultOutcome::Question) if task.may_ask => {
            // Model-written: passed on only if it is a question the controller will take.
            match countersign_crds::guidance::Question::parse(
                report.report.as_deref().unwrap_or_default(),
            ) {
                Ok(question) => AgentResult {
                    report: Some(question.to_json()),
                    ..passed_on(ResultOutcome::Question)
                },
                Err(why) => ended(ResultOutcome::Failed, why),
            }
        }
        (JobKind::Breakdown, ResultOutcome::PlanReady) => {
            // Model-written: passed on only if it is a breakdown the controller will take.
            let text = report.report.clone().unwrap_or_default();
            match countersign_crds::breakdown::Breakdown::parse(&text) {
                Ok(breakdown) => AgentResult {
                    report: Some(breakdown.to_json()),
                    ..passed_on(ResultOutcome::PlanReady)
                },
                Err(why) => ended(ResultOutcome::Failed, why),
            }
        }
        (JobKind::Plan, ResultOutcome::PlanReady) => AgentResult {
            report: report.report.clone().or_else(|| report.summary.clone()),
            ..passed_on(ResultOutcome::PlanReady)
        },
        (JobKind::Analyse, ResultOutcome::NoChanges) => AgentResult {
            report: report.report.clone().or_else(|| report.summary.clone()),
            ..passed_on(ResultOutcome::NoChanges)
        },
        (JobKind::Change, ResultOutcome::NoChanges) => {
            nothing_to_push(task, report.summary.as_deref())
        }
        (JobKind::Change, ResultOutcome::Succeeded) => match report.commit.as_deref() {
            Some(commit) => publish(args, task, &report, commit),
            None => ended(
                ResultOutcome::Failed,
                "the work step reported a change without a commit; nothing was pushed",
            ),
        },
        (kind, outcome) => ended(
            ResultOutcome::Failed,
            format!("the work step reported {outcome:?} for a {kind:?} job; nothing was pushed"),
        ),
    }
}

/// Re-checks the reported commit and pushes it as a commit of our own.
fn publish(args: &StepArgs, task: &TaskFile, report: &WorkReport, commit: &str) -> AgentResult {
    let fail = |reason: String| ended(ResultOutcome::Failed, reason);
    let token = match read_token(&args.push_token_file(), "push token") {
        Ok(token) => token,
        Err(reason) => return fail(reason),
    };
    let handoff = match Handoff::read(&args.handoff_dir) {
        Ok(handoff) => handoff,
        Err(reason) => return fail(reason),
    };
    let (Ok(base), Ok(commit)) = (Oid::from_str(&handoff.base_commit), Oid::from_str(commit))
    else {
        return fail("the base or the reported commit is not an object id".into());
    };
    set_git_timeouts();
    let scratch = std::env::temp_dir();
    let objects = args.repo_dir().join(".git").join("objects");
    let fresh = match Fresh::create(&scratch, &objects, base) {
        Ok(fresh) => fresh,
        Err(e) => return fail(format!("cannot prepare the push: {e}")),
    };
    let (changes, tree) = match fresh.change_of(commit) {
        Ok(found) => found,
        Err(e) => return fail(format!("cannot read the work step's change: {e}")),
    };
    if changes.is_empty() {
        return nothing_to_push(task, report.summary.as_deref());
    }
    if let Err(violation) = guardrails::check(&changes, &task.limits, &task.guardrails) {
        return refused(&changes, violation.to_string());
    }
    if let Some(path) = contains(&changes, &token) {
        return refused(
            &changes,
            format!("{path} contains the repository token; nothing was pushed"),
        );
    }
    let run_ref = format!("{}/{}", task.namespace, task.run);
    let requester = task
        .task
        .requested_by
        .as_ref()
        .map(|u| format!("@{}", u.login));
    let mut trailers: Vec<(&str, &str)> = vec![("Countersign-Run", run_ref.as_str())];
    if let Some(r) = &requester {
        trailers.push(("Requested-by", r.as_str()));
    }
    let message = commit_message(
        &crate::prompt::one_line(&task.task.title),
        report.summary.as_deref().unwrap_or_default(),
        &trailers,
    );
    let pushed = match fresh.commit(tree, &task.commit_author, &message, &task.branch) {
        Ok(id) => id,
        Err(e) => return fail(format!("cannot commit: {e}")),
    };
    if let Err(e) = fresh.push(
        task.repository.push_url(),
        &task.branch,
        &token,
        !task.extend_branch,
    ) {
        return fail(format!("cannot push {}: {e}", task.branch));
    }
    tracing::info!(branch = %task.branch, commit = %pushed, files = changes.files.len(), "pushed the change");
    AgentResult {
        branch: Some(task.branch.clone()),
        commit: Some(pushed),
        files_changed: u32::try_from(changes.files.len()).unwrap_or(u32::MAX),
        lines_added: changes.additions,
        lines_removed: changes.deletions,
        summary: report.summary.clone().filter(|s| !s.is_empty()),
        verification: report.verification.clone(),
        ..blank(ResultOutcome::Succeeded)
    }
}

/// A change job that changed nothing. A follow-up's reason is its findings (its summary),
/// which the controller posts on the pull request as a review; any other run's is
/// [`NOTHING_CHANGED`](countersign_crds::result::NOTHING_CHANGED).
fn nothing_to_push(task: &TaskFile, summary: Option<&str>) -> AgentResult {
    let summary = summary.filter(|s| !s.trim().is_empty());
    let reason = summary
        .filter(|_| task.extend_branch)
        .unwrap_or(countersign_crds::result::NOTHING_CHANGED);
    AgentResult {
        summary: summary.map(str::to_owned),
        ..ended(ResultOutcome::NoChanges, reason)
    }
}

fn refused(changes: &ChangeSet, reason: String) -> AgentResult {
    AgentResult {
        files_changed: u32::try_from(changes.files.len()).unwrap_or(u32::MAX),
        lines_added: changes.additions,
        lines_removed: changes.deletions,
        ..ended(ResultOutcome::GuardrailViolation, reason)
    }
}

/// The first file whose added lines contain `token`.
fn contains(changes: &ChangeSet, token: &SecretString) -> Option<String> {
    let secret = token.expose_secret();
    changes
        .files
        .iter()
        .find(|f| f.added_lines.iter().any(|l| l.text.contains(secret)))
        .map(|f| f.path.clone())
}
