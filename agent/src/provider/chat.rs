//! What the chat providers (`openai`, `anthropic`) share: the provider-neutral conversation,
//! the [`ChatModel`] trait each wire format implements, [`ChatAgent`] (a [`Provider`] that
//! drives any chat model through the bounded tool loop of [`crate::session`]), and the HTTP
//! layer over ureq ([`HttpClient`]) with status mapping and retries.
//!
//! Retries: a request that failed with 429, 5xx, a dropped connection or a timeout is repeated
//! up to `spec.retries` times, after `Retry-After` when the provider sent one, otherwise after
//! an exponential backoff (1 s, 2 s, 4 s … capped at [`BACKOFF_CAP`]). No request and no sleep
//! runs past the budget's deadline. The API key lives only inside [`HttpClient`]: it is sent
//! in one header and scrubbed from every error message.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

use super::{Budget, Job, Limit, Provider, ProviderError, Work};
use crate::session::Session;
use crate::tools::ToolSpec;

/// First retry delay when the provider sent no `Retry-After`; doubled per retry.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest backoff between two retries (without `Retry-After`).
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Longest single model request, however much time the budget has left.
pub const MAX_REQUEST_TIME: Duration = Duration::from_secs(10 * 60);
/// Most characters of a provider's error message kept in a [`ProviderError`].
const MAX_ERROR_CHARS: usize = 500;

/// A tool call the model made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolCall {
    /// The provider's id for the call; its result refers to it.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// The arguments as JSON text, exactly as the model wrote them (OpenAI sends a string that
    /// may not even be valid JSON; it is echoed back unchanged in the conversation).
    pub arguments: String,
}

impl ToolCall {
    /// The arguments as a JSON object (an empty string counts as `{}`), or why they are not.
    pub fn parsed_arguments(&self) -> Result<Value, String> {
        if self.arguments.trim().is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        match serde_json::from_str::<Value>(&self.arguments) {
            Ok(value @ Value::Object(_)) => Ok(value),
            Ok(_) => Err("the tool arguments must be a JSON object".into()),
            Err(e) => Err(format!(
                "the tool arguments are not valid JSON ({e}); send a JSON object"
            )),
        }
    }
}

/// The result of one tool call, sent back to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolResult {
    /// The [`ToolCall::id`] it answers.
    pub call_id: String,
    /// The tool's output or error text.
    pub content: String,
    /// Whether the call failed.
    pub is_error: bool,
}

/// One message of a conversation after the system prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// The agent speaking as the user: the task, a nudge, or follow-up feedback.
    User(String),
    /// A model reply: its text (maybe empty) and tool calls.
    Assistant {
        /// Free text of the reply.
        text: String,
        /// Tool calls of the reply, in order.
        tool_calls: Vec<ToolCall>,
    },
    /// The results of the previous assistant message's tool calls, in the same order.
    ToolResults(Vec<ToolResult>),
}

/// A whole conversation with a chat model, in neither provider's format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    /// The system prompt.
    pub system: String,
    /// The messages, oldest first.
    pub messages: Vec<Message>,
}

/// One model reply, parsed from either wire format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// Free text (empty when the model only called tools).
    pub text: String,
    /// Tool calls, in order.
    pub tool_calls: Vec<ToolCall>,
    /// Prompt tokens the provider counted.
    pub input_tokens: u64,
    /// Completion tokens the provider counted.
    pub output_tokens: u64,
}

/// Bounds of one model turn, from the budget.
#[derive(Clone, Copy, Debug)]
pub struct TurnLimits {
    /// No request (or retry) may run past this instant.
    pub deadline: Instant,
    /// Tokens left in the budget, an upper bound for the reply's length.
    pub max_output_tokens: u64,
}

/// A chat model speaking one wire format: one request/response round per call.
pub trait ChatModel {
    /// Sends the conversation and the tools, returns the model's reply. Retries transient
    /// failures within `limits.deadline`.
    fn complete(
        &mut self,
        conversation: &Conversation,
        tools: &[ToolSpec],
        limits: TurnLimits,
    ) -> Result<Reply, ProviderError>;
}

