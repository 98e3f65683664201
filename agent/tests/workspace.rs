//! The agent's git workspace and `command` provider against real repositories: bare
//! repositories on disk, cloned over `file://` and over smart HTTP with a token, and a real
//! shell script as the coding agent. One test binary for both keeps CI's disk small.

mod support;

#[path = "workspace/command_provider.rs"]
mod command_provider;

use std::fs;
use std::path::Path;

use countersign_agent::guardrails;
use countersign_agent::publish::Fresh;
use countersign_agent::workspace::{
    AddedLine, ChangeStatus, Workspace, WorkspaceError, commit_message,
};
use countersign_crds::agent::{AgentLimits, Guardrails};
use countersign_crds::task_file::CommitIdentity;
use git2::Repository;
use secrecy::SecretString;
use support::{GitHttp, Upstream, files_under};

const TOKEN: &str = "ghs_testtoken0123456789abcdefghijklmnopqrs";

fn token() -> SecretString {
    SecretString::from(TOKEN)
}

fn bot() -> CommitIdentity {
    CommitIdentity {
        name: "countersign[bot]".into(),
        email: "41898282+countersign[bot]@users.noreply.github.com".into(),
    }
}

const OLD_NAME: &str = "//! Parsing of invoices.\n\
pub struct Invoice {\n    pub id: u64,\n    pub total_cents: u64,\n}\n\n\
pub fn parse(line: &str) -> Option<Invoice> {\n    let (id, total) = line.split_once(',')?;\n\
    Some(Invoice { id: id.parse().ok()?, total_cents: total.parse().ok()? })\n}\n";

fn upstream() -> Upstream {
    Upstream::with_files(&[
        ("README.md", "# Demo\n"),
        (".gitignore", "target/\n*.log\n"),
        ("src/lib.rs", "pub fn one() -> u32 {\n    1\n}\n"),
        ("src/old_name.rs", OLD_NAME),
        ("docs/remove.md", "bye\n"),
    ])
}

/// Edits the working tree: one modification, one deletion, one rename, one new file, and
/// two files `.gitignore` excludes.
fn make_changes(dir: &Path) {
    fs::write(
        dir.join("src/lib.rs"),
        "pub fn one() -> u32 {\n    2\n}\n\npub fn two() -> u32 {\n    2\n}\n",
    )
    .expect("edit");
    fs::remove_file(dir.join("docs/remove.md")).expect("delete");
    fs::rename(dir.join("src/old_name.rs"), dir.join("src/new_name.rs")).expect("rename");
    fs::create_dir_all(dir.join("notes")).expect("mkdir");
    fs::write(dir.join("notes/todo.txt"), "first\nsecond\n").expect("add");
    fs::create_dir_all(dir.join("target")).expect("mkdir");
    fs::write(dir.join("target/out.bin"), [0u8, 1, 2]).expect("ignored");
    fs::write(dir.join("debug.log"), "ignored\n").expect("ignored");
}

/// What the push step does with the work step's commit: a repository of its own reading the
/// checkout's objects, a new commit of the same tree on the base, pushed to `url`. Returns
/// the pushed commit.
fn publish(
    dir: &Path,
    base: &str,
    commit: &str,
    branch: &str,
    url: &str,
) -> Result<String, WorkspaceError> {
    let scratch = tempfile::tempdir().expect("a temp dir");
    let id = |sha: &str| git2::Oid::from_str(sha).expect("an object id");
    let fresh = Fresh::create(scratch.path(), &dir.join(".git").join("objects"), id(base))?;
    let (_, tree) = fresh.change_of(id(commit))?;
    let message = Repository::open(dir)
        .and_then(|r| {
            r.find_commit(id(commit))
                .map(|c| c.message().unwrap_or("").to_owned())
        })
        .expect("the work commit's message");
    let pushed = fresh.commit(tree, &bot(), &message, branch)?;
    fresh.push(url, branch, &token(), true)?;
    Ok(pushed)
}

fn assert_no_token_under(dir: &Path) {
    for file in files_under(dir) {
        let bytes = fs::read(&file).expect("read");
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "{} contains the token",
            file.display()
        );
    }
}

