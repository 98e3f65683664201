//! The App client against the fake GitHub: JWTs, token caching and scoping, pagination,
//! conditional requests, and retries of 5xx answers and rate limits.

use std::time::Duration;

use countersign_github::tokens::{MintError, RepoRef, TokenMinter};
use countersign_github::{AppConfig, GitHubApp, GitHubError, Permission, Reaction};
use countersign_testkit::github::{CallAuth, FakeGitHub, Fault, TEST_APP_SLUG, User};
use secrecy::ExposeSecret;

const INSTALLATION: u64 = 77;

async fn setup() -> (FakeGitHub, GitHubApp) {
    let fake = FakeGitHub::start().await.expect("fake GitHub starts");
    {
        let mut w = fake.world();
        w.install(INSTALLATION, "octo-org", &["widgets", "gadgets"]);
        w.set_permission("octo-org/widgets", "alice", "write");
        w.set_permission("octo-org/widgets", "mona", "maintain");
        w.set_permission("octo-org/widgets", "rita", "read");
        w.open_issue("octo-org/widgets", "Fix it", "", &User::new(1, "alice"));
    }
    let app = GitHubApp::new(AppConfig {
        // A trailing slash, as users write the API root.
        base_url: format!("{}/", fake.url()),
        ..fake.app_config()
    })
    .expect("client builds");
    (fake, app)
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("finished within 30 s")
}

#[tokio::test]
async fn app_jwt_is_accepted_and_the_slug_cached() {
    let (fake, app) = setup().await;
    assert_eq!(within(app.slug()).await.expect("slug"), TEST_APP_SLUG);
    assert_eq!(within(app.slug()).await.expect("slug"), TEST_APP_SLUG);
    let calls = fake.calls_to("/app");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].auth, CallAuth::App);
    assert_eq!(calls[0].status, 200);
}

#[tokio::test]
async fn installation_token_is_minted_once_and_reused() {
    let (fake, app) = setup().await;
    let gh = app.installation(INSTALLATION);
    let perm = |login: &'static str| {
        let gh = gh.clone();
        async move { gh.repo_permission("octo-org", "widgets", login).await }
    };
    assert_eq!(
        within(perm("alice")).await.expect("alice"),
        Permission::Write
    );
    assert_eq!(
        within(perm("mona")).await.expect("mona"),
        Permission::Maintain
    );
    assert_eq!(within(perm("rita")).await.expect("rita"), Permission::Read);
    assert_eq!(
        within(perm("nobody")).await.expect("nobody"),
        Permission::None
    );
    assert_eq!(fake.calls_to("/access_tokens").len(), 1);
    let permission_calls = fake.calls_to("/permission");
    assert_eq!(permission_calls.len(), 4);
    assert!(
        permission_calls
            .iter()
            .all(|c| c.auth == CallAuth::Installation(INSTALLATION)),
        "{permission_calls:?}"
    );
}

#[tokio::test]
async fn repeated_gets_are_conditional() {
    let (fake, app) = setup().await;
    let gh = app.installation(INSTALLATION);
    for _ in 0..2 {
        let p = within(gh.repo_permission("octo-org", "widgets", "alice")).await;
        assert_eq!(p.expect("permission"), Permission::Write);
    }
    let statuses: Vec<u16> = fake
        .calls_to("/permission")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [200, 304]);
}

#[tokio::test]
async fn team_members_are_read_across_pages() {
    let (fake, app) = setup().await;
    {
        let mut w = fake.world();
        for id in 1..=150 {
            w.add_team_member("octo-org", "reviewers", User::new(id, &format!("u{id}")));
        }
    }
    let ids = within(
        app.installation(INSTALLATION)
            .team_member_ids("octo-org", "reviewers"),
    )
    .await
    .expect("members");
    assert_eq!(ids, (1..=150).collect::<Vec<_>>());
    assert_eq!(fake.calls_to("/teams/reviewers/members").len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_without_losing_the_call() {
    let (fake, app) = setup().await;
    let gh = app.installation(INSTALLATION);
    let id = within(gh.create_issue_comment("octo-org", "widgets", 1, "hello"))
        .await
        .expect("comment posted");
    // An edit sets the comment to a given body: safe to send again after a 5xx.
    fake.fail_next(&format!("/issues/comments/{id}"), Fault::Status(502), 2);
    within(gh.update_issue_comment("octo-org", "widgets", id, "hello again"))
        .await
        .expect("edited after two 502s");
    let statuses: Vec<u16> = fake
        .calls_to(&format!("/issues/comments/{id}"))
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [502, 502, 200]);
    let w = fake.world();
    let posted = w.comments_on("octo-org/widgets", 1);
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].body, "hello again");
    assert_eq!(posted[0].author, format!("{TEST_APP_SLUG}[bot]"));
}