/// A [`Provider`] that drives a [`ChatModel`] through the bounded tool loop, keeping the
/// conversation so [`Provider::follow_up`] continues it.
pub struct ChatAgent<M> {
    model: M,
    workspace: PathBuf,
    session: Option<Session>,
}

impl<M: ChatModel> ChatAgent<M> {
    /// An agent using `model` on the checkout at `workspace`.
    pub fn new(model: M, workspace: &Path) -> Self {
        Self {
            model,
            workspace: workspace.to_path_buf(),
            session: None,
        }
    }

    /// The conversation so far (`None` before [`Provider::start`]).
    pub fn conversation(&self) -> Option<&Conversation> {
        self.session.as_ref().map(Session::conversation)
    }
}

impl<M: ChatModel> Provider for ChatAgent<M> {
    fn start(&mut self, job: &Job, budget: &mut Budget) -> Result<Work, ProviderError> {
        let session = self.session.insert(Session::new(job, &self.workspace));
        session.run(&mut self.model, budget)
    }

    fn follow_up(&mut self, feedback: &str, budget: &mut Budget) -> Result<Work, ProviderError> {
        match self.session.as_mut() {
            Some(session) => {
                session.push_feedback(feedback);
                session.run(&mut self.model, budget)
            }
            // A caller bug (the run loop always starts first); the command provider answers
            // the same way.
            None => Err(ProviderError::Refused(
                "a follow-up needs a started job".into(),
            )),
        }
    }
}

/// How the API key is sent.
pub enum Auth {
    /// No key (local Ollama or vLLM).
    None,
    /// `Authorization: Bearer <key>` (OpenAI-compatible).
    Bearer(SecretString),
    /// The key in a header of its own, e.g. `x-api-key` (Anthropic).
    Header(&'static str, SecretString),
}

impl Auth {
    fn secret(&self) -> Option<&str> {
        match self {
            Auth::None => None,
            Auth::Bearer(key) | Auth::Header(_, key) => Some(key.expose_secret()),
        }
    }
}

/// Why one HTTP attempt failed, before retries decide what it means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// 429.
    RateLimited {
        /// The provider's message.
        message: String,
        /// The provider's `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// 5xx, 408, a connection failure or a timeout.
    Unavailable {
        /// What happened.
        message: String,
        /// The provider's `Retry-After`.
        retry_after: Option<Duration>,
        /// Whether the request timed out (at the deadline that means the time is up).
        timed_out: bool,
    },
    /// Any other 4xx (or an unusable URL): retrying will not help.
    Refused(String),
    /// The provider gateway refused the attempt itself (its token expired with the attempt,
    /// or a budget is spent): neither retrying nor another provider will help.
    Denied(String),
    /// 2xx with a body that is not JSON.
    BadResponse(String),
}

/// Maps a non-2xx answer to a [`Failure`]; `body` is the provider's answer (its
/// `error.message` is used when it has one).
pub fn classify_status(status: u16, retry_after: Option<Duration>, body: &str) -> Failure {
    let message = format!("HTTP {status}: {}", error_message(body));
    if is_gateway_refusal(status, body) {
        return Failure::Denied(error_message(body));
    }
    match status {
        429 => Failure::RateLimited {
            message,
            retry_after,
        },
        408 | 500..=599 => Failure::Unavailable {
            message,
            retry_after,
            timed_out: false,
        },
        _ => Failure::Refused(message),
    }
}

/// Error types of the provider gateway's own refusals (see `countersign-gateway`).
pub const GATEWAY_ERROR_PREFIX: &str = "countersign_";

/// Whether an error answer is the provider gateway refusing the attempt (`402`, or `401`/`403`
/// with an error type starting with [`GATEWAY_ERROR_PREFIX`]). Its `429` (busy) is retried
/// like a provider's.
fn is_gateway_refusal(status: u16, body: &str) -> bool {
    let kind = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.pointer("/error/type")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let ours = kind.is_some_and(|k| k.starts_with(GATEWAY_ERROR_PREFIX));
    status == 402 || (ours && matches!(status, 401 | 403))
}

/// The provider's error message from an error body (OpenAI and Anthropic both use
/// `{"error": {"message": …}}`), else the start of the body.
fn error_message(body: &str) -> String {
    let parsed = serde_json::from_str::<Value>(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        let error = v.get("error")?;
        error
            .get("message")
            .and_then(Value::as_str)
            .or(error.as_str())
    });
    let text = message.unwrap_or(body).trim();
    let text = if text.is_empty() {
        "(empty answer)"
    } else {
        text
    };
    text.chars().take(MAX_ERROR_CHARS).collect()
}