#[test]
fn clone_branch_change_commit_push_over_file_url() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let mut workspace =
        Workspace::clone_repo(&upstream.file_url(), &token(), "main", &dir).expect("clone");
    assert_eq!(
        workspace.base_commit(),
        upstream.branch_tip("main").expect("main").to_string()
    );
    workspace
        .create_branch("countersign/run-1")
        .expect("branch");
    assert_eq!(workspace.branch(), Some("countersign/run-1"));
    let repo = Repository::open(&dir).expect("open the clone");
    assert_eq!(
        repo.head().expect("HEAD").name().ok(),
        Some("refs/heads/countersign/run-1")
    );

    make_changes(&dir);
    let changes = workspace.changes().expect("changes");
    let summary: Vec<_> = changes
        .files
        .iter()
        .map(|f| {
            (
                f.path.as_str(),
                f.old_path.as_deref(),
                f.status,
                f.additions,
                f.deletions,
                f.binary,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("docs/remove.md", None, ChangeStatus::Deleted, 0, 1, false),
            ("notes/todo.txt", None, ChangeStatus::Added, 2, 0, false),
            ("src/lib.rs", None, ChangeStatus::Modified, 5, 1, false),
            (
                "src/new_name.rs",
                Some("src/old_name.rs"),
                ChangeStatus::Renamed,
                0,
                0,
                false
            ),
        ]
    );
    assert_eq!((changes.additions, changes.deletions), (7, 2));
    let lib = &changes.files[2];
    let added: Vec<(u32, &str)> = lib
        .added_lines
        .iter()
        .map(|AddedLine { number, text }| (*number, text.as_str()))
        .collect();
    assert_eq!(
        added,
        vec![
            (2, "    2"),
            (3, "}"),
            (4, ""),
            (5, "pub fn two() -> u32 {"),
            (6, "    2"),
        ]
    );

    let message = commit_message(
        "Return 2 from one()",
        "The answer changed.",
        &[
            ("Countersign-Run", "team-a/fix-one"),
            ("Requested-by", "@alice"),
        ],
    );
    let commit = workspace
        .commit(&changes, &bot(), &message)
        .expect("commit");
    let committed = repo
        .find_commit(git2::Oid::from_str(&commit).expect("an id"))
        .expect("the commit");
    assert_eq!(committed.author().name().ok(), Some("countersign[bot]"));
    assert_eq!(committed.author().email().ok(), Some(bot().email.as_str()));
    assert_eq!(committed.committer().name().ok(), Some("countersign[bot]"));
    assert_eq!(
        committed.committer().email().ok(),
        Some(bot().email.as_str())
    );
    assert_eq!(
        committed.message().ok(),
        Some(
            "Return 2 from one()\n\nThe answer changed.\n\n\
             Countersign-Run: team-a/fix-one\nRequested-by: @alice\n"
        )
    );
    assert_eq!(
        committed.parent_ids().collect::<Vec<_>>(),
        vec![upstream.branch_tip("main").expect("main")]
    );

    let published = publish(
        &dir,
        &workspace.base_commit(),
        &commit,
        "countersign/run-1",
        &upstream.file_url(),
    )
    .expect("push");
    let pushed = upstream
        .branch_tip("countersign/run-1")
        .expect("the branch was pushed");
    assert_eq!(pushed.to_string(), published);
    let bare = upstream.repo();
    let pushed_commit = bare.find_commit(pushed).expect("the pushed commit");
    assert_eq!(
        pushed_commit.tree_id(),
        committed.tree_id(),
        "the push step pushes the work step's tree in a commit of its own"
    );
    assert_eq!(pushed_commit.message().ok(), committed.message().ok());
    assert_eq!(
        pushed_commit.parent_ids().collect::<Vec<_>>(),
        vec![upstream.branch_tip("main").expect("main")]
    );
    let tree = bare
        .find_commit(pushed)
        .and_then(|c| c.tree())
        .expect("the pushed tree");
    assert!(tree.get_path(Path::new("notes/todo.txt")).is_ok());
    assert!(tree.get_path(Path::new("src/new_name.rs")).is_ok());
    assert!(tree.get_path(Path::new("docs/remove.md")).is_err());
    assert!(tree.get_path(Path::new("debug.log")).is_err());
    assert!(tree.get_path(Path::new("target/out.bin")).is_err());

    let origin = repo.find_remote("origin").expect("origin");
    assert_eq!(origin.url().ok(), Some(upstream.file_url().as_str()));
    assert_no_token_under(&dir.join(".git"));
}

