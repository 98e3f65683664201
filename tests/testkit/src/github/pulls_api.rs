//! Pull requests opened through the API from real branches, the pull request listing with
//! GitHub's filters, labels added through the API, and user lookups.
//!
//! `POST /repos/{o}/{r}/pulls` reads the hosted git repository: the head and base SHAs are
//! the branch tips, the commits are `merge-base..head` (oldest first, real tree SHAs, git
//! identities linked to accounts as GitHub links them) and the files are
//! `git diff base...head` with renames. The result lives in the same [`World::pulls`] the
//! gate endpoints serve, authored by whoever called (an installation token acts as the App's
//! bot account). Refusals carry GitHub's `Validation Failed` body with its `errors` entry:
//! no commits between the branches, an open pull request for the same head and base, a head
//! or base branch that does not exist.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::git::{CompareError, Comparison, RawCommit, compare};
use super::pulls::{Commit, PullRequest, paginate, url_query};
use super::server::{
    Page, Shared, TEST_APP_BOT_USER_ID, User, World, error, json_body, label_json, lock,
    require_repo, with_etag,
};

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/repos/{owner}/{repo}/pulls",
            get(list_pulls).post(create_pull),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/labels",
            post(add_labels),
        )
        .route("/users/{login}", get(get_user))
}

/// A pull request to open, as `POST …/pulls` asked for it.
struct NewPull {
    repository: String,
    title: String,
    body: String,
    head: String,
    base: String,
    draft: bool,
    author: User,
}

impl World {
    /// Every account the world knows by `login` (case-insensitive): the App's bot, added
    /// users, team members, and the authors of issues, pull requests, commits, reviews and
    /// comments.
    pub fn known_user(&self, login: &str) -> Option<User> {
        let bot = User::test_app_bot();
        if bot.login.eq_ignore_ascii_case(login) {
            return Some(bot);
        }
        if let Some(user) = self.users.get(&login.to_ascii_lowercase()) {
            return Some(user.clone());
        }
        let pulls = self.pulls.values().flat_map(|pr| {
            let reviewers = pr.reviews.iter().map(|r| &r.user);
            let committers = pr.commits.iter().flat_map(|c| [&c.author, &c.committer]);
            std::iter::once(&pr.author)
                .chain(reviewers)
                .chain(committers)
        });
        let found = self
            .teams
            .values()
            .flatten()
            .chain(self.issues.values().map(|i| &i.author))
            .chain(pulls)
            .find(|u| u.is_linked() && u.login.eq_ignore_ascii_case(login))
            .cloned();
        found.or_else(|| {
            self.comments
                .iter()
                .find(|c| c.author.eq_ignore_ascii_case(login))
                .map(super::server::Comment::user)
        })
    }

    /// A git commit as the pull request model holds it, its identities linked to accounts;
    /// remembered in [`World::commits`].
    pub(super) fn remember_commit(&mut self, repository: &str, raw: RawCommit) -> Commit {
        let commit = Commit {
            author: self.account_for(&raw.author),
            committer: self.account_for(&raw.committer),
            timestamp: raw.committer.date,
            sha: raw.sha,
            tree_sha: raw.tree_sha,
            author_identity: raw.author,
            committer_identity: raw.committer,
            message: raw.message,
            parent: raw.parent,
        };
        self.commits
            .insert((repository.to_owned(), commit.sha.clone()), commit.clone());
        commit
    }

    fn open_pull_from_git(&mut self, new: NewPull, cmp: Comparison) -> u64 {
        let repository = new.repository;
        let number = self.open_issue(&repository, &new.title, &new.body, &new.author);
        self.set_pull_ref(&repository, number, &cmp.head_sha);
        let base_sha = self.remember_commit(&repository, cmp.base).sha;
        let commits = cmp
            .commits
            .into_iter()
            .map(|raw| self.remember_commit(&repository, raw))
            .collect();
        self.pulls.insert(
            (repository, number),
            PullRequest {
                author: new.author,
                head_branch: new.head,
                head_sha: cmp.head_sha,
                base_branch: new.base,
                base_sha,
                draft: new.draft,
                state: "open".to_owned(),
                merged: false,
                merge_method: None,
                merge_commit_sha: None,
                files: cmp.files,
                commits,
                reviews: Vec::new(),
                review_comments: Vec::new(),
                pushes: 1,
                from_git: true,
            },
        );
        number
    }

