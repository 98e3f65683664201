//! The fake GitHub's git hosting: real clones and pushes over smart-HTTP (the `git` CLI and
//! libgit2), GitHub's answers to bad credentials and scopes, and pull requests opened from
//! the pushed branches whose files, commits and tree SHAs are git's own.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use countersign_testkit::github::git::ZERO_SHA;
use countersign_testkit::github::{
    CallAuth, FakeGitHub, Fault, TEST_APP_BOT_USER_ID, TEST_APP_ID, TEST_APP_PRIVATE_KEY_PEM, User,
};
use octocrab::Octocrab;
use octocrab::models::{AppId, InstallationId};
use serde_json::{Value, json};

/// Upper bound for every wait in these tests.
const WAIT: Duration = Duration::from_secs(60);
const INSTALLATION: u64 = 77;
const BOT_NAME: &str = "countersign-test[bot]";
const BOT_EMAIL: &str = "4242000+countersign-test[bot]@users.noreply.github.com";

const README: &str = "# api\n\nThe API.\n";
const LIB_RS: &str = "//! The library.\n\npub fn answer() -> u32 {\n    42\n}\n";
const OLD_DOC: &str = "Old notes.\nStill old.\n";

struct Setup {
    github: FakeGitHub,
    app: Octocrab,
    octo: Octocrab,
    /// An installation token with the App's default permissions on every repository.
    token: String,
    /// `main` of `acme/api` as created.
    initial: String,
    _work: tempfile::TempDir,
    work: PathBuf,
}

async fn setup() -> Setup {
    let github = tokio::time::timeout(WAIT, FakeGitHub::start())
        .await
        .expect("in time")
        .expect("fake GitHub");
    let initial = {
        let mut w = github.world();
        w.install(INSTALLATION, "acme", &["api", "web"]);
        w.create_repository("acme/web", &[("index.html", "<p>hi</p>\n")]);
        w.create_repository(
            "acme/api",
            &[
                ("README.md", README),
                ("src/lib.rs", LIB_RS),
                ("docs/old.md", OLD_DOC),
            ],
        )
    };
    let key =
        octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(TEST_APP_PRIVATE_KEY_PEM.as_bytes())
            .expect("key");
    let app = Octocrab::builder()
        .base_uri(github.url())
        .expect("base uri")
        .app(AppId(TEST_APP_ID), key)
        .build()
        .expect("octocrab");
    let octo = app
        .installation(InstallationId(INSTALLATION))
        .expect("installation client");
    let token = mint(&app, json!({})).await;
    let work = tempfile::tempdir().expect("temp dir");
    Setup {
        work: work.path().to_owned(),
        _work: work,
        github,
        app,
        octo,
        token,
        initial,
    }
}

/// An installation token of [`INSTALLATION`] with `request` (repositories, permissions).
async fn mint(app: &Octocrab, request: Value) -> String {
    let answer: Value = tokio::time::timeout(
        WAIT,
        app.post(
            format!("/app/installations/{INSTALLATION}/access_tokens"),
            Some(&request),
        ),
    )
    .await
    .expect("in time")
    .expect("token");
    answer["token"].as_str().expect("token string").to_owned()
}

/// `http://x-access-token:<token>@127.0.0.1:PORT/<repository>.git`.
fn authed_url(github: &FakeGitHub, repository: &str, token: &str) -> String {
    github
        .git_url(repository)
        .replacen("http://", &format!("http://x-access-token:{token}@"), 1)
}

/// Runs the `git` CLI in `dir` with nobody's configuration, no credential helper and no
/// prompts.
async fn git(dir: &Path, args: &[&str]) -> Output {
    git_as(dir, args, ("Test Person", "test@example.com")).await
}

