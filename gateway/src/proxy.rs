//! The two endpoints agents call — `POST /v1/chat/completions` (OpenAI-compatible) and
//! `POST /v1/messages` (Anthropic) — and what happens to a request:
//!
//! 1. The token (`Authorization: Bearer …` or `x-api-key`) must belong to a live attempt
//!    ([`crate::registry`]), and to the attempt the request names, if it names one.
//! 2. The attempt's run, Agent and Project must exist; the Agent must have a provider for the
//!    protocol from the attempt's provider on ([`crate::plan`]).
//! 3. The budgets must not be spent ([`crate::budget`], over the usage ledger).
//! 4. The Agent's in-flight requests are bounded (a permit, waited for briefly).
//! 5. The request goes to the providers in order: 429, 408, 5xx and transport failures are
//!    retried on the same provider (`Retry-After` honoured, up to a cap) and then fail over
//!    to the next; any other answer is the client's.
//! 6. The answer is passed on — streamed answers chunk by chunk as they arrive — while its
//!    usage is counted from the provider's usage fields, costed at that provider's prices
//!    and written to the ledger before the answer ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use countersign_crds::attempt::ATTEMPT_HEADER;
use countersign_crds::usage::{Spend, day_of};
use countersign_crds::{Agent, Project};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use kube::ResourceExt;
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::budget::{self, Limits};
use crate::catalog::Catalog;
use crate::error::{Denial, error_response};
use crate::keys::Keys;
use crate::ledger::{Ledgers, ProjectKey, Record};
use crate::metrics::Metrics;
use crate::plan::{self, Protocol, Upstream};
use crate::registry::{self, AttemptRef, Liveness};
use crate::upstream::{self, HttpClient};
use crate::usage::{self, StreamUsage, Tokens};

/// How the gateway behaves; see `countersign gateway --help`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Longest wait for a provider's answer to start (and between two chunks of a stream).
    pub upstream_timeout: Duration,
    /// Longest `Retry-After` (or backoff) waited before retrying a provider; a longer one
    /// fails over to the next provider at once.
    pub max_retry_wait: Duration,
    /// Longest wait for a free request slot of the Agent before answering `429`.
    pub queue_wait: Duration,
    /// In-flight requests per running attempt an Agent may have (times its
    /// `maxConcurrentRuns`).
    pub requests_per_attempt: u32,
    /// Largest provider answer passed on when not streamed.
    pub max_answer_bytes: usize,
    /// Longest wait for usage to be written before an answer ends.
    pub ledger_write_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            upstream_timeout: Duration::from_secs(600),
            max_retry_wait: Duration::from_secs(30),
            queue_wait: Duration::from_secs(30),
            requests_per_attempt: 4,
            max_answer_bytes: 64 * 1024 * 1024,
            ledger_write_timeout: Duration::from_secs(5),
        }
    }
}

/// What the endpoints share.
pub struct Gateway {
    /// Watched cluster state.
    pub catalog: Catalog,
    /// Usage ledgers.
    pub ledgers: Arc<Ledgers>,
    /// Provider keys.
    pub keys: Keys,
    /// The client to providers.
    pub http: HttpClient,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Behaviour.
    pub settings: Settings,
    /// Where "now" comes from (the UTC day of spend).
    pub clock: fn() -> jiff::Timestamp,
    /// The Kubernetes client (milestones' ConfigMaps).
    pub client: kube::Client,
    /// Held while a milestone is written: this replica's notes never conflict with each
    /// other (notes are few; other replicas' are retried on conflicts).
    pub milestone_writes: tokio::sync::Mutex<()>,
    permits: Mutex<Permits>,
}

/// Concurrency permits per (Agent, provider): the limit they were made for, and the semaphore.
type Permits = HashMap<(String, String), (usize, Arc<Semaphore>)>;

