use super::*;
use countersign_crds::project::RepoPermission;
use countersign_github::IssueEventKind;
use countersign_github::Permission;

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + second).expect("valid time")
}

fn alice() -> Account {
    Account {
        id: 1,
        login: "alice".into(),
        kind: AccountKind::User,
    }
}

fn event(id: u64, kind: IssueEventKind, actor: Option<Account>, second: i64) -> IssueEvent {
    IssueEvent {
        id,
        kind,
        actor,
        created_at: at(second),
    }
}

fn labeled(id: u64, label: &str, second: i64) -> IssueEvent {
    event(
        id,
        IssueEventKind::Labeled(label.into()),
        Some(alice()),
        second,
    )
}

#[test]
fn a_labeling_after_the_project_is_recovered_as_its_labeler() {
    let events = [labeled(7, "ai:backend", 10)];
    let decision = decide_issue(&events, "AI:backend", Some(at(5)), None);
    assert_eq!(
        decision,
        IssueDecision::Recover {
            event: &events[0],
            labeler: &alice()
        }
    );
}

#[test]
fn a_labeling_decided_before_is_not_handled_again_but_a_new_one_is() {
    let first = [labeled(7, "ai:backend", 10)];
    assert_eq!(
        decide_issue(&first, "ai:backend", None, Some(Some(7))),
        IssueDecision::Settled
    );
    let relabeled = [
        labeled(7, "ai:backend", 10),
        event(
            8,
            IssueEventKind::Unlabeled("ai:backend".into()),
            Some(alice()),
            11,
        ),
        labeled(9, "ai:backend", 12),
    ];
    assert!(matches!(
        decide_issue(&relabeled, "ai:backend", None, Some(Some(7))),
        IssueDecision::Recover { event, .. } if event.id == 9
    ));
}

#[test]
fn labels_nobody_can_be_authorised_for_are_skipped_and_remembered() {
    assert_eq!(
        decide_issue(&[], "ai:backend", None, None),
        IssueDecision::Skip {
            reason: SkipReason::NoLabelEvent,
            labeling: None
        }
    );
    assert_eq!(
        decide_issue(&[], "ai:backend", None, Some(None)),
        IssueDecision::Settled
    );
    let ghost = [event(
        3,
        IssueEventKind::Labeled("ai:backend".into()),
        None,
        10,
    )];
    assert_eq!(
        decide_issue(&ghost, "ai:backend", None, None),
        IssueDecision::Skip {
            reason: SkipReason::DeletedLabeler,
            labeling: Some(3)
        }
    );
}

#[test]
fn a_label_older_than_the_project_is_left_as_its_delivery_would_have_been() {
    let events = [labeled(7, "ai:backend", 4)];
    assert_eq!(
        decide_issue(&events, "ai:backend", Some(at(5)), None),
        IssueDecision::Skip {
            reason: SkipReason::LabeledBeforeProject,
            labeling: Some(7)
        }
    );
    assert!(matches!(
        decide_issue(&events, "ai:backend", Some(at(4)), None),
        IssueDecision::Recover { .. }
    ));
}

#[test]
fn refusals_are_final_and_runs_or_missing_installations_are_not() {
    let denied = Denial::Permission {
        have: Permission::Read,
        need: RepoPermission::Write,
    };
    assert_eq!(
        refusal(&[Outcome::Denied(denied.clone())]),
        Some(SkipReason::Denied(denied))
    );
    assert_eq!(
        refusal(&[Outcome::Ignored(Ignored::Bot)]),
        Some(SkipReason::Ignored(Ignored::Bot))
    );
    for settled_elsewhere in [
        Outcome::RunCreated {
            namespace: "ns".into(),
            name: "r".into(),
        },
        Outcome::RunExists { name: "r".into() },
        Outcome::Ignored(Ignored::AlreadyRunning("r".into())),
        Outcome::Ignored(Ignored::NoInstallation),
    ] {
        assert_eq!(
            refusal(std::slice::from_ref(&settled_elsewhere)),
            None,
            "{settled_elsewhere:?}"
        );
    }
}

#[test]
fn waits_stay_within_the_jitter() {
    let interval = Duration::from_secs(300);
    assert_eq!(first_wait(interval, 0.0), Duration::ZERO);
    assert!(first_wait(interval, 0.999) < Duration::from_secs(30));
    assert_eq!(jittered(interval, 0.0), Duration::from_secs(270));
    assert_eq!(jittered(interval, 0.5), interval);
    assert!(jittered(interval, 0.999) < Duration::from_secs(330));
    assert_eq!(jittered(interval, 7.0), Duration::from_secs(330), "clamped");
}

#[test]
fn rebuilt_deliveries_carry_what_github_listed() {
    let info = IssueInfo {
        number: 42,
        title: "Add retries".into(),
        body: Some("Please.".into()),
        author: alice(),
        labels: vec!["ai:backend".into()],
        open: true,
        is_pull_request: false,
    };
    let issue = issue_of(&info);
    assert_eq!(
        (issue.number, issue.title.as_str(), issue.body.as_deref()),
        (42, "Add retries", Some("Please."))
    );
    assert_eq!(issue.user, alice());
    let pr = PullInfo {
        number: 7,
        title: "Change".into(),
        state: PullState::Open,
        merged: false,
        draft: true,
        head_sha: "a".repeat(40),
        head_ref: "countersign/widgets-issue-42-backend".into(),
        head_repo: Some("octo-org/widgets".into()),
        base_ref: "main".into(),
        base_sha: "b".repeat(40),
        changed_files: None,
        commits: None,
        author: Actor {
            id: 99,
            login: "countersign[bot]".into(),
            is_bot: true,
        },
        labels: vec![],
    };
    let pull = pull_request_of(&pr, "octo-org/widgets");
    assert_eq!(pull.user.kind, AccountKind::Bot);
    assert_eq!(pull.head.branch, pr.head_ref);
    assert_eq!(
        pull.base.repo_full_name.as_deref(),
        Some("octo-org/widgets")
    );
    assert!(pull.open && pull.draft && !pull.merged);
    let repository = Repository {
        id: 5,
        owner: "octo-org".into(),
        name: "widgets".into(),
    };
    assert_eq!(
        opened_delivery_id(&repository, &pr).as_str(),
        format!("resync/octo-org/widgets/pull/7/{}", "a".repeat(40))
    );
    assert_eq!(
        labeled_delivery_id(&labeled(77, "x", 0)).as_str(),
        "resync/issue-event/77"
    );
}
