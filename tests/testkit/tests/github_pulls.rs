//! The fake GitHub's pull requests, files, reviews, comments and check runs, read and written
//! by octocrab itself (App auth → installation token → typed models), so a field the real
//! client needs and the fake forgets fails here first.

use std::time::Duration;

use countersign_testkit::github::{
    ChangedFile, FakeGitHub, TEST_APP_ID, TEST_APP_PRIVATE_KEY_PEM, User,
};
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use octocrab::params::checks::{CheckRunConclusion, CheckRunOutput, CheckRunStatus};

const REPO: &str = "octo-org/widgets";
const WAIT: Duration = Duration::from_secs(20);

/// octocrab authenticated as the test App against `github`.
fn app_client(github: &FakeGitHub) -> Octocrab {
    let key =
        octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(TEST_APP_PRIVATE_KEY_PEM.as_bytes())
            .expect("key");
    Octocrab::builder()
        .base_uri(github.url())
        .expect("base uri")
        .app(AppId(TEST_APP_ID), key)
        .build()
        .expect("octocrab")
}

async fn setup() -> (FakeGitHub, Octocrab, u64) {
    let github = FakeGitHub::start().await.expect("fake GitHub");
    let alice = User::new(1, "alice");
    let number = {
        let mut w = github.world();
        w.install(77, "octo-org", &["widgets"]);
        let files = (0..45)
            .map(|i| ChangedFile::modified(&format!("src/module_{i}.rs"), i, 1))
            .collect();
        let payload = w.open_pull_request(REPO, "Add retries", "feature/retries", files, &alice);
        payload["number"].as_u64().expect("number")
    };
    let app = app_client(&github);
    let installation = app
        .installation(InstallationId(77))
        .expect("installation client");
    (github, installation, number)
}

#[tokio::test]
async fn octocrab_reads_pull_requests_files_and_reviews_from_world_changes() {
    let (github, octo, number) = setup().await;
    let bob = User::new(2, "bob");

    let pr = tokio::time::timeout(WAIT, octo.pulls("octo-org", "widgets").get(number))
        .await
        .expect("in time")
        .expect("typed pull request");
    assert_eq!(pr.number, number);
    assert_eq!(pr.head.ref_field, "feature/retries");
    assert_eq!(pr.base.ref_field, "main");
    assert_eq!(pr.user.as_ref().map(|u| u.login.as_str()), Some("alice"));
    let first_head = pr.head.sha.clone();
    assert_eq!(first_head.len(), 40);

    // 45 files: two pages at GitHub's default of 30, linked with rel="next".
    let page = octo
        .pulls("octo-org", "widgets")
        .list_files(number)
        .await
        .expect("files");
    assert_eq!(page.items.len(), 30);
    let next = page.next.clone().expect("a Link header to the second page");
    assert_eq!(
        next.host(),
        Some("127.0.0.1"),
        "absolute like GitHub's: {next}"
    );
    // octocrab sends credentials only to api.github.com or relative URIs, so follow the link
    // by its path (the bot's own client does the same for GitHub Enterprise hosts).
    let relative: http::Uri = next
        .path_and_query()
        .expect("path")
        .as_str()
        .parse()
        .expect("uri");
    let second = octo
        .get_page::<octocrab::models::repos::DiffEntry>(&Some(relative))
        .await
        .expect("second page")
        .expect("a second page");
    assert_eq!(second.items.len(), 15);
    assert!(second.next.is_none(), "no third page");
    let last = second.items.last().expect("last file");
    assert_eq!(last.filename, "src/module_44.rs");
    assert_eq!(last.additions, 44);

    let review = github
        .world()
        .submit_review(REPO, number, &bob, "approved", "LGTM");
    assert_eq!(review["action"], "submitted");
    assert_eq!(review["review"]["state"], "approved");
    assert_eq!(review["review"]["commit_id"], first_head.as_str());

    let pushed = github.world().push_to_pull_request(
        REPO,
        number,
        vec![ChangedFile::modified("src/lib.rs", 3, 0)],
        &User::new(1, "alice"),
    );
    assert_eq!(pushed["action"], "synchronize");
    assert_eq!(pushed["before"], first_head.as_str());
    let new_head = pushed["after"].as_str().expect("after").to_owned();
    assert_ne!(new_head, first_head, "a push moves the head");

    let reviews = octo
        .pulls("octo-org", "widgets")
        .list_reviews(number)
        .send()
        .await
        .expect("reviews");
    assert_eq!(reviews.items.len(), 1);
    let r = &reviews.items[0];
    assert_eq!(r.user.as_ref().map(|u| u.id.0), Some(2));
    assert_eq!(
        r.commit_id.as_deref(),
        Some(first_head.as_str()),
        "the review stays bound to the commit it was given on"
    );
    let files = octo
        .pulls("octo-org", "widgets")
        .list_files(number)
        .await
        .expect("files after push");
    assert_eq!(files.items.len(), 1);

    // A comment on the pull request arrives as an issue comment that says it is one, and is
    // listed over REST.
    let comment = github.world().comment(REPO, number, "/approve", &bob);
    assert!(comment["issue"]["pull_request"].is_object());
    let comments = octo
        .issues("octo-org", "widgets")
        .list_comments(number)
        .send()
        .await
        .expect("comments");
    assert_eq!(comments.items.len(), 1);
    assert_eq!(comments.items[0].body.as_deref(), Some("/approve"));
}

