//! Agent runs end to end on the fake kube-apiserver: the real reconcilers (`run_controllers`)
//! create pods, a stand-in kubelet finishes them with scripted results, and the tests watch
//! the runs reach their phases.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_controller::metrics::Metrics;
use countersign_controller::{Context, Settings, run_controllers};
use countersign_crds::agent_run::AttemptOutcome;
use countersign_crds::conditions::{self, READY, STALLED};
use countersign_crds::result::{AgentResult, RESULT_VERSION, ResultOutcome};
use countersign_crds::{Agent, AgentPhase, AgentRun, RunPhase};
use countersign_github::tokens::StaticToken;
use countersign_testkit::apiserver::FakeApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// Upper bound for any single wait.
const WAIT: Duration = Duration::from_secs(60);

/// What the stand-in kubelet does with a pod: `None` leaves it running.
type Script = Arc<dyn Fn(&Pod) -> Option<(i32, String)> + Send + Sync>;

struct World {
    server: FakeApiServer,
    client: Client,
    controller: Option<tokio::task::JoinHandle<()>>,
    kubelet: tokio::task::JoinHandle<()>,
    /// Names of pods in the order the kubelet first saw them.
    seen: Arc<Mutex<Vec<String>>>,
    settings: Settings,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(c) = self.controller.take() {
            c.abort();
        }
        self.kubelet.abort();
    }
}

fn settings() -> Settings {
    Settings {
        namespace: Some("default".into()),
        resync_interval: Duration::from_secs(30),
        retry_backoff_base: Duration::from_millis(100),
        retry_backoff_max: Duration::from_millis(400),
        wait_requeue: Duration::from_millis(300),
        timeout_grace: Duration::ZERO,
        gateway: Some(
            countersign_controller::settings::GatewaySettings::new(
                "http://127.0.0.1:9",
                "default",
                [("app".to_owned(), "gateway".to_owned())].into(),
            )
            .expect("gateway"),
        ),
        ..Settings::default()
    }
}

fn result(outcome: ResultOutcome, provider: &str, tokens: u64) -> String {
    AgentResult {
        version: RESULT_VERSION,
        outcome,
        provider: Some(provider.into()),
        branch: Some("countersign/x".into()),
        commit: Some("89abcdef0123456789abcdef0123456789abcdef".into()),
        files_changed: 1,
        summary: Some(format!("{outcome:?} on {provider}")),
        reason: (outcome != ResultOutcome::Succeeded).then(|| format!("{provider} said no")),
        report: None,
        verification: None,
        lines_added: 3,
        lines_removed: 1,
        usage: countersign_crds::agent_run::Usage {
            input_tokens: tokens,
            output_tokens: tokens / 2,
            cost: countersign_crds::Usd { cents: 3 },
        },
    }
    .to_message()
}

/// Every pod succeeds at once.
fn succeed_all() -> Script {
    Arc::new(|pod: &Pod| {
        let provider = pod
            .labels()
            .get("countersign.dev/provider")
            .cloned()
            .unwrap_or_default();
        Some((0, result(ResultOutcome::Succeeded, &provider, 100)))
    })
}

impl World {
    async fn start(script: Script) -> World {
        World::start_with(script, settings()).await
    }

    async fn start_with(script: Script, settings: Settings) -> World {
        let server = tokio::time::timeout(WAIT, FakeApiServer::start())
            .await
            .expect("in time")
            .expect("server");
        for crd in countersign_crds::all() {
            server.install_crd(&crd).expect("install CRD");
        }
        let client = server.client();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kubelet = tokio::spawn(kubelet(
            server.clone(),
            client.clone(),
            script,
            seen.clone(),
        ));
        let mut world = World {
            server,
            client,
            controller: None,
            kubelet,
            seen,
            settings,
        };
        world.apply_fixtures().await;
        world.start_controller();
        world
    }

