//! The bot through its real entry points: signed deliveries into the HTTP router, handled by
//! the workers against the fake apiserver and the fake GitHub.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_crds::keys::LAST_DELIVERY_ANNOTATION as LAST_DELIVERY;
use countersign_crds::{Agent, AgentRun, Project};
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{Delivery, FakeGitHub, Fault, User};
use http_body_util::BodyExt;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tower::ServiceExt;

const NS: &str = "team-a";
const REPO: &str = "octo-org/widgets";
const INSTALLATION: u64 = 77;
const SECRET: &str = "current-secret";
const OLD_SECRET: &str = "previous-secret";
const WAIT: Duration = Duration::from_secs(20);

struct World {
    api: TestCluster,
    github: FakeGitHub,
    router: Router,
    metrics: std::sync::Arc<countersign_bot::metrics::Metrics>,
    _bot: tokio::task::JoinHandle<()>,
    alice: User,
    rita: User,
    issue: u64,
}

fn bot_user() -> User {
    User::bot(99, &common::bot_login())
}

impl World {
    async fn start() -> World {
        // A Kubernetes of this test alone: the bot watches every namespace.

        let api = TestCluster::start_dedicated().await.expect("test cluster");

        api.install_crds().await.expect("CRDs");

        api.create_named_namespace(NS, &[])
            .await
            .expect("namespace");
        let client = api.client();
        let project: Project = serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1",
            "kind": "Project",
            "metadata": {"name": "widgets", "namespace": NS},
            "spec": {
                "repository": {"owner": "octo-org", "name": "widgets"},
                "triggers": {
                    "labels": [{"label": "ai:backend", "agent": {"name": "backend"}}],
                    "minPermission": "write"
                },
                "roles": [
                    {"role": "developer", "teams": [{"slug": "devs"}]},
                    {"role": "tech_lead", "users": [{"login": "lead", "id": 1010}]}
                ]
            }
        }))
        .expect("project");
        Api::<Project>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &project)
            .await
            .expect("create project");
        let agent: Agent = serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "backend", "namespace": NS},
            "spec": {
                "role": "backend",
                "providers": [{"name": "local", "kind": "openai",
                               "baseUrl": "http://vllm:8000/v1", "model": "m"}]
            }
        }))
        .expect("agent");
        Api::<Agent>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &agent)
            .await
            .expect("create agent");

        let github = FakeGitHub::start().await.expect("fake GitHub");
        let alice = User::new(1, "alice");
        let rita = User::new(2, "rita");
        let issue = {
            let mut w = github.world();
            w.install(INSTALLATION, "octo-org", &["widgets"]);
            w.set_permission(REPO, "alice", "write");
            w.set_permission(REPO, "rita", "read");
            w.add_team_member("octo-org", "devs", alice.clone());
            w.open_issue(REPO, "Add retries", "Please add retries.", &alice)
        };
        let bot = common::start_bot(client, &github, &[OLD_SECRET, SECRET]);
        let world = World {
            api,
            github,
            router: bot.router,
            metrics: bot.metrics,
            _bot: bot.workers,
            alice,
            rita,
            issue,
        };
        world.wait_ready().await;
        world
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = self.router.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    async fn wait_ready(&self) {
        tokio::time::timeout(WAIT, async {
            while self.get("/readyz").await.0 != StatusCode::OK {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("ready in time");
    }

    async fn deliver(&self, delivery: &Delivery) -> StatusCode {
        let request = delivery.to_request("/webhook").expect("request");
        let response = self.router.clone().oneshot(request).await.expect("answer");
        response.status()
    }

    fn delivery(&self, event: &str, payload: &serde_json::Value) -> Delivery {
        Delivery::from_payload(event, payload, SECRET).expect("delivery")
    }

    fn handled(&self, event: &str) -> u64 {
        common::handled(&self.metrics, Some(event))
    }

    async fn wait_handled(&self, event: &str, n: u64) {
        tokio::time::timeout(WAIT, async {
            while self.handled(event) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{n} {event} deliveries handled in time; metrics:\n{}",
                self.metrics.encode()
            )
        });
    }

    async fn runs(&self) -> Vec<AgentRun> {
        Api::<AgentRun>::namespaced(self.api.client(), NS)
            .list(&ListParams::default())
            .await
            .expect("list runs")
            .items
    }

    fn bot_comments(&self) -> Vec<String> {
        self.github
            .world()
            .comments_on(REPO, self.issue)
            .iter()
            .filter(|c| c.author == bot_user().login)
            .map(|c| c.body.clone())
            .collect()
    }
}

#[tokio::test]
async fn a_trigger_label_creates_one_agent_run_even_when_delivered_a_thousand_times() {
    let w = World::start().await;
    let payload = w
        .github
        .world()
        .label_issue(REPO, w.issue, "ai:backend", &w.alice);
    let delivery = w.delivery("issues", &payload);
    assert_eq!(w.deliver(&delivery).await, StatusCode::ACCEPTED);
    for _ in 0..999 {
        assert_eq!(w.deliver(&delivery).await, StatusCode::OK, "a redelivery");
    }
    w.wait_handled("issues", 1).await;
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(run.agent_name(), Some("backend"));
    assert_eq!(
        run.labels()
            .get("countersign.dev/project")
            .map(String::as_str),
        Some("widgets")
    );
    assert_eq!(
        run.labels()
            .get("countersign.dev/issue")
            .map(String::as_str),
        Some("1")
    );

    // A second delivery of the same label (a new id: someone re-added it) does not start a
    // second run while the first is active.
    let again = w
        .github
        .world()
        .label_issue(REPO, w.issue, "ai:backend", &w.alice);
    assert_eq!(
        w.deliver(&w.delivery("issues", &again)).await,
        StatusCode::ACCEPTED
    );
    w.wait_handled("issues", 2).await;
    assert_eq!(w.runs().await.len(), 1);
}

#[tokio::test]
async fn a_label_by_a_read_only_user_starts_nothing_and_says_why() {
    let w = World::start().await;
    let payload = w
        .github
        .world()
        .label_issue(REPO, w.issue, "ai:backend", &w.rita);
    assert_eq!(
        w.deliver(&w.delivery("issues", &payload)).await,
        StatusCode::ACCEPTED
    );
    w.wait_handled("issues", 1).await;
    assert!(w.runs().await.is_empty());
    let comments = w.bot_comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains("@rita"), "{}", comments[0]);
}

