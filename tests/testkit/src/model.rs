//! A scripted chat model served over real HTTP on `127.0.0.1:0`, speaking both wire formats
//! the agent's chat providers use: OpenAI chat completions (`POST /v1/chat/completions`) and
//! Anthropic messages (`POST /v1/messages`).
//!
//! Both endpoints answer from one queue of [`Step`]s, in the protocol of the request: tool
//! calls, text, an HTTP error (with `Retry-After`), or any of these after a delay. A request
//! with `"stream": true` gets the answer as server-sent events in the protocol's streaming
//! format (OpenAI chunks ending in `data: [DONE]`, with a usage chunk when the request asks
//! for `stream_options.include_usage`; Anthropic's `message_start` … `message_stop`), and
//! [`FakeModel::hold_streams`] lets a test hold every stream after its first event. Every
//! request is recorded with its parsed body and whether its API key matched, so tests check
//! what the agent sent (tool results, earlier messages, that no key leaked into a body). When
//! the script runs out the fake answers `500` "fake model: script exhausted", so a test that
//! scripted too little fails its attempt instead of hanging.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use countersign_testkit::model::{FakeModel, Step};
//! use serde_json::json;
//!
//! let model = FakeModel::start().await?;
//! model.require_api_key("sk-test");
//! model.script(vec![
//!     Step::Error { status: 429, retry_after: Some(0) },
//!     Step::ToolCalls(vec![("read_file".into(), json!({"path": "README.md"}))]),
//!     Step::ToolCalls(vec![("finish".into(), json!({"summary": "read it"}))]),
//! ]);
//! // Point an `openai` provider at `model.openai_base_url()` (or an `anthropic` one at
//! // `model.anthropic_base_url()`), run it, then inspect `model.requests()`.
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

/// Input tokens reported per answer unless [`FakeModel::set_usage`] says otherwise.
pub const DEFAULT_INPUT_TOKENS: u64 = 1000;
/// Output tokens reported per answer unless [`FakeModel::set_usage`] says otherwise.
pub const DEFAULT_OUTPUT_TOKENS: u64 = 100;
/// The `500` message when a request finds the script empty.
pub const SCRIPT_EXHAUSTED: &str = "fake model: script exhausted";

/// Which wire format a request used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /v1/chat/completions`.
    OpenAi,
    /// `POST /v1/messages`.
    Anthropic,
}

