//! The three steps of an agent pod run one after the other as in a pod: `clone` with its
//! token, `work` talking to a scripted model where the provider gateway would be, `push` with
//! its token. Then what a hostile `work` step could leave behind — a rewritten `.git/config`,
//! hooks, a moved branch, a forbidden file, a forged report, a hidden commit — and what `push`
//! does about it: it pushes only a commit that passes the guardrails, to the one allowed ref,
//! or fails the attempt with a reason.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use countersign_agent::config::StepArgs;
use countersign_agent::report::WorkReport;
use countersign_agent::steps;
use countersign_crds::result::{AgentResult, ResultOutcome};
use countersign_testkit::model::{FakeModel, Step};
use git2::{Oid, Repository, Signature};
use serde_json::json;
use support::Upstream;

const CLONE_TOKEN: &str = "ghs_clonetoken000000000000000000000000000";
const PUSH_TOKEN: &str = "ghs_pushtoken0000000000000000000000000000";
const GATEWAY_TOKEN: &str = "csgw_gatewaytoken00000000000000000000000000000";
const BRANCH: &str = "countersign/run-1";

/// One attempt's pod: an upstream repository, the Secret's files, the volumes, the model.
struct Pod {
    upstream: Upstream,
    _root: tempfile::TempDir,
    args: StepArgs,
    model: FakeModel,
}

impl Pod {
    async fn new(mode: &str, verify: serde_json::Value) -> Pod {
        let upstream = Upstream::with_files(&[
            ("README.md", "# Demo\n"),
            ("src/lib.rs", "pub fn one() -> u32 {\n    1\n}\n"),
        ]);
        let model = FakeModel::start().await.expect("model");
        model.require_api_key(GATEWAY_TOKEN);
        let root = tempfile::tempdir().expect("pod dir");
        let secrets = root.path().join("secrets");
        let workspace = root.path().join("workspace");
        let tmp = root.path().join("tmp");
        for dir in [
            &workspace,
            &tmp,
            &secrets.join("task"),
            &secrets.join("clone"),
            &secrets.join("push"),
            &secrets.join("gateway"),
        ] {
            fs::create_dir_all(dir).expect("dir");
        }
        let task = json!({
            "version": 2, "namespace": "team", "run": "run-1", "attempt": 1,
            "repository": {"owner": "acme", "name": "api", "defaultBranch": "main",
                "cloneUrl": upstream.file_url()},
            "branch": BRANCH,
            "task": {"title": "Return two", "requestedBy": {"login": "rita", "id": 11}},
            "mode": mode,
            "provider": {"name": "primary", "kind": "openai", "model": "m", "retries": 0},
            "limits": {"timeout": "2m"},
            "verify": verify,
            "commitAuthor": {"name": "countersign[bot]", "email": "1+countersign[bot]@users.noreply.github.com"},
        });
        fs::write(secrets.join("task/task.json"), task.to_string()).expect("task");
        fs::write(secrets.join("clone/token"), CLONE_TOKEN).expect("token");
        fs::write(secrets.join("push/token"), PUSH_TOKEN).expect("token");
        fs::write(secrets.join("gateway/token"), GATEWAY_TOKEN).expect("token");
        let mut args = StepArgs::local(workspace, &secrets, root.path().join("termination-log"));
        args.gateway_url = Some(model.anthropic_base_url());
        Pod {
            upstream,
            _root: root,
            args,
            model,
        }
    }

    fn repo_dir(&self) -> PathBuf {
        self.args.repo_dir()
    }

    fn base(&self) -> Oid {
        self.upstream.branch_tip("main").expect("main")
    }

    async fn clone_and_work(&self) -> WorkReport {
        let args = self.args.clone();
        blocking(move || {
            steps::clone::run(&args)
                .expect("clone wrote its result")
                .expect("cloned");
            steps::work::run(&args).expect("work wrote its report")
        })
        .await
    }

    async fn push(&self) -> AgentResult {
        let args = self.args.clone();
        let result =
            blocking(move || steps::push::run(&args).expect("push wrote its result")).await;
        let written = fs::read_to_string(&self.args.termination_log).expect("termination log");
        assert_eq!(AgentResult::parse(&written).expect("a result"), result);
        result
    }

    fn write_report(&self, report: &[u8]) {
        fs::write(self.args.work_report(), report).expect("report");
    }

