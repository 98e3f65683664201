//! Every example payload of `@octokit/webhooks-examples` (real GitHub deliveries, all events),
//! signed and sent to the real bot: each gets a 2xx and none breaks a worker; the trigger,
//! comment, pull-request and review examples produce the expected Kubernetes objects.
//!
//! The fixtures are fetched by `scripts/fixtures` (npm) into `tests/fixtures/node_modules`.
//! Locally a missing fixture set skips with a note; with `CI=true` it fails the run.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use axum::http::StatusCode;
use countersign_crds::keys::{CREATED_BY_DELIVERY_ANNOTATION, LAST_DELIVERY_ANNOTATION};
use countersign_crds::names::gate_name;
use countersign_crds::{Agent, AgentRun, ApprovalGate, Project};
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{Delivery, FakeGitHub};
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tower::ServiceExt;

const NS: &str = "examples";
const SECRET: &str = "octokit-examples";
const WAIT: Duration = Duration::from_secs(60);

/// `(event, payload)` of every example, in the package's order.
fn examples() -> Option<Vec<(String, Value)>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
        "../tests/fixtures/node_modules/@octokit/webhooks-examples/api.github.com/index.json",
    );
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but the webhook examples are missing ({}: {error}); run scripts/fixtures",
                path.display()
            );
            eprintln!(
                "SKIPPED: {} is missing ({error}); run scripts/fixtures to fetch it",
                path.display()
            );
            return None;
        }
    };
    let index: Vec<Value> = serde_json::from_str(&text).expect("index.json is JSON");
    let mut out = Vec::new();
    for event in &index {
        let name = event["name"].as_str().expect("event name").to_owned();
        for example in event["examples"].as_array().expect("examples") {
            out.push((name.clone(), example.clone()));
        }
    }
    assert!(out.len() > 300, "only {} examples", out.len());
    Some(out)
}

