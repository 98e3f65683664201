//! The chat providers (`openai`, `anthropic`) end to end over real HTTP against the test kit's
//! scripted [`FakeModel`]: the tool loop in a real workspace, retries, error mapping, budget
//! limits, read-only jobs and follow-ups. The providers are blocking code, so each test runs
//! them on a blocking thread with a timeout.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use countersign_agent::provider::{Budget, Job, JobKind, Limit, ProviderError, Work, provider_for};
use countersign_crds::agent::{AgentLimits, Provider as ProviderSpec};
use countersign_testkit::model::{FakeModel, Protocol, RecordedRequest, SCRIPT_EXHAUSTED, Step};
use secrecy::SecretString;
use serde_json::{Value, json};

/// Longest any test step may take.
const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "sk-test-0123456789";

async fn start_model() -> FakeModel {
    tokio::time::timeout(WAIT, FakeModel::start())
        .await
        .expect("the fake model starts in time")
        .expect("the fake model starts")
}

/// Runs blocking provider code off the async runtime, with a timeout.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::time::timeout(WAIT, tokio::task::spawn_blocking(f))
        .await
        .expect("the provider finishes in time")
        .expect("the provider does not panic")
}

fn spec(kind: &str, base_url: String, retries: u32) -> ProviderSpec {
    serde_json::from_value(json!({
        "name": "fake",
        "kind": kind,
        "model": "test-model",
        "baseUrl": base_url,
        "retries": retries,
        "inputPricePerMillion": "3",
        "outputPricePerMillion": "15",
    }))
    .expect("a valid provider spec")
}

fn openai(model: &FakeModel, retries: u32) -> ProviderSpec {
    spec("openai", model.openai_base_url(), retries)
}

fn anthropic(model: &FakeModel, retries: u32) -> ProviderSpec {
    spec("anthropic", model.anthropic_base_url(), retries)
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir_all(dir.path().join("src")).expect("mkdir");
    fs::write(dir.path().join("README.md"), "# Demo\n").expect("write");
    fs::write(
        dir.path().join("src/lib.rs"),
        "pub fn answer() -> u32 {\n    41\n}\n",
    )
    .expect("write");
    dir
}

fn change(prompt: &str) -> Job {
    Job {
        may_ask: false,
        milestones: None,
        kind: JobKind::Change,
        prompt: prompt.into(),
    }
}

/// One provider run: `start`, then each follow-up in order.
struct Attempt {
    spec: ProviderSpec,
    key: Option<&'static str>,
    workspace: PathBuf,
    job: Job,
    follow_ups: Vec<&'static str>,
    limits: AgentLimits,
    time: Duration,
}

impl Attempt {
    fn new(spec: ProviderSpec, workspace: &Path, job: Job) -> Self {
        Self {
            spec,
            key: Some(KEY),
            workspace: workspace.to_path_buf(),
            job,
            follow_ups: Vec::new(),
            limits: AgentLimits::default(),
            time: Duration::from_secs(120),
        }
    }

    /// Runs it on a blocking thread: the results of start and each follow-up, and the budget.
    async fn run(self) -> (Vec<Result<Work, ProviderError>>, Budget) {
        blocking(move || {
            let mut budget = Budget::new(self.limits, &self.spec, Instant::now() + self.time);
            let key = self.key.map(SecretString::from);
            let mut provider =
                provider_for(&self.spec, key, &[], &self.workspace).expect("a provider");
            let mut results = vec![provider.start(&self.job, &mut budget)];
            for feedback in self.follow_ups {
                results.push(provider.follow_up(feedback, &mut budget));
            }
            (results, budget)
        })
        .await
    }
}

fn tool(name: &str, args: Value) -> Step {
    Step::ToolCalls(vec![(name.into(), args)])
}

fn finish(summary: &str) -> Step {
    tool("finish", json!({"summary": summary}))
}

