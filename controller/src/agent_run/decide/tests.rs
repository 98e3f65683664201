use std::time::Duration;

use countersign_crds::agent_run::AttemptOutcome;
use countersign_crds::conditions::{self, READY, RECONCILING, STALLED};
use countersign_crds::result::{AgentResult, RESULT_VERSION, ResultOutcome};
use countersign_crds::{Agent, AgentRun, RunMode, RunPhase};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::*;
use crate::agent_run::capacity::Admission;
use crate::settings::Settings;
use countersign_crds::task_file::Step;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid time")
}

fn run() -> AgentRun {
    serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "fix-42", "namespace": "team", "uid": "uid-1", "generation": 1},
        "spec": {"projectRef": {"name": "p"}, "agentRef": {"name": "backend"}, "task": {"title": "Fix it"}, "retries": 2}
    }))
    .expect("valid run")
}

fn agent() -> Agent {
    serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "backend", "namespace": "team"},
        "spec": {"role": "backend", "providers": [
            {"name": "primary", "kind": "openai", "model": "m1"},
            {"name": "fallback", "kind": "openai", "model": "m2"}
        ], "limits": {"timeout": "10m"}}
    }))
    .expect("valid agent")
}

fn settings() -> Settings {
    Settings {
        retry_backoff_base: Duration::from_secs(10),
        retry_backoff_max: Duration::from_secs(60),
        timeout_grace: Duration::from_secs(30),
        wait_requeue: Duration::from_secs(5),
        ..Settings::default()
    }
}

struct Case {
    run: AgentRun,
    agent: Agent,
    pods: Vec<PodView>,
    admission: Option<Admission>,
    blocker: Option<Blocker>,
    settings: Settings,
    can_open_pull_requests: bool,
    gate: Option<GatePhase>,
    gateway_usage: std::collections::BTreeMap<u32, countersign_crds::agent_run::Usage>,
    mapped_agents: Vec<String>,
    children: Vec<ChildView>,
    parent_cancelled: bool,
    follow_up: Option<FollowUpTarget>,
    within_depth: bool,
}

impl Case {
    fn new() -> Self {
        Case {
            run: run(),
            agent: agent(),
            pods: vec![],
            admission: None,
            blocker: None,
            settings: settings(),
            can_open_pull_requests: false,
            gate: None,
            gateway_usage: Default::default(),
            mapped_agents: Vec::new(),
            children: Vec::new(),
            parent_cancelled: false,
            follow_up: None,
            within_depth: true,
        }
    }

    /// The decision, with token revocations done as the shell does them (recorded in the
    /// status, not left among the actions the other tests look at).
    fn decide_at(&self, now: Timestamp) -> Decision {
        let mut d = self.decide_raw(now);
        let revocations: Vec<Action> = d
            .actions
            .iter()
            .filter(|a| matches!(a, Action::RevokeTokens { .. }))
            .cloned()
            .collect();
        d.actions
            .retain(|a| !matches!(a, Action::RevokeTokens { .. }));
        for action in revocations {
            if let Action::RevokeTokens { number, tokens } = action
                && let Some(attempt) = d.status.attempts.iter_mut().find(|a| a.number == number)
            {
                attempt.revoked_tokens.extend(tokens);
                attempt.revoked_tokens.sort();
            }
        }
        d
    }

    fn decide_raw(&self, now: Timestamp) -> Decision {
        decide(&Inputs {
            run: &self.run,
            agent: Some(&self.agent),
            blocker: self.blocker.clone(),
            admission: self.admission.clone(),
            pods: &self.pods,
            now,
            settings: &self.settings,
            can_open_pull_requests: self.can_open_pull_requests,
            gate: self.gate,
            gateway_usage: &self.gateway_usage,
            mapped_agents: &self.mapped_agents,
            children: &self.children,
            parent_cancelled: self.parent_cancelled,
            follow_up: self.follow_up.as_ref(),
            within_depth: self.within_depth,
        })
    }

    /// Applies a decision's status as if it had been written, like the next reconcile sees it.
    fn persist(&mut self, d: &Decision) {
        self.run.status = Some(d.status.clone());
        self.admission = None;
    }
}

fn pod(attempt: u32, provider: &str, state: PodState) -> PodView {
    PodView {
        agent: None,
        name: format!("fix-42-{attempt}"),
        attempt,
        provider: provider.into(),
        deleting: false,
        clone_ended: state != PodState::Active,
        state,
        start_problem: None,
    }
}

fn stuck(attempt: u32, reason: &str, permanent: bool, unschedulable: bool) -> PodView {
    PodView {
        agent: None,
        start_problem: Some(StartProblem {
            reason: reason.into(),
            message: "container work: back-off pulling image \"ghcr.io/acme/agent:nope\"".into(),
            permanent,
            unschedulable,
        }),
        ..pod(attempt, "primary", PodState::Active)
    }
}

fn usage(input_tokens: u64, output_tokens: u64, cents: u64) -> countersign_crds::agent_run::Usage {
    countersign_crds::agent_run::Usage {
        input_tokens,
        output_tokens,
        cost: countersign_crds::Usd { cents },
    }
}

fn ended(outcome: ResultOutcome, reason: Option<&str>) -> PodState {
    let result = AgentResult {
        version: RESULT_VERSION,
        outcome,
        provider: None,
        branch: Some("countersign/fix-42".into()),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        files_changed: 2,
        summary: Some("done".into()),
        reason: reason.map(Into::into),
        report: None,
        verification: None,
        lines_added: 10,
        lines_removed: 2,
        usage: countersign_crds::agent_run::Usage {
            input_tokens: 100,
            output_tokens: 50,
            cost: countersign_crds::Usd { cents: 7 },
        },
    };
    let code = if outcome == ResultOutcome::Succeeded {
        0
    } else {
        1
    };
    PodState::Terminated {
        exit_code: code,
        message: result.to_message(),
        deadline_exceeded: false,
        failed_step: None,
    }
}

