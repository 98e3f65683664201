//! Item 5: pushers, committers past the listing cap, and requesters (including whoever said
//! `/retry`, and after the run is deleted) never approve.

use countersign_crds::approval_gate::InvalidReason;
use countersign_crds::{AgentRun, GatePhase, RunPhase};
use countersign_testkit::github::{ChangedFile, CommitAs, User};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn whoever_pushed_to_the_branch_cannot_approve_whatever_email_the_commits_carry() {
    let w = World::start().await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    // carol pushes a commit that claims erin wrote and committed it.
    let payload = w.github.world().push_commit_as(
        REPO,
        n,
        vec![ChangedFile::modified("src/orders/checkout.rs", 12, 2)],
        &CommitAs {
            pusher: &w.p.carol,
            identity: &w.p.erin,
            date: None,
        },
    );
    w.deliver("pull_request", &payload).await;
    w.review(n, &w.p.carol, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_handled("pull_request_review", 2).await;
    w.settle(n).await;
    let gate = w.gate(n).await.expect("gate");
    let carol = records_of(&gate, "carol")[0];
    assert!(!carol.valid, "the pusher approved her own push: {carol:#?}");
    assert_eq!(reason_of(carol), "pusher");
    assert_eq!(phase(&gate), Some(GatePhase::Pending));

    // Honest path: a developer who pushed nothing counts.
    w.review(n, &w.p.alice, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
}

#[tokio::test]
async fn commits_past_the_250_listing_cap_are_still_seen() {
    let w = World::start().await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    // 260 commits; the 255th is carol's (GitHub lists only the first 250).
    let authors: Vec<User> = (1..=259)
        .map(|i| {
            if i == 254 {
                w.p.carol.clone()
            } else {
                w.p.erin.clone()
            }
        })
        .collect();
    let payload = w.github.world().push_commits(
        REPO,
        n,
        vec![ChangedFile::modified("src/orders/checkout.rs", 30, 2)],
        &authors,
        &w.p.erin,
    );
    w.deliver("pull_request", &payload).await;
    w.review(n, &w.p.carol, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    let gate = w
        .wait_gate(n, "both reviews recorded", |g| {
            !records_of(g, "carol").is_empty() && !records_of(g, "lead").is_empty()
        })
        .await;
    let carol = records_of(&gate, "carol")[0];
    assert!(
        !carol.valid,
        "a committer hidden past the cap approved: {carol:#?}"
    );
    assert_eq!(carol.invalid_reason, Some(InvalidReason::Committer));
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
}

/// A run of `backend` on a new issue asked for by alice, created as the bot would.
async fn run_for_alice(w: &World, name: &str, cancel: bool) -> u64 {
    let issue = w
        .github
        .world()
        .open_issue(REPO, "Add retries", "Retry failed calls.", &w.p.alice);
    create(
        &w.api.client(),
        NS,
        json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": name, "namespace": NS, "labels": {
                "countersign.dev/project": "widgets",
                "countersign.dev/issue": issue.to_string(),
                "countersign.dev/agent": "backend"}},
            "spec": {
                "projectRef": {"name": "widgets"},
                "agentRef": {"name": "backend"},
                "cancelRequested": cancel,
                "task": {"issue": issue, "title": "Add retries",
                         "requestedBy": {"login": "alice", "id": 1}, "source": "issueLabel"}
            }
        }),
    )
    .await;
    issue
}

/// The agent's pull request from the branch of run `run`, opened by the App's bot.
async fn ai_pull_request(w: &World, run: &str) -> u64 {
    let n = w
        .open(
            &format!("countersign/{run}"),
            &["src/retry.rs"],
            &bot_user(),
        )
        .await;
    let gate = w.wait_evaluated(n).await;
    assert!(gate.spec.ai_generated, "{:?}", gate.spec);
    n
}

#[tokio::test]
async fn whoever_asked_for_a_retry_cannot_approve_its_pull_request() {
    let w = World::start().await;
    let issue = run_for_alice(&w, "widgets-issue-1-backend", true).await;
    let runs = Api::<AgentRun>::namespaced(w.api.client(), NS);
    wait_for("the first run cancelled", || async {
        runs.get("widgets-issue-1-backend")
            .await
            .ok()
            .and_then(|r| r.status)
            .filter(|s| s.phase == RunPhase::Cancelled)
    })
    .await;
    // carol asks for a retry: a new run of the same task.
    w.comment(issue, &w.p.carol, "/retry").await;
    let retried = wait_for("the retried run", || async {
        runs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .map(|r| kube::ResourceExt::name_any(&r))
            .find(|n| n != "widgets-issue-1-backend")
    })
    .await;
    let n = ai_pull_request(&w, &retried).await;
    w.review(n, &w.p.carol, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    let gate = w
        .wait_gate(n, "both reviews recorded", |g| {
            !records_of(g, "carol").is_empty() && !records_of(g, "lead").is_empty()
        })
        .await;
    let carol = records_of(&gate, "carol")[0];
    assert!(
        !carol.valid,
        "whoever asked for the retry approved its result: {carol:#?}"
    );
    assert_eq!(carol.invalid_reason, Some(InvalidReason::Requester));
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
}

#[tokio::test]
async fn a_requester_stays_a_requester_after_the_agent_run_is_deleted() {
    let w = World::start().await;
    run_for_alice(&w, "widgets-issue-1-backend", false).await;
    let n = ai_pull_request(&w, "widgets-issue-1-backend").await;
    Api::<AgentRun>::namespaced(w.api.client(), NS)
        .delete("widgets-issue-1-backend", &DeleteParams::default())
        .await
        .expect("delete run");
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    let gate = w
        .wait_gate(n, "both reviews recorded", |g| {
            !records_of(g, "alice").is_empty() && !records_of(g, "lead").is_empty()
        })
        .await;
    let alice = records_of(&gate, "alice")[0];
    assert!(
        !alice.valid,
        "the requester approved once her run was gone: {alice:#?}"
    );
    assert_eq!(alice.invalid_reason, Some(InvalidReason::Requester));
    assert_eq!(phase(&gate), Some(GatePhase::Pending));

    // Honest path: a real second developer counts.
    w.review(n, &w.p.carol, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
}
