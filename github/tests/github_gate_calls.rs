//! The approval gate's GitHub calls (`countersign_github`: pulls, commits, reviews, comments, checks, statuses) against the fake
//! GitHub: typed reads of a pull request, its files, commits, reviews and comments across
//! pages; check runs, statuses, review requests and merges; and GitHub's refusals mapped to
//! values (404 → `None`, 405/409/422 → `NotMergeable`, 422 review requests ignored).

use std::time::Duration;

use countersign_github::{
    CheckRunRequest, CheckStatus, GitHubError, InstallationClient, MergeMethod, MergeOutcome,
    PullState, ReviewState,
};
use countersign_testkit::github::{ChangedFile, FakeGitHub, Fault, TEST_APP_ID, User};

const INSTALLATION: u64 = 77;
const REPO: &str = "octo-org/widgets";

fn alice() -> User {
    User::new(1, "alice")
}

fn bob() -> User {
    User::new(2, "bob")
}

/// A fake with pull request #1 by alice changing `files` files; the installation client.
async fn setup(files: u64) -> (FakeGitHub, InstallationClient, u64) {
    let fake = FakeGitHub::start().await.expect("fake GitHub starts");
    let number = {
        let mut w = fake.world();
        w.install(INSTALLATION, "octo-org", &["widgets"]);
        w.set_permission(REPO, "alice", "write");
        w.set_permission(REPO, "bob", "write");
        w.add_team_member("octo-org", "platform", bob());
        let files = (0..files)
            .map(|i| ChangedFile::modified(&format!("src/m{i}.rs"), i, 1))
            .collect();
        let payload = w.open_pull_request(REPO, "Add retries", "feature/retries", files, &alice());
        payload["number"].as_u64().expect("number")
    };
    let gh = fake.app_client().installation(INSTALLATION);
    (fake, gh, number)
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("finished within 30 s")
}

fn head(fake: &FakeGitHub, number: u64) -> String {
    fake.world().pulls[&(REPO.to_owned(), number)]
        .head_sha
        .clone()
}

#[tokio::test]
async fn pull_request_is_read_typed_and_missing_ones_are_not_found() {
    let (fake, gh, number) = setup(1).await;
    fake.world()
        .label_issue(REPO, number, "ai:backend", &alice());
    let pr = within(gh.pull_request("octo-org", "widgets", number))
        .await
        .expect("pull request");
    assert_eq!(pr.number, number);
    assert_eq!(pr.title, "Add retries");
    assert_eq!(pr.state, PullState::Open);
    assert!(!pr.merged && !pr.draft);
    assert_eq!(pr.head_sha, head(&fake, number));
    assert_eq!(pr.head_ref, "feature/retries");
    assert_eq!(pr.head_repo.as_deref(), Some(REPO));
    assert_eq!(pr.base_ref, "main");
    assert_eq!((pr.author.id, pr.author.login.as_str()), (1, "alice"));
    assert!(!pr.author.is_bot);
    assert_eq!(pr.labels, ["ai:backend"]);

    let missing = within(gh.pull_request("octo-org", "widgets", 99)).await;
    assert!(
        matches!(missing, Err(GitHubError::NotFound(_))),
        "{missing:?}"
    );
}

#[tokio::test]
async fn files_are_read_across_pages() {
    let (fake, gh, number) = setup(0).await;
    let mut files: Vec<ChangedFile> = (0..230)
        .map(|i| ChangedFile::modified(&format!("src/m{i}.rs"), i, 2))
        .collect();
    files.push(ChangedFile::renamed("old/name.rs", "new/name.rs"));
    fake.world()
        .push_to_pull_request(REPO, number, files, &alice());
    let files = within(gh.pull_request_files("octo-org", "widgets", number))
        .await
        .expect("files");
    assert_eq!(files.len(), 231);
    assert_eq!(files[229].path, "src/m229.rs");
    assert_eq!((files[229].additions, files[229].deletions), (229, 2));
    assert_eq!(files[230].status, "renamed");
    assert_eq!(files[230].previous_path.as_deref(), Some("old/name.rs"));
    assert_eq!(fake.calls_to("/files").len(), 3, "100 + 100 + 31");
}

