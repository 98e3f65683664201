//! `GET /repos/{owner}/{repo}/compare/{base}...{head}`: what changed between a base and a
//! head, as GitHub answers it: the merge base, the commits `merge-base..head` oldest first
//! (250 without pagination; `per_page`/`page` page through all of them with `Link`
//! headers), and the changed files with their blob SHAs and patches (on the first page
//! only, at most 300).
//!
//! Hosted git repositories are read with git; synthetic pull requests (opened with
//! [`World::open_pull_request`](super::World::open_pull_request)) answer from their commit
//! chain and the files recorded for each head.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::git::compare;
use super::pulls::{ChangedFile, Commit, paginate_with};
use super::server::{Page, Shared, World, error, lock, repository_json, require_repo, with_etag};

/// Most commits the compare API answers without pagination.
pub const MAX_COMPARED_COMMITS: usize = 250;
/// Most files the compare API lists for one comparison.
pub const MAX_COMPARED_FILES: usize = 300;

/// What one comparison found.
struct Compared {
    base: Commit,
    merge_base: Commit,
    commits: Vec<Commit>,
    files: Vec<ChangedFile>,
}

pub(super) async fn compare_commits(
    State(world): State<Shared>,
    Path((owner, repo, basehead)): Path<(String, String, String)>,
    Query(page): Query<Page>,
    headers: HeaderMap,
) -> Response {
    let repository = format!("{owner}/{repo}");
    let Some((base, head)) = basehead.split_once("...") else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let (base, head) = (base.to_owned(), head.to_owned());
    let dir = {
        let w = lock(&world);
        if let Err(r) = require_repo(&w, &headers, &owner, &repo, "contents", false) {
            return r.into_response();
        }
        w.repository_path(&repository)
    };
    let compared = match dir {
        Some(dir) => {
            let (b, h) = (base.clone(), head.clone());
            let read = tokio::task::spawn_blocking(move || compare(&dir, &b, &h)).await;
            match read {
                Ok(Ok(cmp)) => {
                    let mut w = lock(&world);
                    let commits = cmp
                        .commits
                        .into_iter()
                        .map(|raw| w.remember_commit(&repository, raw))
                        .collect();
                    Some(Compared {
                        base: w.remember_commit(&repository, cmp.base),
                        merge_base: w.remember_commit(&repository, cmp.merge_base),
                        commits,
                        files: cmp.files,
                    })
                }
                _ => None,
            }
        }
        None => lock(&world).compare_synthetic(&repository, &base, &head),
    };
    let Some(compared) = compared else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    let w = lock(&world);
    let paged = page.page.is_some() || page.per_page.is_some();
    let mut commits: Vec<Value> = compared
        .commits
        .iter()
        .map(|c| c.json(&repository))
        .collect();
    commits.iter_mut().for_each(|v| w.scrub_deleted(v));
    if !paged {
        commits.truncate(MAX_COMPARED_COMMITS);
    }
    let first_page = page.page.unwrap_or(1) <= 1;
    let files: Vec<Value> = if first_page {
        compared
            .files
            .iter()
            .take(MAX_COMPARED_FILES)
            .map(|f| f.json(&repository))
            .collect()
    } else {
        Vec::new()
    };
    let total = compared.commits.len();
    let base_json = compared.base.json(&repository);
    let merge_base_json = compared.merge_base.json(&repository);
    let path = format!("/repos/{owner}/{repo}/compare/{basehead}");
    let body = |chunk: Vec<Value>| {
        json!({
            "url": format!("https://api.github.com/repos/{repository}/compare/{basehead}"),
            "html_url": format!("https://github.com/{repository}/compare/{basehead}"),
            "status": if total == 0 { "identical" } else { "ahead" },
            "ahead_by": total,
            "behind_by": 0,
            "total_commits": total,
            "base_commit": base_json,
            "merge_base_commit": merge_base_json,
            "commits": chunk,
            "files": files,
            "repository": repository_json(&repository),
        })
    };
    if paged {
        paginate_with(&headers, &path, &commits, &page, body)
    } else {
        with_etag(&headers, &body(commits))
    }
}

impl World {
    /// A revision of a synthetic repository: a known commit SHA, a pull request's head
    /// branch, or a pull request's base branch.
    fn resolve_synthetic(&self, repository: &str, rev: &str) -> Option<String> {
        if self
            .commits
            .contains_key(&(repository.to_owned(), rev.to_ascii_lowercase()))
        {
            return Some(rev.to_ascii_lowercase());
        }
        let pulls = self.pulls.iter().filter(|((r, _), _)| r == repository);
        for (_, pr) in pulls {
            if pr.head_branch == rev {
                return Some(pr.head_sha.clone());
            }
            if pr.base_branch == rev {
                return Some(pr.base_sha.clone());
            }
        }
        None
    }

    /// The commit and its ancestors, newest first (following first parents).
    fn ancestry(&self, repository: &str, sha: &str) -> Vec<Commit> {
        let mut chain = Vec::new();
        let mut next = Some(sha.to_owned());
        while let Some(sha) = next.take() {
            let Some(c) = self.commits.get(&(repository.to_owned(), sha)) else {
                break;
            };
            next.clone_from(&c.parent);
            chain.push(c.clone());
            if chain.len() > 100_000 {
                break;
            }
        }
        chain
    }

    fn compare_synthetic(&self, repository: &str, base: &str, head: &str) -> Option<Compared> {
        let base = self.resolve_synthetic(repository, base)?;
        let head = self.resolve_synthetic(repository, head)?;
        let base_chain = self.ancestry(repository, &base);
        let head_chain = self.ancestry(repository, &head);
        let in_base: std::collections::HashSet<&str> =
            base_chain.iter().map(|c| c.sha.as_str()).collect();
        let split = head_chain
            .iter()
            .position(|c| in_base.contains(c.sha.as_str()))?;
        let merge_base = head_chain[split].clone();
        let mut commits: Vec<Commit> = head_chain[..split].to_vec();
        commits.reverse();
        let files = self
            .head_files
            .get(&(repository.to_owned(), head))
            .cloned()
            .unwrap_or_default();
        Some(Compared {
            base: base_chain.first()?.clone(),
            merge_base,
            commits,
            files,
        })
    }
}
