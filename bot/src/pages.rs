//! `GET /gates/{namespace}/{name}`: an ApprovalGate's details page, the page the
//! `countersign/approval` check run links to. Reads the gate with the bot's kube client on
//! every request (no cache: the page must say what the check says) and renders it with
//! [`gate_report::html_page`](countersign_github::gate_report::html_page).

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use countersign_crds::ApprovalGate;
use kube::Api;

use countersign_github::gate_report::{escape_html, gate_page_url, html_page};

/// What the page route needs.
#[derive(Clone)]
pub struct PagesState {
    /// Reads ApprovalGates.
    pub client: kube::Client,
    /// `false`: every page answers 404 (`--gate-pages=false`).
    pub enabled: bool,
    /// The public base URL, for the page's canonical link.
    pub public_url: Option<String>,
}

/// The gate page route.
pub fn router(state: PagesState) -> Router {
    Router::new()
        .route("/gates/{namespace}/{name}", get(gate_page))
        .with_state(state)
}

async fn gate_page(
    State(state): State<PagesState>,
    Path((namespace, name)): Path<(String, String)>,
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
    match gates.get_opt(&name).await {
        Ok(Some(gate)) => {
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
        Ok(None) => not_found(&namespace, &name),
        Err(error) => {
            tracing::warn!(%error, %namespace, %name, "cannot read an ApprovalGate for its page");
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again later",
                "Countersign cannot read this gate from Kubernetes right now.",
            )
        }
    }
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

fn message_page(status: StatusCode, heading: &str, text: &str) -> Response {
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
