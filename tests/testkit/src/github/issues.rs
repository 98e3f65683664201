//! Issues in the fake GitHub: the repository's issue listing with GitHub's filters, and each
//! issue's events.
//!
//! - `GET /repos/{o}/{r}/issues`: `state` (`open` by default, `closed`, `all`), `labels`
//!   (comma-separated; an issue must carry every one, names compared case-insensitively),
//!   newest first (`direction=asc` for oldest first), paginated with `Link` headers. Pull
//!   requests are listed too, marked with a `pull_request` object, as on GitHub.
//! - `GET /repos/{o}/{r}/issues/{n}/events`: what happened to the issue, oldest first,
//!   paginated: a `labeled`/`unlabeled` event (with its `actor` and `label`) for every label
//!   change made by [`World::label_issue`], [`World::unlabel_issue`] or `POST …/labels`, and
//!   `closed` for [`World::close_issue`].
//!
//! Both carry `ETag`s and answer `304` to a matching `If-None-Match`, like every `GET` here.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use super::pulls::{paginate, url_query};
use super::server::{
    Page, Shared, User, World, error, issue_json, label_json, lock, repository_json, require_repo,
};

/// One event of an issue or pull request, as `GET …/issues/{n}/events` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueEvent {
    /// GitHub's event id.
    pub id: u64,
    /// `owner/name`.
    pub repository: String,
    /// Issue or pull request number.
    pub number: u64,
    /// `labeled`, `unlabeled` or `closed`.
    pub event: String,
    /// The label, for label events.
    pub label: Option<String>,
    /// Who did it.
    pub actor: User,
    /// When.
    pub created_at: Timestamp,
}

impl IssueEvent {
    fn json(&self) -> Value {
        let (repository, id) = (&self.repository, self.id);
        json!({
            "id": id,
            "node_id": format!("LE_{id}"),
            "url": format!("https://api.github.com/repos/{repository}/issues/events/{id}"),
            "actor": self.actor.json(),
            "event": self.event,
            "commit_id": null,
            "commit_url": null,
            "created_at": self.created_at.to_string(),
            "label": self.label.as_ref().map(|l| json!({"name": l, "color": "ededed"})),
            "performed_via_github_app": null,
        })
    }
}

impl World {
    /// Records that `actor` did `event` (with `label`) on `repository#number` now.
    pub(super) fn record_issue_event(
        &mut self,
        repository: &str,
        number: u64,
        event: &str,
        label: Option<&str>,
        actor: &User,
    ) {
        let id = self.next_id();
        let created_at = self.tick();
        self.issue_events.push(IssueEvent {
            id,
            repository: repository.to_owned(),
            number,
            event: event.to_owned(),
            label: label.map(str::to_owned),
            actor: actor.clone(),
            created_at,
        });
    }

    /// Removes `label` from issue `number` as `sender`; returns the `issues.unlabeled`
    /// payload GitHub would deliver.
    ///
    /// # Panics
    /// When the issue does not exist (a mistake in the test itself).
    pub fn unlabel_issue(
        &mut self,
        repository: &str,
        number: u64,
        label: &str,
        sender: &User,
    ) -> Value {
        let installation = self.installation_of(repository);
        let issue = self
            .issues
            .get_mut(&(repository.to_owned(), number))
            .unwrap_or_else(|| panic!("test bug: no issue {repository}#{number}"));
        let before = issue.labels.len();
        issue.labels.retain(|l| !l.eq_ignore_ascii_case(label));
        let removed = issue.labels.len() < before;
        let issue = issue.clone();
        if removed {
            self.record_issue_event(repository, number, "unlabeled", Some(label), sender);
        }
        json!({
            "action": "unlabeled",
            "issue": issue_json(repository, number, &issue),
            "label": label_json(repository, label),
            "repository": repository_json(repository),
            "sender": sender.json(),
            "installation": {"id": installation},
        })
    }

