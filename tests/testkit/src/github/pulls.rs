//! Pull requests (their files, commits, reviews and inline comments), check runs, commit
//! statuses, review requests and merges in the fake GitHub.
//!
//! World changes (`open_pull_request`, `push_to_pull_request`, `push_commit_by`,
//! `rebase_pull_request`, `submit_review`, `dismiss_review`, `add_review_comment`) return the
//! webhook payload GitHub would send, like `label_issue`; `set_commit_status` and
//! `add_check_run` stand in for other CI systems; `pull_request_payload` and
//! `synchronize_payload` give the payloads for changes made through the API or by a push.
//! The REST side serves what the approval-gate reconciler reads (a pull request, its files,
//! commits, reviews and comments, paginated; git commits; check runs and the combined status
//! of a commit) and writes (check runs, review requests, the merge), with GitHub's status
//! codes and the same token scoping as every other call. Pull requests opened from real
//! branches (`pulls_api`) live in the same model.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use jiff::Timestamp;
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
    /// The path before a rename.
    pub previous_filename: Option<String>,
    /// The blob SHA of the file after the change (before it, for a removed file), as GitHub
    /// lists it. Synthetic pushes stamp one from the push's tree and the path when unset, so
    /// equal content has equal SHAs and new content new ones.
    pub sha: Option<String>,
    /// The unified diff of the file (hunks only, no `diff --git` header), as GitHub lists it;
    /// absent for binary files and for synthetic pushes that give none.
    pub patch: Option<String>,
}

impl ChangedFile {
    /// A modified file.
    pub fn modified(filename: &str, additions: u64, deletions: u64) -> Self {
        Self {
            filename: filename.to_owned(),
            additions,
            deletions,
            status: "modified".to_owned(),
            previous_filename: None,
            sha: None,
            patch: None,
        }
    }

    /// The same file with this unified diff (`@@ … @@` hunks).
    pub fn with_patch(mut self, patch: &str) -> Self {
        self.patch = Some(patch.to_owned());
        self
    }

    /// A file renamed from `from` to `to` without changes.
    pub fn renamed(from: &str, to: &str) -> Self {
        Self {
            filename: to.to_owned(),
            additions: 0,
            deletions: 0,
            status: "renamed".to_owned(),
            previous_filename: Some(from.to_owned()),
            sha: None,
            patch: None,
        }
    }

    pub(super) fn json(&self, repository: &str) -> Value {
        let raw = format!("https://github.com/{repository}/raw/HEAD/{}", self.filename);
        let mut value = json!({
            "sha": self.sha.clone().unwrap_or_else(|| fake_sha(&format!("blob\0{}", self.filename))),
            "blob_url": raw.replace("/raw/", "/blob/"),
            "raw_url": raw,
            "contents_url": format!("https://api.github.com/repos/{repository}/contents/{}", self.filename),
            "filename": self.filename,
            "status": self.status,
            "additions": self.additions,
            "deletions": self.deletions,
            "changes": self.additions + self.deletions,
        });
        if let Some(from) = &self.previous_filename {
            value["previous_filename"] = json!(from);
        }
        if let Some(patch) = &self.patch {
            value["patch"] = json!(patch);
        }
        value
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
    /// When it was submitted.
    pub submitted_at: Timestamp,
}

impl Review {
    pub(super) fn json(&self, repository: &str, number: u64) -> Value {
        json!({
            "id": self.id,
            "node_id": format!("PRR_{}", self.id),
            "user": self.user.json(),
            "body": self.body,
            "state": self.state,
            "commit_id": self.commit_id,
            "submitted_at": self.submitted_at.to_string(),
            "author_association": "MEMBER",
            "html_url": format!("https://github.com/{repository}/pull/{number}#pullrequestreview-{}", self.id),
            "pull_request_url": format!("https://api.github.com/repos/{repository}/pulls/{number}"),
        })
    }
}

/// The author or committer line of a git commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitIdentity {
    /// Name.
    pub name: String,
    /// Email (GitHub links `<id>+<login>@users.noreply.github.com` to that account).
    pub email: String,
    /// Date.
    pub date: Timestamp,
}

impl GitIdentity {
    /// The identity the synthetic commits of [`World::open_pull_request`] and friends carry
    /// for `user`: their login and `<login>@users.noreply.github.com`.
    pub fn of(user: &User, date: Timestamp) -> Self {
        Self {
            name: user.login.clone(),
            email: format!("{}@users.noreply.github.com", user.login),
            date,
        }
    }

    fn json(&self) -> Value {
        json!({"name": self.name, "email": self.email, "date": self.date.to_string()})
    }
}

/// A commit pushed to a pull request (or the base branch's tip).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// Commit id.
    pub sha: String,
    /// Tree id: equal trees mean equal content (a clean rebase keeps the tree).
    pub tree_sha: String,
    /// The GitHub account of the git author ([`User::unlinked`] when GitHub could not link
    /// the email to one: REST then shows `author: null`).
    pub author: User,
    /// The GitHub account of the git committer (as `author`).
    pub committer: User,
    /// The committer date.
    pub timestamp: Timestamp,
    /// The git author line.
    pub author_identity: GitIdentity,
    /// The git committer line.
    pub committer_identity: GitIdentity,
    /// Message.
    pub message: String,
    /// Parent commit.
    pub parent: Option<String>,
}

