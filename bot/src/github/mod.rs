//! Countersign's GitHub client: the App's identity (JWT), installation tokens (cached until
//! shortly before they expire), repository-scoped tokens for agent runs, and the REST calls
//! the bot and controller make, with rate-limit-aware retries.
//!
//! Requests go through octocrab's HTTP stack (rustls, timeouts) with our own authorisation
//! header, so that JWT lifetimes, token caching and retries are ours and visible here.

pub mod jwt;
pub mod parse;
mod pulls;
mod runs;

pub use pulls::*;
pub use runs::*;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use jiff::Timestamp;
use octocrab::Octocrab;
use octocrab::jsonwebtoken::EncodingKey;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::tokens::{MintError, RepoRef, RepoToken, TokenMinter};
use jwt::AppClaims;

/// Sent as `User-Agent`, as GitHub requires.
pub const USER_AGENT: &str = concat!("countersign/", env!("CARGO_PKG_VERSION"));

/// How to reach GitHub as the App.
#[derive(Clone, Debug)]
pub struct AppConfig {
    /// The App's numeric id.
    pub app_id: u64,
    /// The App's private key (PEM, PKCS#1 or PKCS#8).
    pub private_key_pem: SecretString,
    /// API root, `https://api.github.com/` or `https://HOST/api/v3/` for GitHub Enterprise.
    pub base_url: String,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Retries of one call after 5xx answers and rate limits.
    pub max_retries: u32,
    /// Longest single wait a retry may take (a longer `Retry-After` fails the call).
    pub max_retry_wait: Duration,
}

/// A repository permission level as GitHub reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// No access.
    None,
    /// Read.
    Read,
    /// Triage.
    Triage,
    /// Write.
    Write,
    /// Maintain.
    Maintain,
    /// Admin.
    Admin,
}

/// Reactions Countersign adds as immediate feedback.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reaction {
    /// 👍 `+1`.
    PlusOne,
    /// 👎 `-1`.
    MinusOne,
    /// 👀 `eyes`.
    Eyes,
    /// 🚀 `rocket`.
    Rocket,
    /// 😕 `confused`.
    Confused,
}

/// Why a GitHub call failed. Callers branch on the variant.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    /// 404.
    #[error("not found on GitHub: {0}")]
    NotFound(String),
    /// 401: the JWT or token was refused.
    #[error("GitHub refused the credentials: {0}")]
    Unauthorized(String),
    /// 403 that is not a rate limit.
    #[error("GitHub forbids this: {0}")]
    Forbidden(String),
    /// Still rate-limited after the retries.
    #[error("GitHub rate-limited the call; retry in {retry_after:?}")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// 5xx after the retries, or another unexpected status.
    #[error("GitHub answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// GitHub's message.
        message: String,
    },
    /// GitHub could not be reached.
    #[error("cannot reach GitHub: {0}")]
    Transport(String),
    /// An answer that is not what GitHub documents.
    #[error("unexpected answer from GitHub: {0}")]
    Decode(String),
    /// The App's configuration is unusable (bad key, bad URL).
    #[error("invalid GitHub App configuration: {0}")]
    Config(String),
}

impl GitHubError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. } | Self::Status { .. } | Self::Transport(_)
        )
    }
}

/// The GitHub App. Cheap to clone.
#[derive(Clone)]
pub struct GitHubApp {
    inner: Arc<Inner>,
}

struct Inner {
    app_id: u64,
    key: EncodingKey,
    base_url: String,
    http: Octocrab,
    config: AppConfig,
    jwt: Mutex<Option<(AppClaims, String)>>,
    tokens: Mutex<HashMap<u64, CachedToken>>,
    slug: tokio::sync::OnceCell<String>,
    etags: Mutex<HashMap<String, (HeaderValue, Bytes)>>,
}

#[derive(Clone)]
struct CachedToken {
    token: SecretString,
    expires_at: Timestamp,
}

impl fmt::Debug for GitHubApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubApp")
            .field("app_id", &self.inner.app_id)
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

/// Installation tokens are re-minted this long before GitHub says they expire.
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);
/// First wait after a 5xx answer or a dropped connection; doubles per retry.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Wait after a secondary rate limit that names no `Retry-After`, as GitHub documents.
pub const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Most remembered `ETag`s for conditional GETs.
pub const ETAG_CAPACITY: usize = 1024;
/// Page size for listing calls.
const PER_PAGE: u32 = 100;
/// Most pages read from one listing (10,000 items).
const MAX_PAGES: usize = 100;

/// Who a request is made as.
#[derive(Clone, Copy, Debug)]
enum Auth {
    /// The App itself (JWT).
    App,
    /// One installation (installation token).
    Installation(u64),
}