#[tokio::test]
async fn check_runs_are_created_updated_listed_and_validated() {
    let (github, octo, number) = setup().await;
    let sha = github.world().pulls[&(REPO.to_owned(), number)]
        .head_sha
        .clone();
    let checks = octo.checks("octo-org", "widgets");
    let created = checks
        .create_check_run("countersign/approval", sha.clone())
        .status(CheckRunStatus::InProgress)
        .details_url("https://countersign.example/gates/team-a/widgets-pr-1")
        .output(CheckRunOutput {
            title: "Waiting for tech_lead".into(),
            summary: "| role | needed |\n|---|---|\n| tech_lead | 1 |".into(),
            text: None,
            annotations: vec![],
            images: vec![],
        })
        .send()
        .await
        .expect("create check run");
    assert_eq!(created.name, "countersign/approval");
    assert_eq!(created.head_sha, sha);

    let updated = checks
        .update_check_run(created.id)
        .conclusion(CheckRunConclusion::Success)
        .send()
        .await
        .expect("update check run");
    assert_eq!(updated.id, created.id);
    {
        let w = github.world();
        let runs = w.check_runs_on(REPO, &sha);
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, "completed");
        assert_eq!(runs[0].conclusion.as_deref(), Some("success"));
        assert_eq!(runs[0].title.as_deref(), Some("Waiting for tech_lead"));
        assert_eq!(
            runs[0].details_url.as_deref(),
            Some("https://countersign.example/gates/team-a/widgets-pr-1")
        );
    }

    let listed = checks
        .list_check_runs_for_git_ref(octocrab::params::repos::Commitish(sha.clone()))
        .send()
        .await
        .expect("list check runs");
    assert_eq!(listed.total_count, 1);
    assert_eq!(listed.check_runs[0].id, created.id);

    // What GitHub refuses, the fake refuses: completed without a conclusion, unknown values.
    let refused: Result<serde_json::Value, _> = octo
        .post(
            "/repos/octo-org/widgets/check-runs",
            Some(&serde_json::json!({"name": "x", "head_sha": sha, "status": "completed"})),
        )
        .await;
    assert!(refused.is_err(), "completed without a conclusion");
    let refused: Result<serde_json::Value, _> = octo
        .patch(
            format!("/repos/octo-org/widgets/check-runs/{}", created.id),
            Some(&serde_json::json!({"conclusion": "great"})),
        )
        .await;
    assert!(refused.is_err(), "unknown conclusion");
    assert_eq!(
        github.world().check_runs_on(REPO, &sha)[0]
            .conclusion
            .as_deref(),
        Some("success"),
        "a refused update changes nothing"
    );
}