fn condition_status(d: &Decision, type_: &str) -> Option<String> {
    conditions::find(&d.status.conditions, type_).map(|c| c.status.clone())
}

#[test]
fn an_admitted_run_starts_its_first_attempt_on_the_first_provider() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    assert_eq!(
        d.actions,
        vec![Action::StartAttempt {
            number: 1,
            provider: 0
        }]
    );
    assert_eq!(d.status.phase, RunPhase::Running);
    assert_eq!(d.status.attempts.len(), 1);
    assert_eq!(d.status.attempts[0].provider, "primary");
    assert_eq!(d.status.attempts[0].pod, "fix-42-1");
    assert_eq!(d.status.observed_generation, Some(1));
    assert_eq!(condition_status(&d, READY).as_deref(), Some("Unknown"));
    assert_eq!(condition_status(&d, RECONCILING).as_deref(), Some("True"));
    assert!(d.notes.iter().any(|n| n.reason == "AttemptStarted"));
}

#[test]
fn a_run_without_capacity_is_queued_with_the_reason() {
    let mut case = Case::new();
    case.admission = Some(Admission::Wait(
        "queued behind 2 earlier run(s) of agent backend".into(),
    ));
    let d = case.decide_at(t(0));
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase, RunPhase::Queued);
    assert_eq!(
        d.status.message.as_deref(),
        Some("queued behind 2 earlier run(s) of agent backend")
    );
    assert_eq!(d.requeue, Some(Duration::from_secs(5)));
    assert!(d.notes.iter().any(|n| n.reason == "Queued"));
}

#[test]
fn a_blocked_run_waits_with_a_stalled_condition_naming_the_problem() {
    let mut case = Case::new();
    case.blocker = Some(Blocker::AgentNotReady(
        "Secret \"openrouter\" is missing; expected key \"api-key\"".into(),
    ));
    let d = case.decide_at(t(0));
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase, RunPhase::Pending);
    let stalled = conditions::find(&d.status.conditions, STALLED).expect("Stalled");
    assert_eq!(stalled.reason, "AgentNotReady");
    assert!(stalled.message.contains("openrouter"));
    assert_eq!(condition_status(&d, READY).as_deref(), Some("False"));
}

#[test]
fn a_successful_attempt_finishes_the_run_with_branch_commit_and_usage() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    case.persist(&started);
    case.pods = vec![pod(1, "primary", PodState::Active)];
    let running = case.decide_at(t(60));
    assert_eq!(running.status.phase, RunPhase::Running);
    assert!(running.actions.is_empty());
    assert_eq!(
        running.requeue,
        Some(Duration::from_secs(600 + 30 - 60)),
        "look again at the deadline"
    );

    case.pods = vec![pod(1, "primary", ended(ResultOutcome::Succeeded, None))];
    // The gateway counted what the attempt used; the result's own usage is not read.
    case.gateway_usage.insert(1, usage(100, 50, 7));
    let done = case.decide_at(t(120));
    assert_eq!(done.status.phase, RunPhase::Succeeded);
    assert_eq!(done.status.branch.as_deref(), Some("countersign/fix-42"));
    assert_eq!(
        done.status.commit.as_deref(),
        Some("0123456789abcdef0123456789abcdef01234567")
    );
    assert_eq!(done.status.usage.input_tokens, 100);
    assert_eq!(done.status.usage.cost.cents, 7);
    assert_eq!(
        done.status.attempts[0].outcome,
        Some(AttemptOutcome::Succeeded)
    );
    assert!(done.status.completion_time.is_some());
    assert_eq!(condition_status(&done, READY).as_deref(), Some("True"));
    assert!(conditions::find(&done.status.conditions, RECONCILING).is_none());
}

#[test]
fn a_provider_error_retries_on_the_fallback_provider_after_backoff() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    case.persist(&started);
    case.pods = vec![pod(
        1,
        "primary",
        ended(ResultOutcome::RateLimited, Some("429 Too Many Requests")),
    )];
    case.gateway_usage.insert(1, usage(100, 50, 7));
    let waiting = case.decide_at(t(100));
    assert!(waiting.actions.is_empty(), "the backoff has not passed yet");
    assert_eq!(waiting.status.phase, RunPhase::Running);
    assert_eq!(
        waiting.status.attempts[0].outcome,
        Some(AttemptOutcome::RateLimited)
    );
    assert_eq!(waiting.requeue, Some(Duration::from_secs(10)));
    assert!(
        waiting
            .status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("fallback"),
        "{:?}",
        waiting.status.message
    );
    assert_eq!(
        waiting.status.usage.input_tokens, 100,
        "the failed attempt's usage counts"
    );
    case.persist(&waiting);

    let retried = case.decide_at(t(110));
    assert_eq!(
        retried.actions,
        vec![Action::StartAttempt {
            number: 2,
            provider: 1
        }]
    );
    assert_eq!(retried.status.attempts[1].provider, "fallback");
    assert_eq!(
        retried.status.usage.input_tokens, 100,
        "usage is not counted twice"
    );
}