    fn report(&self) -> WorkReport {
        serde_json::from_slice(&fs::read(self.args.work_report()).expect("report")).expect("json")
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(Duration::from_secs(60), tokio::task::spawn_blocking(f))
        .await
        .expect("in time")
        .expect("no panic")
}

fn change_steps() -> Vec<Step> {
    vec![
        Step::ToolCalls(vec![(
            "write_file".into(),
            json!({"path": "src/lib.rs", "content": "pub fn one() -> u32 {\n    2\n}\n"}),
        )]),
        Step::ToolCalls(vec![(
            "finish".into(),
            json!({"summary": "one is two now"}),
        )]),
    ]
}

/// A commit on top of `parent` in the checkout with `files` added, made as a hostile work
/// step would (no guardrails).
fn sneak_commit(dir: &Path, parent: Oid, files: &[(&str, &str)]) -> Oid {
    let repo = Repository::open(dir).expect("open");
    let parent = repo.find_commit(parent).expect("parent");
    let mut index = repo.index().expect("index");
    index
        .read_tree(&parent.tree().expect("tree"))
        .expect("read tree");
    for (path, content) in files {
        let blob = repo.blob(content.as_bytes()).expect("blob");
        index
            .add(&git2::IndexEntry {
                ctime: git2::IndexTime::new(0, 0),
                mtime: git2::IndexTime::new(0, 0),
                dev: 0,
                ino: 0,
                mode: 0o100644,
                uid: 0,
                gid: 0,
                file_size: content.len() as u32,
                id: blob,
                flags: 0,
                flags_extended: 0,
                path: path.as_bytes().to_vec(),
            })
            .expect("add");
    }
    let tree = repo
        .find_tree(index.write_tree().expect("tree"))
        .expect("tree");
    let me = Signature::now("mallory", "m@example.com").expect("sig");
    repo.commit(None, &me, &me, "sneaky\n", &tree, &[&parent])
        .expect("commit")
}

#[tokio::test(flavor = "multi_thread")]
async fn clone_work_push_push_a_commit_of_their_own_through_the_gateway_token() {
    let pod = Pod::new("autonomous", json!([])).await;
    pod.model.script(change_steps());
    let report = pod.clone_and_work().await;
    assert_eq!(report.outcome, ResultOutcome::Succeeded, "{report:?}");
    // No token in the checkout, and the clone step's token is nowhere in the workspace.
    for file in support::files_under(&pod.args.workspace) {
        let text = String::from_utf8_lossy(&fs::read(&file).expect("read")).into_owned();
        assert!(
            !text.contains(CLONE_TOKEN),
            "{} holds the token",
            file.display()
        );
    }
    let result = pod.push().await;
    assert_eq!(result.outcome, ResultOutcome::Succeeded, "{result:?}");
    assert_eq!(result.provider.as_deref(), Some("primary"));
    assert_eq!(result.branch.as_deref(), Some(BRANCH));
    let pushed = pod.upstream.branch_tip(BRANCH).expect("pushed");
    assert_eq!(result.commit, Some(pushed.to_string()));
    assert_ne!(
        Some(pushed.to_string()),
        report.commit,
        "push writes its own commit of the work step's tree"
    );
    let repo = pod.upstream.repo();
    let commit = repo.find_commit(pushed).expect("commit");
    assert_eq!(commit.parent_ids().collect::<Vec<_>>(), [pod.base()]);
    assert_eq!(
        commit.message().ok(),
        Some("Return two\n\none is two now\n\nCountersign-Run: team/run-1\nRequested-by: @rita\n")
    );
    assert_eq!(commit.author().name().ok(), Some("countersign[bot]"));
    let requests = pod.model.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r.api_key.as_deref() == Some(GATEWAY_TOKEN)),
        "the work step talks with the gateway token only"
    );
    let refs: Vec<String> = repo
        .references()
        .expect("refs")
        .filter_map(|r| r.ok().and_then(|r| r.name().ok().map(str::to_owned)))
        .collect();
    assert_eq!(refs, ["refs/heads/countersign/run-1", "refs/heads/main"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_workspace_pushes_only_the_checked_commit_to_the_one_ref() {
    let pod = Pod::new("autonomous", json!([])).await;
    pod.model.script(change_steps());
    let report = pod.clone_and_work().await;
    let clean = Oid::from_str(report.commit.as_deref().expect("a commit")).expect("oid");
    let dir = pod.repo_dir();
    // After the commit: the branch moves to a commit with a workflow file, `.git/config`
    // sends pushes elsewhere, and hooks wait for git to run them.
    let evil = sneak_commit(&dir, clean, &[(".github/workflows/x.yml", "on: push\n")]);
    let repo = Repository::open(&dir).expect("open");
    repo.reference(&format!("refs/heads/{BRANCH}"), evil, true, "moved")
        .expect("move the branch");
    repo.reference("refs/heads/main", evil, true, "moved")
        .expect("move main");
    let attacker = Upstream::with_files(&[("README.md", "attacker\n")]);
    let mut config = repo.config().expect("config");
    for key in ["insteadOf", "pushInsteadOf"] {
        config
            .set_str(
                &format!("url.{}.{key}", attacker.file_url()),
                &pod.upstream.file_url(),
            )
            .expect("config");
    }
    let marker = pod.args.workspace.join("hook-ran");
    for hook in [
        "pre-push",
        "post-commit",
        "pre-commit",
        "reference-transaction",
    ] {
        let path = dir.join(".git/hooks").join(hook);
        fs::create_dir_all(path.parent().expect("hooks")).expect("hooks");
        fs::write(&path, format!("#!/bin/sh\ntouch {}\n", marker.display())).expect("hook");
        let mut permissions = fs::metadata(&path).expect("hook").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        fs::set_permissions(&path, permissions).expect("executable");
    }

    let result = pod.push().await;
    assert_eq!(result.outcome, ResultOutcome::Succeeded, "{result:?}");
    let upstream = pod.upstream.repo();
    let pushed = pod.upstream.branch_tip(BRANCH).expect("pushed");
    let clean_tree = repo.find_commit(clean).expect("clean").tree_id();
    assert_eq!(
        upstream.find_commit(pushed).expect("pushed").tree_id(),
        clean_tree,
        "the reported commit's tree, not the moved branch's"
    );
    assert_eq!(
        pod.upstream.branch_tip("main"),
        Some(pod.base()),
        "main untouched"
    );
    assert!(
        upstream.find_commit(evil).is_err(),
        "the evil commit never left"
    );
    assert_eq!(
        attacker.branch_tip(BRANCH),
        None,
        "nothing went to the attacker"
    );
    assert!(!marker.exists(), "no hook ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_report_naming_a_forbidden_change_fails_the_attempt_and_pushes_nothing() {
    let pod = Pod::new("autonomous", json!([])).await;
    pod.model.script(change_steps());
    let report = pod.clone_and_work().await;
    let clean = Oid::from_str(report.commit.as_deref().expect("a commit")).expect("oid");
    let evil = sneak_commit(
        &pod.repo_dir(),
        clean,
        &[(".github/workflows/deploy.yml", "on: push\n")],
    );
    let mut forged = pod.report();
    forged.commit = Some(evil.to_string());
    forged.summary = Some("all good".into());
    pod.write_report(&serde_json::to_vec(&forged).expect("json"));
    let result = pod.push().await;
    assert_eq!(
        result.outcome,
        ResultOutcome::GuardrailViolation,
        "{result:?}"
    );
    assert!(
        result
            .reason
            .as_deref()
            .is_some_and(|r| r.contains(".github/workflows/deploy.yml")),
        "{result:?}"
    );
    assert_eq!(pod.upstream.branch_tip(BRANCH), None, "nothing pushed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hidden_commit_between_the_base_and_the_reported_one_is_not_pushed() {
    let pod = Pod::new("autonomous", json!([])).await;
    pod.model.script(change_steps());
    let report = pod.clone_and_work().await;
    let clean = Oid::from_str(report.commit.as_deref().expect("a commit")).expect("oid");
    let dir = pod.repo_dir();
    // A commit with a secret, then one that removes it again: the final tree is clean.
    let key_line = format!("aws_secret = \"AKIA{}\"\n", "Z".repeat(16));
    let hidden = sneak_commit(&dir, pod.base(), &[("leak.txt", &key_line)]);
    let repo = Repository::open(&dir).expect("open");
    let tree = repo
        .find_commit(clean)
        .and_then(|c| c.tree())
        .expect("tree");
    let me = Signature::now("mallory", "m@example.com").expect("sig");
    let parent = repo.find_commit(hidden).expect("hidden");
    let on_top = repo
        .commit(None, &me, &me, "clean again\n", &tree, &[&parent])
        .expect("commit");
    let mut forged = pod.report();
    forged.commit = Some(on_top.to_string());
    pod.write_report(&serde_json::to_vec(&forged).expect("json"));
    let result = pod.push().await;
    assert_eq!(result.outcome, ResultOutcome::Succeeded, "{result:?}");
    let upstream = pod.upstream.repo();
    let pushed = upstream
        .find_commit(pod.upstream.branch_tip(BRANCH).expect("pushed"))
        .expect("commit");
    assert_eq!(pushed.parent_ids().collect::<Vec<_>>(), [pod.base()]);
    assert!(
        upstream.find_commit(hidden).is_err(),
        "the hidden commit stayed behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unreadable_reports_and_plans_with_commits_push_nothing() {
    let pod = Pod::new("autonomous", json!([])).await;
    pod.model.script(change_steps());
    pod.clone_and_work().await;
    for (bad, expected) in [
        (&b"{not json"[..], "no readable report"),
        (&[b'x'; 70_000][..], "no readable report"),
        (
            br#"{"version":1,"outcome":"succeeded","commit":"0000000000000000000000000000000000000000"}"#,
            "cannot read the work step's change",
        ),
        (br#"{"version":1,"outcome":"succeeded"}"#, "without a commit"),
    ] {
        pod.write_report(bad);
        let result = pod.push().await;
        assert_eq!(result.outcome, ResultOutcome::Failed, "{result:?}");
        assert!(
            result.reason.as_deref().is_some_and(|r| r.contains(expected)),
            "{expected}: {result:?}"
        );
    }
    assert_eq!(pod.upstream.branch_tip(BRANCH), None);

    let plan = Pod::new("control", json!([])).await;
    plan.model.script(vec![Step::ToolCalls(vec![(
        "finish".into(),
        json!({"summary": "planned", "report": "1. do it"}),
    )])]);
    let report = plan.clone_and_work().await;
    assert_eq!(report.outcome, ResultOutcome::PlanReady);
    let mut forged = report.clone();
    forged.outcome = ResultOutcome::Succeeded;
    forged.commit = Some(plan.base().to_string());
    plan.write_report(&serde_json::to_vec(&forged).expect("json"));
    let result = plan.push().await;
    assert_eq!(result.outcome, ResultOutcome::Failed, "{result:?}");
    plan.write_report(&serde_json::to_vec(&report).expect("json"));
    let result = plan.push().await;
    assert_eq!(result.outcome, ResultOutcome::PlanReady);
    assert_eq!(result.report.as_deref(), Some("1. do it"));
    assert_eq!(plan.upstream.branch_tip(BRANCH), None, "plans push nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_clone_writes_the_attempts_result_and_work_without_a_gateway_reports_why() {
    let pod = Pod::new("autonomous", json!([])).await;
    fs::remove_dir_all(&pod.upstream.bare).expect("remove upstream");
    let args = pod.args.clone();
    let failed = blocking(move || steps::clone::run(&args).expect("wrote")).await;
    let result = failed.expect_err("no repository, no clone");
    assert_eq!(result.outcome, ResultOutcome::Failed);
    let written = fs::read_to_string(&pod.args.termination_log).expect("log");
    assert_eq!(AgentResult::parse(&written).expect("a result"), *result);

    let mut args = pod.args.clone();
    args.gateway_url = None;
    let report = blocking(move || steps::work::run(&args).expect("wrote")).await;
    assert_eq!(report.outcome, ResultOutcome::Failed);
    assert!(
        report
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("gateway")),
        "{report:?}"
    );
}

/// A change job that changes nothing: a follow-up's findings (its summary) become the
/// result's reason, which the controller posts on the pull request; any other run says it
/// changed nothing and keeps the summary beside. Nothing is pushed either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_follow_up_that_changes_nothing_reports_its_findings() {
    let findings = "The change has tests for every branch; nothing to add.";
    let finish = || {
        vec![Step::ToolCalls(vec![(
            "finish".into(),
            json!({"summary": findings}),
        )])]
    };

    let pod = Pod::new("autonomous", json!([])).await;
    pod.model.script(finish());
    assert_eq!(pod.clone_and_work().await.outcome, ResultOutcome::NoChanges);
    let result = pod.push().await;
    assert_eq!(result.outcome, ResultOutcome::NoChanges);
    assert_eq!(
        result.reason.as_deref(),
        Some(countersign_crds::result::NOTHING_CHANGED)
    );
    assert_eq!(result.summary.as_deref(), Some(findings));

    // The same as a follow-up: it checks out the pull request's branch and extends it.
    let pod = Pod::new("autonomous", json!([])).await;
    {
        let repo = pod.upstream.repo();
        let main = repo.find_commit(pod.base()).expect("main");
        repo.branch(BRANCH, &main, false)
            .expect("the pull request's branch");
    }
    let task_path = pod.args.task_file();
    let mut task: serde_json::Value =
        serde_json::from_slice(&fs::read(&task_path).expect("task")).expect("json");
    task["extendBranch"] = json!(true);
    fs::write(&task_path, task.to_string()).expect("task");
    pod.model.script(finish());
    assert_eq!(pod.clone_and_work().await.outcome, ResultOutcome::NoChanges);
    let result = pod.push().await;
    assert_eq!(result.outcome, ResultOutcome::NoChanges);
    assert_eq!(result.reason.as_deref(), Some(findings));
    assert_eq!(result.summary.as_deref(), Some(findings));
    assert_eq!(
        pod.upstream.branch_tip(BRANCH),
        Some(pod.base()),
        "nothing pushed"
    );
}
