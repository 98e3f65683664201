//! Calls made as one installation ([`InstallationClient`]) and what every resource module
//! shares: path building and pagination that follows `Link` headers (by path, so credentials
//! stay on GitHub Enterprise hosts).

use http::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::GitHubError;
use crate::app::GitHubApp;
use crate::transport::{Answer, Auth};

/// Page size for listing calls.
const PER_PAGE: u32 = 100;
/// Most pages read from one listing (10,000 items).
const MAX_PAGES: usize = 100;

/// Calls made as one installation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct InstallationClient {
    pub(crate) app: GitHubApp,
    pub(crate) id: u64,
}

impl InstallationClient {
    /// The installation id.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.app
            .send(method, path, Auth::Installation(self.id), body)
            .await
    }

    /// Like [`Self::send`] for a creation that must not happen twice: not sent again after
    /// an answer that leaves open whether GitHub carried it out.
    pub(crate) async fn send_once_only(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, GitHubError> {
        self.app
            .send_with(
                method,
                path,
                Auth::Installation(self.id),
                body,
                crate::transport::Repeat::Never,
            )
            .await
    }

    /// Every item of the listing at `path`, following `Link: rel="next"` for at most
    /// [`MAX_PAGES`] pages of [`PER_PAGE`]; `items` takes one page's body apart (an array, or
    /// an object wrapping one).
    pub(crate) async fn get_all_pages<P: DeserializeOwned, T>(
        &self,
        path: &str,
        what: &str,
        items: impl FnMut(P) -> Vec<T>,
    ) -> Result<Vec<T>, GitHubError> {
        Ok(self.list_all_pages(path, what, items).await?.items)
    }

    /// Like [`Self::get_all_pages`], saying whether every page was answered `304 Not
    /// Modified` (`path` may carry a query, e.g. filters).
    pub(crate) async fn list_all_pages<P: DeserializeOwned, T>(
        &self,
        path: &str,
        what: &str,
        mut items: impl FnMut(P) -> Vec<T>,
    ) -> Result<Listing<T>, GitHubError> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut next = Some(format!("{path}{separator}per_page={PER_PAGE}"));
        let mut all = Vec::new();
        let mut not_modified = true;
        let mut pages = 0;
        while let Some(url) = next.take() {
            let answer = self.send(Method::GET, &url, None).await?;
            not_modified &= answer.not_modified;
            all.extend(items(answer.json::<P>(what)?));
            pages += 1;
            next = answer
                .headers
                .get(http::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::parse::next_link)
                .map(str::to_owned);
            if pages >= MAX_PAGES && next.is_some() {
                tracing::warn!(what, pages, "stopped following a listing at the page cap");
                break;
            }
        }
        Ok(Listing {
            items: all,
            not_modified,
        })
    }
}

/// Every item of a listing, read with conditional requests.
#[derive(Clone, Debug)]
pub struct Listing<T> {
    /// The items, in GitHub's order.
    pub items: Vec<T>,
    /// Every page was answered `304 Not Modified`: nothing changed since the last read, and
    /// the listing cost no rate limit.
    pub not_modified: bool,
}

#[derive(Deserialize)]
pub(crate) struct Id {
    pub(crate) id: u64,
}

/// Percent-encodes one path segment (owner, repository, login, team slug).
pub(crate) fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `/repos/{owner}/{repo}`, escaped.
pub(crate) fn repo_path(owner: &str, repo: &str) -> String {
    format!("/repos/{}/{}", seg(owner), seg(repo))
}
