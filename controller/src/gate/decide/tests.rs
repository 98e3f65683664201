use std::collections::{BTreeMap, BTreeSet, HashMap};

use countersign_crds::approval_gate::ApprovalVia;
use countersign_crds::{ApprovalGateSpec, GitHubUser, LocalRef};
use countersign_policies::approvals::{Signal, SignalKind};
use countersign_policies::{Change, CompiledPolicy, default_policy};

use super::*;

const HEAD: &str = "2222222222222222222222222222222222222222";

fn at(hours: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + hours * 3600).expect("valid time")
}

fn gate(status: Option<ApprovalGateStatus>) -> ApprovalGate {
    let mut g = ApprovalGate::new(
        "web-pr-7",
        ApprovalGateSpec {
            project_ref: LocalRef { name: "web".into() },
            pull_request_number: 7,
            base_branch: "main".into(),
            author: GitHubUser {
                login: "erin".into(),
                id: Some(5),
            },
            ai_generated: false,
            agent_run_ref: None,
            requesters: Vec::new(),
        },
    );
    g.metadata.generation = Some(1);
    g.status = status;
    g
}

fn assess(path: &str) -> Assessment {
    CompiledPolicy::compile(&default_policy().spec)
        .expect("default policy compiles")
        .evaluate(&Change::touching([path]))
}

fn facts(change: &str) -> PullFacts {
    let mut roles = HashMap::new();
    roles.insert(1, BTreeSet::from([RoleName::from("developer")]));
    roles.insert(2, BTreeSet::from([RoleName::from("tech_lead")]));
    roles.insert(4, BTreeSet::from([RoleName::from("cto")]));
    PullFacts {
        head_sha: HEAD.into(),
        change_id: Some(change.into()),
        changes: BTreeMap::from([(HEAD.to_owned(), change.to_owned())]),
        roles,
        ..PullFacts::default()
    }
}

fn run(g: &ApprovalGate, a: &Assessment, facts: PullFacts, now: Timestamp) -> Plan {
    decide(Inputs {
        gate: g,
        assessment: a,
        duties: &SeparationOfDuties::default(),
        facts,
        audit: Audit::default(),
        state: PullState::Open,
        draft: false,
        request_reviewers: true,
        auto_merge: false,
        now,
    })
}

#[test]
fn first_look_starts_the_clock_and_asks_the_missing_roles() {
    let a = assess("src/orders.rs");
    let plan = run(&gate(None), &a, facts("t1"), at(0));
    assert_eq!(plan.status.phase, GatePhase::Pending);
    assert_eq!(plan.status.waiting_since, Some(Time(at(0))));
    assert_eq!(plan.status.deadline, Some(Time(at(4))));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(4 * 3600)));
    let asked: Vec<&str> = plan.request_roles.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(asked, ["developer", "tech_lead"]);

    // Asked once: the next evaluation does not ask again.
    let again = run(&gate(Some(plan.status)), &a, facts("t1"), at(1));
    assert!(again.request_roles.is_empty());
    assert_eq!(
        again.status.deadline,
        Some(Time(at(4))),
        "deadline unchanged"
    );
    assert_eq!(again.requeue_after, Some(Duration::from_secs(3 * 3600)));
}

#[test]
fn medium_risk_reminds_at_the_deadline_and_waits_another_timeout() {
    let a = assess("src/orders.rs");
    let first = run(&gate(None), &a, facts("t1"), at(0));
    let due = run(&gate(Some(first.status)), &a, facts("t1"), at(4));
    let notice = due.notice.expect("a reminder");
    assert_eq!(notice.action, TimeoutAction::Remind);
    assert_eq!(notice.missing.len(), 2);
    assert_eq!(due.status.phase, GatePhase::Pending);
    assert_eq!(due.status.deadline, Some(Time(at(8))));
    assert_eq!(due.status.escalations.len(), 1);
    // Re-evaluating at the same moment, the reminder posted, does not remind twice.
    let mut posted = due.status;
    posted.escalations[0].notice_pending = false;
    let again = run(&gate(Some(posted)), &a, facts("t1"), at(4));
    assert!(again.notice.is_none());
}

