//! Item 1: one repository, one Project; the installation is the one GitHub reports.

use countersign_crds::{AgentRun, ApprovalGate};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

use crate::harness::*;

/// A RiskPolicy that scores nothing: every change is low risk and approves itself.
fn lenient_policy() -> serde_json::Value {
    json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "RiskPolicy",
        "spec": {
            "rules": [{"name": "anything", "set": {"impact": 1}}],
            "workflows": {
                "low": {"name": "yes", "autoApprove": true},
                "medium": {"name": "m", "approvers": [{"role": "developer"}]},
                "high": {"name": "h", "approvers": [{"role": "developer"}]},
                "critical": {"name": "c", "approvers": [{"role": "developer"}]}
            }
        }
    })
}

#[tokio::test]
async fn a_second_project_for_a_managed_repository_gets_no_gate_check_or_merge() {
    let w = World::start().await;
    let owner = w
        .wait_project(NS, "widgets", "ready", |c| c.status == "True")
        .await;
    after_second_of(&owner).await;

    // Another team names the same repository, with a policy that approves anything and
    // automatic merging on.
    w.add_namespace("team-b", Some(lenient_policy())).await;
    create(
        &w.api.client(),
        "team-b",
        json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
            "metadata": {"name": "hijack", "namespace": "team-b"},
            "spec": {
                "repository": {"owner": "octo-org", "name": "widgets"},
                "installation": {"id": INSTALLATION},
                "pullRequests": {"autoMerge": true}
            }
        }),
    )
    .await;
    // The controller (and with the same watch, the bot) has seen it.
    w.wait_project("team-b", "hijack", "reconciled", |_| true)
        .await;

    // A critical change: the real gate must hold it.
    let n = w
        .open("migrate", &["migrations/0042_drop_users.sql"], &w.p.erin)
        .await;
    w.wait_handled("pull_request", 1).await;
    let gate = w.wait_evaluated(n).await;
    assert_eq!(
        level(&gate),
        Some(countersign_crds::risk_policy::RiskLevel::Critical)
    );
    let hijack_gates = Api::<ApprovalGate>::namespaced(w.api.client(), "team-b")
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(
        hijack_gates.items.is_empty(),
        "the second Project got its own gate: {:?}",
        hijack_gates
            .items
            .iter()
            .map(|g| &g.status)
            .collect::<Vec<_>>()
    );
    assert!(
        !w.merged(n),
        "a Project that does not own the repository merged a critical pull request"
    );
    let head = w.head(n);
    let checks = w.github.world().check_runs_on(REPO, &head).len();
    let ours: Vec<_> = w
        .github
        .world()
        .check_runs_on(REPO, &head)
        .into_iter()
        .map(|c| {
            (
                c.external_id.clone(),
                c.status.clone(),
                c.conclusion.clone(),
            )
        })
        .collect();
    assert!(
        ours.iter().all(
            |(id, _, conclusion)| id.as_deref() == Some("team-a/widgets-pr-1")
                && conclusion.is_none()
        ),
        "only the owner's pending check may exist ({checks}): {ours:?}"
    );
    let claimed = w
        .wait_project("team-b", "hijack", "told the repository is claimed", |c| {
            c.status == "False"
        })
        .await;
    let ready = claimed
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .cloned()
        .expect("Ready");
    assert_eq!(ready.reason, "RepositoryClaimed");
    assert!(
        ready.message.contains("team-a/widgets"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn a_project_cannot_borrow_another_repositorys_installation_for_a_token() {
    let w = World::start().await;
    w.add_namespace("team-b", None).await;
    let client = w.api.client();
    // `evil-org/widgets` is not where installation 77 lives; the spec names it anyway.
    create(
        &client,
        "team-b",
        json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
            "metadata": {"name": "borrow", "namespace": "team-b"},
            "spec": {
                "repository": {"owner": "evil-org", "name": "widgets"},
                "installation": {"id": INSTALLATION}
            }
        }),
    )
    .await;
    create(
        &client,
        "team-b",
        json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "shell", "namespace": "team-b"},
            "spec": {"role": "backend", "providers": [
                {"name": "sh", "kind": "command", "command": {"command": ["true"]}}
            ]}
        }),
    )
    .await;
    create(
        &client,
        "team-b",
        json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": "steal", "namespace": "team-b"},
            "spec": {"projectRef": {"name": "borrow"}, "agentRef": {"name": "shell"},
                     "task": {"title": "x", "source": "kubectl"}}
        }),
    )
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), "team-b");
    let projects = Api::<countersign_crds::Project>::namespaced(client.clone(), "team-b");
    let outcome = wait_for("the Project refused, or a token handed out", || async {
        let handed: Vec<String> = secrets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        if !handed.is_empty() {
            return Some(Err(handed));
        }
        let project = projects.get("borrow").await.ok()?;
        let refused = project.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False")
        });
        refused.then_some(Ok(project))
    })
    .await;
    let project = outcome.unwrap_or_else(|names| {
        panic!("a token for another owner's repository landed in team-b: {names:?}")
    });
    let runs = Api::<AgentRun>::namespaced(client.clone(), "team-b");
    wait_for("the run reports why it waits", || async {
        let run = runs.get("steal").await.expect("run");
        run.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
            .filter(|c| c.status == "False" && c.reason != "Pending")
            .map(drop)
    })
    .await;
    let secrets = secrets.list(&ListParams::default()).await.expect("secrets");
    assert!(
        secrets.items.is_empty(),
        "a token Secret landed in team-b: {:?}",
        secrets
            .items
            .iter()
            .map(|s| s.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    let minted: Vec<_> = w
        .github
        .world()
        .tokens
        .values()
        .filter(|t| t.repositories.is_some())
        .map(|t| (t.installation, t.repositories.clone()))
        .collect();
    assert!(
        minted.is_empty(),
        "repository tokens were minted: {minted:?}"
    );
    let ready = project
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .expect("Ready");
    assert!(
        [
            "InstallationNotFound",
            "InstallationMismatch",
            "RepositoryNotAllowed"
        ]
        .contains(&ready.reason.as_str()),
        "{ready:?}"
    );
}

#[tokio::test]
async fn a_namespace_the_operator_did_not_allow_manages_nothing() {
    let w = World::start().await;
    w.add_namespace("team-c", None).await;
    // octo-org/payments is installed and unclaimed, but team-c may not manage octo-org.
    create(
        &w.api.client(),
        "team-c",
        json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
            "metadata": {"name": "payments", "namespace": "team-c"},
            "spec": {"repository": {"owner": "octo-org", "name": "payments"}}
        }),
    )
    .await;
    w.wait_project("team-c", "payments", "reconciled", |_| true)
        .await;
    let payload = w.github.world().open_pull_request(
        "octo-org/payments",
        "Pay",
        "pay",
        vec![countersign_testkit::github::ChangedFile::modified(
            "src/pay.rs",
            1,
            1,
        )],
        &w.p.erin,
    );
    w.deliver("pull_request", &payload).await;
    w.wait_handled("pull_request", 1).await;
    let gates = Api::<ApprovalGate>::namespaced(w.api.client(), "team-c")
        .list(&ListParams::default())
        .await
        .expect("list");
    assert!(
        gates.items.is_empty(),
        "team-c got a gate for octo-org/payments"
    );
    let project = w
        .wait_project("team-c", "payments", "refused", |c| c.status == "False")
        .await;
    let ready = project
        .status
        .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"))
        .expect("Ready");
    assert_eq!(ready.reason, "RepositoryNotAllowed", "{ready:?}");
}
