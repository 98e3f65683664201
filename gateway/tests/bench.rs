//! The gateway's overhead per request: the same chat completion sent straight to the fake
//! model and through the gateway (token lookup, budget check, key from the Secret cache,
//! forwarding, usage counted and written to the ledger ConfigMap on the in-process fake
//! apiserver), interleaved one by one so both see the same machine, then p50/p90/p99.
//!
//! Ignored by default; run it in release mode (numbers in docs/benchmarks.md):
//!
//! ```text
//! cargo test --release -p countersign-gateway --test bench -- --ignored --nocapture
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use countersign_gateway::proxy::Settings;
use countersign_gateway::registry::token_hash;
use countersign_testkit::apiserver::FakeApiServer;
use countersign_testkit::model::{FakeModel, Step};
use http::Request;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

const NS: &str = "bench";
const KEY: &str = "sk-bench-key";
const WARMUP: usize = 200;
const REQUESTS: usize = 2000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let (p50, p90, p99) = (
        percentile(&samples, 0.50),
        percentile(&samples, 0.90),
        percentile(&samples, 0.99),
    );
    println!(
        "{name:<16} n={:<5} mean={:>8.3} ms  p50={:>8.3} ms  p90={:>8.3} ms  p99={:>8.3} ms",
        samples.len(),
        mean.as_secs_f64() * 1e3,
        p50.as_secs_f64() * 1e3,
        p90.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    );
    (p50, p99)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --release -- --ignored --nocapture"]
async fn gateway_overhead_per_request() {
    let api = FakeApiServer::start().await.expect("apiserver");
    for crd in countersign_crds::all() {
        api.install_crd(&crd).expect("crd");
    }
    api.create_namespace(NS).expect("namespace");
    let model = FakeModel::start().await.expect("model");
    model.require_api_key(KEY);
    model.script(vec![Step::Text("ok".into()); 2 * (WARMUP + REQUESTS)]);
    let client = api.client();
    let create = |value: serde_json::Value| {
        let client = client.clone();
        async move {
            let kind = value["kind"].as_str().unwrap_or_default().to_owned();
            let pp = PostParams::default();
            match kind.as_str() {
                "Secret" => Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, NS)
                    .create(&pp, &serde_json::from_value(value).expect("secret"))
                    .await
                    .map(|_| String::new()),
                "Project" => Api::<countersign_crds::Project>::namespaced(client, NS)
                    .create(&pp, &serde_json::from_value(value).expect("project"))
                    .await
                    .map(|_| String::new()),
                "Agent" => Api::<countersign_crds::Agent>::namespaced(client, NS)
                    .create(&pp, &serde_json::from_value(value).expect("agent"))
                    .await
                    .map(|_| String::new()),
                _ => Api::<countersign_crds::AgentRun>::namespaced(client, NS)
                    .create(&pp, &serde_json::from_value(value).expect("run"))
                    .await
                    .map(|r| r.metadata.uid.unwrap_or_default()),
            }
            .expect("create")
        }
    };
    create(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "keys", "namespace": NS}, "stringData": {"k": KEY}}))
    .await;
    create(
        json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
        "metadata": {"name": "p", "namespace": NS},
        "spec": {"repository": {"owner": "o", "name": "r"}, "limits": {"maxSpendPerDay": "1000"}}}),
    )
    .await;
    create(
        json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
        "metadata": {"name": "a", "namespace": NS},
        "spec": {"role": "backend", "limits": {"maxTokens": 100_000_000, "maxCost": "100000"},
            "providers": [{"name": "m", "kind": "openai", "model": "m", "retries": 0,
                "baseUrl": model.openai_base_url(), "apiKeySecretRef": {"name": "keys", "key": "k"},
                "inputPricePerMillion": "3", "outputPricePerMillion": "15"}]}}),
    )
    .await;
    let uid = create(
        json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "r", "namespace": NS},
        "spec": {"projectRef": {"name": "p"}, "agentRef": {"name": "a"}, "task": {"title": "t"}}}),
    )
    .await;
    let token = countersign_crds::attempt::gateway_token_from(&[7; 32]);
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "r-1", "namespace": NS,
            "labels": {"app.kubernetes.io/name": "countersign-agent", "countersign.dev/attempt": "1",
                "countersign.dev/provider": "m", "countersign.dev/agent": "a"},
            "annotations": {"countersign.dev/gateway-token-sha256": token_hash(&token)},
            "ownerReferences": [{"apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
                "name": "r", "uid": uid, "controller": true}]},
        "spec": {"containers": [{"name": "push", "image": "i"}]}}))
    .expect("pod");
    let pods = Api::<Pod>::namespaced(client.clone(), NS);
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    pods.patch_status(
        "r-1",
        &PatchParams::apply("bench").force(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Pending"}})),
    )
    .await
    .expect("status");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway =
        countersign_gateway::server::start(client, Some(NS), listener, Settings::default())
            .await
            .expect("gateway");
    let http = countersign_gateway::upstream::client();
    let body = Bytes::from(
        json!({"model": "m", "messages": [{"role": "user", "content": "Say ok."}]}).to_string(),
    );
    let direct_url = format!("{}/chat/completions", model.openai_base_url());
    let gateway_url = format!("{}/v1/chat/completions", gateway.url());
    let send = |url: String, key: String| {
        let http = http.clone();
        let body = body.clone();
        async move {
            let request = Request::post(url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {key}"))
                .body(Full::new(body))
                .expect("request");
            let started = Instant::now();
            let response = http.request(request).await.expect("answer");
            let status = response.status();
            response.into_body().collect().await.expect("body");
            assert!(status.is_success(), "{status}");
            started.elapsed()
        }
    };
    // The gateway's pod cache fills asynchronously: wait until it serves the token.
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let request = Request::post(&gateway_url)
                .header("authorization", format!("Bearer {token}"))
                .body(Full::new(Bytes::from_static(b"[]")))
                .expect("request");
            if http.request(request).await.is_ok_and(|r| r.status() == 400) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "the gateway never knew the attempt");
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    for i in 0..WARMUP + REQUESTS {
        let d = send(direct_url.clone(), KEY.to_owned()).await;
        let g = send(gateway_url.clone(), token.clone()).await;
        if i >= WARMUP {
            direct.push(d);
            via.push(g);
        }
    }
    println!(
        "{REQUESTS} sequential chat completions each way after {WARMUP} warm-up, interleaved; \
         keep-alive connections; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let (d50, d99) = summary("direct to model", direct);
    let (g50, g99) = summary("via gateway", via);
    println!(
        "overhead         p50={:>8.3} ms  p99={:>8.3} ms",
        (g50.as_secs_f64() - d50.as_secs_f64()) * 1e3,
        (g99.as_secs_f64() - d99.as_secs_f64()) * 1e3
    );
    gateway.stop().await;
}
