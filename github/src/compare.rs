//! Comparing two commits (`GET /repos/{o}/{r}/compare/{base}...{head}`): the merge base, the
//! changed files with their diffs, and every commit between them. The gate reads a pull
//! request's change through it where the pull request endpoints stop: at an older head (to
//! compare its change with the current one), and past the 250 commits
//! `GET …/pulls/{n}/commits` lists.

use serde::Deserialize;

use crate::GitHubError;
use crate::commits::{PullCommit, WireCommit};
use crate::installation::{InstallationClient, repo_path, seg};
use crate::pulls::{PullFile, WireFile, files_of};

/// Most files the compare API lists for one comparison; a comparison listing this many may
/// have more.
pub const MAX_COMPARED_FILES: usize = 300;

/// What changed between a base and a head.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// The merge base of the two.
    pub merge_base_sha: String,
    /// The changed files (at most [`MAX_COMPARED_FILES`]).
    pub files: Vec<PullFile>,
    /// Commits between the merge base and the head.
    pub total_commits: u64,
}

impl Comparison {
    /// Whether `files` may be missing some (GitHub lists at most 300).
    pub fn files_truncated(&self) -> bool {
        self.files.len() >= MAX_COMPARED_FILES
    }
}

#[derive(Deserialize)]
struct WireSha {
    sha: String,
}

#[derive(Deserialize)]
struct WireComparison {
    merge_base_commit: WireSha,
    #[serde(default)]
    files: Vec<WireFile>,
    #[serde(default)]
    total_commits: u64,
}

#[derive(Deserialize)]
struct WireCommitPage {
    #[serde(default)]
    commits: Vec<WireCommit>,
}

fn basehead(owner: &str, repo: &str, base: &str, head: &str) -> String {
    format!(
        "{}/compare/{}...{}",
        repo_path(owner, repo),
        seg(base),
        seg(head)
    )
}

impl InstallationClient {
    /// Compares `base...head` (the merge base of the two with `head`): the merge base, the
    /// files (at most 300) and the commit count. `None` when GitHub does not know one of the
    /// revisions (404).
    pub async fn compare(
        &self,
        owner: &str,
        repo: &str,
        base: &str,
        head: &str,
    ) -> Result<Option<Comparison>, GitHubError> {
        let path = basehead(owner, repo, base, head);
        match self.send(http::Method::GET, &path, None).await {
            Ok(answer) => {
                let wire: WireComparison = answer.json("comparison")?;
                Ok(Some(Comparison {
                    merge_base_sha: wire.merge_base_commit.sha,
                    files: files_of(wire.files),
                    total_commits: wire.total_commits,
                }))
            }
            Err(GitHubError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every commit of `base...head`, oldest first, paging through the compare API (which,
    /// unlike the pull request's commit listing, has no 250-commit cap).
    pub async fn compare_commits(
        &self,
        owner: &str,
        repo: &str,
        base: &str,
        head: &str,
    ) -> Result<Vec<PullCommit>, GitHubError> {
        let path = basehead(owner, repo, base, head);
        self.get_all_pages(&path, "compared commits", |page: WireCommitPage| {
            page.commits.into_iter().map(PullCommit::from).collect()
        })
        .await
    }
}