    fn start_controller(&mut self) {
        let ctx = Context::new(
            self.client.clone(),
            self.settings.clone(),
            Arc::new(StaticToken::new("ghs_test_token".to_owned().into())),
            Arc::new(Metrics::default()),
        );
        self.controller = Some(tokio::spawn(run_controllers(Arc::new(ctx))));
    }

    fn stop_controller(&mut self) {
        if let Some(c) = self.controller.take() {
            c.abort();
        }
    }

    async fn apply_fixtures(&mut self) {
        self.create("", "v1", "secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llm"}, "stringData": {"api-key": "sk-test"}})).await;
        self.create("countersign.dev", "v1alpha1", "projects", json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Project", "metadata": {"name": "api"},
            "spec": {"repository": {"owner": "acme", "name": "api"}, "limits": {"maxConcurrentRuns": 100, "maxRunsPerDay": 1000}}
        })).await;
        self.create(
            "countersign.dev",
            "v1alpha1",
            "agents",
            agent_json("backend", 100),
        )
        .await;
    }

    async fn create(&self, group: &str, version: &str, plural: &str, obj: Value) {
        let api_version = obj["apiVersion"].as_str().expect("apiVersion").to_owned();
        let kind = obj["kind"].as_str().expect("kind").to_owned();
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
        let resource = kube::api::ApiResource::from_gvk_with_plural(&gvk, plural);
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(self.client.clone(), "default", &resource);
        let obj: kube::api::DynamicObject = serde_json::from_value(obj).expect("object");
        tokio::time::timeout(WAIT, api.create(&PostParams::default(), &obj))
            .await
            .expect("in time")
            .unwrap_or_else(|e| panic!("create {api_version} {kind}: {e}"));
    }

    async fn create_run(&self, name: &str, extra: Value) {
        let mut run = json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun", "metadata": {"name": name},
            "spec": {"projectRef": {"name": "api"}, "agentRef": {"name": "backend"}, "task": {"title": format!("task {name}")}, "retries": 2}
        });
        merge(&mut run, extra);
        self.create("countersign.dev", "v1alpha1", "agentruns", run)
            .await;
    }

    fn runs(&self) -> Api<AgentRun> {
        Api::default_namespaced(self.client.clone())
    }

    /// Waits until the run satisfies `pred`, watching it (no polling).
    async fn wait_run(&self, name: &str, what: &str, pred: impl Fn(&AgentRun) -> bool) -> AgentRun {
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(self.runs(), config)
            .default_backoff()
            .applied_objects()
            .boxed();
        let found = tokio::time::timeout(WAIT, async {
            while let Some(event) = stream.next().await {
                if let Ok(run) = event
                    && pred(&run)
                {
                    return run;
                }
            }
            panic!("watch ended");
        })
        .await;
        found.unwrap_or_else(|_| {
            let run =
                self.server
                    .get_raw("countersign.dev", "v1alpha1", "agentruns", "default", name);
            panic!("timed out waiting for {name} to be {what}; last seen: {run:#?}")
        })
    }

    async fn wait_phase(&self, name: &str, phase: RunPhase) -> AgentRun {
        self.wait_run(name, &format!("{phase:?}"), |r| {
            r.status.as_ref().is_some_and(|s| s.phase == phase)
        })
        .await
    }

    /// Core/v1 objects straight from the fake's store (not subject to injected faults).
    fn raw_list(&self, plural: &str) -> Vec<Value> {
        self.server.list_raw("", "v1", plural, Some("default"))
    }

    fn pods_of(&self, run: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .raw_list("pods")
            .iter()
            .filter(|p| p["metadata"]["labels"]["countersign.dev/run"] == run)
            .map(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        names.sort();
        names
    }
}