impl Commit {
    /// A user object, or `null` for an identity GitHub could not link to an account.
    fn account_json(user: &User) -> Value {
        if user.is_linked() {
            user.json()
        } else {
            Value::Null
        }
    }

    /// `GET …/pulls/{n}/commits` (and `GET …/commits/{sha}`) form.
    pub(super) fn json(&self, repository: &str) -> Value {
        let api = format!("https://api.github.com/repos/{repository}");
        json!({
            "sha": self.sha,
            "node_id": format!("C_{}", &self.sha[..12.min(self.sha.len())]),
            "url": format!("{api}/commits/{}", self.sha),
            "html_url": format!("https://github.com/{repository}/commit/{}", self.sha),
            "comments_url": format!("{api}/commits/{}/comments", self.sha),
            "commit": {
                "url": format!("{api}/git/commits/{}", self.sha),
                "author": self.author_identity.json(),
                "committer": self.committer_identity.json(),
                "message": self.message,
                "tree": {"sha": self.tree_sha, "url": format!("{api}/git/trees/{}", self.tree_sha)},
                "comment_count": 0,
                "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null},
            },
            "author": Self::account_json(&self.author),
            "committer": Self::account_json(&self.committer),
            "parents": self.parents_json(repository),
        })
    }

    /// `GET …/git/commits/{sha}` form.
    fn git_json(&self, repository: &str) -> Value {
        let api = format!("https://api.github.com/repos/{repository}");
        json!({
            "sha": self.sha,
            "node_id": format!("C_{}", &self.sha[..12.min(self.sha.len())]),
            "url": format!("{api}/git/commits/{}", self.sha),
            "html_url": format!("https://github.com/{repository}/commit/{}", self.sha),
            "author": self.author_identity.json(),
            "committer": self.committer_identity.json(),
            "message": self.message,
            "tree": {"sha": self.tree_sha, "url": format!("{api}/git/trees/{}", self.tree_sha)},
            "parents": self.parents_json(repository),
            "verification": {"verified": false, "reason": "unsigned", "signature": null, "payload": null},
        })
    }

    fn parents_json(&self, repository: &str) -> Value {
        self.parent
            .iter()
            .map(|p| {
                json!({
                    "sha": p,
                    "url": format!("https://api.github.com/repos/{repository}/commits/{p}"),
                    "html_url": format!("https://github.com/{repository}/commit/{p}"),
                })
            })
            .collect()
    }
}

/// An inline review comment (on a line of the diff).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewComment {
    /// Id.
    pub id: u64,
    /// Author.
    pub user: User,
    /// Markdown body.
    pub body: String,
    /// The file commented on.
    pub path: String,
    /// The head commit it was made on.
    pub commit_id: String,
    /// When it was posted.
    pub created_at: Timestamp,
    /// When it was last edited.
    pub updated_at: Timestamp,
}

impl ReviewComment {
    pub(super) fn json(&self, repository: &str, number: u64) -> Value {
        json!({
            "id": self.id,
            "node_id": format!("PRRC_{}", self.id),
            "url": format!("https://api.github.com/repos/{repository}/pulls/comments/{}", self.id),
            "html_url": format!("https://github.com/{repository}/pull/{number}#discussion_r{}", self.id),
            "pull_request_url": format!("https://api.github.com/repos/{repository}/pulls/{number}"),
            "pull_request_review_id": null,
            "diff_hunk": "@@ -1,1 +1,1 @@",
            "path": self.path,
            "line": 1,
            "side": "RIGHT",
            "position": 1,
            "commit_id": self.commit_id,
            "original_commit_id": self.commit_id,
            "user": self.user.json(),
            "body": self.body,
            "created_at": self.created_at.to_string(),
            "updated_at": self.updated_at.to_string(),
            "author_association": "MEMBER",
            "_links": {
                "self": {"href": format!("https://api.github.com/repos/{repository}/pulls/comments/{}", self.id)},
                "html": {"href": format!("https://github.com/{repository}/pull/{number}#discussion_r{}", self.id)},
                "pull_request": {"href": format!("https://api.github.com/repos/{repository}/pulls/{number}")},
            },
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
    /// `merge`, `squash` or `rebase` once merged through the API.
    pub merge_method: Option<String>,
    /// The commit the merge made on the base branch.
    pub merge_commit_sha: Option<String>,
    /// The files it changes.
    pub files: Vec<ChangedFile>,
    /// Its commits, oldest first; the last is the head.
    pub commits: Vec<Commit>,
    /// Reviews, oldest first.
    pub reviews: Vec<Review>,
    /// Inline review comments, oldest first.
    pub review_comments: Vec<ReviewComment>,
    pub(super) pushes: u64,
    /// Opened through `POST …/pulls` from real branches: pushes to the head branch recompute
    /// head, commits and files from git.
    pub(super) from_git: bool,
}

/// A check run, ours (created through the API) or another app's ([`World::add_check_run`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckRun {
    /// Id.
    pub id: u64,
    /// `owner/name`.
    pub repository: String,
    /// The app that created it ([`TEST_APP_ID`] for ours).
    pub app_id: u64,
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
    /// The creator's own reference.
    pub external_id: Option<String>,
    /// When it completed (sent by the creator, or stamped when it completes).
    pub completed_at: Option<String>,
}

impl CheckRun {
    fn json(&self) -> Value {
        json!({
            "id": self.id,
            "node_id": format!("CR_{}", self.id),
            "url": format!("https://api.github.com/repos/{}/check-runs/{}", self.repository, self.id),
            "html_url": format!("https://github.com/{}/runs/{}", self.repository, self.id),
            "name": self.name,
            "head_sha": self.head_sha,
            "external_id": self.external_id,
            "status": self.status,
            "conclusion": self.conclusion,
            "completed_at": self.completed_at,
            "details_url": self.details_url,
            "output": {
                "title": self.title,
                "summary": self.summary,
                "text": null,
                "annotations_count": 0,
                "annotations_url": format!("https://api.github.com/repos/{}/check-runs/{}/annotations", self.repository, self.id),
            },
            "app": {"id": self.app_id},
            "pull_requests": [],
        })
    }
}

/// A review request made through `POST …/pulls/{n}/requested_reviewers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewRequest {
    /// `owner/name`.
    pub repository: String,
    /// Pull request number.
    pub number: u64,
    /// Logins asked.
    pub users: Vec<String>,
    /// Team slugs asked.
    pub teams: Vec<String>,
}

/// A commit status (the statuses API other CI systems use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitStatus {
    /// `owner/name`.
    pub repository: String,
    /// Commit.
    pub sha: String,
    /// Context, e.g. `ci/jenkins`.
    pub context: String,
    /// `error`, `failure`, `pending` or `success`.
    pub state: String,
}

