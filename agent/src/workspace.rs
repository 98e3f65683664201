//! The git workspace of one attempt: the `clone` step clones the repository; the `work` step
//! opens it, branches, describes the change and commits it as the GitHub App's bot. All git
//! work is done with git2, so the agent image needs no `git` binary.
//!
//! The clone token comes from the attempt's Secret. It reaches libgit2 only through a
//! credentials callback, for the clone URL's own host, and is never written into the remote
//! URL, `.git/config`, any other file, a log line or an error message. The workspace's
//! `.git/` is writable by the coding agent, so nothing in it is trusted by the `push` step,
//! which reads only objects from it (see [`crate::publish`]).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use countersign_crds::task_file::CommitIdentity;
use git2::build::RepoBuilder;
use git2::{
    DiffFindOptions, DiffOptions, ErrorClass, ErrorCode, FetchOptions, IndexAddOption, Oid, Patch,
    PushOptions, RemoteRedirect, Repository, RepositoryOpenFlags, Signature, Tree,
};
use secrecy::{ExposeSecret, SecretString};

mod changes;
mod credentials;

pub use changes::{AddedLine, ChangeSet, ChangeStatus, FileChange};
use credentials::redact_url;
use credentials::{Credentials, scrub};

/// A cloned repository the agent works in.
pub struct Workspace {
    repo: Repository,
    dir: PathBuf,
    clone_url: String,
    base_branch: String,
    base: Oid,
    branch: Option<String>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("dir", &self.dir)
            .field("clone_url", &redact_url(&self.clone_url))
            .field("base_branch", &self.base_branch)
            .field("base", &self.base)
            .field("branch", &self.branch)
            .finish()
    }
}

/// Why a git operation failed. Messages name the repository and never contain the token.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The server refused the token (401/403), or libgit2 kept asking for credentials.
    #[error("authentication failed for {url}: the repository token was refused")]
    Auth {
        /// The clone URL (without credentials).
        url: String,
        /// What git reported.
        #[source]
        source: GitError,
    },
    /// The repository or the branch does not exist (or the token may not see it).
    #[error("not found: {what}")]
    NotFound {
        /// What was missing, e.g. `branch main of https://github.com/acme/api.git`.
        what: String,
        /// What git reported.
        #[source]
        source: GitError,
    },
    /// The server could not be reached or the connection failed; worth retrying.
    #[error("network error talking to {url}")]
    Network {
        /// The clone URL (without credentials).
        url: String,
        /// What git reported.
        #[source]
        source: GitError,
    },
    /// The server refused to update a reference, e.g. a branch protection rule or a
    /// pre-receive hook (GitHub's push protection).
    #[error("the push of {reference} was rejected: {message}")]
    PushRejected {
        /// The reference, e.g. `refs/heads/countersign/run-1`.
        reference: String,
        /// The server's reason, and what the remote printed.
        message: String,
    },
    /// Git was about to send the token somewhere else than the clone URL's host: a
    /// `url.*.insteadOf` rule the coding agent wrote into `.git/config`, or a server asking
    /// for credentials on behalf of another host.
    #[error("{0}")]
    Unsafe(String),
    /// Any other git failure (a corrupt repository, a full disk, an invalid branch name).
    #[error("git failed to {action}: {source}")]
    Git {
        /// What the workspace was doing, e.g. `commit`.
        action: String,
        /// What git reported.
        #[source]
        source: GitError,
    },
}

/// A libgit2 error with the token scrubbed from its message.
#[derive(Debug)]
pub struct GitError {
    message: String,
    code: ErrorCode,
    class: ErrorClass,
}

impl GitError {
    fn scrubbed(e: &git2::Error, token: Option<&SecretString>) -> Self {
        let mut message = e.message().to_owned();
        if let Some(token) = token.map(ExposeSecret::expose_secret)
            && !token.is_empty()
        {
            message = message.replace(token, "***");
        }
        Self {
            message,
            code: e.code(),
            class: e.class(),
        }
    }

    fn plain(e: &git2::Error) -> Self {
        Self::scrubbed(e, None)
    }

    /// libgit2's error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// libgit2's error class.
    pub fn class(&self) -> ErrorClass {
        self.class
    }
}

impl std::fmt::Display for GitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for GitError {}

