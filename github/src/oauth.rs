//! Signing people in with GitHub (the App's OAuth web flow), for pages that show a private
//! repository's gates only to people who can read the repository:
//!
//! 1. send the browser to [`GitHubApp::oauth_authorize_url`] with a random `state`;
//! 2. GitHub sends it back with a `code`, exchanged for a user token by
//!    [`GitHubApp::oauth_exchange`] (the App's client id and secret);
//! 3. [`GitHubApp::oauth_user`] says who that is, and [`GitHubApp::user_can_read`] whether
//!    they can read a repository (`GET /repos/{owner}/{repo}` as them: GitHub answers 404 to
//!    people who cannot).
//!
//! User tokens are sent to the API root only, never cached with the App's answers, and never
//! retried: a person is waiting.

use http::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::GitHubError;
use crate::app::GitHubApp;
use crate::installation::{InstallationClient, repo_path};
use crate::users::{Account, AccountKind};

/// The App's OAuth credentials (App settings → "Client ID" and a generated client secret).
#[derive(Clone)]
pub struct OAuthClient {
    /// The client id (`Iv1.…`).
    pub client_id: String,
    /// The client secret.
    pub client_secret: SecretString,
}

impl std::fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthClient")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The GitHub web host serving the REST API at `api_url`: `https://api.github.com` →
/// `https://github.com`; GitHub Enterprise Server's `https://HOST/api/v3` → `https://HOST`;
/// anything else is taken to serve both.
pub fn web_url_for_api(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if let Some(rest) = api.strip_prefix("https://api.") {
        return format!("https://{rest}");
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_owned()
}

#[derive(Deserialize)]
struct WireToken {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct WireUser {
    id: u64,
    login: String,
    #[serde(rename = "type", default)]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct WireRepo {
    #[serde(default)]
    private: bool,
}

impl GitHubApp {
    /// The GitHub web host (where people sign in).
    pub fn web_url(&self) -> String {
        web_url_for_api(&self.inner.base_url)
    }

    /// Where to send a browser to sign in: GitHub asks the person to authorise the App and
    /// returns to `redirect_uri` with a code and `state`.
    pub fn oauth_authorize_url(
        &self,
        client: &OAuthClient,
        redirect_uri: &str,
        state: &str,
    ) -> String {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state)
            .append_pair("allow_signup", "false")
            .finish();
        format!("{}/login/oauth/authorize?{query}", self.web_url())
    }

    /// Exchanges the code GitHub returned for a user token.
    pub async fn oauth_exchange(
        &self,
        client: &OAuthClient,
        code: &str,
        redirect_uri: &str,
    ) -> Result<SecretString, GitHubError> {
        let url = format!("{}/login/oauth/access_token", self.web_url());
        let body = serde_json::json!({
            "client_id": client.client_id,
            "client_secret": client.client_secret.expose_secret(),
            "code": code,
            "redirect_uri": redirect_uri,
        });
        let (status, bytes) = self.raw(Method::POST, &url, None, Some(&body)).await?;
        if !status.is_success() {
            return Err(GitHubError::Status {
                status: status.as_u16(),
                message: "the sign-in code was refused".to_owned(),
            });
        }
        let token: WireToken = serde_json::from_slice(&bytes)
            .map_err(|e| GitHubError::Decode(format!("OAuth token: {e}")))?;
        match (token.access_token, token.error) {
            (Some(token), None) if !token.is_empty() => Ok(SecretString::from(token)),
            (_, error) => Err(GitHubError::Unauthorized(format!(
                "GitHub refused the sign-in: {}",
                token
                    .error_description
                    .or(error)
                    .unwrap_or_else(|| "no token".to_owned())
            ))),
        }
    }

    /// Who the user token belongs to (`GET /user`).
    pub async fn oauth_user(&self, token: &SecretString) -> Result<Account, GitHubError> {
        let url = format!("{}/user", self.inner.base_url);
        let (status, bytes) = self.raw(Method::GET, &url, Some(token), None).await?;
        match status {
            s if s.is_success() => {
                let user: WireUser = serde_json::from_slice(&bytes)
                    .map_err(|e| GitHubError::Decode(format!("GET /user: {e}")))?;
                Ok(Account {
                    id: user.id,
                    login: user.login,
                    kind: match user.kind.as_deref() {
                        Some("Bot") => AccountKind::Bot,
                        Some("Organization") => AccountKind::Organization,
                        _ => AccountKind::User,
                    },
                })
            }
            StatusCode::UNAUTHORIZED => {
                Err(GitHubError::Unauthorized("the sign-in expired".into()))
            }
            s => Err(GitHubError::Status {
                status: s.as_u16(),
                message: "GET /user failed".to_owned(),
            }),
        }
    }

    /// Whether the user token's owner can read `owner/repo`.
    pub async fn user_can_read(
        &self,
        token: &SecretString,
        owner: &str,
        repo: &str,
    ) -> Result<bool, GitHubError> {
        let url = format!("{}{}", self.inner.base_url, repo_path(owner, repo));
        let (status, _) = self.raw(Method::GET, &url, Some(token), None).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN => Ok(false),
            StatusCode::UNAUTHORIZED => {
                Err(GitHubError::Unauthorized("the sign-in expired".into()))
            }
            s => Err(GitHubError::Status {
                status: s.as_u16(),
                message: format!("GET /repos/{owner}/{repo} failed"),
            }),
        }
    }

    /// One request with a user token (or none), outside the App's retries and ETag cache.
    async fn raw(
        &self,
        method: Method,
        url: &str,
        token: Option<&SecretString>,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, bytes::Bytes), GitHubError> {
        let mut builder = http::Request::builder()
            .method(method.clone())
            .uri(url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = token {
            let mut value =
                http::HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| GitHubError::Decode("a user token that is not ASCII".into()))?;
            value.set_sensitive(true);
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let request = self
            .inner
            .http
            .build_request(builder, body)
            .map_err(|e| GitHubError::Config(format!("bad request {url}: {e}")))?;
        let exchange = async {
            let response = self.inner.http.execute(request).await?;
            let (parts, body) = response.into_parts();
            let body = http_body_util::BodyExt::collect(body).await?.to_bytes();
            Ok::<_, octocrab::Error>((parts.status, body))
        };
        match tokio::time::timeout(self.inner.config.request_timeout, exchange).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(GitHubError::Transport(format!("{method} {url}: {e}"))),
            Err(_) => Err(GitHubError::Transport(format!(
                "{method} {url}: no answer in time"
            ))),
        }
    }
}

impl InstallationClient {
    /// Whether `owner/repo` is private (`GET /repos/{owner}/{repo}` as the installation).
    pub async fn repository_is_private(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<bool, GitHubError> {
        let answer = self
            .send(Method::GET, &repo_path(owner, repo), None)
            .await?;
        Ok(answer.json::<WireRepo>("repository")?.private)
    }
}

#[cfg(test)]
mod tests {
    use super::web_url_for_api;

    #[test]
    fn web_hosts_follow_the_api_url() {
        assert_eq!(
            web_url_for_api("https://api.github.com/"),
            "https://github.com"
        );
        assert_eq!(
            web_url_for_api("https://ghe.example.com/api/v3"),
            "https://ghe.example.com"
        );
        assert_eq!(
            web_url_for_api("http://127.0.0.1:4000"),
            "http://127.0.0.1:4000"
        );
    }
}
