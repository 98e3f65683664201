//! Item 7: the changed-file list is complete, or the gate fails closed at the highest level.

use countersign_crds::GatePhase;
use countersign_crds::risk_policy::RiskLevel;
use countersign_testkit::github::ChangedFile;

use crate::harness::*;

/// 3,000 harmless documentation files first, then a CI workflow and a migration.
fn padded(prefix: &str) -> Vec<String> {
    let mut paths: Vec<String> = (0..3000)
        .map(|i| format!("{prefix}/pad-{i:04}.md"))
        .collect();
    paths.push(".github/workflows/deploy.yml".to_owned());
    paths.push("migrations/0042_drop_users.sql".to_owned());
    paths
}

#[tokio::test]
async fn three_thousand_padding_files_cannot_hide_a_workflow_and_a_migration() {
    let w = World::start().await;
    let files = padded("docs")
        .iter()
        .map(|p| ChangedFile::modified(p, 1, 0))
        .collect();
    let n = w.open_files("padding", files, &w.p.erin).await;
    let gate = w.wait_evaluated(n).await;
    assert_ne!(
        phase(&gate),
        Some(GatePhase::Approved),
        "a workflow and a migration hidden past the listing cap approved themselves"
    );
    assert_eq!(
        level(&gate),
        Some(RiskLevel::Critical),
        "{:#?}",
        gate.status
    );
    let reasons: Vec<String> = gate
        .status
        .as_ref()
        .and_then(|s| s.risk.as_ref())
        .map(|r| r.factors.iter().map(|f| f.reason.clone()).collect())
        .unwrap_or_default();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("3000") && r.contains("3002")),
        "the reason says why: {reasons:#?}"
    );
    w.wait_check(n, "pending", pending).await;
}

#[tokio::test]
async fn a_pull_request_past_the_listing_cap_is_read_with_git() {
    let w = World::start_with(Options {
        git_files: Some(vec![("README.md", "# widgets\n")]),
        ..Options::default()
    })
    .await;
    // In git's order (by path) the `.docs/` padding comes before `.github/` and `migrations/`.
    let paths = padded(".docs");
    let payload = {
        let mut world = w.github.world();
        let changes: Vec<(&str, Option<&str>)> =
            paths.iter().map(|p| (p.as_str(), Some("x\n"))).collect();
        world.commit_files(REPO, "padding", &changes, "Docs", &w.p.erin);
        world.open_pull_request_from_branch(REPO, "Docs", "padding", "main", &w.p.erin)
    };
    w.deliver("pull_request", &payload).await;
    let n = payload["number"].as_u64().expect("number");
    let gate = w.wait_evaluated(n).await;
    assert_ne!(phase(&gate), Some(GatePhase::Approved));
    assert_eq!(
        level(&gate),
        Some(RiskLevel::Critical),
        "{:#?}",
        gate.status
    );
    let rules: Vec<String> = gate
        .status
        .as_ref()
        .and_then(|s| s.risk.as_ref())
        .map(|r| r.factors.iter().filter_map(|f| f.rule.clone()).collect())
        .unwrap_or_default();
    assert!(
        rules
            .iter()
            .any(|r| r == "data-migration" || r == "ci-workflows"),
        "the hidden files were read and scored by their own rules: {rules:?}"
    );
}
