//! Git smart-HTTP for the fake GitHub: `/{owner}/{name}.git/info/refs`, `…/git-upload-pack`
//! and `…/git-receive-pack`, authorised like GitHub and answered by the real
//! `git http-backend` run as a CGI program, so clones, fetches (protocol v2 included) and
//! pushes are byte-for-byte git's own.
//!
//! Authorisation: HTTP Basic with an installation token minted by the fake as the password
//! (git sends `x-access-token`; the user name is ignored). No, malformed, unknown or expired
//! credentials → `401` with `WWW-Authenticate: Basic realm="GitHub"`, so git asks its
//! credential helpers. A token whose installation or repository scope does not cover the
//! repository gets `404 Repository not found.` for reads and `403 Permission to … denied`
//! for pushes; a token with explicit permissions needs `contents: read` to fetch and
//! `contents: write` to push (else `403`). Every call goes through the same call log and
//! fault injection as the REST API. After a receive-pack the moved branches are recorded in
//! [`World::pushes`] and pull requests opened from them are refreshed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::credentials::{Credential, presented};
use super::git::{Comparison, Push, compare, heads, pushes_between, split_repository};
use super::server::{Shared, TEST_APP_SLUG, World, lock};

/// How long one `git http-backend` run may take before it is killed and answered with 504.
const GIT_BACKEND_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest request body (a pushed pack) accepted.
const GIT_BODY_LIMIT: usize = 512 * 1024 * 1024;
/// GitHub's answer to missing or bad git credentials.
const BAD_CREDENTIALS: &str =
    "Invalid username or token. Password authentication is not supported for Git operations.";

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/{owner}/{repo}/info/refs", get(info_refs))
        .route("/{owner}/{repo}/git-upload-pack", post(upload_pack))
        .route("/{owner}/{repo}/git-receive-pack", post(receive_pack))
        .layer(DefaultBodyLimit::max(GIT_BODY_LIMIT))
}

/// The two git services, fetch and push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    UploadPack,
    ReceivePack,
}

/// Why a git request is refused.
#[derive(Debug, PartialEq, Eq)]
enum Denial {
    /// 401: no usable credentials.
    Unauthenticated,
    /// 404: the repository does not exist or the token cannot see it.
    NotFound,
    /// 403: the token may not do this, with GitHub's message.
    Forbidden(String),
}

impl IntoResponse for Denial {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Unauthenticated => (StatusCode::UNAUTHORIZED, BAD_CREDENTIALS.to_owned()),
            Self::NotFound => (StatusCode::NOT_FOUND, "Repository not found.".to_owned()),
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, message),
        };
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{message}\n"),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"GitHub\""),
            );
        }
        response
    }
}

/// What an authorised request may touch.
struct Granted {
    /// `owner/name` as the fake stores it.
    repository: String,
    /// `GIT_PROJECT_ROOT`.
    root: PathBuf,
    /// The repository's directory.
    dir: PathBuf,
    /// `PATH_INFO` prefix, `/owner/name.git`.
    path_info: String,
    /// `REMOTE_USER`: the account the token acts as.
    user: String,
}

/// Decides whether the request's credentials may use `service` on `owner/repo`, as GitHub
/// does for installation tokens.
fn authorize(
    world: &World,
    headers: &HeaderMap,
    owner: &str,
    repo: &str,
    service: Service,
) -> Result<Granted, Denial> {
    let Some(Ok(Credential::Basic { password, .. })) = presented(headers) else {
        return Err(Denial::Unauthenticated);
    };
    let minted = world
        .tokens
        .get(&password)
        .filter(|t| t.is_live())
        .ok_or(Denial::Unauthenticated)?;
    let (owner, name) = split_repository(&format!("{owner}/{repo}"))
        .map(|(o, n)| (o.to_owned(), n.to_owned()))
        .ok_or(Denial::NotFound)?;
    let repository = format!("{owner}/{name}");
    let (Some(root), Some(dir)) = (world.git.root(), world.repository_path(&repository)) else {
        return Err(Denial::NotFound);
    };
    let denied = || {
        Denial::Forbidden(format!(
            "Permission to {repository}.git denied to {TEST_APP_SLUG}[bot]."
        ))
    };
    let covered = world
        .installations
        .get(&minted.installation)
        .is_some_and(|i| {
            i.account.eq_ignore_ascii_case(&owner)
                && i.repositories.iter().any(|r| r.eq_ignore_ascii_case(&name))
        })
        && minted
            .repositories
            .as_ref()
            .is_none_or(|repos| repos.iter().any(|r| r.eq_ignore_ascii_case(&name)));
    if !covered {
        return Err(match service {
            Service::UploadPack => Denial::NotFound,
            Service::ReceivePack => denied(),
        });
    }
    if let Some(permissions) = &minted.permissions {
        let contents = permissions.get("contents").map(String::as_str);
        let allowed = match service {
            Service::UploadPack => matches!(contents, Some("read" | "write")),
            Service::ReceivePack => contents == Some("write"),
        };
        if !allowed {
            return Err(denied());
        }
    }
    Ok(Granted {
        path_info: format!(
            "/{}/{}.git",
            owner.to_ascii_lowercase(),
            name.to_ascii_lowercase()
        ),
        repository,
        root: root.to_owned(),
        dir,
        user: format!("{TEST_APP_SLUG}[bot]"),
    })
}

