use super::*;

fn account(id: u64, login: &str, kind: AccountKind) -> Account {
    Account {
        id,
        login: login.to_owned(),
        kind,
    }
}

fn user(id: u64, login: &str) -> Account {
    account(id, login, AccountKind::User)
}

fn project(spec: serde_json::Value) -> Project {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": spec,
    }))
    .expect("project")
}

fn facts(permission: Permission, in_allowed_team: bool) -> TriggerFacts {
    TriggerFacts {
        permission,
        in_allowed_team,
    }
}

#[test]
fn our_own_bot_is_never_an_actor_even_when_bots_are_allowed() {
    let triggers = Triggers {
        allow_bots: true,
        ..Triggers::default()
    };
    let me = account(9, "Countersign[bot]", AccountKind::Bot);
    assert_eq!(
        check_actor(&me, "countersign[bot]", &triggers),
        Err(Denial::OwnBot)
    );
    let other = account(10, "dependabot[bot]", AccountKind::Bot);
    assert_eq!(check_actor(&other, "countersign[bot]", &triggers), Ok(()));
    assert_eq!(
        check_actor(&other, "countersign[bot]", &Triggers::default()),
        Err(Denial::Bot)
    );
    assert_eq!(
        check_actor(&user(1, "alice"), "countersign[bot]", &Triggers::default()),
        Ok(())
    );
}

#[test]
fn triggers_need_the_minimum_permission() {
    let triggers = Triggers::default(); // write
    let alice = user(1, "alice");
    for (have, ok) in [
        (Permission::None, false),
        (Permission::Read, false),
        (Permission::Triage, false),
        (Permission::Write, true),
        (Permission::Maintain, true),
        (Permission::Admin, true),
    ] {
        let got = check_trigger(&alice, &facts(have, false), &triggers);
        assert_eq!(got.is_ok(), ok, "{have:?}");
        if let Err(denial) = got {
            assert_eq!(
                denial,
                Denial::Permission {
                    have,
                    need: RepoPermission::Write
                }
            );
            assert!(denial.explain("alice").contains("write permission"));
        }
    }
}

#[test]
fn allowed_users_match_by_id_not_by_a_reused_login() {
    let triggers = Triggers {
        allowed_users: vec![GitHubUser {
            login: "alice".into(),
            id: Some(1),
        }],
        ..Triggers::default()
    };
    let writer = facts(Permission::Write, false);
    assert_eq!(check_trigger(&user(1, "alice"), &writer, &triggers), Ok(()));
    assert_eq!(
        check_trigger(&user(1, "alice-renamed"), &writer, &triggers),
        Ok(())
    );
    assert_eq!(
        check_trigger(&user(2, "alice"), &writer, &triggers),
        Err(Denial::NotAnAllowedTriggerer),
        "someone who took over the login is not alice"
    );
    // A team membership (already resolved by id) also allows.
    let triggers = Triggers {
        allowed_teams: vec![GitHubTeam {
            slug: "devs".into(),
            id: None,
        }],
        ..Triggers::default()
    };
    assert_eq!(
        check_trigger(&user(3, "bob"), &facts(Permission::Write, true), &triggers),
        Ok(())
    );
    assert_eq!(
        check_trigger(&user(3, "bob"), &writer, &triggers),
        Err(Denial::NotAnAllowedTriggerer)
    );
}

#[test]
fn roles_come_from_users_by_id_and_from_teams() {
    let p = project(serde_json::json!({
        "repository": {"owner": "o", "name": "r"},
        "roles": [
            {"role": "developer", "teams": [{"slug": "Devs"}]},
            {"role": "tech_lead", "users": [{"login": "lead", "id": 1010}]},
            {"role": "manager", "users": [{"login": "boss"}]}
        ]
    }));
    let mut teams = HashMap::new();
    teams.insert("devs".to_owned(), Arc::new(HashSet::from([7_u64])));
    let names = |a: &Account| {
        roles_of(&p, a, &teams)
            .into_iter()
            .map(|r| r.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&user(7, "dev")), ["developer"]);
    assert_eq!(names(&user(1010, "lead-renamed")), ["tech_lead"]);
    assert!(
        names(&user(1011, "lead")).is_empty(),
        "login alone does not match an id binding"
    );
    assert_eq!(
        names(&user(5, "BOSS")),
        ["manager"],
        "id-less bindings match the login"
    );
    assert!(names(&user(8, "stranger")).is_empty());
}

#[test]
fn every_denial_has_a_label_and_an_explanation_naming_the_person() {
    for denial in [
        Denial::Bot,
        Denial::Permission {
            have: Permission::Read,
            need: RepoPermission::Write,
        },
        Denial::NotAnAllowedTriggerer,
        Denial::NoRole,
    ] {
        assert!(!denial.label().is_empty());
        assert!(denial.explain("mona").contains("@mona"), "{denial:?}");
    }
}