/// One scripted answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The model calls these tools (name, arguments object), in order.
    ToolCalls(Vec<(String, Value)>),
    /// One tool call whose arguments are sent verbatim as the OpenAI `arguments` string,
    /// e.g. invalid JSON. (Anthropic sends `input` objects: a string that is not a JSON
    /// object is sent as `{"raw": …}`.)
    RawToolCall {
        /// The tool's name.
        name: String,
        /// The arguments text.
        arguments: String,
    },
    /// The model answers text only.
    Text(String),
    /// An HTTP error in the protocol's error shape (`529` is Anthropic's "overloaded").
    Error {
        /// The status code.
        status: u16,
        /// `Retry-After` in seconds.
        retry_after: Option<u64>,
    },
    /// `step`, answered after `delay` (for timeout tests; the delay is not cancellable).
    Delayed(Duration, Box<Step>),
    /// `step`, answered once the hold is released (a test looks at a run mid-way, then lets
    /// the model go on).
    Held(StreamHold, Box<Step>),
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The wire format.
    pub protocol: Protocol,
    /// The parsed JSON body (`Value::Null` when it was not JSON).
    pub body: Value,
    /// The API key presented (`Authorization: Bearer …` or `x-api-key`), if any.
    pub api_key: Option<String>,
    /// Whether the key matched [`FakeModel::require_api_key`] (always true without one).
    pub auth_ok: bool,
    /// The `anthropic-version` header, if sent.
    pub anthropic_version: Option<String>,
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Step>,
    requests: Vec<RecordedRequest>,
    api_key: Option<String>,
    usage: Option<(u64, u64)>,
    answers: u64,
    hold: Option<StreamHold>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(inner: &Shared) -> MutexGuard<'_, Inner> {
    // A panicking test thread must not hide the fake's state from the others.
    inner
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The fake model server; stops when dropped.
pub struct FakeModel {
    addr: SocketAddr,
    inner: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeModel {
    /// Starts the fake on `127.0.0.1:0` with an empty script and no required key.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let inner = Shared::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(openai))
            .route("/v1/messages", post(anthropic))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "fake model stopped");
            }
        });
        Ok(Self { addr, inner, task })
    }

    /// The `baseUrl` of an `openai` provider: `http://127.0.0.1:PORT/v1`.
    pub fn openai_base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The `baseUrl` of an `anthropic` provider: `http://127.0.0.1:PORT`.
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers `401` (with a JSON error in the protocol's shape) to requests without `key`.
    pub fn require_api_key(&self, key: &str) {
        lock(&self.inner).api_key = Some(key.to_owned());
    }

    /// Sets the usage every answer reports (default [`DEFAULT_INPUT_TOKENS`] in,
    /// [`DEFAULT_OUTPUT_TOKENS`] out).
    pub fn set_usage(&self, input_tokens: u64, output_tokens: u64) {
        lock(&self.inner).usage = Some((input_tokens, output_tokens));
    }

    /// Appends one step to the script.
    pub fn push(&self, step: Step) {
        lock(&self.inner).script.push_back(step);
    }

    /// Appends steps to the script.
    pub fn script(&self, steps: Vec<Step>) {
        lock(&self.inner).script.extend(steps);
    }

    /// Steps not answered yet.
    pub fn remaining_steps(&self) -> usize {
        lock(&self.inner).script.len()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner).requests.clone()
    }

    /// From now on every streamed answer stops after its first event until the returned
    /// hold is released, so a test can see that a proxy passes the first event on before
    /// the stream ends.
    pub fn hold_streams(&self) -> StreamHold {
        let hold = StreamHold::default();
        lock(&self.inner).hold = Some(hold.clone());
        hold
    }
}

/// Holds streamed answers after their first event (or a [`Step::Held`] answer) until
/// [`StreamHold::release`].
#[derive(Clone, Debug, Default)]
pub struct StreamHold {
    inner: Arc<(std::sync::atomic::AtomicBool, tokio::sync::Notify)>,
}