#[tokio::test]
async fn removing_the_label_cancels_the_run() {
    let w = World::start().await;
    let labeled = w
        .github
        .world()
        .label_issue(REPO, w.issue, "ai:backend", &w.alice);
    w.deliver(&w.delivery("issues", &labeled)).await;
    w.wait_handled("issues", 1).await;
    let mut unlabeled = labeled.clone();
    unlabeled["action"] = json!("unlabeled");
    assert_eq!(
        w.deliver(&w.delivery("issues", &unlabeled)).await,
        StatusCode::ACCEPTED
    );
    w.wait_handled("issues", 2).await;
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1);
    assert!(runs[0].spec.cancel_requested, "{:?}", runs[0].spec);
}

/// Alice comments `body` on the issue; the AgentRuns then (exactly one, the one it created).
async fn runs_from_alices_comment(w: &World, body: &str) -> Vec<AgentRun> {
    let payload = w.github.world().comment(REPO, w.issue, body, &w.alice);
    assert_eq!(
        w.deliver(&w.delivery("issue_comment", &payload)).await,
        StatusCode::ACCEPTED
    );
    w.wait_handled("issue_comment", 1).await;
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs
}

#[tokio::test]
async fn a_run_command_creates_a_run_with_the_instructions() {
    let w = World::start().await;
    let runs =
        runs_from_alices_comment(&w, "/countersign run backend keep the public API unchanged")
            .await;
    let task = serde_json::to_string(&runs[0].spec).expect("spec json");
    assert!(task.contains("keep the public API unchanged"), "{task}");
    assert!(!runs[0].spec.breakdown, "a run makes a change");
}

