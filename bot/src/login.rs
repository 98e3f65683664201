//! Signing in with GitHub for the gate pages of private repositories: `GET /login` sends
//! the browser to GitHub (the App's OAuth flow, with a one-time `state`), `GET /oauth/callback`
//! exchanges the code for a user token and starts a session (an opaque, random cookie; the
//! token stays in this process's memory), `GET /logout` ends it.
//!
//! Sessions live in memory, bounded and expiring: a restart signs everyone out, which is the
//! safe direction. Whether a signed-in person may see a gate is asked of GitHub with their
//! own token (can they read the repository?), remembered briefly per session and repository.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use countersign_github::GitHubApp;
use countersign_github::oauth::OAuthClient;
use countersign_github::users::Account;
use rand::RngCore;
use secrecy::SecretString;
use serde::Deserialize;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "countersign_session";
/// How long a session lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// How long a sign-in may take between `/login` and the callback.
pub const SIGN_IN_TTL: Duration = Duration::from_secs(600);
/// How long "this person can (not) read this repository" is remembered.
pub const ACCESS_TTL: Duration = Duration::from_secs(60);
/// Most sessions (and sign-ins in progress) kept; the oldest go first.
pub const MAX_SESSIONS: usize = 10_000;

/// A signed-in person.
#[derive(Clone)]
struct Session {
    account: Account,
    token: SecretString,
    started: Instant,
    /// (owner/repo lower-case) → (can read, when asked).
    access: HashMap<String, (bool, Instant)>,
}

