//! Approval gates through the whole system: signed webhooks into the real bot router, the
//! bot's workers writing ApprovalGates to the fake apiserver, the real controller reading
//! the pull request from the fake GitHub, applying the RiskPolicy and the approval rules, and
//! publishing the `countersign/approval` check run there.
//!
//! Deadlines use tokio's clock: the controller's clock is `base + tokio elapsed`, and the
//! deadline tests pause tokio time and advance it past the deadline, so the requeue the
//! controller scheduled fires without anyone sleeping for hours.

#[path = "support/gate_world.rs"]
mod gate_world;

use std::time::Duration;

use countersign_crds::approval_gate::InvalidReason;
use countersign_crds::{AgentRun, ApprovalGate, GatePhase, RiskPolicy};
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::Fault;
use k8s_openapi::jiff::SignedDuration;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use gate_world::*;

#[tokio::test]
async fn a_docs_only_pull_request_approves_itself_with_the_reason_in_the_check() {
    let w = World::start(json!({})).await;
    let n = w
        .open("docs-typo", &["docs/guide.md", "README.md"], &w.p.erin)
        .await;
    let gate = w
        .wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let status = gate.status.expect("status");
    let risk = status.risk.expect("risk");
    assert_eq!(risk.workflow, "standard");
    let reason = status
        .auto_approve_reason
        .expect("auto-approve reason recorded");
    let check = w.wait_check(n, "success", success).await;
    let summary = check.summary.clone().unwrap_or_default();
    assert!(
        summary.contains(&reason) || summary.contains("standard"),
        "{summary}"
    );
    assert_eq!(
        check.details_url.as_deref(),
        Some("https://countersign.example.com/gates/team-a/widgets-pr-1")
    );
    assert!(
        w.github.world().review_requests_on(REPO, n).is_empty(),
        "nobody is asked to review an auto-approved change"
    );

    // Settled: our own status writes and the Project's count updates do not trigger the
    // gate again. Quiescence cannot be awaited, so this watches the reconcile counter: it
    // must stop moving (a pass that met an outdated cached copy is retried once, 1 s later),
    // and then stay still over a window of ten of the shortest requeue the reconciler uses
    // (300 ms here): a loop driven by our own writes would reconcile every time.
    let reconciles = || w.metrics.reconciles_of("ApprovalGate");
    tokio::time::timeout(WAIT, async {
        loop {
            let before = reconciles();
            tokio::time::sleep(Duration::from_millis(1500)).await;
            if reconciles() == before {
                return;
            }
        }
    })
    .await
    .expect("the gate's reconciles stop");
    let before = reconciles();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(reconciles(), before, "no reconcile loop");
}

#[tokio::test]
async fn a_feature_needs_a_developer_and_a_tech_lead_and_turns_green_only_after_both() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    let head = w.head(n);
    let gate = w
        .wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;
    let status = gate.status.expect("status");
    assert_eq!(status.phase, GatePhase::Pending);
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(roles, ["developer", "tech_lead"]);
    assert!(status.deadline.is_some(), "supervised has a 4h deadline");
    w.wait_check(n, "pending", pending).await;
    w.wait_gate(n, "reviews asked", |g| {
        g.status
            .as_ref()
            .is_some_and(|s| !s.requested_roles.is_empty())
    })
    .await;
    // The missing roles were asked once: the lead by login, the developers by team.
    let requests: Vec<(Vec<String>, Vec<String>)> = w
        .github
        .world()
        .review_requests_on(REPO, n)
        .iter()
        .map(|r| (r.users.clone(), r.teams.clone()))
        .collect();
    assert_eq!(
        requests,
        [(vec!["lead".to_owned()], vec!["devs".to_owned()])]
    );

    w.review(n, &w.p.alice, "APPROVED").await;
    w.wait_gate(n, "alice counted", |g| {
        g.status.as_ref().is_some_and(|s| {
            s.requirements
                .iter()
                .any(|r| r.role.0 == "developer" && r.approved_by == ["alice"])
        })
    })
    .await;
    let check = w.check_on(&head).expect("check");
    assert!(pending(&check), "one of two roles is not enough: {check:?}");

    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let check = w.wait_check(n, "success", success).await;
    let summary = check.summary.unwrap_or_default();
    assert!(
        summary.contains("alice") && summary.contains("lead"),
        "{summary}"
    );
    assert_eq!(
        w.github.world().review_requests_on(REPO, n).len(),
        1,
        "asked once"
    );
}

