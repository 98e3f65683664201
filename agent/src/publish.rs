//! The `push` step's own repository: the only git code that holds the push token, and it
//! trusts nothing the `work` step left behind except object contents it can verify.
//!
//! It creates a fresh bare repository in a new directory, with its own configuration (git's
//! global and system configuration files are not read at all: the workspace's `$HOME` is
//! writable by model-written code), no hooks and no refs of the workspace. The workspace's
//! object directory is added as a read-only object source, and libgit2 checks every object
//! it reads against its id (strict hash verification), so a tampered object fails instead of
//! being pushed. The base commit comes from the `clone` step (through a volume the `work`
//! step does not mount), the tree from the commit the work step reported. The push step
//! describes the change itself, lets the caller check it, writes a new commit (tree of the
//! work, parent the base, the App's identity, our message) on `refs/heads/<branch>` of its
//! own repository and pushes exactly that ref. The workspace's `.git/config` (remotes,
//! `insteadOf`, credential helpers), hooks, branches and index are never looked at.

use std::path::{Path, PathBuf};

use countersign_crds::task_file::CommitIdentity;
use git2::{ConfigLevel, ObjectType, Oid, Repository, RepositoryInitOptions, Signature};
use secrecy::SecretString;

use crate::workspace::{ChangeSet, WorkspaceError, branch_ref, diff_trees, git_error, push_branch};

/// The push step's repository, with the workspace's objects readable through it.
pub struct Fresh {
    repo: Repository,
    dir: PathBuf,
    base: Oid,
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fresh")
            .field("dir", &self.dir)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Stops libgit2 from reading git's global, XDG and system configuration in this process.
/// Such files live under `$HOME` and `/etc`; in an agent pod `$HOME` is the workspace the
/// model writes to, and a `url.*.insteadOf` there would apply to every repository.
pub fn isolate_from_user_config() -> Result<(), WorkspaceError> {
    let nowhere = Path::new("/nonexistent/countersign-no-git-config");
    for level in [
        ConfigLevel::ProgramData,
        ConfigLevel::System,
        ConfigLevel::XDG,
        ConfigLevel::Global,
    ] {
        // SAFETY: libgit2's process-wide search paths, set before this process opens or
        // creates any repository and while no other thread uses libgit2.
        unsafe { git2::opts::set_search_path(level, nowhere) }
            .map_err(|e| git_error("ignore git's user configuration", &e))?;
    }
    git2::opts::strict_hash_verification(true);
    Ok(())
}

impl Fresh {
    /// A new bare repository in a new directory under `parent`, reading objects from
    /// `workspace_objects` (the checkout's `.git/objects`), based on `base`.
    pub fn create(
        parent: &Path,
        workspace_objects: &Path,
        base: Oid,
    ) -> Result<Fresh, WorkspaceError> {
        isolate_from_user_config()?;
        let dir = new_directory(parent)
            .map_err(|e| git_error("create the push repository", &git2::Error::from_str(&e)))?;
        let fail = |e: git2::Error| git_error("create the push repository", &e);
        let mut options = RepositoryInitOptions::new();
        options
            .bare(true)
            .no_reinit(true)
            .mkdir(false)
            .external_template(false);
        let repo = Repository::init_opts(&dir, &options).map_err(fail)?;
        // A planted `objects/info/alternates` in the workspace is followed by libgit2; every
        // object it yields is still checked against its id.
        repo.odb()
            .and_then(|odb| odb.add_disk_alternate(&workspace_objects.display().to_string()))
            .map_err(fail)?;
        // The clone is shallow: its base has no parents here either, so a push walks no
        // further than the base.
        std::fs::write(dir.join("shallow"), format!("{base}\n")).map_err(|e| {
            git_error(
                "create the push repository",
                &git2::Error::from_str(&e.to_string()),
            )
        })?;
        let fresh = Fresh { repo, dir, base };
        fresh
            .repo
            .find_commit(base)
            .map_err(|e| git_error("find the cloned base commit in the workspace", &e))?;
        Ok(fresh)
    }

    /// The change from the base to the tree of `commit` (a commit object of the workspace),
    /// and that tree's id. Only the tree is used: the work step's commit message, author,
    /// parents and refs are not.
    pub fn change_of(&self, commit: Oid) -> Result<(ChangeSet, Oid), WorkspaceError> {
        let object = self
            .repo
            .find_object(commit, None)
            .map_err(|e| git_error("read the work step's commit", &e))?;
        if object.kind() != Some(ObjectType::Commit) {
            return Err(git_error(
                "read the work step's commit",
                &git2::Error::from_str(&format!("{commit} is not a commit")),
            ));
        }
        let describe = |e: git2::Error| git_error("compare the change with the base", &e);
        let tree = object
            .peel_to_commit()
            .and_then(|c| c.tree())
            .map_err(describe)?;
        let base_tree = self
            .repo
            .find_commit(self.base)
            .and_then(|c| c.tree())
            .map_err(describe)?;
        let changes = diff_trees(&self.repo, &base_tree, &tree).map_err(describe)?;
        Ok((changes, tree.id()))
    }

    /// Writes the commit to push: `tree` on the base, by `identity`, with `message`, at
    /// `refs/heads/<branch>` of this repository. Returns its id.
    pub fn commit(
        &self,
        tree: Oid,
        identity: &CommitIdentity,
        message: &str,
        branch: &str,
    ) -> Result<String, WorkspaceError> {
        let fail = |e: git2::Error| git_error("commit", &e);
        let reference = branch_ref(branch).map_err(fail)?;
        let tree = self.repo.find_tree(tree).map_err(fail)?;
        let base = self.repo.find_commit(self.base).map_err(fail)?;
        let signature = Signature::now(&identity.name, &identity.email).map_err(fail)?;
        let id = self
            .repo
            .commit(
                Some(&reference),
                &signature,
                &signature,
                message,
                &tree,
                &[&base],
            )
            .map_err(fail)?;
        Ok(id.to_string())
    }

    /// Pushes `refs/heads/<branch>` (and nothing else) to `url` with `token`.
    pub fn push(
        &self,
        url: &str,
        branch: &str,
        token: &SecretString,
        force: bool,
    ) -> Result<(), WorkspaceError> {
        push_branch(&self.repo, url, branch, token, force)
    }
}

/// A directory under `parent` that did not exist before (so nothing the work step planted,
/// such as a symlink, can be it).
fn new_directory(parent: &Path) -> Result<PathBuf, String> {
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!(
            "countersign-push-{}-{nanos:08x}-{attempt}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "cannot create a new directory under {}",
        parent.display()
    ))
}