#[derive(Deserialize)]
struct ServiceQuery {
    service: Option<String>,
}

async fn info_refs(
    State(world): State<Shared>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    Query(query): Query<ServiceQuery>,
    headers: HeaderMap,
) -> Response {
    // Without `service` a client asks for the dumb protocol, which only reads.
    let service = match query.service.as_deref() {
        Some("git-receive-pack") => Service::ReceivePack,
        _ => Service::UploadPack,
    };
    let granted = match authorize(&lock(&world), &headers, &owner, &repo, service) {
        Ok(g) => g,
        Err(denial) => return denial.into_response(),
    };
    let query = query
        .service
        .map(|s| format!("service={s}"))
        .unwrap_or_default();
    let request = CgiRequest::new(&granted, "GET", "info/refs", query, &headers);
    answer(run_backend(&request, Bytes::new()).await)
}

async fn upload_pack(
    State(world): State<Shared>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let granted = match authorize(&lock(&world), &headers, &owner, &repo, Service::UploadPack) {
        Ok(g) => g,
        Err(denial) => return denial.into_response(),
    };
    let request = CgiRequest::new(&granted, "POST", "git-upload-pack", String::new(), &headers);
    answer(run_backend(&request, body).await)
}

async fn receive_pack(
    State(world): State<Shared>,
    UrlPath((owner, repo)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (granted, push_lock) = {
        let w = lock(&world);
        match authorize(&w, &headers, &owner, &repo, Service::ReceivePack) {
            Ok(g) => (g, w.git.push_lock.clone()),
            Err(denial) => return denial.into_response(),
        }
    };
    // One push at a time, so the branches that moved between the two snapshots are this
    // push's.
    let _one_push = push_lock.lock().await;
    let snapshot = || {
        let dir = granted.dir.clone();
        blocking(move || heads(&dir))
    };
    let before = snapshot().await;
    let request = CgiRequest::new(
        &granted,
        "POST",
        "git-receive-pack",
        String::new(),
        &headers,
    );
    let response = run_backend(&request, body).await;
    match (before, snapshot().await) {
        (Some(Ok(before)), Some(Ok(after))) => {
            let pushes = pushes_between(&granted.repository, &before, &after);
            if !pushes.is_empty() {
                record_pushes(&world, &granted, pushes).await;
            }
        }
        _ => {
            tracing::error!(repository = %granted.repository, "cannot read the branches around a push")
        }
    }
    answer(response)
}

/// Records `pushes` and refreshes the pull requests opened from the pushed branches.
async fn record_pushes(world: &Shared, granted: &Granted, pushes: Vec<Push>) {
    let stale = lock(world).pulls_to_refresh(&pushes);
    let mut refreshed: Vec<(u64, Comparison)> = Vec::new();
    for (number, base) in stale {
        let head = lock(world)
            .pulls
            .get(&(granted.repository.clone(), number))
            .map(|pr| pr.head_branch.clone());
        let Some(head) = head else { continue };
        let dir = granted.dir.clone();
        if let Some(Ok(cmp)) = blocking(move || compare(&dir, &base, &head)).await {
            refreshed.push((number, cmp));
        }
    }
    let mut w = lock(world);
    for (number, cmp) in refreshed {
        w.refresh_pull(&granted.repository, number, cmp);
    }
    w.pushes.extend(pushes);
}

/// Runs blocking repository work off the async workers; `None` if it panicked.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(work).await.ok()
}

/// The CGI environment of one `git http-backend` run.
struct CgiRequest {
    env: BTreeMap<&'static str, String>,
}

impl CgiRequest {
    fn new(
        granted: &Granted,
        method: &str,
        suffix: &str,
        query: String,
        headers: &HeaderMap,
    ) -> Self {
        let header = |name: HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut env = BTreeMap::from([
            ("GIT_PROJECT_ROOT", granted.root.display().to_string()),
            ("GIT_HTTP_EXPORT_ALL", "1".to_owned()),
            ("PATH_INFO", format!("{}/{suffix}", granted.path_info)),
            ("REQUEST_METHOD", method.to_owned()),
            ("QUERY_STRING", query),
            // Set only after authorisation: http-backend enables receive-pack for it.
            ("REMOTE_USER", granted.user.clone()),
            ("REMOTE_ADDR", "127.0.0.1".to_owned()),
        ]);
        if let Some(v) = header(header::CONTENT_TYPE) {
            env.insert("CONTENT_TYPE", v);
        }
        if let Some(v) = header(header::CONTENT_ENCODING) {
            env.insert("HTTP_CONTENT_ENCODING", v);
        }
        if let Some(v) = header(HeaderName::from_static("git-protocol")) {
            env.insert("HTTP_GIT_PROTOCOL", v);
        }
        Self { env }
    }
}

