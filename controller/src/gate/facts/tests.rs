use std::collections::{BTreeMap, BTreeSet};

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
        commit_id: None,
    }
}

fn review(id: u64, who: &Actor, state: ReviewState, body: &str, sha: &str) -> ReviewInfo {
    ReviewInfo {
        id,
        user: Some(who.clone()),
        state,
        commit_id: Some(sha.to_owned()),
        submitted_at: Some(at(id as i64)),
        body: body.to_owned(),
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

/// Everything the signals read, owned, so tests can tweak it.
#[derive(Default)]
struct Known {
    previous: Vec<ApprovalRecord>,
    tampered: BTreeSet<CommentRef>,
    heads: BTreeMap<u64, String>,
    bodies: BTreeMap<u64, String>,
}

impl Known {
    fn cx(&self) -> SignalContext<'_> {
        SignalContext {
            bot_login: "countersign[bot]",
            head_sha: HEAD,
            previous: &self.previous,
            tampered: &self.tampered,
            heads: &self.heads,
            review_bodies: &self.bodies,
            now: at(1000),
        }
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
    let known = Known {
        heads: BTreeMap::from([(1, HEAD.to_owned()), (5, HEAD.to_owned())]),
        ..Known::default()
    };
    let signals = comment_signals(&comments, CommentPlace::Issue, &known.cx());
    let kinds: Vec<SignalKind> = signals.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [SignalKind::Approve, SignalKind::Hold, SignalKind::Unhold]
    );
    assert!(
        signals
            .iter()
            .all(|s| s.via == ApprovalVia::Comment && s.sha.as_deref() == Some(HEAD))
    );
}

#[test]
fn an_issue_comment_counts_for_the_head_it_was_received_at_and_no_git_date_decides() {
    let alice = actor(1, "alice");
    // Received at the older head: bound to it, whatever the commits' dates say.
    let known = Known {
        heads: BTreeMap::from([(1, OLD.to_owned())]),
        ..Known::default()
    };
    let signals = comment_signals(
        &[
            comment(1, &alice, "/approve", 50),
            comment(2, &alice, "/approve", 500),
        ],
        CommentPlace::Issue,
        &known.cx(),
    );
    assert_eq!(signals[0].sha.as_deref(), Some(OLD));
    // Never received (a lost webhook): no head at all.
    assert_eq!(signals[1].sha, None);
}

#[test]
fn the_recorded_head_of_a_comment_is_kept_and_tampering_is_marked() {
    let alice = actor(1, "alice");
    let mut known = Known {
        previous: vec![ApprovalRecord {
            user: user_of(&alice),
            roles: Vec::new(),
            decision: Decision::Approve,
            sha: OLD.into(),
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(300)),
            via: ApprovalVia::Comment,
            valid: true,
            invalid_reason: None,
        }],
        ..Known::default()
    };
    known.tampered = BTreeSet::from([CommentRef::issue(7)]);
    let signals = comment_signals(
        &[comment(7, &alice, "/approve", 300)],
        CommentPlace::Issue,
        &known.cx(),
    );
    assert_eq!(
        signals[0].sha.as_deref(),
        Some(OLD),
        "the recorded head stays"
    );
    assert!(signals[0].tampered);
    // The same id of an inline review comment is another comment.
    let signals = comment_signals(
        &[comment(7, &alice, "/approve", 300)],
        CommentPlace::Review,
        &known.cx(),
    );
    assert!(!signals[0].tampered);
}

#[test]
fn inline_review_comments_are_bound_to_the_commit_github_recorded() {
    let lead = actor(1010, "lead");
    let mut inline = comment(3, &lead, "/reject see line 4", 10);
    inline.commit_id = Some(OLD.to_owned());
    let known = Known::default();
    let signals = comment_signals(&[inline], CommentPlace::Review, &known.cx());
    assert_eq!(signals[0].kind, SignalKind::Reject);
    assert_eq!(signals[0].sha.as_deref(), Some(OLD));
}

#[test]
fn a_decision_changed_by_an_edit_is_unverified_even_without_the_webhook() {
    let lead = actor(1010, "lead");
    // Recorded as a rejection before someone turned it into an approval.
    let known = Known {
        previous: vec![ApprovalRecord {
            user: user_of(&lead),
            roles: Vec::new(),
            decision: Decision::Reject,
            sha: HEAD.into(),
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(300)),
            via: ApprovalVia::Comment,
            valid: true,
            invalid_reason: None,
        }],
        ..Known::default()
    };
    let mut edited = comment(9, &lead, "/approve", 300);
    edited.updated_at = at(400);
    edited.commit_id = Some(HEAD.to_owned());
    let signals = comment_signals(&[edited], CommentPlace::Review, &known.cx());
    assert!(signals[0].tampered);
}

