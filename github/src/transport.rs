//! One call to GitHub: authorisation as the App or an installation, conditional GETs with
//! remembered `ETag`s (the body and `Link` header of a `304` are the remembered ones, so a
//! listing pages the same way either answer), and retries of 5xx answers, dropped connections and rate limits with
//! backoff (honouring `Retry-After` and `X-RateLimit-Reset`) up to the configured limits.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use jiff::Timestamp;
use serde::de::DeserializeOwned;

use crate::GitHubError;
use crate::app::{GitHubApp, lock};
use crate::error::Message;

/// First wait after a 5xx answer or a dropped connection; doubles per retry.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Wait after a secondary rate limit that names no `Retry-After`, as GitHub documents.
pub const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Most bytes of answers remembered for conditional GETs (bodies, URLs and headers). A full
/// resync of every gate re-reads six listings per pull request; with 10,000 open pull
/// requests that is 60,000 URLs, and each must stay remembered until the next pass for its
/// `304`. Beyond the budget, arbitrary entries are forgotten (their next read is a full one),
/// never the whole cache at once.
pub const ETAG_BUDGET_BYTES: usize = 64 * 1024 * 1024;

/// Remembered answers for conditional GETs, by URL, within [`ETAG_BUDGET_BYTES`].
#[derive(Default)]
pub(crate) struct Etags {
    answers: std::collections::HashMap<String, Cached>,
    bytes: usize,
}

/// `value` in its own allocation (a clone would share the buffer it was parsed from).
fn owned(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

impl Etags {
    fn get(&self, url: &str) -> Option<Cached> {
        self.answers.get(url).cloned()
    }

    fn insert(&mut self, url: &str, cached: Cached) {
        self.insert_within(url, cached, ETAG_BUDGET_BYTES);
    }

    fn insert_within(&mut self, url: &str, cached: Cached, budget: usize) {
        let size = Self::size(url, &cached);
        if let Some(old) = self.answers.insert(url.to_owned(), cached) {
            self.bytes -= Self::size(url, &old);
        }
        self.bytes += size;
        if self.bytes > budget {
            // Down to 90% of the budget, so eviction runs once per many inserts; the map's
            // order has nothing to do with age or URL, so what goes is arbitrary.
            let target = budget / 10 * 9;
            let mut gone = Vec::new();
            let mut bytes = self.bytes;
            for (key, value) in &self.answers {
                if bytes <= target {
                    break;
                }
                if key != url {
                    bytes -= Self::size(key, value);
                    gone.push(key.clone());
                }
            }
            for key in gone {
                self.answers.remove(&key);
            }
            self.bytes = bytes;
        }
    }

    fn size(url: &str, cached: &Cached) -> usize {
        url.len()
            + cached.body.len()
            + cached.etag.len()
            + cached.link.as_ref().map_or(0, HeaderValue::len)
            + 64
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.answers.len()
    }
}

/// Who a request is made as.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Auth {
    /// The App itself (JWT).
    App,
    /// One installation (installation token).
    Installation(u64),
}

/// A successful answer.
pub(crate) struct Answer {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// GitHub answered `304 Not Modified` to our `If-None-Match`: `body` is the remembered
    /// one, and the call did not count against the rate limit.
    pub(crate) not_modified: bool,
}

/// A remembered `GET` answer, for conditional requests.
#[derive(Clone)]
pub(crate) struct Cached {
    etag: HeaderValue,
    body: Bytes,
    /// The answer's `Link` header: a `304` need not repeat it, and pagination follows it.
    link: Option<HeaderValue>,
}

impl Answer {
    pub(crate) fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, GitHubError> {
        serde_json::from_slice(&self.body).map_err(|e| GitHubError::Decode(format!("{what}: {e}")))
    }
}

