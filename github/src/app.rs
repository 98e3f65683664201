//! The GitHub App itself: its identity (an RS256 JWT, re-signed shortly before it expires),
//! installation tokens (cached until shortly before they expire), repository-scoped tokens for
//! agent runs ([`TokenMinter`]), and the installation GitHub reports for a repository.
//!
//! Requests go through octocrab's HTTP stack (rustls, timeouts) with our own authorisation
//! header (see [`crate::transport`]), so that JWT lifetimes, token caching and retries are ours
//! and visible here.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Method};
use jiff::Timestamp;
use octocrab::Octocrab;
use octocrab::jsonwebtoken::EncodingKey;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::GitHubError;
use crate::installation::{Id, InstallationClient, seg};
use crate::jwt::{self, AppClaims};
use crate::tokens::{MintError, RepoRef, RepoToken, TokenMinter};
use crate::transport::Auth;

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

/// The GitHub App. Cheap to clone.
#[derive(Clone)]
pub struct GitHubApp {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    app_id: u64,
    key: EncodingKey,
    pub(crate) base_url: String,
    pub(crate) http: Octocrab,
    pub(crate) config: AppConfig,
    jwt: Mutex<Option<(AppClaims, String)>>,
    tokens: Mutex<HashMap<u64, CachedToken>>,
    slug: tokio::sync::OnceCell<String>,
    pub(crate) etags: Mutex<crate::transport::Etags>,
    pub(crate) metrics: crate::metrics::ClientMetrics,
    /// The installation GitHub reported per repository (lower-case `owner/name`), and when.
    installations: Mutex<HashMap<String, (std::time::Instant, u64)>>,
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
/// How long the installation GitHub reported for a repository is trusted before it is
/// asked again (an uninstall or a transfer takes effect within this time).
pub const INSTALLATION_CACHE_TTL: Duration = Duration::from_secs(60);

impl GitHubApp {
    /// The client's metrics (answers by status, rate limit left, conditional hits), for the
    /// binary to register.
    pub fn metrics(&self) -> &crate::metrics::ClientMetrics {
        &self.inner.metrics
    }

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
                etags: Mutex::new(crate::transport::Etags::default()),
                metrics: crate::metrics::ClientMetrics::default(),
                installations: Mutex::new(HashMap::new()),
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

    /// The installation serving `owner/repo` (`GET /repos/{owner}/{repo}/installation`),
    /// remembered for [`INSTALLATION_CACHE_TTL`]. This, never a number from a spec, is the
    /// installation Countersign acts through for a repository.
    pub async fn installation_for_repo(&self, owner: &str, repo: &str) -> Result<u64, GitHubError> {
        let key = format!(
            "{}/{}",
            owner.to_ascii_lowercase(),
            repo.to_ascii_lowercase()
        );
        if let Some((at, id)) = lock(&self.inner.installations).get(&key)
            && at.elapsed() < INSTALLATION_CACHE_TTL
        {
            return Ok(*id);
        }
        let path = format!("/repos/{}/{}/installation", seg(owner), seg(repo));
        let answer = self.send(Method::GET, &path, Auth::App, None).await;
        let id = match answer {
            Ok(answer) => answer.json::<Id>("installation")?.id,
            Err(e) => {
                lock(&self.inner.installations).remove(&key);
                return Err(e);
            }
        };
        let mut cache = lock(&self.inner.installations);
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(key, (std::time::Instant::now(), id));
        Ok(id)
    }