#[test]
fn a_crash_retries_on_the_same_provider_and_exhausted_retries_fail_the_run() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let mut now = 0;
    let d = case.decide_at(t(now));
    case.persist(&d);
    let crash = |n| {
        pod(
            n,
            "primary",
            PodState::Terminated {
                exit_code: 137,
                message: "OOMKilled\nlast log line".into(),
                deadline_exceeded: false,
                failed_step: None,
            },
        )
    };
    for attempt in 1..=3 {
        case.pods = (1..=attempt).map(crash).collect();
        now += 1000;
        let d = case.decide_at(t(now));
        if attempt < 3 {
            // The failure is seen now; the next attempt waits for the backoff (10s, then 20s).
            assert!(d.actions.is_empty(), "attempt {attempt}: {:?}", d.actions);
            let backoff = 10 * (1 << (attempt - 1));
            assert_eq!(d.requeue, Some(Duration::from_secs(backoff)));
            case.persist(&d);
            now += backoff as i64;
            let d = case.decide_at(t(now));
            assert_eq!(
                d.actions,
                vec![Action::StartAttempt {
                    number: attempt + 1,
                    provider: 0
                }],
                "attempt {attempt}"
            );
            assert!(
                d.status.attempts[attempt as usize - 1]
                    .reason
                    .as_deref()
                    .unwrap_or_default()
                    .contains("exited with code 137")
            );
            case.persist(&d);
            continue;
        } else {
            assert!(d.actions.is_empty());
            assert_eq!(d.status.phase, RunPhase::Failed);
            assert!(
                d.status
                    .message
                    .as_deref()
                    .unwrap_or_default()
                    .starts_with("Failed after 3 attempt(s)"),
                "{:?}",
                d.status.message
            );
            assert_eq!(condition_status(&d, STALLED).as_deref(), Some("True"));
        }
        case.persist(&d);
    }
}

#[test]
fn a_malformed_result_fails_the_run_with_a_readable_reason_and_no_retry() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![pod(
        1,
        "primary",
        PodState::Terminated {
            exit_code: 0,
            message: "all good!".into(),
            deadline_exceeded: false,
            failed_step: None,
        },
    )];
    let d = case.decide_at(t(10));
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase, RunPhase::Failed);
    assert!(
        d.status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("the agent's result is not valid"),
        "{:?}",
        d.status.message
    );
    assert_eq!(
        d.status.attempts[0].outcome,
        Some(AttemptOutcome::InvalidResult)
    );
}

#[test]
fn an_attempt_past_its_timeout_is_stopped_and_the_run_times_out() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![pod(1, "primary", PodState::Active)];
    let d = case.decide_at(t(631));
    assert_eq!(d.actions, vec![Action::DeletePods(vec!["fix-42-1".into()])]);
    assert_eq!(d.status.phase, RunPhase::TimedOut);
    assert_eq!(d.status.attempts[0].outcome, Some(AttemptOutcome::TimedOut));

    // The kubelet's own deadline gets there first in most clusters.
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![pod(
        1,
        "primary",
        PodState::Terminated {
            exit_code: 137,
            message: String::new(),
            deadline_exceeded: true,
            failed_step: None,
        },
    )];
    assert_eq!(case.decide_at(t(600)).status.phase, RunPhase::TimedOut);
}

#[test]
fn cancelling_deletes_the_active_pod_and_ends_cancelled() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![pod(1, "primary", PodState::Active)];
    case.run.spec.cancel_requested = true;
    let d = case.decide_at(t(5));
    assert_eq!(d.actions, vec![Action::DeletePods(vec!["fix-42-1".into()])]);
    assert_eq!(d.status.phase, RunPhase::Cancelled);
    assert_eq!(
        d.status.attempts[0].outcome,
        Some(AttemptOutcome::Cancelled)
    );
    assert_eq!(condition_status(&d, READY).as_deref(), Some("False"));
    assert!(conditions::find(&d.status.conditions, STALLED).is_none());
}

#[test]
fn a_pod_whose_status_write_was_lost_is_adopted_not_duplicated() {
    let mut case = Case::new();
    case.pods = vec![pod(1, "primary", PodState::Active)];
    assert!(
        !wants_admission(&case.run, &case.pods),
        "a run with a pod does not ask for capacity again"
    );
    let d = case.decide_at(t(0));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.attempts.len(), 1);
    assert_eq!(d.status.phase, RunPhase::Running);
}

#[test]
fn a_vanished_pod_counts_as_a_failed_attempt_and_is_retried() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    let d = case.decide_at(t(100));
    assert_eq!(d.status.attempts[0].outcome, Some(AttemptOutcome::Failed));
    assert_eq!(
        d.status.attempts[0].reason.as_deref(),
        Some("the attempt's pod disappeared")
    );
    case.persist(&d);
    let d = case.decide_at(t(110));
    assert_eq!(
        d.actions,
        vec![Action::StartAttempt {
            number: 2,
            provider: 0
        }]
    );
}

#[test]
fn finished_runs_are_deleted_after_their_ttl() {
    let mut case = Case::new();
    case.run.spec.ttl_seconds_after_finished = Some(3600);
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![pod(1, "primary", ended(ResultOutcome::NoChanges, None))];
    let d = case.decide_at(t(10));
    assert_eq!(d.status.phase, RunPhase::Succeeded);
    case.persist(&d);
    let before = case.decide_at(
        t(10)
            .saturating_add(SignedDuration::from_secs(1800))
            .unwrap(),
    );
    assert!(before.actions.is_empty());
    assert_eq!(before.requeue, Some(Duration::from_secs(1800)));
    let after = case.decide_at(t(3611));
    assert_eq!(after.actions, vec![Action::DeleteRun]);
}

#[test]
fn a_guardrail_violation_is_final() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![pod(
        1,
        "primary",
        ended(
            ResultOutcome::GuardrailViolation,
            Some(".github/workflows/ci.yml is a forbidden path"),
        ),
    )];
    let d = case.decide_at(t(10));
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase, RunPhase::Failed);
    assert!(
        d.status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("forbidden path")
    );
}