impl GitHubApp {
    /// Sends one call, retrying 5xx answers, dropped connections and rate limits with backoff
    /// (honouring `Retry-After` and `X-RateLimit-Reset`) up to the configured limits.
    pub(crate) async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        auth: Auth,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.send_with(method, path_or_url, auth, body, Repeat::Safe)
            .await
    }

    /// Sends one call; `repeat` says whether it may be sent again after an answer that does
    /// not say whether GitHub carried it out (a 5xx, a dropped connection, a timeout).
    /// Rate-limited calls are always sent again: GitHub did not carry them out.
    pub(crate) async fn send_with(
        &self,
        method: Method,
        path_or_url: &str,
        auth: Auth,
        body: Option<&serde_json::Value>,
        repeat: Repeat,
    ) -> Result<Answer, GitHubError> {
        let url = resolve(&self.inner.base_url, path_or_url)?;
        let config = &self.inner.config;
        let mut attempt = 0;
        loop {
            let (error, wait) = match self.send_once(&method, &url, auth, body).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(error)) => (error, None),
                Err(Failure::Retry { error, .. })
                    if repeat == Repeat::Never
                        && !matches!(error, GitHubError::RateLimited { .. }) =>
                {
                    // The call may have been carried out: the caller finds out (by a key
                    // GitHub stores) before it tries again.
                    (error, None)
                }
                Err(Failure::Retry { error, wait }) => {
                    (error, Some(wait.unwrap_or_else(|| backoff(attempt))))
                }
            };
            if let (GitHubError::Unauthorized(_), Auth::Installation(id)) = (&error, auth) {
                // Perhaps a revoked token: the next call mints a new one.
                self.forget_installation_token(id);
            }
            let Some(wait) =
                wait.filter(|w| attempt < config.max_retries && *w <= config.max_retry_wait)
            else {
                return Err(error);
            };
            tracing::debug!(%error, attempt, wait_ms = wait.as_millis() as u64, %url, "retrying GitHub call");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        auth: Auth,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, Failure> {
        let config = &self.inner.config;
        let authorization = self.authorization(auth).await.map_err(|e| match e {
            e if e.is_transient() => Failure::Retry {
                error: e,
                wait: None,
            },
            e => Failure::Final(e),
        })?;
        let conditional = (method == Method::GET)
            .then(|| lock(&self.inner.etags).get(url))
            .flatten();
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::ACCEPT, "application/vnd.github+json");
        if let Some(cached) = &conditional {
            builder = builder.header(http::header::IF_NONE_MATCH, cached.etag.clone());
        }
        let request =
            self.inner.http.build_request(builder, body).map_err(|e| {
                Failure::Final(GitHubError::Config(format!("bad request {url}: {e}")))
            })?;
        let exchange = async {
            let response = self.inner.http.execute(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
            Ok::<_, octocrab::Error>((parts, body))
        };
        let (parts, bytes) = match tokio::time::timeout(config.request_timeout, exchange).await {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                self.inner.metrics.record(method, None, None);
                return Err(Failure::Retry {
                    error: GitHubError::Transport(format!("{method} {url}: {e}")),
                    wait: None,
                });
            }
            Err(_) => {
                self.inner.metrics.record(method, None, None);
                return Err(Failure::Retry {
                    error: GitHubError::Transport(format!(
                        "{method} {url}: no answer within {:?}",
                        config.request_timeout
                    )),
                    wait: None,
                });
            }
        };
        let status = parts.status;
        self.inner
            .metrics
            .record(method, Some(status), Some(&parts.headers));
        if status == StatusCode::NOT_MODIFIED
            && let Some(cached) = conditional
        {
            self.inner.metrics.conditional_hit();
            return Ok(Answer {
                headers: not_modified_headers(parts.headers, &cached),
                body: cached.body,
                not_modified: true,
            });
        }
        if status.is_success() {
            if method == Method::GET
                && let Some(etag) = parts.headers.get(http::header::ETAG)
            {
                // Copies, not clones: hyper's header values and a body that came in one read
                // are views into the connection's read buffer, and a kept view keeps that
                // whole buffer alive (up to 64 KiB) while the budget counts only the view.
                // Cloned ETags pinned 62 MiB of buffers at 1,000 gates, 125 MiB at 2,000
                // (docs/benchmarks.md, "The controller at scale").
                lock(&self.inner.etags).insert(
                    url,
                    Cached {
                        etag: owned(etag),
                        body: Bytes::copy_from_slice(&bytes),
                        link: parts.headers.get(http::header::LINK).map(owned),
                    },
                );
            }
            return Ok(Answer {
                headers: parts.headers,
                body: bytes,
                not_modified: false,
            });
        }
        Err(classify(status, &parts.headers, &bytes, method, url))
    }
}

