//! Where `/api/v1/simulate` and `/api/v1/validate` run: never on the threads that answer
//! requests (a slow Rego module must not delay webhook deliveries), at most a few at a time,
//! each within a time limit and, when run in a worker process, a memory limit.
//!
//! - [`Isolation::Process`] (what `countersign bot` uses): each request runs in a fresh
//!   `countersign policy-api-worker` process with its data segment capped (`RLIMIT_DATA`) and
//!   its CPU time capped (`RLIMIT_CPU`), killed at the time limit. A policy that allocates
//!   without bound or spins is answered 422 and takes nothing else down.
//! - [`Isolation::Threads`] (the in-process fallback for library users and tests): each
//!   request runs on Tokio's blocking pool; the time limit answers the client, the Rego
//!   engine's own 2-second limit ends the work.
//!
//! Requests beyond the concurrency cap wait briefly for a slot, then get 503.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;

/// Longest wait for a free evaluation slot before answering 503.
pub const SLOT_WAIT: Duration = Duration::from_secs(2);

/// Which endpoint a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /api/v1/simulate`.
    Simulate,
    /// `POST /api/v1/validate`.
    Validate,
}

impl Endpoint {
    /// The name used on the worker's command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Simulate => "simulate",
            Self::Validate => "validate",
        }
    }

    /// Parses a worker command-line name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "simulate" => Some(Self::Simulate),
            "validate" => Some(Self::Validate),
            _ => None,
        }
    }

    /// The answer to `body`: status and JSON. Blocking (CPU-bound): call it off the request
    /// threads.
    pub fn answer(self, body: &[u8]) -> (StatusCode, Value) {
        let result = match self {
            Self::Simulate => serde_json::from_slice(body)
                .map_err(|e| super::ApiError::BadRequest(format!("cannot parse the body: {e}")))
                .and_then(super::simulate),
            Self::Validate => std::str::from_utf8(body)
                .map_err(|e| super::ApiError::BadRequest(format!("the body is not UTF-8: {e}")))
                .and_then(super::validate_text)
                .map(|verdicts| {
                    let valid = verdicts.iter().all(|v| v.errors.is_empty());
                    json!({ "valid": valid, "policies": verdicts })
                }),
        };
        match result {
            Ok(value) => (StatusCode::OK, value),
            Err(e) => e.status_and_body(),
        }
    }
}

/// How evaluations are isolated.
#[derive(Clone, Debug)]
pub enum Isolation {
    /// On the blocking thread pool of this process.
    Threads,
    /// In a worker process per request.
    Process {
        /// The `countersign` binary (it serves `policy-api-worker`).
        program: PathBuf,
        /// Most bytes of data segment (heap) a worker may use.
        memory_limit: u64,
    },
}

/// Limits of the policy API.
#[derive(Clone, Debug)]
pub struct PolicyLimits {
    /// Evaluations running at once.
    pub concurrency: usize,
    /// Longest one evaluation may take before it is answered 503 (and its worker killed).
    pub timeout: Duration,
    /// Where evaluations run.
    pub isolation: Isolation,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        Self {
            concurrency: 2,
            timeout: Duration::from_secs(10),
            isolation: Isolation::Threads,
        }
    }
}

/// Runs evaluations under [`PolicyLimits`].
#[derive(Clone, Debug)]
pub struct PolicyRunner {
    limits: PolicyLimits,
    slots: Arc<Semaphore>,
}

impl PolicyRunner {
    /// A runner with `limits`.
    pub fn new(limits: PolicyLimits) -> Self {
        let slots = Arc::new(Semaphore::new(limits.concurrency.max(1)));
        Self { limits, slots }
    }

