use super::*;
use crate::{Change, CompiledPolicy, default_policy};

const HEAD: &str = "2222222222222222222222222222222222222222";
const OLD: &str = "1111111111111111111111111111111111111111";
const TREE: &str = "aaaa";

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
        sha: sha.to_owned(),
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
        tree_sha: TREE.to_owned(),
        author: Some(user(5, "erin")),
        trees: BTreeMap::from([(HEAD.to_owned(), TREE.to_owned())]),
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
fn approval_on_an_older_head_is_stale_unless_the_tree_is_unchanged() {
    let mut w = world();
    let a = feature();
    w.facts.signals.push(approve(&w.alice, OLD, 1));
    w.facts.signals.push(approve(&w.bob, OLD, 2));
    w.facts.trees.insert(OLD.to_owned(), "different".to_owned());
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Pending);
    assert!(
        v.records
            .iter()
            .all(|r| r.invalid_reason == Some(InvalidReason::Stale))
    );

    // A clean rebase: the old head had the same tree.
    w.facts.trees.insert(OLD.to_owned(), TREE.to_owned());
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Approved);

    // An unknown commit never counts as the same tree.
    w.facts.trees.remove(OLD);
    assert_eq!(verdict(&a, &w.facts).phase, GatePhase::Pending);
}

#[test]
fn separation_of_duties_on_ai_pull_requests() {
    let mut w = world();
    let a = feature();
    let agent = user(99, "countersign[bot]");
    w.facts.ai_generated = true;
    w.facts.author = Some(agent.clone());
    w.facts.agent_accounts = vec![agent.clone()];
    w.facts.requester = Some(w.alice.clone());
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
        .insert(0, signal(&w.alice, SignalKind::Unhold, HEAD, 4));
    let v = verdict(&a, &w.facts);
    assert_eq!(v.phase, GatePhase::Approved);
    assert_eq!(v.held_by, None);
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