fn ended_with(result: AgentResult) -> PodState {
    PodState::Terminated {
        exit_code: 0,
        message: result.to_message(),
        deadline_exceeded: false,
        failed_step: None,
    }
}

fn plan_result(plan: &str) -> AgentResult {
    AgentResult {
        version: RESULT_VERSION,
        outcome: ResultOutcome::PlanReady,
        provider: None,
        branch: None,
        commit: None,
        files_changed: 0,
        lines_added: 0,
        lines_removed: 0,
        summary: Some("plan written".into()),
        reason: None,
        report: Some(plan.into()),
        verification: None,
        usage: countersign_crds::agent_run::Usage {
            input_tokens: 40,
            output_tokens: 10,
            cost: countersign_crds::Usd { cents: 1 },
        },
    }
}

/// A control-mode case whose first attempt wrote `plan` and whose pod has ended.
fn planned_case() -> Case {
    let mut case = Case::new();
    case.run.spec.mode = Some(RunMode::Control);
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    assert_eq!(started.status.phase, RunPhase::Planning);
    assert_eq!(
        started.status.message.as_deref(),
        Some("Attempt 1 planning on provider primary")
    );
    case.persist(&started);
    case.pods = vec![pod(1, "primary", ended_with(plan_result("1. Add a check")))];
    case.gateway_usage.insert(1, usage(40, 10, 1));
    case
}

fn annotate(case: &mut Case, value: &str) {
    case.run.metadata.annotations = Some(
        [(
            countersign_crds::keys::LAST_COMMAND_ANNOTATION.to_owned(),
            value.to_owned(),
        )]
        .into(),
    );
}

#[test]
fn a_control_run_posts_its_plan_and_waits_for_a_decision() {
    let mut case = planned_case();
    let waiting = case.decide_at(t(30));
    assert_eq!(waiting.status.phase, RunPhase::AwaitingPlanApproval);
    let plan = waiting.status.plan.clone().expect("plan recorded");
    assert_eq!((plan.text.as_str(), plan.attempt), ("1. Add a check", 1));
    assert!(plan.decision.is_none());
    assert!(
        waiting.actions.is_empty(),
        "nothing starts without /approve"
    );
    assert!(waiting.notes.iter().any(|n| n.reason == "PlanReady"));
    assert_eq!(waiting.status.usage.input_tokens, 40);
    case.persist(&waiting);
    assert!(!wants_admission(&case.run, &case.pods));
    let still = case.decide_at(t(3600));
    assert_eq!(still.status.phase, RunPhase::AwaitingPlanApproval);
    assert!(still.actions.is_empty());
}

#[test]
fn an_approved_plan_goes_through_admission_and_codes_with_the_same_provider() {
    let mut case = planned_case();
    let waiting = case.decide_at(t(30));
    case.persist(&waiting);
    annotate(&mut case, "approve/delivery-7/tess");
    assert!(
        wants_admission(&case.run, &case.pods),
        "approval needs capacity"
    );
    case.admission = Some(Admission::Wait("queued behind 1 earlier run".into()));
    let queued = case.decide_at(t(40));
    assert_eq!(queued.status.phase, RunPhase::Queued);
    assert_eq!(
        queued.status.message.as_deref(),
        Some("Plan approved by @tess; queued behind 1 earlier run")
    );
    let decision = queued
        .status
        .plan
        .clone()
        .and_then(|p| p.decision)
        .expect("recorded");
    assert!(decision.approved);
    assert_eq!(decision.by.as_deref(), Some("tess"));
    assert_eq!(decision.delivery.as_deref(), Some("delivery-7"));
    case.persist(&queued);
    case.admission = Some(Admission::Admit);
    let coding = case.decide_at(t(50));
    assert_eq!(
        coding.actions,
        vec![Action::StartAttempt {
            number: 2,
            provider: 0
        }]
    );
    assert_eq!(coding.status.phase, RunPhase::Running);
    case.persist(&coding);
    case.pods.push(pod(2, "primary", PodState::Active));
    assert!(!wants_admission(&case.run, &case.pods));
}

#[test]
fn a_rejected_plan_cancels_the_run() {
    let mut case = planned_case();
    let waiting = case.decide_at(t(30));
    case.persist(&waiting);
    annotate(&mut case, "reject/delivery-8/tess");
    assert!(!wants_admission(&case.run, &case.pods));
    let d = case.decide_at(t(40));
    assert_eq!(d.status.phase, RunPhase::Cancelled);
    assert_eq!(d.status.message.as_deref(), Some("Plan rejected by @tess"));
    assert!(d.actions.is_empty());
    assert!(d.status.completion_time.is_some());
}

#[test]
fn retries_are_counted_per_stage_after_an_approved_plan() {
    let mut case = planned_case();
    case.run.spec.retries = 0;
    let waiting = case.decide_at(t(30));
    case.persist(&waiting);
    annotate(&mut case, "approve/d/tess");
    case.admission = Some(Admission::Admit);
    let coding = case.decide_at(t(40));
    case.persist(&coding);
    case.pods.push(pod(
        2,
        "primary",
        ended(ResultOutcome::Failed, Some("tests failed")),
    ));
    let failed = case.decide_at(t(100));
    assert_eq!(failed.status.phase, RunPhase::Failed);
    assert_eq!(
        failed.status.message.as_deref(),
        Some("Failed after 1 attempt(s): tests failed"),
        "the planning attempt does not use up the coding stage's retries"
    );
}