/// `/countersign plan <agent>` starts a run of that Agent that proposes a breakdown (any
/// Agent, not only an architect), with the person asking as its requester.
#[tokio::test]
async fn a_plan_command_creates_a_run_that_proposes_a_breakdown() {
    let w = World::start().await;
    let runs = runs_from_alices_comment(&w, "/countersign plan backend split it by layer").await;
    let spec = &runs[0].spec;
    assert!(spec.breakdown, "{spec:?}");
    assert_eq!(spec.task.source, countersign_crds::TaskSource::Comment);
    assert_eq!(
        spec.task.instructions.as_deref(),
        Some("split it by layer"),
        "{spec:?}"
    );
    assert_eq!(
        spec.task.requested_by.as_ref().map(|u| u.login.as_str()),
        Some(w.alice.login.as_str())
    );
}

#[tokio::test]
async fn commands_that_must_do_nothing_do_nothing() {
    let w = World::start().await;
    let bodies = [
        // Inside a code block.
        (
            w.alice.clone(),
            "```\n/countersign run backend\n```".to_owned(),
        ),
        // Inside a quote.
        (w.alice.clone(), "> /countersign run backend".to_owned()),
        // Countersign's own comment.
        (bot_user(), "/countersign run backend".to_owned()),
    ];
    for (author, body) in &bodies {
        let payload = w.github.world().comment(REPO, w.issue, body, author);
        assert_eq!(
            w.deliver(&w.delivery("issue_comment", &payload)).await,
            StatusCode::ACCEPTED
        );
    }
    // An edit that keeps an old command and adds only prose.
    let mut edited = w.github.world().comment(
        REPO,
        w.issue,
        "/countersign run backend\n\nalso: thanks!",
        &w.alice,
    );
    edited["action"] = json!("edited");
    edited["changes"] = json!({"body": {"from": "/countersign run backend"}});
    assert_eq!(
        w.deliver(&w.delivery("issue_comment", &edited)).await,
        StatusCode::ACCEPTED
    );
    w.wait_handled("issue_comment", 4).await;
    assert!(w.runs().await.is_empty(), "{:?}", w.runs().await);
    let text = w.metrics.encode();
    assert!(
        text.contains(
            "countersign_bot_delivery_outcomes_total{event=\"issue_comment\",outcome=\"ignored\"} 4"
        ),
        "{text}"
    );
    // Only the comment the test posted as the bot; no answers.
    assert_eq!(w.bot_comments(), ["/countersign run backend"]);
}

#[tokio::test]
async fn an_approval_command_by_a_non_member_is_denied_visibly() {
    let w = World::start().await;
    let payload = w.github.world().comment(REPO, w.issue, "/approve", &w.rita);
    w.deliver(&w.delivery("issue_comment", &payload)).await;
    w.wait_handled("issue_comment", 1).await;
    assert!(w.runs().await.is_empty());
    let text = w.metrics.encode();
    assert!(
        text.contains(
            "countersign_bot_delivery_outcomes_total{event=\"issue_comment\",outcome=\"denied\"} 1"
        ),
        "{text}"
    );
    let comments = w.bot_comments();
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].contains("@rita"), "{}", comments[0]);
}

#[tokio::test]
async fn github_outages_during_handling_are_retried_without_losing_the_trigger() {
    let w = World::start().await;
    w.github.fail_next("/permission", Fault::Status(502), 2);
    w.github.fail_next(
        "/access_tokens",
        Fault::SecondaryRateLimit {
            retry_after_secs: 1,
        },
        1,
    );
    let payload = w
        .github
        .world()
        .label_issue(REPO, w.issue, "ai:backend", &w.alice);
    assert_eq!(
        w.deliver(&w.delivery("issues", &payload)).await,
        StatusCode::ACCEPTED
    );
    w.wait_handled("issues", 1).await;
    assert_eq!(w.runs().await.len(), 1);
    let statuses: Vec<u16> = w
        .github
        .calls_to("/permission")
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [502, 502, 200]);
}