#[tokio::test]
async fn an_auth_change_needs_a_tech_lead_and_a_manager() {
    let w = World::start(json!({})).await;
    let n = w.open("login", &["src/auth/session.rs"], &w.p.erin).await;
    let head = w.head(n);
    let gate = w
        .wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;
    let status = gate.status.expect("status");
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(roles, ["tech_lead", "manager"]);
    assert_eq!(status.risk.expect("risk").workflow, "managed");

    // A developer's approval does not count for either role.
    w.review(n, &w.p.alice, "APPROVED").await;
    let gate = w
        .wait_gate(n, "alice recorded", |g| !records_of(g, "alice").is_empty())
        .await;
    assert_eq!(
        records_of(&gate, "alice")[0].invalid_reason,
        Some(InvalidReason::NotInRole)
    );
    w.review(n, &w.p.lead, "APPROVED").await;
    w.review(n, &w.p.mgr, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    w.wait_check(n, "success", success).await;
}

#[tokio::test]
async fn a_push_after_approval_invalidates_it_but_a_clean_rebase_does_not() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let first_head = w.head(n);
    w.wait_check(n, "success", success).await;

    // A clean rebase: new SHAs, the same change. The approvals carry over (once the push's
    // webhook said who pushed the new head).
    let payload = w.github.world().rebase_pull_request(REPO, n, &w.p.erin);
    w.deliver("pull_request", &payload).await;
    let rebased = w.head(n);
    assert_ne!(rebased, first_head);
    w.wait_gate(n, "approved on the rebased head", |g| {
        evaluated_at(g, &rebased) && phase(g) == Some(GatePhase::Approved)
    })
    .await;
    w.wait_check(n, "success on the rebased head", success)
        .await;

    // New content: the approvals are stale.
    w.push(
        n,
        &["src/orders/checkout.rs", "src/orders/cart.rs"],
        &w.p.erin,
    )
    .await;
    let pushed = w.head(n);
    let gate = w
        .wait_gate(n, "evaluated on the pushed head", |g| {
            evaluated_at(g, &pushed)
        })
        .await;
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
    for login in ["alice", "lead"] {
        assert_eq!(
            records_of(&gate, login)[0].invalid_reason,
            Some(InvalidReason::Stale),
            "{login}"
        );
    }
    w.wait_check(n, "pending on the new head", pending).await;
    // The old head's check keeps its conclusion; the new head has its own.
    assert!(success(&w.check_on(&first_head).expect("old check")));
}

#[tokio::test]
async fn the_requester_of_an_ai_run_cannot_approve_its_pull_request() {
    let w = World::start(json!({})).await;
    // The run that wrote the change, asked for by alice.
    let run: AgentRun = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": "widgets-issue-3-backend", "namespace": NS},
        "spec": {
            "projectRef": {"name": "widgets"},
            "agentRef": {"name": "backend"},
            "task": {"issue": 3, "title": "Add retries",
                     "requestedBy": {"login": "alice", "id": 1}, "source": "issueLabel"}
        }
    }))
    .expect("run");
    Api::<AgentRun>::namespaced(w.api.client(), NS)
        .create(&PostParams::default(), &run)
        .await
        .expect("create run");
    let n = w
        .open(
            "countersign/widgets-issue-3-backend",
            &["src/retry.rs"],
            &bot_user(),
        )
        .await;
    let gate = w.wait_gate(n, "a gate", |g| g.status.is_some()).await;
    assert!(gate.spec.ai_generated, "{:?}", gate.spec);

    w.review(n, &w.p.alice, "APPROVED").await;
    let gate = w
        .wait_gate(n, "alice recorded", |g| !records_of(g, "alice").is_empty())
        .await;
    let alice = records_of(&gate, "alice")[0];
    assert!(!alice.valid);
    assert_eq!(alice.invalid_reason, Some(InvalidReason::Requester));
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
    let check = w
        .wait_check(n, "lists the requester", |c| {
            c.summary
                .as_deref()
                .is_some_and(|s| s.contains("requester"))
        })
        .await;
    assert!(pending(&check));

    // Another developer and the lead can.
    w.review(n, &w.p.carol, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    w.wait_check(n, "success", success).await;
}

