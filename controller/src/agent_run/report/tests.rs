use countersign_crds::agent_run::{
    Attempt, AttemptOutcome, PlanDecision, ProgressComment, RunPlan,
};
use countersign_crds::common::PullRequestRef;
use countersign_crds::result::{AgentResult, RESULT_VERSION, ResultOutcome};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;

fn run() -> AgentRun {
    serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "api-issue-42-backend", "namespace": "team"},
        "spec": {"projectRef": {"name": "api"}, "agentRef": {"name": "backend"}, "task": {
            "issueNumber": 42,
            "title": "Return 404 for unknown invoices (see #7, ping @alice)",
            "instructions": "Keep the handler small. Fixes #9",
            "requestedBy": {"login": "rita", "id": 11},
            "source": "issueLabel"
        }}
    }))
    .expect("valid run")
}

fn status(phase: RunPhase) -> AgentRunStatus {
    AgentRunStatus {
        phase,
        message: Some("Attempt 1 running on provider openrouter".into()),
        attempts: vec![Attempt {
            number: 1,
            pod: "api-issue-42-backend-1".into(),
            provider: "openrouter".into(),
            start_time: None,
            finish_time: None,
            outcome: Some(AttemptOutcome::Succeeded),
            reason: None,
            ..Attempt::default()
        }],
        branch: Some("countersign/api-issue-42-backend".into()),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        usage: Usage {
            input_tokens: 1200,
            output_tokens: 300,
            cost: countersign_crds::Usd { cents: 4 },
        },
        ..AgentRunStatus::default()
    }
}

fn result() -> AgentResult {
    AgentResult {
        version: RESULT_VERSION,
        outcome: ResultOutcome::Succeeded,
        provider: Some("openrouter".into()),
        branch: Some("countersign/api-issue-42-backend".into()),
        commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        files_changed: 2,
        lines_added: 14,
        lines_removed: 3,
        summary: Some("Added a 404 branch. Fixes #5, thanks @bob".into()),
        reason: None,
        report: Some("## Findings\nThe handler lacks a check (@carol knows).".into()),
        verification: Some("unit-tests passed | lint passed".into()),
        usage: Usage::default(),
    }
}

fn facts<'a>(
    run: &'a AgentRun,
    status: &'a AgentRunStatus,
    result: Option<&'a AgentResult>,
    mode: RunMode,
) -> RunFacts<'a> {
    RunFacts {
        run,
        status,
        agent: "backend",
        mode,
        model: Some("anthropic/claude-sonnet-4"),
        result,
        milestones: &[],
    }
}

#[test]
fn the_body_states_task_agent_model_usage_verification_and_closes_only_the_task_issue() {
    let (run, status, result) = (run(), status(RunPhase::Running), result());
    let body = pull_request_body(&facts(&run, &status, Some(&result), RunMode::Autonomous));
    for expected in [
        "agent **backend** for run `api-issue-42-backend`",
        "| Provider | `openrouter` |",
        "| Model | `anthropic/claude-sonnet-4` |",
        "| Usage | 1200 tokens in, 300 out, $0.04 |",
        "| Change | 2 files, +14 −3 |",
        "| Verification | unit-tests passed \\| lint passed |",
        "Requested by @rita (who therefore cannot approve",
        "> Keep the handler small.",
        "\nCloses #42\n",
    ] {
        assert!(body.contains(expected), "missing {expected:?} in:\n{body}");
    }
    // Model and issue text can neither ping people nor close other issues.
    for forbidden in ["@bob", "@alice", "Fixes #5", "Fixes #9", "#7"] {
        assert!(
            !body.contains(forbidden),
            "{forbidden:?} survived in:\n{body}"
        );
    }
    assert_eq!(body.matches("Closes #").count(), 1);
}

#[test]
fn titles_are_one_neutralised_line_and_labels_fit_github() {
    let run = run();
    assert_eq!(
        pull_request_title(&run),
        "Return 404 for unknown invoices (see #\u{200B}7, ping @\u{200B}alice)"
    );
    assert_eq!(
        pull_request_labels("backend", &["team:payments".into(), AI_LABEL.into()]),
        [AI_LABEL, "countersign/agent:backend", "team:payments"]
    );
    let long = "a".repeat(40);
    assert_eq!(pull_request_labels(&long, &[]), [AI_LABEL]);
}

