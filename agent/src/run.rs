//! One attempt, start to finish: read the task, clone, let the provider work, check the
//! change (guardrails, the repository token, verify commands), commit, push, and report.
//!
//! Whatever happens, the attempt ends with a result document in the termination log (the
//! crds contract): the controller reads outcomes from it, never from logs. Failures that
//! another provider could fix (rate limits, outages) say so, so the controller falls back.

use std::path::Path;
use std::time::Instant;

use countersign_crds::RunMode;
use countersign_crds::result::{AgentResult, RESULT_VERSION, ResultOutcome};
use countersign_crds::task_file::{TASK_FILE_VERSION, TaskFile};
use secrecy::{ExposeSecret, SecretString};

use crate::config::{AgentArgs, MIN_WORK_TIME, api_key_from_env};
use crate::provider::{self, Budget, Job, JobKind, Provider, ProviderError};
use crate::workspace::{ChangeSet, Workspace, commit_message};
use crate::{guardrails, prompt, verify};

/// Verify rounds (the provider fixing what a verify command reported) before the attempt
/// gives up, on top of the turn budget that also bounds them.
pub const MAX_VERIFY_ROUNDS: u32 = 3;

/// Runs one attempt and writes its result to the termination log. Returns the result, or
/// an error only when even the result could not be written.
pub fn run(args: &AgentArgs) -> anyhow::Result<AgentResult> {
    let started = Instant::now();
    let result = attempt(args, started);
    let message = result.to_message();
    write_result(&args.termination_log, &message)?;
    tracing::info!(
        outcome = ?result.outcome,
        files = result.files_changed,
        input_tokens = result.usage.input_tokens,
        output_tokens = result.usage.output_tokens,
        reason = result.reason.as_deref().unwrap_or(""),
        "attempt finished"
    );
    Ok(result)
}

/// Whether `outcome` means the attempt did its job (exit code 0).
pub fn is_success(outcome: ResultOutcome) -> bool {
    matches!(
        outcome,
        ResultOutcome::Succeeded | ResultOutcome::NoChanges | ResultOutcome::PlanReady
    )
}

fn write_result(path: &Path, message: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(path, message)
        .with_context(|| format!("Cannot write the result to {}", path.display()))
}

/// A result with only an outcome and a reason.
fn ended(outcome: ResultOutcome, reason: impl Into<String>) -> AgentResult {
    AgentResult {
        reason: Some(reason.into()),
        ..blank(outcome)
    }
}

/// A result with only an outcome.
fn blank(outcome: ResultOutcome) -> AgentResult {
    AgentResult {
        version: RESULT_VERSION,
        outcome,
        provider: None,
        branch: None,
        commit: None,
        files_changed: 0,
        lines_added: 0,
        lines_removed: 0,
        summary: None,
        reason: None,
        report: None,
        verification: None,
        usage: Default::default(),
    }
}

fn attempt(args: &AgentArgs, started: Instant) -> AgentResult {
    let task = match read_task(&args.task_file()) {
        Ok(task) => task,
        Err(reason) => return ended(ResultOutcome::Failed, reason),
    };
    let token = match read_token(&args.token_file()) {
        Ok(token) => token,
        Err(reason) => return ended(ResultOutcome::Failed, reason),
    };
    let mut result = work(args, &task, &token, started);
    result.provider = Some(task.provider.name.clone());
    // Belt and braces: nothing the agent reports may carry the token.
    let secret = token.expose_secret();
    for text in [&mut result.summary, &mut result.reason, &mut result.report]
        .into_iter()
        .flatten()
    {
        if text.contains(secret) {
            *text = text.replace(secret, "[redacted]");
        }
    }
    result
}

fn read_task(path: &Path) -> Result<TaskFile, String> {
    let bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read the task file {}: {e}", path.display()))?;
    let task: TaskFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("the task file {} is not valid: {e}", path.display()))?;
    if task.version != TASK_FILE_VERSION {
        return Err(format!(
            "the task file has version {}; this agent reads version {TASK_FILE_VERSION}",
            task.version
        ));
    }
    Ok(task)
}

fn read_token(path: &Path) -> Result<SecretString, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the repository token {}: {e}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "the repository token file {} is empty",
            path.display()
        ));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// The attempt after its inputs were read: everything that can report usage.
