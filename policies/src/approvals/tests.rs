use super::*;
use crate::{Change, CompiledPolicy, default_policy};

const HEAD: &str = "2222222222222222222222222222222222222222";
const OLD: &str = "1111111111111111111111111111111111111111";
const CHANGE: &str = "change-1";

fn policy() -> CompiledPolicy {
    CompiledPolicy::compile(&default_policy().spec).expect("default policy compiles")
}

fn user(id: u64, login: &str) -> GitHubUser {
    GitHubUser {
        login: login.to_owned(),
        id: Some(id),
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid time")
}

fn approve(u: &GitHubUser, sha: &str, secs: i64) -> Signal {
    signal(u, SignalKind::Approve, sha, secs)
}

fn signal(u: &GitHubUser, kind: SignalKind, sha: &str, secs: i64) -> Signal {
    Signal {
        user: u.clone(),
        kind,
        via: ApprovalVia::Review,
        sha: Some(sha.to_owned()),
        time: at(secs),
        tampered: false,
    }
}

struct World {
    alice: GitHubUser,
    bob: GitHubUser,
    carol: GitHubUser,
    dave: GitHubUser,
    facts: PullFacts,
}

/// alice: developer; bob: tech_lead; carol: developer + tech_lead; dave: manager.
/// The pull request is by erin (id 5).
fn world() -> World {
    let alice = user(1, "alice");
    let bob = user(2, "bob");
    let carol = user(3, "carol");
    let dave = user(4, "dave");
    let mut roles = HashMap::new();
    roles.insert(1, BTreeSet::from([RoleName::from("developer")]));
    roles.insert(2, BTreeSet::from([RoleName::from("tech_lead")]));
    roles.insert(
        3,
        BTreeSet::from([RoleName::from("developer"), RoleName::from("tech_lead")]),
    );
    roles.insert(4, BTreeSet::from([RoleName::from("manager")]));
    let facts = PullFacts {
        head_sha: HEAD.to_owned(),
        change_id: Some(CHANGE.to_owned()),
        author: Some(user(5, "erin")),
        changes: BTreeMap::from([(HEAD.to_owned(), CHANGE.to_owned())]),
        roles,
        ..PullFacts::default()
    };
    World {
        alice,
        bob,
        carol,
        dave,
        facts,
    }
}

fn feature() -> Assessment {
    policy().evaluate(&Change::touching(["src/orders/checkout.rs"]))
}

fn verdict(assessment: &Assessment, facts: &PullFacts) -> Verdict {
    evaluate_approvals(assessment, &SeparationOfDuties::default(), facts)
}

fn requirement<'a>(v: &'a Verdict, role: &str) -> &'a RoleRequirement {
    v.requirements
        .iter()
        .find(|r| r.role.0 == role)
        .unwrap_or_else(|| panic!("no {role} requirement in {:?}", v.requirements))
}

#[test]
fn docs_only_change_auto_approves_with_its_reason() {
    let w = world();
    let a = policy().evaluate(&Change::touching(["docs/guide.md"]));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved);
    assert!(v.requirements.is_empty());
    let reason = v.auto_approved.expect("auto-approve reason recorded");
    assert!(reason.contains("standard"), "{reason}");
}

#[test]
fn feature_change_needs_developer_and_tech_lead() {
    let mut w = world();
    let a = feature();
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Pending);

    w.facts.signals.push(approve(&w.alice, HEAD, 1));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert_eq!(requirement(&v, "developer").approved_by, ["alice"]);
    assert_eq!(requirement(&v, "tech_lead").satisfied, 0);

    w.facts.signals.push(approve(&w.bob, HEAD, 2));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved);
    assert_eq!(requirement(&v, "tech_lead").approved_by, ["bob"]);
    assert!(v.records.iter().all(|r| r.valid));
}

#[test]
fn one_person_fills_one_slot_even_with_two_roles() {
    let mut w = world();
    let a = feature();
    w.facts.signals.push(approve(&w.carol, HEAD, 1));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending, "{:?}", v.requirements);
    // carol holds both roles; with alice (developer only) in, carol moves to tech_lead.
    w.facts.signals.push(approve(&w.alice, HEAD, 2));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved);
    assert_eq!(requirement(&v, "developer").approved_by, ["alice"]);
    assert_eq!(requirement(&v, "tech_lead").approved_by, ["carol"]);
}