#[tokio::test]
async fn commits_bind_authors_committers_and_trees_across_rebases() {
    let (fake, gh, number) = setup(1).await;
    let mallory = User::new(3, "mallory");
    let first_head = head(&fake, number);
    fake.world().push_commit_by(
        REPO,
        number,
        vec![ChangedFile::modified("src/lib.rs", 1, 0)],
        &mallory,
    );
    let commits = within(gh.pull_request_commits("octo-org", "widgets", number))
        .await
        .expect("commits");
    assert_eq!(commits.len(), 2);
    assert_eq!(commits[0].sha, first_head);
    assert_eq!(commits[0].author.as_ref().map(|a| a.id), Some(1));
    assert_eq!(commits[1].committer.as_ref().map(|a| a.id), Some(3));
    assert_eq!(
        commits[1].author.as_ref().map(|a| a.login.as_str()),
        Some("mallory")
    );
    assert_ne!(
        commits[0].tree_sha, commits[1].tree_sha,
        "a push changes the tree"
    );
    assert!(commits[0].committed_at < commits[1].committed_at);
    let pushed_tree = commits[1].tree_sha.clone();

    // A clean rebase: new SHAs, same trees; the old head is still a known commit.
    let old_head = head(&fake, number);
    let payload = fake.world().rebase_pull_request(REPO, number, &bob());
    assert_eq!(payload["action"], "synchronize");
    assert_eq!(payload["before"], old_head.as_str());
    let new_head = head(&fake, number);
    assert_ne!(new_head, old_head);
    let rebased = within(gh.pull_request_commits("octo-org", "widgets", number))
        .await
        .expect("rebased commits");
    assert_eq!(rebased.len(), 2);
    assert_eq!(rebased[1].sha, new_head);
    assert_eq!(rebased[1].tree_sha, pushed_tree);
    assert_eq!(rebased[1].committer.as_ref().map(|a| a.id), Some(2));
    let tree = |sha: String| {
        let gh = gh.clone();
        async move { gh.commit_tree("octo-org", "widgets", &sha).await }
    };
    assert_eq!(
        within(tree(old_head)).await.expect("old head"),
        Some(pushed_tree.clone())
    );
    assert_eq!(
        within(tree(new_head)).await.expect("new head"),
        Some(pushed_tree)
    );
    assert_eq!(
        within(tree("0".repeat(40))).await.expect("unknown"),
        None,
        "404 → None"
    );
    fake.fail_next("/git/commits/", Fault::Status(422), 1);
    assert_eq!(
        within(tree("not-a-sha".into())).await.expect("malformed"),
        None,
        "422 → None"
    );
}

#[tokio::test]
async fn commits_are_read_across_pages() {
    let (fake, gh, number) = setup(1).await;
    {
        let mut w = fake.world();
        for i in 0..130 {
            w.push_to_pull_request(
                REPO,
                number,
                vec![ChangedFile::modified("src/lib.rs", i, 0)],
                &alice(),
            );
        }
    }
    let commits = within(gh.pull_request_commits("octo-org", "widgets", number))
        .await
        .expect("commits");
    assert_eq!(commits.len(), 131);
    assert_eq!(
        commits.last().map(|c| c.sha.clone()),
        Some(head(&fake, number))
    );
    assert_eq!(fake.calls_to("/commits?").len(), 2);
}

#[tokio::test]
async fn reviews_keep_their_commit_and_deleted_reviewers_are_none() {
    let (fake, gh, number) = setup(1).await;
    let ghost = User::new(66, "gone-soon");
    let reviewed_head = head(&fake, number);
    let dismissed_id = {
        let mut w = fake.world();
        let approval = w.submit_review(REPO, number, &bob(), "approved", "LGTM");
        w.submit_review(REPO, number, &ghost, "changes_requested", "no");
        w.delete_account(66);
        let dismissed = w.submit_review(REPO, number, &User::new(4, "carol"), "approved", "ok");
        let id = dismissed["review"]["id"].as_u64().expect("id");
        let payload = w.dismiss_review(REPO, number, id, &alice());
        assert_eq!(payload["action"], "dismissed");
        assert_eq!(payload["review"]["state"], "dismissed");
        assert!(approval["review"]["submitted_at"].is_string());
        id
    };
    let reviews = within(gh.pull_request_reviews("octo-org", "widgets", number))
        .await
        .expect("reviews");
    assert_eq!(reviews.len(), 3);
    assert_eq!(reviews[0].state, ReviewState::Approved);
    assert_eq!(reviews[0].user.as_ref().map(|u| u.id), Some(2));
    assert_eq!(
        reviews[0].commit_id.as_deref(),
        Some(reviewed_head.as_str())
    );
    assert!(reviews[0].submitted_at.is_some());
    assert_eq!(reviews[1].state, ReviewState::ChangesRequested);
    assert!(reviews[1].user.is_none(), "a deleted account is None");
    assert_eq!(reviews[2].id, dismissed_id);
    assert_eq!(reviews[2].state, ReviewState::Dismissed);
    assert!(reviews[0].submitted_at < reviews[1].submitted_at);
}

