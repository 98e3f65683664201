use std::collections::BTreeSet;

use countersign_crds::project::{GitOps, Repository};
use countersign_crds::{ApprovalGateSpec, LocalRef, ProjectSpec};
use countersign_github::{Actor, CommentInfo, PullCommit, PullFile, PullInfo, PullState};

use super::*;

const HEAD: &str = "2222222222222222222222222222222222222222";
const OLD: &str = "1111111111111111111111111111111111111111";

fn actor(id: u64, login: &str) -> Actor {
    Actor {
        id,
        login: login.to_owned(),
        is_bot: login.ends_with("[bot]"),
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).expect("valid time")
}

fn comment(id: u64, who: &Actor, body: &str, secs: i64) -> CommentInfo {
    CommentInfo {
        id,
        user: Some(who.clone()),
        body: body.to_owned(),
        created_at: at(secs),
        updated_at: at(secs),
    }
}

fn commits() -> Vec<PullCommit> {
    vec![
        PullCommit {
            sha: OLD.into(),
            tree_sha: "t1".into(),
            author: Some(actor(5, "erin")),
            committer: Some(actor(5, "erin")),
            committed_at: Some(at(0)),
        },
        PullCommit {
            sha: HEAD.into(),
            tree_sha: "t2".into(),
            author: Some(actor(5, "erin")),
            committer: Some(actor(6, "web-flow")),
            committed_at: Some(at(100)),
        },
    ]
}

fn cx<'a>(
    commits: &'a [PullCommit],
    previous: &'a [ApprovalRecord],
    tampered: &'a BTreeSet<u64>,
) -> CommentContext<'a> {
    CommentContext {
        bot_login: "countersign[bot]",
        head_sha: HEAD,
        commits,
        previous,
        tampered,
    }
}

#[test]
fn comment_commands_are_read_as_markdown_and_the_bot_is_ignored() {
    let alice = actor(1, "alice");
    let bot = actor(99, "countersign[bot]");
    let comments = vec![
        comment(1, &alice, "Looks good.\n\n/approve", 200),
        comment(2, &alice, "```\n/approve\n```", 201),
        comment(3, &alice, "> /approve", 202),
        comment(4, &bot, "/approve", 203),
        comment(5, &alice, "/hold\n/unhold", 204),
        comment(6, &alice, "/countersign run backend", 205),
    ];
    let commits = commits();
    let tampered = BTreeSet::new();
    let signals = comment_signals(&comments, &cx(&commits, &[], &tampered));
    let kinds: Vec<SignalKind> = signals.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [SignalKind::Approve, SignalKind::Hold, SignalKind::Unhold]
    );
    assert!(
        signals
            .iter()
            .all(|s| s.via == ApprovalVia::Comment && s.sha == HEAD)
    );
}

#[test]
fn a_comment_older_than_the_head_commit_approves_the_commit_it_saw() {
    let alice = actor(1, "alice");
    let commits = commits();
    let tampered = BTreeSet::new();
    let signals = comment_signals(
        &[comment(1, &alice, "/approve", 50)],
        &cx(&commits, &[], &tampered),
    );
    assert_eq!(signals[0].sha, OLD);
}

#[test]
fn the_recorded_head_of_a_comment_is_kept_and_tampering_is_marked() {
    let alice = actor(1, "alice");
    let commits = commits();
    let previous = vec![ApprovalRecord {
        user: user_of(&alice),
        roles: Vec::new(),
        decision: countersign_crds::approval_gate::Decision::Approve,
        sha: OLD.into(),
        time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(300)),
        via: ApprovalVia::Comment,
        valid: true,
        invalid_reason: None,
    }];
    let tampered = BTreeSet::from([7]);
    let signals = comment_signals(
        &[comment(7, &alice, "/approve", 300)],
        &cx(&commits, &previous, &tampered),
    );
    assert_eq!(
        signals[0].sha, OLD,
        "recorded head wins over the current one"
    );
    assert!(signals[0].tampered);
}

#[test]
fn the_change_counts_renames_under_both_names_and_knows_the_author_kind() {
    let mut gate = ApprovalGate::new(
        "web-pr-7",
        ApprovalGateSpec {
            project_ref: LocalRef { name: "web".into() },
            pull_request_number: 7,
            base_branch: "main".into(),
            author: GitHubUser {
                login: "dependabot[bot]".into(),
                id: Some(49_699_333),
            },
            ai_generated: false,
            agent_run_ref: None,
        },
    );
    let project = Project::new(
        "web",
        ProjectSpec {
            repository: Repository {
                owner: "acme".into(),
                name: "web".into(),
                default_branch: "main".into(),
            },
            installation: None,
            triggers: Default::default(),
            roles: Vec::new(),
            limits: Default::default(),
            risk_policy_ref: LocalRef {
                name: "default".into(),
            },
            gitops: Some(GitOps {
                paths: vec!["deploy/**".into()],
                argo_cd_application: None,
                flux_kustomization: None,
            }),
            pull_requests: Default::default(),
        },
    );
    let pr = PullInfo {
        number: 7,
        title: "Bump".into(),
        state: PullState::Open,
        merged: false,
        draft: false,
        head_sha: HEAD.into(),
        head_ref: "bump".into(),
        head_repo: Some("acme/web".into()),
        base_ref: "main".into(),
        author: actor(49_699_333, "dependabot[bot]"),
        labels: vec!["dependencies".into()],
    };
    let files = vec![PullFile {
        path: "src/db.rs".into(),
        previous_path: Some("migrations/helper.rs".into()),
        additions: 3,
        deletions: 1,
        status: "renamed".into(),
    }];
    let change = change_of(&gate, &project, &pr, &files);
    let paths: Vec<&str> = change.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["src/db.rs", "migrations/helper.rs"]);
    assert_eq!(change.author_kind, AuthorKind::Bot);
    assert_eq!(change.labels, ["dependencies"]);
    assert_eq!(change.gitops_paths, ["deploy/**"]);
    gate.spec.ai_generated = true;
    assert_eq!(
        change_of(&gate, &project, &pr, &files).author_kind,
        AuthorKind::Ai
    );
}

#[test]
fn committers_are_authors_and_committers_once_each() {
    let who: Vec<String> = committers_of(&commits())
        .into_iter()
        .map(|u| u.login)
        .collect();
    assert_eq!(who, ["erin", "web-flow"]);
}

#[test]
fn a_command_first_seen_in_an_edited_comment_never_counts() {
    let lead = actor(1010, "lead");
    let commits = commits();
    let tampered = BTreeSet::new();
    let mut edited = comment(9, &lead, "/approve", 300);
    edited.updated_at = at(400);
    let signals = comment_signals(&[edited.clone()], &cx(&commits, &[], &tampered));
    assert!(signals[0].tampered, "unverified edit");
    // Recorded (valid) before the edit: a later edit by its author keeps it.
    let previous = vec![ApprovalRecord {
        user: user_of(&lead),
        roles: Vec::new(),
        decision: countersign_crds::approval_gate::Decision::Approve,
        sha: HEAD.into(),
        time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(300)),
        via: ApprovalVia::Comment,
        valid: true,
        invalid_reason: None,
    }];
    let signals = comment_signals(&[edited], &cx(&commits, &previous, &tampered));
    assert!(!signals[0].tampered);
}
