//! GitHub sign-in in the fake: the App's OAuth web flow and what a signed-in person can read.
//!
//! - `GET /login/oauth/authorize?client_id&redirect_uri&state`: GitHub's sign-in page. The
//!   person signed in to GitHub is named by the `X-Fake-GitHub-Login` header (standing in for
//!   github.com's session cookie); the answer is the redirect back with a one-time `code`.
//! - `POST /login/oauth/access_token`: the code and the client secret for a user token
//!   (`{"error": "bad_verification_code"}` with 200 otherwise, as GitHub answers).
//! - `GET /user`: the user token's account.
//! - `GET /repos/{owner}/{repo}`: the repository (with `private`) to an installation token
//!   covering it, to a user with a permission on it, or to anyone when it is public; 404
//!   otherwise.
//!
//! Register the App's client with [`World::register_oauth_client`] and make repositories
//! private with [`World::make_private`].

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::credentials::presented;
use super::server::{CallAuth, Shared, User, World, error, lock, repository_json};

/// The header naming who is signed in to the fake GitHub's web UI.
pub const SIGNED_IN_HEADER: &str = "x-fake-github-login";

impl World {
    /// Registers the App's OAuth client (its client id and secret).
    pub fn register_oauth_client(&mut self, client_id: &str, secret: &str) {
        self.oauth_clients
            .insert(client_id.to_owned(), secret.to_owned());
    }

    /// Makes `repository` (`owner/name`) private: only people with a permission on it (and
    /// installations covering it) can read it.
    pub fn make_private(&mut self, repository: &str) {
        self.private_repositories.insert(repository.to_owned());
    }

    fn user_of_token(&self, headers: &HeaderMap) -> Option<User> {
        let credential = presented(headers)?.ok()?;
        self.user_tokens.get(credential.token()).cloned()
    }

    fn can_read(&self, user: &User, repository: &str) -> bool {
        !self.private_repositories.contains(repository)
            || self
                .permissions
                .contains_key(&(repository.to_owned(), user.login.to_ascii_lowercase()))
    }
}

#[derive(Deserialize)]
pub(super) struct Authorize {
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
}

pub(super) async fn authorize(
    State(world): State<Shared>,
    Query(q): Query<Authorize>,
    headers: HeaderMap,
) -> Response {
    let mut w = lock(&world);
    let (Some(client_id), Some(redirect)) = (q.client_id, q.redirect_uri) else {
        return error(
            StatusCode::BAD_REQUEST,
            "client_id and redirect_uri are required",
        );
    };
    if !w.oauth_clients.contains_key(&client_id) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Some(login) = headers
        .get(SIGNED_IN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return error(StatusCode::UNAUTHORIZED, "Sign in to GitHub first");
    };
    let Some(user) = w.known_user(&login) else {
        return error(StatusCode::UNAUTHORIZED, "No such GitHub account");
    };
    let code = format!("code{}", w.next_id());
    w.oauth_codes.insert(code.clone(), (user, client_id));
    let separator = if redirect.contains('?') { '&' } else { '?' };
    let state: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", &code)
        .append_pair("state", q.state.as_deref().unwrap_or_default())
        .finish();
    let location = format!("{redirect}{separator}{state}");
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

#[derive(Deserialize)]
struct Exchange {
    client_id: Option<String>,
    client_secret: Option<String>,
    code: Option<String>,
}

pub(super) async fn access_token(State(world): State<Shared>, body: Bytes) -> Response {
    let mut w = lock(&world);
    let parsed: Option<Exchange> = serde_json::from_slice(&body).ok().or_else(|| {
        let pairs: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(&body).into_owned().collect();
        Some(Exchange {
            client_id: pairs.get("client_id").cloned(),
            client_secret: pairs.get("client_secret").cloned(),
            code: pairs.get("code").cloned(),
        })
    });
    let bad = |what: &str| {
        axum::Json(json!({"error": what, "error_description": format!("The {what}.")}))
            .into_response()
    };
    let Some(Exchange {
        client_id: Some(id),
        client_secret: Some(secret),
        code: Some(code),
    }) = parsed
    else {
        return bad("incorrect_client_credentials");
    };
    if w.oauth_clients.get(&id) != Some(&secret) {
        return bad("incorrect_client_credentials");
    }
    let Some((user, issued_to)) = w.oauth_codes.remove(&code) else {
        return bad("bad_verification_code");
    };
    if issued_to != id {
        return bad("bad_verification_code");
    }
    let token = format!("ghu_test{}", w.next_id());
    w.user_tokens.insert(token.clone(), user);
    axum::Json(json!({"access_token": token, "token_type": "bearer", "scope": ""})).into_response()
}

pub(super) async fn current_user(State(world): State<Shared>, headers: HeaderMap) -> Response {
    let w = lock(&world);
    match w.user_of_token(&headers) {
        Some(user) => axum::Json(user.json()).into_response(),
        None => error(StatusCode::UNAUTHORIZED, "Requires authentication"),
    }
}

pub(super) async fn get_repository(
    State(world): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    let repository = format!("{owner}/{repo}");
    let installed = w
        .installations
        .values()
        .any(|i| i.account.eq_ignore_ascii_case(&owner) && i.repositories.contains(&repo));
    if !installed && w.repository_path(&repository).is_none() {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let readable = match super::server::authenticate_call(&w, &headers) {
        CallAuth::Installation(id) => w.installations.get(&id).is_some_and(|i| {
            i.account.eq_ignore_ascii_case(&owner) && i.repositories.contains(&repo)
        }),
        _ => match w.user_of_token(&headers) {
            Some(user) => w.can_read(&user, &repository),
            None => !w.private_repositories.contains(&repository),
        },
    };
    if !readable {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let mut value = repository_json(&repository);
    value["private"] = json!(w.private_repositories.contains(&repository));
    super::server::with_etag(&headers, &value)
}