async fn git_as(dir: &Path, args: &[&str], (name, email): (&str, &str)) -> Output {
    let run = tokio::process::Command::new("git")
        .args(["-c", "credential.helper=", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", name)
        .env("GIT_AUTHOR_EMAIL", email)
        .env("GIT_COMMITTER_NAME", name)
        .env("GIT_COMMITTER_EMAIL", email)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("git {args:?} did not finish in time"))
        .expect("git runs")
}

/// `git` that must succeed; its trimmed stdout.
async fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args).await;
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Clones `acme/api` with `token` into `<work>/<name>`.
async fn clone(s: &Setup, token: &str, name: &str) -> PathBuf {
    let url = authed_url(&s.github, "acme/api", token);
    git_ok(&s.work, &["clone", "--quiet", &url, name]).await;
    s.work.join(name)
}

/// The status of the last call to a path containing `path`.
fn last_status(github: &FakeGitHub, path: &str) -> u16 {
    github
        .calls_to(path)
        .last()
        .unwrap_or_else(|| panic!("a call to {path}"))
        .status
}

#[tokio::test]
async fn the_git_cli_pushes_a_branch_and_the_pull_request_is_computed_from_git() {
    let s = setup().await;
    let clone = clone(&s, &s.token, "api").await;
    assert_eq!(
        std::fs::read_to_string(clone.join("README.md")).expect("README"),
        README
    );
    assert_eq!(git_ok(&clone, &["rev-parse", "HEAD"]).await, s.initial);

    // The agent's change: modify, add, delete, rename; committed as the App's bot, then a
    // second commit by someone GitHub cannot link to an account.
    git_ok(&clone, &["checkout", "--quiet", "-b", "countersign/run-1"]).await;
    std::fs::write(
        clone.join("README.md"),
        format!("{README}More.\nEven more.\n"),
    )
    .expect("write");
    std::fs::write(clone.join("src/new.rs"), "pub fn new() {}\n").expect("write");
    git_ok(&clone, &["rm", "--quiet", "docs/old.md"]).await;
    git_ok(&clone, &["mv", "src/lib.rs", "src/core.rs"]).await;
    git_ok(&clone, &["add", "-A"]).await;
    let commit = git_as(
        &clone,
        &["commit", "--quiet", "-m", "Agent change"],
        (BOT_NAME, BOT_EMAIL),
    )
    .await;
    assert!(commit.status.success(), "{}", stderr(&commit));
    std::fs::write(clone.join("src/new.rs"), "pub fn new() -> u8 {\n    1\n}\n").expect("write");
    git_ok(&clone, &["commit", "--quiet", "-am", "Tweak"]).await;
    git_ok(&clone, &["push", "--quiet", "origin", "HEAD"]).await;

    let head = git_ok(&clone, &["rev-parse", "HEAD"]).await;
    {
        let w = s.github.world();
        assert_eq!(
            w.branch_head("acme/api", "countersign/run-1"),
            Some(head.clone())
        );
        assert_eq!(w.branches("acme/api"), ["countersign/run-1", "main"]);
        assert_eq!(
            w.file_at("acme/api", "countersign/run-1", "src/new.rs")
                .as_deref(),
            Some("pub fn new() -> u8 {\n    1\n}\n")
        );
        assert_eq!(
            w.file_at("acme/api", "countersign/run-1", "docs/old.md"),
            None
        );
        assert_eq!(w.pushes.len(), 1);
        let push = &w.pushes[0];
        assert_eq!(
            (
                push.repository.as_str(),
                push.branch.as_str(),
                push.old_sha.as_str(),
                push.new_sha.as_str()
            ),
            ("acme/api", "countersign/run-1", ZERO_SHA, head.as_str())
        );
    }
    // Git calls are logged like REST calls, authenticated by the token, never showing it.
    let pushes = s.github.calls_to("/acme/api.git/git-receive-pack");
    assert_eq!(pushes.len(), 1);
    assert_eq!(pushes[0].auth, CallAuth::Installation(INSTALLATION));
    assert_eq!(pushes[0].status, 200);
    assert!(s.github.calls().iter().all(|c| !c.path.contains(&s.token)));

    // The controller opens the pull request (with its own installation token).
    let pr = tokio::time::timeout(
        WAIT,
        s.octo
            .pulls("acme", "api")
            .create("Agent change", "countersign/run-1", "main")
            .body("Made by an agent.")
            .send(),
    )
    .await
    .expect("in time")
    .expect("pull request created");
    assert_eq!(pr.head.sha, head);
    assert_eq!(pr.base.sha, s.initial);
    assert_eq!(pr.head.ref_field, "countersign/run-1");
    assert_eq!(
        pr.user.as_ref().map(|u| (u.login.as_str(), u.id.0)),
        Some((BOT_NAME, TEST_APP_BOT_USER_ID))
    );
    assert_eq!(pr.body.as_deref(), Some("Made by an agent."));

    let files = s
        .octo
        .pulls("acme", "api")
        .list_files(pr.number)
        .await
        .expect("files");
    let mut got: Vec<(String, String, u64, u64, Option<String>)> = files
        .items
        .iter()
        .map(|f| {
            let status = serde_json::to_value(&f.status).expect("status");
            (
                f.filename.clone(),
                status.as_str().unwrap_or_default().to_owned(),
                f.additions,
                f.deletions,
                f.previous_filename.clone(),
            )
        })
        .collect();
    got.sort();
    let expected = [
        ("README.md", "modified", 2, 0, None),
        ("docs/old.md", "removed", 0, 2, None),
        ("src/core.rs", "renamed", 0, 0, Some("src/lib.rs")),
        ("src/new.rs", "added", 3, 0, None),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(f, st, a, d, p)| (f.to_string(), st.to_string(), *a, *d, p.map(str::to_owned)))
        .collect();
    assert_eq!(got, expected);

    // Commits: merge-base..head, oldest first, with git's SHAs and trees.
    let shas = git_ok(&clone, &["rev-list", "--reverse", "main..HEAD"]).await;
    let shas: Vec<&str> = shas.lines().collect();
    let commits = s
        .octo
        .pulls("acme", "api")
        .pr_commits(pr.number)
        .send()
        .await
        .expect("commits");
    assert_eq!(
        commits
            .items
            .iter()
            .map(|c| c.sha.as_str())
            .collect::<Vec<_>>(),
        shas
    );
    for c in &commits.items {
        let tree = git_ok(&clone, &["rev-parse", &format!("{}^{{tree}}", c.sha)]).await;
        assert_eq!(c.commit.tree.sha, tree, "tree of {}", c.sha);
    }
    let bot = commits.items[0]
        .author
        .as_ref()
        .expect("the bot's commit is linked");
    assert_eq!(
        (bot.login.as_str(), bot.id.0),
        (BOT_NAME, TEST_APP_BOT_USER_ID)
    );
    assert!(
        commits.items[1].author.is_none(),
        "an unknown email is not linked"
    );
    let raw: Value = s
        .octo
        .get(
            format!("/repos/acme/api/pulls/{}/commits", pr.number),
            None::<&()>,
        )
        .await
        .expect("raw commits");
    assert_eq!(raw[1]["author"], Value::Null);
    assert_eq!(raw[1]["commit"]["author"]["email"], "test@example.com");
    assert_eq!(raw[1]["commit"]["author"]["name"], "Test Person");
    let git_commit: Value = s
        .octo
        .get(format!("/repos/acme/api/git/commits/{head}"), None::<&()>)
        .await
        .expect("git commit");
    assert_eq!(git_commit["parents"][0]["sha"], shas[0]);

    // The webhook GitHub sends after the API call.
    let payload = s.github.world().pull_request_payload(
        "acme/api",
        pr.number,
        "opened",
        &User::test_app_bot(),
    );
    assert_eq!(payload["action"], "opened");
    assert_eq!(payload["pull_request"]["head"]["sha"], head.as_str());
    assert_eq!(payload["pull_request"]["changed_files"], 4);
    assert_eq!(payload["installation"]["id"], INSTALLATION);

    // Another push to the head branch moves the pull request with it.
    std::fs::write(clone.join("src/new.rs"), "pub fn new() -> u8 {\n    2\n}\n").expect("write");
    git_ok(&clone, &["commit", "--quiet", "-am", "Again"]).await;
    git_ok(&clone, &["push", "--quiet", "origin", "HEAD"]).await;
    let new_head = git_ok(&clone, &["rev-parse", "HEAD"]).await;
    let pr = s
        .octo
        .pulls("acme", "api")
        .get(pr.number)
        .await
        .expect("pull request");
    assert_eq!(pr.head.sha, new_head);
    assert_eq!(pr.commits, Some(3));
    let sync = s.github.world().synchronize_payload(
        "acme/api",
        pr.number,
        head.clone(),
        &User::test_app_bot(),
    );
    assert_eq!(
        (sync["before"].as_str(), sync["after"].as_str()),
        (Some(head.as_str()), Some(new_head.as_str()))
    );
    assert_eq!(s.github.world().pushes.len(), 2);
}