#[tokio::test]
async fn issue_comments_are_read_across_pages_with_edits() {
    let (fake, gh, number) = setup(1).await;
    let edited_id = {
        let mut w = fake.world();
        for i in 0..104 {
            w.comment(REPO, number, &format!("note {i}"), &bob());
        }
        let first = w.comment(REPO, number, "/approve", &bob());
        let id = first["comment"]["id"].as_u64().expect("id");
        let edited = w.edit_comment(REPO, id, "/approve please", &alice());
        assert_eq!(edited["action"], "edited");
        assert_eq!(edited["changes"]["body"]["from"], "/approve");
        assert_eq!(
            edited["comment"]["user"]["login"], "bob",
            "the author stays"
        );
        assert_eq!(edited["sender"]["login"], "alice", "the editor sends");
        id
    };
    let comments = within(gh.issue_comments("octo-org", "widgets", number))
        .await
        .expect("comments");
    assert_eq!(comments.len(), 105);
    assert_eq!(fake.calls_to("/issues/1/comments").len(), 2);
    let edited = comments.last().expect("last");
    assert_eq!(edited.id, edited_id);
    assert_eq!(edited.body, "/approve please");
    assert_eq!(edited.user.as_ref().map(|u| u.id), Some(2));
    assert!(edited.updated_at > edited.created_at);
    assert_eq!(comments[0].updated_at, comments[0].created_at);

    fake.world().delete_account(2);
    let scrubbed = within(gh.issue_comments("octo-org", "widgets", number))
        .await
        .expect("comments");
    assert!(scrubbed.iter().all(|c| c.user.is_none()));
}

#[tokio::test]
async fn review_comments_are_read() {
    let (fake, gh, number) = setup(1).await;
    {
        let mut w = fake.world();
        let payload = w.add_review_comment(REPO, number, "nit: rename", &bob());
        assert_eq!(payload["action"], "created");
        assert_eq!(payload["comment"]["path"], "src/m0.rs");
        w.add_review_comment(REPO, number, "/approve", &User::bot(5, "ci[bot]"));
    }
    let comments = within(gh.review_comments("octo-org", "widgets", number))
        .await
        .expect("review comments");
    assert_eq!(comments.len(), 2);
    assert_eq!(comments[0].body, "nit: rename");
    assert_eq!(
        comments[0].user.as_ref().map(|u| u.login.as_str()),
        Some("bob")
    );
    assert!(comments[1].user.as_ref().is_some_and(|u| u.is_bot));
    assert!(
        within(gh.issue_comments("octo-org", "widgets", number))
            .await
            .expect("issue comments")
            .is_empty(),
        "inline comments are not issue comments"
    );
}

fn run<'a>(
    sha: &'a str,
    status: CheckStatus,
    conclusion: Option<&'a str>,
    summary: &'a str,
) -> CheckRunRequest<'a> {
    CheckRunRequest {
        name: "countersign/approval",
        head_sha: sha,
        status,
        conclusion,
        title: "Waiting for tech_lead",
        summary,
        details_url: Some("https://countersign.example/gates/team-a/widgets-1"),
        external_id: Some("team-a/widgets-1"),
    }
}