#[test]
fn approval_on_an_older_head_is_stale_unless_the_change_is_the_same() {
    let mut w = world();
    let a = feature();
    w.facts.signals.push(approve(&w.alice, OLD, 1));
    w.facts.signals.push(approve(&w.bob, OLD, 2));
    w.facts
        .changes
        .insert(OLD.to_owned(), "another change".to_owned());
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert!(
        v.records
            .iter()
            .all(|r| r.invalid_reason == Some(InvalidReason::Stale))
    );

    // A clean rebase: the old head's change was the same.
    w.facts.changes.insert(OLD.to_owned(), CHANGE.to_owned());
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Approved);

    // When the current change could not be read, only the current head counts.
    let mut unknown = w.facts.clone();
    unknown.change_id = None;
    assert_eq!(verdict(&a, &unknown).phase, GatePhase::Pending);

    // An unknown commit never counts as the same change.
    w.facts.changes.remove(OLD);
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Pending);
}

#[test]
fn a_command_whose_head_was_never_recorded_counts_for_no_head() {
    let mut w = world();
    let a = feature();
    let mut unrecorded = approve(&w.bob, HEAD, 2);
    unrecorded.via = ApprovalVia::Comment;
    unrecorded.sha = None;
    w.facts.signals = vec![approve(&w.alice, HEAD, 1), unrecorded.clone()];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert_eq!(
        v.records[1].invalid_reason,
        Some(InvalidReason::HeadUnknown)
    );
    assert_eq!(v.records[1].sha, "");
    // A rejection still rejects: blocking is always safe.
    unrecorded.kind = SignalKind::Reject;
    w.facts.signals = vec![unrecorded];
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Rejected);
}

#[test]
fn pushers_never_approve_and_the_switch_covers_human_pull_requests_only() {
    let mut w = world();
    let a = feature();
    w.facts.pushers = vec![w.alice.clone()];
    w.facts.signals = vec![approve(&w.alice, HEAD, 1), approve(&w.bob, HEAD, 2)];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.records[0].invalid_reason, Some(InvalidReason::Pusher));
    let off = SeparationOfDuties {
        exclude_pushers: false,
        exclude_committers: false,
        ..SeparationOfDuties::default()
    };
    assert!(evaluate_approvals(&a, &off, &w.facts).records[0].valid);
    // On an AI pull request the switches cannot let a pusher or committer approve.
    w.facts.ai_generated = true;
    assert_eq!(
        evaluate_approvals(&a, &off, &w.facts).records[0].invalid_reason,
        Some(InvalidReason::Pusher)
    );
    w.facts.pushers.clear();
    w.facts.committers = vec![w.alice.clone()];
    assert_eq!(
        evaluate_approvals(&a, &off, &w.facts).records[0].invalid_reason,
        Some(InvalidReason::Committer)
    );
}

#[test]
fn separation_of_duties_on_ai_pull_requests() {
    let mut w = world();
    let a = feature();
    let agent = user(99, "countersign[bot]");
    w.facts.ai_generated = true;
    w.facts.author = Some(agent.clone());
    w.facts.agent_accounts = vec![agent.clone()];
    w.facts.requesters = vec![user(6, "rita"), w.alice.clone()];
    w.facts.committers = vec![agent.clone(), w.bob.clone()];
    w.facts
        .roles
        .insert(99, BTreeSet::from([RoleName::from("developer")]));
    w.facts.signals = vec![
        approve(&w.alice, HEAD, 1),
        approve(&w.bob, HEAD, 2),
        approve(&agent, HEAD, 3),
    ];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    let reasons: Vec<_> = v.records.iter().map(|r| r.invalid_reason).collect();
    assert_eq!(
        reasons,
        [
            Some(InvalidReason::Requester),
            Some(InvalidReason::Committer),
            Some(InvalidReason::Agent)
        ]
    );

    // The requester rule applies to AI pull requests only.
    w.facts.ai_generated = false;
    let v = verdict(&a, &w.facts);
    assert!(v.records[0].valid, "{:?}", v.records[0]);
}

#[test]
fn the_author_cannot_approve_unless_the_policy_allows_it() {
    let mut w = world();
    let a = feature();
    w.facts.author = Some(w.alice.clone());
    w.facts.signals = vec![approve(&w.alice, HEAD, 1)];
    let v = verdict(&a, &w.facts);
    assert_eq!(
        v.records[0].invalid_reason,
        Some(InvalidReason::SelfApproval)
    );
    let duties = SeparationOfDuties {
        exclude_author: false,
        ..SeparationOfDuties::default()
    };
    let v = evaluate_approvals(&a, &duties, &w.facts);
    assert!(v.records[0].valid);
}

