//! Reading a pull request's change with git when GitHub's file listing stops short (it lists
//! at most 3000 files): fetch the pull request's head (`refs/pull/{n}/head`, which GitHub
//! keeps in the base repository, forks included) and its base branch over HTTPS with a
//! read-only installation token, and diff the head against the merge base as GitHub does
//! (renames found, both names kept).
//!
//! Blocking git work runs on the blocking pool in a temporary bare repository that is
//! deleted afterwards; a deadline cancels the transfer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use git2::{Delta, DiffFindOptions, FetchOptions, RemoteCallbacks, Repository};
use secrecy::{ExposeSecret, SecretString};

use crate::GitHubError;
use crate::installation::InstallationClient;
use crate::pulls::PullFile;

/// Why the change could not be read with git.
#[derive(Debug, thiserror::Error)]
pub enum GitReadError {
    /// No read token could be minted.
    #[error("cannot get a read token: {0}")]
    Token(#[source] GitHubError),
    /// Fetching or diffing failed.
    #[error("git: {0}")]
    Git(String),
    /// It took longer than allowed.
    #[error("reading the change with git took longer than {0:?}")]
    Timeout(Duration),
}

/// Where and how to read.
#[derive(Clone, Debug)]
pub struct GitSource {
    /// The git host, e.g. `https://github.com` (repositories at `{url}/{owner}/{repo}.git`).
    pub git_url: String,
    /// The longest a read may take.
    pub timeout: Duration,
}

impl InstallationClient {
    /// A token that can only read `repo`'s contents, for git.
    pub async fn read_token(&self, repo: &str) -> Result<SecretString, GitHubError> {
        let (token, _) = self
            .app
            .mint_installation_token(
                self.id,
                &[repo],
                &[("contents", "read"), ("metadata", "read")],
            )
            .await?;
        Ok(token)
    }

    /// Every changed file of pull request `number` (into `base_branch`), read with git.
    pub async fn pull_request_files_with_git(
        &self,
        source: &GitSource,
        owner: &str,
        repo: &str,
        number: u64,
        base_branch: &str,
    ) -> Result<Vec<PullFile>, GitReadError> {
        let token = self.read_token(repo).await.map_err(GitReadError::Token)?;
        let url = format!(
            "{}/{}/{}.git",
            source.git_url.trim_end_matches('/'),
            owner,
            repo
        );
        let base = base_branch.to_owned();
        let deadline = source.timeout;
        let cancelled = Arc::new(AtomicBool::new(false));
        let flag = cancelled.clone();
        let work =
            tokio::task::spawn_blocking(move || read(&url, &token, number, &base, deadline, &flag));
        match tokio::time::timeout(deadline, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(GitReadError::Git(format!("the git task failed: {join}"))),
            Err(_) => {
                cancelled.store(true, Ordering::Relaxed);
                Err(GitReadError::Timeout(deadline))
            }
        }
    }
}

fn read(
    url: &str,
    token: &SecretString,
    number: u64,
    base: &str,
    timeout: Duration,
    cancelled: &AtomicBool,
) -> Result<Vec<PullFile>, GitReadError> {
    let git = |e: git2::Error| GitReadError::Git(e.message().to_owned());
    let dir = tempfile::Builder::new()
        .prefix("countersign-pr-")
        .tempdir()
        .map_err(|e| GitReadError::Git(format!("cannot create a temporary directory: {e}")))?;
    let repo = Repository::init_bare(dir.path()).map_err(git)?;
    let started = Instant::now();
    let mut callbacks = RemoteCallbacks::new();
    let password = token.expose_secret().to_owned();
    callbacks
        .credentials(move |_, _, _| git2::Cred::userpass_plaintext("x-access-token", &password));
    callbacks
        .transfer_progress(|_| !cancelled.load(Ordering::Relaxed) && started.elapsed() < timeout);
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks);
    let mut remote = repo.remote_anonymous(url).map_err(git)?;
    let refspecs = [
        format!("+refs/pull/{number}/head:refs/countersign/head"),
        format!("+refs/heads/{base}:refs/countersign/base"),
    ];
    remote
        .fetch(&refspecs, Some(&mut options), None)
        .map_err(git)?;
    let commit = |name: &str| {
        repo.find_reference(name)
            .and_then(|r| r.peel_to_commit())
            .map_err(git)
    };
    let head = commit("refs/countersign/head")?;
    let base = commit("refs/countersign/base")?;
    let merge_base = repo.merge_base(base.id(), head.id()).map_err(git)?;
    let old = repo
        .find_commit(merge_base)
        .and_then(|c| c.tree())
        .map_err(git)?;
    let new = head.tree().map_err(git)?;
    let mut diff = repo
        .diff_tree_to_tree(Some(&old), Some(&new), None)
        .map_err(git)?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))
        .map_err(git)?;
    let mut files = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        let path = |f: git2::DiffFile<'_>| {
            f.path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let (status, previous) = match delta.status() {
            Delta::Added => ("added", None),
            Delta::Deleted => ("removed", None),
            Delta::Renamed => ("renamed", Some(path(delta.old_file()))),
            Delta::Copied => ("copied", Some(path(delta.old_file()))),
            Delta::Typechange => ("changed", None),
            _ => ("modified", None),
        };
        let deleted = delta.status() == Delta::Deleted;
        let (additions, deletions, patch) = match git2::Patch::from_diff(&diff, i).map_err(git)? {
            Some(mut patch) => {
                let (_, added, removed) = patch.line_stats().map_err(git)?;
                let text = patch.to_buf().map_err(git)?;
                (added, removed, hunks_only(&String::from_utf8_lossy(&text)))
            }
            None => (0, 0, None),
        };
        let binary = delta.new_file().is_binary() || delta.old_file().is_binary();
        files.push(PullFile {
            path: if deleted {
                path(delta.old_file())
            } else {
                path(delta.new_file())
            },
            previous_path: previous,
            additions: u32::try_from(additions).unwrap_or(u32::MAX),
            deletions: u32::try_from(deletions).unwrap_or(u32::MAX),
            status: status.to_owned(),
            sha: Some(
                if deleted {
                    delta.old_file().id()
                } else {
                    delta.new_file().id()
                }
                .to_string(),
            ),
            patch: patch.filter(|_| !binary),
        });
    }
    Ok(files)
}

/// A patch as GitHub's `patch` field shows it: from the first hunk on.
fn hunks_only(text: &str) -> Option<String> {
    let start = if text.starts_with("@@") {
        0
    } else {
        text.find("\n@@")? + 1
    };
    Some(text[start..].trim_end_matches('\n').to_owned())
}