    /// Re-reads head, commits and files of pull request `number` after its head branch
    /// moved (GitHub's `synchronize`; the payload is [`World::synchronize_payload`]).
    pub(super) fn refresh_pull(&mut self, repository: &str, number: u64, cmp: Comparison) {
        self.set_pull_ref(repository, number, &cmp.head_sha);
        let base_sha = self.remember_commit(repository, cmp.base).sha;
        let commits: Vec<Commit> = cmp
            .commits
            .into_iter()
            .map(|raw| self.remember_commit(repository, raw))
            .collect();
        if let Some(pr) = self.pulls.get_mut(&(repository.to_owned(), number)) {
            pr.head_sha = cmp.head_sha;
            pr.base_sha = base_sha;
            pr.commits = commits;
            pr.files = cmp.files;
            pr.pushes += 1;
        }
    }
}

impl World {
    /// Points `refs/pull/{number}/head` at `sha`, as GitHub keeps a ref for every pull
    /// request's head in the base repository (what `git fetch origin pull/N/head` reads).
    fn set_pull_ref(&self, repository: &str, number: u64, sha: &str) {
        let (Some(repo), Ok(oid)) = (self.open_repository(repository), git2::Oid::from_str(sha))
        else {
            return;
        };
        if let Err(e) = repo.reference(
            &format!("refs/pull/{number}/head"),
            oid,
            true,
            "pull request head",
        ) {
            tracing::warn!(error = %e, "fake GitHub cannot write refs/pull/{number}/head");
        }
    }

    /// Opens a pull request from `head` into `base` of the hosted `repository` as `author`,
    /// exactly as `POST …/pulls` would (commits and files read from git); returns the
    /// `pull_request.opened` payload.
    ///
    /// # Panics
    /// When the repository or a branch does not exist, or there is nothing to compare (a
    /// mistake in the test itself).
    pub fn open_pull_request_from_branch(
        &mut self,
        repository: &str,
        title: &str,
        head: &str,
        base: &str,
        author: &User,
    ) -> Value {
        let dir = self
            .repository_path(repository)
            .unwrap_or_else(|| panic!("test bug: no git repository {repository}"));
        let cmp = compare(&dir, base, head)
            .unwrap_or_else(|e| panic!("test bug: cannot compare {base}...{head}: {e}"));
        let new = NewPull {
            repository: repository.to_owned(),
            title: title.to_owned(),
            body: String::new(),
            head: head.to_owned(),
            base: base.to_owned(),
            draft: false,
            author: author.clone(),
        };
        let number = self.open_pull_from_git(new, cmp);
        self.pull_request_payload(repository, number, "opened", author)
    }
}

/// GitHub's 422 with one entry in `errors`.
fn validation_failed(entry: Value) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({
            "message": "Validation Failed",
            "errors": [entry],
            "documentation_url": "https://docs.github.com/rest/pulls/pulls#create-a-pull-request",
            "status": "422",
        })),
    )
        .into_response()
}

fn invalid_field(field: &str, code: &str) -> Response {
    validation_failed(json!({"resource": "PullRequest", "field": field, "code": code}))
}

fn custom(message: &str) -> Response {
    validation_failed(json!({"resource": "PullRequest", "code": "custom", "message": message}))
}

#[derive(Deserialize)]
struct PullWrite {
    title: Option<String>,
    head: Option<String>,
    base: Option<String>,
    body: Option<String>,
    draft: Option<bool>,
}

/// The branch of a `head` in this repository: `branch` or `owner:branch` (another owner
/// would be a fork, which the fake does not have).
fn head_branch<'h>(owner: &str, head: &'h str) -> Option<&'h str> {
    match head.split_once(':') {
        Some((o, branch)) if o.eq_ignore_ascii_case(owner) => Some(branch),
        Some(_) => None,
        None => Some(head),
    }
}