fn approval(login: &str, id: u64, hours: i64) -> Signal {
    Signal {
        user: GitHubUser {
            login: login.into(),
            id: Some(id),
        },
        kind: SignalKind::Approve,
        via: ApprovalVia::Review,
        sha: Some(HEAD.into()),
        time: at(hours),
        tampered: false,
    }
}

fn roles_of(plan: &Plan) -> Vec<&str> {
    plan.status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect()
}

#[test]
fn high_risk_escalates_to_cto_once_and_in_additional_mode_the_cto_role_becomes_required() {
    let mut a = assess("src/auth/login.rs");
    assert_eq!(a.workflow.name, "managed");
    a.workflow.escalation_mode = Some(EscalationMode::Additional);
    let first = run(&gate(None), &a, facts("t1"), at(0));
    assert_eq!(first.status.deadline, Some(Time(at(24))));
    let due = run(&gate(Some(first.status)), &a, facts("t1"), at(24));
    let notice = due.notice.clone().expect("an escalation");
    assert_eq!(notice.action, TimeoutAction::Escalate);
    assert_eq!(notice.to_role, Some(RoleName::from("cto")));
    assert_eq!(notice.mode, Some(EscalationMode::Additional));
    assert!(notice.stands_in_for.is_empty());
    assert_eq!(roles_of(&due), ["tech_lead", "manager", "cto"]);
    // cto is asked for a review too.
    assert_eq!(due.request_roles, [RoleName::from("cto")]);
    // The cto alone is not enough: everyone is needed.
    let mut cto = facts("t1");
    cto.signals.push(approval("cto", 4, 25));
    let with_cto = run(&gate(Some(due.status.clone())), &a, cto, at(25));
    assert_eq!(with_cto.status.phase, GatePhase::Pending);
    // The next deadline reminds instead of escalating again.
    let later = run(&gate(Some(due.status)), &a, facts("t1"), at(48));
    assert_eq!(later.notice.map(|n| n.action), Some(TimeoutAction::Remind));
}

#[test]
fn high_risk_escalates_to_cto_who_stands_in_for_the_missing_roles_by_default() {
    let a = assess("src/auth/login.rs");
    assert_eq!(a.workflow.escalation_mode, Some(EscalationMode::StandIn));
    let first = run(&gate(None), &a, facts("t1"), at(0));
    let due = run(&gate(Some(first.status)), &a, facts("t1"), at(24));
    let notice = due.notice.clone().expect("an escalation");
    assert_eq!(notice.action, TimeoutAction::Escalate);
    assert_eq!(notice.mode, Some(EscalationMode::StandIn));
    let missing = [RoleName::from("tech_lead"), RoleName::from("manager")];
    assert_eq!(notice.stands_in_for, missing);
    let escalation = &due.status.escalations[0];
    assert_eq!(escalation.mode, Some(EscalationMode::StandIn));
    assert_eq!(escalation.stands_in_for, missing);
    // No third requirement: cto may stand in for each missing one, and is asked.
    assert_eq!(roles_of(&due), ["tech_lead", "manager"]);
    assert!(
        due.status
            .requirements
            .iter()
            .all(|r| r.stand_in == Some(RoleName::from("cto")))
    );
    assert_eq!(due.request_roles, [RoleName::from("cto")]);
    assert_eq!(due.status.phase, GatePhase::Pending);

    // After the deadline the cto's approval alone approves.
    let mut cto = facts("t1");
    cto.signals.push(approval("cto", 4, 25));
    let approved = run(&gate(Some(due.status.clone())), &a, cto, at(25));
    assert_eq!(approved.status.phase, GatePhase::Approved);
    for r in &approved.status.requirements {
        assert_eq!(r.stood_in_by.as_deref(), Some("cto"), "{r:?}");
        assert_eq!(r.satisfied, r.count);
    }
    // The next deadline reminds instead of escalating again, the cto included.
    let later = run(&gate(Some(due.status)), &a, facts("t1"), at(48));
    let reminder = later.notice.expect("a reminder");
    assert_eq!(reminder.action, TimeoutAction::Remind);
    assert_eq!(
        reminder.missing,
        ["tech_lead", "cto", "manager"].map(RoleName::from)
    );
    assert_eq!(later.status.escalations.len(), 2);
}