#[tokio::test]
async fn a_rotated_secret_and_the_old_one_are_both_accepted_but_nothing_else() {
    let w = World::start().await;
    let payload = json!({"zen": "Design for failure.", "hook_id": 1});
    let old = Delivery::from_payload("ping", &payload, OLD_SECRET).expect("delivery");
    assert_eq!(w.deliver(&old).await, StatusCode::OK);
    let new = Delivery::from_payload("ping", &payload, SECRET).expect("delivery");
    assert_eq!(w.deliver(&new).await, StatusCode::OK);
    let wrong = Delivery::from_payload("ping", &payload, "guess").expect("delivery");
    assert_eq!(w.deliver(&wrong).await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn probes_and_metrics_are_served() {
    let w = World::start().await;
    assert_eq!(w.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(w.get("/readyz").await.0, StatusCode::OK);
    let ping = w.delivery("ping", &json!({"zen": "z", "hook_id": 1}));
    w.deliver(&ping).await;
    let (status, text) = w.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(
            "countersign_bot_webhook_deliveries_total{event=\"ping\",outcome=\"ping\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("countersign_bot_webhook_request_seconds"),
        "{text}"
    );
}

fn repository_json() -> serde_json::Value {
    json!({"id": 5, "name": "widgets", "full_name": REPO, "owner": {"login": "octo-org"}})
}

fn pull_request_payload(action: &str, number: u64, head_sha: &str) -> serde_json::Value {
    json!({
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "title": "Add retries",
            "user": {"id": 1, "login": "alice", "type": "User"},
            "head": {"ref": "feature/retries", "sha": head_sha, "repo": {"full_name": REPO}},
            "base": {"ref": "main", "sha": "b".repeat(40), "repo": {"full_name": REPO}},
            "state": "open",
            "draft": false,
            "merged": false,
            "labels": []
        },
        "repository": repository_json(),
        "sender": {"id": 1, "login": "alice", "type": "User"},
        "installation": {"id": INSTALLATION}
    })
}

impl World {
    async fn gate(&self, name: &str) -> Option<countersign_crds::ApprovalGate> {
        Api::<countersign_crds::ApprovalGate>::namespaced(self.api.client(), NS)
            .get_opt(name)
            .await
            .expect("get gate")
    }

    async fn project(&self) -> Project {
        Api::<Project>::namespaced(self.api.client(), NS)
            .get("widgets")
            .await
            .expect("get project")
    }

    /// Delivers `payload` as `event`, waits until it is handled and returns the delivery id.
    async fn deliver_and_wait(&self, event: &str, payload: &serde_json::Value) -> String {
        let before = self.handled(event);
        let delivery = self.delivery(event, payload);
        assert_eq!(
            self.deliver(&delivery).await,
            StatusCode::ACCEPTED,
            "{event}"
        );
        self.wait_handled(event, before + 1).await;
        delivery.id.clone()
    }
}

fn annotation(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key).cloned())
}