#[test]
fn people_without_a_required_role_do_not_count() {
    let mut w = world();
    let a = feature();
    let mallory = user(7, "mallory");
    w.facts.signals = vec![approve(&mallory, HEAD, 1), approve(&w.dave, HEAD, 2)];
    let v = verdict(&a, &w.facts);
    assert!(
        v.records
            .iter()
            .all(|r| r.invalid_reason == Some(InvalidReason::NotInRole))
    );
    // A deleted account (no id) never counts.
    w.facts.signals = vec![approve(
        &GitHubUser {
            login: "ghost".into(),
            id: None,
        },
        HEAD,
        1,
    )];
    assert!(!verdict(&a, &w.facts).records[0].valid);
}

#[test]
fn latest_decision_wins_and_rejections_by_role_holders_reject() {
    let mut w = world();
    let a = feature();
    w.facts.signals = vec![
        approve(&w.alice, HEAD, 1),
        approve(&w.bob, HEAD, 2),
        signal(&w.bob, SignalKind::Reject, HEAD, 3),
    ];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Rejected);
    assert_eq!(v.rejected_by, [w.bob.clone()]);
    assert_eq!(v.records[1].invalid_reason, Some(InvalidReason::Superseded));

    // Bob approves again later: the rejection is superseded.
    w.facts.signals.push(approve(&w.bob, HEAD, 4));
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Approved);

    // A rejection from someone without a role is recorded but blocks nothing.
    w.facts
        .signals
        .push(signal(&user(7, "mallory"), SignalKind::Reject, HEAD, 5));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved);
    assert_eq!(
        v.records.last().and_then(|r| r.invalid_reason),
        Some(InvalidReason::NotInRole)
    );
}

#[test]
fn hold_blocks_until_unhold_in_time_order() {
    let mut w = world();
    let a = feature();
    w.facts.signals = vec![
        approve(&w.alice, HEAD, 1),
        approve(&w.bob, HEAD, 2),
        signal(&w.dave, SignalKind::Hold, HEAD, 3),
    ];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Held);
    assert_eq!(v.held_by, Some(w.dave.clone()));
    // Given out of order: the unhold is later, so it releases.
    w.facts
        .signals
        .insert(0, signal(&w.dave, SignalKind::Unhold, HEAD, 4));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved);
    assert_eq!(v.held_by, None);
}

#[test]
fn unhold_lifts_only_holds_of_the_same_or_lower_rank() {
    let mut w = world();
    let a = feature();
    let base = vec![
        approve(&w.alice, HEAD, 1),
        approve(&w.bob, HEAD, 2),
        signal(&w.dave, SignalKind::Hold, HEAD, 3),
    ];
    // A developer cannot lift a manager's hold; a tech lead neither.
    for (who, at) in [(&w.alice, 4), (&w.bob, 5)] {
        let mut facts = w.facts.clone();
        facts.signals = base.clone();
        facts
            .signals
            .push(signal(who, SignalKind::Unhold, HEAD, at));
        let v = verdict(&a, &facts);
        assert_eq!(v.phase, GatePhase::Held, "{} lifted it", who.login);
        assert_eq!(v.held_by, Some(w.dave.clone()));
    }
    // A cto can.
    w.facts
        .roles
        .insert(9, BTreeSet::from([RoleName::from("cto")]));
    w.facts.signals = base.clone();
    w.facts
        .signals
        .push(signal(&user(9, "cto"), SignalKind::Unhold, HEAD, 4));
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Approved);

    // Holds stack: a developer's own hold goes, the manager's stays.
    w.facts.signals = base.clone();
    w.facts
        .signals
        .push(signal(&w.alice, SignalKind::Hold, HEAD, 4));
    w.facts
        .signals
        .push(signal(&w.alice, SignalKind::Unhold, HEAD, 5));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.held_by, Some(w.dave.clone()));
    assert_eq!(role_rank(&RoleName::from("platform_owner")), 0);
}

