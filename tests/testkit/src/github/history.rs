//! Synthetic pull-request history the way people really make it, beyond one author pushing
//! honest commits: a push whose commits carry someone else's name and email, commits
//! backdated with a chosen committer date, long series of commits, and edits of review
//! comments and review bodies by someone other than their author. Each returns the webhook
//! payload GitHub would deliver.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::pulls::{ChangedFile, Commit, GitIdentity, commit_sha, stamp_blobs, tree_sha};
use super::server::{User, World};

/// How one synthetic commit is made.
#[derive(Clone, Debug)]
pub struct CommitAs<'a> {
    /// Who pushes it: the `sender` of `pull_request.synchronize`.
    pub pusher: &'a User,
    /// The git author and committer the commit claims (any name and email can be written
    /// into a commit; GitHub links the email to this account).
    pub identity: &'a User,
    /// The committer date the commit claims (forgeable too); the world's clock when `None`.
    pub date: Option<Timestamp>,
}

impl World {
    /// Pushes one commit made as `how` to pull request `number`, changing `files`
    /// (replacing the list); returns the `pull_request.synchronize` payload with the pusher
    /// as its sender.
    ///
    /// # Panics
    /// When the pull request does not exist (a mistake in the test itself).
    pub fn push_commit_as(
        &mut self,
        repository: &str,
        number: u64,
        files: Vec<ChangedFile>,
        how: &CommitAs<'_>,
    ) -> Value {
        let before = self.pull_mut(repository, number).head_sha.clone();
        self.add_commit(repository, number, files, how);
        self.synchronize_payload(repository, number, before, how.pusher)
    }

    /// Pushes one commit per entry of `authors` in one push by `pusher` (each commit a new
    /// tree, authored and committed as that entry), the files of the pull request becoming
    /// `files`; returns the `pull_request.synchronize` payload.
    ///
    /// # Panics
    /// When the pull request does not exist (a mistake in the test itself).
    pub fn push_commits(
        &mut self,
        repository: &str,
        number: u64,
        files: Vec<ChangedFile>,
        authors: &[User],
        pusher: &User,
    ) -> Value {
        let before = self.pull_mut(repository, number).head_sha.clone();
        for author in authors {
            let how = CommitAs {
                pusher,
                identity: author,
                date: None,
            };
            self.add_commit(repository, number, files.clone(), &how);
        }
        self.synchronize_payload(repository, number, before, pusher)
    }

    fn add_commit(
        &mut self,
        repository: &str,
        number: u64,
        files: Vec<ChangedFile>,
        how: &CommitAs<'_>,
    ) {
        let now = self.tick();
        let date = how.date.unwrap_or(now);
        let pr = self.pull_mut(repository, number);
        let before = pr.head_sha.clone();
        pr.pushes += 1;
        let commit = Commit {
            sha: commit_sha(repository, &pr.head_branch, pr.pushes),
            tree_sha: tree_sha(repository, &pr.head_branch, pr.pushes),
            author: how.identity.clone(),
            committer: how.identity.clone(),
            timestamp: date,
            author_identity: GitIdentity::of(how.identity, date),
            committer_identity: GitIdentity::of(how.identity, date),
            message: format!("Update {}", pr.head_branch),
            parent: Some(before),
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
    }

    /// `editor` replaces the body of inline review comment `comment_id` on pull request
    /// `number`; returns the `pull_request_review_comment.edited` payload (`comment.user`
    /// stays the author, `sender` is the editor, `changes.body.from` the old body).
    ///
    /// # Panics
    /// When the pull request or the comment does not exist (a mistake in the test itself).
    pub fn edit_review_comment(
        &mut self,
        repository: &str,
        number: u64,
        comment_id: u64,
        body: &str,
        editor: &User,
    ) -> Value {
        let now = self.tick();
        let pr = self.pull_mut(repository, number);
        let comment = pr
            .review_comments
            .iter_mut()
            .find(|c| c.id == comment_id)
            .unwrap_or_else(|| panic!("test bug: no review comment {comment_id} on #{number}"));
        let before = std::mem::replace(&mut comment.body, body.to_owned());
        comment.updated_at = now;
        let comment = comment.clone();
        let mut payload = self.pull_request_payload(repository, number, "edited", editor);
        payload["comment"] = comment.json(repository, number);
        payload["changes"] = json!({"body": {"from": before}});
        payload
    }

    /// `editor` replaces the body of review `review_id` on pull request `number`; returns
    /// the `pull_request_review.edited` payload (`review.user` stays the reviewer).
    ///
    /// # Panics
    /// When the pull request or the review does not exist (a mistake in the test itself).
    pub fn edit_review_body(
        &mut self,
        repository: &str,
        number: u64,
        review_id: u64,
        body: &str,
        editor: &User,
    ) -> Value {
        let pr = self.pull_mut(repository, number);
        let review = pr
            .reviews
            .iter_mut()
            .find(|r| r.id == review_id)
            .unwrap_or_else(|| panic!("test bug: no review {review_id} on #{number}"));
        let before = std::mem::replace(&mut review.body, body.to_owned());
        let review = review.clone();
        let mut payload = self.review_payload(repository, number, &review, "edited", editor);
        payload["changes"] = json!({"body": {"from": before}});
        payload
    }
}