impl PartialEq for StreamHold {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl StreamHold {
    /// Lets every held stream (and every later one) go on.
    pub fn release(&self) {
        self.inner
            .0
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.inner.0.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

async fn openai(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    handle(Protocol::OpenAi, &inner, &headers, &body).await
}

async fn anthropic(State(inner): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    handle(Protocol::Anthropic, &inner, &headers, &body).await
}

/// What one request gets, decided under the lock.
enum Decision {
    Unauthorized(Option<String>),
    Answer(Step, u64, (u64, u64), String, Option<StreamHold>),
    Exhausted,
}

async fn handle(protocol: Protocol, inner: &Shared, headers: &HeaderMap, body: &[u8]) -> Response {
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let api_key = match protocol {
        Protocol::OpenAi => header_text("authorization")
            .map(|value| value.strip_prefix("Bearer ").unwrap_or(&value).to_owned()),
        Protocol::Anthropic => header_text("x-api-key"),
    };
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let include_usage = body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("fake-model")
        .to_owned();
    let decision = {
        let mut inner = lock(inner);
        let auth_ok = inner
            .api_key
            .as_ref()
            .is_none_or(|key| api_key.as_ref() == Some(key));
        inner.requests.push(RecordedRequest {
            protocol,
            body,
            api_key: api_key.clone(),
            auth_ok,
            anthropic_version: header_text("anthropic-version"),
        });
        if !auth_ok {
            Decision::Unauthorized(api_key)
        } else if let Some(step) = inner.script.pop_front() {
            inner.answers += 1;
            let usage = inner
                .usage
                .unwrap_or((DEFAULT_INPUT_TOKENS, DEFAULT_OUTPUT_TOKENS));
            Decision::Answer(step, inner.answers, usage, model, inner.hold.clone())
        } else {
            Decision::Exhausted
        }
    };
    match decision {
        Decision::Unauthorized(key) => {
            // Like OpenAI, the message names the key it got (masked there; whole here, so a
            // test proves the agent scrubs it).
            let message = match key {
                Some(key) => format!("Incorrect API key provided: {key}"),
                None => "You didn't provide an API key.".to_owned(),
            };
            error(protocol, 401, None, &message)
        }
        Decision::Exhausted => error(protocol, 500, None, SCRIPT_EXHAUSTED),
        Decision::Answer(mut step, n, usage, model, hold) => {
            let step = loop {
                match step {
                    Step::Delayed(delay, inner) => {
                        tokio::time::sleep(delay).await;
                        step = *inner;
                    }
                    Step::Held(hold, inner) => {
                        hold.wait().await;
                        step = *inner;
                    }
                    other => break other,
                }
            };
            if stream && !matches!(step, Step::Error { .. }) {
                let events = stream_events(protocol, step, n, usage, &model, include_usage);
                return sse(events, hold);
            }
            answer(protocol, step, n, usage, &model)
        }
    }
}

fn answer(protocol: Protocol, step: Step, n: u64, usage: (u64, u64), model: &str) -> Response {
    let calls: Vec<(String, String)> = match step {
        Step::Error {
            status,
            retry_after,
        } => {
            let message = match status {
                429 => "Rate limit reached; please retry later.",
                529 => "Overloaded",
                500..=599 => "The server had an error while processing your request.",
                _ => "Invalid request.",
            };
            return error(protocol, status, retry_after, message);
        }
        Step::Text(text) => return text_answer(protocol, &text, n, usage, model),
        Step::ToolCalls(calls) => calls
            .into_iter()
            .map(|(name, args)| (name, args.to_string()))
            .collect(),
        Step::RawToolCall { name, arguments } => vec![(name, arguments)],
        Step::Delayed(_, step) | Step::Held(_, step) => {
            return answer(protocol, *step, n, usage, model);
        }
    };
    let (input_tokens, output_tokens) = usage;
    let body = match protocol {
        Protocol::OpenAi => {
            let tool_calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, arguments))| {
                    json!({
                        "id": format!("call_{n}_{i}"),
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    })
                })
                .collect();
            json!({
                "id": format!("chatcmpl-fake{n}"),
                "object": "chat.completion",
                "created": 1_700_000_000 + n,
                "model": model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": null, "tool_calls": tool_calls, "refusal": null},
                    "logprobs": null,
                    "finish_reason": "tool_calls",
                }],
                "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens, "total_tokens": input_tokens + output_tokens},
            })
        }
        Protocol::Anthropic => {
            let content: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, arguments))| {
                    let input = match serde_json::from_str::<Value>(arguments) {
                        Ok(object @ Value::Object(_)) => object,
                        _ => json!({"raw": arguments}),
                    };
                    json!({"type": "tool_use", "id": format!("toolu_fake{n}_{i}"), "name": name, "input": input})
                })
                .collect();
            message_json(n, model, content, "tool_use", usage)
        }
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// The calls of a tool-calling step as (name, arguments text); text for a text step.
fn step_content(step: Step) -> (Vec<(String, String)>, Option<String>) {
    match step {
        Step::ToolCalls(calls) => (
            calls
                .into_iter()
                .map(|(name, args)| (name, args.to_string()))
                .collect(),
            None,
        ),
        Step::RawToolCall { name, arguments } => (vec![(name, arguments)], None),
        Step::Text(text) => (Vec::new(), Some(text)),
        Step::Delayed(_, step) | Step::Held(_, step) => step_content(*step),
        Step::Error { .. } => (Vec::new(), None),
    }
}