/// Formats a commit message: the title on one line, the summary after a blank line, and the
/// trailers (`Countersign-Run: ns/run`) one per line after another blank line, so git and
/// GitHub read them as trailers. Line breaks inside the title and trailer values become
/// spaces; an empty summary or no trailers leave their paragraph out.
pub fn commit_message(title: &str, summary: &str, trailers: &[(&str, &str)]) -> String {
    let one_line = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut message = one_line(title);
    let summary = summary.trim();
    if !summary.is_empty() {
        message.push_str("\n\n");
        message.push_str(summary);
    }
    let trailers: Vec<String> = trailers
        .iter()
        .map(|(key, value)| (one_line(key).replace([' ', ':'], "-"), one_line(value)))
        .filter(|(key, value)| !key.is_empty() && !value.is_empty())
        .map(|(key, value)| format!("{key}: {value}"))
        .collect();
    if !trailers.is_empty() {
        message.push_str("\n\n");
        message.push_str(&trailers.join("\n"));
    }
    message.push('\n');
    message
}

impl Workspace {
    /// Clones `base_branch` of `clone_url` into `dir` (which must be missing or empty) and
    /// checks it out. Only that branch is fetched, and over HTTPS only its tip commit
    /// (a shallow clone: the agent needs the files, not the history).
    pub fn clone_repo(
        clone_url: &str,
        token: &SecretString,
        base_branch: &str,
        dir: &Path,
    ) -> Result<Workspace, WorkspaceError> {
        let url = redact_url(clone_url);
        // The name goes into a refspec; a bad one must not become a different refspec.
        branch_ref(base_branch).map_err(|e| git_error("clone", &e))?;
        let auth = Credentials::new(clone_url, token);
        let fetch = fetch_options(&auth, clone_url);
        let refspec = format!("+refs/heads/{base_branch}:refs/remotes/origin/{base_branch}");
        let repo = RepoBuilder::new()
            .branch(base_branch)
            .fetch_options(fetch)
            .remote_create(move |repo, name, url| repo.remote_with_fetch(name, url, &refspec))
            .clone(clone_url, dir)
            .map_err(|e| {
                let what = if e.code() == ErrorCode::NotFound && e.class() == ErrorClass::Reference
                {
                    format!("branch {base_branch} of {url}")
                } else {
                    url.clone()
                };
                auth.classify(&e, "clone", what)
            })?;
        let base = repo
            .head()
            .and_then(|head| head.peel_to_commit())
            .map_err(|e| git_error("read the cloned branch", &e))?
            .id();
        tracing::info!(repository = %url, branch = base_branch, base = %base, "cloned");
        Ok(Workspace {
            repo,
            dir: dir.to_owned(),
            clone_url: clone_url.to_owned(),
            base_branch: base_branch.to_owned(),
            base,
            branch: None,
        })
    }

    /// Also fetches the tip of `branch` (a follow-up's base branch, next to the pull request
    /// branch it checked out): git's push negotiation looks up the tips of every branch the
    /// server has, so the push step needs the base branch's tip as well.
    pub fn fetch_tip(&self, token: &SecretString, branch: &str) -> Result<(), WorkspaceError> {
        let url = redact_url(&self.clone_url);
        branch_ref(branch).map_err(|e| git_error("fetch", &e))?;
        let auth = Credentials::new(&self.clone_url, token);
        let mut fetch = fetch_options(&auth, &self.clone_url);
        let mut remote = self
            .repo
            .remote_anonymous(&self.clone_url)
            .map_err(|e| git_error("fetch", &e))?;
        let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
        remote
            .fetch(&[refspec.as_str()], Some(&mut fetch), None)
            .map_err(|e| auth.classify(&e, "fetch", format!("branch {branch} of {url}")))?;
        Ok(())
    }

    /// Opens the checkout the `clone` step left at `dir` (and nothing above it): the commit
    /// checked out is the base of the change. The push URL is not needed here (the `work`
    /// step never pushes), so none is kept.
    pub fn open(dir: &Path) -> Result<Workspace, WorkspaceError> {
        let repo = Repository::open_ext(
            dir,
            RepositoryOpenFlags::NO_SEARCH,
            std::iter::empty::<&std::ffi::OsStr>(),
        )
        .map_err(|e| git_error("open the checkout", &e))?;
        let head = repo
            .head()
            .map_err(|e| git_error("read the checkout's branch", &e))?;
        let base_branch = head.shorthand().unwrap_or_default().to_owned();
        let base = head
            .peel_to_commit()
            .map_err(|e| git_error("read the checkout's commit", &e))?
            .id();
        drop(head);
        Ok(Workspace {
            repo,
            dir: dir.to_owned(),
            clone_url: String::new(),
            base_branch,
            base,
            branch: None,
        })
    }