/// The headers of a `304` answer, with the remembered answer's `Link` when the `304` repeats
/// none (GitHub need not), so a listing read from the cache pages on as the first read did.
fn not_modified_headers(mut headers: HeaderMap, cached: &Cached) -> HeaderMap {
    if let Some(link) = &cached.link
        && !headers.contains_key(http::header::LINK)
    {
        headers.insert(http::header::LINK, link.clone());
    }
    headers
}

/// The URL for `path_or_url`: a path is appended to the API root; an absolute URL (a `Link`
/// header's next page) is followed only when it lies under the API root, so credentials never
/// go to another host (GitHub Enterprise links are absolute and must keep them; a link
/// elsewhere is refused rather than followed without them).
pub(crate) fn resolve(base_url: &str, path_or_url: &str) -> Result<String, GitHubError> {
    if !(path_or_url.starts_with("http://") || path_or_url.starts_with("https://")) {
        return Ok(format!("{base_url}{path_or_url}"));
    }
    let under_root = path_or_url
        .strip_prefix(base_url)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?']));
    if under_root {
        Ok(path_or_url.to_owned())
    } else {
        Err(GitHubError::Decode(format!(
            "GitHub linked to {path_or_url}, outside the API root {base_url}: not followed with the App's credentials"
        )))
    }
}

/// Whether a call may be sent again when its answer does not say whether GitHub carried it
/// out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Reads, updates to a given state, and creations that are harmless twice.
    Safe,
    /// Creations that would happen twice (a comment, a check run).
    Never,
}

/// A failed attempt: worth retrying (after `wait`, or the next backoff step), or final.
enum Failure {
    Retry {
        error: GitHubError,
        wait: Option<Duration>,
    },
    Final(GitHubError),
}

/// Turns an error answer into a [`Failure`].
fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    method: &Method,
    url: &str,
) -> Failure {
    let message = serde_json::from_slice::<Message>(body)
        .map(|m| m.describe())
        .unwrap_or_else(|_| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned());
    if let Some(wait) = rate_limit_wait(status, headers, &message, Timestamp::now()) {
        return Failure::Retry {
            error: GitHubError::RateLimited { retry_after: wait },
            wait: Some(wait),
        };
    }
    let what = format!("{method} {url}: {message}");
    match status.as_u16() {
        404 => Failure::Final(GitHubError::NotFound(what)),
        401 => Failure::Final(GitHubError::Unauthorized(what)),
        403 => Failure::Final(GitHubError::Forbidden(what)),
        500..=599 => Failure::Retry {
            error: GitHubError::Status {
                status: status.as_u16(),
                message: what,
            },
            wait: None,
        },
        code => Failure::Final(GitHubError::Status {
            status: code,
            message: what,
        }),
    }
}

/// How long a rate-limited answer asks us to wait, or `None` when it is not a rate limit.
/// Primary limits (`X-RateLimit-Remaining: 0`) wait for `X-RateLimit-Reset`; secondary limits
/// send `Retry-After` or, without it, get a minute, as GitHub documents.
pub fn rate_limit_wait(
    status: StatusCode,
    headers: &HeaderMap,
    message: &str,
    now: Timestamp,
) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    if header("x-ratelimit-remaining") == Some("0")
        && let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.trim().parse::<i64>().ok())
    {
        let secs = (reset - now.as_second()).clamp(1, i64::MAX);
        return Some(Duration::from_secs(secs.unsigned_abs()));
    }
    let secondary = message
        .to_ascii_lowercase()
        .contains("secondary rate limit");
    (secondary || status == StatusCode::TOO_MANY_REQUESTS).then_some(SECONDARY_LIMIT_WAIT)
}

fn backoff(attempt: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << attempt.min(10))
}

#[cfg(test)]
mod tests;
