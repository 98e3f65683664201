//! Reading a pull request from GitHub for one evaluation, completely or not at all:
//!
//! - the changed files: GitHub lists at most 3000, so when the pull request says it changes
//!   more, the change is read with git (`refs/pull/{n}/head` against the base); when that
//!   fails too, the change is marked incomplete and the policy fails closed at the highest
//!   level, with the reason;
//! - the commits: the pull request listing stops at 250, so beyond that the compare API is
//!   paged (every author and committer must be known: they cannot approve);
//! - the change's fingerprint at the head, and at every older head an approval was given on
//!   (the status remembers the ones it saw; others are read with the compare API).

use std::collections::BTreeMap;

use countersign_crds::approval_gate::HeadChange;
use countersign_github::git_read::GitSource;
use countersign_github::{
    CommentInfo, GitHubError, InstallationClient, PullCommit, PullFile, PullInfo, ReviewInfo,
    change_id,
};

use super::Failure;
use super::facts;
use crate::context::Context;

/// Most older heads whose change is read from GitHub per evaluation (the rest count as a
/// different change until a later evaluation reads them).
const MAX_CHANGE_LOOKUPS: usize = 10;
/// Most heads whose change fingerprint the status remembers.
pub const MAX_REMEMBERED_CHANGES: usize = 50;

/// Everything read about the pull request.
pub(super) struct PullRead {
    pub pr: PullInfo,
    pub files: Vec<PullFile>,
    /// Why `files` is not the whole change, when it is not.
    pub incomplete: Option<String>,
    /// The fingerprint of the change at the head (`None` when incomplete).
    pub change_id: Option<String>,
    pub commits: Vec<PullCommit>,
    pub reviews: Vec<ReviewInfo>,
    pub issue_comments: Vec<CommentInfo>,
    pub review_comments: Vec<CommentInfo>,
}

/// Attempts at reading a pull request that keeps moving while it is read.
const READ_ATTEMPTS: usize = 3;

/// Reads the pull request `owner/repo#number` (already fetched as `pr`) completely, as one
/// snapshot: when its head moved while the rest was read (a push in between), everything is
/// read again, so files, commits and the change fingerprint always belong to the head they
/// are recorded for. `None` when it kept moving.
pub(super) async fn read_pull(
    ctx: &Context,
    github: &InstallationClient,
    repo: (&str, &str),
    mut pr: PullInfo,
) -> Result<Option<PullRead>, Failure> {
    for _ in 0..READ_ATTEMPTS {
        let read = read_once(ctx, github, repo, pr).await?;
        let again = github.pull_request(repo.0, repo.1, read.pr.number).await?;
        if again.head_sha == read.pr.head_sha && again.base_sha == read.pr.base_sha {
            return Ok(Some(read));
        }
        tracing::debug!(
            from = %read.pr.head_sha,
            to = %again.head_sha,
            "the pull request moved while it was read; reading it again"
        );
        pr = again;
    }
    Ok(None)
}

async fn read_once(
    ctx: &Context,
    github: &InstallationClient,
    (owner, repo): (&str, &str),
    pr: PullInfo,
) -> Result<PullRead, Failure> {
    let number = pr.number;
    let (listed, listed_commits, reviews, issue_comments, review_comments) = tokio::try_join!(
        github.pull_request_files(owner, repo, number),
        github.pull_request_commits(owner, repo, number),
        github.pull_request_reviews(owner, repo, number),
        github.issue_comments(owner, repo, number),
        github.review_comments(owner, repo, number),
    )?;
    let (files, incomplete) = match facts::listing_gap(&pr, listed.len()) {
        None => (listed, None),
        Some(gap) => {
            let source = GitSource {
                git_url: ctx.settings.git_url.clone(),
                timeout: ctx.settings.git_read_timeout,
            };
            match github
                .pull_request_files_with_git(&source, owner, repo, number, &pr.base_ref)
                .await
            {
                Ok(files) => {
                    tracing::info!(files = files.len(), "{gap}; read the change with git");
                    (files, None)
                }
                Err(error) => {
                    tracing::warn!(%error, "{gap}, and git could not read the change");
                    let why = format!("{gap}, and reading the change with git failed: {error}");
                    (listed, Some(why))
                }
            }
        }
    };
    let change_id = if incomplete.is_some() {
        None
    } else {
        change_id(&files)
    };
    let listed_count = u64::try_from(listed_commits.len()).unwrap_or(u64::MAX);
    let commits = match pr.commits {
        Some(total) if total > listed_count => {
            // Past GitHub's 250-commit listing: page through the compare API.
            let all = github
                .compare_commits(owner, repo, &pr.base_sha, &pr.head_sha)
                .await?;
            if (all.len() as u64) < total {
                tracing::warn!(
                    listed = all.len(),
                    total,
                    "GitHub did not list every commit of the pull request"
                );
            }
            all
        }
        _ => listed_commits,
    };
    Ok(PullRead {
        pr,
        files,
        incomplete,
        change_id,
        commits,
        reviews,
        issue_comments,
        review_comments,
    })
}

/// The change fingerprint of every head in `wanted` that can be known: remembered in
/// `previous`, the current head's, or read with the compare API (at most
/// [`MAX_CHANGE_LOOKUPS`] reads). Also the list the status remembers, newest last.
pub(super) async fn change_ids<'a>(
    github: &InstallationClient,
    (owner, repo): (&str, &str),
    base: &str,
    previous: &[HeadChange],
    head: (&str, Option<&str>),
    wanted: impl Iterator<Item = &'a str>,
) -> Result<(BTreeMap<String, String>, Vec<HeadChange>), GitHubError> {
    let mut known: Vec<HeadChange> = previous.to_vec();
    let (head_sha, head_change) = head;
    if let Some(id) = head_change {
        known.retain(|c| c.sha != head_sha);
        known.push(HeadChange {
            sha: head_sha.to_owned(),
            change_id: id.to_owned(),
        });
    }
    let mut lookups = 0;
    let mut seen = std::collections::BTreeSet::new();
    for sha in wanted {
        if !seen.insert(sha.to_owned()) || known.iter().any(|c| c.sha == sha) {
            continue;
        }
        if lookups >= MAX_CHANGE_LOOKUPS || !is_sha(sha) {
            continue;
        }
        lookups += 1;
        let Some(comparison) = github.compare(owner, repo, base, sha).await? else {
            continue;
        };
        if comparison.files_truncated() {
            continue;
        }
        if let Some(id) = change_id(&comparison.files) {
            // Older heads go first: the current head stays the newest entry.
            known.insert(
                known.len().saturating_sub(1),
                HeadChange {
                    sha: sha.to_owned(),
                    change_id: id,
                },
            );
        }
    }
    if known.len() > MAX_REMEMBERED_CHANGES {
        known.drain(..known.len() - MAX_REMEMBERED_CHANGES);
    }
    let map = known
        .iter()
        .map(|c| (c.sha.clone(), c.change_id.clone()))
        .collect();
    Ok((map, known))
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}