#[tokio::test]
async fn hold_blocks_and_unhold_releases() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;

    w.comment(n, &w.p.mgr, "Wait for the freeze to end.\n\n/hold")
        .await;
    let gate = w
        .wait_gate(n, "held", |g| phase(g) == Some(GatePhase::Held))
        .await;
    assert_eq!(
        gate.status.and_then(|s| s.held_by).map(|u| u.login),
        Some("mgr".to_owned())
    );
    w.wait_check(n, "pending while held", pending).await;

    // Someone without write access or a role cannot lift it.
    w.comment(n, &w.p.mallory, "/unhold").await;
    w.comment(n, &w.p.mgr, "/unhold").await;
    w.wait_gate(n, "approved again", |g| {
        phase(g) == Some(GatePhase::Approved)
    })
    .await;
    w.wait_check(n, "success", success).await;
}

#[tokio::test]
async fn a_merge_group_commit_gets_the_gates_conclusion() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let queue_sha = "c".repeat(40);
    let head = w.head(n);
    let payload = json!({
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
    });
    w.deliver("merge_group", &payload).await;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(c) = w.check_on(&queue_sha) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("a check run on the merge-group commit");
    assert!(success(&found), "{found:?}");
}

#[tokio::test]
async fn an_approval_comment_edited_by_someone_else_is_tampering() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    // The lead writes a harmless comment; an admin (mgr) edits it into an approval.
    w.comment(n, &w.p.lead, "Will look tomorrow.").await;
    let id = w
        .github
        .world()
        .comments_on(REPO, n)
        .iter()
        .find(|c| c.author == "lead")
        .map(|c| c.id)
        .expect("lead's comment");
    let payload = w
        .github
        .world()
        .edit_comment(REPO, id, "/approve", &w.p.mgr);
    w.deliver("issue_comment", &payload).await;
    let gate = w
        .wait_gate(n, "lead's forged approval recorded", |g| {
            !records_of(g, "lead").is_empty()
        })
        .await;
    assert_eq!(
        records_of(&gate, "lead")[0].invalid_reason,
        Some(InvalidReason::Tampered)
    );
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
}

#[tokio::test]
async fn an_approved_pull_request_merges_itself_once_the_other_checks_pass() {
    let w = World::start(json!({"autoMerge": true, "mergeMethod": "squash"})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    let head = w.head(n);
    w.github
        .world()
        .add_check_run(REPO, &head, "ci/test", 15368, "in_progress", None);
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    w.wait_check(n, "success", success).await;
    let merged = |w: &World| {
        w.github
            .world()
            .pulls
            .get(&(REPO.to_owned(), n))
            .is_some_and(|p| p.merged)
    };
    assert!(!merged(&w), "ci/test is still running");
    // CI finishes; the next look (a nudge here, the 30 s poll otherwise) merges.
    w.github
        .world()
        .add_check_run(REPO, &head, "ci/test", 15368, "completed", Some("success"));
    Api::<ApprovalGate>::namespaced(w.api.client(), NS)
        .patch(
            &format!("widgets-pr-{n}"),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"countersign.dev/last-delivery": "ci-done"}}}),
            ),
        )
        .await
        .expect("nudge");
    w.wait_gate(n, "merged", |g| phase(g) == Some(GatePhase::Merged))
        .await;
    assert!(merged(&w));
}

#[tokio::test]
async fn a_migration_needs_three_executives_and_expires_at_its_deadline() {
    let w = World::start(json!({})).await;
    let n = w
        .open("migrate", &["migrations/0042_add_index.sql"], &w.p.erin)
        .await;
    let head = w.head(n);
    let gate = w
        .wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;
    let status = gate.status.expect("status");
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(roles, ["manager", "security_team", "cto"]);
    let waiting = status.waiting_since.expect("clock started").0;
    let deadline = status.deadline.expect("72h deadline").0;
    assert_eq!(
        deadline.duration_since(waiting),
        SignedDuration::from_hours(72)
    );
    w.review(n, &w.p.mgr, "APPROVED").await;
    w.review(n, &w.p.sam, "APPROVED").await;
    w.wait_gate(n, "two approvals", |g| {
        g.status
            .as_ref()
            .is_some_and(|s| s.requirements.iter().filter(|r| r.satisfied == 1).count() == 2)
    })
    .await;

    advance(Duration::from_secs(72 * 3600 + 5)).await;
    let gate = w
        .wait_gate(n, "expired", |g| phase(g) == Some(GatePhase::Expired))
        .await;
    let status = gate.status.expect("status");
    assert_eq!(
        status.escalations.last().map(|e| e.action),
        Some(countersign_crds::risk_policy::TimeoutAction::Expire)
    );
    let check = w
        .wait_check(n, "failure", |c| c.conclusion.as_deref() == Some("failure"))
        .await;
    assert_eq!(check.status, "completed");
    w.wait_gate(n, "expiry announced", |g| {
        g.status
            .as_ref()
            .is_some_and(|s| s.escalations.iter().all(|e| !e.notice_pending))
    })
    .await;
    let comments = w
        .github
        .world()
        .comments_on(REPO, n)
        .iter()
        .map(|c| c.body.clone())
        .collect::<Vec<_>>();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("Expired") && c.contains("@cto")),
        "{comments:?}"
    );

    // The cto approving afterwards does not revive it: new content must be pushed.
    w.review(n, &w.p.cto, "APPROVED").await;
    let gate = w
        .wait_gate(n, "cto recorded", |g| !records_of(g, "cto").is_empty())
        .await;
    assert_eq!(phase(&gate), Some(GatePhase::Expired));
}