#[test]
fn the_guardrails_see_what_the_agent_did_in_dot_directories() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let workspace =
        Workspace::clone_repo(&upstream.file_url(), &token(), "main", &dir).expect("clone");
    fs::create_dir_all(dir.join(".github/workflows")).expect("mkdir");
    fs::write(dir.join(".github/workflows/ci.yml"), "on: push\n").expect("write");
    let changes = workspace.changes().expect("changes");
    let violation = guardrails::check(&changes, &AgentLimits::default(), &Guardrails::default())
        .expect_err("a workflow change is forbidden");
    assert_eq!(
        violation.to_string(),
        ".github/workflows/ci.yml matches the forbidden path .github/workflows/** (built in); \
         to let this agent change it, add it to guardrails.allowedPaths"
    );
}

#[test]
fn an_untouched_workspace_has_no_changes() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let mut workspace =
        Workspace::clone_repo(&upstream.file_url(), &token(), "main", &dir).expect("clone");
    workspace
        .create_branch("countersign/run-2")
        .expect("branch");
    fs::write(dir.join("build.log"), "ignored\n").expect("write");
    let changes = workspace.changes().expect("changes");
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(changes.changed_lines(), 0);
}

#[test]
fn commits_the_coding_agent_made_are_folded_into_one() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let mut workspace =
        Workspace::clone_repo(&upstream.file_url(), &token(), "main", &dir).expect("clone");
    workspace
        .create_branch("countersign/run-3")
        .expect("branch");
    // The coding agent commits on its own (as aider does), as someone else.
    fs::write(dir.join("README.md"), "# Demo\n\nMore.\n").expect("write");
    let repo = Repository::open(&dir).expect("open");
    let mut index = repo.index().expect("index");
    index
        .add_path(Path::new("README.md"))
        .and_then(|()| index.write())
        .expect("stage");
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let someone = git2::Signature::now("aider", "aider@example.com").expect("signature");
    let head = repo.head().and_then(|h| h.peel_to_commit()).expect("head");
    repo.commit(Some("HEAD"), &someone, &someone, "wip", &tree, &[&head])
        .expect("agent commit");
    fs::write(dir.join("NEW.md"), "new\n").expect("write");

    let changes = workspace.changes().expect("changes");
    let paths: Vec<&str> = changes.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["NEW.md", "README.md"]);
    let commit = workspace
        .commit(&changes, &bot(), "Squashed\n")
        .expect("commit");
    let commit = repo
        .find_commit(git2::Oid::from_str(&commit).expect("id"))
        .expect("commit");
    assert_eq!(commit.parent_count(), 1);
    assert_eq!(
        commit.parent_id(0).expect("parent"),
        upstream.branch_tip("main").expect("main")
    );
    assert_eq!(commit.author().name().ok(), Some("countersign[bot]"));
}

#[test]
fn a_change_set_not_from_the_workspace_cannot_be_committed() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let mut workspace = Workspace::clone_repo(
        &upstream.file_url(),
        &token(),
        "main",
        &work.path().join("r"),
    )
    .expect("clone");
    workspace
        .create_branch("countersign/run-4")
        .expect("branch");
    let made_up = countersign_agent::workspace::ChangeSet::new(vec![]);
    assert!(matches!(
        workspace.commit(&made_up, &bot(), "x"),
        Err(WorkspaceError::Git { .. })
    ));
}

#[test]
fn binary_files_are_flagged() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let workspace =
        Workspace::clone_repo(&upstream.file_url(), &token(), "main", &dir).expect("clone");
    fs::write(dir.join("logo.png"), [0x89, b'P', b'N', b'G', 0, 0, 0, 13]).expect("write");
    let changes = workspace.changes().expect("changes");
    assert_eq!(changes.files.len(), 1);
    assert!(changes.files[0].binary);
    assert_eq!(changes.files[0].status, ChangeStatus::Added);
    assert!(changes.files[0].added_lines.is_empty());
}

#[test]
fn a_symlink_is_committed_as_a_link_not_as_what_it_points_to() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let workspace =
        Workspace::clone_repo(&upstream.file_url(), &token(), "main", &dir).expect("clone");
    // The pod's token file, as a coding agent might try to smuggle it out.
    let secret = work.path().join("token");
    fs::write(&secret, TOKEN).expect("write");
    std::os::unix::fs::symlink(&secret, dir.join("leak")).expect("symlink");
    let changes = workspace.changes().expect("changes");
    assert_eq!(changes.files.len(), 1);
    let texts: Vec<&str> = changes.files[0]
        .added_lines
        .iter()
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(texts, vec![secret.to_str().expect("a UTF-8 path")]);
}

