//! Turns what GitHub said about a pull request into the inputs of the risk engine (a
//! [`Change`]) and of the approval rules (the [`Signal`]s of reviews and of commands in
//! issue comments, inline review comments and review bodies). Pure: the async shell fetches,
//! these functions interpret.
//!
//! Every command is bound to a head commit nobody can forge: a review and the commands in
//! its body to the review's `commit_id`, an inline review comment to its
//! `original_commit_id` (both recorded by GitHub), an issue comment to the head the bot saw
//! when it received the comment (the gate's `countersign.dev/command-heads` annotation) or,
//! once recorded, the head in the gate's status. A comment with neither counts for no head.

use std::collections::{BTreeMap, BTreeSet};

use countersign_crds::approval_gate::{ApprovalRecord, ApprovalVia, Decision, InvalidReason};
use countersign_crds::keys::CommentRef;
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
/// branch, the Project's GitOps paths, and why the file list is incomplete when it is.
pub fn change_of(
    gate: &ApprovalGate,
    project: &Project,
    pr: &PullInfo,
    files: &[PullFile],
    incomplete: Option<String>,
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
    if let Some(why) = incomplete {
        change = change.incomplete_because(why);
    }
    change
}

/// Why GitHub's file listing does not hold the whole change, if it does not: it listed
/// fewer files than the pull request says it changes.
pub fn listing_gap(pr: &PullInfo, listed: usize) -> Option<String> {
    let total = pr.changed_files?;
    (u64::try_from(listed).unwrap_or(u64::MAX) < total)
        .then(|| format!("GitHub listed {listed} of the {total} changed files"))
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

/// What the signals need besides GitHub's answers.
pub struct SignalContext<'a> {
    /// The bot's own login (its comments never command anything).
    pub bot_login: &'a str,
    /// The current head, for reviews GitHub gives no commit for.
    pub head_sha: &'a str,
    /// Decisions recorded by the previous evaluation (their head is kept).
    pub previous: &'a [ApprovalRecord],
    /// Comments, review comments and review bodies edited by someone other than their
    /// author.
    pub tampered: &'a BTreeSet<CommentRef>,
    /// The head each issue comment was received at, by comment id.
    pub heads: &'a BTreeMap<u64, String>,
    /// The digest of each review body with commands, as the bot received it, by review id.
    pub review_bodies: &'a BTreeMap<u64, String>,
    /// The time now, for reviews without a submission time.
    pub now: Timestamp,
}

/// The decision commands of a comment, parsed as Markdown exactly as the bot parses them
/// (never in code, quotes or HTML).
fn decisions_in(body: &str) -> Vec<SignalKind> {
    commands::parse_comment(body)
        .into_iter()
        .take(MAX_COMMANDS_PER_COMMENT)
        .filter_map(|p| match p {
            Parsed::Command(Command::Approve) => Some(SignalKind::Approve),
            Parsed::Command(Command::Reject { .. }) => Some(SignalKind::Reject),
            Parsed::Command(Command::Hold) => Some(SignalKind::Hold),
            Parsed::Command(Command::Unhold) => Some(SignalKind::Unhold),
            _ => None,
        })
        .collect()
}

/// Approving and changes-requested reviews, and the commands in every review's body.
/// Commented, pending and dismissed reviews decide nothing by their state (a dismissed
/// review's state is `DISMISSED` on GitHub). A review whose body someone else edited counts
/// for nothing.
pub fn review_signals(reviews: &[ReviewInfo], cx: &SignalContext<'_>) -> Vec<Signal> {
    let mut out = Vec::new();
    for r in reviews {
        let Some(user) = r.user.as_ref() else {
            continue;
        };
        if user.login.eq_ignore_ascii_case(cx.bot_login) {
            continue;
        }
        let sha = Some(
            r.commit_id
                .clone()
                .unwrap_or_else(|| cx.head_sha.to_owned()),
        );
        let time = r.submitted_at.unwrap_or(cx.now);
        let tampered = cx.tampered.contains(&CommentRef::review(r.id));
        let kind = match r.state {
            ReviewState::Approved => Some(SignalKind::Approve),
            ReviewState::ChangesRequested => Some(SignalKind::Reject),
            _ => None,
        };
        out.extend(kind.map(|kind| Signal {
            user: user_of(user),
            kind,
            via: ApprovalVia::Review,
            sha: sha.clone(),
            time,
            tampered,
        }));
        if matches!(r.state, ReviewState::Dismissed | ReviewState::Pending) {
            continue;
        }
        // GitHub keeps no edit time for reviews: commands in a body count only while it is
        // the body the bot received with the review.
        let received = cx.review_bodies.get(&r.id);
        let changed = received.is_some_and(|d| *d != countersign_github::body_digest(&r.body));
        for kind in decisions_in(&r.body) {
            out.push(Signal {
                user: user_of(user),
                kind,
                via: ApprovalVia::Comment,
                sha: sha.clone().filter(|_| received.is_some()),
                time,
                tampered: tampered || changed,
            });
        }
    }
    out
}