impl Gateway {
    /// A gateway over `catalog` and `client`.
    pub fn new(
        catalog: Catalog,
        client: kube::Client,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Self {
        Self {
            catalog,
            ledgers: Ledgers::new(client.clone(), settings.ledger_write_timeout),
            keys: Keys::new(client.clone()),
            http: upstream::client(),
            metrics,
            settings,
            clock: jiff::Timestamp::now,
            client,
            milestone_writes: tokio::sync::Mutex::new(()),
            permits: Mutex::new(HashMap::new()),
        }
    }

    /// A request slot of `agent`, waited for at most the queue wait.
    async fn permit(&self, agent: &Agent) -> Result<OwnedSemaphorePermit, Denial> {
        let capacity = (agent.spec.max_concurrent_runs.max(1) as usize)
            .saturating_mul(self.settings.requests_per_attempt.max(1) as usize);
        let key = (agent.namespace().unwrap_or_default(), agent.name_any());
        let semaphore = {
            let mut permits = self
                .permits
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let entry = permits
                .entry(key)
                .or_insert_with(|| (capacity, Arc::new(Semaphore::new(capacity))));
            if entry.0 != capacity {
                // The Agent changed: new requests use a slot pool of the new size.
                *entry = (capacity, Arc::new(Semaphore::new(capacity)));
            }
            entry.1.clone()
        };
        match tokio::time::timeout(self.settings.queue_wait, semaphore.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Denial::Busy),
        }
    }
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(gw, Protocol::OpenAi, headers, body).await
}

/// `POST /v1/messages`.
pub async fn messages(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    handle(gw, Protocol::Anthropic, headers, body).await
}

async fn handle(gw: Arc<Gateway>, protocol: Protocol, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    gw.metrics.in_flight(1);
    let response = match forward(&gw, protocol, &headers, body, started).await {
        Ok(response) => response,
        Err(denial) => {
            tracing::info!(reason = denial.label(), "refused a request");
            gw.metrics.refused(denial.label());
            gw.metrics
                .request(protocol.label(), "refused", started.elapsed().as_secs_f64());
            denial.respond(protocol)
        }
    };
    gw.metrics.in_flight(-1);
    response
}

/// The token a request presents: `Authorization: Bearer <token>` or `x-api-key: <token>`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or(v.strip_prefix("bearer ")));
    bearer
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Everything known about the request's attempt.
pub(crate) struct Caller {
    pub(crate) attempt: AttemptRef,
    pub(crate) run: Arc<countersign_crds::AgentRun>,
    pub(crate) agent: Arc<Agent>,
    project: Arc<Project>,
    ledger_key: ProjectKey,
}

pub(crate) fn identify(catalog: &Catalog, headers: &HeaderMap) -> Result<Caller, Denial> {
    let token = presented_token(headers).ok_or(Denial::Unauthorized("no gateway token"))?;
    let (attempt, live) = catalog
        .attempt(&registry::token_hash(token))
        .ok_or(Denial::Unauthorized("unknown gateway token"))?;
    if let Liveness::Ended(why) = live {
        return Err(Denial::Ended(why));
    }
    if let Some(claimed) = headers.get(ATTEMPT_HEADER)
        && claimed.to_str().ok() != Some(attempt.key().as_str())
    {
        return Err(Denial::WrongAttempt);
    }
    let run = catalog
        .run(&attempt)
        .ok_or_else(|| Denial::NotServed("the attempt's AgentRun is gone".into()))?;
    let ns = attempt.namespace.clone();
    // A run routed moments ago may not show its routing in the cache yet: its pod, created
    // by the controller for the chosen Agent, says which.
    let agent_name = run
        .agent_name()
        .or(attempt.agent_label.as_deref())
        .unwrap_or_default();
    let agent = catalog
        .agent(&ns, agent_name)
        .ok_or_else(|| Denial::NotServed(format!("Agent {agent_name:?} is gone")))?;
    let project = catalog
        .project(&ns, &run.spec.project_ref.name)
        .ok_or_else(|| {
            Denial::NotServed(format!("Project {:?} is gone", run.spec.project_ref.name))
        })?;
    let ledger_key = ProjectKey {
        namespace: ns,
        name: project.name_any(),
    };
    Ok(Caller {
        attempt,
        run,
        agent,
        project,
        ledger_key,
    })
}