    /// Closes issue `number` as `sender` (a pull request is closed through its own state).
    ///
    /// # Panics
    /// When the issue does not exist (a mistake in the test itself).
    pub fn close_issue(&mut self, repository: &str, number: u64, sender: &User) {
        let key = (repository.to_owned(), number);
        assert!(
            self.issues.contains_key(&key),
            "test bug: no issue {repository}#{number}"
        );
        if self.closed_issues.insert(key) {
            self.record_issue_event(repository, number, "closed", None, sender);
        }
    }

    /// Whether issue (or pull request) `number` is open.
    pub fn issue_is_open(&self, repository: &str, number: u64) -> bool {
        let key = (repository.to_owned(), number);
        match self.pulls.get(&key) {
            Some(pr) => pr.state == "open",
            None => self.issues.contains_key(&key) && !self.closed_issues.contains(&key),
        }
    }

    /// The events of `repository#number`, oldest first.
    pub fn events_on(&self, repository: &str, number: u64) -> Vec<&IssueEvent> {
        self.issue_events
            .iter()
            .filter(|e| e.repository == repository && e.number == number)
            .collect()
    }

    /// The REST form of `repository#number` in the issue listing: its state, and a
    /// `pull_request` object for pull requests.
    fn listed_issue_json(&self, repository: &str, number: u64) -> Option<Value> {
        let issue = self.issues.get(&(repository.to_owned(), number))?;
        let mut value = issue_json(repository, number, issue);
        let open = self.issue_is_open(repository, number);
        value["state"] = json!(if open { "open" } else { "closed" });
        if self.pulls.contains_key(&(repository.to_owned(), number)) {
            value["pull_request"] = json!({
                "url": format!("https://api.github.com/repos/{repository}/pulls/{number}"),
                "html_url": format!("https://github.com/{repository}/pull/{number}"),
            });
        }
        Some(value)
    }
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/repos/{owner}/{repo}/issues", get(list_issues))
        .route(
            "/repos/{owner}/{repo}/issues/{number}/events",
            get(list_events),
        )
}

#[derive(Deserialize)]
struct IssueFilter {
    state: Option<String>,
    labels: Option<String>,
    direction: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
}

/// `GET /repos/{owner}/{repo}/issues`.
async fn list_issues(
    State(world): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(filter): Query<IssueFilter>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "issues", false) {
        return r.into_response();
    }
    let state = filter.state.clone().unwrap_or_else(|| "open".to_owned());
    if !["open", "closed", "all"].contains(&state.as_str()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let wanted: Vec<&str> = filter
        .labels
        .as_deref()
        .map(|l| {
            l.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let repository = format!("{owner}/{repo}");
    let mut numbers: Vec<u64> = w
        .issues
        .iter()
        .filter(|((r, n), issue)| {
            r.eq_ignore_ascii_case(&repository)
                && (state == "all" || (state == "open") == w.issue_is_open(r, *n))
                && wanted
                    .iter()
                    .all(|want| issue.labels.iter().any(|l| l.eq_ignore_ascii_case(want)))
        })
        .map(|((_, n), _)| *n)
        .collect();
    numbers.sort_unstable();
    if filter.direction.as_deref() != Some("asc") {
        numbers.reverse();
    }
    let mut items: Vec<Value> = numbers
        .into_iter()
        .filter_map(|n| w.listed_issue_json(&repository, n))
        .collect();
    items.iter_mut().for_each(|v| w.scrub_deleted(v));
    let query = url_query(&[
        ("state", filter.state),
        ("labels", filter.labels),
        ("direction", filter.direction),
    ]);
    let mut path = format!("/repos/{owner}/{repo}/issues");
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query);
    }
    let page = Page {
        per_page: filter.per_page,
        page: filter.page,
    };
    paginate(&headers, &path, &items, &page)
}