    /// The installation GitHub reports for `owner/repo`, checked against `expected` (a
    /// number a Project's spec names): a different installation is an error, never used.
    pub async fn verified_installation(
        &self,
        owner: &str,
        repo: &str,
        expected: Option<u64>,
    ) -> Result<u64, MintError> {
        let repo_ref = RepoRef {
            owner: owner.to_owned(),
            name: repo.to_owned(),
            expected_installation: expected,
        };
        let actual = self
            .installation_for_repo(owner, repo)
            .await
            .map_err(|e| mint_error(e, &repo_ref))?;
        match expected {
            Some(expected) if expected != actual => Err(MintError::InstallationMismatch {
                owner: owner.to_owned(),
                name: repo.to_owned(),
                expected,
                actual,
            }),
            _ => Ok(actual),
        }
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

    /// Revokes an installation token (`DELETE /installation/token`, authenticated with the
    /// token itself). GitHub answers `204`; a `401` means the token is already revoked or
    /// expired, which is what the caller wanted. 5xx answers and dropped connections are
    /// retried like other calls.
    pub async fn revoke_installation_token(
        &self,
        token: &SecretString,
    ) -> Result<crate::tokens::Revoked, GitHubError> {
        use crate::tokens::Revoked;
        let url = format!("{}/installation/token", self.inner.base_url);
        let config = &self.inner.config;
        let mut attempt = 0u32;
        loop {
            let mut authorization =
                HeaderValue::from_str(&format!("token {}", token.expose_secret()))
                    .map_err(|_| GitHubError::Config("the token to revoke is not ASCII".into()))?;
            authorization.set_sensitive(true);
            let builder = http::Request::builder()
                .method(Method::DELETE)
                .uri(&url)
                .header(http::header::AUTHORIZATION, authorization)
                .header(http::header::ACCEPT, "application/vnd.github+json");
            let request = self
                .inner
                .http
                .build_request::<()>(builder, None)
                .map_err(|e| GitHubError::Config(format!("bad request {url}: {e}")))?;
            let sent = tokio::time::timeout(config.request_timeout, async {
                let response = self.inner.http.execute(request).await?;
                let status = response.status();
                let body = http_body_util::BodyExt::collect(response.into_body())
                    .await?
                    .to_bytes();
                Ok::<_, octocrab::Error>((status, body))
            })
            .await;
            let error = match sent {
                Ok(Ok((status, _))) if status.is_success() => return Ok(Revoked::Now),
                Ok(Ok((status, _))) if status == http::StatusCode::UNAUTHORIZED => {
                    return Ok(Revoked::Already);
                }
                Ok(Ok((status, body))) if !status.is_server_error() => {
                    return Err(GitHubError::Status {
                        status: status.as_u16(),
                        message: format!(
                            "DELETE {url}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(200)])
                        ),
                    });
                }
                Ok(Ok((status, _))) => GitHubError::Status {
                    status: status.as_u16(),
                    message: format!("DELETE {url}"),
                },
                Ok(Err(e)) => GitHubError::Transport(format!("DELETE {url}: {e}")),
                Err(_) => GitHubError::Transport(format!(
                    "DELETE {url}: no answer within {:?}",
                    config.request_timeout
                )),
            };
            if attempt >= config.max_retries {
                return Err(error);
            }
            tokio::time::sleep(crate::transport::FIRST_BACKOFF * 2u32.pow(attempt.min(6))).await;
            attempt += 1;
        }
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

    /// Forgets the cached token of installation `id` (after GitHub refused it, perhaps
    /// revoked): the next call mints a new one.
    pub(crate) fn forget_installation_token(&self, id: u64) {
        lock(&self.inner.tokens).remove(&id);
    }

    pub(crate) async fn authorization(&self, auth: Auth) -> Result<HeaderValue, GitHubError> {
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
}

/// Agent pods get tokens for their one repository that can push branches and nothing else.
const AGENT_TOKEN_PERMISSIONS: &[(&str, &str)] = &[("contents", "write"), ("metadata", "read")];
/// The clone step of an agent pod gets a token that can only read its repository.
const CLONE_TOKEN_PERMISSIONS: &[(&str, &str)] = &[("contents", "read"), ("metadata", "read")];

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

    async fn read_token(&self, repo: &RepoRef) -> Result<RepoToken, MintError> {
        let installation_id = self.installation_for(repo).await?;
        let (token, expires_at) = self
            .mint_installation_token(installation_id, &[&repo.name], CLONE_TOKEN_PERMISSIONS)
            .await
            .map_err(|e| mint_error(e, repo))?;
        Ok(RepoToken {
            token,
            expires_at,
            installation_id,
        })
    }

    async fn revoke(&self, token: &SecretString) -> Result<crate::tokens::Revoked, MintError> {
        self.revoke_installation_token(token)
            .await
            .map_err(|e| MintError::Unavailable(e.to_string()))
    }

    async fn installation_for(&self, repo: &RepoRef) -> Result<u64, MintError> {
        self.verified_installation(&repo.owner, &repo.name, repo.expected_installation)
            .await
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single read or write: a poisoned lock is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