/// The delay before retry number `retry` (0-based) without `Retry-After`.
pub fn backoff(retry: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(retry.min(16)))
        .min(BACKOFF_CAP)
}

/// Runs `attempt` (given the request timeout) and retries transient failures up to `retries`
/// times, sleeping with `sleep`, never past `deadline`.
pub fn with_retries<T>(
    retries: u32,
    deadline: Instant,
    sleep: &mut dyn FnMut(Duration),
    mut attempt: impl FnMut(Duration) -> Result<T, Failure>,
) -> Result<T, ProviderError> {
    let mut retry = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(ProviderError::OutOfBudget(Limit::Time));
        }
        let failure = match attempt(remaining.min(MAX_REQUEST_TIME)) {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let (retry_after, give_up) = match failure {
            Failure::Refused(message) => return Err(ProviderError::Refused(message)),
            Failure::Denied(message) => return Err(ProviderError::Denied(message)),
            Failure::BadResponse(message) => return Err(ProviderError::BadResponse(message)),
            Failure::Unavailable {
                timed_out: true, ..
            } if Instant::now() >= deadline => {
                return Err(ProviderError::OutOfBudget(Limit::Time));
            }
            Failure::RateLimited {
                message,
                retry_after,
            } => (retry_after, ProviderError::RateLimited(message)),
            Failure::Unavailable {
                message,
                retry_after,
                ..
            } => (retry_after, ProviderError::Unavailable(message)),
        };
        if retry >= retries {
            return Err(give_up);
        }
        let delay = retry_after.unwrap_or_else(|| backoff(retry));
        if Instant::now() + delay >= deadline {
            tracing::debug!(?delay, "no retry: it would pass the deadline");
            return Err(give_up);
        }
        retry += 1;
        tracing::debug!(retry, of = retries, ?delay, error = %give_up, "retrying the model request");
        sleep(delay);
    }
}

/// Posts JSON to a provider with the key, the timeout and the retries of one provider entry.
pub struct HttpClient {
    agent: ureq::Agent,
    auth: Auth,
    retries: u32,
    headers: Vec<(String, String)>,
}

impl HttpClient {
    /// A client sending `auth`, retrying transient failures `retries` times.
    pub fn new(auth: Auth, retries: u32) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .user_agent(concat!("countersign-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Self {
            agent,
            auth,
            retries,
            headers: Vec::new(),
        }
    }

    /// The same client, sending `headers` with every request too (e.g. the attempt it works
    /// for, to the provider gateway).
    pub fn with_headers(mut self, headers: &[(String, String)]) -> Self {
        self.headers = headers.to_vec();
        self
    }