#[test]
fn a_missing_branch_or_repository_is_not_found() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let missing_branch = Workspace::clone_repo(
        &upstream.file_url(),
        &token(),
        "develop",
        &work.path().join("a"),
    );
    assert!(
        matches!(&missing_branch, Err(WorkspaceError::NotFound { what, .. }) if what.contains("develop")),
        "{:?}",
        missing_branch.err()
    );
    let missing_repo = Workspace::clone_repo(
        &format!("file://{}/nope.git", work.path().display()),
        &token(),
        "main",
        &work.path().join("b"),
    );
    assert!(
        matches!(missing_repo, Err(WorkspaceError::NotFound { .. })),
        "{:?}",
        missing_repo.err()
    );
}

#[test]
fn the_workspace_config_and_hooks_cannot_redirect_the_push() {
    let upstream = upstream();
    let attacker = Upstream::with_files(&[("README.md", "attacker\n")]);
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let mut workspace =
        Workspace::clone_repo(&upstream.file_url(), &token(), "main", &dir).expect("clone");
    workspace
        .create_branch("countersign/run-5")
        .expect("branch");
    fs::write(dir.join("NEW.md"), "new\n").expect("write");
    let changes = workspace.changes().expect("changes");
    let commit = workspace.commit(&changes, &bot(), "New\n").expect("commit");
    // What a hostile coding agent could write into .git/: a rewrite of the push URL, a
    // credential helper and hooks.
    let repo = Repository::open(&dir).expect("open");
    let mut config = repo.config().expect("config");
    config
        .set_str(
            &format!("url.{}.pushInsteadOf", attacker.file_url()),
            &upstream.file_url(),
        )
        .expect("set config");
    config
        .set_str(
            &format!("url.{}.insteadOf", attacker.file_url()),
            &upstream.file_url(),
        )
        .expect("set config");
    config
        .set_str(
            "credential.helper",
            "!echo stolen > /tmp/countersign-test-stolen",
        )
        .expect("set config");
    let marker = work.path().join("hook-ran");
    for hook in ["pre-push", "post-commit", "reference-transaction"] {
        let path = dir.join(".git/hooks").join(hook);
        fs::create_dir_all(path.parent().expect("hooks")).expect("hooks dir");
        fs::write(&path, format!("#!/bin/sh\ntouch {}\n", marker.display())).expect("hook");
        let mut permissions = fs::metadata(&path).expect("hook").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        fs::set_permissions(&path, permissions).expect("executable");
    }
    publish(
        &dir,
        &workspace.base_commit(),
        &commit,
        "countersign/run-5",
        &upstream.file_url(),
    )
    .expect("push");
    assert!(
        upstream.branch_tip("countersign/run-5").is_some(),
        "pushed where it belongs"
    );
    assert_eq!(
        attacker.branch_tip("countersign/run-5"),
        None,
        "not to the attacker"
    );
    assert!(!marker.exists(), "no hook ran");
}

#[test]
fn invalid_branch_names_are_refused() {
    let upstream = upstream();
    let work = tempfile::tempdir().expect("a temp dir");
    let mut workspace = Workspace::clone_repo(
        &upstream.file_url(),
        &token(),
        "main",
        &work.path().join("r"),
    )
    .expect("clone");
    assert!(workspace.create_branch("bad..name").is_err());
    let base = workspace.base_commit();
    assert!(
        publish(
            work.path().join("r").as_path(),
            &base,
            &base,
            "x:refs/heads/main",
            &upstream.file_url()
        )
        .is_err()
    );
}

#[test]
fn commit_messages_put_trailers_last() {
    assert_eq!(
        commit_message("  Fix the\nparser ", "", &[("Countersign-Run", "ns/run")]),
        "Fix the parser\n\nCountersign-Run: ns/run\n"
    );
    assert_eq!(
        commit_message("Title", "Body\n\nMore.\n", &[]),
        "Title\n\nBody\n\nMore.\n"
    );
    assert_eq!(
        commit_message(
            "T",
            "B",
            &[("Requested by", "@bob\nand more"), ("Empty", " ")]
        ),
        "T\n\nB\n\nRequested-by: @bob and more\n"
    );
}