/// Sets the high-risk workflow's `escalationMode` (the default policy's is `standIn`); the
/// controller reads the RiskPolicy on every evaluation.
async fn set_high_risk_escalation_mode(w: &World, mode: &str) {
    Api::<RiskPolicy>::namespaced(w.api.client(), NS)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"workflows": {"high": {"escalationMode": mode}}}})),
        )
        .await
        .expect("patch the RiskPolicy");
}

/// Opens a high-risk pull request, lets its 24h deadline pass and returns the escalated gate
/// with the comments on the pull request.
async fn escalate_high_risk_change(w: &World) -> (u64, ApprovalGate, Vec<String>) {
    let n = w.open("login", &["src/auth/session.rs"], &w.p.erin).await;
    let head = w.head(n);
    w.wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;

    advance(Duration::from_secs(24 * 3600 + 5)).await;
    let gate = w
        .wait_gate(n, "escalated and announced", |g| {
            g.status.as_ref().is_some_and(|s| {
                !s.escalations.is_empty() && s.escalations.iter().all(|e| !e.notice_pending)
            })
        })
        .await;
    let comments: Vec<String> = w
        .github
        .world()
        .comments_on(REPO, n)
        .iter()
        .map(|c| c.body.clone())
        .collect();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("Escalated") && c.contains("@cto")),
        "{comments:?}"
    );
    // cto was asked for a review as well.
    let asked_cto = w
        .github
        .world()
        .review_requests_on(REPO, n)
        .iter()
        .any(|r| r.users.contains(&"cto".to_owned()));
    assert!(asked_cto);
    (n, gate, comments)
}

#[tokio::test]
async fn a_high_risk_change_escalated_in_additional_mode_needs_the_cto_as_well() {
    use countersign_crds::risk_policy::EscalationMode;
    let w = World::start(json!({})).await;
    set_high_risk_escalation_mode(&w, "additional").await;
    let (n, gate, _) = escalate_high_risk_change(&w).await;
    let status = gate.status.expect("status");
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(roles, ["tech_lead", "manager", "cto"]);
    assert_eq!(status.phase, GatePhase::Pending);
    assert_eq!(status.escalations[0].mode, Some(EscalationMode::Additional));

    // The cto's approval is one more, not a replacement.
    w.review(n, &w.p.cto, "APPROVED").await;
    let gate = w
        .wait_gate(n, "cto counted", |g| {
            g.status.as_ref().is_some_and(|s| {
                s.requirements
                    .iter()
                    .any(|r| r.role.0 == "cto" && r.satisfied == 1)
            })
        })
        .await;
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
    w.wait_check(n, "pending", pending).await;

    for who in [&w.p.lead, &w.p.mgr] {
        w.review(n, who, "APPROVED").await;
    }
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    w.wait_check(n, "success", success).await;
}

