//! The gateway against the fake apiserver (attempt pods, runs, Agents, Projects, key Secrets
//! and the usage ledger ConfigMaps) and scripted models on loopback: forwarding with the real
//! key, failover within an attempt, streaming passed through, budgets, spend per day across
//! runs and a restart, and tokens refused once their attempt ended or when presented for
//! another attempt.

use std::time::Duration;

use bytes::Bytes;
use countersign_crds::progress::{
    MAX_MILESTONES_PER_ATTEMPT, MilestoneLog, PROGRESS_KEY, PROGRESS_LABEL, progress_name,
};
use countersign_crds::usage::{LEDGER_KEY, UsageLedger, ledger_name};
use countersign_gateway::proxy::Settings;
use countersign_gateway::registry::token_hash;
use countersign_gateway::server::{self, Running};
use countersign_testkit::apiserver::FakeApiServer;
use countersign_testkit::model::{FakeModel, Step};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NS: &str = "team";
const WAIT: Duration = Duration::from_secs(30);
const PRIMARY_KEY: &str = "sk-primary-real-key";
const FALLBACK_KEY: &str = "sk-fallback-real-key";

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("in time")
}

struct World {
    api: FakeApiServer,
    primary: FakeModel,
    fallback: FakeModel,
    gateway: Option<Running>,
}