/// Where a comment lives, which decides how its head is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommentPlace {
    /// The pull request's conversation: the head recorded at receipt.
    Issue,
    /// An inline comment on the diff: GitHub's `original_commit_id`.
    Review,
}

/// `/approve`, `/reject`, `/hold` and `/unhold` in comments of `place`.
///
/// A command first seen in a comment that was edited after it was written may have been put
/// there by someone else before the edit's webhook (which names the editor) arrives: it
/// never counts. Commands recorded before the edit keep their standing unless the bot
/// reported the edit as someone else's (or the edit changed the decision).
pub fn comment_signals(
    comments: &[CommentInfo],
    place: CommentPlace,
    cx: &SignalContext<'_>,
) -> Vec<Signal> {
    let mut out = Vec::new();
    for c in comments {
        let Some(author) = &c.user else { continue };
        if author.login.eq_ignore_ascii_case(cx.bot_login) {
            continue;
        }
        let user = user_of(author);
        let reference = match place {
            CommentPlace::Issue => CommentRef::issue(c.id),
            CommentPlace::Review => CommentRef::review_comment(c.id),
        };
        for kind in decisions_in(&c.body) {
            let recorded = recorded(cx.previous, &user, c.created_at, kind);
            let sha = match place {
                CommentPlace::Issue => cx
                    .heads
                    .get(&c.id)
                    .cloned()
                    .or_else(|| recorded.map(|r| r.sha.clone()).filter(|s| !s.is_empty())),
                CommentPlace::Review => c.commit_id.clone(),
            };
            let edited = c.updated_at > c.created_at;
            let unverified = edited
                && recorded.is_none_or(|r| r.invalid_reason == Some(InvalidReason::Tampered));
            out.push(Signal {
                user: user.clone(),
                kind,
                via: ApprovalVia::Comment,
                sha,
                time: c.created_at,
                tampered: cx.tampered.contains(&reference) || unverified,
            });
        }
    }
    out
}

/// The previous evaluation's record of `user`'s comment decision made at `time`, if it was
/// the same decision (holds are not recorded).
fn recorded<'a>(
    previous: &'a [ApprovalRecord],
    user: &GitHubUser,
    time: Timestamp,
    kind: SignalKind,
) -> Option<&'a ApprovalRecord> {
    let decision = match kind {
        SignalKind::Approve => Decision::Approve,
        SignalKind::Reject => Decision::Reject,
        SignalKind::Hold | SignalKind::Unhold => return None,
    };
    previous.iter().find(|r| {
        r.via == ApprovalVia::Comment
            && r.time.0 == time
            && r.decision == decision
            && countersign_policies::approvals::same_person(&r.user, user)
    })
}

/// Comments recorded as tampered by the bot.
pub fn tampered_comments(gate: &ApprovalGate) -> BTreeSet<CommentRef> {
    countersign_crds::keys::tampered_comments(gate.annotations())
}

/// The digest of each review body with commands as the bot received it.
pub fn review_bodies(gate: &ApprovalGate) -> BTreeMap<u64, String> {
    countersign_crds::keys::review_bodies(gate.annotations())
}

/// The head each issue comment was received at, as the bot recorded it.
pub fn command_heads(gate: &ApprovalGate) -> BTreeMap<u64, String> {
    countersign_crds::keys::command_heads(gate.annotations())
}

/// Everyone the bot saw push to the pull request's branch, and everyone recorded before.
pub fn pushers_of(gate: &ApprovalGate) -> Vec<GitHubUser> {
    let mut out: Vec<GitHubUser> = gate
        .status
        .as_ref()
        .map(|s| s.pushers.clone())
        .unwrap_or_default();
    for (id, login) in countersign_crds::keys::pushers(gate.annotations()) {
        if !out.iter().any(|u| u.id == Some(id)) {
            out.push(GitHubUser {
                login,
                id: Some(id),
            });
        }
    }
    out
}

/// `users` without repeats (by id, else login), in first-seen order, at most `max`.
pub fn unique_users(users: impl IntoIterator<Item = GitHubUser>, max: usize) -> Vec<GitHubUser> {
    let mut out: Vec<GitHubUser> = Vec::new();
    for u in users {
        if out.len() < max
            && !out
                .iter()
                .any(|k| countersign_policies::approvals::same_person(k, &u))
        {
            out.push(u);
        }
    }
    out
}

#[cfg(test)]
mod tests;