/// `POST /repos/{owner}/{repo}/pulls`.
async fn create_pull(
    State(world): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let repository = format!("{owner}/{repo}");
    let (new, dir) = {
        let w = lock(&world);
        if let Err(r) = require_repo(&w, &headers, &owner, &repo, "pull_requests", true) {
            return r.into_response();
        }
        let write: PullWrite = match json_body(&body) {
            Ok(b) => b,
            Err(r) => return r.into_response(),
        };
        let (Some(title), Some(head), Some(base)) = (write.title, write.head, write.base) else {
            return invalid_field("title, head and base", "missing_field");
        };
        let Some(branch) = head_branch(&owner, &head) else {
            return invalid_field("head", "invalid");
        };
        let Some(dir) = w.repository_path(&repository) else {
            return invalid_field("head", "invalid");
        };
        if open_pull_for(&w, &repository, branch, &base).is_some() {
            return custom(&format!(
                "A pull request already exists for {owner}:{branch}."
            ));
        }
        let new = NewPull {
            repository: repository.clone(),
            title,
            body: write.body.unwrap_or_default(),
            head: branch.to_owned(),
            base,
            draft: write.draft.unwrap_or(false),
            // Installation tokens act as the App's bot account.
            author: User::test_app_bot(),
        };
        (new, dir)
    };
    let (base, head) = (new.base.clone(), new.head.clone());
    let compared = tokio::task::spawn_blocking(move || compare(&dir, &base, &head)).await;
    let cmp = match compared {
        Ok(Ok(cmp)) => cmp,
        Ok(Err(CompareError::NoBase)) => return invalid_field("base", "invalid"),
        Ok(Err(CompareError::NoHead)) => return invalid_field("head", "invalid"),
        Ok(Err(CompareError::NoCommits)) => {
            return custom(&format!("No commits between {} and {}", new.base, new.head));
        }
        Ok(Err(e @ CompareError::Git(_))) => {
            tracing::error!(error = %e, source = ?std::error::Error::source(&e), "fake GitHub cannot read {repository}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
        }
        Err(join) => {
            tracing::error!(error = %join, "fake GitHub compare task failed");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "Server Error");
        }
    };
    let mut w = lock(&world);
    // Another request may have opened it while git was read.
    if open_pull_for(&w, &repository, &new.head, &new.base).is_some() {
        return custom(&format!(
            "A pull request already exists for {owner}:{}.",
            new.head
        ));
    }
    let number = w.open_pull_from_git(new, cmp);
    let mut answer = w.pull_json(&repository, number);
    w.scrub_deleted(&mut answer);
    let mut response = (StatusCode::CREATED, axum::Json(answer)).into_response();
    let location = format!("https://api.github.com/repos/{repository}/pulls/{number}");
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// The open pull request from `head` into `base` of `repository`, if any.
fn open_pull_for(world: &World, repository: &str, head: &str, base: &str) -> Option<u64> {
    world
        .pulls
        .iter()
        .find(|((r, _), pr)| {
            r.eq_ignore_ascii_case(repository)
                && pr.state == "open"
                && pr.head_branch == head
                && pr.base_branch == base
        })
        .map(|((_, n), _)| *n)
}

#[derive(Deserialize)]
struct PullFilter {
    state: Option<String>,
    head: Option<String>,
    base: Option<String>,
    direction: Option<String>,
    per_page: Option<usize>,
    page: Option<usize>,
}

/// `GET /repos/{owner}/{repo}/pulls`: `state` (`open` by default, `closed`, `all`), `head`
/// (`owner:branch`; without the owner GitHub silently ignores it, and so does the fake),
/// `base`, newest first (`direction=asc` for oldest first), paginated.
async fn list_pulls(
    State(world): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    Query(filter): Query<PullFilter>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "pull_requests", false) {
        return r.into_response();
    }
    let state = filter.state.clone().unwrap_or_else(|| "open".to_owned());
    if !["open", "closed", "all"].contains(&state.as_str()) {
        return validation_failed(
            json!({"resource": "PullRequest", "field": "state", "code": "invalid"}),
        );
    }
    let head = filter.head.as_deref().and_then(|h| h.split_once(':'));
    let repository = format!("{owner}/{repo}");
    let mut numbers: Vec<u64> = w
        .pulls
        .iter()
        .filter(|((r, _), pr)| {
            r.eq_ignore_ascii_case(&repository)
                && (state == "all" || pr.state == state)
                && head.is_none_or(|(o, b)| o.eq_ignore_ascii_case(&owner) && pr.head_branch == b)
                && filter.base.as_ref().is_none_or(|b| *b == pr.base_branch)
        })
        .map(|((_, n), _)| *n)
        .collect();
    numbers.sort_unstable();
    if filter.direction.as_deref() != Some("asc") {
        numbers.reverse();
    }
    let mut items: Vec<Value> = numbers
        .into_iter()
        .map(|n| w.pull_json(&repository, n))
        .collect();
    items.iter_mut().for_each(|v| w.scrub_deleted(v));
    let query = url_query(&[
        ("state", filter.state),
        ("head", filter.head),
        ("base", filter.base),
        ("direction", filter.direction),
    ]);
    let mut path = format!("/repos/{owner}/{repo}/pulls");
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

/// A label as `POST …/labels` takes it: a name or `{"name": …}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum LabelName {
    Name(String),
    Object { name: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LabelsWrite {
    Wrapped { labels: Vec<LabelName> },
    Bare(Vec<LabelName>),
}

/// `POST /repos/{owner}/{repo}/issues/{number}/labels`: adds labels (GitHub creates unknown
/// ones) and answers every label of the issue. Needs `issues: write`, or
/// `pull_requests: write` on a pull request.
async fn add_labels(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    let repository = format!("{owner}/{repo}");
    let key = (repository, number);
    let is_pull = w.pulls.contains_key(&key);
    let allowed = require_repo(&w, &headers, &owner, &repo, "issues", true).or_else(|refusal| {
        if is_pull {
            require_repo(&w, &headers, &owner, &repo, "pull_requests", true)
        } else {
            Err(refusal)
        }
    });
    if let Err(r) = allowed {
        return r.into_response();
    }
    let write: LabelsWrite = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let names = match write {
        LabelsWrite::Wrapped { labels } | LabelsWrite::Bare(labels) => labels,
    };
    let Some(issue) = w.issues.get_mut(&key) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let mut added = Vec::new();
    for name in names {
        let (LabelName::Name(name) | LabelName::Object { name }) = name;
        if !issue.labels.iter().any(|l| l.eq_ignore_ascii_case(&name)) {
            issue.labels.push(name.clone());
            added.push(name);
        }
    }
    let labels: Vec<Value> = issue.labels.iter().map(|l| label_json(&key.0, l)).collect();
    // An installation token acts as the App's bot account.
    let actor = User::test_app_bot();
    for name in added {
        w.record_issue_event(&key.0, number, "labeled", Some(&name), &actor);
    }
    axum::Json(Value::Array(labels)).into_response()
}

/// `GET /users/{login}`: a known account's public profile, 404 otherwise.
async fn get_user(
    State(world): State<Shared>,
    Path(login): Path<String>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    let Some(user) = w.known_user(&login) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if w.deleted_accounts.contains(&user.id) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let mut profile = user.json();
    if let Some(fields) = profile.as_object_mut() {
        let extra = json!({
            "name": if user.id == TEST_APP_BOT_USER_ID { Value::Null } else { json!(user.login) },
            "company": null,
            "blog": "",
            "location": null,
            "email": null,
            "hireable": null,
            "bio": null,
            "twitter_username": null,
            "public_repos": 0,
            "public_gists": 0,
            "followers": 0,
            "following": 0,
            "created_at": "2020-01-01T00:00:00Z",
            "updated_at": "2020-01-01T00:00:00Z",
        });
        if let Some(extra) = extra.as_object() {
            fields.extend(extra.clone());
        }
    }
    with_etag(&headers, &profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_name_a_branch_of_the_repository_itself() {
        assert_eq!(head_branch("acme", "feature/x"), Some("feature/x"));
        assert_eq!(head_branch("acme", "ACME:feature/x"), Some("feature/x"));
        assert_eq!(head_branch("acme", "fork:feature/x"), None);
    }

    #[test]
    fn known_users_include_the_app_bot_and_people_seen_in_the_world() {
        let mut world = World::default();
        assert_eq!(
            world.known_user("Countersign-Test[bot]"),
            Some(User::test_app_bot())
        );
        assert_eq!(world.known_user("alice"), None);
        world.open_issue("acme/api", "t", "", &User::new(5, "alice"));
        assert_eq!(world.known_user("ALICE"), Some(User::new(5, "alice")));
        world.add_user(&User::new(6, "carol"));
        assert_eq!(world.known_user("carol").map(|u| u.id), Some(6));
    }
}
