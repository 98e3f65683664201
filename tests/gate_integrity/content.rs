//! Item 2: an approval is bound to the change (the diff from the merge base), not the tree.

use countersign_crds::GatePhase;
use countersign_crds::approval_gate::InvalidReason;

use crate::harness::*;

const BUGGY: &str = "pub fn check(token: &str) -> bool {\n    true // accepts anything\n}\n";
const FIXED: &str = "pub fn check(token: &str) -> bool {\n    token == SECRET\n}\n";

fn hosted() -> Options {
    Options {
        git_files: Some(vec![
            ("README.md", "# widgets\n"),
            ("src/lib.rs", BUGGY),
            ("src/orders.rs", "pub fn orders() {}\n"),
        ]),
        ..Options::default()
    }
}

/// erin's pull request adding `src/cart.rs`, approved by a developer and the tech lead.
async fn approved_feature(w: &World) -> u64 {
    let payload = {
        let mut world = w.github.world();
        world.commit_files(
            REPO,
            "feature",
            &[("src/cart.rs", Some("pub fn cart() {}\n"))],
            "Add a cart",
            &w.p.erin,
        );
        world.open_pull_request_from_branch(REPO, "Add a cart", "feature", "main", &w.p.erin)
    };
    w.deliver("pull_request", &payload).await;
    let n = payload["number"].as_u64().expect("number");
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    n
}

#[tokio::test]
async fn a_same_tree_force_push_onto_a_newer_base_that_reverts_a_fix_makes_approvals_stale() {
    let w = World::start_with(hosted()).await;
    let n = approved_feature(&w).await;
    let approved_head = w.head(n);

    // The fix lands on main; erin force-pushes her old tree on top of it: same tree as the
    // approved head, but against the new base the pull request now reverts the fix.
    let payload = {
        let mut world = w.github.world();
        world.commit_files(
            REPO,
            "main",
            &[("src/lib.rs", Some(FIXED))],
            "Fix auth",
            &w.p.lead,
        );
        world.force_push_tree(
            REPO,
            "feature",
            "main",
            &approved_head,
            "Add a cart",
            &w.p.erin,
        );
        world.synchronize_payload(REPO, n, approved_head.clone(), &w.p.erin)
    };
    w.deliver("pull_request", &payload).await;
    let files: Vec<String> = w.github.world().pulls[&(REPO.to_owned(), n)]
        .files
        .iter()
        .map(|f| f.filename.clone())
        .collect();
    assert!(files.contains(&"src/lib.rs".to_owned()), "{files:?}");
    let gate = w.wait_evaluated(n).await;
    assert_eq!(
        phase(&gate),
        Some(GatePhase::Pending),
        "approvals of another change carried over: {:#?}",
        gate.status
    );
    for login in ["alice", "lead"] {
        assert_eq!(
            records_of(&gate, login)[0].invalid_reason,
            Some(InvalidReason::Stale),
            "{login}"
        );
    }
    w.wait_check(n, "pending on the new head", pending).await;
}

#[tokio::test]
async fn a_clean_rebase_onto_a_newer_base_keeps_approvals() {
    let w = World::start_with(hosted()).await;
    let n = approved_feature(&w).await;
    let approved_head = w.head(n);

    // Unrelated work lands on main; erin rebases cleanly: a new head and a new tree, the
    // same change.
    let payload = {
        let mut world = w.github.world();
        world.commit_files(
            REPO,
            "main",
            &[("README.md", Some("# widgets\n\nNow with docs.\n"))],
            "Docs",
            &w.p.lead,
        );
        world.rebase_branch(REPO, "feature", "main", &w.p.erin);
        world.synchronize_payload(REPO, n, approved_head.clone(), &w.p.erin)
    };
    w.deliver("pull_request", &payload).await;
    let rebased = w.head(n);
    assert_ne!(rebased, approved_head);
    // An evaluation that sees the new head before the bot recorded its push waits for it
    // (who pushed is not known yet); once recorded, the same change is approved.
    w.wait_gate(n, "approved on the rebased head", |g| {
        phase(g) == Some(GatePhase::Approved)
            && g.status.as_ref().and_then(|s| s.head_sha.as_deref()) == Some(rebased.as_str())
    })
    .await;
    w.wait_check(n, "success on the rebased head", success)
        .await;
}
