//! A stateful fake of the GitHub REST endpoints the App uses, served over real HTTP on
//! `127.0.0.1:0`.
//!
//! It behaves like GitHub where Countersign depends on it: App JWTs are verified against
//! [`TEST_APP_PUBLIC_KEY_PEM`] (algorithm, issuer, expiry, at most ten minutes of lifetime),
//! installation tokens are minted with an expiry and an optional repository/permission scope
//! and are checked on every installation call, listings are paginated with `Link` headers,
//! `GET`s carry `ETag`s and answer `304` to a matching `If-None-Match`. Faults (5xx answers,
//! secondary and primary rate limits) are injected per path, and every call is logged.
//!
//! The [`World`] also produces webhook payloads from changes (`label_issue`, `comment`), so a
//! test can make a change and deliver exactly what GitHub would send about it. Git hosting
//! (`git`, `smart_http`) and pull requests opened from branches (`pulls_api`) share the same
//! world, call log and faults.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use countersign_github::{AppConfig, GitHubApp};
use jiff::Timestamp;
use octocrab::jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};

use super::TEST_APP_PUBLIC_KEY_PEM;

/// The test App's id.
pub const TEST_APP_ID: u64 = 4242;
/// The test App's slug; its bot account is `countersign-test[bot]`.
pub const TEST_APP_SLUG: &str = "countersign-test";
/// The user id of the test App's bot account (`countersign-test[bot]`).
pub const TEST_APP_BOT_USER_ID: u64 = 4_242_000;
/// How long minted installation tokens live, as on GitHub.
pub const TOKEN_LIFETIME_SECS: i64 = 3600;
/// Longest App JWT lifetime GitHub accepts.
pub const MAX_JWT_LIFETIME_SECS: i64 = 600;
/// Where the [`World`]'s clock starts: comments, reviews and commits are stamped one second
/// apart from here, in the order they happen.
pub const WORLD_EPOCH: Timestamp = Timestamp::constant(1_796_378_400, 0);

/// A GitHub account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Numeric id (what Countersign authorises by).
    pub id: u64,
    /// Login.
    pub login: String,
    /// `User` or `Bot`.
    pub kind: &'static str,
}

impl User {
    /// A human account.
    pub fn new(id: u64, login: &str) -> Self {
        Self {
            id,
            login: login.to_owned(),
            kind: "User",
        }
    }

    /// A bot account (`login` should end in `[bot]`).
    pub fn bot(id: u64, login: &str) -> Self {
        Self {
            id,
            login: login.to_owned(),
            kind: "Bot",
        }
    }

    /// The test App's bot account, `countersign-test[bot]` ([`TEST_APP_BOT_USER_ID`]): the
    /// author of everything done with an installation token.
    pub fn test_app_bot() -> Self {
        Self::bot(TEST_APP_BOT_USER_ID, &format!("{TEST_APP_SLUG}[bot]"))
    }

    /// A git identity GitHub could not link to an account: id 0 with the git name as login.
    /// REST shows such a commit `author`/`committer` as `null` (the git name and email stay
    /// in `commit.author`).
    pub fn unlinked(git_name: &str) -> Self {
        Self::new(0, git_name)
    }

    /// Whether this is a real account (not [`User::unlinked`]).
    pub fn is_linked(&self) -> bool {
        self.id != 0
    }

    /// The webhook/REST JSON form.
    pub fn json(&self) -> Value {
        let api = format!("https://api.github.com/users/{}", self.login);
        json!({
            "id": self.id,
            "login": self.login,
            "type": self.kind,
            "node_id": format!("U_{}", self.id),
            "site_admin": false,
            "gravatar_id": "",
            "avatar_url": format!("https://avatars.githubusercontent.com/u/{}", self.id),
            "html_url": format!("https://github.com/{}", self.login),
            "url": api,
            "followers_url": format!("{api}/followers"),
            "following_url": format!("{api}/following{{/other_user}}"),
            "gists_url": format!("{api}/gists{{/gist_id}}"),
            "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
            "subscriptions_url": format!("{api}/subscriptions"),
            "organizations_url": format!("{api}/orgs"),
            "repos_url": format!("{api}/repos"),
            "events_url": format!("{api}/events{{/privacy}}"),
            "received_events_url": format!("{api}/received_events"),
        })
    }
}

/// An App installation on one account.
#[derive(Clone, Debug)]
pub struct Installation {
    /// The account (`owner`) it is installed on.
    pub account: String,
    /// Repository names (without owner) it may access.
    pub repositories: Vec<String>,
}

/// An issue or pull request.
#[derive(Clone, Debug)]
pub struct Issue {
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Author.
    pub author: User,
    /// Labels.
    pub labels: Vec<String>,
}