#[test]
fn a_pushed_change_opens_its_pull_request_then_follows_the_gate() {
    let mut case = Case::new();
    case.can_open_pull_requests = true;
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    case.persist(&started);
    case.pods = vec![pod(1, "primary", ended(ResultOutcome::Succeeded, None))];
    let pushed = case.decide_at(t(60));
    assert_eq!(pushed.actions, vec![Action::OpenPullRequest]);
    assert_eq!(pushed.status.phase, RunPhase::Running);
    assert!(pushed.status.completion_time.is_none());
    // The shell records the pull request it opened.
    let mut recorded = pushed.clone();
    recorded.status.pull_request = Some(countersign_crds::common::PullRequestRef {
        number: 43,
        url: None,
    });
    case.persist(&recorded);
    let open = case.decide_at(t(61));
    assert!(open.actions.is_empty(), "opened once");
    assert_eq!(open.status.phase, RunPhase::PullRequestOpen);
    assert!(open.notes.iter().any(|n| n.reason == "PullRequestOpened"));
    assert_eq!(condition_status(&open, READY).as_deref(), Some("False"));
    case.persist(&open);
    case.gate = Some(GatePhase::Approved);
    let approved = case.decide_at(t(70));
    assert_eq!(approved.status.phase, RunPhase::PullRequestOpen);
    assert_eq!(
        approved.status.message.as_deref(),
        Some("Pull request #43 is open; its gate is Approved")
    );
    case.gate = Some(GatePhase::Merged);
    let merged = case.decide_at(t(80));
    assert_eq!(merged.status.phase, RunPhase::Succeeded);
    assert_eq!(
        merged.status.message.as_deref(),
        Some("Pull request #43 merged")
    );
    case.gate = Some(GatePhase::Closed);
    let closed = case.decide_at(t(80));
    assert_eq!(closed.status.phase, RunPhase::Failed);
    assert_eq!(
        closed.status.message.as_deref(),
        Some("Pull request #43 was closed without merging")
    );
}

#[test]
fn without_a_github_app_a_pushed_branch_ends_the_run_and_says_so() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    case.persist(&started);
    case.pods = vec![pod(1, "primary", ended(ResultOutcome::Succeeded, None))];
    let d = case.decide_at(t(60));
    assert!(d.actions.is_empty());
    assert_eq!(d.status.phase, RunPhase::Succeeded);
    assert_eq!(
        d.status.message.as_deref(),
        Some(
            "Pushed countersign/fix-42 at 0123456789ab; no GitHub App is configured, so no pull request was opened"
        )
    );
}

#[test]
fn nothing_to_change_and_observation_runs_succeed_without_a_pull_request() {
    for (mode, reason, expected) in [
        (
            RunMode::Autonomous,
            None,
            "The agent found nothing to change",
        ),
        (
            RunMode::Observation,
            None,
            "The analysis is posted on the issue",
        ),
        (
            RunMode::Autonomous,
            Some("no changes needed"),
            "no changes needed",
        ),
    ] {
        let mut case = Case::new();
        case.can_open_pull_requests = true;
        case.run.spec.mode = Some(mode);
        case.admission = Some(Admission::Admit);
        let started = case.decide_at(t(0));
        case.persist(&started);
        let mut result = plan_result("## Analysis");
        result.outcome = ResultOutcome::NoChanges;
        result.summary = None;
        result.reason = reason.map(Into::into);
        case.pods = vec![pod(1, "primary", ended_with(result))];
        let d = case.decide_at(t(60));
        assert!(d.actions.is_empty(), "{mode:?}");
        assert_eq!(d.status.phase, RunPhase::Succeeded, "{mode:?}");
        assert_eq!(d.status.message.as_deref(), Some(expected));
        assert!(d.status.plan.is_none() && d.status.commit.is_none());
    }
}

#[test]
fn usage_comes_from_the_gateway_not_from_what_the_agent_reports() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    case.persist(&started);
    // The result claims 100 tokens; the gateway counted none yet.
    case.pods = vec![pod(1, "primary", ended(ResultOutcome::Succeeded, None))];
    let done = case.decide_at(t(60));
    assert_eq!(
        done.status.usage,
        countersign_crds::agent_run::Usage::default()
    );
    assert_eq!(done.status.attempts[0].usage, None);
    case.persist(&done);
    // The ledger catches up: the attempt and the run take its numbers; counts never shrink.
    case.gateway_usage.insert(1, usage(3000, 300, 9));
    let later = case.decide_raw(t(90));
    assert_eq!(later.status.attempts[0].usage, Some(usage(3000, 300, 9)));
    assert_eq!(later.status.usage, usage(3000, 300, 9));
    case.persist(&later);
    case.gateway_usage.insert(1, usage(10, 1, 0));
    let stale = case.decide_raw(t(95));
    assert_eq!(stale.status.usage, usage(3000, 300, 9));
}

#[test]
fn tokens_are_revoked_when_the_clone_step_and_the_attempt_end() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let started = case.decide_raw(t(0));
    assert!(
        !started
            .actions
            .iter()
            .any(|a| matches!(a, Action::RevokeTokens { .. })),
        "nothing to revoke before the pod runs"
    );
    case.persist(&started);
    let mut cloning = pod(1, "primary", PodState::Active);
    cloning.clone_ended = false;
    case.pods = vec![cloning.clone()];
    assert!(case.decide_raw(t(5)).actions.is_empty());
    cloning.clone_ended = true;
    case.pods = vec![cloning];
    let cloned = case.decide_raw(t(10));
    assert_eq!(
        cloned.actions,
        vec![Action::RevokeTokens {
            number: 1,
            tokens: vec![countersign_crds::agent_run::TokenKind::Clone]
        }]
    );
    let mut applied = cloned.clone();
    applied.status.attempts[0]
        .revoked_tokens
        .push(countersign_crds::agent_run::TokenKind::Clone);
    case.persist(&applied);
    case.pods = vec![pod(
        1,
        "primary",
        ended(ResultOutcome::Failed, Some("boom")),
    )];
    let ended = case.decide_raw(t(20));
    assert!(ended.actions.contains(&Action::RevokeTokens {
        number: 1,
        tokens: vec![countersign_crds::agent_run::TokenKind::Push]
    }));
}