/// A deterministic 40-hex id from `seed`.
pub(super) fn fake_sha(seed: &str) -> String {
    let a = seed.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let b = a.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15;
    let c = b.rotate_left(29) ^ a;
    format!("{a:016x}{b:016x}{:08x}", c as u32)
}

/// A deterministic commit id for the `n`-th push of `branch`.
pub(super) fn commit_sha(repository: &str, branch: &str, n: u64) -> String {
    fake_sha(&format!("{repository}\0{branch}\0{n}"))
}

/// A deterministic tree id for the content of the `n`-th push of `branch`.
pub(super) fn tree_sha(repository: &str, branch: &str, n: u64) -> String {
    fake_sha(&format!("tree\0{repository}\0{branch}\0{n}"))
}

/// Gives every file of a synthetic push without a blob SHA one derived from the push's tree
/// and the path: a file pushed again gets a new SHA (new content), a rebase keeps it.
pub(super) fn stamp_blobs(files: &mut [ChangedFile], tree: &str) {
    for f in files.iter_mut().filter(|f| f.sha.is_none()) {
        f.sha = Some(fake_sha(&format!("blob\0{tree}\0{}", f.filename)));
    }
}

/// Most files GitHub lists for one pull request (`GET …/pulls/{n}/files`).
pub const MAX_LISTED_FILES: usize = 3000;
/// Most commits GitHub lists for one pull request (`GET …/pulls/{n}/commits`).
pub const MAX_LISTED_COMMITS: usize = 250;