/// A comment posted through the API or by [`World::comment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    /// Id.
    pub id: u64,
    /// `owner/name`.
    pub repository: String,
    /// Issue or pull request number.
    pub number: u64,
    /// Markdown body.
    pub body: String,
    /// Who posted it (the App's bot account for API calls).
    pub author: String,
    /// The author's user id.
    pub author_id: u64,
    /// When it was posted.
    pub created_at: Timestamp,
    /// When it was last edited (`created_at` until then).
    pub updated_at: Timestamp,
    /// Earlier bodies, oldest first: what the comment said before each edit.
    pub previous_bodies: Vec<String>,
}

impl Comment {
    /// The author as a [`User`] (a bot when the login ends in `[bot]`).
    pub fn user(&self) -> User {
        User {
            id: self.author_id,
            login: self.author.clone(),
            kind: if self.author.ends_with("[bot]") {
                "Bot"
            } else {
                "User"
            },
        }
    }

    /// The REST and webhook JSON form.
    pub(super) fn json(&self) -> Value {
        let (repository, number, id) = (&self.repository, self.number, self.id);
        json!({
            "id": id,
            "node_id": format!("IC_{id}"),
            "url": format!("https://api.github.com/repos/{repository}/issues/comments/{id}"),
            "html_url": format!("https://github.com/{repository}/issues/{number}#issuecomment-{id}"),
            "issue_url": format!("https://api.github.com/repos/{repository}/issues/{number}"),
            "body": self.body,
            "user": self.user().json(),
            "created_at": self.created_at.to_string(),
            "updated_at": self.updated_at.to_string(),
            "author_association": "MEMBER",
        })
    }
}

/// A reaction added through the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReactionRecord {
    /// `owner/name`.
    pub repository: String,
    /// `comment:<id>` or `issue:<number>`.
    pub target: String,
    /// `+1`, `eyes`, `confused`, …
    pub content: String,
}

/// A minted installation token.
#[derive(Clone, Debug)]
pub struct MintedToken {
    /// The installation.
    pub installation: u64,
    /// Repository names it is limited to (`None`: all of the installation's).
    pub repositories: Option<Vec<String>>,
    /// Permissions requested (`None`: the App's defaults).
    pub permissions: Option<BTreeMap<String, String>>,
    /// Expiry.
    pub expires_at: Timestamp,
    /// When it was revoked (`DELETE /installation/token`); GitHub refuses it from then on,
    /// over REST and git alike.
    pub revoked_at: Option<Timestamp>,
}

impl MintedToken {
    /// Whether GitHub still accepts it: not expired, not revoked.
    pub fn is_live(&self) -> bool {
        self.revoked_at.is_none() && self.expires_at > Timestamp::now()
    }
}

/// A fault to answer instead of the real response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This status with a GitHub-style error body.
    Status(u16),
    /// The call is carried out (a comment posted, a check run created), then answered with
    /// this status instead: GitHub failing after it acted, or an answer lost on the way.
    Applied(u16),
    /// The call is carried out, then the connection drops in the middle of the answer: the
    /// client sees a transport error, not a status.
    Dropped,
    /// 403 "You have exceeded a secondary rate limit" with `Retry-After`.
    SecondaryRateLimit {
        /// Seconds in `Retry-After`.
        retry_after_secs: u64,
    },
    /// 403 with `X-RateLimit-Remaining: 0` and a reset this many seconds ahead.
    PrimaryRateLimit {
        /// Seconds until `X-RateLimit-Reset`.
        reset_in_secs: i64,
    },
}

/// A fault waiting for the calls it matches.
#[derive(Clone, Debug)]
pub(super) struct InjectedFault {
    method: Option<String>,
    path_contains: String,
    fault: Fault,
    left: usize,
}

/// How a logged call authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallAuth {
    /// No `Authorization` header.
    None,
    /// A valid App JWT.
    App,
    /// A valid installation token of this installation.
    Installation(u64),
    /// Refused, with the reason.
    Invalid(String),
}

/// One logged call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// How it authenticated.
    pub auth: CallAuth,
    /// The status answered.
    pub status: u16,
}

