//! Pull requests, their changed files and reviews, and check runs in the fake GitHub.
//!
//! World changes (`open_pull_request`, `push_to_pull_request`, `submit_review`) return the
//! webhook payload GitHub would send, like `label_issue`; the REST side serves what the
//! approval-gate reconciler reads (`GET` a pull request, its files, reviews and comments,
//! paginated) and writes (check runs), with the same token scoping as every other call.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::server::{
    Page, Refusal, Shared, TEST_APP_ID, User, World, error, issue_json, json_body, lock,
    repository_json, require_repo, with_etag,
};

/// One changed file of a pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedFile {
    /// Path in the repository.
    pub filename: String,
    /// Lines added.
    pub additions: u64,
    /// Lines deleted.
    pub deletions: u64,
    /// `added`, `modified`, `removed` or `renamed`.
    pub status: String,
}

impl ChangedFile {
    /// A modified file.
    pub fn modified(filename: &str, additions: u64, deletions: u64) -> Self {
        Self {
            filename: filename.to_owned(),
            additions,
            deletions,
            status: "modified".to_owned(),
        }
    }

    fn json(&self, repository: &str) -> Value {
        let raw = format!("https://github.com/{repository}/raw/HEAD/{}", self.filename);
        json!({
            "sha": format!("{:040x}", self.filename.len()),
            "blob_url": raw.replace("/raw/", "/blob/"),
            "raw_url": raw,
            "contents_url": format!("https://api.github.com/repos/{repository}/contents/{}", self.filename),
            "filename": self.filename,
            "status": self.status,
            "additions": self.additions,
            "deletions": self.deletions,
            "changes": self.additions + self.deletions,
        })
    }
}