#[test]
fn a_stand_in_answers_for_the_roles_missing_at_the_deadline_only() {
    let a = assess("src/auth/login.rs");
    // The tech lead approved in time; the manager did not.
    let mut lead = facts("t1");
    lead.signals.push(approval("lead", 2, 0));
    let first = run(&gate(None), &a, lead.clone(), at(0));
    let due = run(&gate(Some(first.status)), &a, lead, at(24));
    assert_eq!(
        due.notice.expect("an escalation").stands_in_for,
        [RoleName::from("manager")]
    );
    // Later the tech lead's review is dismissed: the cto still covers only the manager.
    let mut cto = facts("t1");
    cto.signals.push(approval("cto", 4, 25));
    let plan = run(&gate(Some(due.status)), &a, cto, at(25));
    assert_eq!(plan.status.phase, GatePhase::Pending);
    let tech_lead = &plan.status.requirements[0];
    assert_eq!(
        (tech_lead.role.0.as_str(), tech_lead.satisfied),
        ("tech_lead", 0)
    );
    assert_eq!(tech_lead.stand_in, None);
    assert_eq!(
        plan.status.requirements[1].stood_in_by.as_deref(),
        Some("cto")
    );
    let ready = conditions::find(&plan.status.conditions, "Ready").expect("Ready");
    assert!(
        ready.message.contains("tech_lead (1 of 1)")
            && !ready.message.contains("tech_lead (1 of 1) or"),
        "{}",
        ready.message
    );
}

#[test]
fn escalations_recorded_without_a_mode_keep_requiring_the_role_in_addition() {
    let a = assess("src/auth/login.rs");
    let first = run(&gate(None), &a, facts("t1"), at(0));
    let mut status = first.status;
    status.escalations.push(Escalation {
        time: Time(at(24)),
        action: TimeoutAction::Escalate,
        to_role: Some(RoleName::from("cto")),
        mode: None,
        stands_in_for: Vec::new(),
        notice_pending: false,
    });
    let plan = run(&gate(Some(status)), &a, facts("t1"), at(25));
    assert_eq!(roles_of(&plan), ["tech_lead", "manager", "cto"]);
}