impl World {
    /// Opens a pull request from `head_branch` into `main` changing `files`, with one commit
    /// authored and committed by `author`; returns the `pull_request.opened` payload (its
    /// number is `payload["number"]`).
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
        let base_sha = commit_sha(repository, "main", 1);
        let owner = repository.split('/').next().unwrap_or(repository);
        let base = Commit {
            sha: base_sha.clone(),
            tree_sha: tree_sha(repository, "main", 1),
            author: User::new(9_000, owner),
            committer: User::new(9_000, owner),
            timestamp: super::server::WORLD_EPOCH,
            author_identity: GitIdentity::of(&User::new(9_000, owner), super::server::WORLD_EPOCH),
            committer_identity: GitIdentity::of(
                &User::new(9_000, owner),
                super::server::WORLD_EPOCH,
            ),
            message: "Initial commit".to_owned(),
            parent: None,
        };
        self.commits
            .entry((repository.to_owned(), base_sha.clone()))
            .or_insert(base);
        let timestamp = self.tick();
        let head = Commit {
            sha: commit_sha(repository, head_branch, 1),
            tree_sha: tree_sha(repository, head_branch, 1),
            author: author.clone(),
            committer: author.clone(),
            timestamp,
            author_identity: GitIdentity::of(author, timestamp),
            committer_identity: GitIdentity::of(author, timestamp),
            message: title.to_owned(),
            parent: Some(base_sha.clone()),
        };
        self.commits
            .insert((repository.to_owned(), head.sha.clone()), head.clone());
        let mut files = files;
        stamp_blobs(&mut files, &head.tree_sha);
        self.head_files
            .insert((repository.to_owned(), head.sha.clone()), files.clone());
        self.pulls.insert(
            (repository.to_owned(), number),
            PullRequest {
                author: author.clone(),
                head_branch: head_branch.to_owned(),
                head_sha: head.sha.clone(),
                base_branch: "main".to_owned(),
                base_sha,
                draft: false,
                state: "open".to_owned(),
                merged: false,
                merge_method: None,
                merge_commit_sha: None,
                files,
                commits: vec![head],
                reviews: Vec::new(),
                review_comments: Vec::new(),
                pushes: 1,
                from_git: false,
            },
        );
        self.pull_request_payload(repository, number, "opened", author)
    }

    /// Pushes a new commit (a new tree) by `sender` to the pull request's branch changing
    /// `files` (replacing the list); returns the `pull_request.synchronize` payload.
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
        self.push_commit_by(repository, number, files, sender)
    }

    /// Pushes a new commit (a new tree) authored and committed by `committer` changing
    /// `files` (replacing the list); returns the `pull_request.synchronize` payload with
    /// `committer` as the sender.
    ///
    /// # Panics
    /// When the pull request does not exist (a mistake in the test itself).
    pub fn push_commit_by(
        &mut self,
        repository: &str,
        number: u64,
        files: Vec<ChangedFile>,
        committer: &User,
    ) -> Value {
        let timestamp = self.tick();
        let pr = self.pull_mut(repository, number);
        let before = pr.head_sha.clone();
        pr.pushes += 1;
        let commit = Commit {
            sha: commit_sha(repository, &pr.head_branch, pr.pushes),
            tree_sha: tree_sha(repository, &pr.head_branch, pr.pushes),
            author: committer.clone(),
            committer: committer.clone(),
            timestamp,
            author_identity: GitIdentity::of(committer, timestamp),
            committer_identity: GitIdentity::of(committer, timestamp),
            message: format!("Update {}", pr.head_branch),
            parent: Some(before.clone()),
        };
        pr.head_sha = commit.sha.clone();
        let mut files = files;
        stamp_blobs(&mut files, &commit.tree_sha);
        pr.files.clone_from(&files);
        pr.commits.push(commit.clone());
        self.head_files
            .insert((repository.to_owned(), commit.sha.clone()), files);
        self.commits
            .insert((repository.to_owned(), commit.sha.clone()), commit);
        self.synchronize_payload(repository, number, before, committer)
    }

    /// `sender` rebases the pull request cleanly onto its base and force-pushes: every
    /// commit gets a new SHA and `sender` as committer, the trees (and so the head's content)
    /// stay the same. Returns the `pull_request.synchronize` payload. The old commits stay
    /// readable through `GET …/git/commits/{sha}`.
    ///
    /// # Panics
    /// When the pull request does not exist (a mistake in the test itself).
    pub fn rebase_pull_request(&mut self, repository: &str, number: u64, sender: &User) -> Value {
        let timestamp = self.tick();
        let pr = self.pull_mut(repository, number);
        let before = pr.head_sha.clone();
        pr.pushes += 1;
        let last = pr.commits.len().saturating_sub(1);
        let mut parent = Some(pr.base_sha.clone());
        let mut rebased = Vec::with_capacity(pr.commits.len());
        for (i, old) in pr.commits.iter().enumerate() {
            let sha = if i == last {
                commit_sha(repository, &pr.head_branch, pr.pushes)
            } else {
                fake_sha(&format!(
                    "rebase\0{repository}\0{}\0{}\0{i}",
                    pr.head_branch, pr.pushes
                ))
            };
            rebased.push(Commit {
                sha: sha.clone(),
                tree_sha: old.tree_sha.clone(),
                author: old.author.clone(),
                committer: sender.clone(),
                timestamp,
                author_identity: old.author_identity.clone(),
                committer_identity: GitIdentity::of(sender, timestamp),
                message: old.message.clone(),
                parent: parent.replace(sha),
            });
        }
        pr.head_sha = rebased.last().map_or(before.clone(), |c| c.sha.clone());
        pr.commits.clone_from(&rebased);
        let (head, files) = (pr.head_sha.clone(), pr.files.clone());
        self.head_files.insert((repository.to_owned(), head), files);
        for commit in rebased {
            self.commits
                .insert((repository.to_owned(), commit.sha.clone()), commit);
        }
        self.synchronize_payload(repository, number, before, sender)
    }

    /// The `pull_request.synchronize` payload for a push that moved the head from `before`.
    pub fn synchronize_payload(
        &self,
        repository: &str,
        number: u64,
        before: String,
        sender: &User,
    ) -> Value {
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
        let submitted_at = self.tick();
        let pr = self.pull_mut(repository, number);
        let review = Review {
            id,
            user: reviewer.clone(),
            state: state.to_ascii_uppercase(),
            commit_id: pr.head_sha.clone(),
            body: body.to_owned(),
            submitted_at,
        };
        pr.reviews.push(review.clone());
        self.review_payload(repository, number, &review, "submitted", reviewer)
    }

    /// `sender` dismisses review `review_id` (its state becomes `DISMISSED`); returns the
    /// `pull_request_review.dismissed` payload.
    ///
    /// # Panics
    /// When the pull request or the review does not exist (a mistake in the test itself).
    pub fn dismiss_review(
        &mut self,
        repository: &str,
        number: u64,
        review_id: u64,
        sender: &User,
    ) -> Value {
        let pr = self.pull_mut(repository, number);
        let review = pr
            .reviews
            .iter_mut()
            .find(|r| r.id == review_id)
            .unwrap_or_else(|| panic!("test bug: no review {review_id} on #{number}"));
        review.state = "DISMISSED".to_owned();
        let review = review.clone();
        self.review_payload(repository, number, &review, "dismissed", sender)
    }

    /// The `pull_request_review.submitted` payload GitHub sends for review `review_id`
    /// (e.g. one Countersign submitted through the API), its reviewer as the sender.
    ///
    /// # Panics
    /// When the pull request or the review does not exist (a mistake in the test itself).
    pub fn review_submitted_payload(&self, repository: &str, number: u64, review_id: u64) -> Value {
        let review = self.pulls[&(repository.to_owned(), number)]
            .reviews
            .iter()
            .find(|r| r.id == review_id)
            .unwrap_or_else(|| panic!("test bug: no review {review_id} on #{number}"))
            .clone();
        self.review_payload(repository, number, &review, "submitted", &review.user)
    }

    pub(super) fn review_payload(
        &self,
        repository: &str,
        number: u64,
        review: &Review,
        action: &str,
        sender: &User,
    ) -> Value {
        let mut payload = self.pull_request_payload(repository, number, action, sender);
        // GitHub sends review states lower-case in webhooks and upper-case over REST.
        let mut review_json = review.json(repository, number);
        review_json["state"] = json!(review.state.to_ascii_lowercase());
        payload["review"] = review_json;
        payload
    }

    /// `author` comments inline on the pull request's first changed file at the current
    /// head; returns the `pull_request_review_comment.created` payload.
    ///
    /// # Panics
    /// When the pull request does not exist (a mistake in the test itself).
    pub fn add_review_comment(
        &mut self,
        repository: &str,
        number: u64,
        body: &str,
        author: &User,
    ) -> Value {
        let id = self.next_id();
        let now = self.tick();
        let pr = self.pull_mut(repository, number);
        let comment = ReviewComment {
            id,
            user: author.clone(),
            body: body.to_owned(),
            path: pr
                .files
                .first()
                .map_or_else(|| "README.md".to_owned(), |f| f.filename.clone()),
            commit_id: pr.head_sha.clone(),
            created_at: now,
            updated_at: now,
        };
        pr.review_comments.push(comment.clone());
        let mut payload = self.pull_request_payload(repository, number, "created", author);
        payload["comment"] = comment.json(repository, number);
        payload
    }

    /// Sets commit status `context` on `sha` to `state` (`error`, `failure`, `pending`,
    /// `success`), as another CI system would; the latest per context counts.
    pub fn set_commit_status(&mut self, repository: &str, sha: &str, context: &str, state: &str) {
        self.commit_statuses.push(CommitStatus {
            repository: repository.to_owned(),
            sha: sha.to_owned(),
            context: context.to_owned(),
            state: state.to_owned(),
        });
    }

    /// Adds a check run on `sha` as app `app_id` (another CI app's, or ours with
    /// [`TEST_APP_ID`]); returns its id.
    pub fn add_check_run(
        &mut self,
        repository: &str,
        sha: &str,
        name: &str,
        app_id: u64,
        status: &str,
        conclusion: Option<&str>,
    ) -> u64 {
        let id = self.next_id();
        let completed_at = conclusion.map(|_| self.tick().to_string());
        self.check_runs.push(CheckRun {
            id,
            repository: repository.to_owned(),
            app_id,
            name: name.to_owned(),
            head_sha: sha.to_owned(),
            status: status.to_owned(),
            conclusion: conclusion.map(str::to_owned),
            title: None,
            summary: None,
            details_url: None,
            external_id: None,
            completed_at,
        });
        id
    }

    /// The check runs on `sha` of `repository`, oldest first.
    pub fn check_runs_on(&self, repository: &str, sha: &str) -> Vec<&CheckRun> {
        self.check_runs
            .iter()
            .filter(|c| c.repository == repository && c.head_sha == sha)
            .collect()
    }

    /// The latest status per context on `sha`, in the order contexts first appeared.
    pub fn commit_statuses_on(&self, repository: &str, sha: &str) -> Vec<&CommitStatus> {
        let mut latest: Vec<&CommitStatus> = Vec::new();
        for s in self
            .commit_statuses
            .iter()
            .filter(|s| s.repository == repository && s.sha == sha)
        {
            match latest.iter_mut().find(|l| l.context == s.context) {
                Some(l) => *l = s,
                None => latest.push(s),
            }
        }
        latest
    }

    /// Review requests made on `repository#number`, oldest first.
    pub fn review_requests_on(&self, repository: &str, number: u64) -> Vec<&ReviewRequest> {
        self.review_requests
            .iter()
            .filter(|r| r.repository == repository && r.number == number)
            .collect()
    }

    pub(super) fn pull_mut(&mut self, repository: &str, number: u64) -> &mut PullRequest {
        self.pulls
            .get_mut(&(repository.to_owned(), number))
            .unwrap_or_else(|| panic!("test bug: no pull request {repository}#{number}"))
    }

    /// The `pull_request` webhook payload GitHub sends about pull request `number` with
    /// `action` (`opened`, `closed`, `labeled`, …) caused by `sender`, from the current state:
    /// after `POST …/pulls`, `pull_request_payload(repo, n, "opened", &User::test_app_bot())`
    /// is what GitHub would deliver. An unknown pull request gives `"pull_request": null`.
    pub fn pull_request_payload(
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

    pub(super) fn pull_json(&self, repository: &str, number: u64) -> Value {
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
            "merge_commit_sha": pr.merge_commit_sha,
            "head": end(&pr.head_branch, &pr.head_sha),
            "base": end(&pr.base_branch, &pr.base_sha),
            "commits": pr.commits.len(),
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
    paginate_with(headers, path, items, page, Value::Array)
}

/// Like [`paginate`] for lists GitHub wraps in an object (`{"total_count", "check_runs"}`,
/// a combined status): `wrap` builds the body around one page. `path` may carry a query
/// (e.g. a filter) that the next link keeps.
pub(super) fn paginate_with(
    headers: &HeaderMap,
    path: &str,
    items: &[Value],
    page: &Page,
    wrap: impl FnOnce(Vec<Value>) -> Value,
) -> Response {
    let (chunk, per_page, number) = window(items, page);
    let mut response = with_etag(headers, &wrap(chunk));
    if number * per_page < items.len() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        let separator = if path.contains('?') { '&' } else { '?' };
        let next = format!(
            "<http://{host}{path}{separator}per_page={per_page}&page={}>; rel=\"next\"",
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
            get(list_reviews).post(create_review),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/commits",
            get(list_commits),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/comments",
            get(list_review_comments),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/requested_reviewers",
            post(request_reviewers),
        )
        .route(
            "/repos/{owner}/{repo}/pulls/{number}/merge",
            put(merge_pull),
        )
        .route(
            "/repos/{owner}/{repo}/git/commits/{sha}",
            get(get_git_commit),
        )
        .route(
            "/repos/{owner}/{repo}/commits/{sha}/status",
            get(combined_status),
        )
        .route(
            "/repos/{owner}/{repo}/compare/{basehead}",
            get(super::compare::compare_commits),
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
        Ok(_) => {
            let mut value = w.pull_json(&format!("{owner}/{repo}"), number);
            w.scrub_deleted(&mut value);
            with_etag(&headers, &value)
        }
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
            let mut values = items(pr, &format!("{owner}/{repo}"), number);
            values.iter_mut().for_each(|v| w.scrub_deleted(v));
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
    // GitHub lists at most 3000 files; `changed_files` on the pull request says how many
    // there really are.
    pull_list(&world, at, &page, &headers, "files", |pr, repository, _| {
        pr.files
            .iter()
            .take(MAX_LISTED_FILES)
            .map(|f| f.json(repository))
            .collect()
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

#[derive(Deserialize)]
struct ReviewWrite {
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    event: Option<String>,
}

/// `POST …/pulls/{n}/reviews` with an installation token: the App's bot submits a review on
/// the current head. As GitHub: a `COMMENT` or `REQUEST_CHANGES` review needs a body, an
/// unknown event is a 422, and without an event the review stays `PENDING`.
async fn create_review(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "pull_requests", true)
        .and_then(|_| pull(&w, &owner, &repo, number).map(drop))
    {
        return r.into_response();
    }
    let write: ReviewWrite = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let state = match write.event.as_deref() {
        None => "PENDING",
        Some("COMMENT") => "COMMENTED",
        Some("APPROVE") => "APPROVED",
        Some("REQUEST_CHANGES") => "CHANGES_REQUESTED",
        Some(other) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Unprocessable Entity: event {other} is not valid"),
            );
        }
    };
    let text = write.body.unwrap_or_default();
    if matches!(state, "COMMENTED" | "CHANGES_REQUESTED") && text.trim().is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Entity: Review body is required",
        );
    }
    let repository = format!("{owner}/{repo}");
    w.submit_review(&repository, number, &User::test_app_bot(), state, &text);
    let review = w.pulls[&(repository.clone(), number)]
        .reviews
        .last()
        .expect("just submitted")
        .json(&repository, number);
    (StatusCode::OK, axum::Json(review)).into_response()
}