/// Sign-in state shared by the routes and the gate pages.
pub struct Login {
    github: GitHubApp,
    client: OAuthClient,
    /// The bot's public base URL (the callback is `{base}/oauth/callback`).
    public_url: String,
    sessions: Mutex<HashMap<String, Session>>,
    /// state → (where to go after, when started).
    pending: Mutex<HashMap<String, (String, Instant)>>,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("client", &self.client)
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

/// What asking about a person's access came to.
pub enum Access {
    /// Nobody is signed in.
    SignedOut,
    /// Signed in, may read.
    Allowed,
    /// Signed in, may not read (or the session expired on GitHub).
    Denied,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn random_id() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Login {
    /// Sign-in through `client`, with the callback under `public_url`.
    pub fn new(github: GitHubApp, client: OAuthClient, public_url: &str) -> Arc<Self> {
        Arc::new(Self {
            github,
            client,
            public_url: public_url.trim_end_matches('/').to_owned(),
            sessions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        })
    }

    fn callback_url(&self) -> String {
        format!("{}/oauth/callback", self.public_url)
    }

    fn secure(&self) -> bool {
        self.public_url.starts_with("https://")
    }

    fn session_id(headers: &HeaderMap) -> Option<String> {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.to_owned())
            .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    /// Whether the person of this request may read `owner/repo`, asked of GitHub with their
    /// token (remembered for [`ACCESS_TTL`]).
    pub async fn access(&self, headers: &HeaderMap, owner: &str, repo: &str) -> Access {
        let Some(id) = Self::session_id(headers) else {
            return Access::SignedOut;
        };
        let key = format!(
            "{}/{}",
            owner.to_ascii_lowercase(),
            repo.to_ascii_lowercase()
        );
        let token = {
            let mut sessions = lock(&self.sessions);
            let Some(session) = sessions.get(&id) else {
                return Access::SignedOut;
            };
            if session.started.elapsed() > SESSION_TTL {
                sessions.remove(&id);
                return Access::SignedOut;
            }
            if let Some((allowed, at)) = session.access.get(&key)
                && at.elapsed() < ACCESS_TTL
            {
                return if *allowed {
                    Access::Allowed
                } else {
                    Access::Denied
                };
            }
            session.token.clone()
        };
        let allowed = match self.github.user_can_read(&token, owner, repo).await {
            Ok(allowed) => allowed,
            Err(error) => {
                tracing::info!(%error, "cannot check a signed-in person's access; denying");
                false
            }
        };
        if let Some(session) = lock(&self.sessions).get_mut(&id) {
            session.access.insert(key, (allowed, Instant::now()));
        }
        if allowed {
            Access::Allowed
        } else {
            Access::Denied
        }
    }

    /// Where to send a signed-out browser that asked for `next`.
    pub fn login_location(next: &str) -> String {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("next", next)
            .finish();
        format!("/login?{query}")
    }
}

/// The sign-in routes (`/login`, `/oauth/callback`, `/logout`).
pub fn router(login: Arc<Login>) -> Router {
    Router::new()
        .route("/login", get(start))
        .route("/oauth/callback", get(callback))
        .route("/logout", get(logout))
        .with_state(login)
}

/// Only the bot's own gate pages are places to go back to (no open redirect).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/gates/")
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[derive(Deserialize)]
struct Start {
    next: Option<String>,
}

async fn start(State(login): State<Arc<Login>>, Query(q): Query<Start>) -> Response {
    let state = random_id();
    {
        let mut pending = lock(&login.pending);
        pending.retain(|_, (_, at)| at.elapsed() < SIGN_IN_TTL);
        if pending.len() >= MAX_SESSIONS {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Too many sign-ins in progress.",
            );
        }
        pending.insert(
            state.clone(),
            (safe_next(q.next.as_deref()), Instant::now()),
        );
    }
    let url = login
        .github
        .oauth_authorize_url(&login.client, &login.callback_url(), &state);
    redirect(&url, None)
}

#[derive(Deserialize)]
struct Callback {
    code: Option<String>,
    state: Option<String>,
}

async fn callback(State(login): State<Arc<Login>>, Query(q): Query<Callback>) -> Response {
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return message(StatusCode::BAD_REQUEST, "The sign-in did not finish.");
    };
    let next = {
        let mut pending = lock(&login.pending);
        match pending.remove(&state) {
            Some((next, at)) if at.elapsed() < SIGN_IN_TTL => next,
            _ => return message(StatusCode::BAD_REQUEST, "This sign-in expired; try again."),
        }
    };
    let token = match login
        .github
        .oauth_exchange(&login.client, &code, &login.callback_url())
        .await
    {
        Ok(token) => token,
        Err(error) => {
            tracing::info!(%error, "a sign-in failed");
            return message(StatusCode::FORBIDDEN, "GitHub did not confirm the sign-in.");
        }
    };
    let account = match login.github.oauth_user(&token).await {
        Ok(account) => account,
        Err(error) => {
            tracing::info!(%error, "cannot read who signed in");
            return message(StatusCode::FORBIDDEN, "GitHub did not say who signed in.");
        }
    };
    let id = random_id();
    {
        let mut sessions = lock(&login.sessions);
        sessions.retain(|_, s| s.started.elapsed() < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.started)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        tracing::info!(login = %account.login, "signed in");
        sessions.insert(
            id.clone(),
            Session {
                account,
                token,
                started: Instant::now(),
                access: HashMap::new(),
            },
        );
    }
    let cookie = format!(
        "{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if login.secure() { "; Secure" } else { "" }
    );
    redirect(&next, Some(&cookie))
}

async fn logout(State(login): State<Arc<Login>>, headers: HeaderMap) -> Response {
    if let Some(id) = Login::session_id(&headers)
        && let Some(session) = lock(&login.sessions).remove(&id)
    {
        tracing::info!(login = %session.account.login, "signed out");
    }
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    redirect("/", Some(&cookie))
}

fn redirect(location: &str, cookie: Option<&str>) -> Response {
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        headers.insert(header::SET_COOKIE, c);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn message(status: StatusCode, text: &str) -> Response {
    crate::pages::message_page(status, "Sign-in", text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_gate_pages_are_places_to_return_to() {
        assert_eq!(
            safe_next(Some("/gates/team-a/widgets-pr-1")),
            "/gates/team-a/widgets-pr-1"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/x",
            "/gates//evil",
            "/other",
            "/gates/a b",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn session_cookies_are_read_strictly() {
        let id = "a".repeat(64);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=1; {SESSION_COOKIE}={id}")).expect("header"),
        );
        assert_eq!(Login::session_id(&headers), Some(id));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("countersign_session=../../etc"),
        );
        assert_eq!(Login::session_id(&headers), None);
    }
}
