//! Item 6: `/unhold` lifts only holds of the same person or of someone ranked no higher;
//! the author never lifts a security hold.

use countersign_crds::GatePhase;

use crate::harness::*;

async fn approved(w: &World, author: &countersign_testkit::github::User) -> u64 {
    let n = w.open("feature", &["src/orders/checkout.rs"], author).await;
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    n
}

#[tokio::test]
async fn a_lower_role_cannot_lift_a_managers_hold() {
    let w = World::start().await;
    let n = approved(&w, &w.p.erin).await;
    w.comment(n, &w.p.mgr, "Legal has not signed off.\n\n/hold")
        .await;
    w.wait_gate(n, "held", |g| phase(g) == Some(GatePhase::Held))
        .await;

    // A developer lifts it.
    w.comment(n, &w.p.alice, "/unhold").await;
    w.wait_handled("issue_comment", 2).await;
    w.settle(n).await;
    let gate = w.gate(n).await.expect("gate");
    assert_eq!(
        phase(&gate),
        Some(GatePhase::Held),
        "a developer lifted the manager's hold"
    );
    assert_eq!(
        gate.status
            .and_then(|s| s.held_by)
            .map(|u| u.login)
            .as_deref(),
        Some("mgr")
    );

    // Honest path: the manager lifts their own hold.
    w.comment(n, &w.p.mgr, "/unhold").await;
    w.wait_gate(n, "approved again", |g| {
        phase(g) == Some(GatePhase::Approved)
    })
    .await;
}

#[tokio::test]
async fn the_author_cannot_lift_a_security_hold() {
    let w = World::start().await;
    // The cto wrote this one.
    let n = approved(&w, &w.p.cto).await;
    w.comment(n, &w.p.sam, "Reviewing the crypto.\n\n/hold")
        .await;
    w.wait_gate(n, "held", |g| phase(g) == Some(GatePhase::Held))
        .await;
    w.comment(n, &w.p.cto, "/unhold").await;
    w.wait_handled("issue_comment", 2).await;
    w.settle(n).await;
    let gate = w.gate(n).await.expect("gate");
    assert_eq!(
        phase(&gate),
        Some(GatePhase::Held),
        "the author lifted a security hold"
    );
    w.comment(n, &w.p.sam, "/unhold").await;
    w.wait_gate(n, "approved again", |g| {
        phase(g) == Some(GatePhase::Approved)
    })
    .await;
}
