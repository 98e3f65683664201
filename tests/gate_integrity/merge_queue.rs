//! Item 9: the merge-group check follows the gate after the pull request entered the queue.

use countersign_crds::GatePhase;
use serde_json::json;

use crate::harness::*;

fn checks_requested(n: u64, head: &str, queue_sha: &str) -> serde_json::Value {
    json!({
        "action": "checks_requested",
        "merge_group": {
            "head_sha": queue_sha,
            "head_ref": format!("refs/heads/gh-readonly-queue/main/pr-{n}-{head}"),
            "base_ref": "refs/heads/main",
            "base_sha": "b".repeat(40)
        },
        "repository": {"id": 1, "name": "widgets", "full_name": REPO,
                       "owner": {"login": "octo-org", "id": 9000, "type": "Organization"}},
        "sender": {"id": 1, "login": "alice", "type": "User"},
        "installation": {"id": INSTALLATION}
    })
}

#[tokio::test]
async fn a_hold_or_reject_after_queue_entry_updates_the_merge_group_check() {
    let w = World::start().await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let queue_sha = "c".repeat(40);
    w.deliver("merge_group", &checks_requested(n, &w.head(n), &queue_sha))
        .await;
    wait_for("a success on the merge-group commit", || async {
        w.check_on(&queue_sha).filter(success)
    })
    .await;

    // In the queue, the manager puts it on hold: the queue must stop too.
    w.comment(n, &w.p.mgr, "/hold").await;
    w.wait_gate(n, "held", |g| phase(g) == Some(GatePhase::Held))
        .await;
    w.wait_check(n, "pending on the head", pending).await;
    w.settle(n).await;
    let queued = w.check_on(&queue_sha).expect("merge-group check");
    assert!(
        pending(&queued),
        "the merge-group check stayed green after /hold: {queued:?}"
    );

    // A rejection fails it.
    w.comment(n, &w.p.mgr, "/unhold").await;
    w.comment(n, &w.p.lead, "/reject the rounding is wrong")
        .await;
    w.wait_gate(n, "rejected", |g| phase(g) == Some(GatePhase::Rejected))
        .await;
    w.settle(n).await;
    let queued = w.check_on(&queue_sha).expect("merge-group check");
    assert_eq!(queued.conclusion.as_deref(), Some("failure"), "{queued:?}");
}