    /// The working tree.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The branch the change is based on.
    pub fn base_branch(&self) -> &str {
        &self.base_branch
    }

    /// The commit the change is based on (the base branch's tip when cloned).
    pub fn base_commit(&self) -> String {
        self.base.to_string()
    }

    /// The branch made by [`Workspace::create_branch`], if any.
    pub fn branch(&self) -> Option<&str> {
        self.branch.as_deref()
    }

    /// Creates branch `name` at the base commit and checks it out.
    pub fn create_branch(&mut self, name: &str) -> Result<(), WorkspaceError> {
        let action = format!("create branch {name}");
        let reference = branch_ref(name).map_err(|e| git_error(&action, &e))?;
        let base = self
            .repo
            .find_commit(self.base)
            .map_err(|e| git_error(&action, &e))?;
        // The branch the clone checked out (a follow-up building on a pull request's branch)
        // is taken as it is when it is still at the base.
        let existing = self
            .repo
            .find_branch(name, git2::BranchType::Local)
            .ok()
            .and_then(|b| b.get().target())
            .filter(|target| *target == self.base);
        match existing {
            Some(_) => self.repo.set_head(&reference),
            None => self
                .repo
                .branch(name, &base, false)
                .and_then(|_| self.repo.set_head(&reference)),
        }
        .map_err(|e| git_error(&action, &e))?;
        self.branch = Some(name.to_owned());
        Ok(())
    }

    /// Everything that changed against the base commit: edits, new files that `.gitignore`
    /// does not exclude, deletions and renames, whether the coding agent committed them or
    /// not. It stages the working tree (like `git add --all`), so the result describes
    /// exactly the tree [`Workspace::commit`] commits.
    pub fn changes(&self) -> Result<ChangeSet, WorkspaceError> {
        let stage = |e: git2::Error| git_error("stage the working tree", &e);
        let mut index = self.repo.index().map_err(stage)?;
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .and_then(|()| index.update_all(["*"], None))
            .and_then(|()| index.write())
            .map_err(stage)?;
        let tree_id = index.write_tree().map_err(stage)?;

        let describe = |e: git2::Error| git_error("compare the change with the base", &e);
        let base_tree = self
            .repo
            .find_commit(self.base)
            .and_then(|c| c.tree())
            .map_err(describe)?;
        let tree = self.repo.find_tree(tree_id).map_err(describe)?;
        diff_trees(&self.repo, &base_tree, &tree).map_err(describe)
    }

    /// Commits the tree `changes` describes on the branch, with the base commit as its only
    /// parent (commits the coding agent made itself are folded into it), authored and
    /// committed by `identity`. Returns the commit id.
    pub fn commit(
        &self,
        changes: &ChangeSet,
        identity: &CommitIdentity,
        message: &str,
    ) -> Result<String, WorkspaceError> {
        let fail = |e: git2::Error| git_error("commit", &e);
        let Some(branch) = self.branch.as_deref() else {
            return Err(fail(git2::Error::from_str(
                "no branch was created to commit on",
            )));
        };
        let Some(tree_id) = changes.tree() else {
            return Err(fail(git2::Error::from_str(
                "the change set does not come from this workspace",
            )));
        };
        let tree = Oid::from_str(tree_id)
            .and_then(|id| self.repo.find_tree(id))
            .map_err(fail)?;
        let base = self.repo.find_commit(self.base).map_err(fail)?;
        let signature = Signature::now(&identity.name, &identity.email).map_err(fail)?;
        let commit = self
            .repo
            .commit(None, &signature, &signature, message, &tree, &[&base])
            .map_err(fail)?;
        let reference = branch_ref(branch).map_err(fail)?;
        self.repo
            .reference(&reference, commit, true, "countersign: commit the change")
            .and_then(|_| self.repo.set_head(&reference))
            .map_err(fail)?;
        tracing::info!(%commit, branch, "committed");
        Ok(commit.to_string())
    }
}

/// Everything that differs between `base` and `tree`: edits, additions, deletions and
/// renames, with line counts and added lines, as the guardrails and the secret scan read it.
pub(crate) fn diff_trees(
    repo: &Repository,
    base: &Tree<'_>,
    tree: &Tree<'_>,
) -> Result<ChangeSet, git2::Error> {
    let mut options = DiffOptions::new();
    options.include_typechange(true);
    let mut diff = repo.diff_tree_to_tree(Some(base), Some(tree), Some(&mut options))?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))?;
    let mut files = Vec::with_capacity(diff.deltas().len());
    for i in 0..diff.deltas().len() {
        if let Some(patch) = Patch::from_diff(&diff, i)? {
            files.push(changes::file_change(&patch)?);
        }
    }
    Ok(ChangeSet::from_tree(files, tree.id().to_string()))
}