/// A creation is never sent twice: after a 5xx GitHub may have carried it out (here it
/// did), and a second comment or check run would be a duplicate. The caller looks for it
/// by a key GitHub stores before it tries again.
#[tokio::test]
async fn creations_are_not_repeated_after_an_answer_that_leaves_them_open() {
    let (fake, app) = setup().await;
    let gh = app.installation(INSTALLATION);
    fake.fail_next_call("POST", "/issues/1/comments", Fault::Applied(502), 1);
    let err = within(gh.create_issue_comment("octo-org", "widgets", 1, "hello"))
        .await
        .expect_err("the 502 is the caller's to handle");
    assert!(
        matches!(err, GitHubError::Status { status: 502, .. }),
        "{err:?}"
    );
    assert_eq!(fake.calls_to("/issues/1/comments").len(), 1, "sent once");
    assert_eq!(fake.world().comments_on("octo-org/widgets", 1).len(), 1);

    // Nor after the connection dropped in the middle of the answer.
    fake.fail_next_call("POST", "/issues/1/comments", Fault::Dropped, 1);
    let err = within(gh.create_issue_comment("octo-org", "widgets", 1, "dropped"))
        .await
        .expect_err("a transport error");
    assert!(matches!(err, GitHubError::Transport(_)), "{err:?}");
    assert_eq!(
        fake.calls_to("/issues/1/comments").len(),
        2,
        "sent once more, not twice"
    );
    assert_eq!(fake.world().comments_on("octo-org/widgets", 1).len(), 2);

    // A rate limit is different: GitHub did nothing, so it is sent again.
    fake.fail_next_call(
        "POST",
        "/issues/1/comments",
        Fault::SecondaryRateLimit {
            retry_after_secs: 1,
        },
        1,
    );
    within(gh.create_issue_comment("octo-org", "widgets", 1, "again"))
        .await
        .expect("posted after the rate limit");
    assert_eq!(fake.world().comments_on("octo-org/widgets", 1).len(), 3);
}

