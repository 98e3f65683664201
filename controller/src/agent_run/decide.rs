//! The AgentRun state machine as a pure function: what the run's status should be and what
//! to do next, given the run, what it depends on, its pods and the time.
//!
//! ```text
//! Pending ─► Queued ─► Running ─► Succeeded
//!    │         ▲          │  ├──► Failed     (retries used up, guardrail, unreadable result)
//!    │         │          │  ├──► TimedOut   (attempt ran past its timeout)
//!    └─────────┴──────────┴──┴──► Cancelled  (spec.cancelRequested)
//! ```
//! Failed attempts are retried with exponential backoff; provider errors and rate limits move
//! the next attempt to the Agent's next provider. Attempts are derived from the pods as well
//! as from the status, so a status write lost between creating a pod and recording it never
//! leads to a second pod for the same attempt.

use std::time::Duration;

use countersign_crds::agent_run::{Attempt, AttemptOutcome};
use countersign_crds::conditions::{self, Readiness};
use countersign_crds::result::{AgentResult, ResultError, ResultOutcome};
use countersign_crds::{Agent, AgentRun, AgentRunStatus, RunPhase, Usd};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::capacity::Admission;
use super::resources::{ATTEMPT_LABEL, PROVIDER_LABEL, attempt_name};
use crate::settings::Settings;

/// What the controller observed about one of the run's pods.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Attempt number from the pod's label.
    pub attempt: u32,
    /// Provider entry from the pod's label.
    pub provider: String,
    /// Whether the pod is being deleted.
    pub deleting: bool,
    /// How far the pod got.
    pub state: PodState,
}

/// How far a pod got.
#[derive(Clone, Debug, PartialEq)]
pub enum PodState {
    /// Scheduled, pulling or running.
    Active,
    /// The container ended.
    Terminated {
        /// Exit code of the agent container.
        exit_code: i32,
        /// Its termination message.
        message: String,
        /// The kubelet stopped it at `activeDeadlineSeconds`.
        deadline_exceeded: bool,
    },
}

impl PodView {
    /// Reads a pod of this run; `None` for pods without our attempt label.
    pub fn of(pod: &Pod) -> Option<PodView> {
        let labels = pod.labels();
        let attempt = labels.get(ATTEMPT_LABEL)?.parse().ok()?;
        let provider = labels.get(PROVIDER_LABEL).cloned().unwrap_or_default();
        let status = pod.status.as_ref();
        let terminated = status
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == "agent").or(c.first()))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let deadline_exceeded =
            status.and_then(|s| s.reason.as_deref()) == Some("DeadlineExceeded");
        let state = match (phase, terminated) {
            ("Succeeded" | "Failed", Some(t)) => PodState::Terminated {
                exit_code: t.exit_code,
                message: t.message.clone().unwrap_or_default(),
                deadline_exceeded,
            },
            ("Succeeded" | "Failed", None) => PodState::Terminated {
                exit_code: if phase == "Succeeded" { 0 } else { 1 },
                message: String::new(),
                deadline_exceeded,
            },
            _ => PodState::Active,
        };
        Some(PodView {
            name: pod.name_any(),
            attempt,
            provider,
            deleting: pod.metadata.deletion_timestamp.is_some(),
            state,
        })
    }
}

/// Why a run cannot start, found by the async shell before deciding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// The referenced Agent does not exist.
    AgentMissing,
    /// The referenced Project does not exist.
    ProjectMissing,
    /// The Agent cannot run: suspended, or a Secret it needs is missing.
    AgentNotReady(String),
    /// No credentials for the repository can be had, and none will without a human.
    NoCredentials(String),
}

impl Blocker {
    fn reason(&self) -> &'static str {
        match self {
            Self::AgentMissing => "AgentNotFound",
            Self::ProjectMissing => "ProjectNotFound",
            Self::AgentNotReady(_) => "AgentNotReady",
            Self::NoCredentials(_) => "NoCredentials",
        }
    }

    fn message(&self, run: &AgentRun) -> String {
        match self {
            Self::AgentMissing => format!("Agent {:?} does not exist", run.spec.agent_ref.name),
            Self::ProjectMissing => {
                format!("Project {:?} does not exist", run.spec.project_ref.name)
            }
            Self::AgentNotReady(why) | Self::NoCredentials(why) => why.clone(),
        }
    }
}

