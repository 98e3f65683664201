//! The AgentRun state machine as a pure function: what the run's status should be and what
//! to do next, given the run, what it depends on, its pods and the time.
//!
//! ```text
//! Pending ─► Queued ─► Running ──────────────► PullRequestOpen ─► Succeeded (merged)
//!    │         ▲   │      │  ├──► Succeeded (no changes; analysis)    └──► Failed (closed)
//!    │         │   │      │  ├──► Failed     (retries used up, guardrail, unreadable result)
//!    │         │   │      │  ├──► TimedOut   (attempt ran past its timeout)
//!    │         │   └─► Planning ─► AwaitingPlanApproval ─/approve─► Queued/Running
//!    │         │                          └──/reject──► Cancelled
//!    └─────────┴──────────────────────────────────────► Cancelled  (spec.cancelRequested)
//! ```
//! Failed attempts are retried with exponential backoff; provider errors and rate limits move
//! the next attempt to the Agent's next provider. Attempts are derived from the pods as well
//! as from the status, so a status write lost between creating a pod and recording it never
//! leads to a second pod for the same attempt.
//!
//! In control mode the first successful attempt only writes a plan (`status.plan`); an
//! approver's `/approve` (the bot's `countersign.dev/last-command` annotation) lets the
//! coding attempts start, through admission like a new run; `/reject` ends the run. After a
//! pushed change the shell opens the pull request ([`Action::OpenPullRequest`]); the run then
//! follows its ApprovalGate until the pull request merges or closes.

use std::time::Duration;

use std::collections::BTreeMap;

use countersign_crds::agent_run::{Attempt, AttemptOutcome, TokenKind, Usage};
use countersign_crds::conditions::{self, Readiness};
use countersign_crds::result::{AgentResult, ResultOutcome};
use countersign_crds::task_file::Step;
use countersign_crds::{Agent, AgentRun, AgentRunStatus, GatePhase, RunPhase};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
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
    /// The Agent the pod runs as, from its label (its `label_value`).
    pub agent: Option<String>,
    /// Whether the pod is being deleted.
    pub deleting: bool,
    /// How far the pod got.
    pub state: PodState,
    /// Whether its `clone` step ended (its token is no longer needed).
    pub clone_ended: bool,
    /// Why it cannot start, while it has not started.
    pub start_problem: Option<StartProblem>,
}

/// Why a pod that has not started cannot start yet, as its status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartProblem {
    /// Kubernetes' reason: `ErrImagePull`, `ImagePullBackOff`, `CreateContainerConfigError`,
    /// `Unschedulable`, …
    pub reason: String,
    /// Kubernetes' message.
    pub message: String,
    /// Retrying cannot help (an invalid image name, an image never to be pulled).
    pub permanent: bool,
    /// No node fits the pod (waited for longer: an autoscaler may add one).
    pub unschedulable: bool,
}

/// Container waiting reasons that mean the container cannot start (the kubelet may keep
/// retrying), and whether retrying the attempt can help.
const START_FAILURES: &[(&str, bool)] = &[
    ("ErrImagePull", false),
    ("ImagePullBackOff", false),
    ("CreateContainerConfigError", false),
    ("CreateContainerError", false),
    ("RunContainerError", false),
    ("InvalidImageName", true),
    ("ErrImageNeverPull", true),
];

impl StartProblem {
    /// The problem `pod` reports while it has not started: a container waiting for a reason
    /// in [`START_FAILURES`] (init containers first), or `PodScheduled=False/Unschedulable`.
    fn of(pod: &Pod) -> Option<StartProblem> {
        let status = pod.status.as_ref()?;
        let containers = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in containers {
            let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
                continue;
            };
            let reason = waiting.reason.as_deref().unwrap_or_default();
            if let Some((_, permanent)) = START_FAILURES.iter().find(|(r, _)| *r == reason) {
                return Some(StartProblem {
                    reason: reason.to_owned(),
                    message: format!(
                        "container {}: {}",
                        container.name,
                        waiting.message.as_deref().unwrap_or("no message")
                    ),
                    permanent: *permanent,
                    unschedulable: false,
                });
            }
        }
        let unscheduled = status.conditions.iter().flatten().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?;
        Some(StartProblem {
            reason: "Unschedulable".into(),
            message: unscheduled.message.clone().unwrap_or_default(),
            permanent: false,
            unschedulable: true,
        })
    }
}