/// A submitted review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    /// Id.
    pub id: u64,
    /// Reviewer.
    pub user: User,
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED` or `DISMISSED`.
    pub state: String,
    /// The head commit it was given on.
    pub commit_id: String,
    /// Text.
    pub body: String,
}

impl Review {
    fn json(&self, repository: &str, number: u64) -> Value {
        json!({
            "id": self.id,
            "node_id": format!("PRR_{}", self.id),
            "user": self.user.json(),
            "body": self.body,
            "state": self.state,
            "commit_id": self.commit_id,
            "submitted_at": "2026-12-04T10:00:00Z",
            "author_association": "MEMBER",
            "html_url": format!("https://github.com/{repository}/pull/{number}#pullrequestreview-{}", self.id),
        })
    }
}

/// A pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequest {
    /// Author.
    pub author: User,
    /// Head branch.
    pub head_branch: String,
    /// Head commit.
    pub head_sha: String,
    /// Base branch.
    pub base_branch: String,
    /// Base commit.
    pub base_sha: String,
    /// Draft or ready.
    pub draft: bool,
    /// `open` or `closed`.
    pub state: String,
    /// Whether it merged.
    pub merged: bool,
    /// The files it changes.
    pub files: Vec<ChangedFile>,
    /// Reviews, oldest first.
    pub reviews: Vec<Review>,
    pushes: u64,
}

/// A check run created through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRun {
    /// Id.
    pub id: u64,
    /// `owner/name`.
    pub repository: String,
    /// Name, e.g. `countersign/approval`.
    pub name: String,
    /// The commit it reports on.
    pub head_sha: String,
    /// `queued`, `in_progress` or `completed`.
    pub status: String,
    /// `success`, `failure`, `neutral`, … once completed.
    pub conclusion: Option<String>,
    /// `output.title`.
    pub title: Option<String>,
    /// `output.summary` (Markdown).
    pub summary: Option<String>,
    /// Link shown as "Details".
    pub details_url: Option<String>,
}

impl CheckRun {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "node_id": format!("CR_{}", self.id),
            "url": format!("https://api.github.com/repos/{}/check-runs/{}", self.repository, self.id),
            "name": self.name,
            "head_sha": self.head_sha,
            "status": self.status,
            "conclusion": self.conclusion,
            "details_url": self.details_url,
            "output": {
                "title": self.title,
                "summary": self.summary,
                "annotations_count": 0,
                "annotations_url": format!("https://api.github.com/repos/{}/check-runs/{}/annotations", self.repository, self.id),
            },
            "app": {"id": TEST_APP_ID},
            "pull_requests": [],
        })
    }
}

/// A deterministic commit id for the `n`-th push of `branch`.
fn commit_sha(repository: &str, branch: &str, n: u64) -> String {
    let seed = format!("{repository}\0{branch}\0{n}");
    let a = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let b = a.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    let c = b.rotate_left(29) ^ a;
    format!("{a:016x}{b:016x}{:08x}", c as u32)
}

impl World {
    /// Opens a pull request from `head_branch` into `main` changing `files`; returns the
    /// `pull_request.opened` payload (its number is `payload["number"]`).
    pub fn open_pull_request(
        &mut self,
        repository: &str,
        title: &str,
        head_branch: &str,
        files: Vec<ChangedFile>,
        author: &User,
    ) -> Value {
        // Pull requests share the issue numbering and have an issue side (comments, labels).
        let number = self.open_issue(repository, title, "", author);
        self.pulls.insert(
            (repository.to_owned(), number),
            PullRequest {
                author: author.clone(),
                head_branch: head_branch.to_owned(),
                head_sha: commit_sha(repository, head_branch, 1),
                base_branch: "main".to_owned(),
                base_sha: commit_sha(repository, "main", 1),
                draft: false,
                state: "open".to_owned(),
                merged: false,
                files,
                reviews: Vec::new(),
                pushes: 1,
            },
        );
        self.pull_request_payload(repository, number, "opened", author)
    }

    /// Pushes a new commit to the pull request's branch changing `files` (replacing the
    /// list); returns the `pull_request.synchronize` payload.
    ///
    /// # Panics
    /// When the pull request does not exist (a mistake in the test itself).
    pub fn push_to_pull_request(
        &mut self,
        repository: &str,
        number: u64,
        files: Vec<ChangedFile>,
        sender: &User,
    ) -> Value {
        let pr = self.pull_mut(repository, number);
        let before = pr.head_sha.clone();
        pr.pushes += 1;
        pr.head_sha = commit_sha(repository, &pr.head_branch, pr.pushes);
        pr.files = files;
        let mut payload = self.pull_request_payload(repository, number, "synchronize", sender);
        payload["before"] = json!(before);
        payload["after"] = payload["pull_request"]["head"]["sha"].clone();
        payload
    }

    /// `reviewer` submits a review (`APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`) on the
    /// current head; returns the `pull_request_review.submitted` payload.
    ///
    /// # Panics
    /// When the pull request does not exist (a mistake in the test itself).
    pub fn submit_review(
        &mut self,
        repository: &str,
        number: u64,
        reviewer: &User,
        state: &str,
        body: &str,
    ) -> Value {
        let id = self.next_id();
        let pr = self.pull_mut(repository, number);
        let review = Review {
            id,
            user: reviewer.clone(),
            state: state.to_ascii_uppercase(),
            commit_id: pr.head_sha.clone(),
            body: body.to_owned(),
        };
        pr.reviews.push(review.clone());
        let mut payload = self.pull_request_payload(repository, number, "submitted", reviewer);
        // GitHub sends review states lower-case in webhooks and upper-case over REST.
        let mut review_json = review.json(repository, number);
        review_json["state"] = json!(review.state.to_ascii_lowercase());
        payload["review"] = review_json;
        payload
    }

    /// The check runs on `sha` of `repository`, oldest first.
    pub fn check_runs_on(&self, repository: &str, sha: &str) -> Vec<&CheckRun> {
        self.check_runs
            .iter()
            .filter(|c| c.repository == repository && c.head_sha == sha)
            .collect()
    }

    fn pull_mut(&mut self, repository: &str, number: u64) -> &mut PullRequest {
        self.pulls
            .get_mut(&(repository.to_owned(), number))
            .unwrap_or_else(|| panic!("test bug: no pull request {repository}#{number}"))
    }

    fn pull_request_payload(
        &self,
        repository: &str,
        number: u64,
        action: &str,
        sender: &User,
    ) -> Value {
        json!({
            "action": action,
            "number": number,
            "pull_request": self.pull_json(repository, number),
            "repository": repository_json(repository),
            "sender": sender.json(),
            "installation": {"id": self.installation_of(repository)},
        })
    }

    fn pull_json(&self, repository: &str, number: u64) -> Value {
        let key = (repository.to_owned(), number);
        let (Some(pr), Some(issue)) = (self.pulls.get(&key), self.issues.get(&key)) else {
            return Value::Null;
        };
        let mut value = issue_json(repository, number, issue);
        let end = |branch: &str, sha: &str| {
            json!({
                "label": format!("{}:{branch}", repository.split('/').next().unwrap_or("")),
                "ref": branch,
                "sha": sha,
                "repo": repository_json(repository),
            })
        };
        let extra = json!({
            "state": pr.state,
            "draft": pr.draft,
            "merged": pr.merged,
            "head": end(&pr.head_branch, &pr.head_sha),
            "base": end(&pr.base_branch, &pr.base_sha),
            "additions": pr.files.iter().map(|f| f.additions).sum::<u64>(),
            "deletions": pr.files.iter().map(|f| f.deletions).sum::<u64>(),
            "changed_files": pr.files.len(),
            "html_url": format!("https://github.com/{repository}/pull/{number}"),
            "url": format!("https://api.github.com/repos/{repository}/pulls/{number}"),
            "node_id": format!("PR_{number}"),
            "locked": false,
        });
        if let (Some(v), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        value
    }
}

/// One page of `items` (`per_page` ≤ 100, default 30) with a `Link: rel="next"` header when
/// more follow, as GitHub paginates lists.
/// The `page`-th window (from 1) of `per_page` items (default 30, at most 100), as GitHub
/// pages lists: the items, and the page size and number actually used.
fn window(items: &[Value], page: &Page) -> (Vec<Value>, usize, usize) {
    let per_page = page.per_page.unwrap_or(30).clamp(1, 100);
    let number = page.page.unwrap_or(1).max(1);
    let chunk = items
        .iter()
        .skip((number - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    (chunk, per_page, number)
}

/// One page of `items` with a `Link: rel="next"` header when more follow, as GitHub
/// paginates lists.
pub(super) fn paginate(headers: &HeaderMap, path: &str, items: &[Value], page: &Page) -> Response {
    let (chunk, per_page, number) = window(items, page);
    let mut response = with_etag(headers, &Value::Array(chunk));
    if number * per_page < items.len() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let next = format!(
            "<http://{host}{path}?per_page={per_page}&page={}>; rel=\"next\"",
            number + 1
        );
        if let Ok(v) = HeaderValue::from_str(&next) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    response
}

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/files",
            get(list_files),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/reviews",
            get(list_reviews),
        )
        .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
        .route(
            "/repos/{owner}/{repo}/check-runs/{id}",
            patch(update_check_run),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/check-runs",
            get(list_check_runs),
        )
}

fn pull<'w>(
    world: &'w World,
    owner: &str,
    repo: &str,
    number: u64,
) -> Result<&'w PullRequest, Refusal> {
    world
        .pulls
        .get(&(format!("{owner}/{repo}"), number))
        .ok_or_else(|| Refusal::new(StatusCode::NOT_FOUND, "Not Found"))
}

async fn get_pull(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    let found = require_repo(&w, &headers, &owner, &repo, "pull_requests", false)
        .and_then(|_| pull(&w, &owner, &repo, number));
    match found {
        Ok(_) => with_etag(&headers, &w.pull_json(&format!("{owner}/{repo}"), number)),
        Err(r) => r.into_response(),
    }
}

/// One page of a list under a pull request (`…/pulls/{number}/{what}`).
fn pull_list(
    world: &Shared,
    (owner, repo, number): (String, String, u64),
    page: &Page,
    headers: &HeaderMap,
    what: &str,
    items: fn(&PullRequest, &str, u64) -> Vec<Value>,
) -> Response {
    let w = lock(world);
    let found = require_repo(&w, headers, &owner, &repo, "pull_requests", false)
        .and_then(|_| pull(&w, &owner, &repo, number));
    match found {
        Ok(pr) => {
            let values = items(pr, &format!("{owner}/{repo}"), number);
            let path = format!("/repos/{owner}/{repo}/pulls/{number}/{what}");
            paginate(headers, &path, &values, page)
        }
        Err(r) => r.into_response(),
    }
}

async fn list_files(
    State(world): State<Shared>,
    Path(at): Path<(String, String, u64)>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    pull_list(&world, at, &page, &headers, "files", |pr, repository, _| {
        pr.files.iter().map(|f| f.json(repository)).collect()
    })
}

async fn list_reviews(
    State(world): State<Shared>,
    Path(at): Path<(String, String, u64)>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    pull_list(
        &world,
        at,
        &page,
        &headers,
        "reviews",
        |pr, repository, number| {
            pr.reviews
                .iter()
                .map(|r| r.json(repository, number))
                .collect()
        },
    )
}

/// `GET /repos/{owner}/{repo}/issues/{number}/comments`.
pub(super) async fn list_comments(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "issues", false) {
        return r.into_response();
    }
    let repository = format!("{owner}/{repo}");
    if !w.issues.contains_key(&(repository.clone(), number)) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let comments: Vec<Value> = w
        .comments_on(&repository, number)
        .into_iter()
        .map(|c| {
            json!({
                "id": c.id,
                "body": c.body,
                "node_id": format!("IC_{}", c.id),
                "url": format!("https://api.github.com/repos/{repository}/issues/comments/{}", c.id),
                "user": User {
                    id: c.author_id,
                    login: c.author.clone(),
                    kind: if c.author.ends_with("[bot]") { "Bot" } else { "User" },
                }
                .json(),
                "created_at": "2026-12-04T10:00:00Z",
                "updated_at": "2026-12-04T10:00:00Z",
                "author_association": "MEMBER",
                "html_url": format!("https://github.com/{repository}/issues/{number}#issuecomment-{}", c.id),
            })
        })
        .collect();
    let path = format!("/repos/{owner}/{repo}/issues/{number}/comments");
    paginate(&headers, &path, &comments, &page)
}

const CHECK_STATUSES: &[&str] = &["queued", "in_progress", "completed"];
const CHECK_CONCLUSIONS: &[&str] = &[
    "action_required",
    "cancelled",
    "failure",
    "neutral",
    "success",
    "skipped",
    "stale",
    "timed_out",
];

#[derive(Deserialize, Default)]
struct Output {
    title: Option<String>,
    summary: Option<String>,
}

#[derive(Deserialize)]
struct CheckRunWrite {
    name: Option<String>,
    head_sha: Option<String>,
    status: Option<String>,
    conclusion: Option<String>,
    details_url: Option<String>,
    output: Option<Output>,
}

/// Applies a create or update body to `run`, refusing what GitHub refuses.
fn apply_check_write(run: &mut CheckRun, write: CheckRunWrite) -> Result<(), Refusal> {
    let invalid = |what: &str| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, what);
    if let Some(status) = write.status {
        if !CHECK_STATUSES.contains(&status.as_str()) {
            return Err(invalid("Invalid status"));
        }
        run.status = status;
    }
    if let Some(conclusion) = write.conclusion {
        if !CHECK_CONCLUSIONS.contains(&conclusion.as_str()) {
            return Err(invalid("Invalid conclusion"));
        }
        run.conclusion = Some(conclusion);
        run.status = "completed".to_owned();
    }
    if run.status == "completed" && run.conclusion.is_none() {
        return Err(invalid(
            "Missing conclusion: a completed check run needs one",
        ));
    }
    if let Some(name) = write.name {
        run.name = name;
    }
    if let Some(url) = write.details_url {
        run.details_url = Some(url);
    }
    if let Some(output) = write.output {
        if output.summary.as_ref().is_some_and(|s| s.len() > 65_535) {
            return Err(invalid("output.summary is longer than 65535 characters"));
        }
        run.title = output.title.or(run.title.take());
        run.summary = output.summary.or(run.summary.take());
    }
    Ok(())
}

async fn create_check_run(
    State(world): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "checks", true) {
        return r.into_response();
    }
    let write: CheckRunWrite = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let (Some(name), Some(head_sha)) = (write.name.clone(), write.head_sha.clone()) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name and head_sha are required",
        );
    };
    let mut run = CheckRun {
        id: w.next_id(),
        repository: format!("{owner}/{repo}"),
        name,
        head_sha,
        status: "queued".to_owned(),
        conclusion: None,
        title: None,
        summary: None,
        details_url: None,
    };
    if let Err(r) = apply_check_write(&mut run, write) {
        return r.into_response();
    }
    let answer = run.json();
    w.check_runs.push(run);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn update_check_run(
    State(world): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "checks", true) {
        return r.into_response();
    }
    let write: CheckRunWrite = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let repository = format!("{owner}/{repo}");
    let Some(run) = w
        .check_runs
        .iter_mut()
        .find(|c| c.id == id && c.repository == repository)
    else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut updated = run.clone();
    match apply_check_write(&mut updated, write) {
        Ok(()) => {
            *run = updated;
            axum::Json(run.json()).into_response()
        }
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct CheckRunFilter {
    check_name: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
}

async fn list_check_runs(
    State(world): State<Shared>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    Query(filter): Query<CheckRunFilter>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "checks", false) {
        return r.into_response();
    }
    let runs: Vec<Value> = w
        .check_runs_on(&format!("{owner}/{repo}"), &sha)
        .into_iter()
        .filter(|c| filter.check_name.as_ref().is_none_or(|n| *n == c.name))
        .map(CheckRun::json)
        .collect();
    let page = Page {
        per_page: filter.per_page,
        page: filter.page,
    };
    let (chunk, _, _) = window(&runs, &page);
    with_etag(
        &headers,
        &json!({"total_count": runs.len(), "check_runs": chunk}),
    )
}