/// Everything [`decide`] looks at.
pub struct Inputs<'a> {
    /// The run.
    pub run: &'a AgentRun,
    /// Its Agent, when it exists.
    pub agent: Option<&'a Agent>,
    /// What stops the run from starting, if anything.
    pub blocker: Option<Blocker>,
    /// The admission decision, when the run is waiting to start.
    pub admission: Option<Admission>,
    /// The run's pods.
    pub pods: &'a [PodView],
    /// Now.
    pub now: Timestamp,
    /// Backoff and requeue settings.
    pub settings: &'a Settings,
}

/// Something the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the Secret, NetworkPolicy and Pod of an attempt.
    StartAttempt {
        /// Attempt number, from 1.
        number: u32,
        /// Index into the Agent's providers.
        provider: usize,
    },
    /// Delete these pods (cancel, timeout).
    DeletePods(Vec<String>),
    /// Delete the run itself (TTL after finishing).
    DeleteRun,
}

/// A Kubernetes Event to record on the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// `Normal` or `Warning`.
    pub warning: bool,
    /// CamelCase reason.
    pub reason: &'static str,
    /// For people.
    pub message: String,
}

/// What [`decide`] concluded.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write.
    pub status: AgentRunStatus,
    /// What to do.
    pub actions: Vec<Action>,
    /// When to look again even without a change.
    pub requeue: Option<Duration>,
    /// Events to record.
    pub notes: Vec<Note>,
}

/// Whether the run is waiting for admission: not finished, not cancelled, no attempt yet.
pub fn wants_admission(run: &AgentRun, pods: &[PodView]) -> bool {
    let status = run.status.as_ref();
    let phase = status.map(|s| s.phase).unwrap_or_default();
    !phase.is_finished()
        && !run.spec.cancel_requested
        && status.is_none_or(|s| s.attempts.is_empty())
        && pods.is_empty()
}

/// How the last attempt's ending affects the run.
enum Next {
    /// The run is done.
    Finish(RunPhase, String),
    /// Try again, on the same provider or the next one.
    Retry { next_provider: bool, why: String },
}

/// Decides the run's status and next actions.
pub fn decide(i: &Inputs<'_>) -> Decision {
    let run = i.run;
    let mut d = Decision {
        status: run.status.clone().unwrap_or_default(),
        actions: Vec::new(),
        requeue: None,
        notes: Vec::new(),
    };
    d.status.observed_generation = run.metadata.generation;
    let before = d.status.phase;
    adopt_unrecorded_pods(&mut d.status, i.pods, i.now);
    let mut blocked = false;

    if before.is_finished() {
        expire_after_ttl(i, &mut d);
    } else if run.spec.cancel_requested {
        cancel(i, &mut d);
    } else if let Some(blocker) = i.blocker.as_ref().filter(|_| d.status.attempts.is_empty()) {
        let message = blocker.message(run);
        d.status.phase = RunPhase::Pending;
        set_readiness(
            &mut d,
            Readiness::Stalled {
                reason: blocker.reason().into(),
                message: message.clone(),
            },
            i.now,
        );
        d.status.message = Some(message);
        d.requeue = Some(i.settings.wait_requeue);
        blocked = true;
    } else if d.status.attempts.is_empty() {
        admit(i, &mut d);
    } else {
        follow_attempt(i, &mut d);
    }

    if d.status.phase != before {
        transition_note(&mut d, before);
    }
    if !blocked {
        let message = d.status.message.clone().unwrap_or_default();
        let readiness = d.status.phase.readiness(&message);
        set_readiness(&mut d, readiness, i.now);
    }
    d
}

fn set_readiness(d: &mut Decision, readiness: Readiness, now: Timestamp) {
    let generation = d.status.observed_generation;
    conditions::apply_readiness(&mut d.status.conditions, &readiness, generation, now);
}

