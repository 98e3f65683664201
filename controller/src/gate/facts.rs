//! Turns what GitHub said about a pull request into the inputs of the risk engine (a
//! [`Change`]) and of the approval rules (the [`Signal`]s of reviews and comment commands).
//! Pure: the async shell fetches, these functions interpret.

use std::collections::{BTreeMap, BTreeSet};

use countersign_crds::approval_gate::{ApprovalRecord, ApprovalVia, InvalidReason};
use countersign_crds::{ApprovalGate, GitHubUser, Project};
use countersign_github::{
    Actor, CommentInfo, PullCommit, PullFile, PullInfo, ReviewInfo, ReviewState,
};
use countersign_policies::approvals::{Signal, SignalKind};
use countersign_policies::commands::{self, Command, Parsed};
use countersign_policies::{AuthorKind, Change};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// The most commands read from one comment (the bot's limit too).
const MAX_COMMANDS_PER_COMMENT: usize = countersign_policies::commands::MAX_COMMANDS_PER_COMMENT;

/// A GitHub account as the CRDs record it.
pub fn user_of(actor: &Actor) -> GitHubUser {
    GitHubUser {
        login: actor.login.clone(),
        id: Some(actor.id),
    }
}

/// The change the RiskPolicy scores: every file (renames count under both names, so moving
/// a file out of `migrations/` is still a migration change), labels, author kind, base
/// branch, and the Project's GitOps paths.
pub fn change_of(
    gate: &ApprovalGate,
    project: &Project,
    pr: &PullInfo,
    files: &[PullFile],
) -> Change {
    let author_kind = if gate.spec.ai_generated {
        AuthorKind::Ai
    } else if pr.author.is_bot {
        AuthorKind::Bot
    } else {
        AuthorKind::Human
    };
    let mut change = Change::default()
        .with_author_kind(author_kind)
        .with_base_branch(pr.base_ref.clone());
    for f in files {
        change = change.with_file(f.path.clone(), f.additions, f.deletions);
        if let Some(previous) = &f.previous_path
            && previous != &f.path
        {
            change = change.with_file(previous.clone(), 0, 0);
        }
    }
    for label in &pr.labels {
        change = change.with_label(label.clone());
    }
    if let Some(gitops) = &project.spec.gitops {
        for path in &gitops.paths {
            change = change.with_gitops_path(path.clone());
        }
    }
    change
}

/// Everyone who authored or committed a commit of the pull request.
pub fn committers_of(commits: &[PullCommit]) -> Vec<GitHubUser> {
    let mut seen = BTreeSet::new();
    commits
        .iter()
        .flat_map(|c| [c.author.as_ref(), c.committer.as_ref()])
        .flatten()
        .filter(|a| seen.insert(a.id))
        .map(user_of)
        .collect()
}

/// Tree of each commit of the pull request.
pub fn trees_of(commits: &[PullCommit]) -> BTreeMap<String, String> {
    commits
        .iter()
        .map(|c| (c.sha.clone(), c.tree_sha.clone()))
        .collect()
}

/// Approving and changes-requested reviews. Commented, pending and dismissed reviews decide
/// nothing (a dismissed review's state is `DISMISSED` on GitHub).
pub fn review_signals(reviews: &[ReviewInfo], head_sha: &str, now: Timestamp) -> Vec<Signal> {
    reviews
        .iter()
        .filter_map(|r| {
            let kind = match r.state {
                ReviewState::Approved => SignalKind::Approve,
                ReviewState::ChangesRequested => SignalKind::Reject,
                _ => return None,
            };
            let user = r.user.as_ref()?;
            Some(Signal {
                user: user_of(user),
                kind,
                via: ApprovalVia::Review,
                sha: r.commit_id.clone().unwrap_or_else(|| head_sha.to_owned()),
                time: r.submitted_at.unwrap_or(now),
                tampered: false,
            })
        })
        .collect()
}