#[tokio::test]
async fn tokens_without_checks_permission_cannot_write_check_runs() {
    let (github, _octo, number) = setup().await;
    let sha = github.world().pulls[&(REPO.to_owned(), number)]
        .head_sha
        .clone();
    let app = app_client(&github);
    // A token scoped like an agent pod's: contents only.
    let minted: serde_json::Value = app
        .post(
            "/app/installations/77/access_tokens",
            Some(&serde_json::json!({
                "repositories": ["widgets"],
                "permissions": {"contents": "write", "metadata": "read"}
            })),
        )
        .await
        .expect("scoped token");
    let token = minted["token"].as_str().expect("token").to_owned();
    let scoped = Octocrab::builder()
        .base_uri(github.url())
        .expect("base uri")
        .personal_token(token)
        .build()
        .expect("octocrab");
    let pr = scoped.pulls("octo-org", "widgets").get(number).await;
    assert!(
        pr.is_err(),
        "contents-only tokens cannot read pull requests either"
    );
    let refused = scoped
        .checks("octo-org", "widgets")
        .create_check_run("countersign/approval", sha.clone())
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a contents-only token cannot write checks"
    );
    assert!(github.world().check_runs_on(REPO, &sha).is_empty());
}

#[tokio::test]
async fn octocrab_reads_commits_git_commits_review_comments_and_statuses() {
    let (github, octo, number) = setup().await;
    let bob = User::new(2, "bob");
    let first_head = github.world().pulls[&(REPO.to_owned(), number)]
        .head_sha
        .clone();
    let tree_before = {
        let mut w = github.world();
        w.push_commit_by(
            REPO,
            number,
            vec![ChangedFile::modified("src/lib.rs", 1, 0)],
            &bob,
        );
        let tree = w.pulls[&(REPO.to_owned(), number)].commits[1]
            .tree_sha
            .clone();
        w.rebase_pull_request(REPO, number, &bob);
        w.add_review_comment(REPO, number, "nit", &bob);
        tree
    };
    let commits = tokio::time::timeout(
        WAIT,
        octo.pulls("octo-org", "widgets").pr_commits(number).send(),
    )
    .await
    .expect("in time")
    .expect("typed commits");
    assert_eq!(commits.items.len(), 2);
    let head = &commits.items[1];
    assert_eq!(
        head.commit.tree.sha, tree_before,
        "a clean rebase keeps the tree"
    );
    assert_eq!(head.author.as_ref().map(|a| a.login.as_str()), Some("bob"));

    // Old heads stay readable after the force push.
    let old = octo
        .git("octo-org", "widgets")
        .get_commit(first_head.clone())
        .await
        .expect("typed git commit");
    assert_eq!(old.sha, first_head);
    let missing = octo
        .git("octo-org", "widgets")
        .get_commit("0".repeat(40))
        .await;
    assert!(missing.is_err(), "unknown commits are 404");

    let comments = octo
        .pulls("octo-org", "widgets")
        .list_comments(Some(number))
        .send()
        .await
        .expect("typed review comments");
    assert_eq!(comments.items.len(), 1);
    assert_eq!(comments.items[0].body, "nit");

    let sha = commits.items[1].sha.clone();
    github
        .world()
        .set_commit_status(REPO, &sha, "ci/jenkins", "success");
    let combined: octocrab::models::CombinedStatus = octo
        .get(
            format!("/repos/octo-org/widgets/commits/{sha}/status"),
            None::<&()>,
        )
        .await
        .expect("typed combined status");
    assert_eq!(combined.total_count, 1);
    assert_eq!(combined.statuses[0].context.as_deref(), Some("ci/jenkins"));
}