#[test]
fn a_failed_work_step_is_a_fact_its_words_are_not_read() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    case.persist(&started);
    case.pods = vec![pod(
        1,
        "primary",
        PodState::Terminated {
            exit_code: 3,
            message: String::new(),
            deadline_exceeded: false,
            failed_step: Some(Step::Work),
        },
    )];
    let d = case.decide_at(t(30));
    assert_eq!(d.status.attempts[0].outcome, Some(AttemptOutcome::Failed));
    assert_eq!(
        d.status.attempts[0].reason.as_deref(),
        Some("the work step exited with code 3 and left no report")
    );
}

#[test]
fn only_the_push_step_or_a_failed_clone_step_gives_a_result() {
    let pod = |status: serde_json::Value| -> k8s_openapi::api::core::v1::Pod {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "fix-42-1", "labels": {"countersign.dev/attempt": "1", "countersign.dev/provider": "primary"}},
            "status": status
        }))
        .expect("pod")
    };
    let term = |name: &str, code: i32, message: &str| {
        serde_json::json!({"name": name, "ready": false, "restartCount": 0, "image": "i", "imageID": "",
            "state": {"terminated": {"exitCode": code, "message": message}}})
    };
    let forged = r#"{"version":1,"outcome":"succeeded","branch":"main"}"#;
    let work_failed = PodView::of(&pod(serde_json::json!({"phase": "Failed",
        "initContainerStatuses": [term("clone", 0, "cloned"), term("work", 1, forged)]})))
    .expect("view");
    assert_eq!(
        work_failed.state,
        PodState::Terminated {
            exit_code: 1,
            message: String::new(),
            deadline_exceeded: false,
            failed_step: Some(Step::Work)
        }
    );
    assert!(work_failed.clone_ended);
    let pushed = PodView::of(&pod(serde_json::json!({"phase": "Succeeded",
        "initContainerStatuses": [term("clone", 0, "cloned"), term("work", 0, forged)],
        "containerStatuses": [term("push", 0, "the result")]})))
    .expect("view");
    assert!(
        matches!(pushed.state, PodState::Terminated { ref message, failed_step: None, .. } if message == "the result")
    );
    let clone_failed = PodView::of(&pod(serde_json::json!({"phase": "Failed",
        "initContainerStatuses": [term("clone", 1, "cannot clone")]})))
    .expect("view");
    assert!(
        matches!(clone_failed.state, PodState::Terminated { ref message, failed_step: Some(Step::Clone), .. } if message == "cannot clone")
    );
    let running = PodView::of(&pod(serde_json::json!({"phase": "Pending",
        "initContainerStatuses": [term("clone", 0, "cloned")]})))
    .expect("view");
    assert_eq!(
        (running.state, running.clone_ended),
        (PodState::Active, true)
    );
}

#[test]
fn a_pod_that_cannot_pull_its_image_fails_its_attempt_after_the_grace_and_is_retried() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![stuck(1, "ImagePullBackOff", false, false)];
    // Within the grace the kubelet keeps trying; the run looks again when it ends.
    let d = case.decide_at(t(30));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.attempts[0].outcome, None);
    assert_eq!(
        d.requeue,
        Some(case.settings.pod_start_grace - Duration::from_secs(30))
    );
    // After it: the attempt fails with the reason, its pod goes, a retry is planned.
    let grace = case.settings.pod_start_grace.as_secs() as i64;
    let d = case.decide_at(t(grace));
    assert_eq!(d.actions, vec![Action::DeletePods(vec!["fix-42-1".into()])]);
    let attempt = &d.status.attempts[0];
    assert_eq!(attempt.outcome, Some(AttemptOutcome::NotStarted));
    let reason = attempt.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("did not start within") && reason.contains("ImagePullBackOff"),
        "{reason}"
    );
    assert!(
        d.notes
            .iter()
            .any(|n| n.reason == "AttemptFailed" && n.warning)
    );
    assert!(
        !matches!(d.status.phase, RunPhase::Failed | RunPhase::TimedOut),
        "retried, not finished: {:?}",
        d.status.phase
    );
}

#[test]
fn an_unschedulable_pod_gets_the_longer_grace() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![stuck(1, "Unschedulable", false, true)];
    let past_start_grace = case.settings.pod_start_grace.as_secs() as i64 + 1;
    assert!(case.decide_at(t(past_start_grace)).actions.is_empty());
    let grace = case.settings.unschedulable_grace.as_secs() as i64;
    let d = case.decide_at(t(grace));
    assert_eq!(
        d.status.attempts[0].outcome,
        Some(AttemptOutcome::NotStarted)
    );
}

#[test]
fn an_invalid_image_fails_the_run_at_once_without_a_retry() {
    let mut case = Case::new();
    case.admission = Some(Admission::Admit);
    let d = case.decide_at(t(0));
    case.persist(&d);
    case.pods = vec![stuck(1, "InvalidImageName", true, false)];
    let d = case.decide_at(t(1));
    assert_eq!(
        d.status.attempts[0].outcome,
        Some(AttemptOutcome::Unstartable)
    );
    assert_eq!(d.status.phase, RunPhase::Failed);
    assert!(
        d.status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("cannot start") && m.contains("InvalidImageName")),
        "{:?}",
        d.status.message
    );
}