async fn forward(
    gw: &Arc<Gateway>,
    protocol: Protocol,
    headers: &HeaderMap,
    body: Bytes,
    started: Instant,
) -> Result<Response, Denial> {
    let caller = identify(&gw.catalog, headers)?;
    let upstreams = plan::upstreams(&caller.agent.spec, &caller.attempt.provider, protocol)
        .map_err(|e| Denial::NotServed(e.to_string()))?;
    let request: Value = serde_json::from_slice(&body)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| Denial::BadRequest("the request body is not a JSON object".into()))?;
    let streaming = request.get("stream").and_then(Value::as_bool) == Some(true);

    let today = day_of(&(gw.clock)());
    let ledger = gw
        .ledgers
        .view(&caller.ledger_key)
        .await
        .map_err(|e| Denial::Unavailable(format!("cannot read the usage ledger: {e}")))?;
    let attempt_spend = ledger
        .attempt(&caller.attempt.key())
        .filter(|a| a.run_uid == caller.attempt.run_uid)
        .map(|a| a.spend)
        .unwrap_or_default();
    let limits = Limits {
        attempt_tokens: caller.agent.spec.limits.max_tokens,
        attempt_cost_cents: caller.agent.spec.limits.max_cost.cents,
        project_day_cents: caller
            .project
            .spec
            .limits
            .max_spend_per_day
            .map(|u| u.cents),
    };
    budget::check(&attempt_spend, &ledger.spend_on(&today), &limits).map_err(Denial::Budget)?;
    let permit = gw.permit(&caller.agent).await?;

    let namespace = caller.attempt.namespace.clone();
    let mut last_failure = Failure::None;
    for (index, up) in upstreams.iter().enumerate() {
        if index > 0 {
            gw.metrics.upstream("failed_over");
            tracing::info!(attempt = %caller.attempt.key(), provider = %up.provider, "failing over");
        }
        let key = match &up.key {
            Some(reference) => match gw.keys.get(&namespace, reference).await {
                Ok(key) => Some(key),
                Err(error) => {
                    tracing::warn!(provider = %up.provider, %error, "no key for a provider");
                    last_failure = Failure::Transport(format!(
                        "the key of provider {} cannot be read",
                        up.provider
                    ));
                    continue;
                }
            },
            None => None,
        };
        let upstream_body = upstream::body_for(&request, up, streaming);
        let mut tries = 0u32;
        loop {
            let sent = send(gw, up, key.as_ref(), headers, upstream_body.clone()).await;
            let wait = match sent {
                Ok(answer) if answer.status().is_success() => {
                    gw.metrics.upstream("ok");
                    let done = Done {
                        gw: gw.clone(),
                        protocol,
                        upstream: up.clone(),
                        request_bytes: body.len() as u64,
                        record: Pending {
                            ledger_key: caller.ledger_key.clone(),
                            project_uid: caller.project.uid().unwrap_or_default(),
                            attempt: caller.attempt.key(),
                            run_uid: caller.attempt.run_uid.clone(),
                            agent: caller.agent.name_any(),
                            day: today.clone(),
                        },
                        started,
                        _permit: permit,
                    };
                    return Ok(if streaming {
                        deliver_stream(done, answer)
                    } else {
                        deliver_whole(done, answer).await
                    });
                }
                Ok(answer) if upstream::retryable(answer.status()) => {
                    let status = answer.status();
                    let after = upstream::retry_after(answer.headers());
                    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
                    let bytes =
                        read_capped(answer.into_body(), 64 * 1024, gw.settings.upstream_timeout)
                            .await
                            .unwrap_or_default();
                    last_failure = Failure::Answer {
                        status,
                        retry_after: after,
                        content_type,
                        body: upstream::scrub(&bytes, key.as_ref()),
                    };
                    after
                }
                Ok(answer) => {
                    // The provider refused the request itself: that is the client's answer.
                    gw.metrics.upstream("error");
                    let status = answer.status();
                    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
                    let bytes = read_capped(
                        answer.into_body(),
                        1024 * 1024,
                        gw.settings.upstream_timeout,
                    )
                    .await
                    .unwrap_or_default();
                    gw.metrics.request(
                        protocol.label(),
                        "upstream_error",
                        started.elapsed().as_secs_f64(),
                    );
                    return Ok(Failure::Answer {
                        status,
                        retry_after: None,
                        content_type,
                        body: upstream::scrub(&bytes, key.as_ref()),
                    }
                    .respond(protocol));
                }
                Err(why) => {
                    last_failure = Failure::Transport(why);
                    None
                }
            };
            gw.metrics.upstream("retryable");
            if tries >= up.retries {
                break;
            }
            let wait = wait.unwrap_or_else(|| upstream::backoff(tries, gw.settings.max_retry_wait));
            if wait > gw.settings.max_retry_wait {
                // A long Retry-After: another provider may answer now.
                break;
            }
            tries += 1;
            tokio::time::sleep(wait).await;
        }
    }
    gw.metrics.request(
        protocol.label(),
        "upstream_error",
        started.elapsed().as_secs_f64(),
    );
    Ok(last_failure.respond(protocol))
}