#[tokio::test]
async fn libgit2_clones_and_pushes_over_http_with_a_token() {
    let s = setup().await;
    let url = s.github.git_url("acme/api");
    let token = s.token.clone();
    let dir = s.work.join("git2");
    let pushed = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || git2_clone_commit_push(&url, &token, &dir)),
    )
    .await
    .expect("in time")
    .expect("no panic");
    assert_eq!(
        s.github.world().branch_head("acme/api", "from-git2"),
        Some(pushed)
    );
    assert_eq!(
        s.github
            .world()
            .file_at("acme/api", "from-git2", "NOTES.md")
            .as_deref(),
        Some("from libgit2\n")
    );
}

/// Clones `url`, commits one file and pushes it as branch `from-git2`; the new commit's SHA.
fn git2_clone_commit_push(url: &str, token: &str, dir: &Path) -> String {
    let callbacks = || {
        let mut callbacks = git2::RemoteCallbacks::new();
        let mut asked = 0;
        callbacks.credentials(move |_, _, _| {
            asked += 1;
            if asked > 3 {
                return Err(git2::Error::from_str("credentials refused"));
            }
            git2::Cred::userpass_plaintext("x-access-token", token)
        });
        callbacks
    };
    let mut fetch = git2::FetchOptions::new();
    fetch.remote_callbacks(callbacks());
    let repo = git2::build::RepoBuilder::new()
        .fetch_options(fetch)
        .clone(url, dir)
        .expect("libgit2 clones over HTTP");
    assert!(dir.join("README.md").exists());

    std::fs::write(dir.join("NOTES.md"), "from libgit2\n").expect("write");
    let mut index = repo.index().expect("index");
    index.add_path(Path::new("NOTES.md")).expect("add");
    index.write().expect("index write");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let parent = repo.head().and_then(|h| h.peel_to_commit()).expect("head");
    let signature = git2::Signature::now(BOT_NAME, BOT_EMAIL).expect("signature");
    let id = repo
        .commit(
            Some("HEAD"),
            &signature,
            &signature,
            "Notes",
            &tree,
            &[&parent],
        )
        .expect("commit");

    let mut remote = repo.find_remote("origin").expect("origin");
    let mut rejected = None;
    let mut push_callbacks = callbacks();
    push_callbacks.push_update_reference(|name, status| {
        rejected = status.map(|s| format!("{name}: {s}"));
        Ok(())
    });
    let mut push = git2::PushOptions::new();
    push.remote_callbacks(push_callbacks);
    remote
        .push(&["refs/heads/main:refs/heads/from-git2"], Some(&mut push))
        .expect("libgit2 pushes over HTTP");
    drop(push);
    assert_eq!(rejected, None);
    id.to_string()
}