#[test]
fn start_problems_are_read_from_the_pods_status() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"countersign.dev/attempt": "1"}},
        "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "clone", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}]}
    }))
    .expect("pod");
    let view = PodView::of(&pod).expect("ours");
    let problem = view.start_problem.expect("a problem");
    assert_eq!(problem.reason, "ErrImagePull");
    assert!(!problem.permanent && !problem.unschedulable);
    assert!(problem.message.contains("clone") && problem.message.contains("not found"));

    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"countersign.dev/attempt": "1"}},
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient memory."}]}
    }))
    .expect("pod");
    let problem = PodView::of(&pod)
        .expect("ours")
        .start_problem
        .expect("a problem");
    assert!(problem.unschedulable);
    assert!(problem.message.contains("Insufficient memory"));

    // Waiting to be created, or running: no problem.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p", "labels": {"countersign.dev/attempt": "1"}},
        "status": {"phase": "Pending", "initContainerStatuses": [
            {"name": "clone", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
             "state": {"waiting": {"reason": "PodInitializing"}}}]}
    }))
    .expect("pod");
    assert_eq!(PodView::of(&pod).expect("ours").start_problem, None);
}

const BREAKDOWN: &str = r#"{"tasks": [
    {"id": "api", "title": "Add the endpoint", "agent": "backend"},
    {"id": "ui", "title": "Show it", "agent": "frontend", "dependsOn": ["api"]},
    {"id": "e2e", "title": "Test both", "capabilities": ["qa"], "dependsOn": ["ui"]}
]}"#;

/// An architect's run whose first attempt proposed `report` and whose pod has ended.
fn broken_down_case(report: &str) -> Case {
    let mut case = Case::new();
    case.agent.spec.role = countersign_crds::AgentRole::Architect;
    case.mapped_agents = vec!["backend".into(), "frontend".into()];
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    assert_eq!(started.status.phase, RunPhase::Running);
    case.persist(&started);
    case.pods = vec![pod(1, "primary", ended_with(plan_result(report)))];
    case
}

fn child(name: &str, phase: RunPhase) -> ChildView {
    ChildView {
        name: format!("fix-42-{name}"),
        phase,
        message: None,
        pull_request: None,
        gate_ref: None,
    }
}

#[test]
fn a_breakdown_waits_for_approval_as_the_plan_shown_on_the_issue() {
    let mut case = broken_down_case(BREAKDOWN);
    let waiting = case.decide_at(t(30));
    assert_eq!(waiting.status.phase, RunPhase::AwaitingPlanApproval);
    let breakdown = waiting.status.breakdown.clone().expect("recorded");
    assert_eq!(breakdown.tasks.len(), 3);
    let plan = waiting.status.plan.clone().expect("shown as the plan");
    assert_eq!(plan.text, breakdown.to_markdown());
    assert!(
        waiting.actions.is_empty(),
        "nothing starts without /approve"
    );
    case.persist(&waiting);
    assert!(!wants_admission(&case.run, &case.pods));
    // Approved: carried out by children, not by another attempt of its own.
    annotate(&mut case, "approve/delivery-7/tess");
    assert!(
        !wants_admission(&case.run, &case.pods),
        "children need the capacity"
    );
    let d = case.decide_at(t(40));
    assert_eq!(d.status.phase, RunPhase::Coordinating);
    assert_eq!(d.actions, vec![Action::CreateChild { task: "api".into() }]);
    let waiting_for: Vec<Option<&str>> = d
        .status
        .children
        .iter()
        .map(|c| c.message.as_deref())
        .collect();
    assert_eq!(
        waiting_for,
        [
            Some("starting"),
            Some("waiting for api"),
            Some("waiting for ui")
        ]
    );
}

#[test]
fn a_breakdown_naming_an_unmapped_agent_or_malformed_is_a_failed_attempt() {
    for (report, words) in [
        (
            r#"{"tasks": [{"id": "x", "title": "t", "agent": "root-shell"}]}"#,
            "names Agent \"root-shell\", which the Project's triggers do not map",
        ),
        ("1. do everything", "not valid JSON"),
    ] {
        let mut case = broken_down_case(report);
        let d = case.decide_at(t(30));
        let last = d.status.attempts.last().expect("attempt");
        assert_eq!(last.outcome, Some(AttemptOutcome::Failed));
        let reason = last.reason.as_deref().unwrap_or_default();
        assert!(
            reason.starts_with("the proposed breakdown was refused: "),
            "{reason}"
        );
        assert!(reason.contains(words), "{reason}");
        assert!(d.status.breakdown.is_none());
        case.persist(&d);
    }
}

#[test]
fn children_start_in_dependency_order_and_a_failure_stops_its_dependents() {
    let mut case = broken_down_case(BREAKDOWN);
    let waiting = case.decide_at(t(30));
    case.persist(&waiting);
    annotate(&mut case, "approve/delivery-7/tess");
    let d = case.decide_at(t(40));
    case.persist(&d);
    // api merged: ui starts; e2e still waits.
    case.children = vec![child("api", RunPhase::Succeeded)];
    let d = case.decide_at(t(50));
    assert_eq!(d.actions, vec![Action::CreateChild { task: "ui".into() }]);
    assert_eq!(d.status.phase, RunPhase::Coordinating);
    assert_eq!(
        d.status.message.as_deref(),
        Some("1 of 3 sub-tasks succeeded; 2 in progress or waiting")
    );
    case.persist(&d);
    // A child being created again (the cache lags) is not a second child: same name.
    case.children.push(child("ui", RunPhase::Running));
    let d = case.decide_at(t(60));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    case.persist(&d);
    // ui fails for good: e2e never starts and the parent fails, naming both.
    case.children[1].phase = RunPhase::Failed;
    let d = case.decide_at(t(70));
    assert!(d.actions.is_empty(), "{:?}", d.actions);
    assert_eq!(d.status.phase, RunPhase::Failed);
    assert_eq!(
        d.status.message.as_deref(),
        Some("1 of 3 sub-tasks succeeded; ui Failed, e2e not started")
    );
    assert_eq!(
        d.status.children[2].message.as_deref(),
        Some("not started: ui did not succeed")
    );
}