/// The fake's state. Tests change it directly through [`FakeGitHub::world`].
#[derive(Debug, Default)]
pub struct World {
    /// Installations by id.
    pub installations: BTreeMap<u64, Installation>,
    /// Repository permission (`admin`, `maintain`, `write`, `triage`, `read`) by
    /// (`owner/name`, login).
    pub permissions: HashMap<(String, String), String>,
    /// Team members by (org, team slug).
    pub teams: HashMap<(String, String), Vec<User>>,
    /// Issues and pull requests by (`owner/name`, number).
    pub issues: BTreeMap<(String, u64), Issue>,
    /// Every comment, oldest first.
    pub comments: Vec<Comment>,
    /// Every reaction, oldest first.
    pub reactions: Vec<ReactionRecord>,
    /// Every installation token minted, by token.
    pub tokens: HashMap<String, MintedToken>,
    /// Pull requests by (`owner/name`, number); each also has its entry in `issues`.
    pub pulls: BTreeMap<(String, u64), super::pulls::PullRequest>,
    /// Every check run, ours (created through the API) and other apps' (`add_check_run`),
    /// oldest first.
    pub check_runs: Vec<super::pulls::CheckRun>,
    /// Every commit ever pushed, by (`owner/name`, sha): heads replaced by a push or a
    /// rebase stay readable, as on GitHub.
    pub commits: BTreeMap<(String, String), super::pulls::Commit>,
    /// Every review request made through the API, oldest first.
    pub review_requests: Vec<super::pulls::ReviewRequest>,
    /// Every commit status set (`set_commit_status`), oldest first.
    pub commit_statuses: Vec<super::pulls::CommitStatus>,
    /// Ids of deleted accounts ([`World::delete_account`]).
    pub deleted_accounts: std::collections::BTreeSet<u64>,
    /// Accounts `GET /users/{login}` knows besides those seen elsewhere in the world, by
    /// lower-case login ([`World::add_user`]).
    pub users: BTreeMap<String, User>,
    /// Verified emails linking git identities to accounts, by lower-case email
    /// ([`World::add_email`]); noreply emails link without an entry.
    pub emails: BTreeMap<String, User>,
    /// Every branch update pushed over git smart-HTTP (or by [`World::commit_files`]),
    /// oldest first.
    pub pushes: Vec<super::git::Push>,
    /// The files of each synthetic pull request head, by (`owner/name`, head SHA): what the
    /// compare API answers for `base...sha` of a head that is not in a git repository.
    pub head_files: BTreeMap<(String, String), Vec<super::pulls::ChangedFile>>,
    /// Repositories that are private (`private: true`; only readers see them).
    pub private_repositories: std::collections::BTreeSet<String>,
    /// Every issue event (label changes, closings), oldest first: what
    /// `GET …/issues/{n}/events` lists.
    pub issue_events: Vec<super::issues::IssueEvent>,
    /// Issues closed with [`World::close_issue`] (pull requests keep their own state).
    pub closed_issues: std::collections::BTreeSet<(String, u64)>,
    /// OAuth clients (the App's client id → secret) people may sign in through.
    pub oauth_clients: BTreeMap<String, String>,
    /// Sign-in codes not yet exchanged: code → (who signed in, for which client).
    pub(super) oauth_codes: HashMap<String, (User, String)>,
    /// User tokens issued by sign-ins, by token.
    pub user_tokens: HashMap<String, User>,
    pub(super) git: super::git::GitHosting,
    next_id: u64,
    clock: i64,
    faults: Vec<InjectedFault>,
    calls: Vec<Call>,
}

