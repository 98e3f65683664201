//! Item 3: a comment command is bound to the head the bot saw when it arrived.

use countersign_crds::GatePhase;
use countersign_testkit::github::{ChangedFile, CommitAs};

use crate::harness::*;

#[tokio::test]
async fn a_comment_approval_never_binds_to_a_backdated_commit() {
    let w = World::start().await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.wait_evaluated(n).await;

    // The lead approves by comment, but the webhook is lost.
    let approved_at = {
        let mut world = w.github.world();
        world.comment(REPO, n, "/approve", &w.p.lead);
        world
            .comments_on(REPO, n)
            .last()
            .expect("comment")
            .created_at
    };
    // erin pushes new content whose commit claims to be older than the comment.
    let backdated = approved_at
        .checked_sub(k8s_openapi::jiff::SignedDuration::from_secs(1))
        .expect("time");
    let payload = w.github.world().push_commit_as(
        REPO,
        n,
        vec![ChangedFile::modified("src/orders/checkout.rs", 40, 1)],
        &CommitAs {
            pusher: &w.p.erin,
            identity: &w.p.erin,
            date: Some(backdated),
        },
    );
    w.deliver("pull_request", &payload).await;
    // A developer approves the new head.
    w.review(n, &w.p.alice, "APPROVED").await;
    let gate = w
        .wait_gate(n, "alice recorded at the new head", |g| {
            let head = w.head(n);
            records_of(g, "alice").iter().any(|r| r.sha == head)
        })
        .await;
    let lead = records_of(&gate, "lead");
    assert!(
        lead.iter().all(|r| !r.valid),
        "the lead's comment counted for content they never saw: {lead:#?}"
    );
    assert_eq!(phase(&gate), Some(GatePhase::Pending));

    // Honest path: the lead approves again, and this one the bot receives.
    w.comment(n, &w.p.lead, "/approve").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
}