#[test]
fn a_child_stops_when_its_parent_is_cancelled() {
    let mut case = Case::new();
    case.run.spec.parent_ref = Some(countersign_crds::LocalRef::new("parent"));
    case.admission = Some(Admission::Admit);
    let started = case.decide_at(t(0));
    case.persist(&started);
    case.pods = vec![pod(1, "primary", PodState::Active)];
    case.parent_cancelled = true;
    let d = case.decide_at(t(10));
    assert_eq!(d.status.phase, RunPhase::Cancelled);
    assert_eq!(
        d.status.message.as_deref(),
        Some("Cancelled with its parent run")
    );
    assert_eq!(d.actions, vec![Action::DeletePods(vec!["fix-42-1".into()])]);
}

#[test]
fn a_sub_task_breaks_down_again_only_within_the_depth() {
    let mut case = Case::new();
    case.agent.spec.role = countersign_crds::AgentRole::Architect;
    assert!(breaks_down(&case.run, Some(&case.agent), true));
    case.run.spec.parent_ref = Some(countersign_crds::LocalRef::new("parent"));
    assert!(
        !breaks_down(&case.run, Some(&case.agent), false),
        "beyond maxBreakdownDepth (one by default)"
    );
    assert!(
        breaks_down(&case.run, Some(&case.agent), true),
        "a sub-task within a deeper maxBreakdownDepth"
    );
    case.run.spec.parent_ref = None;
    case.run.spec.mode = Some(RunMode::Observation);
    assert!(
        !breaks_down(&case.run, Some(&case.agent), true),
        "an observer only analyses"
    );
    case.run.spec.mode = None;
    case.run.spec.follow_up_of = Some(countersign_crds::LocalRef::new("origin"));
    assert!(
        !breaks_down(&case.run, Some(&case.agent), true),
        "a follow-up works on its pull request"
    );

    // A sub-task within the depth has its breakdown taken like a top-level run's; beyond it
    // a reported breakdown is not taken as one.
    for (within_depth, taken) in [(true, true), (false, false)] {
        let mut case = broken_down_case(BREAKDOWN);
        case.run.spec.parent_ref = Some(countersign_crds::LocalRef::new("parent"));
        case.within_depth = within_depth;
        let d = case.decide_at(t(30));
        assert_eq!(
            d.status.breakdown.is_some(),
            taken,
            "{:?}",
            d.status.message
        );
    }
}

#[test]
fn any_agent_asked_to_plan_breaks_down() {
    let mut case = Case::new();
    assert_eq!(case.agent.spec.role, countersign_crds::AgentRole::Backend);
    assert!(!breaks_down(&case.run, Some(&case.agent), true));
    case.run.spec.breakdown = true;
    assert!(breaks_down(&case.run, Some(&case.agent), true));
    assert!(!breaks_down(&case.run, Some(&case.agent), false), "depth");
}

/// A follow-up that adds nothing finishes with its findings as a review on the pull request
/// (asked for once: a finished run decides nothing more); one that said nothing asks for none.
#[test]
fn a_follow_up_with_findings_posts_them_once() {
    let findings = "Every branch has a test; nothing to add.";
    for (reason, review) in [
        (findings, true),
        (countersign_crds::result::NOTHING_CHANGED, false),
    ] {
        let mut case = Case::new();
        case.run.spec.follow_up_of = Some(countersign_crds::LocalRef::new("origin"));
        case.follow_up = Some(FollowUpTarget {
            branch: "countersign/origin".into(),
            pull_request: countersign_crds::common::PullRequestRef {
                number: 12,
                url: None,
            },
        });
        case.admission = Some(Admission::Admit);
        let started = case.decide_at(t(0));
        case.persist(&started);
        let result = AgentResult {
            outcome: ResultOutcome::NoChanges,
            summary: Some(findings.into()),
            reason: Some(reason.into()),
            report: None,
            ..plan_result("")
        };
        case.pods = vec![pod(1, "primary", ended_with(result))];
        let d = case.decide_at(t(10));
        assert_eq!(
            d.status.phase,
            RunPhase::Succeeded,
            "{:?}",
            d.status.message
        );
        let posts: Vec<&Action> = d
            .actions
            .iter()
            .filter(|a| matches!(a, Action::PostFindings { .. }))
            .collect();
        if review {
            assert_eq!(
                posts,
                [&Action::PostFindings {
                    pull_request: 12,
                    attempt: 1,
                    findings: findings.into()
                }]
            );
            assert_eq!(
                d.status.message.as_deref(),
                Some("Nothing to add to #12; its findings are a review on it")
            );
        } else {
            assert!(posts.is_empty(), "{posts:?}");
            assert_eq!(
                d.status.message.as_deref(),
                Some("Nothing to add to pull request #12")
            );
        }
        case.persist(&d);
        let again = case.decide_at(t(20));
        assert!(
            !again
                .actions
                .iter()
                .any(|a| matches!(a, Action::PostFindings { .. })),
            "{:?}",
            again.actions
        );
    }
}