impl World {
    pub(super) fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        1_000 + self.next_id
    }

    /// The world's clock: [`WORLD_EPOCH`] plus one second per event, so times are
    /// deterministic and strictly increasing in the order things happen.
    pub(super) fn tick(&mut self) -> Timestamp {
        self.clock += 1;
        WORLD_EPOCH
            .checked_add(jiff::SignedDuration::from_secs(self.clock))
            .unwrap_or(Timestamp::MAX)
    }

    /// Moves the world's clock forward so that everything from now on happens after `at`
    /// (never backwards): for tests whose events must follow something stamped by the wall
    /// clock, such as a Kubernetes object's creation.
    pub fn advance_clock_past(&mut self, at: Timestamp) {
        let seconds = at.duration_since(WORLD_EPOCH).as_secs();
        self.clock = self.clock.max(seconds);
    }

    /// Deletes account `user_id`: from now on pull request, commit, review and comment
    /// listings show its `user`/`author`/`committer` as `null`, as GitHub does for deleted
    /// ("ghost") accounts on those endpoints.
    pub fn delete_account(&mut self, user_id: u64) {
        self.deleted_accounts.insert(user_id);
    }

    /// Replaces every user object of a deleted account inside `value` with `null`.
    pub(super) fn scrub_deleted(&self, value: &mut Value) {
        if self.deleted_accounts.is_empty() {
            return;
        }
        match value {
            Value::Object(map) => {
                let deleted = map.contains_key("login")
                    && map
                        .get("id")
                        .and_then(Value::as_u64)
                        .is_some_and(|id| self.deleted_accounts.contains(&id));
                if deleted {
                    *value = Value::Null;
                } else {
                    map.values_mut().for_each(|v| self.scrub_deleted(v));
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_deleted(v)),
            _ => {}
        }
    }

    /// Installs the App on `owner` for `repositories`.
    pub fn install(&mut self, id: u64, owner: &str, repositories: &[&str]) {
        self.installations.insert(
            id,
            Installation {
                account: owner.to_owned(),
                repositories: repositories.iter().map(|r| (*r).to_owned()).collect(),
            },
        );
    }

    /// Gives `login` `permission` on `repository` (`owner/name`).
    pub fn set_permission(&mut self, repository: &str, login: &str, permission: &str) {
        self.permissions.insert(
            (repository.to_owned(), login.to_ascii_lowercase()),
            permission.to_owned(),
        );
    }

    /// Adds `user` to team `org/slug`.
    pub fn add_team_member(&mut self, org: &str, slug: &str, user: User) {
        self.teams
            .entry((org.to_ascii_lowercase(), slug.to_ascii_lowercase()))
            .or_default()
            .push(user);
    }

    /// Opens an issue; returns its number.
    pub fn open_issue(&mut self, repository: &str, title: &str, body: &str, author: &User) -> u64 {
        let number = self
            .issues
            .keys()
            .filter(|(r, _)| r == repository)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
            + 1;
        self.issues.insert(
            (repository.to_owned(), number),
            Issue {
                title: title.to_owned(),
                body: body.to_owned(),
                author: author.clone(),
                labels: Vec::new(),
            },
        );
        number
    }

    /// Adds `label` to issue `number` as `sender`; returns the `issues.labeled` payload GitHub
    /// would deliver. A label the issue did not carry yet is also recorded as a `labeled`
    /// issue event by `sender` (`GET …/issues/{n}/events`).
    ///
    /// # Panics
    /// When the issue does not exist (a mistake in the test itself).
    pub fn label_issue(
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
        let added = !issue.labels.iter().any(|l| l == label);
        if added {
            issue.labels.push(label.to_owned());
        }
        let issue = issue.clone();
        if added {
            self.record_issue_event(repository, number, "labeled", Some(label), sender);
        }
        json!({
            "action": "labeled",
            "issue": issue_json(repository, number, &issue),
            "label": label_json(repository, label),
            "repository": repository_json(repository),
            "sender": sender.json(),
            "installation": {"id": installation},
        })
    }

    /// Posts `body` on issue `number` as `sender`; returns the `issue_comment.created` payload.
    ///
    /// # Panics
    /// When the issue does not exist (a mistake in the test itself).
    pub fn comment(&mut self, repository: &str, number: u64, body: &str, sender: &User) -> Value {
        let id = self.next_id();
        let now = self.tick();
        let comment = Comment {
            id,
            repository: repository.to_owned(),
            number,
            body: body.to_owned(),
            author: sender.login.clone(),
            author_id: sender.id,
            created_at: now,
            updated_at: now,
            previous_bodies: Vec::new(),
        };
        self.comments.push(comment.clone());
        self.comment_payload(&comment, "created", sender)
    }

    /// `editor` replaces the body of comment `comment_id` with `new_body`; returns the
    /// `issue_comment.edited` payload (`changes.body.from` holds the old body; `comment.user`
    /// stays the author, `sender` is the editor, as on GitHub).
    ///
    /// # Panics
    /// When the comment does not exist in `repository` (a mistake in the test itself).
    pub fn edit_comment(
        &mut self,
        repository: &str,
        comment_id: u64,
        new_body: &str,
        editor: &User,
    ) -> Value {
        let now = self.tick();
        let comment = self
            .comments
            .iter_mut()
            .find(|c| c.id == comment_id && c.repository == repository)
            .unwrap_or_else(|| panic!("test bug: no comment {comment_id} in {repository}"));
        let before = std::mem::replace(&mut comment.body, new_body.to_owned());
        comment.previous_bodies.push(before.clone());
        comment.updated_at = now;
        let comment = comment.clone();
        let mut payload = self.comment_payload(&comment, "edited", editor);
        payload["changes"] = json!({"body": {"from": before}});
        payload
    }

    fn comment_payload(&self, comment: &Comment, action: &str, sender: &User) -> Value {
        let (repository, number) = (comment.repository.as_str(), comment.number);
        let installation = self.installation_of(repository);
        let issue = self
            .issues
            .get(&(repository.to_owned(), number))
            .unwrap_or_else(|| panic!("test bug: no issue {repository}#{number}"))
            .clone();
        let mut issue_value = issue_json(repository, number, &issue);
        if self.pulls.contains_key(&(repository.to_owned(), number)) {
            // Comments on pull requests arrive as issue comments that say so.
            issue_value["pull_request"] = json!({
                "html_url": format!("https://github.com/{repository}/pull/{number}"),
            });
        }
        json!({
            "action": action,
            "issue": issue_value,
            "comment": comment.json(),
            "repository": repository_json(repository),
            "sender": sender.json(),
            "installation": {"id": installation},
        })
    }

    pub(super) fn installation_of(&self, repository: &str) -> u64 {
        let (owner, name) = repository.split_once('/').unwrap_or((repository, ""));
        self.installations
            .iter()
            .find(|(_, i)| {
                i.account.eq_ignore_ascii_case(owner) && i.repositories.iter().any(|r| r == name)
            })
            .map_or(0, |(id, _)| *id)
    }

    /// Comments posted on `repository#number`, oldest first.
    pub fn comments_on(&self, repository: &str, number: u64) -> Vec<&Comment> {
        self.comments
            .iter()
            .filter(|c| c.repository == repository && c.number == number)
            .collect()
    }
}