/// Sends one request to `up`; the answer's head, or why there is none.
async fn send(
    gw: &Gateway,
    up: &Upstream,
    key: Option<&SecretString>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<http::Response<Incoming>, String> {
    let request = upstream::request_for(up, key, headers, body)
        .map_err(|e| format!("cannot build the request to {}: {e}", up.provider))?;
    match tokio::time::timeout(gw.settings.upstream_timeout, gw.http.request(request)).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(format!("provider {} is unreachable: {error}", up.provider)),
        Err(_) => Err(format!(
            "provider {} did not answer within {:?}",
            up.provider, gw.settings.upstream_timeout
        )),
    }
}

/// How the last try of every provider failed.
enum Failure {
    None,
    Transport(String),
    Answer {
        status: StatusCode,
        retry_after: Option<Duration>,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
}

impl Failure {
    fn respond(self, protocol: Protocol) -> Response {
        match self {
            Failure::None => error_response(
                protocol,
                StatusCode::BAD_GATEWAY,
                "countersign_upstream_unavailable",
                "Countersign gateway: no provider could be tried",
            ),
            Failure::Transport(why) => error_response(
                protocol,
                StatusCode::BAD_GATEWAY,
                "countersign_upstream_unavailable",
                &format!("Countersign gateway: {why}"),
            ),
            Failure::Answer {
                status,
                retry_after,
                content_type,
                body,
            } => {
                let mut response = Response::new(Body::from(body));
                *response.status_mut() = status;
                if let Some(ct) = content_type {
                    response.headers_mut().insert(header::CONTENT_TYPE, ct);
                }
                if let Some(after) = retry_after {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs()));
                }
                response
            }
        }
    }
}