fn tool_names(request: &RecordedRequest) -> Vec<String> {
    let tools = request.body["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    tools
        .iter()
        .map(|t| {
            let name = match request.protocol {
                Protocol::OpenAi => &t["function"]["name"],
                Protocol::Anthropic => &t["name"],
            };
            name.as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// The texts of the tool results in an OpenAI request.
fn openai_tool_results(request: &RecordedRequest) -> Vec<(String, String)> {
    let messages = request.body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| {
            let id = m["tool_call_id"].as_str().unwrap_or_default().to_owned();
            (id, m["content"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn assert_no_key_in_bodies(requests: &[RecordedRequest]) {
    for request in requests {
        assert!(
            !request.body.to_string().contains(KEY),
            "the key leaked into a request body"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn openai_session_lists_reads_writes_and_finishes() {
    let model = start_model().await;
    model.require_api_key(KEY);
    model.script(vec![
        tool("list_files", json!({})),
        tool("read_file", json!({"path": "src/lib.rs"})),
        Step::ToolCalls(vec![
            (
                "write_file".into(),
                json!({"path": "src/lib.rs", "content": "pub fn answer() -> u32 {\n    42\n}\n"}),
            ),
            ("search".into(), json!({"pattern": "42"})),
        ]),
        finish("Fixed the answer."),
    ]);
    let dir = workspace();
    let (results, budget) = Attempt::new(openai(&model, 2), dir.path(), change("Fix the answer."))
        .run()
        .await;

    let work = results
        .into_iter()
        .next()
        .expect("one result")
        .expect("finished");
    assert_eq!(work.summary, "Fixed the answer.");
    assert_eq!(work.report, None);
    assert_eq!(
        fs::read_to_string(dir.path().join("src/lib.rs")).expect("read"),
        "pub fn answer() -> u32 {\n    42\n}\n"
    );
    assert_eq!(budget.spent.turns, 4);
    let usage = budget.usage();
    assert_eq!((usage.input_tokens, usage.output_tokens), (4000, 400));
    // 4000 × $3/M + 400 × $15/M = 1.2 + 0.6 cents, rounded up.
    assert_eq!(usage.cost.cents, 2);

    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    assert!(
        requests
            .iter()
            .all(|r| r.auth_ok && r.protocol == Protocol::OpenAi)
    );
    assert_no_key_in_bodies(&requests);
    assert_eq!(requests[0].body["model"], "test-model");
    assert_eq!(
        tool_names(&requests[0]),
        [
            "list_files",
            "read_file",
            "search",
            "write_file",
            "apply_diff",
            "finish"
        ]
    );
    assert_eq!(
        openai_tool_results(&requests[1]),
        [("call_1_0".to_owned(), "README.md\nsrc/lib.rs".to_owned())]
    );
    let results = openai_tool_results(&requests[3]);
    assert_eq!(results.len(), 4);
    assert_eq!(
        results[1].1,
        "     1\tpub fn answer() -> u32 {\n     2\t    41\n     3\t}\n"
    );
    assert_eq!(
        results[2],
        (
            "call_3_0".to_owned(),
            "wrote 34 bytes to src/lib.rs".to_owned()
        )
    );
    assert_eq!(
        results[3],
        ("call_3_1".to_owned(), "src/lib.rs:2:    42".to_owned())
    );
    // The model's tool calls are echoed back with their ids and string arguments.
    let echoed = &requests[1].body["messages"][2];
    assert_eq!(echoed["role"], "assistant");
    assert_eq!(echoed["content"], Value::Null);
    assert_eq!(echoed["tool_calls"][0]["id"], "call_1_0");
    assert_eq!(echoed["tool_calls"][0]["function"]["arguments"], "{}");
}

#[tokio::test(flavor = "multi_thread")]
async fn anthropic_session_lists_reads_writes_and_finishes() {
    let model = start_model().await;
    model.require_api_key(KEY);
    let diff = "--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1,3 +1,3 @@\n pub fn answer() -> u32 {\n-    41\n+    42\n }\n";
    model.script(vec![
        tool("list_files", json!({"path": "src"})),
        tool(
            "read_file",
            json!({"path": "src/lib.rs", "start_line": 2, "end_line": 2}),
        ),
        tool("apply_diff", json!({"diff": diff})),
        tool(
            "write_file",
            json!({"path": "CHANGELOG.md", "content": "- answer is 42\n"}),
        ),
        finish("Fixed the answer via a diff."),
    ]);
    let dir = workspace();
    let (results, budget) =
        Attempt::new(anthropic(&model, 2), dir.path(), change("Fix the answer."))
            .run()
            .await;

    let work = results
        .into_iter()
        .next()
        .expect("one result")
        .expect("finished");
    assert_eq!(work.summary, "Fixed the answer via a diff.");
    assert!(
        fs::read_to_string(dir.path().join("src/lib.rs"))
            .expect("read")
            .contains("    42\n")
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("CHANGELOG.md")).expect("read"),
        "- answer is 42\n"
    );
    assert_eq!(budget.spent.turns, 5);
    assert_eq!(
        (budget.spent.input_tokens, budget.spent.output_tokens),
        (5000, 500)
    );

    let requests = model.requests();
    assert_eq!(requests.len(), 5);
    for request in &requests {
        assert!(request.auth_ok && request.protocol == Protocol::Anthropic);
        assert_eq!(request.anthropic_version.as_deref(), Some("2023-06-01"));
        assert!(
            request.body["system"]
                .as_str()
                .is_some_and(|s| s.contains("finish"))
        );
    }
    assert_no_key_in_bodies(&requests);
    assert_eq!(requests[0].body["max_tokens"], 8192);
    assert_eq!(tool_names(&requests[0]).len(), 6);
    assert!(requests[0].body["tools"][0]["input_schema"].is_object());
    let messages = requests[3].body["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 7);
    assert_eq!(
        messages[4],
        json!({"role": "user", "content": [{
            "type": "tool_result", "tool_use_id": "toolu_fake2_0",
            "content": "     2\t    41\n(lines 2-2 of 3); call again with start_line=3", "is_error": false,
        }]})
    );
    assert_eq!(messages[5]["content"][0]["input"]["diff"], diff);
    assert_eq!(
        messages[6]["content"][0]["content"],
        "applied:\nmodified src/lib.rs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_with_retry_after_zero_is_retried_on_the_same_provider() {
    let model = start_model().await;
    model.script(vec![
        Step::Error {
            status: 429,
            retry_after: Some(0),
        },
        finish("done"),
    ]);
    let dir = workspace();
    let mut attempt = Attempt::new(openai(&model, 2), dir.path(), change("Do it."));
    attempt.key = None;
    let started = Instant::now();
    let (results, budget) = attempt.run().await;
    assert_eq!(results[0].as_ref().expect("finished").summary, "done");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "Retry-After: 0 retries at once"
    );
    assert_eq!(budget.spent.turns, 1);
    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].body, requests[1].body);
    // No key configured (a local server): no Authorization header at all.
    assert!(requests.iter().all(|r| r.api_key.is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_429_is_rate_limited_after_the_retries() {
    let model = start_model().await;
    model.script(vec![
        Step::Error {
            status: 429,
            retry_after: Some(0)
        };
        3
    ]);
    model.push(finish("never reached"));
    let dir = workspace();
    let (results, budget) = Attempt::new(anthropic(&model, 2), dir.path(), change("Do it."))
        .run()
        .await;
    let error = results
        .into_iter()
        .next()
        .expect("one result")
        .expect_err("rate limited");
    assert!(
        matches!(&error, ProviderError::RateLimited(m) if m.contains("429")),
        "{error}"
    );
    assert_eq!(model.requests().len(), 3);
    assert_eq!(model.remaining_steps(), 1);
    assert_eq!(budget.spent.turns, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_unavailable() {
    let model = start_model().await;
    model.push(Step::Error {
        status: 500,
        retry_after: None,
    });
    let dir = workspace();
    let (results, _) = Attempt::new(openai(&model, 0), dir.path(), change("Do it."))
        .run()
        .await;
    let error = results
        .into_iter()
        .next()
        .expect("one result")
        .expect_err("unavailable");
    assert!(
        matches!(&error, ProviderError::Unavailable(m) if m.starts_with("HTTP 500")),
        "{error}"
    );
    assert_eq!(model.requests().len(), 1);

    // Anthropic's 529 overloaded, retried once, then given up.
    model.script(vec![
        Step::Error {
            status: 529,
            retry_after: Some(0)
        };
        2
    ]);
    let (results, _) = Attempt::new(anthropic(&model, 1), dir.path(), change("Do it."))
        .run()
        .await;
    let error = results
        .into_iter()
        .next()
        .expect("one result")
        .expect_err("unavailable");
    assert!(
        matches!(&error, ProviderError::Unavailable(m) if m == "HTTP 529: Overloaded"),
        "{error}"
    );
    assert_eq!(model.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exhausted_script_fails_the_attempt() {
    let model = start_model().await;
    let dir = workspace();
    let (results, _) = Attempt::new(openai(&model, 0), dir.path(), change("Do it."))
        .run()
        .await;
    let error = results
        .into_iter()
        .next()
        .expect("one result")
        .expect_err("fails");
    assert!(error.to_string().contains(SCRIPT_EXHAUSTED), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_refused_without_leaking_it() {
    let model = start_model().await;
    model.require_api_key("sk-right-key-000");
    model.push(finish("never reached"));
    let dir = workspace();
    for spec in [openai(&model, 2), anthropic(&model, 2)] {
        let (results, _) = Attempt::new(spec, dir.path(), change("Do it.")).run().await;
        let error = results
            .into_iter()
            .next()
            .expect("one result")
            .expect_err("refused");
        let message = error.to_string();
        assert!(matches!(error, ProviderError::Refused(_)), "{message}");
        assert!(message.contains("HTTP 401"), "{message}");
        assert!(
            !message.contains(KEY) && !message.contains("0123456789"),
            "{message}"
        );
    }
    let requests = model.requests();
    assert_eq!(requests.len(), 2, "a refusal is not retried");
    assert!(
        requests
            .iter()
            .all(|r| !r.auth_ok && r.api_key.as_deref() == Some(KEY))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_never_finishes_runs_out_of_turns() {
    let model = start_model().await;
    model.script(vec![Step::Text("Let me think about it.".into()); 5]);
    let dir = workspace();
    let mut attempt = Attempt::new(openai(&model, 0), dir.path(), change("Do it."));
    attempt.limits.max_turns = 3;
    let (results, budget) = attempt.run().await;
    let error = results
        .into_iter()
        .next()
        .expect("one result")
        .expect_err("out of turns");
    assert!(
        matches!(error, ProviderError::OutOfBudget(Limit::Turns)),
        "{error}"
    );
    assert_eq!(budget.spent.turns, 3);
    let requests = model.requests();
    assert_eq!(requests.len(), 3);
    let last = requests[2].body["messages"].as_array().expect("messages");
    assert!(
        last.last().expect("a message")["content"]
            .as_str()
            .is_some_and(|c| c.contains("call `finish`"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plan_job_cannot_write_and_returns_the_report() {
    let model = start_model().await;
    model.script(vec![
        tool(
            "write_file",
            json!({"path": "README.md", "content": "overwritten"}),
        ),
        tool(
            "finish",
            json!({"summary": "Planned.", "report": "## Plan\n1. Change `answer`."}),
        ),
    ]);
    let dir = workspace();
    let job = Job {
        may_ask: false,
        milestones: None,
        kind: JobKind::Plan,
        prompt: "Plan the fix.".into(),
    };
    let (results, _) = Attempt::new(anthropic(&model, 0), dir.path(), job)
        .run()
        .await;
    let work = results
        .into_iter()
        .next()
        .expect("one result")
        .expect("finished");
    assert_eq!(work.summary, "Planned.");
    assert_eq!(work.report.as_deref(), Some("## Plan\n1. Change `answer`."));
    assert_eq!(
        fs::read_to_string(dir.path().join("README.md")).expect("read"),
        "# Demo\n"
    );
    let requests = model.requests();
    assert_eq!(
        tool_names(&requests[0]),
        ["list_files", "read_file", "search", "finish"]
    );
    let refusal = &requests[1].body["messages"][2]["content"][0];
    assert_eq!(refusal["is_error"], true);
    assert!(
        refusal["content"]
            .as_str()
            .is_some_and(|c| c.contains("read-only")),
        "{refusal}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_up_continues_the_same_conversation() {
    let model = start_model().await;
    model.script(vec![
        tool("write_file", json!({"path": "NOTES.md", "content": "v1\n"})),
        finish("First try."),
        tool("write_file", json!({"path": "NOTES.md", "content": "v2\n"})),
        finish("Fixed after feedback."),
    ]);
    let dir = workspace();
    let mut attempt = Attempt::new(openai(&model, 0), dir.path(), change("Write notes."));
    attempt.follow_ups = vec!["verify failed: NOTES.md must say v2"];
    let (results, budget) = attempt.run().await;
    assert_eq!(results.len(), 2);
    assert_eq!(
        results[0].as_ref().expect("first finish").summary,
        "First try."
    );
    assert_eq!(
        results[1].as_ref().expect("second finish").summary,
        "Fixed after feedback."
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("NOTES.md")).expect("read"),
        "v2\n"
    );
    assert_eq!(budget.spent.turns, 4);

    let requests = model.requests();
    assert_eq!(requests.len(), 4);
    let earlier = requests[1].body["messages"]
        .as_array()
        .expect("messages")
        .clone();
    let follow_up = requests[2].body["messages"].as_array().expect("messages");
    assert_eq!(
        &follow_up[..earlier.len()],
        &earlier[..],
        "the follow-up keeps the earlier messages"
    );
    assert_eq!(follow_up[1]["content"], "Write notes.");
    let feedback = follow_up.last().expect("the feedback");
    assert_eq!(feedback["role"], "user");
    assert!(
        feedback["content"]
            .as_str()
            .is_some_and(|c| c.ends_with("verify failed: NOTES.md must say v2"))
    );
    // The finish call of the first run got its tool result before the feedback.
    assert_eq!(follow_up[follow_up.len() - 2]["role"], "tool");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_tool_arguments_are_fed_back_to_the_model() {
    let model = start_model().await;
    model.script(vec![
        Step::RawToolCall {
            name: "read_file".into(),
            arguments: "{\"path\": \"README.md\"".into(),
        },
        finish("Recovered."),
    ]);
    let dir = workspace();
    let (results, _) = Attempt::new(openai(&model, 0), dir.path(), change("Read it."))
        .run()
        .await;
    assert_eq!(results[0].as_ref().expect("finished").summary, "Recovered.");
    let results = openai_tool_results(&model.requests()[1]);
    assert!(
        results[0]
            .1
            .starts_with("error: the tool arguments are not valid JSON"),
        "{results:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_cut_by_the_deadline_is_out_of_time() {
    let model = start_model().await;
    model.push(Step::Delayed(
        Duration::from_secs(5),
        Box::new(finish("too late")),
    ));
    let dir = workspace();
    let mut attempt = Attempt::new(anthropic(&model, 3), dir.path(), change("Do it."));
    attempt.time = Duration::from_millis(300);
    let started = Instant::now();
    let (results, _) = attempt.run().await;
    let error = results
        .into_iter()
        .next()
        .expect("one result")
        .expect_err("out of time");
    assert!(
        matches!(error, ProviderError::OutOfBudget(Limit::Time)),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(model.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follow_up_needs_a_started_job() {
    let model = start_model().await;
    let dir = workspace();
    let spec = openai(&model, 0);
    let path = dir.path().to_path_buf();
    let result = blocking(move || {
        let mut budget = Budget::new(AgentLimits::default(), &spec, Instant::now() + WAIT);
        let mut provider = provider_for(&spec, None, &[], &path).expect("a provider");
        provider.follow_up("fix it", &mut budget)
    })
    .await;
    assert!(matches!(result, Err(ProviderError::Refused(m)) if m.contains("started job")));
    assert!(model.requests().is_empty());
}