#[test]
fn critical_risk_expires_and_a_new_tree_starts_over() {
    let a = assess("migrations/0042_add_index.sql");
    let first = run(&gate(None), &a, facts("t1"), at(0));
    assert_eq!(first.status.deadline, Some(Time(at(72))));
    let before = run(&gate(Some(first.status.clone())), &a, facts("t1"), at(71));
    assert_eq!(before.status.phase, GatePhase::Pending);
    let expired = run(&gate(Some(first.status)), &a, facts("t1"), at(72));
    assert_eq!(expired.status.phase, GatePhase::Expired);
    assert_eq!(
        expired.notice.map(|n| n.action),
        Some(TimeoutAction::Expire)
    );
    assert_eq!(expired.status.decision_time, Some(Time(at(72))));
    assert_eq!(expired.requeue_after, None);
    // Still expired later, even with approvals on the same content.
    let mut late = facts("t1");
    late.signals.push(Signal {
        user: GitHubUser {
            login: "cto".into(),
            id: Some(4),
        },
        kind: SignalKind::Approve,
        via: ApprovalVia::Review,
        sha: Some(HEAD.into()),
        time: at(73),
        tampered: false,
    });
    for role in [("manager", 6), ("security_team", 7)] {
        late.roles
            .insert(role.1, BTreeSet::from([RoleName::from(role.0)]));
        late.signals.push(Signal {
            user: GitHubUser {
                login: role.0.into(),
                id: Some(role.1),
            },
            kind: SignalKind::Approve,
            via: ApprovalVia::Review,
            sha: Some(HEAD.into()),
            time: at(73),
            tampered: false,
        });
    }
    let still = run(&gate(Some(expired.status.clone())), &a, late, at(73));
    assert!(
        still.verdict.missing_roles().next().is_none(),
        "all roles approved"
    );
    assert_eq!(still.status.phase, GatePhase::Expired);
    // A push with a new tree starts over.
    let fresh = run(&gate(Some(expired.status)), &a, facts("t2"), at(80));
    assert_eq!(fresh.status.phase, GatePhase::Pending);
    assert!(fresh.status.escalations.is_empty());
    assert_eq!(fresh.status.deadline, Some(Time(at(152))));
}

#[test]
fn a_change_that_could_not_be_read_keeps_the_heads_clock_and_its_expiry() {
    let a = assess("migrations/0042_add_index.sql");
    let first = run(&gate(None), &a, facts("t1"), at(0));
    let expired = run(&gate(Some(first.status)), &a, facts("t1"), at(72));
    assert_eq!(expired.status.phase, GatePhase::Expired);
    // The same head, its change unreadable this time (a listing gap git could not fill).
    let mut unreadable = facts("t1");
    unreadable.change_id = None;
    unreadable.changes.clear();
    let again = run(&gate(Some(expired.status.clone())), &a, unreadable, at(73));
    assert_eq!(again.status.phase, GatePhase::Expired);
    assert_eq!(again.status.escalations, expired.status.escalations);
    // And back: readable again, still the same content.
    let mut prev = again.status;
    prev.change_id = None;
    let readable = run(&gate(Some(prev)), &a, facts("t1"), at(74));
    assert_eq!(readable.status.phase, GatePhase::Expired);
    assert_eq!(readable.status.waiting_since, Some(Time(at(0))));
}

#[test]
fn a_notice_decided_but_not_posted_is_posted_on_the_next_pass_and_only_then() {
    let a = assess("src/auth/login.rs");
    let first = run(&gate(None), &a, facts("t1"), at(0));
    let escalated = run(&gate(Some(first.status)), &a, facts("t1"), at(24));
    let notice = escalated.notice.clone().expect("escalated at the deadline");
    let last = escalated.status.escalations.last().expect("recorded");
    assert!(last.notice_pending, "pending until the comment is posted");
    // The comment was not posted (GitHub failed): the next pass announces the same escalation,
    // without deciding another one.
    let retry = run(
        &gate(Some(escalated.status.clone())),
        &a,
        facts("t1"),
        at(25),
    );
    assert_eq!(retry.notice, Some(notice));
    assert_eq!(retry.status.escalations, escalated.status.escalations);
    // Posted and recorded: nothing more to announce.
    let mut posted = escalated.status.clone();
    if let Some(e) = posted.escalations.last_mut() {
        e.notice_pending = false;
    }
    let quiet = run(&gate(Some(posted)), &a, facts("t1"), at(25));
    assert_eq!(quiet.notice, None);
    // A pull request closed in between is not announced to; the flag is dropped.
    let closed = decide(Inputs {
        gate: &gate(Some(escalated.status)),
        assessment: &a,
        duties: &SeparationOfDuties::default(),
        facts: facts("t1"),
        audit: Audit::default(),
        state: PullState::Closed,
        draft: false,
        request_reviewers: true,
        auto_merge: false,
        now: at(25),
    });
    assert_eq!(closed.notice, None);
    assert!(closed.status.escalations.iter().all(|e| !e.notice_pending));
}