/// Reads at most `max` bytes of `body`, each frame within `timeout`.
async fn read_capped(mut body: Incoming, max: usize, timeout: Duration) -> Result<Bytes, String> {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err("the provider stopped answering".into()),
            Ok(None) => return Ok(Bytes::from(out)),
            Ok(Some(Err(e))) => return Err(format!("the provider's answer broke off: {e}")),
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > max {
                        return Err(format!("the provider's answer is larger than {max} bytes"));
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Who a successful answer's usage is recorded for.
struct Pending {
    ledger_key: ProjectKey,
    project_uid: String,
    attempt: String,
    run_uid: String,
    agent: String,
    day: String,
}

/// A successful answer being delivered.
struct Done {
    gw: Arc<Gateway>,
    protocol: Protocol,
    upstream: Upstream,
    request_bytes: u64,
    record: Pending,
    started: Instant,
    _permit: OwnedSemaphorePermit,
}

impl Done {
    /// Counts `tokens` and writes them to the ledger.
    async fn count(&self, tokens: Tokens) {
        let up = &self.upstream;
        let cost = budget::cost_micro_cents(
            tokens.input,
            tokens.output,
            up.input_cents_per_million,
            up.output_cents_per_million,
        );
        self.gw.metrics.usage(tokens.input, tokens.output, cost);
        if !tokens.reported {
            tracing::warn!(provider = %up.provider, "the provider reported no usage; estimated");
        }
        let r = &self.record;
        self.gw
            .ledgers
            .record(
                &r.ledger_key,
                &r.project_uid,
                Record {
                    attempt: r.attempt.clone(),
                    run_uid: r.run_uid.clone(),
                    agent: r.agent.clone(),
                    day: r.day.clone(),
                    spend: Spend {
                        input_tokens: tokens.input,
                        output_tokens: tokens.output,
                        cost_micro_cents: cost,
                        requests: 1,
                    },
                },
            )
            .await;
        self.gw.metrics.request(
            self.protocol.label(),
            "ok",
            self.started.elapsed().as_secs_f64(),
        );
    }
}

/// A whole (non-streamed) answer: read, counted, written to the ledger, then passed on.
async fn deliver_whole(done: Done, answer: http::Response<Incoming>) -> Response {
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let max = done.gw.settings.max_answer_bytes;
    let body = match read_capped(answer.into_body(), max, done.gw.settings.upstream_timeout).await {
        Ok(body) => body,
        Err(why) => {
            done.count(usage::estimate(done.request_bytes, 0)).await;
            return Failure::Transport(why).respond(done.protocol);
        }
    };
    let tokens = usage::from_json(done.protocol, &body)
        .unwrap_or_else(|| usage::estimate(done.request_bytes, body.len() as u64));
    done.count(tokens).await;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    response
}

/// A streamed answer: every chunk is passed on as it arrives while its usage is parsed;
/// the usage is written before the stream ends (or, if the client goes away first, as soon
/// as the stream is dropped).
fn deliver_stream(done: Done, answer: http::Response<Incoming>) -> Response {
    let status = answer.status();
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let timeout = done.gw.settings.upstream_timeout;
    let parser = StreamUsage::new(done.protocol);
    let state = StreamState {
        body: answer.into_body(),
        parser,
        done: Some(done),
        timeout,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        let done = state.done.as_ref()?;
        let request_bytes = done.request_bytes;
        match tokio::time::timeout(state.timeout, state.body.frame()).await {
            Ok(Some(Ok(frame))) => {
                let data = frame.into_data().unwrap_or_default();
                state.parser.feed(&data);
                Some((Ok::<Bytes, std::io::Error>(data), state))
            }
            ended => {
                if let Ok(Some(Err(e))) = &ended {
                    tracing::warn!(error = %e, "a provider's stream broke off");
                }
                if ended.is_err() {
                    tracing::warn!("a provider's stream stopped sending");
                }
                let tokens = state.parser.tokens(request_bytes);
                if let Some(done) = state.done.take() {
                    done.count(tokens).await;
                }
                None
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("text/event-stream")),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A stream in delivery; counts what it saw if dropped before its end (client gone).
struct StreamState {
    body: Incoming,
    parser: StreamUsage,
    done: Option<Done>,
    timeout: Duration,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let tokens = self.parser.tokens(done.request_bytes);
            tokio::spawn(async move { done.count(tokens).await });
        }
    }
}