#[tokio::test]
async fn a_high_risk_change_escalated_in_stand_in_mode_is_approved_by_the_cto_alone() {
    use countersign_crds::risk_policy::EscalationMode;
    let w = World::start(json!({})).await;
    // The default policy's mode, written out.
    set_high_risk_escalation_mode(&w, "standIn").await;
    let (n, gate, comments) = escalate_high_risk_change(&w).await;
    let status = gate.status.expect("status");
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(
        roles,
        ["tech_lead", "manager"],
        "cto is no third requirement"
    );
    assert!(
        status
            .requirements
            .iter()
            .all(|r| r.stand_in.as_ref().map(|s| s.as_str()) == Some("cto")),
        "{:?}",
        status.requirements
    );
    let escalation = &status.escalations[0];
    assert_eq!(escalation.mode, Some(EscalationMode::StandIn));
    let stands_in_for: Vec<&str> = escalation
        .stands_in_for
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(stands_in_for, ["tech_lead", "manager"]);
    assert_eq!(status.phase, GatePhase::Pending);
    assert!(
        comments
            .iter()
            .any(|c| c.contains("in place of `tech_lead`, `manager`")),
        "{comments:?}"
    );
    let check = w.wait_check(n, "pending", pending).await;
    let summary = check.summary.unwrap_or_default();
    assert!(
        summary.contains("escalated to cto (stands in for tech\\_lead, manager)"),
        "{summary}"
    );

    // After the deadline, only the cto approves: that is enough.
    w.review(n, &w.p.cto, "APPROVED").await;
    let gate = w
        .wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let status = gate.status.expect("status");
    for r in &status.requirements {
        assert_eq!(r.stood_in_by.as_deref(), Some("cto"), "{r:?}");
        assert_eq!(r.satisfied, r.count, "{r:?}");
    }
    let check = w.wait_check(n, "success", success).await;
    assert!(
        check
            .summary
            .unwrap_or_default()
            .contains("\\@cto (standing in)")
    );
}

/// #17: GitHub fails between two of the gate's side effects: the check run is created but
/// its answer is lost, then asking for reviews fails. Neither is repeated, the run created
/// is the one the status names, and the status says what GitHub was told at every step.
#[tokio::test]
async fn github_failing_between_the_gates_side_effects_repeats_none_of_them() {
    let w = World::start(json!({})).await;
    w.github
        .fail_next_call("POST", "/check-runs", Fault::Applied(502), 1);
    // Every attempt of the first pass that gets this far (the client retries 5xx).
    w.github
        .fail_next_call("POST", "/requested_reviewers", Fault::Status(502), 4);
    let n = w.open("orders", &["src/orders.rs"], &w.p.erin).await;
    let head = w.head(n);
    // The first failure recorded (another event about the gate may have started the next
    // pass already, which then fails at the review request).
    let gate = w
        .wait_gate(n, "a failure recorded", |g| last_error(g).is_some())
        .await;
    assert_eq!(our_checks(&w, &head).len(), 1, "created once, not retried");
    let lost_answer = last_error(&gate).is_some_and(|e| e.contains("check-runs"));
    let status = gate.status.expect("status");
    assert_eq!(
        status.phase,
        GatePhase::Pending,
        "the decision was saved first"
    );
    assert!(status.requested_roles.is_empty(), "nobody asked yet");
    if lost_answer {
        assert_eq!(status.check_run_id, None, "its answer never came");
        advance(PAST_GITHUB_BACKOFF).await;
    }
    let gate = w
        .wait_gate(n, "the check run recorded", |g| {
            g.status.as_ref().is_some_and(|s| s.check_run_id.is_some())
        })
        .await;
    let checks = our_checks(&w, &head);
    assert_eq!(
        checks.len(),
        1,
        "the run left behind was adopted: {checks:#?}"
    );
    let request_failed = last_error(&gate).is_some_and(|e| e.contains("requested_reviewers"));
    let status = gate.status.expect("status");
    assert_eq!(status.check_run_id, Some(checks[0].id));
    assert_eq!(status.check_run_sha.as_deref(), Some(head.as_str()));
    if request_failed {
        assert!(status.requested_roles.is_empty(), "the request failed");
    }

    advance(PAST_GITHUB_BACKOFF).await;
    let gate = w
        .wait_gate(n, "reviews asked", |g| {
            g.status
                .as_ref()
                .is_some_and(|s| !s.requested_roles.is_empty() && s.last_error.is_none())
        })
        .await;
    let asked = w
        .github
        .calls_to("/requested_reviewers")
        .into_iter()
        .filter(|c| c.method == "POST" && c.status < 300)
        .count();
    assert_eq!(asked, 1);
    let checks = our_checks(&w, &head);
    assert_eq!(checks.len(), 1, "{checks:#?}");
    let status = gate.status.expect("status");
    assert_eq!(status.check_run_id, Some(checks[0].id));
    // The check says what the gate says.
    assert_eq!(status.phase, GatePhase::Pending);
    assert_eq!(checks[0].status, "in_progress");
    assert_eq!(checks[0].conclusion, None);
}

fn reminders(w: &World, n: u64) -> usize {
    w.github
        .world()
        .comments_on(REPO, n)
        .iter()
        .filter(|c| c.body.contains("Reminder"))
        .count()
}