/// `GET /repos/{owner}/{repo}/issues/{number}/events`. Needs `issues: read`, or
/// `pull_requests: read` for a pull request.
async fn list_events(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    let repository = format!("{owner}/{repo}");
    let is_pull = w.pulls.contains_key(&(repository.clone(), number));
    let allowed = require_repo(&w, &headers, &owner, &repo, "issues", false).or_else(|refusal| {
        if is_pull {
            require_repo(&w, &headers, &owner, &repo, "pull_requests", false)
        } else {
            Err(refusal)
        }
    });
    if let Err(r) = allowed {
        return r.into_response();
    }
    if !w.issues.contains_key(&(repository.clone(), number)) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let mut events: Vec<Value> = w
        .events_on(&repository, number)
        .into_iter()
        .map(IssueEvent::json)
        .collect();
    events.iter_mut().for_each(|v| w.scrub_deleted(v));
    let path = format!("/repos/{owner}/{repo}/issues/{number}/events");
    paginate(&headers, &path, &events, &page)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use countersign_github::{InstallationClient, IssueEventKind};

    use super::super::{FakeGitHub, User};

    const REPO: &str = "octo-org/widgets";

    async fn setup() -> (FakeGitHub, InstallationClient) {
        let fake = FakeGitHub::start().await.expect("fake GitHub");
        fake.world().install(77, "octo-org", &["widgets"]);
        let client = fake.app_client().installation(77);
        (fake, client)
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(20), f)
            .await
            .expect("answered in time")
    }

    #[tokio::test]
    async fn open_issues_are_filtered_by_label_and_state_then_answered_304() {
        let (fake, client) = setup().await;
        let alice = User::new(1, "alice");
        {
            let mut w = fake.world();
            for n in 1..=130 {
                let number = w.open_issue(REPO, &format!("Issue {n}"), "", &alice);
                if n % 2 == 0 {
                    w.label_issue(REPO, number, "AI:Backend", &alice);
                }
                if n % 10 == 0 {
                    w.label_issue(REPO, number, "bug", &alice);
                }
            }
            w.close_issue(REPO, 2, &alice);
        }
        let listing = within(client.open_issues_with_label("octo-org", "widgets", "ai:backend"))
            .await
            .expect("listed");
        assert!(!listing.not_modified);
        assert_eq!(listing.items.len(), 64, "65 labelled, one closed");
        assert_eq!(listing.items[0].number, 130, "newest first");
        assert!(listing.items.iter().all(|i| i.open && i.number % 2 == 0));
        let pages = fake.calls_to("/repos/octo-org/widgets/issues?");
        assert_eq!(pages.len(), 1, "64 fit one page of 100: {pages:?}");

        let before = fake.calls().len();
        let again = within(client.open_issues_with_label("octo-org", "widgets", "ai:backend"))
            .await
            .expect("listed");
        assert!(again.not_modified, "nothing changed");
        assert_eq!(again.items.len(), 64);
        let calls = fake.calls();
        assert!(
            calls[before..].iter().all(|c| c.status == 304),
            "{:?}",
            &calls[before..]
        );
    }

    #[tokio::test]
    async fn pages_of_a_long_listing_are_followed_and_a_304_keeps_the_link() {
        let (fake, client) = setup().await;
        let alice = User::new(1, "alice");
        {
            let mut w = fake.world();
            for n in 1..=250 {
                let number = w.open_issue(REPO, &format!("Issue {n}"), "", &alice);
                w.label_issue(REPO, number, "ai:backend", &alice);
            }
        }
        let first = within(client.open_issues_with_label("octo-org", "widgets", "ai:backend"))
            .await
            .expect("listed");
        assert_eq!(first.items.len(), 250);
        let before = fake.calls().len();
        let second = within(client.open_issues_with_label("octo-org", "widgets", "ai:backend"))
            .await
            .expect("listed");
        assert_eq!(second.items.len(), 250, "every page again, from the cache");
        assert!(second.not_modified);
        let calls = fake.calls();
        let new = &calls[before..];
        assert_eq!(new.len(), 3, "three pages: {new:?}");
        assert!(new.iter().all(|c| c.status == 304), "{new:?}");

        // A change on any page makes the listing modified.
        fake.world().unlabel_issue(REPO, 1, "ai:backend", &alice);
        let third = within(client.open_issues_with_label("octo-org", "widgets", "ai:backend"))
            .await
            .expect("listed");
        assert!(!third.not_modified);
        assert_eq!(third.items.len(), 249);
    }

    #[tokio::test]
    async fn pull_requests_are_listed_as_issues_and_their_state_is_theirs() {
        let (fake, client) = setup().await;
        let alice = User::new(1, "alice");
        {
            let mut w = fake.world();
            w.open_pull_request(REPO, "A change", "feature", Vec::new(), &alice);
            w.label_issue(REPO, 1, "ai:backend", &alice);
        }
        let listing = within(client.open_issues_with_label("octo-org", "widgets", "ai:backend"))
            .await
            .expect("listed");
        assert_eq!(listing.items.len(), 1);
        assert!(listing.items[0].is_pull_request);
        fake.world().pull_mut(REPO, 1).state = "closed".into();
        let listing = within(client.open_issues_with_label("octo-org", "widgets", "ai:backend"))
            .await
            .expect("listed");
        assert!(
            listing.items.is_empty(),
            "a closed pull request is not open"
        );
    }

    #[tokio::test]
    async fn events_say_who_labelled_and_unlabelled_and_are_conditional() {
        let (fake, client) = setup().await;
        let (alice, rita) = (User::new(1, "alice"), User::new(2, "rita"));
        let number = {
            let mut w = fake.world();
            let n = w.open_issue(REPO, "Add retries", "", &alice);
            w.label_issue(REPO, n, "ai:backend", &rita);
            w.label_issue(REPO, n, "ai:backend", &alice); // already there: no event
            w.unlabel_issue(REPO, n, "ai:backend", &rita);
            w.label_issue(REPO, n, "ai:backend", &alice);
            n
        };
        let events = within(client.issue_events("octo-org", "widgets", number))
            .await
            .expect("events");
        let kinds: Vec<(IssueEventKind, String)> = events
            .items
            .iter()
            .map(|e| {
                (
                    e.kind.clone(),
                    e.actor
                        .as_ref()
                        .map(|a| a.login.clone())
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                (IssueEventKind::Labeled("ai:backend".into()), "rita".into()),
                (
                    IssueEventKind::Unlabeled("ai:backend".into()),
                    "rita".into()
                ),
                (IssueEventKind::Labeled("ai:backend".into()), "alice".into()),
            ]
        );
        let current = countersign_github::issues::current_labeling(&events.items, "ai:backend")
            .expect("labelled");
        assert_eq!(current.actor.as_ref().map(|a| a.id), Some(1));
        let again = within(client.issue_events("octo-org", "widgets", number))
            .await
            .expect("events");
        assert!(again.not_modified);
        let missing = within(client.issue_events("octo-org", "widgets", 99)).await;
        assert!(matches!(
            missing,
            Err(countersign_github::GitHubError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn the_repository_answers_its_id_conditionally() {
        let (fake, client) = setup().await;
        let id = within(client.repository_id("octo-org", "widgets"))
            .await
            .expect("repository");
        let again = within(client.repository_id("octo-org", "widgets"))
            .await
            .expect("repository");
        assert_eq!(id, again);
        let calls: Vec<_> = fake
            .calls()
            .into_iter()
            .filter(|c| c.path == "/repos/octo-org/widgets")
            .collect();
        assert_eq!(
            calls.iter().map(|c| c.status).collect::<Vec<_>>(),
            [200, 304]
        );
    }

    #[tokio::test]
    async fn open_pull_requests_are_listed_conditionally() {
        let (fake, client) = setup().await;
        let alice = User::new(1, "alice");
        {
            let mut w = fake.world();
            w.open_pull_request(REPO, "One", "one", Vec::new(), &alice);
            w.open_pull_request(REPO, "Two", "two", Vec::new(), &alice);
            w.pull_mut(REPO, 1).state = "closed".into();
        }
        let listing = within(client.open_pull_requests("octo-org", "widgets"))
            .await
            .expect("listed");
        assert_eq!(
            listing.items.iter().map(|p| p.number).collect::<Vec<_>>(),
            [2]
        );
        assert_eq!(listing.items[0].head_ref, "two");
        assert!(!listing.not_modified);
        let again = within(client.open_pull_requests("octo-org", "widgets"))
            .await
            .expect("listed");
        assert!(again.not_modified);
    }
}