/// How the workspace fetches from `clone_url`: with `auth`'s credentials, no tags, no
/// redirects, and shallow.
fn fetch_options<'a>(auth: &'a Credentials<'_>, clone_url: &str) -> FetchOptions<'a> {
    let mut fetch = FetchOptions::new();
    fetch
        .remote_callbacks(auth.callbacks())
        .download_tags(git2::AutotagOption::None)
        // A redirect could carry the token to another host; GitHub's clone URLs from the API
        // are current, so none is needed.
        .follow_redirects(RemoteRedirect::None);
    if !is_local(clone_url) {
        // libgit2's local transport cannot do shallow fetches; file:// clones are for tests
        // and small fixtures.
        fetch.depth(1);
    }
    fetch
}

/// Pushes `refs/heads/<branch>` of `repo` to `url` (replacing the remote branch if it
/// exists and `force`, else only as a fast-forward) with `token`, sent only to `url`'s host. Refuses when `repo`'s configuration
/// would send the push anywhere else (`url.*.insteadOf`).
pub(crate) fn push_branch(
    repo: &Repository,
    url: &str,
    branch: &str,
    token: &SecretString,
    force: bool,
) -> Result<(), WorkspaceError> {
    let clean_url = redact_url(url);
    let reference = branch_ref(branch).map_err(|e| git_error("push", &e))?;
    // An anonymous remote of the URL given, never a configured remote. libgit2 still applies
    // `insteadOf` rules from the configuration, so check that the URL it will use is ours.
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| git_error("push", &e))?;
    let push_url = remote
        .pushurl()
        .ok()
        .flatten()
        .unwrap_or(remote.url().unwrap_or(""));
    if push_url != url {
        return Err(WorkspaceError::Unsafe(format!(
            "refusing to push: the git configuration rewrites {clean_url} to {} \
             (url.*.insteadOf)",
            redact_url(push_url)
        )));
    }

    let auth = Credentials::new(url, token);
    let rejected = RefCell::new(Vec::<(String, String)>::new());
    let remote_said = RefCell::new(String::new());
    let mut callbacks = auth.callbacks();
    callbacks
        .push_update_reference(|name, status| {
            if let Some(status) = status {
                rejected
                    .borrow_mut()
                    .push((name.to_owned(), status.to_owned()));
            }
            Ok(())
        })
        .sideband_progress(|text| {
            let mut said = remote_said.borrow_mut();
            if said.len() < 4096 {
                said.push_str(&String::from_utf8_lossy(text));
            }
            true
        });
    let mut options = PushOptions::new();
    options
        .remote_callbacks(callbacks)
        .follow_redirects(RemoteRedirect::None);
    // Forced for a run's own branch: a retried attempt starts again from the base and must
    // replace what an earlier attempt pushed. A follow-up adds to a pull request's branch
    // and never replaces what is there.
    let plus = if force { "+" } else { "" };
    remote
        .push(
            &[format!("{plus}{reference}:{reference}")],
            Some(&mut options),
        )
        .map_err(|e| auth.classify(&e, "push", clean_url.clone()))?;
    drop(options);

    if let Some((reference, status)) = rejected.into_inner().into_iter().next() {
        let said = scrub(remote_said.into_inner().trim(), token);
        let message = if said.is_empty() {
            status
        } else {
            format!("{status}\n{said}")
        };
        return Err(WorkspaceError::PushRejected { reference, message });
    }
    tracing::info!(repository = %clean_url, branch, "pushed");
    Ok(())
}

pub(crate) fn git_error(action: &str, e: &git2::Error) -> WorkspaceError {
    WorkspaceError::Git {
        action: action.to_owned(),
        source: GitError::plain(e),
    }
}

/// `refs/heads/<name>`, if that is a valid reference name.
pub(crate) fn branch_ref(name: &str) -> Result<String, git2::Error> {
    let reference = format!("refs/heads/{name}");
    if git2::Reference::is_valid_name(&reference) {
        Ok(reference)
    } else {
        Err(git2::Error::from_str(&format!(
            "{name:?} is not a valid branch name"
        )))
    }
}

/// Whether libgit2 will use its local transport (which cannot do shallow fetches).
fn is_local(url: &str) -> bool {
    url.starts_with("file://") || !url.contains("://")
}