fn agent_json(name: &str, max: u32) -> Value {
    json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent", "metadata": {"name": name},
        "spec": {
            "role": "backend", "maxConcurrentRuns": max,
            "providers": [
                {"name": "primary", "kind": "openai", "model": "m1", "apiKeySecretRef": {"name": "llm", "key": "api-key"}},
                {"name": "fallback", "kind": "anthropic", "model": "m2", "apiKeySecretRef": {"name": "llm", "key": "api-key"}}
            ],
            "limits": {"timeout": "30m"},
            // Keep every finished run: several tests count them.
            "historyLimits": {"succeeded": 1000, "failed": 1000}
        }
    })
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(b), Value::Object(e)) => {
            for (k, v) in e {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, e) => *b = e,
    }
}

/// A stand-in kubelet: finishes each new pod as the script says, through the fake's pod
/// helpers (which are not subject to injected API faults).
async fn kubelet(
    server: FakeApiServer,
    client: Client,
    script: Script,
    seen: Arc<Mutex<Vec<String>>>,
) {
    let pods: Api<Pod> = Api::default_namespaced(client);
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut handled = std::collections::HashSet::new();
    while let Some(event) = events.next().await {
        let Ok(pod) = event else { continue };
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() || !handled.insert(name.clone()) {
            continue;
        }
        seen.lock().expect("seen lock").push(name.clone());
        if let Some((code, message)) = script(&pod) {
            // Running first, like a kubelet.
            let _ = server.set_pod_phase("default", &name, "Running").await;
            if let Err(err) = server.terminate_pod("default", &name, code, &message).await {
                eprintln!("kubelet could not finish {name}: {err:#}");
            }
        } else {
            let _ = server.set_pod_phase("default", &name, "Running").await;
        }
    }
}

