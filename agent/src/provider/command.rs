//! The `command` provider: a command-line coding agent (`claude -p`, `aider`, `codex exec`
//! …) from the Agent's `providers[].command`, run in the workspace and trusted to make the
//! change itself.
//!
//! The task prompt is written to the command's standard input, which is then closed. The
//! command sees a cleared environment with only [`PASSED_ENV`] and the variables the Agent
//! names in `command.env` (which the pod got from Secrets); never the repository token or
//! anything else of Countersign's (`COUNTERSIGN_*`). It runs within the attempt's remaining
//! time, and each run counts as one turn of the budget (its tokens are unknown).

use std::path::{Path, PathBuf};

use countersign_crds::agent::Provider as ProviderSpec;

use super::{Budget, Job, JobKind, Limit, Provider, ProviderError, Work};
use crate::process::{self, Spec, Status};
use crate::secret_scan;

/// Variables of the pod every command agent gets, when the pod has them.
pub const PASSED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TERM"];

/// Prefix of the agent's own variables, which `command.env` may not pass on.
const RESERVED_PREFIX: &str = "COUNTERSIGN_";

/// Lines of output kept as a job's summary.
const SUMMARY_LINES: usize = 20;

/// Lines of output quoted when the command fails.
const ERROR_LINES: usize = 10;

/// A command-line coding agent working in one workspace.
#[derive(Debug)]
pub struct CommandAgent {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    dir: PathBuf,
    job: Option<Job>,
}

impl CommandAgent {
    /// The command agent of `spec` (which needs `command`), working in `workspace`, with
    /// its variables taken from the agent's own environment.
    pub fn new(spec: &ProviderSpec, workspace: &Path) -> Result<CommandAgent, ProviderError> {
        Self::with_env(spec, workspace, |name| std::env::var(name).ok())
    }

    /// Like [`CommandAgent::new`], with the variables looked up by `lookup` instead of in
    /// the agent's environment.
    pub fn with_env(
        spec: &ProviderSpec,
        workspace: &Path,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<CommandAgent, ProviderError> {
        let command = spec.command.as_ref().ok_or_else(|| {
            ProviderError::Refused(format!(
                "provider {} is of kind command but has no `command`",
                spec.name
            ))
        })?;
        let Some((program, args)) = command.command.split_first() else {
            return Err(ProviderError::Refused(format!(
                "provider {} has an empty `command`",
                spec.name
            )));
        };
        if let Some(var) = command
            .env
            .iter()
            .find(|var| var.name.to_ascii_uppercase().starts_with(RESERVED_PREFIX))
        {
            return Err(ProviderError::Refused(format!(
                "provider {} may not pass {} to the coding agent: {RESERVED_PREFIX}* variables \
                 belong to Countersign",
                spec.name, var.name
            )));
        }
        let names = PASSED_ENV
            .iter()
            .copied()
            .chain(command.env.iter().map(|var| var.name.as_str()));
        let mut env: Vec<(String, String)> = Vec::new();
        for name in names {
            if env.iter().any(|(known, _)| known == name) {
                continue;
            }
            match lookup(name) {
                Some(value) => env.push((name.to_owned(), value)),
                None if PASSED_ENV.contains(&name) => {}
                None => tracing::warn!(
                    provider = %spec.name,
                    variable = name,
                    "a variable of command.env is not set in the pod"
                ),
            }
        }
        Ok(CommandAgent {
            program: program.clone(),
            args: args.to_vec(),
            env,
            dir: workspace.to_owned(),
            job: None,
        })
    }

    /// The command agent of `spec` reaching its model through the provider gateway: its
    /// environment is [`PASSED_ENV`] from this process plus `gateway_env` (base URLs and the
    /// attempt's gateway token). `command.env` is not passed on: values from Secrets never
    /// reach the work step.
    pub fn with_gateway_env(
        spec: &ProviderSpec,
        workspace: &Path,
        gateway_env: Vec<(String, String)>,
    ) -> Result<CommandAgent, ProviderError> {
        let mut spec = spec.clone();
        if let Some(command) = spec.command.as_mut()
            && !command.env.is_empty()
        {
            tracing::warn!(
                provider = %spec.name,
                "command.env is not passed to the coding agent: secrets never reach the work step"
            );
            command.env.clear();
        }
        let mut agent = Self::new(&spec, workspace)?;
        for (name, value) in gateway_env {
            agent.env.retain(|(known, _)| *known != name);
            agent.env.push((name, value));
        }
        Ok(agent)
    }

    /// Runs the command once with `prompt` on its standard input.
    fn run(
        &self,
        kind: &JobKind,
        prompt: &str,
        budget: &mut Budget,
    ) -> Result<Work, ProviderError> {
        if let Some(limit) = budget.exhausted() {
            return Err(ProviderError::OutOfBudget(limit));
        }
        let spec = Spec {
            program: self.program.clone(),
            args: self.args.clone(),
            dir: self.dir.clone(),
            env: self.env.clone(),
            stdin: Some(prompt.to_owned()),
            timeout: budget.remaining(),
        };
        let outcome = process::run(&spec)
            .map_err(|e| ProviderError::Command(format!("cannot start {}: {e}", self.program)));
        // A run is a turn whether it worked or not; a command agent reports no tokens.
        budget.record_turn(0, 0);
        let outcome = outcome?;
        tracing::info!(
            status = %outcome.status,
            elapsed = ?outcome.elapsed,
            output_bytes = outcome.output_bytes,
            "the coding agent command ended"
        );
        let output = secret_scan::redact(&outcome.output_tail);
        let quoted = |n| match process::last_lines(&output, n).trim() {
            "" => String::from("(no output)"),
            lines => lines.to_owned(),
        };
        match outcome.status {
            Status::Exited(0) => Ok(Work {
                summary: process::last_lines(&output, SUMMARY_LINES)
                    .trim()
                    .to_owned(),
                report: match kind {
                    JobKind::Change => None,
                    JobKind::Plan | JobKind::Analyse | JobKind::Breakdown => {
                        Some(output.trim().to_owned())
                    }
                },
                question: None,
            }),
            Status::TimedOut => Err(ProviderError::OutOfBudget(Limit::Time)),
            status => Err(ProviderError::Command(format!(
                "{status}: {}",
                quoted(ERROR_LINES)
            ))),
        }
    }
}

impl Provider for CommandAgent {
    fn start(&mut self, job: &Job, budget: &mut Budget) -> Result<Work, ProviderError> {
        self.job = Some(job.clone());
        self.run(&job.kind, &job.prompt, budget)
    }

    fn follow_up(&mut self, feedback: &str, budget: &mut Budget) -> Result<Work, ProviderError> {
        let Some(job) = &self.job else {
            return Err(ProviderError::Command(
                "a follow-up needs a started job".into(),
            ));
        };
        // The command keeps no state between runs; the workspace does. So it gets the
        // whole task again, with the feedback on what its earlier run left.
        let prompt = format!(
            "{}\n\n## Follow-up\n\nYour earlier changes are in the workspace. Continue from \
             them:\n\n{}\n",
            job.prompt.trim_end(),
            feedback.trim()
        );
        self.run(&job.kind, &prompt, budget)
    }
}