#[test]
fn the_author_never_lifts_a_security_hold() {
    let mut w = world();
    let a = feature();
    let sam = user(8, "sam");
    let cto = user(9, "cto");
    w.facts
        .roles
        .insert(8, BTreeSet::from([RoleName::from("security_team")]));
    w.facts
        .roles
        .insert(9, BTreeSet::from([RoleName::from("cto")]));
    w.facts.author = Some(cto.clone());
    w.facts.signals = vec![
        approve(&w.alice, HEAD, 1),
        approve(&w.bob, HEAD, 2),
        signal(&sam, SignalKind::Hold, HEAD, 3),
        signal(&cto, SignalKind::Unhold, HEAD, 4),
    ];
    let v = verdict(&a, &w.facts);
    assert_eq!(
        v.phase,
        GatePhase::Held,
        "the author outranks but must not lift it"
    );
    assert_eq!(v.held_by, Some(sam.clone()));
    // Someone else of rank cto can; so can the holder.
    w.facts.author = Some(user(5, "erin"));
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Approved);
    w.facts.author = Some(cto);
    w.facts
        .signals
        .push(signal(&sam, SignalKind::Unhold, HEAD, 5));
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Approved);
}

#[test]
fn tampered_comments_never_count() {
    let mut w = world();
    let a = feature();
    let mut forged = approve(&w.bob, HEAD, 2);
    forged.via = ApprovalVia::Comment;
    forged.tampered = true;
    w.facts.signals = vec![approve(&w.alice, HEAD, 1), forged];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert_eq!(v.records[1].invalid_reason, Some(InvalidReason::Tampered));
}

#[test]
fn escalation_adds_a_role_and_stops_auto_approve() {
    let mut w = world();
    let docs = policy().evaluate(&Change::touching(["docs/guide.md"]));
    w.facts.escalated_roles = vec![RoleName::from("manager")];
    let v = verdict(&docs, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert_eq!(requirement(&v, "manager").count, 1);
    w.facts.signals = vec![approve(&w.dave, HEAD, 1)];
    assert_eq!(verdict(&docs, &w.facts).phase, GatePhase::Approved);
}

/// A high-risk change (tech_lead + manager) after a `standIn` escalation to cto for `missing`.
fn escalated_to_cto(w: &mut World, missing: &[&str]) -> Assessment {
    w.facts.stand_ins = vec![StandIn {
        role: RoleName::from("cto"),
        for_roles: missing.iter().map(|r| RoleName::from(*r)).collect(),
    }];
    w.facts
        .roles
        .insert(9, BTreeSet::from([RoleName::from("cto")]));
    let a = policy().evaluate(&Change::touching(["src/auth/login.rs"]));
    let roles: Vec<&str> = a.workflow.roles().map(|r| r.0.as_str()).collect();
    assert_eq!(roles, ["tech_lead", "manager"]);
    a
}

#[test]
fn one_stand_in_approval_satisfies_every_role_missing_at_the_deadline() {
    let mut w = world();
    let a = escalated_to_cto(&mut w, &["tech_lead", "manager"]);
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert_eq!(
        requirement(&v, "tech_lead").stand_in,
        Some(RoleName::from("cto"))
    );
    assert_eq!(v.requirements.len(), 2, "cto is not one more requirement");
    assert_eq!(
        v.roles_to_ask(),
        ["tech_lead", "cto", "manager"].map(RoleName::from)
    );

    w.facts.signals = vec![approve(&user(9, "cto"), HEAD, 1)];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved, "{:?}", v.requirements);
    for role in ["tech_lead", "manager"] {
        let r = requirement(&v, role);
        assert_eq!((r.satisfied, r.count), (1, 1));
        assert_eq!(r.stood_in_by.as_deref(), Some("cto"));
        assert!(r.approved_by.is_empty());
    }
    assert!(v.records[0].valid, "the cto's approval counts");
}

#[test]
fn a_stand_in_answers_only_for_the_roles_missing_at_the_deadline() {
    let mut w = world();
    // bob (tech_lead) had approved by the deadline; only manager was missing.
    let a = escalated_to_cto(&mut w, &["manager"]);
    w.facts.signals = vec![approve(&user(9, "cto"), HEAD, 1)];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert_eq!(requirement(&v, "tech_lead").stand_in, None);
    assert_eq!(requirement(&v, "tech_lead").satisfied, 0);
    assert_eq!(
        requirement(&v, "manager").stood_in_by.as_deref(),
        Some("cto")
    );

    w.facts.signals.push(approve(&w.bob, HEAD, 2));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved);
    assert_eq!(requirement(&v, "tech_lead").approved_by, ["bob"]);
    // The manager's own approval counts as before; the stand-in is then not needed.
    w.facts.signals = vec![approve(&w.bob, HEAD, 1), approve(&w.dave, HEAD, 2)];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved);
    assert_eq!(requirement(&v, "manager").approved_by, ["dave"]);
    assert_eq!(requirement(&v, "manager").stood_in_by, None);
}