/// Records pods whose attempt the status does not know (a status write was lost).
fn adopt_unrecorded_pods(status: &mut AgentRunStatus, pods: &[PodView], now: Timestamp) {
    let mut pods: Vec<&PodView> = pods.iter().collect();
    pods.sort_by_key(|p| p.attempt);
    for pod in pods {
        if !status.attempts.iter().any(|a| a.number == pod.attempt) {
            status.attempts.push(Attempt {
                number: pod.attempt,
                pod: pod.name.clone(),
                provider: pod.provider.clone(),
                start_time: Some(Time(now)),
                finish_time: None,
                outcome: None,
                reason: None,
            });
            status.start_time.get_or_insert(Time(now));
        }
    }
    status.attempts.sort_by_key(|a| a.number);
}

fn expire_after_ttl(i: &Inputs<'_>, d: &mut Decision) {
    let (Some(ttl), Some(done)) = (
        i.run.spec.ttl_seconds_after_finished,
        d.status.completion_time.as_ref(),
    ) else {
        return;
    };
    let expires = done
        .0
        .saturating_add(SignedDuration::from_secs(i64::from(ttl)))
        .unwrap_or(Timestamp::MAX);
    if i.now >= expires {
        d.actions.push(Action::DeleteRun);
    } else {
        d.requeue = Some(until(i.now, expires));
    }
}

fn cancel(i: &Inputs<'_>, d: &mut Decision) {
    let active: Vec<String> = i
        .pods
        .iter()
        .filter(|p| p.state == PodState::Active && !p.deleting)
        .map(|p| p.name.clone())
        .collect();
    if !active.is_empty() {
        d.actions.push(Action::DeletePods(active));
    }
    if let Some(last) = d.status.attempts.last_mut().filter(|a| a.outcome.is_none()) {
        last.outcome = Some(AttemptOutcome::Cancelled);
        last.finish_time = Some(Time(i.now));
        last.reason = Some("cancelled on request".into());
    }
    finish(d, RunPhase::Cancelled, "Cancelled on request".into(), i.now);
}

fn admit(i: &Inputs<'_>, d: &mut Decision) {
    match &i.admission {
        Some(Admission::Admit) => start_attempt(i, d, 1, 0),
        Some(Admission::Wait(why)) => {
            d.status.phase = RunPhase::Queued;
            d.status.message = Some(why.clone());
            d.requeue = Some(i.settings.wait_requeue);
        }
        None => d.requeue = Some(i.settings.wait_requeue),
    }
}

fn start_attempt(i: &Inputs<'_>, d: &mut Decision, number: u32, provider: usize) {
    let Some(agent) = i.agent else {
        d.requeue = Some(i.settings.wait_requeue);
        return;
    };
    let provider = provider.min(agent.spec.providers.len().saturating_sub(1));
    let provider_name = agent
        .spec
        .providers
        .get(provider)
        .map(|p| p.name.clone())
        .unwrap_or_default();
    d.status.attempts.push(Attempt {
        number,
        pod: attempt_name(&i.run.name_any(), number),
        provider: provider_name.clone(),
        start_time: Some(Time(i.now)),
        finish_time: None,
        outcome: None,
        reason: None,
    });
    d.status.start_time.get_or_insert(Time(i.now));
    d.status.phase = RunPhase::Running;
    d.status.message = Some(format!(
        "Attempt {number} running on provider {provider_name}"
    ));
    d.actions.push(Action::StartAttempt { number, provider });
    d.notes.push(Note {
        warning: false,
        reason: "AttemptStarted",
        message: format!("Started attempt {number} on provider {provider_name}"),
    });
}

fn follow_attempt(i: &Inputs<'_>, d: &mut Decision) {
    let Some(last) = d.status.attempts.last().cloned() else {
        return;
    };
    if last.outcome.is_none() {
        let pod = i.pods.iter().find(|p| p.attempt == last.number);
        let outcome = match pod.map(|p| &p.state) {
            None => Some((
                AttemptOutcome::Failed,
                "the attempt's pod disappeared".to_owned(),
                None,
            )),
            Some(PodState::Active) => {
                watch_timeout(i, d, &last, pod.map(|p| p.name.clone()));
                return;
            }
            Some(PodState::Terminated {
                exit_code,
                message,
                deadline_exceeded,
            }) => Some(classify(*exit_code, message, *deadline_exceeded)),
        };
        if let Some((outcome, reason, result)) = outcome {
            record_outcome(d, outcome, &reason, result.as_ref(), i.now);
        }
    }
    let Some(last) = d.status.attempts.last().cloned() else {
        return;
    };
    match next_after(&last) {
        Next::Finish(phase, message) => finish(d, phase, message, i.now),
        Next::Retry { next_provider, why } => retry(i, d, &last, next_provider, why),
    }
}