pub(super) fn repository_json(repository: &str) -> Value {
    let (owner, name) = repository.split_once('/').unwrap_or((repository, ""));
    json!({
        "id": 7_000 + repository.len() as u64,
        "name": name,
        "full_name": repository,
        "private": false,
        "owner": User { id: 9_000, login: owner.to_owned(), kind: "Organization" }.json(),
        "html_url": format!("https://github.com/{repository}"),
        "url": format!("https://api.github.com/repos/{repository}"),
        "clone_url": format!("https://github.com/{repository}.git"),
        "default_branch": "main",
    })
}

pub(super) fn label_json(repository: &str, label: &str) -> Value {
    json!({
        "id": 55,
        "node_id": format!("LA_{label}"),
        "url": format!("https://api.github.com/repos/{repository}/labels/{label}"),
        "name": label,
        "description": null,
        "color": "ededed",
        "default": false,
    })
}

pub(super) fn issue_json(repository: &str, number: u64, issue: &Issue) -> Value {
    json!({
        "id": 300_000 + number,
        "number": number,
        "title": issue.title,
        "body": issue.body,
        "state": "open",
        "user": issue.author.json(),
        "labels": issue.labels.iter().map(|l| label_json(repository, l)).collect::<Vec<_>>(),
        "html_url": format!("https://github.com/{repository}/issues/{number}"),
        "author_association": "MEMBER",
    })
}

/// The running fake. Dropping it stops the server.
pub struct FakeGitHub {
    addr: SocketAddr,
    world: Arc<Mutex<World>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    /// Starts the fake on `127.0.0.1:0`.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        let world = Arc::new(Mutex::new(World::default()));
        let app = router(world.clone());
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "fake GitHub stopped");
            }
        });
        Ok(Self { addr, world, task })
    }

    /// The API root, `http://127.0.0.1:PORT` (use as the App's base URL).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings of Countersign's App client for this fake: the test App's id and key, this
    /// fake as the API root, a 5 s request timeout and short retries (3, at most 2 s apart).
    /// Change a field (e.g. `max_retries: 0`) before [`GitHubApp::new`] where a test needs to.
    pub fn app_config(&self) -> AppConfig {
        AppConfig {
            app_id: TEST_APP_ID,
            private_key_pem: SecretString::from(super::TEST_APP_PRIVATE_KEY_PEM.to_owned()),
            base_url: self.url(),
            request_timeout: std::time::Duration::from_secs(5),
            max_retries: 3,
            max_retry_wait: std::time::Duration::from_secs(2),
        }
    }

    /// Countersign's App client (`countersign_github::GitHubApp`) for this fake, with
    /// [`Self::app_config`]. The one place tests build it.
    pub fn app_client(&self) -> GitHubApp {
        GitHubApp::new(self.app_config()).expect("the test App's key and the fake's URL are valid")
    }

    /// The smart-HTTP clone address of `repository` (`owner/name`), e.g.
    /// `http://127.0.0.1:PORT/acme/api.git` (create it with [`World::create_repository`]).
    pub fn git_url(&self, repository: &str) -> String {
        format!("http://{}/{repository}.git", self.addr)
    }

    /// The state, to arrange and inspect.
    pub fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    /// Answers the next `times` calls whose path contains `path_contains` with `fault`.
    pub fn fail_next(&self, path_contains: &str, fault: Fault, times: usize) {
        lock(&self.world).faults.push(InjectedFault {
            method: None,
            path_contains: path_contains.to_owned(),
            fault,
            left: times,
        });
    }

    /// Like [`Self::fail_next`] for calls with this method only (`POST`, `PATCH`, …).
    pub fn fail_next_call(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        lock(&self.world).faults.push(InjectedFault {
            method: Some(method.to_ascii_uppercase()),
            path_contains: path_contains.to_owned(),
            fault,
            left: times,
        });
    }

    /// Drops the faults not used yet; returns how many calls they would still have failed.
    pub fn clear_faults(&self) -> usize {
        let mut w = lock(&self.world);
        let left = w.faults.iter().map(|f| f.left).sum();
        w.faults.clear();
        left
    }

    /// Every call so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.world).calls.clone()
    }

    /// How many calls were made so far.
    pub fn call_count(&self) -> usize {
        lock(&self.world).calls.len()
    }

    /// Calls whose path contains `path_contains`.
    pub fn calls_to(&self, path_contains: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.path.contains(path_contains))
            .collect()
    }
}

pub(super) fn lock(world: &Mutex<World>) -> MutexGuard<'_, World> {
    world
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) type Shared = Arc<Mutex<World>>;