#[test]
fn a_stand_in_fills_no_other_slot() {
    let mut w = world();
    let a = escalated_to_cto(&mut w, &["manager"]);
    // tina is tech_lead and cto: her one approval is either, never both.
    w.facts.roles.insert(
        10,
        BTreeSet::from([RoleName::from("tech_lead"), RoleName::from("cto")]),
    );
    let tina = user(10, "tina");
    w.facts.signals = vec![approve(&tina, HEAD, 1)];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending, "{:?}", v.requirements);

    // With bob in as tech_lead, tina stands in for the manager.
    w.facts.signals.push(approve(&w.bob, HEAD, 2));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved, "{:?}", v.requirements);
    assert_eq!(requirement(&v, "tech_lead").approved_by, ["bob"]);
    assert_eq!(
        requirement(&v, "manager").stood_in_by.as_deref(),
        Some("tina")
    );
}

#[test]
fn a_stand_in_holder_outside_the_separation_of_duties_rules_does_not_count() {
    let mut w = world();
    let a = escalated_to_cto(&mut w, &["tech_lead", "manager"]);
    // The author holds cto: still not theirs to approve.
    w.facts
        .roles
        .insert(5, BTreeSet::from([RoleName::from("cto")]));
    w.facts.signals = vec![approve(&user(5, "erin"), HEAD, 1)];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert_eq!(
        v.records[0].invalid_reason,
        Some(InvalidReason::SelfApproval)
    );
    // Someone holding no required role and not the escalation role counts for nothing.
    w.facts.signals = vec![approve(&w.alice, HEAD, 1)];
    let v = verdict(&a, &w.facts);
    assert_eq!(v.records[0].invalid_reason, Some(InvalidReason::NotInRole));
}

#[test]
fn a_stand_in_escalation_stops_auto_approve() {
    let mut w = world();
    let docs = policy().evaluate(&Change::touching(["docs/guide.md"]));
    w.facts.stand_ins = vec![StandIn {
        role: RoleName::from("cto"),
        for_roles: Vec::new(),
    }];
    assert_eq!(verdict(&docs, &w.facts).phase, GatePhase::Pending);
}

#[test]
fn migration_needs_manager_security_and_cto() {
    let mut w = world();
    let a = policy().evaluate(&Change::touching(["migrations/0042_add_index.sql"]));
    let roles: Vec<&str> = a.workflow.roles().map(|r| r.0.as_str()).collect();
    assert_eq!(roles, ["manager", "security_team", "cto"]);
    w.facts
        .roles
        .insert(8, BTreeSet::from([RoleName::from("security_team")]));
    w.facts
        .roles
        .insert(9, BTreeSet::from([RoleName::from("cto")]));
    w.facts.signals = vec![approve(&w.dave, HEAD, 1), approve(&user(8, "sec"), HEAD, 2)];
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Pending);
    w.facts.signals.push(approve(&user(9, "cto"), HEAD, 3));
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Approved);
}

#[test]
fn records_are_capped_at_the_schema_limit_keeping_the_newest() {
    let mut w = world();
    let a = feature();
    w.facts.signals = (0..250)
        .map(|i| approve(&user(1000 + i, &format!("u{i}")), HEAD, i as i64))
        .collect();
    let v = verdict(&a, &w.facts);
    assert_eq!(v.records.len(), MAX_RECORDS);
    assert_eq!(
        v.records.last().map(|r| r.user.login.as_str()),
        Some("u249")
    );
}

#[test]
fn nothing_approves_while_the_heads_push_is_unaccounted_for() {
    let mut w = world();
    let a = feature();
    w.facts.signals = vec![approve(&w.alice, HEAD, 1), approve(&w.bob, HEAD, 2)];
    w.facts.awaiting_push = true;
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Pending);
    let docs = policy().evaluate(&Change::touching(["docs/guide.md"]));
    assert_eq!(verdict(&docs, &w.facts).phase, GatePhase::Pending);
    w.facts.awaiting_push = false;
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Approved);
}
