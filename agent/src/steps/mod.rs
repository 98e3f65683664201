//! The three steps of an agent pod, each its own container and process, in this order:
//!
//! 1. [`clone`] (trusted; holds the read-only clone token): clones the base branch into the
//!    workspace and writes the base commit to the hand-off volume the `work` step cannot see.
//! 2. [`work`] (runs model-written code; no GitHub token, no provider key): the model/tool
//!    loop through the provider gateway, guardrails and verify rounds, one local commit, and
//!    a report for the push step.
//! 3. [`push`] (trusted; holds the push token): re-checks the reported commit in a repository
//!    of its own, pushes only `refs/heads/countersign/<run>` and writes the result the
//!    controller reads.
//!
//! What one step hands the next is data, never code or configuration: the checkout's objects
//! and a small JSON report, both checked by the step that reads them.

pub mod clone;
pub mod push;
pub mod work;

use std::path::Path;

use countersign_crds::RunMode;
use countersign_crds::result::{AgentResult, RESULT_VERSION, ResultOutcome};
use countersign_crds::task_file::{TASK_FILE_VERSION, TaskFile};
use secrecy::SecretString;

use crate::provider::JobKind;

/// Whether `outcome` means the attempt did its job (exit code 0 of the push step).
pub fn is_success(outcome: ResultOutcome) -> bool {
    matches!(
        outcome,
        ResultOutcome::Succeeded
            | ResultOutcome::NoChanges
            | ResultOutcome::PlanReady
            | ResultOutcome::Question
    )
}

/// Which job the task asks for: a plan (control mode before approval), an analysis
/// (observation mode), or a change.
pub fn job_kind(task: &TaskFile) -> JobKind {
    if task.breakdown {
        JobKind::Breakdown
    } else if task.is_planning() {
        JobKind::Plan
    } else if task.mode == RunMode::Observation {
        JobKind::Analyse
    } else {
        JobKind::Change
    }
}

pub(crate) fn write_text(path: &Path, message: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::write(path, message).with_context(|| format!("Cannot write {}", path.display()))
}

/// A result with only an outcome and a reason.
pub(crate) fn ended(outcome: ResultOutcome, reason: impl Into<String>) -> AgentResult {
    AgentResult {
        reason: Some(reason.into()),
        ..blank(outcome)
    }
}

/// A result with only an outcome.
pub(crate) fn blank(outcome: ResultOutcome) -> AgentResult {
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

pub(crate) fn read_task(path: &Path) -> Result<TaskFile, String> {
    let bytes = read_capped(path, MAX_TASK_BYTES)
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

/// Largest task file read (the Secret holding it is capped at 1 MiB anyway).
const MAX_TASK_BYTES: u64 = 1024 * 1024;

pub(crate) fn read_token(path: &Path, what: &str) -> Result<SecretString, String> {
    let bytes = read_capped(path, 4096)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("the {what} file {} is empty", path.display()));
    }
    Ok(SecretString::from(token.to_owned()))
}

/// Reads at most `max` bytes of `path`; a longer file is an error.
pub(crate) fn read_capped(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// Connect and read timeouts for every git connection of this process.
pub(crate) fn set_git_timeouts() {
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