#[test]
fn clone_and_push_over_smart_http_with_the_token() {
    let upstream = upstream();
    let server = GitHttp::start(upstream.root.path(), TOKEN);
    let url = server.url("acme/api");
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let mut workspace = Workspace::clone_repo(&url, &token(), "main", &dir).expect("clone");
    assert!(server.authenticated_requests() >= 1, "the token was used");
    let repo = Repository::open(&dir).expect("open");
    assert!(repo.is_shallow(), "an HTTP clone is shallow");
    assert_eq!(
        repo.find_remote("origin").expect("origin").url().ok(),
        Some(url.as_str()),
        "the remote URL carries no credentials"
    );
    let refspecs: Vec<String> = repo
        .find_remote("origin")
        .expect("origin")
        .fetch_refspecs()
        .expect("refspecs")
        .iter()
        .filter_map(|r| r.ok().flatten())
        .map(str::to_owned)
        .collect();
    assert_eq!(refspecs, vec!["+refs/heads/main:refs/remotes/origin/main"]);

    workspace
        .create_branch("countersign/run-6")
        .expect("branch");
    make_changes(&dir);
    let changes = workspace.changes().expect("changes");
    let commit = workspace
        .commit(&changes, &bot(), "Change over HTTP\n")
        .expect("commit");
    let base = workspace.base_commit();
    let pushed = publish(&dir, &base, &commit, "countersign/run-6", &url)
        .expect("push from a shallow clone");
    assert_eq!(
        upstream
            .branch_tip("countersign/run-6")
            .map(|id| id.to_string()),
        Some(pushed)
    );
    // A retried attempt replaces what an earlier one pushed.
    fs::write(dir.join("notes/todo.txt"), "again\n").expect("write");
    let changes = workspace.changes().expect("changes");
    let second = workspace
        .commit(&changes, &bot(), "Second attempt\n")
        .expect("commit");
    let second = publish(&dir, &base, &second, "countersign/run-6", &url).expect("force push");
    assert_eq!(
        upstream
            .branch_tip("countersign/run-6")
            .map(|id| id.to_string()),
        Some(second)
    );
    assert_no_token_under(&dir.join(".git"));
}

#[test]
fn a_refused_token_fails_fast_without_showing_it() {
    let upstream = upstream();
    let server = GitHttp::start(
        upstream.root.path(),
        "ghs_theserverwantsanothertoken000000000",
    );
    let work = tempfile::tempdir().expect("a temp dir");
    let failed = Workspace::clone_repo(
        &server.url("acme/api"),
        &token(),
        "main",
        &work.path().join("repo"),
    );
    let Err(error) = failed else {
        panic!("a wrong token must not clone");
    };
    assert!(matches!(error, WorkspaceError::Auth { .. }), "{error:?}");
    assert_eq!(
        server.authenticated_requests(),
        2,
        "two tries, then give up"
    );
    let mut chain = format!("{error} {error:?}");
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        chain.push_str(&format!(" {e} {e:?}"));
        source = e.source();
    }
    assert!(chain.contains("authentication failed"), "{chain}");
    assert!(!chain.contains(TOKEN), "{chain}");
}

#[test]
fn a_missing_repository_over_http_is_not_found() {
    let upstream = upstream();
    let server = GitHttp::start(upstream.root.path(), TOKEN);
    let work = tempfile::tempdir().expect("a temp dir");
    let failed = Workspace::clone_repo(
        &server.url("acme/nope"),
        &token(),
        "main",
        &work.path().join("repo"),
    );
    assert!(
        matches!(failed, Err(WorkspaceError::NotFound { .. })),
        "{:?}",
        failed.err()
    );
}

#[test]
fn a_rejected_push_says_why() {
    let upstream = upstream();
    let server = GitHttp::start(upstream.root.path(), TOKEN);
    let work = tempfile::tempdir().expect("a temp dir");
    let dir = work.path().join("repo");
    let mut workspace =
        Workspace::clone_repo(&server.url("acme/api"), &token(), "main", &dir).expect("clone");
    workspace
        .create_branch("countersign/run-7")
        .expect("branch");
    fs::write(dir.join("NEW.md"), "new\n").expect("write");
    let changes = workspace.changes().expect("changes");
    let commit = workspace
        .commit(&changes, &bot(), "New file\n")
        .expect("commit");
    upstream.refuse_pushes("GH013: Repository rule violations found");
    let rejected = publish(
        &dir,
        &workspace.base_commit(),
        &commit,
        "countersign/run-7",
        &server.url("acme/api"),
    );
    match rejected {
        Err(WorkspaceError::PushRejected { reference, message }) => {
            assert_eq!(reference, "refs/heads/countersign/run-7");
            assert!(message.contains("GH013"), "{message}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(upstream.branch_tip("countersign/run-7"), None);
}