/// The server-sent events of a streamed answer, in the protocol's format.
fn stream_events(
    protocol: Protocol,
    step: Step,
    n: u64,
    (input_tokens, output_tokens): (u64, u64),
    model: &str,
    include_usage: bool,
) -> Vec<String> {
    let (calls, text) = step_content(step);
    let data = |v: Value| format!("data: {v}\n\n");
    match protocol {
        Protocol::OpenAi => {
            let id = format!("chatcmpl-fake{n}");
            let chunk = |delta: Value, finish: Value| {
                data(json!({
                    "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000 + n,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
                }))
            };
            let mut events = vec![chunk(
                json!({"role": "assistant", "content": ""}),
                Value::Null,
            )];
            if let Some(text) = &text {
                for part in text.split_inclusive(' ') {
                    events.push(chunk(json!({"content": part}), Value::Null));
                }
            }
            for (i, (name, arguments)) in calls.iter().enumerate() {
                events.push(chunk(
                    json!({"tool_calls": [{"index": i, "id": format!("call_{n}_{i}"), "type": "function",
                        "function": {"name": name, "arguments": ""}}]}),
                    Value::Null,
                ));
                events.push(chunk(
                    json!({"tool_calls": [{"index": i, "function": {"arguments": arguments}}]}),
                    Value::Null,
                ));
            }
            let finish = if calls.is_empty() {
                "stop"
            } else {
                "tool_calls"
            };
            events.push(chunk(json!({}), json!(finish)));
            if include_usage {
                events.push(data(json!({
                    "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000 + n,
                    "model": model, "choices": [],
                    "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
                        "total_tokens": input_tokens + output_tokens},
                })));
            }
            events.push("data: [DONE]\n\n".to_owned());
            events
        }
        Protocol::Anthropic => {
            let event = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
            let mut events = vec![event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": format!("msg_fake{n}"), "type": "message", "role": "assistant",
                    "model": model, "content": [], "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
            )];
            let mut index = 0;
            if let Some(text) = &text {
                events.push(event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "text", "text": ""}}),
                ));
                for part in text.split_inclusive(' ') {
                    events.push(event(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": index,
                            "delta": {"type": "text_delta", "text": part}}),
                    ));
                }
                events.push(event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                ));
                index += 1;
            }
            for (i, (name, arguments)) in calls.iter().enumerate() {
                events.push(event(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": index,
                        "content_block": {"type": "tool_use", "id": format!("toolu_fake{n}_{i}"),
                            "name": name, "input": {}}}),
                ));
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": arguments}}),
                ));
                events.push(event(
                    "content_block_stop",
                    json!({"type": "content_block_stop", "index": index}),
                ));
                index += 1;
            }
            let stop = if calls.is_empty() {
                "end_turn"
            } else {
                "tool_use"
            };
            events.push(event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                    "usage": {"output_tokens": output_tokens}}),
            ));
            events.push(event("message_stop", json!({"type": "message_stop"})));
            events
        }
    }
}

/// A `text/event-stream` answer sending `events` one by one; with `hold`, everything after
/// the first event waits until `hold` is notified.
fn sse(events: Vec<String>, hold: Option<StreamHold>) -> Response {
    let stream = futures::stream::unfold(
        (events.into_iter(), 0usize, hold),
        |(mut events, sent, hold)| async move {
            let event = events.next()?;
            if sent == 1
                && let Some(hold) = &hold
            {
                hold.wait().await;
            }
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(event)),
                (events, sent + 1, hold),
            ))
        },
    );
    let mut response = axum::body::Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