#[test]
fn low_risk_auto_approves_and_merges_when_asked() {
    let a = assess("docs/guide.md");
    let plan = decide(Inputs {
        gate: &gate(None),
        assessment: &a,
        duties: &SeparationOfDuties::default(),
        facts: facts("t1"),
        audit: Audit::default(),
        state: PullState::Open,
        draft: false,
        request_reviewers: true,
        auto_merge: true,
        now: at(0),
    });
    assert_eq!(plan.status.phase, GatePhase::Approved);
    assert!(plan.status.auto_approve_reason.is_some());
    assert!(plan.merge);
    assert!(plan.request_roles.is_empty());
    assert_eq!(plan.status.deadline, None);
    let ready = conditions::find(&plan.status.conditions, "Ready").expect("Ready");
    assert_eq!(ready.status, "True");
}

#[test]
fn merged_and_closed_pull_requests_end_the_gate() {
    let a = assess("src/orders.rs");
    for (state, phase) in [
        (PullState::Merged, GatePhase::Merged),
        (PullState::Closed, GatePhase::Closed),
    ] {
        let plan = decide(Inputs {
            gate: &gate(None),
            assessment: &a,
            duties: &SeparationOfDuties::default(),
            facts: facts("t1"),
            audit: Audit::default(),
            state,
            draft: false,
            request_reviewers: true,
            auto_merge: true,
            now: at(0),
        });
        assert_eq!(plan.status.phase, phase);
        assert!(!plan.merge);
        assert!(plan.request_roles.is_empty());
        assert_eq!(plan.requeue_after, None);
        assert_eq!(plan.status.deadline, None);
    }
}

#[test]
fn a_head_whose_push_is_unaccounted_for_waits_and_says_why() {
    let a = assess("docs/guide.md");
    let mut f = facts("t1");
    f.awaiting_push = true;
    let plan = run(&gate(None), &a, f, at(0));
    assert_eq!(plan.status.phase, GatePhase::Pending);
    assert!(!plan.merge);
    let ready = conditions::find(&plan.status.conditions, "Ready").expect("Ready");
    assert!(
        ready.message.contains("push of 222222222222"),
        "{}",
        ready.message
    );
}

#[test]
fn the_audit_record_and_the_change_go_into_the_status() {
    let a = assess("src/orders.rs");
    let audit = Audit {
        tree_sha: "tree".into(),
        changes: vec![countersign_crds::approval_gate::HeadChange {
            sha: HEAD.into(),
            change_id: "c1".into(),
        }],
        requesters: vec![GitHubUser {
            login: "rita".into(),
            id: Some(11),
        }],
        pushers: vec![GitHubUser {
            login: "carol".into(),
            id: Some(2),
        }],
    };
    let plan = decide(Inputs {
        gate: &gate(None),
        assessment: &a,
        duties: &SeparationOfDuties::default(),
        facts: facts("c1"),
        audit: audit.clone(),
        state: PullState::Open,
        draft: false,
        request_reviewers: true,
        auto_merge: false,
        now: at(0),
    });
    let s = &plan.status;
    assert_eq!(s.change_id.as_deref(), Some("c1"));
    assert_eq!(s.tree_sha.as_deref(), Some("tree"));
    assert_eq!(s.changes, audit.changes);
    assert_eq!(s.requesters, audit.requesters);
    assert_eq!(s.pushers, audit.pushers);
    // The same change after a clean rebase keeps its clock; another change restarts it.
    let later = run(&gate(Some(plan.status.clone())), &a, facts("c1"), at(1));
    assert_eq!(later.status.waiting_since, Some(Time(at(0))));
    let changed = run(&gate(Some(plan.status)), &a, facts("c2"), at(1));
    assert_eq!(changed.status.waiting_since, Some(Time(at(1))));
}