async fn list_commits(
    State(world): State<Shared>,
    Path(at): Path<(String, String, u64)>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    // GitHub reads commits under the contents permission; a pull request's under either.
    pull_list(
        &world,
        at,
        &page,
        &headers,
        "commits",
        // GitHub lists at most 250 commits (the oldest); the compare API pages past them.
        |pr, repository, _| {
            pr.commits
                .iter()
                .take(MAX_LISTED_COMMITS)
                .map(|c| c.json(repository))
                .collect()
        },
    )
}

async fn list_review_comments(
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
        "comments",
        |pr, repository, number| {
            pr.review_comments
                .iter()
                .map(|c| c.json(repository, number))
                .collect()
        },
    )
}

/// `GET /repos/{owner}/{repo}/git/commits/{sha}`: any commit ever pushed, 404 otherwise.
async fn get_git_commit(
    State(world): State<Shared>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "contents", false) {
        return r.into_response();
    }
    let repository = format!("{owner}/{repo}");
    match w
        .commits
        .get(&(repository.clone(), sha.to_ascii_lowercase()))
    {
        Some(commit) => with_etag(&headers, &commit.git_json(&repository)),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(Deserialize)]
struct ReviewersWrite {
    #[serde(default)]
    reviewers: Vec<String>,
    #[serde(default)]
    team_reviewers: Vec<String>,
}