fn watch_timeout(i: &Inputs<'_>, d: &mut Decision, last: &Attempt, pod: Option<String>) {
    let timeout = i
        .run
        .spec
        .timeout
        .or(i.agent.map(|a| a.spec.limits.timeout))
        .map_or(Duration::from_secs(30 * 60), |t| t.0);
    let started = last.start_time.as_ref().map_or(i.now, |t| t.0);
    let give_up = started
        .saturating_add(
            SignedDuration::try_from(timeout + i.settings.timeout_grace)
                .unwrap_or(SignedDuration::MAX),
        )
        .unwrap_or(Timestamp::MAX);
    if i.now >= give_up {
        d.actions
            .push(Action::DeletePods(pod.into_iter().collect()));
        let reason = format!(
            "the attempt ran longer than its timeout of {}",
            countersign_crds::GoDuration(timeout)
        );
        record_outcome(d, AttemptOutcome::TimedOut, &reason, None, i.now);
        finish(d, RunPhase::TimedOut, reason, i.now);
    } else {
        d.status.phase = RunPhase::Running;
        d.requeue = Some(until(i.now, give_up));
    }
}

/// Reads an ended attempt: its outcome, a reason for people and the result when readable.
fn classify(
    exit_code: i32,
    message: &str,
    deadline_exceeded: bool,
) -> (AttemptOutcome, String, Option<AgentResult>) {
    if deadline_exceeded {
        return (
            AttemptOutcome::TimedOut,
            "the attempt ran longer than its timeout".into(),
            None,
        );
    }
    match AgentResult::parse(message) {
        Ok(result) => {
            let reason = result
                .reason
                .clone()
                .or_else(|| result.summary.clone())
                .unwrap_or_default();
            let outcome = match result.outcome {
                ResultOutcome::Succeeded | ResultOutcome::NoChanges | ResultOutcome::PlanReady => {
                    AttemptOutcome::Succeeded
                }
                ResultOutcome::ProviderError => AttemptOutcome::ProviderError,
                ResultOutcome::RateLimited => AttemptOutcome::RateLimited,
                ResultOutcome::GuardrailViolation => AttemptOutcome::GuardrailViolation,
                ResultOutcome::Failed => AttemptOutcome::Failed,
            };
            (outcome, reason, Some(result))
        }
        // A crash: the message holds the log tail, which is not worth a status field.
        Err(ResultError::Malformed(_) | ResultError::Empty) if exit_code != 0 => (
            AttemptOutcome::Failed,
            format!("the agent exited with code {exit_code} without a result"),
            None,
        ),
        Err(err) => (AttemptOutcome::InvalidResult, err.to_string(), None),
    }
}

fn record_outcome(
    d: &mut Decision,
    outcome: AttemptOutcome,
    reason: &str,
    result: Option<&AgentResult>,
    now: Timestamp,
) {
    let Some(last) = d.status.attempts.last_mut() else {
        return;
    };
    last.outcome = Some(outcome);
    last.finish_time = Some(Time(now));
    last.reason = (!reason.is_empty()).then(|| truncate(reason, 1000));
    let (number, provider) = (last.number, last.provider.clone());
    if let Some(result) = result {
        let usage = &mut d.status.usage;
        usage.input_tokens += result.usage.input_tokens;
        usage.output_tokens += result.usage.output_tokens;
        usage.cost = Usd {
            cents: usage.cost.cents + result.usage.cost.cents,
        };
        if outcome == AttemptOutcome::Succeeded {
            d.status.branch = result.branch.clone();
            d.status.commit = result.commit.clone().filter(|c| is_sha(c));
        }
    }
    if outcome != AttemptOutcome::Succeeded {
        d.notes.push(Note {
            warning: true,
            reason: "AttemptFailed",
            message: truncate(
                &format!("Attempt {number} on provider {provider} ended {outcome:?}: {reason}"),
                1000,
            ),
        });
    }
}