impl World {
    /// The cluster with an Agent `backend` (providers `primary` then `fallback`, both OpenAI,
    /// and `claude`, Anthropic, on the primary model server) and Project `api`.
    async fn start(agent_limits: Value, project_limits: Value) -> World {
        let api = FakeApiServer::start().await.expect("apiserver");
        for crd in countersign_crds::all() {
            api.install_crd(&crd).expect("crd");
        }
        api.create_namespace(NS).expect("namespace");
        let primary = FakeModel::start().await.expect("model");
        let fallback = FakeModel::start().await.expect("model");
        primary.require_api_key(PRIMARY_KEY);
        fallback.require_api_key(FALLBACK_KEY);
        let world = World {
            api,
            primary,
            fallback,
            gateway: None,
        };
        world
            .create(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "keys", "namespace": NS},
                "stringData": {"primary": PRIMARY_KEY, "fallback": FALLBACK_KEY}}))
            .await;
        world
            .create(json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
                "metadata": {"name": "api", "namespace": NS},
                "spec": {"repository": {"owner": "acme", "name": "api"}, "limits": project_limits}}))
            .await;
        world
            .create(
                json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
                "metadata": {"name": "backend", "namespace": NS},
                "spec": {"role": "backend", "limits": agent_limits, "providers": [
                    {"name": "primary", "kind": "openai", "model": "model-a", "retries": 0,
                     "baseUrl": world.primary.openai_base_url(),
                     "apiKeySecretRef": {"name": "keys", "key": "primary"},
                     "inputPricePerMillion": "10", "outputPricePerMillion": "50"},
                    {"name": "claude", "kind": "anthropic", "model": "claude-x", "retries": 1,
                     "baseUrl": world.primary.anthropic_base_url(),
                     "apiKeySecretRef": {"name": "keys", "key": "primary"}},
                    {"name": "fallback", "kind": "openai", "model": "model-b", "retries": 0,
                     "baseUrl": world.fallback.openai_base_url(),
                     "apiKeySecretRef": {"name": "keys", "key": "fallback"},
                     "inputPricePerMillion": "1", "outputPricePerMillion": "2"}
                ]}}),
            )
            .await;
        world
    }

    async fn create(&self, object: Value) {
        let kind = object["kind"].as_str().expect("kind").to_owned();
        let client = self.api.client();
        let pp = PostParams::default();
        match kind.as_str() {
            "Secret" => Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, NS)
                .create(&pp, &serde_json::from_value(object).expect("secret"))
                .await
                .map(drop),
            "Project" => Api::<countersign_crds::Project>::namespaced(client, NS)
                .create(&pp, &serde_json::from_value(object).expect("project"))
                .await
                .map(drop),
            "Agent" => Api::<countersign_crds::Agent>::namespaced(client, NS)
                .create(&pp, &serde_json::from_value(object).expect("agent"))
                .await
                .map(drop),
            other => panic!("unexpected kind {other}"),
        }
        .expect("create");
    }

    async fn start_gateway(&mut self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let settings = Settings {
            max_retry_wait: Duration::from_secs(2),
            queue_wait: Duration::from_secs(5),
            ..Settings::default()
        };
        let running = within(server::start(
            self.api.client(),
            Some(NS),
            listener,
            settings,
        ))
        .await
        .expect("gateway");
        let url = running.url();
        self.gateway = Some(running);
        url
    }

    async fn stop_gateway(&mut self) {
        if let Some(running) = self.gateway.take() {
            within(running.stop()).await;
        }
    }

    /// An AgentRun `run` and the pod of its attempt 1 on `provider`, registering `token`,
    /// with its work step running.
    async fn attempt(&self, run: &str, provider: &str, token: &str) {
        self.attempt_in_mode(run, provider, token, None).await;
    }

    /// [`World::attempt`] of a run in `mode` (the Agent's default when `None`).
    async fn attempt_in_mode(&self, run: &str, provider: &str, token: &str, mode: Option<&str>) {
        let runs = Api::<countersign_crds::AgentRun>::namespaced(self.api.client(), NS);
        let created = runs
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
                    "metadata": {"name": run, "namespace": NS},
                    "spec": {"projectRef": {"name": "api"}, "agentRef": {"name": "backend"},
                        "task": {"title": "Fix it"}, "mode": mode}
                }))
                .expect("run"),
            )
            .await
            .expect("create run");
        let uid = created.metadata.uid.expect("uid");
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{run}-1"), "namespace": NS,
                "labels": {"app.kubernetes.io/name": "countersign-agent",
                    "countersign.dev/run": run, "countersign.dev/attempt": "1",
                    "countersign.dev/agent": "backend", "countersign.dev/provider": provider},
                "annotations": {"countersign.dev/gateway-token-sha256": token_hash(token)},
                "ownerReferences": [{"apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
                    "name": run, "uid": uid, "controller": true}]},
            "spec": {"containers": [{"name": "push", "image": "i"}]}
        }))
        .expect("pod");
        Api::<Pod>::namespaced(self.api.client(), NS)
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        self.set_work_state(run, json!({"running": {}})).await;
    }

    async fn set_work_state(&self, run: &str, state: Value) {
        let patch = json!({"apiVersion": "v1", "kind": "Pod", "status": {
            "phase": "Pending",
            "initContainerStatuses": [{"name": "work", "ready": false, "restartCount": 0,
                "image": "i", "imageID": "", "state": state}]}});
        Api::<Pod>::namespaced(self.api.client(), NS)
            .patch_status(
                &format!("{run}-1"),
                &PatchParams::apply("test-kubelet").force(),
                &Patch::Apply(&patch),
            )
            .await
            .expect("status");
    }

    /// The ledger as stored.
    async fn ledger(&self) -> UsageLedger {
        let map = Api::<ConfigMap>::namespaced(self.api.client(), NS)
            .get(&ledger_name("api"))
            .await
            .expect("ledger ConfigMap");
        UsageLedger::parse(&map.data.expect("data")[LEDGER_KEY]).expect("ledger")
    }
}