    /// POSTs `body` to `url` with `headers` (plus the key) and returns the JSON answer.
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &Value,
        deadline: Instant,
    ) -> Result<Value, ProviderError> {
        // Scrubbed before anything (the retry log included) sees the message.
        with_retries(self.retries, deadline, &mut std::thread::sleep, |timeout| {
            self.attempt(url, headers, body, timeout)
                .map_err(|failure| self.scrub(failure))
        })
    }

    fn attempt(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &Value,
        timeout: Duration,
    ) -> Result<Value, Failure> {
        let mut request = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build();
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        request = match &self.auth {
            Auth::None => request,
            Auth::Bearer(key) => {
                request.header("authorization", format!("Bearer {}", key.expose_secret()))
            }
            Auth::Header(name, key) => request.header(*name, key.expose_secret()),
        };
        let mut response = request.send_json(body).map_err(transport_failure)?;
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let text = response.body_mut().read_to_string().map_err(|e| match e {
            ureq::Error::Timeout(_) | ureq::Error::Io(_) => transport_failure(e),
            other => Failure::BadResponse(format!("cannot read the answer: {other}")),
        })?;
        tracing::trace!(status, body = %text, "model answer");
        if !(200..300).contains(&status) {
            return Err(classify_status(status, retry_after, &text));
        }
        serde_json::from_str(&text)
            .map_err(|e| Failure::BadResponse(format!("the answer is not JSON: {e}")))
    }

    /// Removes the API key (and masked `sk-…` keys some providers echo) from a failure.
    fn scrub(&self, failure: Failure) -> Failure {
        let clean = |message: String| redact(&message, self.auth.secret());
        match failure {
            Failure::RateLimited {
                message,
                retry_after,
            } => Failure::RateLimited {
                message: clean(message),
                retry_after,
            },
            Failure::Unavailable {
                message,
                retry_after,
                timed_out,
            } => Failure::Unavailable {
                message: clean(message),
                retry_after,
                timed_out,
            },
            Failure::Refused(message) => Failure::Refused(clean(message)),
            Failure::Denied(message) => Failure::Denied(clean(message)),
            Failure::BadResponse(message) => Failure::BadResponse(clean(message)),
        }
    }
}

/// `message` without `secret` and without anything shaped like an API key (`sk-…`), which
/// OpenAI echoes masked in its 401 message.
pub fn redact(message: &str, secret: Option<&str>) -> String {
    let mut text = message.to_owned();
    if let Some(secret) = secret.filter(|s| !s.is_empty()) {
        text = text.replace(secret, "[redacted]");
    }
    text.split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .map(|word| {
            let core = word.trim_end_matches(|c: char| {
                c.is_whitespace() || c == '"' || c == '\'' || c == '.' || c == ','
            });
            if core.starts_with("sk-") && core.len() > 6 {
                word.replacen(core, "[redacted]", 1)
            } else {
                word.to_owned()
            }
        })
        .collect()
}

/// `Retry-After` (seconds) or OpenAI's `retry-after-ms`. HTTP-date forms are ignored (the
/// backoff applies).
fn retry_after(headers: &ureq::http::HeaderMap) -> Option<Duration> {
    let value = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let seconds = value("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| value("retry-after"))?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

fn transport_failure(error: ureq::Error) -> Failure {
    match error {
        ureq::Error::Timeout(_) => Failure::Unavailable {
            message: "the request timed out".into(),
            retry_after: None,
            timed_out: true,
        },
        ureq::Error::BadUri(_) | ureq::Error::Http(_) | ureq::Error::InvalidProxyUrl => {
            Failure::Refused(format!("invalid request: {error}"))
        }
        other => Failure::Unavailable {
            message: format!("cannot reach the provider: {other}"),
            retry_after: None,
            timed_out: false,
        },
    }
}

/// Fills in a token estimate (4 characters a token) when the server reported no usage, so
/// the token and cost limits still apply.
pub fn estimate_missing_usage(reply: &mut Reply, request: &Value) {
    if reply.input_tokens != 0 || reply.output_tokens != 0 {
        return;
    }
    tracing::debug!("the provider reported no usage; estimating tokens");
    let tokens = |chars: usize| (chars as u64).div_ceil(4);
    reply.input_tokens = tokens(request.to_string().len());
    let calls: usize = reply
        .tool_calls
        .iter()
        .map(|c| c.name.len() + c.arguments.len())
        .sum();
    reply.output_tokens = tokens(reply.text.len() + calls);
}

#[cfg(test)]
mod tests;