/// `POST …/pulls/{number}/requested_reviewers`, refusing (422) what GitHub refuses: the
/// author, logins without access to the repository, and teams the owner does not have.
async fn request_reviewers(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    let found = require_repo(&w, &headers, &owner, &repo, "pull_requests", true)
        .and_then(|_| pull(&w, &owner, &repo, number));
    let author = match found {
        Ok(pr) => pr.author.login.clone(),
        Err(r) => return r.into_response(),
    };
    let write: ReviewersWrite = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let repository = format!("{owner}/{repo}");
    if write
        .reviewers
        .iter()
        .any(|l| l.eq_ignore_ascii_case(&author))
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Review cannot be requested from pull request author.",
        );
    }
    let outsider = write.reviewers.iter().any(|l| {
        !w.permissions
            .contains_key(&(repository.clone(), l.to_ascii_lowercase()))
    }) || write.team_reviewers.iter().any(|t| {
        !w.teams
            .contains_key(&(owner.to_ascii_lowercase(), t.to_ascii_lowercase()))
    });
    if outsider {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!(
                "Reviews may only be requested from collaborators. One or more of the users or teams you specified is not a collaborator of the {repository} repository."
            ),
        );
    }
    w.review_requests.push(ReviewRequest {
        repository: repository.clone(),
        number,
        users: write.reviewers,
        teams: write.team_reviewers,
    });
    (
        StatusCode::CREATED,
        axum::Json(w.pull_json(&repository, number)),
    )
        .into_response()
}