fn router(world: Shared) -> Router {
    Router::new()
        .route("/app", get(get_app))
        .route(
            "/repos/{owner}/{repo}/installation",
            get(get_repo_installation),
        )
        .route("/app/installations/{id}/access_tokens", post(create_token))
        .route("/installation/token", axum::routing::delete(revoke_token))
        .route(
            "/repos/{owner}/{repo}/collaborators/{login}/permission",
            get(get_permission),
        )
        .route("/orgs/{org}/teams/{slug}/members", get(list_team_members))
        .route(
            "/repos/{owner}/{repo}/issues/{number}/comments",
            post(create_comment).get(super::pulls::list_comments),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}",
            patch(update_comment),
        )
        .route(
            "/repos/{owner}/{repo}/issues/comments/{id}/reactions",
            post(react_to_comment),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/reactions",
            post(react_to_issue),
        )
        .route("/login/oauth/authorize", get(super::oauth::authorize))
        .route(
            "/login/oauth/access_token",
            post(super::oauth::access_token),
        )
        .route("/user", get(super::oauth::current_user))
        .route("/repos/{owner}/{repo}", get(super::oauth::get_repository))
        .merge(super::issues::routes())
        .merge(super::pulls::routes())
        .merge(super::pulls_api::routes())
        .merge(super::smart_http::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "Not Found") })
        .layer(middleware::from_fn_with_state(world.clone(), log_and_fault))
        .with_state(world)
}

/// Logs every call and answers an injected fault instead of the route when one matches.
async fn log_and_fault(State(world): State<Shared>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path_and_query().map_or_else(
        || request.uri().path().to_owned(),
        |p| p.as_str().to_owned(),
    );
    let auth = authenticate(&lock(&world), request.headers());
    let fault = {
        let mut w = lock(&world);
        let hit = w.faults.iter_mut().find(|f| {
            f.left > 0
                && path.contains(f.path_contains.as_str())
                && f.method.as_deref().is_none_or(|m| m == method)
        });
        hit.map(|f| {
            f.left -= 1;
            f.fault.clone()
        })
    };
    let response = match fault {
        Some(Fault::Applied(code)) => {
            let _carried_out = next.run(request).await;
            fault_response(&Fault::Status(code))
        }
        Some(Fault::Dropped) => {
            let carried_out = next.run(request).await;
            // The status line goes out, then the body fails: hyper closes the connection.
            let broken = futures::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "injected: connection dropped",
                ))
            });
            let mut response = Response::new(axum::body::Body::from_stream(broken));
            *response.status_mut() = carried_out.status();
            response
        }
        Some(fault) => fault_response(&fault),
        None => next.run(request).await,
    };
    lock(&world).calls.push(Call {
        method,
        path,
        auth,
        status: response.status().as_u16(),
    });
    response
}

fn fault_response(fault: &Fault) -> Response {
    match fault {
        Fault::Dropped => error(StatusCode::BAD_GATEWAY, "connection dropped"),
        Fault::Status(code) | Fault::Applied(code) => {
            let status = StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error(status, "Server Error")
        }
        Fault::SecondaryRateLimit { retry_after_secs } => {
            let mut r = error(
                StatusCode::FORBIDDEN,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            r
        }
        Fault::PrimaryRateLimit { reset_in_secs } => {
            let mut r = error(
                StatusCode::FORBIDDEN,
                "API rate limit exceeded for installation.",
            );
            let reset = Timestamp::now().as_second() + reset_in_secs;
            let h = r.headers_mut();
            h.insert("x-ratelimit-remaining", HeaderValue::from(0));
            h.insert("x-ratelimit-reset", HeaderValue::from(reset));
            r
        }
    }
}

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.as_u16().to_string(),
        })),
    )
        .into_response()
}

/// An error answer, small enough to return through `Result`.
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    pub(super) fn new(status: StatusCode, message: &str) -> Self {
        Self {
            status,
            message: message.to_owned(),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.status, &self.message)
    }
}

#[derive(Deserialize)]
struct Claims {
    /// GitHub accepts the App id as a number (octocrab) or a string (most other clients).
    iss: Value,
    iat: i64,
    exp: i64,
}

/// How a call authenticates (App, installation, or neither), for other modules.
pub(super) fn authenticate_call(world: &World, headers: &HeaderMap) -> CallAuth {
    authenticate(world, headers)
}

fn authenticate(world: &World, headers: &HeaderMap) -> CallAuth {
    use super::credentials::{Credential, presented};
    let credential = match presented(headers) {
        None => return CallAuth::None,
        Some(Err(reason)) => return CallAuth::Invalid(reason),
        Some(Ok(c)) => c,
    };
    // GitHub takes installation tokens after `token`, `Bearer` or as a Basic password; JWTs
    // only after `Bearer`.
    if let Credential::Bearer(jwt) = &credential
        && !world.tokens.contains_key(jwt)
    {
        return verify_jwt(jwt);
    }
    match world.tokens.get(credential.token()) {
        Some(t) if t.is_live() => CallAuth::Installation(t.installation),
        Some(t) if t.revoked_at.is_some() => {
            CallAuth::Invalid("the installation token was revoked".into())
        }
        Some(_) => CallAuth::Invalid("the installation token expired".into()),
        None => CallAuth::Invalid("unknown token".into()),
    }
}