#[tokio::test]
async fn check_runs_are_created_updated_and_listed_with_other_apps() {
    let (fake, gh, number) = setup(1).await;
    let sha = head(&fake, number);
    // A conclusion on a run still in progress is never sent (GitHub would complete it).
    let id = within(gh.create_check_run(
        "octo-org",
        "widgets",
        &run(
            &sha,
            CheckStatus::InProgress,
            Some("success"),
            "| role | needed |",
        ),
    ))
    .await
    .expect("created");
    {
        let w = fake.world();
        let runs = w.check_runs_on(REPO, &sha);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].id, id);
        assert_eq!(runs[0].status, "in_progress");
        assert_eq!(runs[0].conclusion, None);
        assert_eq!(runs[0].title.as_deref(), Some("Waiting for tech_lead"));
        assert_eq!(runs[0].summary.as_deref(), Some("| role | needed |"));
        assert_eq!(runs[0].external_id.as_deref(), Some("team-a/widgets-1"));
        assert_eq!(
            runs[0].details_url.as_deref(),
            Some("https://countersign.example/gates/team-a/widgets-1")
        );
        assert_eq!(runs[0].app_id, TEST_APP_ID);
    }

    // A summary over GitHub's limit is cut, so the update is accepted.
    let long = "€".repeat(70_000);
    within(gh.update_check_run(
        "octo-org",
        "widgets",
        id,
        &run(&sha, CheckStatus::Completed, Some("success"), &long),
    ))
    .await
    .expect("updated");
    {
        let w = fake.world();
        let runs = w.check_runs_on(REPO, &sha);
        assert_eq!(runs[0].status, "completed");
        assert_eq!(runs[0].conclusion.as_deref(), Some("success"));
        assert!(runs[0].completed_at.is_some());
        let summary = runs[0].summary.as_deref().expect("summary");
        assert!(summary.len() <= 65_535 && summary.ends_with("(truncated)"));
    }

    // Completed without a conclusion: GitHub's 422 comes back as an error.
    let refused = within(gh.create_check_run(
        "octo-org",
        "widgets",
        &run(&sha, CheckStatus::Completed, None, "x"),
    ))
    .await;
    assert!(
        matches!(refused, Err(GitHubError::Status { status: 422, .. })),
        "{refused:?}"
    );

    {
        let mut w = fake.world();
        w.add_check_run(REPO, &sha, "ci/build", 99, "completed", Some("failure"));
        for i in 0..120 {
            w.add_check_run(REPO, &sha, &format!("lint-{i}"), 98, "queued", None);
        }
    }
    let runs = within(gh.check_runs_for_ref("octo-org", "widgets", &sha))
        .await
        .expect("check runs");
    assert_eq!(runs.len(), 122, "all pages");
    assert_eq!(fake.calls_to("/check-runs?").len(), 2);
    let ours = runs.iter().find(|r| r.id == id).expect("ours");
    assert_eq!(ours.app_id, Some(TEST_APP_ID));
    assert_eq!(ours.conclusion.as_deref(), Some("success"));
    let build = runs.iter().find(|r| r.name == "ci/build").expect("theirs");
    assert_eq!(build.app_id, Some(99));
    assert_eq!(build.head_sha, sha);
    assert_eq!(build.status, "completed");
    assert_eq!(build.conclusion.as_deref(), Some("failure"));
    let lint = runs.iter().find(|r| r.name == "lint-7").expect("lint");
    assert_eq!(
        (lint.status.as_str(), lint.conclusion.as_deref()),
        ("queued", None)
    );

    // Another app's check run is not ours to change.
    let theirs = within(gh.update_check_run(
        "octo-org",
        "widgets",
        build.id,
        &run(&sha, CheckStatus::Completed, Some("success"), "x"),
    ))
    .await;
    assert!(
        matches!(theirs, Err(GitHubError::Forbidden(_))),
        "{theirs:?}"
    );
}