    /// Answers `body` for `endpoint`, off the request threads and within the limits.
    pub async fn run(&self, endpoint: Endpoint, body: bytes::Bytes) -> (StatusCode, Value) {
        let busy = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "too many policy evaluations are running; try again shortly"}),
            )
        };
        let Ok(Ok(permit)) =
            tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned()).await
        else {
            return busy();
        };
        let timeout = self.limits.timeout;
        let slow = || {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": format!("the evaluation took longer than {timeout:?}")}),
            )
        };
        match &self.limits.isolation {
            Isolation::Threads => {
                let work = tokio::task::spawn_blocking(move || {
                    // The slot is held until the work really ends, not just the request.
                    let _permit = permit;
                    endpoint.answer(&body)
                });
                match tokio::time::timeout(timeout, work).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(join)) => {
                        tracing::error!(error = %join, "a policy evaluation panicked");
                        internal()
                    }
                    Err(_) => slow(),
                }
            }
            Isolation::Process {
                program,
                memory_limit,
            } => {
                let answer = in_worker(program, *memory_limit, timeout, endpoint, &body).await;
                drop(permit);
                answer.unwrap_or_else(|failure| match failure {
                    WorkerFailure::Slow => slow(),
                    WorkerFailure::Limit => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        json!({"error": "the policy exceeded the memory or CPU limit of an evaluation"}),
                    ),
                    WorkerFailure::Broken(why) => {
                        tracing::error!(%why, "the policy worker failed");
                        internal()
                    }
                })
            }
        }
    }
}

fn internal() -> (StatusCode, Value) {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": "internal error"}),
    )
}

enum WorkerFailure {
    Slow,
    Limit,
    Broken(String),
}

/// Runs one evaluation in `program policy-api-worker <endpoint>` with the body on stdin.
async fn in_worker(
    program: &std::path::Path,
    memory_limit: u64,
    timeout: Duration,
    endpoint: Endpoint,
    body: &[u8],
) -> Result<(StatusCode, Value), WorkerFailure> {
    let cpu_seconds = timeout.as_secs().max(1) + 1;
    let mut command = tokio::process::Command::new(program);
    command
        .arg("policy-api-worker")
        .arg(endpoint.name())
        .env("RUST_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    limit_resources(&mut command, memory_limit, cpu_seconds);
    let mut child = command
        .spawn()
        .map_err(|e| WorkerFailure::Broken(format!("cannot start {}: {e}", program.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(body)
            .await
            .map_err(|e| WorkerFailure::Broken(format!("cannot write to the worker: {e}")))?;
    }
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(e)) => return Err(WorkerFailure::Broken(format!("worker: {e}"))),
        Err(_) => return Err(WorkerFailure::Slow),
    };
    if !output.status.success() {
        use std::os::unix::process::ExitStatusExt;
        return Err(match output.status.signal() {
            // Out of memory aborts; over the CPU limit is SIGXCPU/SIGKILL.
            Some(_) => WorkerFailure::Limit,
            None => WorkerFailure::Broken(format!("the worker exited with {}", output.status)),
        });
    }
    let answer: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| WorkerFailure::Broken(format!("the worker's answer: {e}")))?;
    let status = answer["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| WorkerFailure::Broken("the worker's answer has no status".into()))?;
    Ok((status, answer["body"].clone()))
}

/// Caps the worker's data segment and CPU time before it runs.
fn limit_resources(command: &mut tokio::process::Command, memory: u64, cpu_seconds: u64) {
    // SAFETY: the closure runs in the forked child before exec and calls only setrlimit, which
    // is async-signal-safe; it touches no memory shared with the parent.
    unsafe {
        command.pre_exec(move || {
            let set = |resource, limit: u64| {
                let value = libc::rlimit {
                    rlim_cur: limit as libc::rlim_t,
                    rlim_max: limit as libc::rlim_t,
                };
                if libc::setrlimit(resource, &value) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            };
            set(libc::RLIMIT_DATA, memory)?;
            set(libc::RLIMIT_CPU, cpu_seconds)?;
            Ok(())
        });
    }
}

/// The worker's side: reads the body from stdin, writes `{"status", "body"}` to stdout.
/// What `countersign policy-api-worker <endpoint>` runs.
pub fn run_worker(endpoint: &str) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let endpoint = Endpoint::parse(endpoint)
        .ok_or_else(|| anyhow::anyhow!("unknown policy API endpoint {endpoint:?}"))?;
    let mut body = Vec::new();
    std::io::stdin()
        .take(super::MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut body)?;
    let (status, value) = if body.len() > super::MAX_BODY_BYTES {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": "the body is too large"}),
        )
    } else {
        endpoint.answer(&body)
    };
    let answer = json!({"status": status.as_u16(), "body": value});
    std::io::stdout().write_all(answer.to_string().as_bytes())?;
    Ok(())
}