fn verify_jwt(jwt: &str) -> CallAuth {
    let key = match DecodingKey::from_rsa_pem(TEST_APP_PUBLIC_KEY_PEM.as_bytes()) {
        Ok(k) => k,
        Err(e) => return CallAuth::Invalid(format!("test public key: {e}")),
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = 0;
    // `iss` is checked below: jsonwebtoken only understands string issuers.
    validation.set_required_spec_claims(&["exp", "iat"]);
    let claims = match decode::<Claims>(jwt, &key, &validation) {
        Ok(d) => d.claims,
        Err(e) => return CallAuth::Invalid(format!("JWT: {e}")),
    };
    let now = Timestamp::now().as_second();
    let issuer = match &claims.iss {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    if issuer != TEST_APP_ID.to_string() {
        return CallAuth::Invalid(format!("JWT issuer {issuer} is not the App"));
    }
    if claims.iat > now + 5 {
        return CallAuth::Invalid("JWT issued in the future".into());
    }
    if claims.exp > now + MAX_JWT_LIFETIME_SECS {
        return CallAuth::Invalid("JWT expiry is more than ten minutes away".into());
    }
    CallAuth::App
}

fn require_app(world: &World, headers: &HeaderMap) -> Result<(), Refusal> {
    match authenticate(world, headers) {
        CallAuth::App => Ok(()),
        CallAuth::Invalid(reason) => Err(Refusal::new(StatusCode::UNAUTHORIZED, &reason)),
        _ => Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )),
    }
}

/// The installation token's installation, when it may act on `owner/repo` with `permission`
/// (`read` or `write` on the category).
pub(super) fn require_repo(
    world: &World,
    headers: &HeaderMap,
    owner: &str,
    repo: &str,
    category: &str,
    write: bool,
) -> Result<u64, Refusal> {
    let credential = super::credentials::presented(headers).and_then(Result::ok);
    let token = credential.as_ref().map_or("", |c| c.token());
    let installation = match authenticate(world, headers) {
        CallAuth::Installation(id) => id,
        CallAuth::Invalid(reason) => return Err(Refusal::new(StatusCode::UNAUTHORIZED, &reason)),
        _ => {
            return Err(Refusal::new(
                StatusCode::UNAUTHORIZED,
                "Requires authentication",
            ));
        }
    };
    let (Some(minted), Some(inst)) = (
        world.tokens.get(token),
        world.installations.get(&installation),
    ) else {
        return Err(Refusal::new(StatusCode::UNAUTHORIZED, "Bad credentials"));
    };
    let in_installation =
        inst.account.eq_ignore_ascii_case(owner) && inst.repositories.iter().any(|r| r == repo);
    let in_scope = minted
        .repositories
        .as_ref()
        .is_none_or(|repos| repos.iter().any(|r| r == repo));
    if !in_installation || !in_scope {
        return Err(Refusal::new(StatusCode::NOT_FOUND, "Not Found"));
    }
    if let Some(perms) = &minted.permissions {
        let granted = perms.get(category).map(String::as_str);
        let ok = match granted {
            Some("write") => true,
            Some("read") => !write,
            _ => false,
        };
        if !ok {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "Resource not accessible by integration",
            ));
        }
    }
    Ok(installation)
}

/// A JSON answer with an `ETag`; `304` when the request's `If-None-Match` matches.
pub(super) fn with_etag(headers: &HeaderMap, value: &Value) -> Response {
    let body = value.to_string();
    let etag = format!("\"{:016x}\"", fnv1a(body.as_bytes()));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag);
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
            body,
        )
            .into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, v);
    }
    response
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

async fn get_app(State(world): State<Shared>, headers: HeaderMap) -> Response {
    let w = lock(&world);
    if let Err(r) = require_app(&w, &headers) {
        return r.into_response();
    }
    axum::Json(json!({"id": TEST_APP_ID, "slug": TEST_APP_SLUG, "name": "Countersign (test)"}))
        .into_response()
}

async fn get_repo_installation(
    State(world): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    if let Err(r) = require_app(&w, &headers) {
        return r.into_response();
    }
    let found = w
        .installations
        .iter()
        .find(|(_, i)| i.account.eq_ignore_ascii_case(&owner) && i.repositories.contains(&repo));
    match found {
        Some((id, i)) => {
            axum::Json(json!({"id": id, "account": {"login": i.account}, "app_id": TEST_APP_ID}))
                .into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize, Default)]
struct TokenRequest {
    repositories: Option<Vec<String>>,
    permissions: Option<BTreeMap<String, String>>,
}

async fn create_token(
    State(world): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    if let Err(r) = require_app(&w, &headers) {
        return r.into_response();
    }
    let request: TokenRequest = if body.is_empty() {
        TokenRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &format!("Invalid request: {e}"),
                );
            }
        }
    };
    let Some(installation) = w.installations.get(&id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if let Some(repos) = &request.repositories
        && let Some(missing) = repos
            .iter()
            .find(|r| !installation.repositories.contains(r))
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "There is at least one repository that does not exist or is not accessible to the parent installation: {missing}"
            ),
        );
    }
    let n = w.next_id();
    let token = format!("ghs_test{id}x{n}");
    let expires_at = Timestamp::now()
        .saturating_add(jiff::SignedDuration::from_secs(TOKEN_LIFETIME_SECS))
        .unwrap_or(Timestamp::MAX);
    w.tokens.insert(
        token.clone(),
        MintedToken {
            installation: id,
            repositories: request.repositories.clone(),
            permissions: request.permissions.clone(),
            expires_at,
            revoked_at: None,
        },
    );
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "expires_at": expires_at.to_string(),
            "permissions": request.permissions.unwrap_or_default(),
            "repository_selection": if request.repositories.is_some() { "selected" } else { "all" },
        })),
    )
        .into_response()
}

