//! History rewrites on hosted repositories, the way people (and attackers) do them with
//! `git push --force`: a clean rebase of a branch onto a newer base, and a commit whose tree
//! is copied from another commit onto a chosen parent. Both move the branch, record a
//! [`Push`] and refresh the pull requests opened from it, like a push over smart-HTTP does.

use git2::{Oid, Repository, Signature};

use super::git::{Push, ZERO_SHA, compare, noreply_email};
use super::server::{User, World};

impl World {
    /// `author` force-pushes to `branch` one new commit whose parent is `parent_rev` and
    /// whose tree is exactly `tree_rev`'s tree (revisions as `git rev-parse` takes them).
    /// With a newer base as the parent and the old head as the tree, the branch's content
    /// is unchanged while its change against the base now also undoes whatever the base
    /// did since. Returns the new head's SHA.
    ///
    /// # Panics
    /// When the repository or a revision does not exist (a mistake in the test itself).
    pub fn force_push_tree(
        &mut self,
        repository: &str,
        branch: &str,
        parent_rev: &str,
        tree_rev: &str,
        message: &str,
        author: &User,
    ) -> String {
        let repo = self.repo_or_panic(repository);
        let parent = peel(&repo, parent_rev);
        let tree = peel(&repo, tree_rev)
            .tree()
            .unwrap_or_else(|e| panic!("test bug: no tree at {tree_rev}: {e}"));
        let old = self.branch_head(repository, branch);
        let sha = self.commit_on(&repo, branch, &tree, &[&parent], message, author);
        self.after_force_push(repository, branch, old, &sha);
        sha
    }

    /// `committer` rebases `branch` onto `onto` cleanly (as `git rebase`, squashed into one
    /// commit): the branch's change since its merge base with `onto` is applied to `onto`'s
    /// tip with a three-way merge, then force-pushed. Returns the new head's SHA.
    ///
    /// # Panics
    /// When the repository or a branch does not exist, or the change does not apply
    /// cleanly (a mistake in the test itself).
    pub fn rebase_branch(
        &mut self,
        repository: &str,
        branch: &str,
        onto: &str,
        committer: &User,
    ) -> String {
        let repo = self.repo_or_panic(repository);
        let head = peel(&repo, &format!("refs/heads/{branch}"));
        let target = peel(&repo, &format!("refs/heads/{onto}"));
        let base = repo
            .merge_base(head.id(), target.id())
            .and_then(|id| repo.find_commit(id))
            .unwrap_or_else(|e| panic!("test bug: {branch} and {onto} share no history: {e}"));
        let (base_tree, target_tree, head_tree) = (
            base.tree().expect("a commit has a tree"),
            target.tree().expect("a commit has a tree"),
            head.tree().expect("a commit has a tree"),
        );
        let mut index = repo
            .merge_trees(&base_tree, &target_tree, &head_tree, None)
            .unwrap_or_else(|e| panic!("test bug: cannot rebase {branch}: {e}"));
        assert!(
            !index.has_conflicts(),
            "test bug: rebasing {branch} onto {onto} conflicts"
        );
        let tree_id = index
            .write_tree_to(&repo)
            .unwrap_or_else(|e| panic!("test bug: cannot write the rebased tree: {e}"));
        let new_tree = repo.find_tree(tree_id).expect("the tree just written");
        let message = head.message().unwrap_or("rebased").to_owned();
        let old = Some(head.id().to_string());
        let sha = self.commit_on(&repo, branch, &new_tree, &[&target], &message, committer);
        self.after_force_push(repository, branch, old, &sha);
        sha
    }

    fn repo_or_panic(&self, repository: &str) -> Repository {
        self.open_repository(repository)
            .unwrap_or_else(|| panic!("test bug: no git repository {repository}"))
    }

    /// Writes a commit by `author` (now) and force-moves `branch` to it.
    fn commit_on(
        &mut self,
        repo: &Repository,
        branch: &str,
        tree: &git2::Tree<'_>,
        parents: &[&git2::Commit<'_>],
        message: &str,
        author: &User,
    ) -> String {
        let date = self.tick();
        let time = git2::Time::new(date.as_second(), 0);
        let signature = Signature::new(&author.login, &noreply_email(author), &time)
            .expect("a valid git signature");
        let id: Oid = repo
            .commit(None, &signature, &signature, message, tree, parents)
            .unwrap_or_else(|e| panic!("test bug: cannot commit: {e}"));
        repo.reference(&format!("refs/heads/{branch}"), id, true, "force push")
            .unwrap_or_else(|e| panic!("test bug: cannot move {branch}: {e}"));
        id.to_string()
    }

    /// What a push over smart-HTTP does after the ref moved: record it and refresh the pull
    /// requests opened from the branch.
    fn after_force_push(&mut self, repository: &str, branch: &str, old: Option<String>, sha: &str) {
        let push = Push {
            repository: repository.to_owned(),
            branch: branch.to_owned(),
            old_sha: old.unwrap_or_else(|| ZERO_SHA.to_owned()),
            new_sha: sha.to_owned(),
        };
        if let Some(dir) = self.repository_path(repository) {
            for (number, base) in self.pulls_to_refresh(std::slice::from_ref(&push)) {
                if let Ok(cmp) = compare(&dir, &base, branch) {
                    self.refresh_pull(repository, number, cmp);
                }
            }
        }
        self.pushes.push(push);
    }
}

fn peel<'r>(repo: &'r Repository, rev: &str) -> git2::Commit<'r> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .unwrap_or_else(|e| panic!("test bug: no commit at {rev}: {e}"))
}