/// Waits until the gateway's caches see what `ok` checks, by asking it.
async fn eventually<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let done = tokio::time::timeout(WAIT, async {
        loop {
            if ok().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "never: {what}");
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
}

fn client() -> countersign_gateway::upstream::HttpClient {
    countersign_gateway::upstream::client()
}

async fn post(url: &str, token: &str, body: Value, extra: &[(&str, &str)]) -> Answer {
    let mut request = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"));
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let response = within(client().request(request)).await.expect("answer");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = within(response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn chat(url: &str) -> String {
    format!("{url}/v1/chat/completions")
}

fn token(n: u8) -> String {
    countersign_crds::attempt::gateway_token_from(&[n; 32])
}

fn finish() -> Step {
    Step::ToolCalls(vec![("finish".into(), json!({"summary": "done"}))])
}

/// Waits until the gateway knows the attempt of `token` (its pod is in the cache).
async fn known(url: &str, token: &str) {
    let url = chat(url);
    eventually("the gateway knows the attempt", || async {
        let answer = post(&url, token, json!("not an object"), &[]).await;
        answer.status == StatusCode::BAD_REQUEST
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_out_with_the_real_key_and_are_counted_from_the_providers_usage() {
    let mut world = World::start(json!({}), json!({})).await;
    let url = world.start_gateway().await;
    let t = token(1);
    world.attempt("fix-1", "primary", &t).await;
    known(&url, &t).await;
    world.primary.push(finish());
    let answer = post(
        &chat(&url),
        &t,
        json!({"model": "whatever", "messages": [{"role": "user", "content": "hi"}]}),
        &[("x-countersign-attempt", "team/fix-1/1")],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(
        answer.body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "finish"
    );
    let requests = world.primary.requests();
    let sent = requests.last().expect("forwarded");
    assert_eq!(sent.api_key.as_deref(), Some(PRIMARY_KEY));
    assert_eq!(sent.body["model"], "model-a", "the provider's model");
    assert!(
        !sent.body.to_string().contains(&t),
        "the token never reaches the provider"
    );
    let ledger = world.ledger().await;
    let spend = ledger.attempt("team/fix-1/1").expect("counted").spend;
    assert_eq!(
        (spend.input_tokens, spend.output_tokens, spend.requests),
        (1000, 100, 1)
    );
    // 1000 in at $10/M and 100 out at $50/M: 1.5 cents.
    assert_eq!(spend.cost_micro_cents, 1_500_000);
    let metrics = {
        let req = Request::get(format!("{url}/metrics"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = within(client().request(req)).await.expect("metrics");
        String::from_utf8(
            within(resp.into_body().collect())
                .await
                .expect("body")
                .to_bytes()
                .to_vec(),
        )
        .expect("utf-8")
    };
    assert!(
        metrics.contains("countersign_gateway_tokens_total{direction=\"input\"} 1000"),
        "{metrics}"
    );
    world.stop_gateway().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_provider_fails_over_within_the_attempt_and_retry_after_is_honoured() {
    let mut world = World::start(json!({}), json!({})).await;
    let url = world.start_gateway().await;
    let t = token(2);
    world.attempt("fix-2", "primary", &t).await;
    known(&url, &t).await;
    // The primary (no retries) is down: the fallback answers, with its model and prices.
    world.primary.push(Step::Error {
        status: 503,
        retry_after: None,
    });
    world.fallback.push(finish());
    let answer = post(
        &chat(&url),
        &t,
        json!({"model": "model-a", "messages": []}),
        &[],
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let to_fallback = world.fallback.requests();
    assert_eq!(to_fallback.len(), 1);
    assert_eq!(to_fallback[0].body["model"], "model-b");
    assert_eq!(to_fallback[0].api_key.as_deref(), Some(FALLBACK_KEY));
    let spend = world
        .ledger()
        .await
        .attempt("team/fix-2/1")
        .expect("counted")
        .spend;
    // 1000 in at $1/M and 100 out at $2/M.
    assert_eq!(spend.cost_micro_cents, 1000 * 100 + 100 * 200);

    // The Anthropic provider has one retry: a 429 with Retry-After: 1 is waited out there.
    let m = format!("{url}/v1/messages");
    world.primary.script(vec![
        Step::Error {
            status: 429,
            retry_after: Some(1),
        },
        finish(),
    ]);
    // An attempt of the `claude` provider.
    let t2 = token(3);
    world.attempt("fix-3", "claude", &t2).await;
    known(&url, &t2).await;
    let started = std::time::Instant::now();
    let request = Request::post(&m)
        .header("content-type", "application/json")
        .header("x-api-key", &t2)
        .header("anthropic-version", "2023-06-01");
    let response = within(
        client().request(
            request
                .body(Full::new(Bytes::from(
                    json!({"model": "x", "max_tokens": 10, "messages": []}).to_string(),
                )))
                .expect("request"),
        ),
    )
    .await
    .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was waited"
    );
    let anthropic: Vec<_> = world
        .primary
        .requests()
        .into_iter()
        .filter(|r| r.protocol == countersign_testkit::model::Protocol::Anthropic)
        .collect();
    assert_eq!(anthropic.len(), 2, "retried on the same provider");
    assert!(
        anthropic
            .iter()
            .all(|r| r.api_key.as_deref() == Some(PRIMARY_KEY))
    );

    // Every provider failing: the last provider's answer is the client's (a rate limit stays
    // a rate limit, with its Retry-After).
    world.primary.push(Step::Error {
        status: 500,
        retry_after: None,
    });
    world.fallback.push(Step::Error {
        status: 429,
        retry_after: Some(60),
    });
    let answer = post(&chat(&url), &t, json!({"messages": []}), &[]).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers["retry-after"], "60");
    world.stop_gateway().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_passed_through_as_they_arrive_and_counted_at_their_end() {
    let mut world = World::start(json!({}), json!({})).await;
    let url = world.start_gateway().await;
    let t = token(4);
    world.attempt("fix-4", "primary", &t).await;
    known(&url, &t).await;
    let hold = world.primary.hold_streams();
    world
        .primary
        .push(Step::Text("streamed words arrive".into()));
    let request = Request::post(chat(&url))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {t}"))
        .body(Full::new(Bytes::from(
            json!({"model": "m", "stream": true, "messages": []}).to_string(),
        )))
        .expect("request");
    let response = within(client().request(request)).await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    // The first event arrives while the model still holds the rest of the stream.
    let first = within(body.frame()).await.expect("a frame").expect("data");
    let first = String::from_utf8(first.into_data().expect("data").to_vec()).expect("utf-8");
    assert!(
        first.starts_with("data: ") && first.contains("\"role\":\"assistant\""),
        "{first}"
    );
    hold.release();
    let rest = within(body.collect()).await.expect("the rest").to_bytes();
    let text = format!("{first}{}", String::from_utf8_lossy(&rest));
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        text.contains("\"usage\""),
        "the gateway asked for usage in the stream"
    );
    let forwarded = world.primary.requests();
    assert_eq!(forwarded[0].body["stream_options"]["include_usage"], true);
    let spend = world
        .ledger()
        .await
        .attempt("team/fix-4/1")
        .expect("counted")
        .spend;
    assert_eq!((spend.input_tokens, spend.output_tokens), (1000, 100));
    world.stop_gateway().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_attempt_budget_refuses_further_requests_with_the_reason() {
    let mut world = World::start(json!({"maxTokens": 1000}), json!({})).await;
    let url = world.start_gateway().await;
    let t = token(5);
    world.attempt("fix-5", "primary", &t).await;
    known(&url, &t).await;
    world.primary.script(vec![finish(), finish()]);
    let ok = post(&chat(&url), &t, json!({"messages": []}), &[]).await;
    assert_eq!(ok.status, StatusCode::OK);
    let refused = post(&chat(&url), &t, json!({"messages": []}), &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        refused.body
    );
    assert_eq!(
        refused.body["error"]["type"],
        "countersign_budget_exhausted"
    );
    let message = refused.body["error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("1100 tokens of its 1000") && message.contains("maxTokens"),
        "{message}"
    );
    assert_eq!(
        world.primary.requests().len(),
        1,
        "nothing reached the provider"
    );
    world.stop_gateway().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spend_per_day_holds_across_runs_a_deleted_run_and_a_gateway_restart() {
    // Each request costs 1.5 cents; the Project may spend 2 cents a day.
    let mut world = World::start(json!({}), json!({"maxSpendPerDay": "0.02"})).await;
    let url = world.start_gateway().await;
    let (a, b) = (token(6), token(7));
    world.attempt("run-a", "primary", &a).await;
    world.attempt("run-b", "primary", &b).await;
    known(&url, &a).await;
    known(&url, &b).await;
    world.primary.script(vec![finish(), finish(), finish()]);
    assert_eq!(
        post(&chat(&url), &a, json!({"messages": []}), &[])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        post(&chat(&url), &b, json!({"messages": []}), &[])
            .await
            .status,
        StatusCode::OK
    );
    let refused = post(&chat(&url), &b, json!({"messages": []}), &[]).await;
    assert_eq!(refused.status, StatusCode::PAYMENT_REQUIRED);
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("$0.03 of its $0.02") && m.contains("maxSpendPerDay")),
        "{}",
        refused.body
    );
    // The first run is deleted and the gateway restarts: the day's spend is still there.
    Api::<countersign_crds::AgentRun>::namespaced(world.api.client(), NS)
        .delete("run-a", &DeleteParams::default())
        .await
        .expect("delete");
    world.stop_gateway().await;
    let url = world.start_gateway().await;
    let c = token(8);
    world.attempt("run-c", "primary", &c).await;
    known(&url, &c).await;
    let refused = post(&chat(&url), &c, json!({"messages": []}), &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::PAYMENT_REQUIRED,
        "{}",
        refused.body
    );
    assert_eq!(world.primary.requests().len(), 2);
    world.stop_gateway().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_once_their_attempt_ended_and_for_another_attempt() {
    let mut world = World::start(json!({}), json!({})).await;
    let url = world.start_gateway().await;
    let (t, other) = (token(9), token(10));
    world.attempt("fix-9", "primary", &t).await;
    world.attempt("fix-10", "primary", &other).await;
    known(&url, &t).await;
    known(&url, &other).await;
    world.primary.push(finish());

    // A token presented as another run's attempt.
    let wrong = post(
        &chat(&url),
        &t,
        json!({"messages": []}),
        &[("x-countersign-attempt", "team/fix-10/1")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(wrong.body["error"]["type"], "countersign_wrong_attempt");
    // A token nobody registered, and no token.
    let forged = post(&chat(&url), &token(99), json!({"messages": []}), &[]).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert_eq!(forged.body["error"]["type"], "countersign_unauthorized");

    // The work step ends: the token is revoked with it.
    world
        .set_work_state("fix-9", json!({"terminated": {"exitCode": 0}}))
        .await;
    let chat_url = chat(&url);
    eventually("the ended attempt's token is refused", || async {
        let answer = post(&chat_url, &t, json!({"messages": []}), &[]).await;
        answer.status == StatusCode::UNAUTHORIZED
            && answer.body["error"]["type"] == "countersign_token_expired"
    })
    .await;
    // The pod is deleted: the token is unknown.
    Api::<Pod>::namespaced(world.api.client(), NS)
        .delete("fix-10-1", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the deleted attempt's token is refused", || async {
        post(&chat_url, &other, json!({"messages": []}), &[])
            .await
            .status
            == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        world.primary.requests().is_empty(),
        "no refused request reached the provider"
    );
    world.stop_gateway().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded_per_agent() {
    let mut world = World::start(json!({}), json!({})).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = within(server::start(
        world.api.client(),
        Some(NS),
        listener,
        Settings {
            requests_per_attempt: 1,
            queue_wait: Duration::from_millis(200),
            ..Settings::default()
        },
    ))
    .await
    .expect("gateway");
    let url = running.url();
    world.gateway = Some(running);
    let t = token(11);
    world.attempt("fix-11", "primary", &t).await;
    known(&url, &t).await;
    // One slot (maxConcurrentRuns 1 × 1 request): a held stream takes it.
    let hold = world.primary.hold_streams();
    world.primary.script(vec![Step::Text("slow".into())]);
    let held = Request::post(chat(&url))
        .header("authorization", format!("Bearer {t}"))
        .body(Full::new(Bytes::from(
            json!({"stream": true, "messages": []}).to_string(),
        )))
        .expect("request");
    let response = within(client().request(held)).await.expect("answer");
    let mut body = response.into_body();
    within(body.frame())
        .await
        .expect("first frame")
        .expect("data");
    let busy = post(&chat(&url), &t, json!({"messages": []}), &[]).await;
    assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(busy.body["error"]["type"], "countersign_busy");
    assert_eq!(busy.headers["retry-after"], "1");
    hold.release();
    within(body.collect()).await.expect("rest");
    world.stop_gateway().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_gateway_finishes_the_requests_in_flight_and_counts_them() {
    let mut world = World::start(json!({}), json!({})).await;
    let url = world.start_gateway().await;
    let t = token(9);
    world.attempt("draining", "primary", &t).await;
    known(&url, &t).await;
    // The model takes a second to answer; the stop comes while it thinks.
    world.primary.script(vec![Step::Delayed(
        Duration::from_secs(1),
        Box::new(finish()),
    )]);
    let request = {
        let url = chat(&url);
        let t = t.clone();
        tokio::spawn(async move { post(&url, &t, json!({"messages": []}), &[]).await })
    };
    eventually("the request reached the model", || async {
        !world.primary.requests().is_empty()
    })
    .await;
    world.stop_gateway().await;
    let answer = within(request).await.expect("the request task");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let ledger = world.ledger().await;
    let spend = ledger
        .attempt(&format!("{NS}/draining/1"))
        .expect("the drained request is in the ledger")
        .spend;
    assert_eq!(spend.requests, 1);
}

fn milestones(url: &str) -> String {
    format!("{url}/countersign/v1/milestones")
}

/// The milestones stored for `run`, and the ConfigMap's owner (kind, name).
async fn stored_milestones(world: &World, run: &str) -> Option<(MilestoneLog, (String, String))> {
    let map = Api::<ConfigMap>::namespaced(world.api.client(), NS)
        .get_opt(&progress_name(run))
        .await
        .expect("read")?;
    assert_eq!(
        map.metadata.labels.as_ref().expect("labels")[PROGRESS_LABEL],
        "true"
    );
    let owner = map.metadata.owner_references.as_ref().expect("owner")[0].clone();
    let log = MilestoneLog::parse(&map.data.expect("data")[PROGRESS_KEY]).expect("log");
    Some((log, (owner.kind, owner.name)))
}

/// An observation-mode attempt posts progress notes with its gateway token; the gateway
/// refuses them from a run not in observation mode, from another attempt, after the work
/// step ended, beyond the attempt's allowance (also when posted at once) and when malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milestones_come_only_from_live_observation_attempts_and_are_bounded() {
    let mut world = World::start(json!({}), json!({})).await;
    let url = world.start_gateway().await;
    let (look, fix) = (token(21), token(22));
    world
        .attempt_in_mode("look", "primary", &look, Some("observation"))
        .await;
    world.attempt("fix", "primary", &fix).await;
    known(&url, &look).await;
    known(&url, &fix).await;
    let notes = milestones(&url);

    // A run that changes code cannot post notes, whatever its model is told.
    let refused = post(&notes, &fix, json!({"text": "hello"}), &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.body["error"]["type"], "countersign_not_served");
    assert!(stored_milestones(&world, "fix").await.is_none());
    // Malformed or out-of-bounds notes.
    for (body, why) in [
        (json!({"note": "x"}), "expected a JSON body"),
        (json!({"text": " \n "}), "empty"),
        (json!({"text": "y".repeat(281)}), "281 characters"),
    ] {
        let answer = post(&notes, &look, body, &[]).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        let message = answer.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{message}");
    }
    let unknown = post(&notes, &token(99), json!({"text": "x"}), &[]).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    let wrong = post(
        &notes,
        &look,
        json!({"text": "x"}),
        &[("x-countersign-attempt", "team/fix/1")],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert!(stored_milestones(&world, "look").await.is_none());

    // The first note, made one line.
    let first = post(&notes, &look, json!({"text": "Read  the\ncode"}), &[]).await;
    assert_eq!(first.status, StatusCode::NO_CONTENT);
    let (log, owner) = stored_milestones(&world, "look").await.expect("stored");
    assert_eq!(owner, ("AgentRun".to_owned(), "look".to_owned()));
    assert_eq!(log.milestones.len(), 1);
    assert_eq!(log.milestones[0].text, "Read the code");
    assert_eq!(log.milestones[0].attempt, 1);
    // Fifteen more at once: the read-modify-write keeps every accepted one and no more than
    // the attempt's allowance.
    let answers = futures::future::join_all(
        (0..15).map(|i| post(&notes, &look, json!({"text": format!("note {i}")}), &[])),
    )
    .await;
    let accepted = answers
        .iter()
        .filter(|a| a.status == StatusCode::NO_CONTENT)
        .count();
    let limited: Vec<&Answer> = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(accepted, MAX_MILESTONES_PER_ATTEMPT - 1);
    assert_eq!(limited.len(), 15 - accepted);
    assert_eq!(limited[0].body["error"]["type"], "countersign_limit");
    let (log, _) = stored_milestones(&world, "look").await.expect("stored");
    assert_eq!(log.count(1), MAX_MILESTONES_PER_ATTEMPT);

    // Once the work step ended, its token posts nothing.
    world
        .set_work_state("look", json!({"terminated": {"exitCode": 0}}))
        .await;
    eventually("the ended attempt's notes are refused", || async {
        post(&notes, &look, json!({"text": "late"}), &[])
            .await
            .status
            == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(
        world.primary.requests().is_empty(),
        "notes never reach a provider"
    );
    world.stop_gateway().await;
}