fn work(args: &AgentArgs, task: &TaskFile, token: &SecretString, started: Instant) -> AgentResult {
    let deadline = started
        + task
            .limits
            .timeout
            .0
            .saturating_sub(args.reserve.0)
            .max(MIN_WORK_TIME);
    let mut budget = Budget::new(task.limits.clone(), &task.provider, deadline);
    let dir = args.workspace.join("repo");
    // libgit2 waits forever on a stalled connection by default; the attempt has a deadline.
    set_git_timeouts();
    tracing::info!(
        run = %task.run,
        attempt = task.attempt,
        provider = %task.provider.name,
        mode = ?task.mode,
        "starting attempt"
    );
    let mut workspace = match Workspace::clone_repo(
        &task.repository.clone_url,
        token,
        &task.repository.default_branch,
        &dir,
    ) {
        Ok(ws) => ws,
        Err(e) => return ended(ResultOutcome::Failed, format!("cannot clone: {e}")),
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
    let mut agent = match provider::provider_for(&task.provider, api_key_from_env(), &dir) {
        Ok(agent) => agent,
        Err(e) => return failed_with_usage(&e, &budget),
    };
    let job = Job {
        kind: kind.clone(),
        prompt: prompt::task_prompt(task, &kind),
    };
    let outcome = agent.start(&job, &mut budget);
    let work = match outcome {
        Ok(work) => work,
        Err(e) => return failed_with_usage(&e, &budget),
    };
    let mut result = match kind {
        JobKind::Plan => AgentResult {
            report: Some(work.report.clone().unwrap_or_else(|| work.summary.clone())),
            summary: Some(work.summary.clone()),
            ..blank(ResultOutcome::PlanReady)
        },
        JobKind::Analyse => AgentResult {
            report: Some(work.report.clone().unwrap_or_else(|| work.summary.clone())),
            summary: Some("Analysis written".into()),
            ..blank(ResultOutcome::NoChanges)
        },
        JobKind::Change => finish_change(
            task,
            token,
            &mut workspace,
            agent.as_mut(),
            &mut budget,
            work,
        ),
    };
    if let Some(report) = &result.report {
        // The result keeps a shortened report; the log keeps all of it.
        tracing::info!(report = %report, "the agent's report");
    }
    result.usage = budget.usage();
    result
}

/// Connect and read timeouts for every git connection of this process.
fn set_git_timeouts() {
    // SAFETY: process-wide libgit2 options, set once before any git operation and before any
    // other thread uses libgit2.
    let set = unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(GIT_CONNECT_TIMEOUT_MS)
            .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(GIT_IO_TIMEOUT_MS))
    };
    if let Err(e) = set {
        tracing::warn!(error = %e, "cannot set git network timeouts");
    }
}

/// How long a git connection may take to open.
const GIT_CONNECT_TIMEOUT_MS: i32 = 30_000;
/// How long a git connection may stay silent.
const GIT_IO_TIMEOUT_MS: i32 = 120_000;

/// Which job the task asks for: a plan (control mode before approval), an analysis
/// (observation mode), or a change.
pub fn job_kind(task: &TaskFile) -> JobKind {
    if task.is_planning() {
        JobKind::Plan
    } else if task.mode == RunMode::Observation {
        JobKind::Analyse
    } else {
        JobKind::Change
    }
}

fn failed_with_usage(error: &ProviderError, budget: &Budget) -> AgentResult {
    let outcome = match error {
        ProviderError::RateLimited(_) => ResultOutcome::RateLimited,
        ProviderError::Unavailable(_)
        | ProviderError::Refused(_)
        | ProviderError::BadResponse(_) => ResultOutcome::ProviderError,
        ProviderError::OutOfBudget(_) | ProviderError::Command(_) => ResultOutcome::Failed,
    };
    AgentResult {
        usage: budget.usage(),
        ..ended(outcome, error.to_string())
    }
}

/// After the provider's work: check, verify (giving the provider another round when a
/// verify command fails), commit and push.
fn finish_change(
    task: &TaskFile,
    token: &SecretString,
    workspace: &mut Workspace,
    agent: &mut dyn Provider,
    budget: &mut Budget,
    mut work: provider::Work,
) -> AgentResult {
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
                "The agent made no changes, so nothing was pushed",
            );
            result.summary = Some(work.summary.clone()).filter(|s| !s.is_empty());
            return result;
        }
        if let Err(violation) = guardrails::check(&changes, &task.limits, &task.guardrails) {
            return refused(&changes, violation.to_string());
        }
        if let Some(path) = contains_token(&changes, token) {
            return refused(
                &changes,
                format!("{path} contains the repository token; nothing was pushed"),
            );
        }
        if task.verify.is_empty() {
            break (changes, None);
        }
        // Verify commands run code the model just wrote: no provider keys, nothing of ours.
        let hidden: Vec<&str> = task
            .provider
            .command
            .iter()
            .flat_map(|c| c.env.iter().map(|v| v.name.as_str()))
            .collect();
        let env = verify::environment(&hidden);
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
                let mut result = failed_with_usage(&e, budget);
                result.reason = Some(format!("{e} (while fixing: {})", report.summary_line));
                return result;
            }
        };
    };
    let title = crate::prompt::one_line(&task.task.title);
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
    let message = commit_message(&title, &work.summary, &trailers);
    let commit = match workspace.commit(&changes, &task.commit_author, &message) {
        Ok(commit) => commit,
        Err(e) => return ended(ResultOutcome::Failed, format!("cannot commit: {e}")),
    };
    if let Err(e) = workspace.push(&task.branch, token) {
        return ended(
            ResultOutcome::Failed,
            format!("cannot push {}: {e}", task.branch),
        );
    }
    tracing::info!(branch = %task.branch, commit = %commit, files = changes.files.len(), "pushed the change");
    AgentResult {
        branch: Some(task.branch.clone()),
        commit: Some(commit),
        files_changed: u32::try_from(changes.files.len()).unwrap_or(u32::MAX),
        lines_added: changes.additions,
        lines_removed: changes.deletions,
        summary: Some(work.summary).filter(|s| !s.is_empty()),
        verification,
        ..blank(ResultOutcome::Succeeded)
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

/// The first file whose added lines contain the repository token.
fn contains_token(changes: &ChangeSet, token: &SecretString) -> Option<String> {
    let secret = token.expose_secret();
    changes
        .files
        .iter()
        .find(|f| f.added_lines.iter().any(|l| l.text.contains(secret)))
        .map(|f| f.path.clone())
}