#[tokio::test]
async fn review_requests_and_merges_behave_like_github() {
    let (github, octo, number) = setup().await;
    {
        let mut w = github.world();
        w.set_permission(REPO, "bob", "write");
        w.add_team_member("octo-org", "platform", User::new(2, "bob"));
    }
    let route = format!("/repos/octo-org/widgets/pulls/{number}/requested_reviewers");
    let pr: octocrab::models::pulls::PullRequest = octo
        .post(
            &route,
            Some(&serde_json::json!({"reviewers": ["bob"], "team_reviewers": ["platform"]})),
        )
        .await
        .expect("201 with the typed pull request");
    assert_eq!(pr.number, number);
    let own: Result<serde_json::Value, _> = octo
        .post(&route, Some(&serde_json::json!({"reviewers": ["alice"]})))
        .await;
    assert!(own.is_err(), "the author cannot be asked to review");
    let stranger: Result<serde_json::Value, _> = octo
        .post(&route, Some(&serde_json::json!({"reviewers": ["eve"]})))
        .await;
    assert!(stranger.is_err(), "only collaborators can be asked");
    assert_eq!(github.world().review_requests_on(REPO, number).len(), 1);
    let statuses: Vec<u16> = github
        .calls_to("/requested_reviewers")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [201, 422, 422]);

    let head = pr.head.sha.clone();
    let pulls = octo.pulls("octo-org", "widgets");
    let stale = pulls
        .merge(number)
        .sha("f".repeat(40))
        .method(octocrab::params::pulls::MergeMethod::Squash)
        .send()
        .await;
    assert!(stale.is_err(), "409 when the head moved");
    let merged = pulls
        .merge(number)
        .sha(head)
        .method(octocrab::params::pulls::MergeMethod::Squash)
        .send()
        .await
        .expect("typed merge");
    assert!(merged.merged);
    assert!(merged.sha.is_some());
    let again = pulls.merge(number).send().await;
    assert!(again.is_err(), "405 once closed");
    let statuses: Vec<u16> = github.calls_to("/merge").iter().map(|c| c.status).collect();
    assert_eq!(statuses, [409, 200, 405]);
    let w = github.world();
    let pr = &w.pulls[&(REPO.to_owned(), number)];
    assert!(pr.merged);
    assert_eq!(pr.merge_method.as_deref(), Some("squash"));
}

#[tokio::test]
async fn other_apps_check_runs_are_listed_with_their_app_and_conclusions_need_completion() {
    let (github, octo, number) = setup().await;
    let sha = github.world().pulls[&(REPO.to_owned(), number)]
        .head_sha
        .clone();
    github
        .world()
        .add_check_run(REPO, &sha, "ci/build", 99, "completed", Some("success"));
    let refused: Result<serde_json::Value, _> = octo
        .post(
            "/repos/octo-org/widgets/check-runs",
            Some(&serde_json::json!({
                "name": "countersign/approval", "head_sha": sha,
                "status": "in_progress", "conclusion": "success"
            })),
        )
        .await;
    assert!(refused.is_err(), "a conclusion needs status completed");
    let listed = octo
        .checks("octo-org", "widgets")
        .list_check_runs_for_git_ref(octocrab::params::repos::Commitish(sha.clone()))
        .send()
        .await
        .expect("list check runs");
    assert_eq!(listed.total_count, 1);
    let raw: serde_json::Value = octo
        .get(
            format!("/repos/octo-org/widgets/commits/{sha}/check-runs"),
            None::<&()>,
        )
        .await
        .expect("raw list");
    assert_eq!(raw["check_runs"][0]["app"]["id"], 99);
    assert_ne!(99, TEST_APP_ID);
}

#[tokio::test]
async fn the_app_submits_reviews_like_github() {
    let (github, octo, number) = setup().await;
    let route = format!("/repos/octo-org/widgets/pulls/{number}/reviews");
    let review: octocrab::models::pulls::Review = octo
        .post(
            &route,
            Some(&serde_json::json!({"event": "COMMENT", "body": "Findings: fine."})),
        )
        .await
        .expect("the typed review");
    assert_eq!(
        review.state,
        Some(octocrab::models::pulls::ReviewState::Commented)
    );
    assert_eq!(review.body.as_deref(), Some("Findings: fine."));
    assert_eq!(
        review.user.as_ref().map(|u| u.login.as_str()),
        Some("countersign-test[bot]")
    );
    for bad in [
        serde_json::json!({"event": "COMMENT", "body": " "}),
        serde_json::json!({"event": "MERGE", "body": "x"}),
    ] {
        let refused: Result<serde_json::Value, _> = octo.post(&route, Some(&bad)).await;
        assert!(refused.is_err(), "{bad}");
    }
    let statuses: Vec<u16> = github
        .calls_to("/reviews")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [200, 422, 422]);
    let w = github.world();
    let reviews = &w.pulls[&(REPO.to_owned(), number)].reviews;
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        reviews[0].commit_id,
        w.pulls[&(REPO.to_owned(), number)].head_sha
    );
    let payload = w.review_submitted_payload(REPO, number, review.id.0);
    assert_eq!(payload["action"], "submitted");
    assert_eq!(payload["review"]["state"], "commented");
    assert_eq!(payload["sender"]["login"], "countersign-test[bot]");
}