#[tokio::test]
async fn merge_queue_and_check_reruns_nudge_the_gate_of_each_pull_request() {
    let w = World::start().await;
    let opened = w
        .deliver_and_wait(
            "pull_request",
            &pull_request_payload("opened", 12, &"a".repeat(40)),
        )
        .await;
    let gate = w.gate("widgets-pr-12").await.expect("the PR got a gate");
    assert_eq!(annotation(&gate.metadata, LAST_DELIVERY), Some(opened));

    let queue_sha = "c".repeat(40);
    let merge_group = json!({
        "action": "checks_requested",
        "merge_group": {
            "head_sha": queue_sha,
            "head_ref": "refs/heads/gh-readonly-queue/main/pr-12-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "base_ref": "refs/heads/main",
            "base_sha": "b".repeat(40)
        },
        "repository": repository_json(),
        "sender": {"id": 1, "login": "alice", "type": "User"},
        "installation": {"id": INSTALLATION}
    });
    let queued = w.deliver_and_wait("merge_group", &merge_group).await;
    let gate = w.gate("widgets-pr-12").await.expect("gate");
    assert_eq!(annotation(&gate.metadata, LAST_DELIVERY), Some(queued));
    assert_eq!(
        annotation(&gate.metadata, "countersign.dev/merge-group-sha"),
        Some(queue_sha)
    );

    let check_run = |name: &str, app_id: u64| {
        json!({
            "action": "rerequested",
            "check_run": {
                "id": 900,
                "name": name,
                "head_sha": "a".repeat(40),
                "app": {"id": app_id},
                "pull_requests": [{"number": 12}]
            },
            "repository": repository_json(),
            "sender": {"id": 1, "login": "alice", "type": "User"},
            "installation": {"id": INSTALLATION}
        })
    };
    let rerun = w
        .deliver_and_wait(
            "check_run",
            &check_run(
                "countersign/approval",
                countersign_testkit::github::TEST_APP_ID,
            ),
        )
        .await;
    let gate = w.gate("widgets-pr-12").await.expect("gate");
    assert_eq!(
        annotation(&gate.metadata, LAST_DELIVERY),
        Some(rerun.clone())
    );

    // Another App's check of the same name, and our App's other checks, are not ours to rerun.
    w.deliver_and_wait("check_run", &check_run("countersign/approval", 1))
        .await;
    w.deliver_and_wait(
        "check_run",
        &check_run("ci/test", countersign_testkit::github::TEST_APP_ID),
    )
    .await;
    let gate = w.gate("widgets-pr-12").await.expect("gate");
    assert_eq!(annotation(&gate.metadata, LAST_DELIVERY), Some(rerun));

    // A merge group of a pull request without a gate creates nothing.
    let mut other = merge_group.clone();
    other["merge_group"]["head_ref"] =
        json!("refs/heads/gh-readonly-queue/main/pr-99-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    w.deliver_and_wait("merge_group", &other).await;
    assert!(w.gate("widgets-pr-99").await.is_none());
}

#[tokio::test]
async fn installation_changes_nudge_the_projects_of_the_repositories() {
    let w = World::start().await;
    let before = annotation(&w.project().await.metadata, LAST_DELIVERY);
    assert_eq!(before, None);

    let added = json!({
        "action": "added",
        "installation": {"id": INSTALLATION, "account": {"login": "octo-org"}},
        "repositories_added": [{"id": 5, "full_name": REPO}],
        "repositories_removed": [],
        "sender": {"id": 1, "login": "alice", "type": "User"}
    });
    let id = w
        .deliver_and_wait("installation_repositories", &added)
        .await;
    assert_eq!(
        annotation(&w.project().await.metadata, LAST_DELIVERY),
        Some(id)
    );

    // Installed on all repositories of the account: no list, every Project of the account.
    let created = json!({
        "action": "created",
        "installation": {"id": INSTALLATION, "account": {"login": "octo-org"}},
        "sender": {"id": 1, "login": "alice", "type": "User"}
    });
    let id = w.deliver_and_wait("installation", &created).await;
    assert_eq!(
        annotation(&w.project().await.metadata, LAST_DELIVERY),
        Some(id.clone())
    );

    // Another account's installation leaves the Project alone.
    let elsewhere = json!({
        "action": "deleted",
        "installation": {"id": 5000, "account": {"login": "someone-else"}},
        "repositories": [{"id": 8, "full_name": "someone-else/widgets"}],
        "sender": {"id": 3, "login": "eve", "type": "User"}
    });
    w.deliver_and_wait("installation", &elsewhere).await;
    assert_eq!(
        annotation(&w.project().await.metadata, LAST_DELIVERY),
        Some(id)
    );
}

#[tokio::test]
async fn replay_sends_recorded_deliveries_to_a_running_bot() {
    let w = World::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let server = tokio::spawn(axum::serve(listener, w.router.clone()).into_future());

    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).expect("write secret");
    let payload = w
        .github
        .world()
        .label_issue(REPO, w.issue, "ai:backend", &w.alice);
    // A delivery as GitHub's "Recent deliveries" API returns it, and a bare payload file.
    let recorded = dir.path().join("delivery.json");
    std::fs::write(
        &recorded,
        serde_json::to_vec(&json!({
            "guid": "recorded-guid-1",
            "event": "issues",
            "action": "labeled",
            "request": {"headers": {"X-GitHub-Event": "issues"}, "payload": payload}
        }))
        .expect("json"),
    )
    .expect("write delivery");
    let bare = dir.path().join("issues.labeled.json");
    std::fs::write(&bare, serde_json::to_vec(&payload).expect("json")).expect("write payload");

    let args = |files: Vec<std::path::PathBuf>, keep: bool, secret: &std::path::Path| {
        countersign_bot::replay::ReplayArgs {
            files,
            url: format!("http://{address}"),
            secret_file: secret.to_path_buf(),
            event: None,
            keep_delivery_id: keep,
        }
    };
    tokio::time::timeout(
        WAIT,
        countersign_bot::replay::run(args(vec![recorded.clone(), bare], true, &secret_file)),
    )
    .await
    .expect("replay in time")
    .expect("both deliveries accepted");
    w.wait_handled("issues", 2).await;
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1, "a replayed label starts one run: {runs:?}");
    assert_eq!(
        runs[0]
            .annotations()
            .get("countersign.dev/created-by-delivery")
            .map(String::as_str),
        Some("recorded-guid-1")
    );

    // Replaying with the recorded id again is a duplicate (200), still a success.
    tokio::time::timeout(
        WAIT,
        countersign_bot::replay::run(args(vec![recorded.clone()], true, &secret_file)),
    )
    .await
    .expect("replay in time")
    .expect("a duplicate is answered 200");

    // Signed with the wrong secret the bot refuses, and replay says so.
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-secret").expect("write");
    let error = tokio::time::timeout(
        WAIT,
        countersign_bot::replay::run(args(vec![recorded], false, &wrong)),
    )
    .await
    .expect("replay in time")
    .expect_err("a refused delivery fails the replay");
    assert!(error.to_string().contains("1 of 1"), "{error:#}");
    server.abort();
}