#[tokio::test]
async fn a_run_succeeds_with_one_pod_secret_and_network_policy_that_are_collected_with_it() {
    let world = World::start(succeed_all()).await;
    world.create_run("happy", json!({})).await;
    let run = world.wait_phase("happy", RunPhase::Succeeded).await;
    let status = run.status.clone().expect("status");
    assert_eq!(status.attempts.len(), 1);
    assert_eq!(status.attempts[0].outcome, Some(AttemptOutcome::Succeeded));
    assert_eq!(status.branch.as_deref(), Some("countersign/x"));
    assert!(conditions::is_true(&status.conditions, READY));
    assert_eq!(world.pods_of("happy"), ["happy-1"]);
    // The attempt's Secret held the minted tokens, and went once they were revoked (the
    // attempt ended).
    let requests = world.server.requests();
    let deletes: Vec<u16> = requests
        .iter()
        .filter(|r| r.method == "DELETE" && r.path.ends_with("/secrets/happy-1"))
        .map(|r| r.status)
        .collect();
    assert_eq!(deletes, [200], "deleted once");
    assert!(
        world
            .raw_list("secrets")
            .iter()
            .all(|s| s["metadata"]["name"] != "happy-1")
    );
    let policies = world.server.list_raw(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        Some("default"),
    );
    assert_eq!(
        policies
            .iter()
            .filter(|p| p["metadata"]["name"] == "happy-1")
            .count(),
        1
    );

    // Events are published right after the status write; wait for them.
    let reasons = |events: &[Value]| -> Vec<String> {
        events
            .iter()
            .filter(|e| e["involvedObject"]["name"] == "happy" || e["regarding"]["name"] == "happy")
            .filter_map(|e| e["reason"].as_str().map(str::to_owned))
            .collect()
    };
    let events_api: Api<k8s_openapi::api::core::v1::Event> =
        Api::default_namespaced(world.client.clone());
    let found = tokio::time::timeout(WAIT, async {
        let mut stream = watcher(events_api, watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            let seen = reasons(&world.raw_list("events"));
            if seen.iter().any(|r| r == "AttemptStarted") && seen.iter().any(|r| r == "Succeeded") {
                return seen;
            }
            let _ = stream.next().await;
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "events AttemptStarted and Succeeded recorded: {:?}",
        reasons(&world.raw_list("events"))
    );

    world
        .runs()
        .delete("happy", &DeleteParams::default())
        .await
        .expect("delete run");
    let pods = Api::<Pod>::default_namespaced(world.client.clone());
    let gone = tokio::time::timeout(WAIT, async {
        let mut stream = watcher(pods.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        while world.pods_of("happy").len()
            + world
                .raw_list("secrets")
                .iter()
                .filter(|s| s["metadata"]["name"] == "happy-1")
                .count()
            > 0
        {
            let _ = stream.next().await;
        }
    })
    .await;
    assert!(gone.is_ok(), "children are garbage-collected with the run");
    assert!(
        Api::<NetworkPolicy>::default_namespaced(world.client.clone())
            .get_opt("happy-1")
            .await
            .expect("get")
            .is_none()
    );
}

#[tokio::test]
async fn a_provider_error_retries_on_the_fallback_provider() {
    let script: Script = Arc::new(|pod: &Pod| {
        let provider = pod
            .labels()
            .get("countersign.dev/provider")
            .cloned()
            .unwrap_or_default();
        let outcome = if provider == "primary" {
            ResultOutcome::RateLimited
        } else {
            ResultOutcome::Succeeded
        };
        Some((
            i32::from(outcome != ResultOutcome::Succeeded),
            result(outcome, &provider, 1000),
        ))
    });
    let world = World::start(script).await;
    world.create_run("fallback", json!({})).await;
    let run = world.wait_phase("fallback", RunPhase::Succeeded).await;
    let status = run.status.expect("status");
    let providers: Vec<(&str, Option<AttemptOutcome>)> = status
        .attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.outcome))
        .collect();
    assert_eq!(
        providers,
        [
            ("primary", Some(AttemptOutcome::RateLimited)),
            ("fallback", Some(AttemptOutcome::Succeeded))
        ]
    );
    assert_eq!(
        status.usage.input_tokens, 0,
        "usage is what the gateway counted (nothing here), never what the pod reports"
    );
    assert_eq!(world.pods_of("fallback"), ["fallback-1", "fallback-2"]);
}

#[tokio::test]
async fn a_pod_that_outlives_its_timeout_is_stopped_and_the_run_times_out() {
    let world = World::start(Arc::new(|_: &Pod| None)).await;
    world
        .create_run("slow", json!({"spec": {"timeout": "1s"}}))
        .await;
    world.wait_phase("slow", RunPhase::Running).await;
    let run = world.wait_phase("slow", RunPhase::TimedOut).await;
    assert_eq!(
        run.status.expect("status").attempts[0].outcome,
        Some(AttemptOutcome::TimedOut)
    );
    assert!(world.pods_of("slow").is_empty(), "the pod is deleted");
}

#[tokio::test]
async fn cancelling_a_running_run_deletes_its_pod() {
    let world = World::start(Arc::new(|_: &Pod| None)).await;
    world.create_run("stop-me", json!({})).await;
    world
        .wait_run("stop-me", "running with a pod", |r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.phase == RunPhase::Running)
        })
        .await;
    let cancel = json!({"spec": {"cancelRequested": true}});
    world
        .runs()
        .patch("stop-me", &PatchParams::default(), &Patch::Merge(&cancel))
        .await
        .expect("cancel");
    let run = world.wait_phase("stop-me", RunPhase::Cancelled).await;
    assert_eq!(
        run.status.expect("status").attempts[0].outcome,
        Some(AttemptOutcome::Cancelled)
    );
    assert!(world.pods_of("stop-me").is_empty(), "the pod is gone");
}

#[tokio::test]
async fn a_malformed_result_fails_the_run_with_a_readable_reason() {
    let world = World::start(Arc::new(|_: &Pod| Some((0, "I did it!".to_owned())))).await;
    world.create_run("garbled", json!({})).await;
    let run = world.wait_phase("garbled", RunPhase::Failed).await;
    let message = run.status.expect("status").message.unwrap_or_default();
    assert!(
        message.contains("the agent's result is not valid"),
        "{message}"
    );
    assert_eq!(
        world.pods_of("garbled").len(),
        1,
        "no retry for an unreadable result"
    );
}