#[tokio::test]
async fn commit_statuses_show_the_latest_per_context() {
    let (fake, gh, number) = setup(1).await;
    let sha = head(&fake, number);
    assert!(
        within(gh.commit_statuses("octo-org", "widgets", &sha))
            .await
            .expect("none yet")
            .is_empty()
    );
    {
        let mut w = fake.world();
        w.set_commit_status(REPO, &sha, "ci/jenkins", "pending");
        w.set_commit_status(REPO, &sha, "security/scan", "success");
        w.set_commit_status(REPO, &sha, "ci/jenkins", "failure");
    }
    let statuses = within(gh.commit_statuses("octo-org", "widgets", &sha))
        .await
        .expect("statuses");
    let pairs: Vec<_> = statuses
        .iter()
        .map(|s| (s.context.as_str(), s.state.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [("ci/jenkins", "failure"), ("security/scan", "success")]
    );
}

#[tokio::test]
async fn review_requests_are_recorded_and_refusals_ignored() {
    let (fake, gh, number) = setup(1).await;
    within(gh.request_reviewers(
        "octo-org",
        "widgets",
        number,
        &["bob".to_owned()],
        &["platform".to_owned()],
    ))
    .await
    .expect("requested");
    // The author cannot review their own pull request: GitHub's 422 is not an error.
    within(gh.request_reviewers("octo-org", "widgets", number, &["alice".to_owned()], &[]))
        .await
        .expect("422 is ignored");
    // Nothing to ask: no call.
    within(gh.request_reviewers("octo-org", "widgets", number, &[], &[]))
        .await
        .expect("no-op");
    let calls = fake.calls_to("/requested_reviewers");
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, [201, 422]);
    let w = fake.world();
    let requests = w.review_requests_on(REPO, number);
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].users, ["bob"]);
    assert_eq!(requests[0].teams, ["platform"]);
}

#[tokio::test]
async fn merges_check_the_head_and_refusals_are_outcomes() {
    let (fake, gh, number) = setup(1).await;
    let sha = head(&fake, number);
    let merge = |sha: String, method: MergeMethod| {
        let gh = gh.clone();
        async move {
            gh.merge_pull_request("octo-org", "widgets", number, &sha, method)
                .await
        }
    };

    let stale = within(merge("f".repeat(40), MergeMethod::Squash))
        .await
        .expect("answered");
    assert_eq!(
        stale,
        MergeOutcome::NotMergeable(
            "Head branch was modified. Review and try the merge again.".into()
        )
    );

    fake.world()
        .pulls
        .get_mut(&(REPO.to_owned(), number))
        .expect("pr")
        .draft = true;
    let draft = within(merge(sha.clone(), MergeMethod::Squash))
        .await
        .expect("answered");
    assert_eq!(
        draft,
        MergeOutcome::NotMergeable("Pull Request is not mergeable".into())
    );
    fake.world()
        .pulls
        .get_mut(&(REPO.to_owned(), number))
        .expect("pr")
        .draft = false;

    fake.fail_next("/merge", Fault::Status(422), 1);
    let invalid = within(merge(sha.clone(), MergeMethod::Squash))
        .await
        .expect("answered");
    assert!(
        matches!(invalid, MergeOutcome::NotMergeable(_)),
        "{invalid:?}"
    );

    let merged = within(merge(sha.clone(), MergeMethod::Squash))
        .await
        .expect("merged");
    let MergeOutcome::Merged { sha: merge_sha } = merged else {
        panic!("expected a merge, got {merged:?}");
    };
    {
        let w = fake.world();
        let pr = &w.pulls[&(REPO.to_owned(), number)];
        assert!(pr.merged);
        assert_eq!(pr.state, "closed");
        assert_eq!(pr.merge_method.as_deref(), Some("squash"));
        assert_eq!(pr.merge_commit_sha.as_deref(), Some(merge_sha.as_str()));
    }
    let pr = within(gh.pull_request("octo-org", "widgets", number))
        .await
        .expect("pull request");
    assert!(pr.merged);
    assert_eq!(pr.state, PullState::Closed);

    let again = within(merge(sha, MergeMethod::Merge))
        .await
        .expect("answered");
    assert_eq!(
        again,
        MergeOutcome::NotMergeable("Pull Request is not mergeable".into())
    );
    let statuses: Vec<u16> = fake.calls_to("/merge").iter().map(|c| c.status).collect();
    assert_eq!(statuses, [409, 405, 422, 200, 405]);
}

#[tokio::test]
async fn listings_retry_a_failed_page() {
    let (fake, gh, number) = setup(150).await;
    fake.fail_next("/files?per_page=100&page=2", Fault::Status(502), 1);
    let files = within(gh.pull_request_files("octo-org", "widgets", number))
        .await
        .expect("files after a retried page");
    assert_eq!(files.len(), 150);
    let statuses: Vec<u16> = fake.calls_to("/files").iter().map(|c| c.status).collect();
    assert_eq!(statuses, [200, 502, 200]);
}