/// How far a pod got.
#[derive(Clone, Debug, PartialEq)]
pub enum PodState {
    /// Scheduled, pulling or running.
    Active,
    /// The pod ended.
    Terminated {
        /// Exit code of the step that ended it (`push`, or a failed init step).
        exit_code: i32,
        /// The termination message of a trusted step (`push`, or a failed `clone`): the
        /// attempt's result. Empty when the `work` step failed: what model-written code
        /// leaves there is never read.
        message: String,
        /// The kubelet stopped it at `activeDeadlineSeconds`.
        deadline_exceeded: bool,
        /// The init step that failed, when the pod ended before `push` ran.
        failed_step: Option<Step>,
    },
}

/// The terminated state of container `name` among `statuses`.
fn terminated_state<'a>(
    statuses: Option<&'a Vec<ContainerStatus>>,
    name: &str,
) -> Option<&'a ContainerStateTerminated> {
    statuses?
        .iter()
        .find(|c| c.name == name)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
}

impl PodView {
    /// Reads a pod of this run; `None` for pods without our attempt label. Only the `push`
    /// step's termination message (or a failed `clone` step's) is taken as a result.
    pub fn of(pod: &Pod) -> Option<PodView> {
        let labels = pod.labels();
        let attempt = labels.get(ATTEMPT_LABEL)?.parse().ok()?;
        let provider = labels.get(PROVIDER_LABEL).cloned().unwrap_or_default();
        let agent = labels.get(super::resources::AGENT_LABEL).cloned();
        let status = pod.status.as_ref();
        let main = status.and_then(|s| s.container_statuses.as_ref());
        let init = status.and_then(|s| s.init_container_statuses.as_ref());
        // `agent`: the single container of pods made before the three steps.
        let result =
            terminated_state(main, Step::Push.as_str()).or_else(|| terminated_state(main, "agent"));
        let clone = terminated_state(init, Step::Clone.as_str());
        let failed = |t: &&ContainerStateTerminated| t.exit_code != 0;
        let failed_init = clone.filter(failed).map(|t| (Step::Clone, t)).or_else(|| {
            terminated_state(init, Step::Work.as_str())
                .filter(failed)
                .map(|t| (Step::Work, t))
        });
        let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
        let deadline_exceeded =
            status.and_then(|s| s.reason.as_deref()) == Some("DeadlineExceeded");
        let state = match (phase, result, failed_init) {
            ("Succeeded" | "Failed", Some(t), _) => PodState::Terminated {
                exit_code: t.exit_code,
                message: t.message.clone().unwrap_or_default(),
                deadline_exceeded,
                failed_step: None,
            },
            ("Succeeded" | "Failed", None, Some((step, t))) => PodState::Terminated {
                exit_code: t.exit_code,
                message: if step == Step::Clone {
                    t.message.clone().unwrap_or_default()
                } else {
                    String::new()
                },
                deadline_exceeded,
                failed_step: Some(step),
            },
            ("Succeeded" | "Failed", None, None) => PodState::Terminated {
                exit_code: if phase == "Succeeded" { 0 } else { 1 },
                message: String::new(),
                deadline_exceeded,
                failed_step: None,
            },
            _ => PodState::Active,
        };
        Some(PodView {
            name: pod.name_any(),
            attempt,
            provider,
            agent,
            deleting: pod.metadata.deletion_timestamp.is_some(),
            start_problem: match state {
                PodState::Active => StartProblem::of(pod),
                PodState::Terminated { .. } => None,
            },
            state,
            clone_ended: clone.is_some(),
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
    /// The run names capabilities no ready Agent of its namespace has.
    NoCapableAgent(String),
    /// The run it follows up on is gone or has no pull request.
    NoFollowUpTarget(String),
    /// The Agent cannot run: suspended, or a Secret it needs is missing.
    AgentNotReady(String),
    /// No credentials for the repository can be had, and none will without a human.
    NoCredentials(String),
    /// The Project may not act for its repository: another Project claimed it, the
    /// operator did not allow the namespace, or the installation is not GitHub's.
    Repository {
        /// `RepositoryClaimed`, `RepositoryNotAllowed`, `InstallationNotFound` or
        /// `InstallationMismatch`.
        reason: &'static str,
        /// Who owns it, or what GitHub said.
        message: String,
    },
}

impl Blocker {
    fn reason(&self) -> &'static str {
        match self {
            Self::AgentMissing => "AgentNotFound",
            Self::ProjectMissing => "ProjectNotFound",
            Self::NoCapableAgent(_) => "NoCapableAgent",
            Self::NoFollowUpTarget(_) => "FollowUpTargetMissing",
            Self::AgentNotReady(_) => "AgentNotReady",
            Self::NoCredentials(_) => "NoCredentials",
            Self::Repository { reason, .. } => reason,
        }
    }

    fn message(&self, run: &AgentRun) -> String {
        match self {
            Self::AgentMissing => format!(
                "Agent {:?} does not exist",
                run.agent_name().unwrap_or_default()
            ),
            Self::ProjectMissing => {
                format!("Project {:?} does not exist", run.spec.project_ref.name)
            }
            Self::AgentNotReady(why)
            | Self::NoCredentials(why)
            | Self::NoCapableAgent(why)
            | Self::NoFollowUpTarget(why) => why.clone(),
            Self::Repository { message, .. } => message.clone(),
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
    /// Whether the controller can open pull requests (a GitHub App is configured). Without
    /// one, a pushed branch ends the run.
    pub can_open_pull_requests: bool,
    /// The phase of the run's ApprovalGate, once it has a pull request and the gate exists.
    pub gate: Option<GatePhase>,
    /// Each attempt's usage as the provider gateway recorded it (its ledger), by number.
    pub gateway_usage: &'a BTreeMap<u32, Usage>,
    /// The Agents the run's Project lets runs name (its trigger labels and `agents`): the
    /// only ones a breakdown may name.
    pub mapped_agents: &'a [String],
    /// The run's child runs (its breakdown's sub-tasks), as the cache shows them.
    pub children: &'a [ChildView],
    /// For a child run: its parent was cancelled (or asked to be), so it stops too.
    pub parent_cancelled: bool,
    /// For a follow-up: the pull request it works on, from the run it follows up on.
    pub follow_up: Option<&'a FollowUpTarget>,
    /// Whether a breakdown by this run stays within the Project's `maxBreakdownDepth`: it
    /// has fewer ancestors (parent runs) than that.
    pub within_depth: bool,
}

/// The pull request a follow-up works on, as the run it follows up on recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowUpTarget {
    /// Its head branch, `countersign/<run>`.
    pub branch: String,
    /// The pull request.
    pub pull_request: countersign_crds::common::PullRequestRef,
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
    /// Open (or find) the pull request for the pushed branch and record it in the status.
    OpenPullRequest,
    /// Post a follow-up's findings on the pull request it worked on, as a review that only
    /// comments (once: a review carrying this attempt's marker is not posted again).
    PostFindings {
        /// The pull request.
        pull_request: u64,
        /// The attempt that found them.
        attempt: u32,
        /// What it found (model-written: neutralised when posted).
        findings: String,
    },
    /// Create the child run of this sub-task of the approved breakdown.
    CreateChild {
        /// The sub-task's id.
        task: String,
    },
    /// Revoke these GitHub tokens of an attempt (its clone step or the attempt ended),
    /// record them in `status.attempts[].revokedTokens`, and delete the attempt's Secret
    /// once none is left.
    RevokeTokens {
        /// The attempt.
        number: u32,
        /// Its tokens due for revocation.
        tokens: Vec<TokenKind>,
    },
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

/// Whether the run is waiting for admission: not finished, not cancelled, and either without
/// any attempt yet or with an approved plan whose coding attempt has not started.
pub fn wants_admission(run: &AgentRun, pods: &[PodView]) -> bool {
    let status = run.status.as_ref();
    let phase = status.map(|s| s.phase).unwrap_or_default();
    if phase.is_finished() || run.spec.cancel_requested {
        return false;
    }
    let fresh = status.is_none_or(|s| s.attempts.is_empty()) && pods.is_empty();
    fresh || approved_plan_waits(run, pods)
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
    } else if run.spec.cancel_requested || i.parent_cancelled {
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

    fold_usage(&mut d.status, i.gateway_usage);
    due_revocations(&mut d, i.pods);
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

/// Takes each attempt's usage from the gateway's ledger (it only grows) and sums the run's.
/// Usage the agent reports is not used: it comes from model-influenced code.
fn fold_usage(status: &mut AgentRunStatus, gateway: &BTreeMap<u32, Usage>) {
    for attempt in &mut status.attempts {
        if let Some(counted) = gateway.get(&attempt.number) {
            let tokens = |u: &Usage| u.input_tokens + u.output_tokens;
            let newer = attempt
                .usage
                .as_ref()
                .is_none_or(|known| tokens(counted) >= tokens(known) && counted != known);
            if newer {
                attempt.usage = Some(counted.clone());
            }
        }
    }
    if status.attempts.iter().any(|a| a.usage.is_some()) {
        let mut total = Usage::default();
        for usage in status.attempts.iter().filter_map(|a| a.usage.as_ref()) {
            total.input_tokens += usage.input_tokens;
            total.output_tokens += usage.output_tokens;
            total.cost.cents += usage.cost.cents;
        }
        status.usage = total;
    }
}

/// The GitHub tokens to revoke now: an attempt's clone token once its clone step ended, and
/// both once the attempt ended (has an outcome), unless already revoked.
fn due_revocations(d: &mut Decision, pods: &[PodView]) {
    for attempt in &d.status.attempts {
        let ended = attempt.outcome.is_some();
        let cloned = ended
            || pods
                .iter()
                .any(|p| p.attempt == attempt.number && p.clone_ended);
        let mut tokens = Vec::new();
        if cloned && !attempt.revoked_tokens.contains(&TokenKind::Clone) {
            tokens.push(TokenKind::Clone);
        }
        if ended && !attempt.revoked_tokens.contains(&TokenKind::Push) {
            tokens.push(TokenKind::Push);
        }
        if !tokens.is_empty() {
            d.actions.push(Action::RevokeTokens {
                number: attempt.number,
                tokens,
            });
        }
    }
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
                ..Attempt::default()
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
    let why = if i.run.spec.cancel_requested {
        "Cancelled on request"
    } else {
        "Cancelled with its parent run"
    };
    finish(d, RunPhase::Cancelled, why.into(), i.now);
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
        ..Attempt::default()
    });
    d.status.start_time.get_or_insert(Time(i.now));
    d.status.phase = working_phase(i, &d.status);
    let doing = if d.status.phase == RunPhase::Planning {
        "planning"
    } else {
        "running"
    };
    d.status.message = Some(format!(
        "Attempt {number} {doing} on provider {provider_name}"
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
            Some(PodState::Active) => match pod.and_then(|p| not_starting(i, d, &last, p)) {
                Some(failed) => Some(failed),
                None => {
                    watch_timeout(i, d, &last, pod.map(|p| p.name.clone()));
                    return;
                }
            },
            Some(PodState::Terminated {
                exit_code,
                message,
                deadline_exceeded,
                failed_step,
            }) => Some(classify(
                *exit_code,
                message,
                *deadline_exceeded,
                *failed_step,
            )),
        };
        if let Some((outcome, reason, result)) = outcome {
            // An architect's breakdown is read and checked here, never trusted from the pod.
            // So is a question asked in guidance mode.
            let question = result
                .as_ref()
                .filter(|r| {
                    outcome == AttemptOutcome::Succeeded && r.outcome == ResultOutcome::Question
                })
                .map(|r| guidance::check(i, &d.status, r.report.as_deref().unwrap_or_default()));
            let breakdown = result
                .as_ref()
                .filter(|r| {
                    outcome == AttemptOutcome::Succeeded && r.outcome == ResultOutcome::PlanReady
                })
                .filter(|_| breaks_down(i.run, i.agent, i.within_depth))
                .map(|r| children::check(i, r.report.as_deref().unwrap_or_default()));
            let number = d.status.attempts.last().map_or(0, |a| a.number);
            match (question, breakdown) {
                (Some(Err(why)), _) => record_outcome(
                    d,
                    AttemptOutcome::Failed,
                    &format!("the agent's question was refused: {why}"),
                    None,
                    i.now,
                ),
                (Some(Ok(question)), _) => {
                    record_outcome(d, outcome, &reason, None, i.now);
                    guidance::record(i, d, number, question);
                }
                (None, Some(Err(why))) => record_outcome(
                    d,
                    AttemptOutcome::Failed,
                    &format!("the proposed breakdown was refused: {why}"),
                    None,
                    i.now,
                ),
                (None, Some(Ok(breakdown))) => {
                    record_outcome(d, outcome, &reason, result.as_ref(), i.now);
                    children::record(d, breakdown);
                }
                (None, None) => record_outcome(d, outcome, &reason, result.as_ref(), i.now),
            }
        }
    }
    let Some(last) = d.status.attempts.last().cloned() else {
        return;
    };
    match next_after(&last) {
        Next::Finish(phase, message) => finish(d, phase, message, i.now),
        Next::Retry { next_provider, why } => retry(i, d, &last, next_provider, why),
        Next::Done => after_success(i, d, &last),
    }
}

/// The attempt's outcome when its pod cannot start: at once when retrying cannot help, else
/// once the problem outlasted its grace from the attempt's start (the pod is deleted). `None`
/// while it may still start; a requeue at the end of the grace is asked for.
fn not_starting(
    i: &Inputs<'_>,
    d: &mut Decision,
    last: &Attempt,
    pod: &PodView,
) -> Option<(AttemptOutcome, String, Option<AgentResult>)> {
    let problem = pod.start_problem.as_ref()?;
    let grace = if problem.unschedulable {
        i.settings.unschedulable_grace
    } else {
        i.settings.pod_start_grace
    };
    let started = last.start_time.as_ref().map_or(i.now, |t| t.0);
    let give_up = started
        .saturating_add(SignedDuration::try_from(grace).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    if !problem.permanent && i.now < give_up {
        let at_grace = until(i.now, give_up);
        d.requeue = Some(d.requeue.map_or(at_grace, |r| r.min(at_grace)));
        return None;
    }
    d.actions.push(Action::DeletePods(vec![pod.name.clone()]));
    let (outcome, why) = if problem.permanent {
        (
            AttemptOutcome::Unstartable,
            "the pod cannot start".to_owned(),
        )
    } else {
        (
            AttemptOutcome::NotStarted,
            format!(
                "the pod did not start within {}",
                countersign_crds::GoDuration(grace)
            ),
        )
    };
    Some((
        outcome,
        format!("{why}: {}: {}", problem.reason, problem.message),
        None,
    ))
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
        d.status.phase = working_phase(i, &d.status);
        let at_timeout = until(i.now, give_up);
        d.requeue = Some(d.requeue.map_or(at_timeout, |r| r.min(at_timeout)));
    }
}

fn retry(i: &Inputs<'_>, d: &mut Decision, last: &Attempt, next_provider: bool, why: String) {
    let made = d.status.attempts.len() as u32;
    let stage = coding_stage_start(&d.status);
    let made_in_stage = d
        .status
        .attempts
        .iter()
        .filter(|a| a.number > stage)
        .count() as u32;
    if made_in_stage > i.run.spec.retries {
        let message = format!("Failed after {made_in_stage} attempt(s): {why}");
        return finish(d, RunPhase::Failed, message, i.now);
    }
    let providers = i.agent.map_or(1, |a| a.spec.providers.len().max(1));
    let current = stages::provider_index(i, &last.provider);
    let provider = if next_provider {
        (current + 1) % providers
    } else {
        current
    };
    let shift = made_in_stage.saturating_sub(1).min(16);
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
        d.status.phase = working_phase(i, &d.status);
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
        RunPhase::Running | RunPhase::Planning
            if matches!(before, RunPhase::Queued | RunPhase::Pending) =>
        {
            return;
        }
        RunPhase::AwaitingPlanApproval => (false, "PlanReady"),
        RunPhase::PullRequestOpen => (false, "PullRequestOpened"),
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

/// `text` cut to `max_chars` characters, the cut marked with `…`.
pub(crate) fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        text.chars().take(max_chars - 1).collect::<String>() + "…"
    }
}

pub mod children;
pub mod guidance;
mod outcome;
mod stages;

pub use children::ChildView;
use outcome::{Next, classify, next_after, record_outcome};
use stages::{after_success, approved_plan_waits, coding_stage_start, working_phase};
pub(crate) use stages::{approved_plan, breaks_down, run_mode};

#[cfg(test)]
mod tests;