#[tokio::test]
async fn a_missing_secret_makes_the_agent_not_ready_and_the_run_wait() {
    let world = World::start(succeed_all()).await;
    let mut agent = agent_json("needs-key", 1);
    agent["spec"]["providers"][0]["apiKeySecretRef"] = json!({"name": "absent", "key": "api-key"});
    world
        .create("countersign.dev", "v1alpha1", "agents", agent)
        .await;
    world
        .create_run(
            "waiting",
            json!({"spec": {"agentRef": {"name": "needs-key"}}}),
        )
        .await;

    let run = world
        .wait_run("waiting", "stalled on the secret", |r| {
            r.status
                .as_ref()
                .is_some_and(|s| conditions::is_true(&s.conditions, STALLED))
        })
        .await;
    let status = run.status.expect("status");
    assert_eq!(status.phase, RunPhase::Pending);
    let stalled = conditions::find(&status.conditions, STALLED).expect("Stalled");
    assert!(
        stalled.message.contains("\"absent\""),
        "{}",
        stalled.message
    );
    assert!(world.pods_of("waiting").is_empty());

    let agents: Api<Agent> = Api::default_namespaced(world.client.clone());
    let agent = tokio::time::timeout(WAIT, async {
        loop {
            let agent = agents.get("needs-key").await.expect("agent");
            if agent
                .status
                .as_ref()
                .is_some_and(|s| !s.conditions.is_empty())
            {
                return agent;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("agent status in time");
    let status = agent.status.expect("status");
    let ready = conditions::find(&status.conditions, READY).expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "SecretMissing")
    );

    // Creating the Secret lets the run start: no restart, no manual nudge.
    world.create("", "v1", "secrets", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "absent"}, "stringData": {"api-key": "k"}})).await;
    world.wait_phase("waiting", RunPhase::Succeeded).await;
    let agent = agents.get("needs-key").await.expect("agent");
    assert_ne!(agent.status.map(|s| s.phase), Some(AgentPhase::Terminated));
}

