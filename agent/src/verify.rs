//! Runs the Agent's verify commands (`spec.verify`, e.g. `cargo test`) in the workspace
//! before anything is pushed, in order, each within its own timeout and the attempt's
//! deadline, stopping at the first failure. The report gives the run a one-line
//! verification for the pull request, and the coding agent feedback to fix a failure with.
//!
//! Commands run without a shell (`["sh", "-c", "…"]` when the user wants one), through
//! [`crate::process`], with the environment the caller gives: usually [`environment`], the
//! pod's own minus Countersign's variables, since builds and tests need the image's
//! toolchain settings (`CARGO_HOME`, `GOPATH`, `JAVA_HOME` …) that no fixed list foresees.

use std::path::Path;
use std::time::{Duration, Instant};

use countersign_crds::GoDuration;
use countersign_crds::agent::VerifyCommand;

use crate::process::{self, Spec, Status};
use crate::secret_scan;

/// Why a verify command failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// It exited with this non-zero code.
    ExitCode(i32),
    /// A signal ended it.
    Signal(i32),
    /// It ran longer than its own `timeout`.
    TimedOut(Duration),
    /// The attempt's deadline came first (the command was cut short or not started).
    OutOfTime,
    /// It could not be started (no such program, empty command).
    NotStarted(String),
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureReason::ExitCode(code) => write!(f, "exit code {code}"),
            FailureReason::Signal(signal) => write!(f, "killed by signal {signal}"),
            FailureReason::TimedOut(limit) => write!(f, "timed out after {}", GoDuration(*limit)),
            FailureReason::OutOfTime => f.write_str("out of the attempt's time"),
            FailureReason::NotStarted(why) => write!(f, "could not start: {why}"),
        }
    }
}

/// The verify command that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its name, e.g. `unit-tests`.
    pub name: String,
    /// Why it failed.
    pub reason: FailureReason,
    /// The end of its output, credentials redacted.
    pub output_tail: String,
    /// How many bytes of output it wrote in all.
    pub output_bytes: u64,
}

/// How the verify commands went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Whether every command passed (also when there are none).
    pub passed: bool,
    /// The command that failed; the ones after it did not run.
    pub failed: Option<Failure>,
    /// One line for the result and the pull request, e.g. `unit-tests passed; lint failed
    /// (exit code 1)`. Empty when there are no commands.
    pub summary_line: String,
    /// For the coding agent when a command failed: which one, why, and the end of its
    /// output. Empty when all passed.
    pub feedback: String,
}

/// Prefix of the agent's own variables (task file, token file, provider key), which verify
/// commands never see.
const RESERVED_PREFIX: &str = "COUNTERSIGN_";

/// The environment for verify commands: the agent's own, without Countersign's variables
/// (`COUNTERSIGN_*`) and without the variables named in `hidden` (e.g. the `command`
/// provider's API keys).
pub fn environment(hidden: &[&str]) -> Vec<(String, String)> {
    without_reserved(std::env::vars(), hidden)
}

fn without_reserved(
    vars: impl Iterator<Item = (String, String)>,
    hidden: &[&str],
) -> Vec<(String, String)> {
    vars.filter(|(name, _)| {
        !name.to_ascii_uppercase().starts_with(RESERVED_PREFIX) && !hidden.contains(&name.as_str())
    })
    .collect()
}

/// Runs `commands` in `dir` in order with environment `env` (nothing else is inherited),
/// until one fails or `time_left` (the attempt's remaining time) runs out.
pub fn run_all(
    commands: &[VerifyCommand],
    dir: &Path,
    env: &[(String, String)],
    time_left: Duration,
) -> VerifyReport {
    let deadline = Instant::now() + time_left;
    let mut lines = Vec::with_capacity(commands.len());
    for (i, command) in commands.iter().enumerate() {
        match run_one(command, dir, env, deadline) {
            Ok(elapsed) => {
                tracing::info!(name = %command.name, ?elapsed, "verify command passed");
                lines.push(format!("{} passed", command.name));
            }
            Err(failure) => {
                tracing::info!(name = %command.name, reason = %failure.reason, "verify command failed");
                lines.push(format!("{} failed ({})", command.name, failure.reason));
                lines.extend(
                    commands[i + 1..]
                        .iter()
                        .map(|c| format!("{} not run", c.name)),
                );
                return VerifyReport {
                    passed: false,
                    feedback: feedback(command, &failure),
                    failed: Some(failure),
                    summary_line: lines.join("; "),
                };
            }
        }
    }
    VerifyReport {
        passed: true,
        failed: None,
        summary_line: lines.join("; "),
        feedback: String::new(),
    }
}

fn run_one(
    command: &VerifyCommand,
    dir: &Path,
    env: &[(String, String)],
    deadline: Instant,
) -> Result<Duration, Failure> {
    let failure = |reason, output_tail: String, output_bytes| Failure {
        name: command.name.clone(),
        reason,
        output_tail,
        output_bytes,
    };
    let Some((program, args)) = command.command.split_first() else {
        return Err(failure(
            FailureReason::NotStarted("the command is empty".into()),
            String::new(),
            0,
        ));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(failure(FailureReason::OutOfTime, String::new(), 0));
    }
    let own = command.timeout().0;
    let spec = Spec {
        program: program.clone(),
        args: args.to_vec(),
        dir: dir.to_owned(),
        env: env.to_vec(),
        stdin: None,
        timeout: own.min(left),
    };
    let outcome = process::run(&spec).map_err(|e| {
        failure(
            FailureReason::NotStarted(format!("{program}: {e}")),
            String::new(),
            0,
        )
    })?;
    let reason = match outcome.status {
        Status::Exited(0) => return Ok(outcome.elapsed),
        Status::Exited(code) => FailureReason::ExitCode(code),
        Status::Signalled(signal) => FailureReason::Signal(signal),
        Status::TimedOut if left < own => FailureReason::OutOfTime,
        Status::TimedOut => FailureReason::TimedOut(own),
    };
    Err(failure(
        reason,
        secret_scan::redact(&outcome.output_tail),
        outcome.output_bytes,
    ))
}

/// Tells the coding agent which check failed and shows the end of its output.
fn feedback(command: &VerifyCommand, failure: &Failure) -> String {
    let shown = secret_scan::redact(&command.command.join(" "));
    let mut text = format!(
        "The verify command `{}` (`{shown}`) failed: {}.\n",
        failure.name, failure.reason
    );
    text.push_str(match failure.reason {
        FailureReason::TimedOut(_) | FailureReason::OutOfTime => {
            "It must finish in time: fix what hangs or is too slow, and keep the change otherwise as it is.\n"
        }
        FailureReason::NotStarted(_) => {
            "It could not be run in this workspace; make sure the change does not break how it is started.\n"
        }
        _ => "Fix the cause, keep the change otherwise as it is, and make sure the command passes.\n",
    });
    if failure.output_tail.trim().is_empty() {
        text.push_str("It printed nothing.\n");
        return text;
    }
    let shown_bytes = failure.output_tail.len() as u64;
    if failure.output_bytes > shown_bytes {
        text.push_str(&format!(
            "The last {shown_bytes} of its {} bytes of output:\n",
            failure.output_bytes
        ));
    } else {
        text.push_str("Its output:\n");
    }
    text.push_str(&fenced(&failure.output_tail));
    text
}

/// `text` in a Markdown code fence longer than any run of backticks inside it.
fn fenced(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}\n{}\n{fence}\n", text.trim_end())
}

#[cfg(test)]
mod tests;