/// `DELETE /installation/token`: revokes the installation token the request authenticates
/// with (`204`); a token GitHub does not accept (unknown, expired, revoked) gets `401`.
async fn revoke_token(State(world): State<Shared>, headers: HeaderMap) -> Response {
    let mut w = lock(&world);
    let CallAuth::Installation(_) = authenticate(&w, &headers) else {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    };
    let credential = super::credentials::presented(&headers).and_then(Result::ok);
    let token = credential.as_ref().map_or("", |c| c.token()).to_owned();
    if let Some(minted) = w.tokens.get_mut(&token) {
        minted.revoked_at = Some(Timestamp::now());
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn get_permission(
    State(world): State<Shared>,
    Path((owner, repo, login)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "metadata", false) {
        return r.into_response();
    }
    let key = (format!("{owner}/{repo}"), login.to_ascii_lowercase());
    let Some(role) = w.permissions.get(&key) else {
        return error(StatusCode::NOT_FOUND, &format!("{login} is not a user"));
    };
    let permission = match role.as_str() {
        "maintain" => "write",
        "triage" => "read",
        other => other,
    };
    with_etag(
        &headers,
        &json!({"permission": permission, "role_name": role, "user": {"login": login}}),
    )
}

#[derive(Deserialize)]
pub(super) struct Page {
    pub(super) per_page: Option<usize>,
    pub(super) page: Option<usize>,
}

async fn list_team_members(
    State(world): State<Shared>,
    Path((org, slug)): Path<(String, String)>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    let authorised = matches!(authenticate(&w, &headers), CallAuth::Installation(id)
        if w.installations.get(&id).is_some_and(|i| i.account.eq_ignore_ascii_case(&org)));
    if !authorised {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let Some(members) = w
        .teams
        .get(&(org.to_ascii_lowercase(), slug.to_ascii_lowercase()))
    else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let members: Vec<Value> = members.iter().map(User::json).collect();
    super::pulls::paginate(
        &headers,
        &format!("/orgs/{org}/teams/{slug}/members"),
        &members,
        &page,
    )
}

#[derive(Deserialize)]
struct BodyField {
    body: String,
}

#[derive(Deserialize)]
struct ContentField {
    content: String,
}

const REACTIONS: &[&str] = &[
    "+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes",
];

pub(super) fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| {
        Refusal::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("Invalid request: {e}"),
        )
    })
}

async fn create_comment(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "issues", true) {
        return r.into_response();
    }
    let body: BodyField = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let repository = format!("{owner}/{repo}");
    if !w.issues.contains_key(&(repository.clone(), number)) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    let id = w.next_id();
    let now = w.tick();
    let comment = Comment {
        id,
        repository,
        number,
        body: body.body,
        author: format!("{TEST_APP_SLUG}[bot]"),
        author_id: TEST_APP_BOT_USER_ID,
        created_at: now,
        updated_at: now,
        previous_bodies: Vec::new(),
    };
    let answer = comment.json();
    w.comments.push(comment);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn update_comment(
    State(world): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "issues", true) {
        return r.into_response();
    }
    let body: BodyField = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let repository = format!("{owner}/{repo}");
    let now = w.tick();
    match w
        .comments
        .iter_mut()
        .find(|c| c.id == id && c.repository == repository)
    {
        Some(c) => {
            let before = std::mem::replace(&mut c.body, body.body);
            c.previous_bodies.push(before);
            c.updated_at = now;
            axum::Json(c.json()).into_response()
        }
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

fn react(
    world: &Shared,
    headers: &HeaderMap,
    owner: &str,
    repo: &str,
    target: String,
    body: &[u8],
) -> Response {
    let mut w = lock(world);
    if let Err(r) = require_repo(&w, headers, owner, repo, "issues", true) {
        return r.into_response();
    }
    let content: ContentField = match json_body(body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    if !REACTIONS.contains(&content.content.as_str()) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    w.reactions.push(ReactionRecord {
        repository: format!("{owner}/{repo}"),
        target,
        content: content.content.clone(),
    });
    (
        StatusCode::CREATED,
        axum::Json(json!({"content": content.content})),
    )
        .into_response()
}

async fn react_to_comment(
    State(world): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    react(
        &world,
        &headers,
        &owner,
        &repo,
        format!("comment:{id}"),
        &body,
    )
}

async fn react_to_issue(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    react(
        &world,
        &headers,
        &owner,
        &repo,
        format!("issue:{number}"),
        &body,
    )
}
