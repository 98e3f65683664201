//! `GET /gates/{namespace}/{name}`: an ApprovalGate's details page, the page the
//! `countersign/approval` check run links to. Reads the gate with the bot's kube client on
//! every request (no cache: the page must say what the check says) and renders it with
//! [`gate_report::html_page`](countersign_github::gate_report::html_page).
//!
//! Who may see it: a gate of a public repository, anyone (unless
//! `--gate-pages-public-repos=false`); a gate of a private repository, only people signed in
//! with GitHub ([`crate::login`]) who can read the repository. Without sign-in configured,
//! pages of private repositories are not shown at all. When GitHub cannot say whether a
//! repository is public, it is treated as private.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use countersign_crds::{ApprovalGate, Project};
use countersign_github::GitHubApp;
use kube::Api;

use crate::login::{Access, Login};
use countersign_github::gate_report::{escape_html, gate_page_url, html_page};

/// How long a repository's visibility (public or private) is remembered.
pub const VISIBILITY_TTL: Duration = Duration::from_secs(60);

/// What the page route needs.
#[derive(Clone)]
pub struct PagesState {
    /// Reads ApprovalGates and Projects.
    pub client: kube::Client,
    /// `false`: every page answers 404 (`--gate-pages=false`).
    pub enabled: bool,
    /// The public base URL, for the page's canonical link.
    pub public_url: Option<String>,
    /// Asks GitHub whether a repository is private.
    pub github: GitHubApp,
    /// Sign-in with GitHub, when configured (needed for private repositories' pages).
    pub login: Option<Arc<Login>>,
    /// Serve pages of public repositories without sign-in.
    pub public_repositories_open: bool,
    /// Visibility by lower-case `owner/repo`: (private, when asked).
    pub visibility: Arc<Mutex<HashMap<String, (bool, Instant)>>>,
}

/// The gate page route.
pub fn router(state: PagesState) -> Router {
    Router::new()
        .route("/gates/{namespace}/{name}", get(gate_page))
        .with_state(state)
}

/// Whether the Project's repository is private; private when GitHub cannot tell.
async fn is_private(state: &PagesState, project: &Project) -> bool {
    let repo = &project.spec.repository;
    let key = format!(
        "{}/{}",
        repo.owner.to_ascii_lowercase(),
        repo.name.to_ascii_lowercase()
    );
    let cached = state
        .visibility
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&key)
        .filter(|(_, at)| at.elapsed() < VISIBILITY_TTL)
        .map(|(private, _)| *private);
    if let Some(private) = cached {
        return private;
    }
    let expected = project.spec.installation.as_ref().map(|i| i.id);
    let private = match state
        .github
        .verified_installation(&repo.owner, &repo.name, expected)
        .await
    {
        Ok(id) => state
            .github
            .installation(id)
            .repository_is_private(&repo.owner, &repo.name)
            .await
            .unwrap_or(true),
        Err(_) => true,
    };
    let mut cache = state
        .visibility
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if cache.len() >= 4096 {
        cache.clear();
    }
    cache.insert(key, (private, Instant::now()));
    private
}

async fn gate_page(
    State(state): State<PagesState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if !state.enabled {
        return message_page(
            StatusCode::NOT_FOUND,
            "Not found",
            "Gate pages are turned off on this Countersign installation.",
        );
    }
    // Kubernetes names only: anything else cannot exist, and must not reach the apiserver's URL.
    if !is_object_name(&namespace) || !is_object_name(&name) {
        return not_found(&namespace, &name);
    }
    let gates: Api<ApprovalGate> = Api::namespaced(state.client.clone(), &namespace);
    let gate = match gates.get_opt(&name).await {
        Ok(Some(gate)) => gate,
        Ok(None) => return not_found(&namespace, &name),
        Err(error) => return unavailable(&error, &namespace, &name),
    };
    let projects: Api<Project> = Api::namespaced(state.client.clone(), &namespace);
    let project = match projects.get_opt(&gate.spec.project_ref.name).await {
        Ok(Some(project)) => project,
        // Whose repository it is cannot be told: shown to nobody.
        Ok(None) => return not_found(&namespace, &name),
        Err(error) => return unavailable(&error, &namespace, &name),
    };
    let open = state.public_repositories_open && !is_private(&state, &project).await;
    if !open {
        let repo = &project.spec.repository;
        let Some(login) = &state.login else {
            return message_page(
                StatusCode::NOT_FOUND,
                "Gate not found",
                "Gate pages of private repositories need a GitHub sign-in, which this \
                 Countersign installation does not have configured.",
            );
        };
        match login.access(&headers, &repo.owner, &repo.name).await {
            Access::Allowed => {}
            Access::SignedOut => {
                let next = format!("/gates/{namespace}/{name}");
                let mut response = StatusCode::FOUND.into_response();
                if let Ok(v) = HeaderValue::from_str(&Login::login_location(&next)) {
                    response.headers_mut().insert(header::LOCATION, v);
                }
                response
                    .headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                return response;
            }
            // Indistinguishable from a gate that does not exist.
            Access::Denied => return not_found(&namespace, &name),
        }
    }
    let mut response = html(StatusCode::OK, html_page(&gate));
    if let Some(base) = &state.public_url
        && let Ok(link) = HeaderValue::from_str(&format!(
            "<{}>; rel=\"canonical\"",
            gate_page_url(base, &namespace, &name)
        ))
    {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

fn unavailable(error: &kube::Error, namespace: &str, name: &str) -> Response {
    tracing::warn!(%error, %namespace, %name, "cannot read an ApprovalGate for its page");
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again later",
        "Countersign cannot read this gate from Kubernetes right now.",
    )
}

fn not_found(namespace: &str, name: &str) -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "Gate not found",
        &format!(
            "There is no ApprovalGate {namespace}/{name}. It may not have been created yet, \
             or the pull request's gate was deleted."
        ),
    )
}

/// A DNS-1123 subdomain: what Kubernetes allows as a namespace or object name.
fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A small HTML page with a heading and a sentence.
pub(crate) fn message_page(status: StatusCode, heading: &str, text: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{heading} — Countersign</title>\n<style>body{{font-family:system-ui,sans-serif;\
         max-width:40rem;margin:2rem auto;padding:0 1rem}}</style>\n</head>\n<body>\n\
         <h1>{heading}</h1>\n<p>{text}</p>\n</body>\n</html>\n",
        heading = escape_html(heading),
        text = escape_html(text),
    );
    html(status, body)
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::is_object_name;

    #[test]
    fn only_kubernetes_names_reach_the_apiserver() {
        assert!(is_object_name("team-a"));
        assert!(is_object_name("widgets-pr-42"));
        for bad in ["", "..", "a/b", "A", "-a", "a-", "a%2Fb", &"a".repeat(254)] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }
}