#[test]
fn the_progress_comment_follows_the_phases_and_changes_its_digest() {
    let run = run();
    let running = status(RunPhase::Running);
    let first = progress_comment(&facts(&run, &running, None, RunMode::Autonomous));
    assert!(first.starts_with("<!-- countersign:run team/api-issue-42-backend -->\n"));
    assert!(first.contains("**running**"), "{first}");
    let mut open = status(RunPhase::PullRequestOpen);
    open.pull_request = Some(PullRequestRef {
        number: 43,
        url: None,
    });
    let second = progress_comment(&facts(&run, &open, None, RunMode::Autonomous));
    assert!(second.contains("**pull request opened**") && second.contains("#43"));
    assert_ne!(digest(&first), digest(&second));
    assert_eq!(digest(&second), digest(&second.clone()));
    let mut failed = status(RunPhase::Failed);
    failed.message = Some("A guardrail refused the change: .github/workflows/ci.yml".into());
    let third = progress_comment(&facts(&run, &failed, None, RunMode::Autonomous));
    assert!(third.contains("**failed**") && third.contains("> A guardrail refused"));
}

#[test]
fn plans_ask_for_a_decision_and_record_it() {
    let run = run();
    let mut waiting = status(RunPhase::AwaitingPlanApproval);
    waiting.plan = Some(RunPlan {
        text: "1. Add a check\n2. Test it (cc @dave)".into(),
        attempt: 1,
        decision: None,
    });
    let asking = progress_comment(&facts(&run, &waiting, None, RunMode::Control));
    assert!(asking.contains("1. Add a check") && asking.contains("**`/approve`**"));
    assert!(!asking.contains("@dave"));
    let mut decided = waiting.clone();
    decided.phase = RunPhase::Running;
    decided.plan.as_mut().expect("plan").decision = Some(PlanDecision {
        approved: true,
        by: Some("tess".into()),
        delivery: None,
        time: Time(jiff::Timestamp::UNIX_EPOCH),
    });
    decided.progress_comment = Some(ProgressComment {
        id: 1,
        digest: "x".into(),
    });
    let approved = progress_comment(&facts(&run, &decided, None, RunMode::Control));
    assert!(approved.contains("Plan approved by @tess."), "{approved}");
    assert!(!approved.contains("/approve"));
}

#[test]
fn observation_runs_post_their_analysis() {
    let run = run();
    let mut done = status(RunPhase::Succeeded);
    done.branch = None;
    done.commit = None;
    let result = result();
    let comment = progress_comment(&facts(&run, &done, Some(&result), RunMode::Observation));
    assert!(comment.contains("### Analysis\n\n## Findings"), "{comment}");
    assert!(!comment.contains("@carol"));
    let autonomous = progress_comment(&facts(&run, &done, Some(&result), RunMode::Autonomous));
    assert!(!autonomous.contains("### Analysis"));
}

#[test]
fn observation_runs_show_their_progress_notes_as_they_come() {
    use countersign_crds::progress::Milestone;
    let run = run();
    let running = status(RunPhase::Running);
    let notes = [
        Milestone {
            attempt: 1,
            time: "2026-12-06T23:01:02Z".into(),
            text: "Read src/http.rs: the 200 comes from status_for".into(),
        },
        Milestone {
            attempt: 1,
            time: "2026-12-06T23:01:09Z".into(),
            text: "Looking at #12 with @carol\nsecond line".into(),
        },
    ];
    let mut with_notes = facts(&run, &running, None, RunMode::Observation);
    with_notes.milestones = &notes[..1];
    let first = progress_comment(&with_notes);
    assert!(
        first.contains(
            "### Progress\n\n- `23:01:02` Read src/http.rs: the 200 comes from status_for\n"
        ),
        "{first}"
    );
    with_notes.milestones = &notes;
    let second = progress_comment(&with_notes);
    assert_ne!(
        digest(&first),
        digest(&second),
        "a new note edits the comment"
    );
    assert!(
        second.contains("- `23:01:09` Looking at #\u{200B}12 with @\u{200B}carol second line\n"),
        "mentions and references are neutralised and the note stays one line: {second}"
    );
    let without = progress_comment(&facts(&run, &running, None, RunMode::Observation));
    assert!(!without.contains("### Progress"));
}

#[test]
fn neutralising_keeps_emails_and_code_but_breaks_mentions_and_references() {
    assert_eq!(neutralise("mail a@b.c"), "mail a@b.c");
    assert_eq!(neutralise("@team-x"), "@\u{200B}team-x");
    assert_eq!(neutralise("C# and #x"), "C# and #x");
    assert_eq!(neutralise("#12"), "#\u{200B}12");
}

#[test]
fn findings_reviews_carry_their_marker_and_neutralised_findings() {
    let body = findings_review(
        &run(),
        Some("qa"),
        2,
        "  Looks fine, @alice; see #7.\n/approve\n",
    );
    let marker = findings_marker(&run(), 2);
    assert_eq!(
        marker,
        "<!-- countersign:findings team/api-issue-42-backend attempt 2 -->"
    );
    assert!(body.starts_with(&marker), "{body}");
    assert!(body.contains("(Agent `qa`), attempt 2"), "{body}");
    assert!(
        body.contains("Looks fine, @\u{200B}alice; see #\u{200B}7.\n/approve\n"),
        "{body}"
    );
    assert_ne!(findings_marker(&run(), 1), marker, "one marker per attempt");
}