#[derive(Deserialize)]
struct MergeWrite {
    sha: Option<String>,
    merge_method: Option<String>,
}

/// `PUT …/pulls/{number}/merge`: 405 when closed or draft, 409 when `sha` is not the head,
/// 422 for an unknown method; otherwise merged and closed.
async fn merge_pull(
    State(world): State<Shared>,
    Path((owner, repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "contents", true)
        .and_then(|_| pull(&w, &owner, &repo, number).map(drop))
    {
        return r.into_response();
    }
    let write: MergeWrite = match json_body(&body) {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let method = write.merge_method.unwrap_or_else(|| "merge".to_owned());
    if !["merge", "squash", "rebase"].contains(&method.as_str()) {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\nmerge_method is not included in the list",
        );
    }
    let repository = format!("{owner}/{repo}");
    let timestamp = w.tick();
    let pr = w.pull_mut(&repository, number);
    if pr.state != "open" || pr.draft {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Pull Request is not mergeable",
        );
    }
    if write.sha.as_ref().is_some_and(|sha| *sha != pr.head_sha) {
        return error(
            StatusCode::CONFLICT,
            "Head branch was modified. Review and try the merge again.",
        );
    }
    let merge = Commit {
        sha: fake_sha(&format!("merge\0{repository}\0{number}\0{}", pr.head_sha)),
        tree_sha: pr
            .commits
            .last()
            .map_or_else(String::new, |c| c.tree_sha.clone()),
        author: pr.author.clone(),
        committer: pr.author.clone(),
        timestamp,
        author_identity: GitIdentity::of(&pr.author, timestamp),
        committer_identity: GitIdentity::of(&pr.author, timestamp),
        message: format!("Merge pull request #{number}"),
        parent: Some(pr.base_sha.clone()),
    };
    pr.merged = true;
    pr.state = "closed".to_owned();
    pr.merge_method = Some(method);
    pr.merge_commit_sha = Some(merge.sha.clone());
    let sha = merge.sha.clone();
    w.commits.insert((repository, sha.clone()), merge);
    axum::Json(json!({
        "sha": sha,
        "merged": true,
        "message": "Pull Request successfully merged",
    }))
    .into_response()
}

/// `GET …/commits/{ref}/status`: the latest status per context and their combined state
/// (`failure` if any failed or errored, else `pending` if any is pending or there are none,
/// else `success`), statuses paginated.
async fn combined_status(
    State(world): State<Shared>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let w = lock(&world);
    if let Err(r) = require_repo(&w, &headers, &owner, &repo, "statuses", false) {
        return r.into_response();
    }
    let repository = format!("{owner}/{repo}");
    let latest = w.commit_statuses_on(&repository, &sha);
    let state = if latest
        .iter()
        .any(|s| s.state == "failure" || s.state == "error")
    {
        "failure"
    } else if latest.is_empty() || latest.iter().any(|s| s.state == "pending") {
        "pending"
    } else {
        "success"
    };
    let statuses: Vec<Value> = latest
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "id": i + 1,
                "node_id": format!("SC_{}", i + 1),
                "url": format!("https://api.github.com/repos/{repository}/statuses/{sha}"),
                "state": s.state,
                "description": null,
                "target_url": null,
                "context": s.context,
            })
        })
        .collect();
    let total = statuses.len();
    let path = format!("/repos/{owner}/{repo}/commits/{sha}/status");
    paginate_with(&headers, &path, &statuses, &page, |chunk| {
        json!({
            "state": state,
            "sha": sha,
            "total_count": total,
            "statuses": chunk,
            "repository": repository_json(&repository),
            "commit_url": format!("https://api.github.com/repos/{repository}/commits/{sha}"),
        })
    })
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
    let mut comments: Vec<Value> = w
        .comments_on(&repository, number)
        .into_iter()
        .map(super::server::Comment::json)
        .collect();
    comments.iter_mut().for_each(|v| w.scrub_deleted(v));
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
    completed_at: Option<String>,
    details_url: Option<String>,
    external_id: Option<String>,
    output: Option<Output>,
}

