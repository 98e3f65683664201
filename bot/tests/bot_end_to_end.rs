//! The bot through its real entry points: signed deliveries into the HTTP router, handled by
//! the workers against the fake apiserver and the fake GitHub.

mod common;

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use countersign_crds::{Agent, AgentRun, Project};
use countersign_testkit::apiserver::FakeApiServer;
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
    api: FakeApiServer,
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
        let api = FakeApiServer::start().await.expect("fake apiserver");
        for crd in countersign_crds::all() {
            api.install_crd(&crd).expect("install CRD");
        }
        api.create_namespace(NS).expect("namespace");
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
    assert_eq!(run.spec.agent_ref.name, "backend");
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

#[tokio::test]
async fn a_run_command_creates_a_run_with_the_instructions() {
    let w = World::start().await;
    let payload = w.github.world().comment(
        REPO,
        w.issue,
        "/countersign run backend keep the public API unchanged",
        &w.alice,
    );
    assert_eq!(
        w.deliver(&w.delivery("issue_comment", &payload)).await,
        StatusCode::ACCEPTED
    );
    w.wait_handled("issue_comment", 1).await;
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let task = serde_json::to_string(&runs[0].spec).expect("spec json");
    assert!(task.contains("keep the public API unchanged"), "{task}");
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