fn text_answer(
    protocol: Protocol,
    text: &str,
    n: u64,
    (input_tokens, output_tokens): (u64, u64),
    model: &str,
) -> Response {
    let body = match protocol {
        Protocol::OpenAi => json!({
            "id": format!("chatcmpl-fake{n}"),
            "object": "chat.completion",
            "created": 1_700_000_000 + n,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": {"prompt_tokens": input_tokens, "completion_tokens": output_tokens, "total_tokens": input_tokens + output_tokens},
        }),
        Protocol::Anthropic => message_json(
            n,
            model,
            vec![json!({"type": "text", "text": text})],
            "end_turn",
            (input_tokens, output_tokens),
        ),
    };
    (StatusCode::OK, axum::Json(body)).into_response()
}

fn message_json(
    n: u64,
    model: &str,
    content: Vec<Value>,
    stop_reason: &str,
    (input_tokens, output_tokens): (u64, u64),
) -> Value {
    json!({
        "id": format!("msg_fake{n}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
    })
}

/// An error answer in the protocol's shape.
fn error(protocol: Protocol, status: u16, retry_after: Option<u64>, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        401 => "authentication_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    let body = match protocol {
        Protocol::OpenAi => {
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        }
        Protocol::Anthropic => {
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
    };
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn post(
        url: &str,
        body: Value,
        key: Option<(&str, &str)>,
    ) -> (u16, Option<String>, Value) {
        let (status, retry_after, text) = post_raw(url, body, key).await;
        (
            status,
            retry_after,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    async fn post_raw(
        url: &str,
        body: Value,
        key: Option<(&str, &str)>,
    ) -> (u16, Option<String>, String) {
        let url = url.to_owned();
        let key = key.map(|(name, value)| (name.to_owned(), value.to_owned()));
        tokio::task::spawn_blocking(move || {
            // A raw HTTP/1.1 request: the testkit has no HTTP client dependency.
            use std::io::{Read as _, Write as _};
            let rest = url.strip_prefix("http://").expect("an http URL");
            let (host, path) = rest.split_once('/').expect("a path");
            let mut stream = std::net::TcpStream::connect(host).expect("connect to the fake");
            let body = body.to_string();
            let auth = key.map(|(name, value)| format!("{name}: {value}\r\n")).unwrap_or_default();
            write!(
                stream,
                "POST /{path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .expect("write the request");
            let mut answer = String::new();
            stream.read_to_string(&mut answer).expect("read the answer");
            let (head, body) = answer.split_once("\r\n\r\n").expect("a header/body split");
            let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
            let retry_after = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("retry-after: ").map(str::to_owned));
            // Streamed answers are chunked: join the chunks' data.
            let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
            let body = if chunked { unchunk(body) } else { body.to_owned() };
            (status, retry_after, body)
        })
        .await
        .expect("the request thread")
    }

    fn unchunk(mut body: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = body.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || rest.len() < size {
                break;
            }
            out.push_str(&rest[..size]);
            body = rest[size..].trim_start_matches("\r\n");
        }
        out
    }

    #[tokio::test]
    async fn streams_answers_as_server_sent_events_in_both_protocols() {
        let model = within(FakeModel::start())
            .await
            .expect("in time")
            .expect("start");
        model.set_usage(7, 3);
        model.script(vec![
            Step::Text("hello there".into()),
            Step::ToolCalls(vec![("finish".into(), json!({"summary": "s"}))]),
        ]);
        let chat = format!("{}/chat/completions", model.openai_base_url());
        let (status, _, text) = within(post_raw(
            &chat,
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}}),
            None,
        ))
        .await
        .expect("in time");
        assert_eq!(status, 200);
        let events: Vec<&str> = text
            .split("\n\n")
            .filter_map(|e| e.strip_prefix("data: "))
            .collect();
        assert_eq!(events.last(), Some(&"[DONE]"));
        let content: String = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Value>(e).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(content, "hello there");
        let usage: Value = serde_json::from_str(events[events.len() - 2]).expect("usage chunk");
        assert_eq!(usage["usage"]["prompt_tokens"], 7);

        let messages = format!("{}/v1/messages", model.anthropic_base_url());
        let (status, _, text) = within(post_raw(
            &messages,
            json!({"model": "c", "stream": true}),
            None,
        ))
        .await
        .expect("in time");
        assert_eq!(status, 200);
        assert!(text.starts_with("event: message_start"), "{text}");
        assert!(
            text.contains("\"partial_json\":\"{\\\"summary\\\":\\\"s\\\"}\""),
            "{text}"
        );
        assert!(
            text.contains("\"output_tokens\":3")
                && text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
            "{text}"
        );
    }

    fn within<F: std::future::Future>(f: F) -> tokio::time::Timeout<F> {
        tokio::time::timeout(Duration::from_secs(10), f)
    }

    #[tokio::test]
    async fn answers_both_protocols_from_one_script() {
        let model = within(FakeModel::start())
            .await
            .expect("in time")
            .expect("start");
        model.script(vec![
            Step::ToolCalls(vec![("read_file".into(), json!({"path": "a.rs"}))]),
            Step::Text("done".into()),
            Step::Error {
                status: 429,
                retry_after: Some(0),
            },
        ]);
        let chat = format!("{}/chat/completions", model.openai_base_url());
        let messages = format!("{}/v1/messages", model.anthropic_base_url());

        let (status, _, body) = within(post(&chat, json!({"model": "m"}), None))
            .await
            .expect("in time");
        assert_eq!(status, 200);
        let call = &body["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["name"], "read_file");
        assert_eq!(
            call["function"]["arguments"],
            json!(json!({"path": "a.rs"}).to_string())
        );
        assert_eq!(body["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(body["usage"]["prompt_tokens"], DEFAULT_INPUT_TOKENS);

        let (status, _, body) = within(post(&messages, json!({"model": "c"}), None))
            .await
            .expect("in time");
        assert_eq!(status, 200);
        assert_eq!(body["content"][0], json!({"type": "text", "text": "done"}));
        assert_eq!(body["stop_reason"], "end_turn");
        assert_eq!(body["usage"]["output_tokens"], DEFAULT_OUTPUT_TOKENS);

        let (status, retry_after, body) = within(post(&messages, json!({}), None))
            .await
            .expect("in time");
        assert_eq!((status, retry_after.as_deref()), (429, Some("0")));
        assert_eq!(body["error"]["type"], "rate_limit_error");

        let (status, _, body) = within(post(&chat, json!({}), None)).await.expect("in time");
        assert_eq!(status, 500);
        assert_eq!(body["error"]["message"], SCRIPT_EXHAUSTED);

        let requests = model.requests();
        assert_eq!(requests.len(), 4);
        assert_eq!(requests[1].protocol, Protocol::Anthropic);
        assert_eq!(requests[0].body, json!({"model": "m"}));
    }

    #[tokio::test]
    async fn checks_the_api_key_per_protocol() {
        let model = within(FakeModel::start())
            .await
            .expect("in time")
            .expect("start");
        model.require_api_key("sk-right");
        model.push(Step::Text("hi".into()));
        let chat = format!("{}/chat/completions", model.openai_base_url());
        let messages = format!("{}/v1/messages", model.anthropic_base_url());

        let (status, _, body) = within(post(
            &chat,
            json!({}),
            Some(("authorization", "Bearer sk-wrong")),
        ))
        .await
        .expect("in time");
        assert_eq!(status, 401);
        assert_eq!(body["error"]["type"], "authentication_error");
        let (status, _, _) = within(post(&messages, json!({}), Some(("x-api-key", "sk-right"))))
            .await
            .expect("in time");
        assert_eq!(status, 200);

        let auth: Vec<(bool, Option<String>)> = model
            .requests()
            .into_iter()
            .map(|r| (r.auth_ok, r.api_key))
            .collect();
        assert_eq!(
            auth,
            vec![
                (false, Some("sk-wrong".into())),
                (true, Some("sk-right".into()))
            ]
        );
        assert_eq!(model.remaining_steps(), 0);
    }
}