/// Why `git http-backend` could not answer.
#[derive(Debug, thiserror::Error)]
enum BackendError {
    #[error(
        "git is not installed or not on PATH (the fake GitHub's git hosting runs `git http-backend`): {0}"
    )]
    GitMissing(String),
    #[error("cannot run git http-backend")]
    Io(#[from] std::io::Error),
    #[error("git http-backend took longer than {GIT_BACKEND_TIMEOUT:?}")]
    Timeout,
    #[error("git http-backend wrote no CGI header block")]
    Malformed,
}

/// `$(git --exec-path)/git-http-backend`, looked up once.
async fn http_backend() -> Result<PathBuf, BackendError> {
    static EXEC_PATH: tokio::sync::OnceCell<Result<PathBuf, String>> =
        tokio::sync::OnceCell::const_new();
    let found = EXEC_PATH
        .get_or_init(|| async {
            let output = Command::new("git")
                .arg("--exec-path")
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| format!("`git --exec-path`: {e}"))?;
            if !output.status.success() {
                return Err(format!("`git --exec-path` exited with {}", output.status));
            }
            let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let backend = Path::new(&dir).join("git-http-backend");
            if backend.exists() {
                Ok(backend)
            } else {
                Err(format!("{} does not exist", backend.display()))
            }
        })
        .await;
    found.clone().map_err(BackendError::GitMissing)
}

/// Runs `git http-backend` for `request` with `body` on stdin and turns its CGI output into
/// an HTTP response.
async fn run_backend(request: &CgiRequest, body: Bytes) -> Result<Response, BackendError> {
    let program = http_backend().await?;
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // Nobody's configuration but the repository's own.
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env(
            "HOME",
            request
                .env
                .get("GIT_PROJECT_ROOT")
                .map_or("/", String::as_str),
        )
        .env("CONTENT_LENGTH", body.len().to_string())
        .envs(&request.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = async {
        let mut child = command.spawn()?;
        let (mut stdin, mut stdout, mut stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let feed = async {
            if let Some(stdin) = stdin.as_mut() {
                // The backend may stop reading early (an error); its answer still counts.
                let _ = stdin.write_all(&body).await;
                let _ = stdin.shutdown().await;
            }
            drop(stdin.take());
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(s) = stdout.as_mut() {
                s.read_to_end(&mut out).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let read_err = async {
            if let Some(s) = stderr.as_mut() {
                s.read_to_end(&mut err).await?;
            }
            Ok::<_, std::io::Error>(())
        };
        let ((), read_out, read_err) = tokio::join!(feed, read_out, read_err);
        read_out?;
        read_err?;
        let status = child.wait().await?;
        if !err.is_empty() {
            tracing::debug!(%status, stderr = %String::from_utf8_lossy(&err), "git http-backend");
        }
        Ok::<_, BackendError>(out)
    };
    let out = tokio::time::timeout(GIT_BACKEND_TIMEOUT, run)
        .await
        .map_err(|_| BackendError::Timeout)??;
    parse_cgi(&out)
}

/// An HTTP response from CGI output: header lines (`Status:` gives the status, 200 without
/// it), an empty line, the body.
fn parse_cgi(out: &[u8]) -> Result<Response, BackendError> {
    let (head, body) = find_subslice(out, b"\r\n\r\n")
        .map(|i| (&out[..i], &out[i + 4..]))
        .or_else(|| find_subslice(out, b"\n\n").map(|i| (&out[..i], &out[i + 2..])))
        .ok_or(BackendError::Malformed)?;
    let mut response = Response::new(axum::body::Body::from(body.to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().and_then(|c| c.parse().ok());
            *response.status_mut() = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or(BackendError::Malformed)?;
        } else if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.trim()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}

fn find_subslice(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The backend's answer, or a 5xx logged once.
fn answer(result: Result<Response, BackendError>) -> Response {
    match result {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(error = %error, "fake GitHub git hosting failed");
            let status = match error {
                BackendError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (status, format!("{error}\n")).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_output_becomes_a_response() {
        let out = b"Status: 403 Forbidden\r\nContent-Type: text/plain\r\n\r\nno";
        let response = parse_cgi(out).expect("response");
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "text/plain");

        let ok = parse_cgi(b"Content-Type: application/x-git-upload-pack-advertisement\n\n0000")
            .expect("response");
        assert_eq!(ok.status(), StatusCode::OK);
        assert!(matches!(
            parse_cgi(b"no header end"),
            Err(BackendError::Malformed)
        ));
        assert!(matches!(
            parse_cgi(b"Status: x\r\n\r\n"),
            Err(BackendError::Malformed)
        ));
    }
}