/// A successful answer.
struct Answer {
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json<T: DeserializeOwned>(&self, what: &str) -> Result<T, GitHubError> {
        serde_json::from_slice(&self.body).map_err(|e| GitHubError::Decode(format!("{what}: {e}")))
    }
}

impl GitHubApp {
    /// Builds the App client; fails on an unusable key or URL. Call it inside a Tokio
    /// runtime (the HTTP stack spawns its connection buffer there).
    pub fn new(config: AppConfig) -> Result<Self, GitHubError> {
        let key = jwt::parse_key(config.private_key_pem.expose_secret())?;
        let base_url = config.base_url.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&base_url)
            .map_err(|e| GitHubError::Config(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(GitHubError::Config(format!(
                "base URL {base_url:?} must be http or https"
            )));
        }
        let http = Octocrab::builder()
            .add_retry_config(octocrab::service::middleware::retry::RetryConfig::None)
            .set_connect_timeout(Some(config.request_timeout))
            .set_read_timeout(Some(config.request_timeout))
            .add_header(http::header::USER_AGENT, USER_AGENT.to_owned())
            .build()
            .map_err(|e| GitHubError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                app_id: config.app_id,
                key,
                base_url,
                http,
                config,
                jwt: Mutex::new(None),
                tokens: Mutex::new(HashMap::new()),
                slug: tokio::sync::OnceCell::new(),
                etags: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The App's id.
    pub fn app_id(&self) -> u64 {
        self.inner.app_id
    }

    /// The App's slug (`GET /app`, cached); its bot account is `<slug>[bot]`.
    pub async fn slug(&self) -> Result<String, GitHubError> {
        #[derive(Deserialize)]
        struct App {
            slug: String,
        }
        self.inner
            .slug
            .get_or_try_init(|| async {
                let answer = self.send(Method::GET, "/app", Auth::App, None).await?;
                Ok(answer.json::<App>("GET /app")?.slug)
            })
            .await
            .cloned()
    }

    /// The installation serving `owner/repo` (`GET /repos/{owner}/{repo}/installation`).
    pub async fn installation_for_repo(&self, owner: &str, repo: &str) -> Result<u64, GitHubError> {
        let path = format!("/repos/{}/{}/installation", seg(owner), seg(repo));
        let answer = self.send(Method::GET, &path, Auth::App, None).await?;
        Ok(answer.json::<Id>("installation")?.id)
    }

    /// A client acting as installation `id` (token minted on first use, cached, refreshed
    /// shortly before expiry).
    pub fn installation(&self, id: u64) -> InstallationClient {
        InstallationClient {
            app: self.clone(),
            id,
        }
    }

    /// A token for installation `id`, narrowed to `repositories` and `permissions` when given
    /// (`POST /app/installations/{id}/access_tokens`). Never cached.
    pub async fn mint_installation_token(
        &self,
        id: u64,
        repositories: &[&str],
        permissions: &[(&str, &str)],
    ) -> Result<(SecretString, Timestamp), GitHubError> {
        #[derive(Deserialize)]
        struct Token {
            token: String,
            expires_at: Timestamp,
        }
        let mut body = serde_json::Map::new();
        if !repositories.is_empty() {
            body.insert("repositories".into(), serde_json::json!(repositories));
        }
        if !permissions.is_empty() {
            let p: serde_json::Map<_, _> = permissions
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect();
            body.insert("permissions".into(), p.into());
        }
        let path = format!("/app/installations/{id}/access_tokens");
        let body = serde_json::Value::Object(body);
        let answer = self
            .send(Method::POST, &path, Auth::App, Some(&body))
            .await?;
        let token: Token = answer.json("installation token")?;
        Ok((SecretString::from(token.token), token.expires_at))
    }

    fn app_jwt(&self) -> Result<String, GitHubError> {
        let now = Timestamp::now().as_second();
        let mut cached = lock(&self.inner.jwt);
        if let Some((claims, jwt)) = cached.as_ref()
            && !claims.needs_refresh(now)
        {
            return Ok(jwt.clone());
        }
        let claims = AppClaims::at(self.inner.app_id, now);
        let jwt = jwt::sign(&claims, &self.inner.key)?;
        *cached = Some((claims, jwt.clone()));
        Ok(jwt)
    }

    /// The cached token of installation `id`, minted when missing or about to expire.
    /// A boxed future with a named `Send` type: minting goes through `send` again (as the
    /// App), and the compiler cannot infer auto traits through that cycle.
    fn installation_token(
        &self,
        id: u64,
    ) -> futures::future::BoxFuture<'_, Result<SecretString, GitHubError>> {
        Box::pin(async move {
            let now = Timestamp::now();
            if let Some(t) = lock(&self.inner.tokens).get(&id)
                && now
                    .saturating_add(TOKEN_REFRESH_MARGIN)
                    .is_ok_and(|soon| soon < t.expires_at)
            {
                return Ok(t.token.clone());
            }
            let (token, expires_at) = self.mint_installation_token(id, &[], &[]).await?;
            lock(&self.inner.tokens).insert(
                id,
                CachedToken {
                    token: token.clone(),
                    expires_at,
                },
            );
            Ok(token)
        })
    }

    async fn authorization(&self, auth: Auth) -> Result<HeaderValue, GitHubError> {
        let value = match auth {
            Auth::App => format!("Bearer {}", self.app_jwt()?),
            Auth::Installation(id) => {
                let token = self.installation_token(id).await?;
                format!("token {}", token.expose_secret())
            }
        };
        let mut value = HeaderValue::from_str(&value)
            .map_err(|_| GitHubError::Decode("GitHub issued a token that is not ASCII".into()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// Sends one call, retrying 5xx answers, dropped connections and rate limits with backoff
    /// (honouring `Retry-After` and `X-RateLimit-Reset`) up to the configured limits.
    async fn send(
        &self,
        method: Method,
        path_or_url: &str,
        auth: Auth,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        let url = if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.inner.base_url)
        };
        let config = &self.inner.config;
        let mut attempt = 0;
        loop {
            let (error, wait) = match self.send_once(&method, &url, auth, body).await {
                Ok(answer) => return Ok(answer),
                Err(Failure::Final(error)) => (error, None),
                Err(Failure::Retry { error, wait }) => {
                    (error, Some(wait.unwrap_or_else(|| backoff(attempt))))
                }
            };
            if let (GitHubError::Unauthorized(_), Auth::Installation(id)) = (&error, auth) {
                // Perhaps a revoked token: the next call mints a new one.
                lock(&self.inner.tokens).remove(&id);
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
            .then(|| lock(&self.inner.etags).get(url).cloned())
            .flatten();
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header(http::header::AUTHORIZATION, authorization)
            .header(http::header::ACCEPT, "application/vnd.github+json");
        if let Some((etag, _)) = &conditional {
            builder = builder.header(http::header::IF_NONE_MATCH, etag.clone());
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
                return Err(Failure::Retry {
                    error: GitHubError::Transport(format!("{method} {url}: {e}")),
                    wait: None,
                });
            }
            Err(_) => {
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
        if status == StatusCode::NOT_MODIFIED
            && let Some((_, cached)) = conditional
        {
            return Ok(Answer {
                headers: parts.headers,
                body: cached,
            });
        }
        if status.is_success() {
            if method == Method::GET
                && let Some(etag) = parts.headers.get(http::header::ETAG)
            {
                let mut etags = lock(&self.inner.etags);
                if etags.len() >= ETAG_CAPACITY {
                    etags.clear();
                }
                etags.insert(url.to_owned(), (etag.clone(), bytes.clone()));
            }
            return Ok(Answer {
                headers: parts.headers,
                body: bytes,
            });
        }
        Err(classify(status, &parts.headers, &bytes, method, url))
    }
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

/// Calls made as one installation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct InstallationClient {
    app: GitHubApp,
    id: u64,
}

impl InstallationClient {
    /// The installation id.
    pub fn id(&self) -> u64 {
        self.id
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.app
            .send(method, path, Auth::Installation(self.id), body)
            .await
    }

    /// `login`'s permission on `owner/repo`
    /// (`GET /repos/{owner}/{repo}/collaborators/{login}/permission`; 404 → `None`).
    pub async fn repo_permission(
        &self,
        owner: &str,
        repo: &str,
        login: &str,
    ) -> Result<Permission, GitHubError> {
        let path = format!(
            "/repos/{}/{}/collaborators/{}/permission",
            seg(owner),
            seg(repo),
            seg(login)
        );
        match self.send(Method::GET, &path, None).await {
            Ok(answer) => Ok(parse::parse_permission(&answer.json("permission")?)),
            Err(GitHubError::NotFound(_)) => Ok(Permission::None),
            Err(e) => Err(e),
        }
    }

    /// Every item of the listing at `path` (no query), following `Link: rel="next"` for at
    /// most [`MAX_PAGES`] pages of [`PER_PAGE`]; `items` takes one page's body apart (an array,
    /// or an object wrapping one).
    async fn get_all_pages<P: DeserializeOwned, T>(
        &self,
        path: &str,
        what: &str,
        mut items: impl FnMut(P) -> Vec<T>,
    ) -> Result<Vec<T>, GitHubError> {
        let mut next = Some(format!("{path}?per_page={PER_PAGE}"));
        let mut all = Vec::new();
        let mut pages = 0;
        while let Some(url) = next.take() {
            let answer = self.send(Method::GET, &url, None).await?;
            all.extend(items(answer.json::<P>(what)?));
            pages += 1;
            next = answer
                .headers
                .get(http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(parse::next_link)
                .map(str::to_owned);
            if pages >= MAX_PAGES && next.is_some() {
                tracing::warn!(what, pages, "stopped following a listing at the page cap");
                break;
            }
        }
        Ok(all)
    }

    /// User ids of every member of team `org/slug` (`GET /orgs/{org}/teams/{slug}/members`,
    /// all pages).
    pub async fn team_member_ids(&self, org: &str, slug: &str) -> Result<Vec<u64>, GitHubError> {
        let path = format!("/orgs/{}/teams/{}/members", seg(org), seg(slug));
        self.get_all_pages(&path, "team members", |page: Vec<Id>| {
            page.into_iter().map(|m| m.id).collect()
        })
        .await
    }

    /// Posts a comment on issue or pull request `number`; returns the comment id.
    pub async fn create_issue_comment(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        body: &str,
    ) -> Result<u64, GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/{number}/comments",
            seg(owner),
            seg(repo)
        );
        let body = serde_json::json!({ "body": body });
        let answer = self.send(Method::POST, &path, Some(&body)).await?;
        Ok(answer.json::<Id>("comment")?.id)
    }

    /// Replaces the body of comment `comment_id`.
    pub async fn update_issue_comment(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        body: &str,
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/comments/{comment_id}",
            seg(owner),
            seg(repo)
        );
        let body = serde_json::json!({ "body": body });
        self.send(Method::PATCH, &path, Some(&body)).await.map(drop)
    }

    /// Adds `reaction` to comment `comment_id`.
    pub async fn add_comment_reaction(
        &self,
        owner: &str,
        repo: &str,
        comment_id: u64,
        reaction: Reaction,
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/comments/{comment_id}/reactions",
            seg(owner),
            seg(repo)
        );
        let body = serde_json::json!({ "content": reaction.content() });
        self.send(Method::POST, &path, Some(&body)).await.map(drop)
    }

    /// Adds `reaction` to issue or pull request `number`.
    pub async fn add_issue_reaction(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        reaction: Reaction,
    ) -> Result<(), GitHubError> {
        let path = format!(
            "/repos/{}/{}/issues/{number}/reactions",
            seg(owner),
            seg(repo)
        );
        let body = serde_json::json!({ "content": reaction.content() });
        self.send(Method::POST, &path, Some(&body)).await.map(drop)
    }
}

/// Agent pods get tokens for their one repository that can push branches and nothing else.
const AGENT_TOKEN_PERMISSIONS: &[(&str, &str)] = &[("contents", "write"), ("metadata", "read")];

#[async_trait::async_trait]
impl TokenMinter for GitHubApp {
    async fn repo_token(&self, repo: &RepoRef) -> Result<RepoToken, MintError> {
        let installation_id = self.installation_for(repo).await?;
        let (token, expires_at) = self
            .mint_installation_token(installation_id, &[&repo.name], AGENT_TOKEN_PERMISSIONS)
            .await
            .map_err(|e| mint_error(e, repo))?;
        Ok(RepoToken {
            token,
            expires_at,
            installation_id,
        })
    }

    async fn installation_for(&self, repo: &RepoRef) -> Result<u64, MintError> {
        match repo.installation_id {
            Some(id) => Ok(id),
            None => self
                .installation_for_repo(&repo.owner, &repo.name)
                .await
                .map_err(|e| mint_error(e, repo)),
        }
    }
}

fn mint_error(error: GitHubError, repo: &RepoRef) -> MintError {
    match error {
        GitHubError::NotFound(_) => MintError::InstallationNotFound {
            owner: repo.owner.clone(),
            name: repo.name.clone(),
        },
        GitHubError::RateLimited { retry_after } => MintError::RateLimited {
            retry_after_secs: retry_after.as_secs().max(1),
        },
        other => MintError::Unavailable(other.to_string()),
    }
}

#[derive(Deserialize)]
struct Id {
    id: u64,
}

/// GitHub's error body: a message, and for 422s the validation errors that say what failed
/// (`{"message": "Validation Failed", "errors": [{"message": "A pull request already exists…"}]}`).
#[derive(Deserialize)]
struct Message {
    message: String,
    #[serde(default)]
    errors: Vec<serde_json::Value>,
}

impl Message {
    /// The message with each validation error's own message (or code) appended.
    fn describe(self) -> String {
        let details: Vec<String> = self
            .errors
            .iter()
            .filter_map(|e| {
                e.get("message")
                    .or_else(|| e.get("code"))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        if details.is_empty() {
            self.message
        } else {
            format!("{} ({})", self.message, details.join("; "))
        }
    }
}

/// Percent-encodes one path segment (owner, repository, login, team slug).
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single read or write: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