/// Whether a recorded attempt ends the run, and how, or asks for another try.
fn next_after(last: &Attempt) -> Next {
    let reason = last.reason.clone().unwrap_or_default();
    match last.outcome {
        Some(AttemptOutcome::Succeeded) => {
            let message = if reason.is_empty() {
                "The agent finished".to_owned()
            } else {
                reason
            };
            Next::Finish(RunPhase::Succeeded, message)
        }
        Some(AttemptOutcome::TimedOut) => Next::Finish(RunPhase::TimedOut, reason),
        Some(AttemptOutcome::Cancelled) => Next::Finish(RunPhase::Cancelled, reason),
        Some(AttemptOutcome::GuardrailViolation) => Next::Finish(
            RunPhase::Failed,
            format!("A guardrail refused the change: {reason}"),
        ),
        Some(AttemptOutcome::ProviderError | AttemptOutcome::RateLimited) => Next::Retry {
            next_provider: true,
            why: reason,
        },
        // Unreadable results come from a broken agent image; retrying would only cost money.
        Some(AttemptOutcome::InvalidResult) => Next::Finish(RunPhase::Failed, reason),
        Some(AttemptOutcome::Failed) | None => Next::Retry {
            next_provider: false,
            why: reason,
        },
    }
}

fn retry(i: &Inputs<'_>, d: &mut Decision, last: &Attempt, next_provider: bool, why: String) {
    let made = d.status.attempts.len() as u32;
    if made > i.run.spec.retries {
        let message = format!("Failed after {made} attempt(s): {why}");
        return finish(d, RunPhase::Failed, message, i.now);
    }
    let providers = i.agent.map_or(1, |a| a.spec.providers.len().max(1));
    let current = i
        .agent
        .and_then(|a| {
            a.spec
                .providers
                .iter()
                .position(|p| p.name == last.provider)
        })
        .unwrap_or(0);
    let provider = if next_provider {
        (current + 1) % providers
    } else {
        current
    };
    let shift = made.saturating_sub(1).min(16);
    let delay = i
        .settings
        .retry_backoff_base
        .saturating_mul(1 << shift)
        .min(i.settings.retry_backoff_max);
    let failed_at = last.finish_time.as_ref().map_or(i.now, |t| t.0);
    let ready_at = failed_at
        .saturating_add(SignedDuration::try_from(delay).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    if i.now >= ready_at {
        start_attempt(i, d, made + 1, provider);
    } else {
        let name = i
            .agent
            .and_then(|a| a.spec.providers.get(provider))
            .map_or("", |p| p.name.as_str());
        d.status.phase = RunPhase::Running;
        d.status.message = Some(truncate(
            &format!(
                "Attempt {made} failed ({why}); attempt {} starts in {}s on provider {name}",
                made + 1,
                until(i.now, ready_at).as_secs()
            ),
            1000,
        ));
        d.requeue = Some(until(i.now, ready_at));
    }
}

fn finish(d: &mut Decision, phase: RunPhase, message: String, now: Timestamp) {
    d.status.phase = phase;
    d.status.message = Some(truncate(&message, 1000));
    d.status.completion_time.get_or_insert(Time(now));
}

fn transition_note(d: &mut Decision, before: RunPhase) {
    let phase = d.status.phase;
    let message = d.status.message.clone().unwrap_or_default();
    let (warning, reason) = match phase {
        RunPhase::Queued => (false, "Queued"),
        RunPhase::Running if before == RunPhase::Queued || before == RunPhase::Pending => return,
        RunPhase::Succeeded => (false, "Succeeded"),
        RunPhase::Failed => (true, "Failed"),
        RunPhase::TimedOut => (true, "TimedOut"),
        RunPhase::Cancelled => (false, "Cancelled"),
        RunPhase::Pending => (true, "Waiting"),
        _ => (false, "PhaseChanged"),
    };
    d.notes.push(Note {
        warning,
        reason,
        message: format!("{before:?} → {phase:?}: {message}"),
    });
}

fn until(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(then.duration_since(now))
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_millis(10))
}

fn is_sha(s: &str) -> bool {
    matches!(s.len(), 40 | 64)
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        text.chars().take(max_chars - 1).collect::<String>() + "…"
    }
}

#[cfg(test)]
mod tests;