#[tokio::test]
async fn runs_of_an_agent_limited_to_one_run_one_at_a_time_in_creation_order() {
    let world = World::start(succeed_all()).await;
    world
        .create(
            "countersign.dev",
            "v1alpha1",
            "agents",
            agent_json("solo", 1),
        )
        .await;
    for name in ["run-a", "run-b", "run-c"] {
        world
            .create_run(name, json!({"spec": {"agentRef": {"name": "solo"}}}))
            .await;
    }
    for name in ["run-a", "run-b", "run-c"] {
        world.wait_phase(name, RunPhase::Succeeded).await;
    }
    let seen = world.seen.lock().expect("seen").clone();
    let order: Vec<&str> = seen
        .iter()
        .filter(|p| p.starts_with("run-"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        order,
        ["run-a-1", "run-b-1", "run-c-1"],
        "one at a time, in creation order"
    );
    // Each run started only after the previous one finished.
    let runs: Vec<AgentRun> = world
        .runs()
        .list(&ListParams::default())
        .await
        .expect("list")
        .items;
    let times: BTreeMap<String, (jiff::Timestamp, jiff::Timestamp)> = runs
        .iter()
        .filter(|r| r.name_any().starts_with("run-"))
        .map(|r| {
            let s = r.status.as_ref().expect("status");
            (
                r.name_any(),
                (
                    s.start_time.clone().expect("start").0,
                    s.completion_time.clone().expect("end").0,
                ),
            )
        })
        .collect();
    assert!(
        times["run-a"].1 <= times["run-b"].0 && times["run-b"].1 <= times["run-c"].0,
        "{times:?}"
    );
}

#[tokio::test]
async fn a_controller_restart_mid_run_creates_no_duplicate_pod() {
    // The kubelet leaves the pod running; the test finishes it after the restart.
    let mut world = World::start(Arc::new(|_: &Pod| None)).await;
    world.create_run("survivor", json!({})).await;
    world.wait_phase("survivor", RunPhase::Running).await;
    assert_eq!(world.pods_of("survivor"), ["survivor-1"]);

    world.stop_controller();
    world.start_controller();
    world
        .server
        .terminate_pod(
            "default",
            "survivor-1",
            0,
            &result(ResultOutcome::Succeeded, "primary", 10),
        )
        .await
        .expect("finish pod");
    world.wait_phase("survivor", RunPhase::Succeeded).await;
    assert_eq!(
        world.pods_of("survivor"),
        ["survivor-1"],
        "no second pod after the restart"
    );
    let posts = world
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/pods") && r.status == 201)
        .count();
    assert_eq!(posts, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_runs_converge_under_injected_errors_and_dropped_watches() {
    const RUNS: usize = 200;
    const SEED: u64 = 0xC0FFEE;
    println!("fault seed: {SEED:#x}");
    let mut world = World::start(succeed_all()).await;
    world.stop_controller();
    for i in 0..RUNS {
        world.create_run(&format!("bulk-{i:03}"), json!({})).await;
    }
    // 500s reach the controller (kube's client would quietly retry 429s itself).
    world.server.faults().set_error_codes(&[500]);
    world.server.faults().set_error_rate(0.10, SEED);
    world.start_controller();
    let dropper = {
        let server = world.server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(700));
            loop {
                tick.tick().await;
                server.faults().drop_watches();
            }
        })
    };
    let done = tokio::time::timeout(Duration::from_secs(240), async {
        let runs = Api::<AgentRun>::default_namespaced(world.client.clone());
        let mut stream = watcher(runs, watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            let finished = world
                .server
                .list_raw("countersign.dev", "v1alpha1", "agentruns", Some("default"))
                .iter()
                .filter(|r| r["status"]["phase"] == "Succeeded")
                .count();
            if finished == RUNS {
                return;
            }
            let _ = stream.next().await;
        }
    })
    .await;
    dropper.abort();
    let injected = world.server.faults().injected();
    world.server.faults().reset();
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for run in world
        .server
        .list_raw("countersign.dev", "v1alpha1", "agentruns", Some("default"))
    {
        *phases
            .entry(
                run["status"]["phase"]
                    .as_str()
                    .unwrap_or("<none>")
                    .to_owned(),
            )
            .or_default() += 1;
    }
    assert!(
        done.is_ok(),
        "all {RUNS} runs succeed (seed {SEED:#x}); phases: {phases:?}; {} requests",
        world.server.requests().len()
    );
    assert!(injected > 50, "faults were really injected: {injected}");
    let pods = world.raw_list("pods");
    assert_eq!(pods.len(), RUNS, "exactly one pod per run, no duplicates");
    for i in 0..RUNS {
        assert_eq!(
            world.pods_of(&format!("bulk-{i:03}")),
            [format!("bulk-{i:03}-1")]
        );
    }
}

#[tokio::test]
async fn finished_runs_beyond_the_agent_history_limit_are_deleted() {
    let world = World::start(succeed_all()).await;
    let mut agent = agent_json("short-memory", 5);
    agent["spec"]["historyLimits"] = json!({"succeeded": 1, "failed": 1});
    world
        .create("countersign.dev", "v1alpha1", "agents", agent)
        .await;
    for name in ["hist-a", "hist-b", "hist-c"] {
        world
            .create_run(
                name,
                json!({"spec": {"agentRef": {"name": "short-memory"}}}),
            )
            .await;
        world.wait_phase(name, RunPhase::Succeeded).await;
    }
    let left = tokio::time::timeout(WAIT, async {
        let mut stream = watcher(world.runs(), watcher::Config::default())
            .default_backoff()
            .boxed();
        loop {
            let names: Vec<String> = world
                .server
                .list_raw("countersign.dev", "v1alpha1", "agentruns", Some("default"))
                .iter()
                .filter_map(|r| r["metadata"]["name"].as_str().map(str::to_owned))
                .filter(|n| n.starts_with("hist-"))
                .collect();
            if names.len() == 1 {
                return names;
            }
            let _ = stream.next().await;
        }
    })
    .await
    .expect("old runs are deleted in time");
    assert_eq!(left, ["hist-c"], "the newest succeeded run is kept");
}