/// #17: a reminder whose comment was posted but whose answer was lost is not posted again
/// (the comment carries a marker the next pass finds); one that GitHub refused is posted
/// by the next pass. Either way the escalation is recorded once and says when its comment
/// is out.
#[tokio::test]
async fn a_deadline_notice_is_posted_exactly_once_whatever_github_answers() {
    let w = World::start(json!({})).await;
    let n = w.open("orders", &["src/orders.rs"], &w.p.erin).await;
    let head = w.head(n);
    w.wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;
    let comments = format!("/issues/{n}/comments");
    // The escalation `count` is recorded, and either its comment failed (pending, the error
    // recorded) or it is out (another event may start the next pass before the test looks).
    let decided = |count: usize| {
        move |g: &ApprovalGate| {
            g.status.as_ref().is_some_and(|s| {
                s.escalations.len() == count
                    && (s.escalations.iter().all(|e| !e.notice_pending)
                        || (s.escalations[count - 1].notice_pending
                            && last_error(g).is_some_and(|e| e.contains("comments"))))
            })
        }
    };
    let posted = |g: &ApprovalGate| {
        g.status.as_ref().is_some_and(|s| {
            s.last_error.is_none() && s.escalations.iter().all(|e| !e.notice_pending)
        })
    };

    w.github
        .fail_next_call("POST", &comments, Fault::Applied(502), 1);
    advance(Duration::from_secs(4 * 3600 + 5)).await;
    w.wait_gate(n, "the reminder decided", decided(1)).await;
    assert_eq!(reminders(&w, n), 1, "posted once, not retried");
    advance(PAST_GITHUB_BACKOFF).await;
    let gate = w
        .wait_gate(n, "the reminder recorded as posted", posted)
        .await;
    assert_eq!(gate.status.expect("status").escalations.len(), 1);
    assert_eq!(reminders(&w, n), 1, "found by its marker, not posted again");

    // The next deadline's comment is refused outright: a later pass posts it.
    w.github
        .fail_next_call("POST", &comments, Fault::Status(502), 1);
    advance(Duration::from_secs(4 * 3600 + 5)).await;
    let gate = w
        .wait_gate(n, "the second reminder decided", decided(2))
        .await;
    if gate
        .status
        .as_ref()
        .is_some_and(|s| s.escalations[1].notice_pending)
    {
        assert_eq!(reminders(&w, n), 1, "refused, so not on the pull request");
    }
    advance(PAST_GITHUB_BACKOFF).await;
    let gate = w.wait_gate(n, "the second reminder posted", posted).await;
    assert_eq!(gate.status.expect("status").escalations.len(), 2);
    assert_eq!(reminders(&w, n), 2);
    assert_eq!(
        w.github
            .calls_to(&comments)
            .iter()
            .filter(|c| c.method == "POST")
            .count(),
        3,
        "one lost answer, one refusal, one success: nothing posted twice"
    );
    let check = w.check_on(&head).expect("check");
    assert_eq!(
        check.status, "in_progress",
        "still waiting, as the gate says"
    );
}

/// #17: a gate whose status cannot be written (here every write is refused as a conflict,
/// as when the controller's copy is older than the stored one) tells GitHub nothing: no
/// check run is created from a decision that was not saved, and once writes go through
/// there is exactly one. The fake apiserver is the one that can refuse writes on demand.
#[tokio::test]
async fn nothing_reaches_github_from_a_decision_that_could_not_be_saved() {
    let api = TestCluster::fake().await.expect("fake apiserver");
    let w = World::start_on(api, json!({})).await;
    let faults = w.api.as_fake().expect("fake").faults();
    faults.force_conflicts("approvalgates/status", 1_000);
    let n = w.open("orders", &["src/orders.rs"], &w.p.erin).await;
    let head = w.head(n);
    tokio::time::timeout(WAIT, async {
        while faults.injected() < 3 {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("the controller tried to save the gate three times");
    assert!(
        our_checks(&w, &head).is_empty(),
        "a check run before the decision was saved"
    );
    assert!(w.github.calls_to("/requested_reviewers").is_empty());
    let gate = w.gate(n).await.expect("gate");
    assert_eq!(gate.status, None);

    faults.reset();
    w.wait_gate(n, "evaluated", |g| {
        evaluated_at(g, &head) && g.status.as_ref().is_some_and(|s| s.check_run_id.is_some())
    })
    .await;
    assert_eq!(our_checks(&w, &head).len(), 1);
}