#[tokio::test]
async fn persistent_server_errors_end_in_a_status_error() {
    let (fake, app) = setup().await;
    fake.fail_next("/permission", Fault::Status(503), 10);
    let err = within(
        app.installation(INSTALLATION)
            .repo_permission("octo-org", "widgets", "alice"),
    )
    .await
    .expect_err("gives up");
    assert!(
        matches!(err, GitHubError::Status { status: 503, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert_eq!(
        fake.calls_to("/permission").len(),
        4,
        "one try and three retries"
    );
}

#[tokio::test]
async fn secondary_rate_limits_are_waited_out() {
    let (fake, app) = setup().await;
    let gh = app.installation(INSTALLATION);
    // Mint the token first so the fault hits the reaction call itself.
    within(gh.repo_permission("octo-org", "widgets", "alice"))
        .await
        .expect("warm up");
    fake.fail_next(
        "/reactions",
        Fault::SecondaryRateLimit {
            retry_after_secs: 1,
        },
        1,
    );
    let started = std::time::Instant::now();
    within(gh.add_issue_reaction("octo-org", "widgets", 1, Reaction::Eyes))
        .await
        .expect("reaction added after the limit");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    let w = fake.world();
    assert_eq!(w.reactions.len(), 1);
    assert_eq!(w.reactions[0].content, "eyes");
    assert_eq!(w.reactions[0].target, "issue:1");
}

#[tokio::test]
async fn a_rate_limit_longer_than_allowed_is_reported_not_slept() {
    let (fake, app) = setup().await;
    fake.fail_next(
        "/permission",
        Fault::PrimaryRateLimit { reset_in_secs: 600 },
        1,
    );
    let err = within(
        app.installation(INSTALLATION)
            .repo_permission("octo-org", "widgets", "alice"),
    )
    .await
    .expect_err("rate limited");
    match err {
        GitHubError::RateLimited { retry_after } => {
            assert!(retry_after > Duration::from_secs(590), "{retry_after:?}")
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(fake.calls_to("/permission").len(), 1);
}

#[tokio::test]
async fn repo_tokens_are_scoped_to_one_repository_and_contents() {
    let (fake, app) = setup().await;
    let repo = RepoRef {
        owner: "octo-org".into(),
        name: "widgets".into(),
        expected_installation: None,
    };
    let token = within(app.repo_token(&repo)).await.expect("token");
    assert_eq!(token.installation_id, INSTALLATION);
    assert!(token.expires_at > jiff::Timestamp::now());
    let w = fake.world();
    let minted = &w.tokens[token.token.expose_secret()];
    assert_eq!(minted.installation, INSTALLATION);
    assert_eq!(
        minted.repositories.as_deref(),
        Some(&["widgets".to_owned()][..])
    );
    let permissions = minted.permissions.as_ref().expect("narrowed permissions");
    assert_eq!(
        permissions.get("contents").map(String::as_str),
        Some("write")
    );
    assert!(!permissions.contains_key("issues"));
    assert!(!permissions.contains_key("pull_requests"));
}

#[tokio::test]
async fn clone_tokens_can_only_read_and_revoked_tokens_are_refused_everywhere() {
    use countersign_github::tokens::Revoked;
    let (fake, app) = setup().await;
    fake.world()
        .create_repository("octo-org/widgets", &[("README.md", "hi\n")]);
    let repo = RepoRef {
        owner: "octo-org".into(),
        name: "widgets".into(),
        expected_installation: Some(INSTALLATION),
    };
    let read = within(app.read_token(&repo)).await.expect("read token");
    {
        let w = fake.world();
        let minted = &w.tokens[read.token.expose_secret()];
        let contents = minted.permissions.as_ref().and_then(|p| p.get("contents"));
        assert_eq!(contents.map(String::as_str), Some("read"));
    }
    let token = within(app.repo_token(&repo)).await.expect("token");
    let git_url = fake.git_url("octo-org/widgets");
    let clone = |token: &str| {
        let url = git_url.replace("://", &format!("://x-access-token:{token}@"));
        async move {
            let dir = tempfile::tempdir().expect("dir");
            // Async: the fake serves on this test's runtime.
            let status = tokio::process::Command::new("git")
                .args(["clone", "-q", &url])
                .arg(dir.path().join("c"))
                .env("GIT_TERMINAL_PROMPT", "0")
                .status()
                .await
                .expect("git runs");
            status.success()
        }
    };
    assert!(
        within(clone(token.token.expose_secret())).await,
        "a live token clones"
    );
    assert_eq!(
        within(app.revoke(&token.token)).await.expect("revoked"),
        Revoked::Now
    );
    assert_eq!(
        within(app.revoke(&token.token)).await.expect("idempotent"),
        Revoked::Already,
        "a revoked token is already revoked"
    );
    assert!(
        !within(clone(token.token.expose_secret())).await,
        "git refuses a revoked token"
    );
    {
        let w = fake.world();
        assert!(w.tokens[token.token.expose_secret()].revoked_at.is_some());
        assert!(w.tokens[read.token.expose_secret()].revoked_at.is_none());
    }
    let revocations = fake.calls_to("/installation/token");
    assert_eq!(
        revocations.iter().map(|c| c.status).collect::<Vec<_>>(),
        [204, 401]
    );
}

#[tokio::test]
async fn each_repo_token_is_fresh_and_the_installation_is_the_one_github_reports() {
    let (fake, app) = setup().await;
    let repo = RepoRef {
        owner: "octo-org".into(),
        name: "gadgets".into(),
        expected_installation: Some(INSTALLATION),
    };
    let a = within(app.repo_token(&repo)).await.expect("token");
    let b = within(app.repo_token(&repo)).await.expect("token");
    assert_ne!(a.token.expose_secret(), b.token.expose_secret());
    assert_eq!(
        fake.calls_to("/repos/octo-org/gadgets/installation").len(),
        1,
        "GitHub is asked which installation serves the repository, once per TTL"
    );

    // A spec naming another installation is refused, never used.
    let wrong = RepoRef {
        expected_installation: Some(INSTALLATION + 1),
        ..repo
    };
    let err = within(app.repo_token(&wrong)).await.expect_err("mismatch");
    assert!(
        matches!(err, MintError::InstallationMismatch { expected, actual, .. }
            if expected == INSTALLATION + 1 && actual == INSTALLATION),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(err.reason(), "InstallationMismatch");
}

#[tokio::test]
async fn a_repository_without_the_app_is_installation_not_found() {
    let (_fake, app) = setup().await;
    let repo = RepoRef {
        owner: "elsewhere".into(),
        name: "thing".into(),
        expected_installation: None,
    };
    let err = within(app.repo_token(&repo))
        .await
        .expect_err("not installed");
    assert!(
        matches!(err, MintError::InstallationNotFound { .. }),
        "{err:?}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn comments_can_be_edited_and_reacted_to() {
    let (fake, app) = setup().await;
    let gh = app.installation(INSTALLATION);
    let id = within(gh.create_issue_comment("octo-org", "widgets", 1, "first"))
        .await
        .expect("posted");
    within(gh.update_issue_comment("octo-org", "widgets", id, "second"))
        .await
        .expect("edited");
    within(gh.add_comment_reaction("octo-org", "widgets", id, Reaction::PlusOne))
        .await
        .expect("reacted");
    let w = fake.world();
    assert_eq!(w.comments_on("octo-org/widgets", 1)[0].body, "second");
    assert_eq!(w.reactions[0].target, format!("comment:{id}"));
    assert_eq!(w.reactions[0].content, "+1");
}

#[tokio::test]
async fn a_missing_issue_is_not_found_and_not_retried() {
    let (fake, app) = setup().await;
    let err = within(
        app.installation(INSTALLATION)
            .create_issue_comment("octo-org", "widgets", 999, "x"),
    )
    .await
    .expect_err("no such issue");
    assert!(matches!(err, GitHubError::NotFound(_)), "{err:?}");
    assert_eq!(fake.calls_to("/issues/999/comments").len(), 1);
}