/// What the comment-command signals need besides the comments.
pub struct CommentContext<'a> {
    /// The bot's own login (its comments never command anything).
    pub bot_login: &'a str,
    /// The current head.
    pub head_sha: &'a str,
    /// The pull request's commits, oldest first.
    pub commits: &'a [PullCommit],
    /// Decisions recorded by the previous evaluation (their SHA is kept).
    pub previous: &'a [ApprovalRecord],
    /// Comments edited by someone other than their author.
    pub tampered: &'a BTreeSet<u64>,
}

/// `/approve`, `/reject`, `/hold` and `/unhold` in comments, parsed as Markdown exactly as the
/// bot parses them (never in code, quotes or HTML).
///
/// A comment approves the head it was written on. The first evaluation after the comment
/// records that head; later evaluations keep it, so a later push makes the approval stale.
/// When the first evaluation comes after a push (a lost webhook), the comment is attributed
/// to the newest commit committed before it, not to the new head.
pub fn comment_signals(comments: &[CommentInfo], cx: &CommentContext<'_>) -> Vec<Signal> {
    let mut out = Vec::new();
    for c in comments {
        let Some(author) = &c.user else { continue };
        if author.login.eq_ignore_ascii_case(cx.bot_login) {
            continue;
        }
        let user = user_of(author);
        let parsed = commands::parse_comment(&c.body);
        for p in parsed.into_iter().take(MAX_COMMANDS_PER_COMMENT) {
            let kind = match p {
                Parsed::Command(Command::Approve) => SignalKind::Approve,
                Parsed::Command(Command::Reject { .. }) => SignalKind::Reject,
                Parsed::Command(Command::Hold) => SignalKind::Hold,
                Parsed::Command(Command::Unhold) => SignalKind::Unhold,
                _ => continue,
            };
            let recorded = recorded(cx.previous, &user, c.created_at);
            let sha = recorded
                .map(|r| r.sha.clone())
                .unwrap_or_else(|| sha_at(cx.commits, cx.head_sha, c.created_at));
            // A command first seen in a comment that was edited after it was written may
            // have been put there by someone else before the edit's webhook (which names
            // the editor) arrives: it never counts. Commands recorded before the edit keep
            // their standing unless the bot reported the edit as someone else's.
            let edited = c.updated_at > c.created_at;
            let unverified = edited
                && recorded.is_none_or(|r| r.invalid_reason == Some(InvalidReason::Tampered));
            out.push(Signal {
                user: user.clone(),
                kind,
                via: ApprovalVia::Comment,
                sha,
                time: c.created_at,
                tampered: cx.tampered.contains(&c.id) || unverified,
            });
        }
    }
    out
}

fn recorded<'a>(
    previous: &'a [ApprovalRecord],
    user: &GitHubUser,
    time: Timestamp,
) -> Option<&'a ApprovalRecord> {
    previous.iter().find(|r| {
        r.via == ApprovalVia::Comment
            && r.time.0 == time
            && countersign_policies::approvals::same_person(&r.user, user)
    })
}

fn sha_at(commits: &[PullCommit], head_sha: &str, time: Timestamp) -> String {
    let head_time = commits
        .iter()
        .find(|c| c.sha == head_sha)
        .and_then(|c| c.committed_at);
    match head_time {
        Some(t) if t > time => commits
            .iter()
            .filter(|c| c.committed_at.is_some_and(|ct| ct <= time))
            .max_by_key(|c| c.committed_at)
            .map_or_else(|| head_sha.to_owned(), |c| c.sha.clone()),
        _ => head_sha.to_owned(),
    }
}

/// Comment ids recorded as tampered by the bot (annotation, comma-separated).
pub fn tampered_ids(gate: &ApprovalGate) -> BTreeSet<u64> {
    countersign_crds::keys::tampered_comment_ids(gate.annotations())
}

#[cfg(test)]
mod tests;
