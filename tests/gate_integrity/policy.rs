//! Item 8: the default policy does not take code or agent instructions for documentation,
//! and paths match whatever their case.

use countersign_crds::GatePhase;
use countersign_crds::risk_policy::RiskLevel;

use crate::harness::*;

#[tokio::test]
async fn an_upper_case_migration_path_is_still_a_migration() {
    let w = World::start().await;
    let n = w
        .open("drop", &["Migrations/0042_drop.SQL"], &w.p.erin)
        .await;
    let gate = w.wait_evaluated(n).await;
    assert_eq!(
        level(&gate),
        Some(RiskLevel::Critical),
        "{:#?}",
        gate.status
    );
}

#[tokio::test]
async fn a_script_under_docs_is_not_documentation() {
    let w = World::start().await;
    let n = w.open("docs-build", &["docs/build.py"], &w.p.erin).await;
    let gate = w.wait_evaluated(n).await;
    assert_ne!(
        phase(&gate),
        Some(GatePhase::Approved),
        "a Python script under docs/ approved itself as documentation"
    );
    assert!(
        level(&gate) >= Some(RiskLevel::Medium),
        "{:#?}",
        gate.status
    );
}

#[tokio::test]
async fn agent_instruction_files_are_not_documentation() {
    let w = World::start().await;
    let n = w.open("claude", &["CLAUDE.md"], &w.p.erin).await;
    let gate = w.wait_evaluated(n).await;
    assert_ne!(
        phase(&gate),
        Some(GatePhase::Approved),
        "agent instructions approved themselves as documentation"
    );
    assert!(level(&gate) >= Some(RiskLevel::High), "{:#?}", gate.status);
}