#[tokio::test]
async fn pull_requests_and_reviews_from_the_world_keep_the_gate_current() {
    let w = World::start().await;
    let opened = w.github.world().open_pull_request(
        REPO,
        "Retry webhooks",
        "feature/retries",
        vec![countersign_testkit::github::ChangedFile::modified(
            "src/lib.rs",
            10,
            2,
        )],
        &w.alice,
    );
    let number = opened["number"].as_u64().expect("number");
    let id = w.deliver_and_wait("pull_request", &opened).await;
    let name = format!("widgets-pr-{number}");
    let gate = w.gate(&name).await.expect("gate");
    assert_eq!(annotation(&gate.metadata, LAST_DELIVERY), Some(id));
    assert!(!gate.spec.ai_generated, "a person's branch");
    assert_eq!(gate.spec.author.id, Some(w.alice.id));

    let review =
        w.github
            .world()
            .submit_review(REPO, number, &User::new(1010, "lead"), "approved", "ok");
    let id = w.deliver_and_wait("pull_request_review", &review).await;
    let gate = w.gate(&name).await.expect("gate");
    assert_eq!(annotation(&gate.metadata, LAST_DELIVERY), Some(id));

    let pushed = w
        .github
        .world()
        .push_to_pull_request(REPO, number, Vec::new(), &w.alice);
    let id = w.deliver_and_wait("pull_request", &pushed).await;
    let gate = w.gate(&name).await.expect("gate");
    assert_eq!(annotation(&gate.metadata, LAST_DELIVERY), Some(id));
}