#[tokio::test]
async fn the_resync_deletes_orphaned_run_children() {
    let fast = Settings {
        resync_interval: Duration::from_secs(1),
        ..settings()
    };
    let world = World::start_with(succeed_all(), fast).await;
    world
        .create(
            "",
            "v1",
            "secrets",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "ghost-1", "labels": {"countersign.dev/run": "ghost"}},
                "stringData": {"token": "leaked"}
            }),
        )
        .await;
    world.create("", "v1", "secrets", json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "unrelated"}, "stringData": {"k": "v"}
    })).await;
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::default_namespaced(world.client.clone());
    let gone = tokio::time::timeout(WAIT, async {
        let mut stream = watcher(secrets.clone(), watcher::Config::default())
            .default_backoff()
            .boxed();
        while world
            .raw_list("secrets")
            .iter()
            .any(|s| s["metadata"]["name"] == "ghost-1")
        {
            let _ = stream.next().await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the orphaned Secret is swept");
    assert!(
        secrets.get_opt("unrelated").await.expect("get").is_some(),
        "unlabelled objects are left alone"
    );
}

#[tokio::test]
async fn usage_is_folded_from_the_gateways_ledger_and_tokens_are_revoked_at_the_end() {
    use countersign_crds::agent_run::TokenKind;
    use countersign_crds::usage::{LEDGER_KEY, Spend, UsageLedger, ledger_name};
    let world = World::start(Arc::new(|_: &Pod| None)).await;
    world.create_run("counted", json!({})).await;
    let run = world.wait_phase("counted", RunPhase::Running).await;
    // The gateway recorded the attempt's requests in the Project's ledger.
    let mut ledger = UsageLedger::new();
    let day = countersign_crds::usage::day_of(&jiff::Timestamp::now());
    let spend = Spend {
        input_tokens: 4000,
        output_tokens: 400,
        cost_micro_cents: 1_800_000,
        requests: 4,
    };
    ledger.record(
        "default/counted/1",
        run.metadata.uid.as_deref().expect("uid"),
        "backend",
        &day,
        &spend,
    );
    let project = run.spec.project_ref.name.clone();
    let map: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": ledger_name(&project), "namespace": "default"},
        "data": {LEDGER_KEY: ledger.render()}
    }))
    .expect("config map");
    Api::<k8s_openapi::api::core::v1::ConfigMap>::default_namespaced(world.client.clone())
        .create(&Default::default(), &map)
        .await
        .expect("ledger");
    world
        .server
        .terminate_pod(
            "default",
            "counted-1",
            0,
            &result(ResultOutcome::Succeeded, "primary", 77),
        )
        .await
        .expect("finish pod");
    let done = world.wait_phase("counted", RunPhase::Succeeded).await;
    let status = done.status.expect("status");
    assert_eq!(
        (
            status.usage.input_tokens,
            status.usage.output_tokens,
            status.usage.cost.cents
        ),
        (4000, 400, 2)
    );
    // A static token is not revocable, so nothing is revoked with GitHub; the attempt is
    // still marked done and its Secret goes.
    let revoked = world
        .wait_run("counted", "its tokens handled", |r| {
            r.status.as_ref().is_some_and(|s| {
                s.attempts
                    .first()
                    .is_some_and(|a| a.revoked_tokens == [TokenKind::Clone, TokenKind::Push])
            })
        })
        .await;
    assert!(revoked.status.is_some());
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::default_namespaced(world.client.clone());
    let gone = tokio::time::timeout(WAIT, async {
        loop {
            if secrets.get_opt("counted-1").await.expect("get").is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the attempt's Secret is deleted once its tokens are revoked"
    );
}