#[test]
fn review_states_and_review_body_commands_count_while_the_body_is_what_was_received() {
    let lead = actor(1010, "lead");
    let alice = actor(1, "alice");
    let reviews = vec![
        review(1, &alice, ReviewState::Approved, "", HEAD),
        review(
            2,
            &lead,
            ReviewState::Commented,
            "Fine now.\n\n/approve",
            HEAD,
        ),
        review(3, &lead, ReviewState::Dismissed, "/approve", HEAD),
    ];
    let mut known = Known {
        bodies: BTreeMap::from([(2, countersign_github::body_digest("Fine now.\n\n/approve"))]),
        ..Known::default()
    };
    let signals = review_signals(&reviews, &known.cx());
    let got: Vec<(&str, SignalKind, ApprovalVia, bool)> = signals
        .iter()
        .map(|s| (s.user.login.as_str(), s.kind, s.via, s.tampered))
        .collect();
    assert_eq!(
        got,
        [
            ("alice", SignalKind::Approve, ApprovalVia::Review, false),
            ("lead", SignalKind::Approve, ApprovalVia::Comment, false),
        ]
    );
    assert_eq!(signals[1].sha.as_deref(), Some(HEAD));

    // Edited since it was received: tampering. Never received: no head.
    known
        .bodies
        .insert(2, countersign_github::body_digest("Not yet."));
    assert!(review_signals(&reviews, &known.cx())[1].tampered);
    known.bodies.clear();
    assert_eq!(review_signals(&reviews, &known.cx())[1].sha, None);

    // A review body someone else edited takes the whole review with it.
    known.tampered = BTreeSet::from([CommentRef::review(1)]);
    assert!(review_signals(&reviews, &known.cx())[0].tampered);
}

fn pull(changed_files: Option<u64>) -> PullInfo {
    PullInfo {
        number: 7,
        title: "Bump".into(),
        state: PullState::Open,
        merged: false,
        draft: false,
        head_sha: HEAD.into(),
        head_ref: "bump".into(),
        head_repo: Some("acme/web".into()),
        base_ref: "main".into(),
        base_sha: OLD.into(),
        changed_files,
        commits: Some(2),
        author: actor(49_699_333, "dependabot[bot]"),
        labels: vec!["dependencies".into()],
    }
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
            requesters: Vec::new(),
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
            follow_ups: Vec::new(),
        },
    );
    let pr = pull(Some(1));
    let files = vec![PullFile {
        path: "src/db.rs".into(),
        previous_path: Some("migrations/helper.rs".into()),
        additions: 3,
        deletions: 1,
        status: "renamed".into(),
        sha: None,
        patch: None,
    }];
    let change = change_of(&gate, &project, &pr, &files, None);
    let paths: Vec<&str> = change.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["src/db.rs", "migrations/helper.rs"]);
    assert_eq!(change.author_kind, AuthorKind::Bot);
    assert_eq!(change.labels, ["dependencies"]);
    assert_eq!(change.gitops_paths, ["deploy/**"]);
    assert_eq!(change.incomplete, None);
    gate.spec.ai_generated = true;
    let incomplete = change_of(&gate, &project, &pr, &files, Some("why".into()));
    assert_eq!(incomplete.author_kind, AuthorKind::Ai);
    assert_eq!(incomplete.incomplete.as_deref(), Some("why"));
}

#[test]
fn a_listing_shorter_than_the_pull_request_is_a_gap() {
    assert_eq!(listing_gap(&pull(Some(3000)), 3000), None);
    assert_eq!(
        listing_gap(&pull(Some(3002)), 3000).as_deref(),
        Some("GitHub listed 3000 of the 3002 changed files")
    );
    assert_eq!(
        listing_gap(&pull(None), 3),
        None,
        "unknown total: trust the listing"
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
    let mut edited = comment(9, &lead, "/approve", 300);
    edited.updated_at = at(400);
    let mut known = Known {
        heads: BTreeMap::from([(9, HEAD.to_owned())]),
        ..Known::default()
    };
    let signals = comment_signals(&[edited.clone()], CommentPlace::Issue, &known.cx());
    assert!(signals[0].tampered, "unverified edit");
    // Recorded (valid) before the edit: a later edit by its author keeps it.
    known.previous = vec![ApprovalRecord {
        user: user_of(&lead),
        roles: Vec::new(),
        decision: Decision::Approve,
        sha: HEAD.into(),
        time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(300)),
        via: ApprovalVia::Comment,
        valid: true,
        invalid_reason: None,
    }];
    let signals = comment_signals(&[edited], CommentPlace::Issue, &known.cx());
    assert!(!signals[0].tampered);
}

#[test]
fn users_are_kept_once_in_order_and_capped() {
    let u = |id, login: &str| GitHubUser {
        login: login.into(),
        id: Some(id),
    };
    let all = unique_users([u(1, "a"), u(2, "b"), u(1, "A-renamed"), u(3, "c")], 2);
    let logins: Vec<&str> = all.iter().map(|u| u.login.as_str()).collect();
    assert_eq!(logins, ["a", "b"]);
}