#[tokio::test]
async fn git_refuses_missing_bad_scoped_and_read_only_credentials_like_github() {
    let s = setup().await;
    let clone = clone(&s, &s.token, "api").await;
    git_ok(
        &clone,
        &["commit", "--quiet", "--allow-empty", "-m", "empty"],
    )
    .await;

    // No credentials: 401 with GitHub's Basic challenge.
    let anonymous = s.github.git_url("acme/api");
    let out = git(&clone, &["push", &anonymous, "HEAD:refs/heads/anon"]).await;
    assert!(!out.status.success());
    assert_eq!(
        last_status(
            &s.github,
            "/acme/api.git/info/refs?service=git-receive-pack"
        ),
        401
    );
    let plain = Octocrab::builder()
        .base_uri(s.github.url())
        .expect("base uri")
        .build()
        .expect("octocrab");
    let answer = plain
        ._get(format!(
            "{}/acme/api.git/info/refs?service=git-upload-pack",
            s.github.url()
        ))
        .await
        .expect("answer");
    assert_eq!(answer.status(), 401);
    assert_eq!(
        answer.headers()["www-authenticate"],
        "Basic realm=\"GitHub\""
    );

    // A token limited to another repository: the repository is invisible to fetches and
    // refused to pushes.
    let web_only = mint(&s.app, json!({"repositories": ["web"]})).await;
    let url = authed_url(&s.github, "acme/api", &web_only);
    let out = git(&clone, &["push", &url, "HEAD:refs/heads/scoped"]).await;
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Permission to acme/api.git denied"),
        "{}",
        stderr(&out)
    );
    assert_eq!(last_status(&s.github, "service=git-receive-pack"), 403);
    let out = git(&s.work, &["ls-remote", &url]).await;
    assert!(!out.status.success());
    assert_eq!(last_status(&s.github, "service=git-upload-pack"), 404);

    // Read-only contents: fetch yes, push no.
    let read_only = mint(
        &s.app,
        json!({"permissions": {"contents": "read", "metadata": "read"}}),
    )
    .await;
    let url = authed_url(&s.github, "acme/api", &read_only);
    git_ok(&s.work, &["ls-remote", &url]).await;
    let out = git(&clone, &["push", &url, "HEAD:refs/heads/read-only"]).await;
    assert!(!out.status.success());
    assert_eq!(last_status(&s.github, "service=git-receive-pack"), 403);

    // Metadata only: not even a fetch.
    let metadata = mint(&s.app, json!({"permissions": {"metadata": "read"}})).await;
    let out = git(
        &s.work,
        &["ls-remote", &authed_url(&s.github, "acme/api", &metadata)],
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(last_status(&s.github, "service=git-upload-pack"), 403);

    // An expired token is a bad credential.
    let expired = mint(&s.app, json!({})).await;
    if let Some(t) = s.github.world().tokens.get_mut(&expired) {
        t.expires_at = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
    }
    let out = git(
        &clone,
        &[
            "push",
            &authed_url(&s.github, "acme/api", &expired),
            "HEAD:refs/heads/late",
        ],
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(last_status(&s.github, "service=git-receive-pack"), 401);

    // A repository that does not exist.
    let out = git(
        &s.work,
        &["ls-remote", &authed_url(&s.github, "acme/nope", &s.token)],
    )
    .await;
    assert!(!out.status.success());
    assert_eq!(last_status(&s.github, "/acme/nope.git/info/refs"), 404);

    // Nothing of that moved a branch; the tokens never reached the log.
    assert_eq!(s.github.world().branches("acme/api"), ["main"]);
    assert!(s.github.world().pushes.is_empty());
    for token in [&s.token, &web_only, &read_only, &metadata, &expired] {
        assert!(
            s.github
                .calls()
                .iter()
                .all(|c| !c.path.contains(token.as_str()))
        );
    }
}

#[tokio::test]
async fn injected_faults_hit_git_paths_too() {
    let s = setup().await;
    let url = authed_url(&s.github, "acme/api", &s.token);
    s.github
        .fail_next("/acme/api.git/info/refs", Fault::Status(502), 1);
    let out = git(&s.work, &["ls-remote", &url]).await;
    assert!(!out.status.success(), "the fault answers first");
    assert!(stderr(&out).contains("502"), "{}", stderr(&out));
    let refs = git_ok(&s.work, &["ls-remote", &url, "refs/heads/main"]).await;
    assert!(
        refs.starts_with(&s.initial),
        "then git is served again: {refs}"
    );
}

/// octocrab's GitHub error: status, message and the `errors[].message`/`field` entries.
fn github_error(error: octocrab::Error) -> (u16, String, Vec<Value>) {
    match error {
        octocrab::Error::GitHub { source, .. } => (
            source.status_code.as_u16(),
            source.message.clone(),
            source.errors.clone().unwrap_or_default(),
        ),
        other => panic!("expected a GitHub error, got {other:?}"),
    }
}

#[tokio::test]
async fn opening_pull_requests_is_refused_where_github_refuses() {
    let s = setup().await;
    let alice = User::new(7, "alice");
    {
        let mut w = s.github.world();
        w.commit_files(
            "acme/api",
            "feature",
            &[("src/x.rs", Some("x\n"))],
            "X",
            &alice,
        );
        let main = w.branch_head("acme/api", "main").expect("main");
        assert_eq!(main, s.initial);
        w.commit_files("acme/api", "same", &[], "empty", &alice);
        w.create_repository("acme/uninstalled", &[("README.md", "x\n")]);
        w.commit_files(
            "acme/uninstalled",
            "feature",
            &[("a", Some("a\n"))],
            "A",
            &alice,
        );
    }
    let pulls = s.octo.pulls("acme", "api");
    let created = pulls
        .create("X", "acme:feature", "main")
        .draft(true)
        .send()
        .await
        .expect("created");
    assert_eq!(created.draft, Some(true));
    let commits: Value = s
        .octo
        .get(
            format!("/repos/acme/api/pulls/{}/commits", created.number),
            None::<&()>,
        )
        .await
        .expect("commits");
    assert_eq!(
        commits[0]["author"]["login"], "alice",
        "a noreply email links the account"
    );
    assert_eq!(commits[0]["author"]["id"], 7);

    let refused = |r: octocrab::Result<octocrab::models::pulls::PullRequest>| {
        github_error(r.expect_err("refused"))
    };
    let (status, message, errors) = refused(pulls.create("again", "feature", "main").send().await);
    assert_eq!((status, message.as_str()), (422, "Validation Failed"));
    assert_eq!(
        errors[0]["message"],
        "A pull request already exists for acme:feature."
    );

    // `same` only has an empty commit on top of main... which is still a commit.
    let same = pulls
        .create("same", "same", "main")
        .send()
        .await
        .expect("an empty commit counts");
    assert_eq!(same.commits, Some(1));
    let (_, _, errors) = refused(pulls.create("none", "main", "main").send().await);
    assert_eq!(errors[0]["message"], "No commits between main and main");
    let (status, _, errors) = refused(pulls.create("ghost", "ghost", "main").send().await);
    assert_eq!((status, errors[0]["field"].as_str()), (422, Some("head")));
    let (_, _, errors) = refused(pulls.create("base", "feature", "nope").send().await);
    assert_eq!(errors[0]["field"], "base");
    let (_, _, errors) = refused(pulls.create("fork", "someone:feature", "main").send().await);
    assert_eq!(errors[0]["field"], "head");
    let (status, _, _) = refused(
        s.octo
            .pulls("acme", "uninstalled")
            .create("t", "feature", "main")
            .send()
            .await,
    );
    assert_eq!(status, 404);

    // Creating needs `pull_requests: write`; the agent's own token (contents only) cannot.
    let agent = mint(
        &s.app,
        json!({"repositories": ["api"], "permissions": {"contents": "write", "metadata": "read"}}),
    )
    .await;
    let agent_client = Octocrab::builder()
        .base_uri(s.github.url())
        .expect("base uri")
        .personal_token(agent)
        .build()
        .expect("octocrab");
    let (status, _, _) = refused(
        agent_client
            .pulls("acme", "api")
            .create("t", "same", "main")
            .send()
            .await,
    );
    assert_eq!(status, 403);
}

#[tokio::test]
async fn labels_user_lookups_and_the_head_filter_work_like_github() {
    let s = setup().await;
    let alice = User::new(7, "alice");
    {
        let mut w = s.github.world();
        w.commit_files("acme/api", "one", &[("1", Some("1\n"))], "1", &alice);
        w.commit_files("acme/api", "two", &[("2", Some("2\n"))], "2", &alice);
    }
    let pulls = s.octo.pulls("acme", "api");
    let one = pulls
        .create("one", "one", "main")
        .send()
        .await
        .expect("one");
    let two = pulls
        .create("two", "two", "main")
        .send()
        .await
        .expect("two");

    let labels = s
        .octo
        .issues("acme", "api")
        .add_labels(
            one.number,
            &["countersign".to_owned(), "ai:backend".to_owned()],
        )
        .await
        .expect("labels");
    assert_eq!(
        labels.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["countersign", "ai:backend"]
    );
    // GitHub also takes a bare array; the answer lists every label of the issue.
    let all: Value = s
        .octo
        .post(
            format!("/repos/acme/api/issues/{}/labels", one.number),
            Some(&json!(["countersign", "extra"])),
        )
        .await
        .expect("bare array");
    assert_eq!(all.as_array().map(Vec::len), Some(3));
    assert_eq!(
        s.github.world().issues[&("acme/api".to_owned(), one.number)].labels,
        ["countersign", "ai:backend", "extra"]
    );
    let missing = s
        .octo
        .issues("acme", "api")
        .add_labels(999, &["x".to_owned()])
        .await;
    assert_eq!(github_error(missing.expect_err("no issue 999")).0, 404);

    // `head` needs the owner; without it GitHub ignores the filter.
    let list = |head: &'static str, state: octocrab::params::State| {
        let pulls = s.octo.pulls("acme", "api");
        async move {
            pulls
                .list()
                .head(head)
                .state(state)
                .send()
                .await
                .expect("list")
                .items
                .iter()
                .map(|p| p.number)
                .collect::<Vec<_>>()
        }
    };
    use octocrab::params::State;
    assert_eq!(list("acme:one", State::Open).await, [one.number]);
    assert_eq!(list("acme:two", State::All).await, [two.number]);
    assert_eq!(list("other:one", State::All).await, Vec::<u64>::new());
    assert_eq!(
        list("one", State::Open).await,
        [two.number, one.number],
        "newest first"
    );
    assert_eq!(list("acme:one", State::Closed).await, Vec::<u64>::new());

    // The App's bot account, as the controller looks it up for its commit identity.
    let bot = s
        .octo
        .users("countersign-test%5Bbot%5D")
        .profile()
        .await
        .expect("bot profile");
    assert_eq!(
        (bot.id.0, bot.r#type.as_str()),
        (TEST_APP_BOT_USER_ID, "Bot")
    );
    let alice_profile = s
        .octo
        .users("alice")
        .profile()
        .await
        .expect("alice (a commit author)");
    assert_eq!(alice_profile.id.0, 7);
    let nobody = s.octo.users("nobody").profile().await;
    assert_eq!(github_error(nobody.expect_err("unknown user")).0, 404);
}

#[tokio::test]
async fn a_push_larger_than_gits_post_buffer_goes_through() {
    let s = setup().await;
    let clone = clone(&s, &s.token, "big").await;
    // Incompressible bytes, over git's 1 MiB http.postBuffer: sent chunked.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let bytes: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect();
    std::fs::write(clone.join("blob.bin"), &bytes).expect("write");
    git_ok(&clone, &["add", "blob.bin"]).await;
    git_ok(&clone, &["commit", "--quiet", "-m", "big"]).await;
    git_ok(
        &clone,
        &["push", "--quiet", "origin", "HEAD:refs/heads/big"],
    )
    .await;
    let head = git_ok(&clone, &["rev-parse", "HEAD"]).await;
    assert_eq!(s.github.world().branch_head("acme/api", "big"), Some(head));
    // And back: a fresh clone of that branch has the same bytes.
    let url = authed_url(&s.github, "acme/api", &s.token);
    git_ok(
        &s.work,
        &["clone", "--quiet", "--branch", "big", &url, "again"],
    )
    .await;
    assert_eq!(
        std::fs::read(s.work.join("again/blob.bin")).expect("read"),
        bytes
    );
}
