//! Item 4: an edit of someone else's command never counts, wherever the command lives.

use countersign_crds::GatePhase;
use countersign_crds::approval_gate::{Decision, InvalidReason};

use crate::harness::*;

#[tokio::test]
async fn an_inline_reject_edited_into_an_approve_by_someone_else_does_not_count() {
    let w = World::start().await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    // The lead rejects in an inline review comment.
    let payload =
        w.github
            .world()
            .add_review_comment(REPO, n, "/reject this leaks card numbers", &w.p.lead);
    w.deliver("pull_request_review_comment", &payload).await;
    w.nudge(n, "after-inline-reject").await;
    w.wait_gate(n, "rejected", |g| phase(g) == Some(GatePhase::Rejected))
        .await;

    // The manager (an admin on GitHub) edits the lead's comment into an approval.
    let id = w.github.world().pulls[&(REPO.to_owned(), n)].review_comments[0].id;
    let payload = w
        .github
        .world()
        .edit_review_comment(REPO, n, id, "/approve", &w.p.mgr);
    w.deliver("pull_request_review_comment", &payload).await;
    w.nudge(n, "after-edit").await;
    let gate = w
        .wait_gate(n, "the edited comment re-read", |g| {
            records_of(g, "lead")
                .iter()
                .any(|r| r.decision == Decision::Approve)
        })
        .await;
    let lead = records_of(&gate, "lead");
    assert!(
        lead.iter().all(|r| !r.valid),
        "an approval someone else wrote into the lead's comment counted: {lead:#?}"
    );
    assert!(
        lead.iter()
            .any(|r| r.invalid_reason == Some(InvalidReason::Tampered)),
        "{lead:#?}"
    );
    assert_ne!(phase(&gate), Some(GatePhase::Approved));
}

#[tokio::test]
async fn a_review_body_command_edited_by_someone_else_does_not_count() {
    let w = World::start().await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    // The lead comments in a review without deciding.
    let payload = w.github.world().submit_review(
        REPO,
        n,
        &w.p.lead,
        "COMMENTED",
        "Not sure about the rounding yet.",
    );
    w.deliver("pull_request_review", &payload).await;
    w.wait_evaluated(n).await;
    let review = w.github.world().pulls[&(REPO.to_owned(), n)].reviews[1].id;
    let payload = w
        .github
        .world()
        .edit_review_body(REPO, n, review, "/approve", &w.p.mgr);
    w.deliver("pull_request_review", &payload).await;
    // Until the edit's webhook arrives the command counts for no head (GitHub keeps no edit
    // time for reviews, and the bot never received this body); then it is tampering.
    let gate = w
        .wait_gate(n, "the edited review re-read", |g| {
            !records_of(g, "lead").is_empty()
        })
        .await;
    let lead = records_of(&gate, "lead");
    assert!(lead.iter().all(|r| !r.valid), "{lead:#?}");
    assert_ne!(phase(&gate), Some(GatePhase::Approved));
    let gate = w
        .wait_gate(n, "the edit recorded as tampering", |g| {
            records_of(g, "lead")
                .iter()
                .any(|r| r.invalid_reason == Some(InvalidReason::Tampered))
        })
        .await;
    assert_eq!(phase(&gate), Some(GatePhase::Pending));

    // Honest path: a command the reviewer wrote in their own review body counts.
    let payload = w.github.world().submit_review(
        REPO,
        n,
        &w.p.lead,
        "COMMENTED",
        "Rounding is fine now.\n\n/approve",
    );
    w.deliver("pull_request_review", &payload).await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
}