/// GitHub's limit on `output.summary`, in characters.
const SUMMARY_LIMIT: usize = 65_535;

/// Applies a create or update body to `run`, refusing what GitHub refuses: unknown values,
/// a conclusion together with a status other than `completed`, a completed run without a
/// conclusion, a summary over 65535 characters. A conclusion alone completes the run.
fn apply_check_write(
    run: &mut CheckRun,
    write: CheckRunWrite,
    now: Timestamp,
) -> Result<(), Refusal> {
    let invalid = |what: &str| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, what);
    if let Some(status) = &write.status
        && !CHECK_STATUSES.contains(&status.as_str())
    {
        return Err(invalid("Invalid status"));
    }
    if let Some(conclusion) = &write.conclusion {
        if !CHECK_CONCLUSIONS.contains(&conclusion.as_str()) {
            return Err(invalid("Invalid conclusion"));
        }
        if write.status.as_ref().is_some_and(|s| s != "completed") {
            return Err(invalid(
                "Invalid request: conclusion can only be set when status is completed",
            ));
        }
    }
    if let Some(at) = &write.completed_at
        && at.parse::<Timestamp>().is_err()
    {
        return Err(invalid("Invalid completed_at: not an ISO 8601 timestamp"));
    }
    // GitHub never moves a completed run back to queued or in progress: the status stays
    // (and the conclusion with it); a new run is how a check "restarts".
    if let Some(status) = write.status
        && run.status != "completed"
    {
        run.status = status;
    }
    if let Some(conclusion) = write.conclusion {
        run.conclusion = Some(conclusion);
        run.status = "completed".to_owned();
    }
    if run.status == "completed" && run.conclusion.is_none() {
        return Err(invalid(
            "Missing conclusion: a completed check run needs one",
        ));
    }
    if run.status == "completed" {
        let stamped = run.completed_at.take().unwrap_or_else(|| now.to_string());
        run.completed_at = Some(write.completed_at.unwrap_or(stamped));
    }
    if let Some(name) = write.name {
        run.name = name;
    }
    if let Some(url) = write.details_url {
        run.details_url = Some(url);
    }
    if let Some(id) = write.external_id {
        run.external_id = Some(id);
    }
    if let Some(output) = write.output {
        if output
            .summary
            .as_ref()
            .is_some_and(|s| s.chars().count() > SUMMARY_LIMIT)
        {
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
        app_id: TEST_APP_ID,
        name,
        head_sha,
        status: "queued".to_owned(),
        conclusion: None,
        title: None,
        summary: None,
        details_url: None,
        external_id: None,
        completed_at: None,
    };
    let now = w.tick();
    if let Err(r) = apply_check_write(&mut run, write, now) {
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
    let now = w.tick();
    let Some(run) = w
        .check_runs
        .iter_mut()
        .find(|c| c.id == id && c.repository == repository)
    else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if run.app_id != TEST_APP_ID {
        // Only the app that created a check run may change it.
        return error(
            StatusCode::FORBIDDEN,
            "Resource not accessible by integration",
        );
    }
    let mut updated = run.clone();
    match apply_check_write(&mut updated, write, now) {
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
    app_id: Option<u64>,
    per_page: Option<usize>,
    page: Option<usize>,
}

/// `GET …/commits/{sha}/check-runs` (every app's; `check_name` and `app_id` filter),
/// paginated with `Link` like other lists.
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
        .filter(|c| filter.app_id.is_none_or(|a| a == c.app_id))
        .map(CheckRun::json)
        .collect();
    let page = Page {
        per_page: filter.per_page,
        page: filter.page,
    };
    let mut path = format!("/repos/{owner}/{repo}/commits/{sha}/check-runs");
    let mut query = url_query(&[
        ("check_name", filter.check_name.clone()),
        ("app_id", filter.app_id.map(|a| a.to_string())),
    ]);
    if !query.is_empty() {
        query.insert(0, '?');
        path.push_str(&query);
    }
    let total = runs.len();
    paginate_with(
        &headers,
        &path,
        &runs,
        &page,
        |chunk| json!({"total_count": total, "check_runs": chunk}),
    )
}

/// `k=v&…` for the present values, percent-encoded.
pub(super) fn url_query(pairs: &[(&str, Option<String>)]) -> String {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}
