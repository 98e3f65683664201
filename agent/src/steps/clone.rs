//! The `clone` step: the only step before `push` that holds a repository token (a read-only
//! one, revoked by the controller as soon as this step ends). It clones the base branch into
//! `<workspace>/repo`, leaving no credential, credential helper or authenticated URL in the
//! checkout, and writes the base commit to the hand-off directory, which only `push` mounts
//! besides this step. Nothing model-written has run yet, so its result is trusted: when it
//! fails, its termination message is the attempt's result.

use std::path::Path;

use countersign_crds::result::{AgentResult, ResultOutcome};
use serde::{Deserialize, Serialize};

use super::{ended, read_task, read_token, set_git_timeouts, write_text};
use crate::config::StepArgs;
use crate::workspace::Workspace;

/// File in the hand-off directory holding [`Handoff`].
pub const HANDOFF_FILE: &str = "base.json";

/// What `clone` tells `push`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Handoff {
    /// The commit the change is based on (the base branch's tip when cloned).
    pub base_commit: String,
}

impl Handoff {
    /// Reads the hand-off file from `dir`.
    pub fn read(dir: &Path) -> Result<Handoff, String> {
        let path = dir.join(HANDOFF_FILE);
        let bytes = super::read_capped(&path, 4096).map_err(|e| {
            format!(
                "cannot read what the clone step left ({}): {e}",
                path.display()
            )
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| format!("the clone step's hand-off is not valid: {e}"))
    }
}

/// Runs the clone step. `Ok(result)` with the result written to the termination log; the
/// process exits non-zero when the result is not a success.
pub fn run(args: &StepArgs) -> anyhow::Result<Result<Handoff, Box<AgentResult>>> {
    let outcome = clone(args);
    match &outcome {
        Ok(handoff) => write_text(
            &args.termination_log,
            &format!("cloned base {}", handoff.base_commit),
        )?,
        Err(result) => write_text(&args.termination_log, &result.to_message())?,
    }
    Ok(outcome)
}

/// The clone; a failure is the attempt's result (boxed: it is large and rare).
fn clone(args: &StepArgs) -> Result<Handoff, Box<AgentResult>> {
    let fail = |reason: String| Box::new(ended(ResultOutcome::Failed, reason));
    let task = read_task(&args.task_file()).map_err(fail)?;
    let token = read_token(&args.clone_token_file(), "clone token").map_err(fail)?;
    set_git_timeouts();
    crate::publish::isolate_from_user_config()
        .map_err(|e| fail(format!("cannot prepare git: {e}")))?;
    let dir = args.repo_dir();
    let workspace = Workspace::clone_repo(
        &task.repository.clone_url,
        &token,
        task.clone_branch(),
        &dir,
    )
    .map_err(|e| {
        let mut result = fail(format!("cannot clone: {e}"));
        result.provider = Some(task.provider.name.clone());
        result
    })?;
    if task.extend_branch {
        workspace
            .fetch_tip(&token, &task.repository.default_branch)
            .map_err(|e| {
                fail(format!(
                    "cannot fetch {}: {e}",
                    task.repository.default_branch
                ))
            })?;
    }
    let handoff = Handoff {
        base_commit: workspace.base_commit(),
    };
    std::fs::create_dir_all(&args.handoff_dir)
        .and_then(|()| {
            std::fs::write(
                args.handoff_dir.join(HANDOFF_FILE),
                serde_json::to_vec(&handoff).expect("a hand-off always serialises"),
            )
        })
        .map_err(|e| fail(format!("cannot write the hand-off for the push step: {e}")))?;
    tracing::info!(run = %task.run, attempt = task.attempt, base = %handoff.base_commit, "cloned");
    Ok(handoff)
}