struct World {
    api: TestCluster,
    _github: FakeGitHub,
    bot: common::RunningBot,
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
            "metadata": {"name": "hello-world", "namespace": NS},
            "spec": {
                "repository": {"owner": "Codertocat", "name": "Hello-World"},
                "triggers": {"labels": [{"label": "bug", "agent": {"name": "backend"}}]}
            }
        }))
        .expect("project");
        Api::<Project>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &project)
            .await
            .expect("project created");
        let agent: Agent = serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1",
            "kind": "Agent",
            "metadata": {"name": "backend", "namespace": NS},
            "spec": {"role": "backend", "providers": [{"name": "p", "kind": "openai",
                     "baseUrl": "http://vllm:8000/v1", "model": "m"}]}
        }))
        .expect("agent");
        Api::<Agent>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &agent)
            .await
            .expect("agent created");
        let github = FakeGitHub::start().await.expect("fake GitHub");
        {
            let mut w = github.world();
            w.install(1, "Codertocat", &["Hello-World"]);
            w.set_permission("Codertocat/Hello-World", "Codertocat", "admin");
        }
        let bot = common::start_bot(client, &github, &[SECRET]);
        let world = World {
            api,
            _github: github,
            bot,
        };
        tokio::time::timeout(WAIT, async {
            loop {
                let request = axum::http::Request::get("/readyz")
                    .body(axum::body::Body::empty())
                    .expect("request");
                let ready = world
                    .bot
                    .router
                    .clone()
                    .oneshot(request)
                    .await
                    .expect("answer");
                if ready.status() == StatusCode::OK {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("ready");
        world
    }

    /// Sends one example; returns its delivery id, the status and whether it was queued for
    /// handling (rather than answered as an event or action Countersign ignores).
    async fn send(&mut self, event: &str, payload: &Value) -> (String, StatusCode, bool) {
        let before = self.queued();
        let delivery = Delivery::from_payload(event, payload, SECRET).expect("delivery");
        let request = delivery.to_request("/webhook").expect("request");
        let status = self
            .bot
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("answer")
            .status();
        (delivery.id.clone(), status, self.queued() > before)
    }

    fn queued(&self) -> u64 {
        let prefix = "countersign_bot_webhook_deliveries_total{";
        self.bot
            .metrics
            .encode()
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains("outcome=\"queued\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Waits until every queued delivery was handled.
    async fn settle(&self) {
        let want = self.queued();
        tokio::time::timeout(WAIT, async {
            while common::handled(&self.bot.metrics, None) < want {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{want} deliveries handled in time:\n{}",
                self.bot.metrics.encode()
            )
        });
    }

    async fn runs(&self) -> Vec<AgentRun> {
        Api::<AgentRun>::namespaced(self.api.client(), NS)
            .list(&ListParams::default())
            .await
            .expect("runs")
            .items
    }

    async fn gate(&self, number: u64) -> Option<ApprovalGate> {
        Api::<ApprovalGate>::namespaced(self.api.client(), NS)
            .get_opt(&gate_name("hello-world", number))
            .await
            .expect("gate")
    }
}

fn of<'a>(all: &'a [(String, Value)], event: &str, action: Option<&str>) -> Vec<&'a Value> {
    all.iter()
        .filter(|(e, p)| e == event && action.is_none_or(|a| p["action"] == a))
        .map(|(_, p)| p)
        .collect()
}

#[tokio::test]
async fn every_example_is_accepted_and_handled_without_failures() {
    let Some(all) = examples() else { return };
    let mut w = World::start().await;
    let mut refused = Vec::new();
    for (event, payload) in &all {
        let (_, status, _) = w.send(event, payload).await;
        if !status.is_success() {
            refused.push(format!("{event}.{}: {status}", payload["action"]));
        }
    }
    assert!(refused.is_empty(), "refused: {refused:#?}");
    w.settle().await;
    let text = w.bot.metrics.encode();
    assert!(
        !text.contains("countersign_bot_delivery_failures_total{"),
        "handling failures:\n{text}"
    );
    assert!(
        !text.contains("outcome=\"unparseable\""),
        "examples of handled events that did not parse:\n{text}"
    );
}

#[tokio::test]
async fn label_examples_create_one_agent_run() {
    let Some(all) = examples() else { return };
    let labeled = of(&all, "issues", Some("labeled"));
    assert!(!labeled.is_empty());
    let mut w = World::start().await;
    let (first, status, queued) = w.send("issues", labeled[0]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(queued);
    for payload in &labeled[1..] {
        w.send("issues", payload).await;
    }
    w.settle().await;
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        runs[0].annotations().get(CREATED_BY_DELIVERY_ANNOTATION),
        Some(&first)
    );
    assert_eq!(runs[0].agent_name(), Some("backend"));
}

#[tokio::test]
async fn comment_examples_hold_no_command_and_a_command_in_one_starts_a_run() {
    let Some(all) = examples() else { return };
    let created = of(&all, "issue_comment", Some("created"));
    assert!(!created.is_empty());
    let mut w = World::start().await;
    for payload in &created {
        let (_, status, queued) = w.send("issue_comment", payload).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        assert!(queued, "issue_comment.created is handled");
    }
    w.settle().await;
    assert!(w.runs().await.is_empty(), "prose is not a command");
    let mut command = created[0].clone();
    command["comment"]["body"] = json!("Thanks!\n\n/countersign run backend please add a test");
    command["comment"]["id"] = json!(987_654);
    w.send("issue_comment", &command).await;
    w.settle().await;
    let runs = w.runs().await;
    assert_eq!(runs.len(), 1, "{runs:?}");
}

#[tokio::test]
async fn pull_request_and_review_examples_apply_the_gate_each_time() {
    let Some(all) = examples() else { return };
    let mut prs = of(&all, "pull_request", None)
        .into_iter()
        .map(|p| ("pull_request", p))
        .collect::<Vec<_>>();
    prs.extend(
        of(&all, "pull_request_review", None)
            .into_iter()
            .map(|p| ("pull_request_review", p)),
    );
    assert!(prs.len() > 20, "{}", prs.len());
    let mut w = World::start().await;
    let mut applied = Vec::new();
    for (event, payload) in prs {
        let (id, status, queued) = w.send(event, payload).await;
        assert_eq!(
            status,
            StatusCode::ACCEPTED,
            "{event}.{}",
            payload["action"]
        );
        if !queued {
            // assigned, locked, review_requested, …: not events a gate depends on.
            continue;
        }
        applied.push(format!(
            "{event}.{}",
            payload["action"].as_str().unwrap_or("")
        ));
        w.settle().await;
        let number = payload["pull_request"]["number"].as_u64().expect("number");
        let gate = w
            .gate(number)
            .await
            .unwrap_or_else(|| panic!("{event}.{} created no gate", payload["action"]));
        assert_eq!(
            gate.annotations().get(LAST_DELIVERY_ANNOTATION),
            Some(&id),
            "{event}.{} nudged the gate",
            payload["action"]
        );
        assert_eq!(gate.spec.pull_request_number, number);
        assert_eq!(
            gate.spec.author.login,
            payload["pull_request"]["user"]["login"]
                .as_str()
                .expect("login")
        );
    }
    for expected in [
        "pull_request.opened",
        "pull_request.synchronize",
        "pull_request.reopened",
        "pull_request.ready_for_review",
        "pull_request.labeled",
        "pull_request.unlabeled",
        "pull_request.closed",
        "pull_request_review.submitted",
        "pull_request_review.dismissed",
    ] {
        assert!(
            applied.iter().any(|a| a == expected),
            "{expected} not handled: {applied:?}"
        );
    }
}
