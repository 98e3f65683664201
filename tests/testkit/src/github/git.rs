//! Git hosting in the fake GitHub: real bare repositories in a temporary directory owned by
//! the [`World`], served over smart-HTTP by `git http-backend` (see `smart_http`), read with
//! libgit2 to open pull requests from real branches.
//!
//! Tests arrange repositories with [`World::create_repository`] (one initial commit on
//! `main`, authored by the owner) and [`World::commit_files`], and inspect what agents pushed
//! with [`World::branch_head`], [`World::branches`], [`World::file_at`] and
//! [`World::pushes`]. Git identities become GitHub accounts the way GitHub links them:
//! `<id>+<login>@users.noreply.github.com` (and the older `<login>@users.noreply…` of a
//! known login) or a verified email ([`World::add_email`]); anything else stays unlinked.
//!
//! The `World` helpers read and write the repository on disk synchronously (tiny local
//! repositories, called from tests); the HTTP handlers do the same work on the blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::{Delta, DiffFindOptions, IndexEntry, IndexTime, Oid, Repository, Signature, Sort};
use jiff::Timestamp;

use super::pulls::{ChangedFile, GitIdentity};
use super::server::{User, WORLD_EPOCH, World};

/// The all-zero id git and GitHub use for "no commit" (a created or deleted branch).
pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

/// One branch update received by the fake (over smart-HTTP, or by [`World::commit_files`]).
/// Tags are not recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// `owner/name`.
    pub repository: String,
    /// Branch name, without `refs/heads/`.
    pub branch: String,
    /// The tip before ([`ZERO_SHA`] when the push created the branch).
    pub old_sha: String,
    /// The tip after ([`ZERO_SHA`] when the push deleted the branch).
    pub new_sha: String,
}

/// The bare repositories: created lazily in a temporary directory that lives as long as the
/// [`World`].
#[derive(Debug, Default)]
pub(crate) struct GitHosting {
    root: Option<tempfile::TempDir>,
    /// Serialises receive-packs, so each push's ref changes are read on their own.
    pub(super) push_lock: Arc<tokio::sync::Mutex<()>>,
}

impl GitHosting {
    /// The directory of `owner/name` (lower-case, as GitHub names are case-insensitive),
    /// whether or not it exists; `None` for names GitHub would not accept.
    fn dir(&self, repository: &str) -> Option<PathBuf> {
        let (owner, name) = split_repository(repository)?;
        let root = self.root.as_ref()?;
        Some(
            root.path()
                .join(owner.to_ascii_lowercase())
                .join(format!("{}.git", name.to_ascii_lowercase())),
        )
    }

    /// The project root `git http-backend` serves from.
    pub(super) fn root(&self) -> Option<&Path> {
        self.root.as_ref().map(tempfile::TempDir::path)
    }
}

/// `(owner, name)` of `owner/name` when both are names GitHub accepts (letters, digits, `-`,
/// `_`, `.`, not `.` or `..`), with an optional `.git` suffix on the name stripped.
pub(super) fn split_repository(repository: &str) -> Option<(&str, &str)> {
    let (owner, name) = repository.split_once('/')?;
    let name = name.strip_suffix(".git").unwrap_or(name);
    let valid = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    (valid(owner) && valid(name)).then_some((owner, name))
}

impl World {
    /// Creates the bare repository `owner/name` with one commit on `main` holding `files`
    /// (path, content), authored and committed by the owner
    /// (`9000+<owner>@users.noreply.github.com`) at [`WORLD_EPOCH`], so its SHA is the same
    /// in every run. Returns that commit's SHA. Serve it to a token by installing the App on
    /// the repository ([`World::install`]); clone it from [`super::FakeGitHub::git_url`].
    ///
    /// # Panics
    /// When the name is invalid, the repository exists, or git fails (a broken test setup).
    pub fn create_repository(&mut self, repository: &str, files: &[(&str, &str)]) -> String {
        if self.git.root.is_none() {
            let root = tempfile::Builder::new()
                .prefix("fake-github-git-")
                .tempdir()
                .expect("a temporary directory for the fake GitHub's repositories");
            self.git.root = Some(root);
        }
        let dir = self
            .git
            .dir(repository)
            .unwrap_or_else(|| panic!("test bug: {repository:?} is not an owner/name"));
        assert!(!dir.exists(), "test bug: {repository} already exists");
        let mut options = git2::RepositoryInitOptions::new();
        options.bare(true).initial_head("main");
        let repo = Repository::init_opts(&dir, &options)
            .unwrap_or_else(|e| panic!("cannot create the bare repository {repository}: {e}"));
        let owner = repository.split('/').next().unwrap_or(repository);
        let identity = GitIdentity {
            name: owner.to_owned(),
            email: format!("9000+{owner}@users.noreply.github.com"),
            date: WORLD_EPOCH,
        };
        let changes: Vec<(&str, Option<&str>)> =
            files.iter().map(|(p, c)| (*p, Some(*c))).collect();
        write_commit(&repo, "main", &changes, "Initial commit", &identity)
            .unwrap_or_else(|e| panic!("cannot write the initial commit of {repository}: {e}"))
    }

    /// Commits `changes` (path → new content, or `None` to delete) on top of `branch`
    /// (branched off `main` when missing) as `author`, as if pushed from elsewhere (a human,
    /// a merge of another pull request). Records a [`Push`] and refreshes pull requests
    /// opened through the API from that branch. Returns the new commit's SHA.
    ///
    /// # Panics
    /// When the repository does not exist or git fails (a broken test setup).
    pub fn commit_files(
        &mut self,
        repository: &str,
        branch: &str,
        changes: &[(&str, Option<&str>)],
        message: &str,
        author: &User,
    ) -> String {
        let repo = self
            .open_repository(repository)
            .unwrap_or_else(|| panic!("test bug: no git repository {repository}"));
        let date = self.tick();
        let identity = GitIdentity {
            name: author.login.clone(),
            email: noreply_email(author),
            date,
        };
        let old = self.branch_head(repository, branch);
        let sha = write_commit(&repo, branch, changes, message, &identity)
            .unwrap_or_else(|e| panic!("cannot commit to {repository}:{branch}: {e}"));
        let push = Push {
            repository: repository.to_owned(),
            branch: branch.to_owned(),
            old_sha: old.unwrap_or_else(|| ZERO_SHA.to_owned()),
            new_sha: sha.clone(),
        };
        if let Some(dir) = self.repository_path(repository) {
            let refreshed = self.pulls_to_refresh(std::slice::from_ref(&push));
            for (number, base) in refreshed {
                if let Ok(cmp) = compare(&dir, &base, branch) {
                    self.refresh_pull(repository, number, cmp);
                }
            }
        }
        self.pushes.push(push);
        sha
    }

    /// The bare repository's directory, when `repository` was created.
    pub fn repository_path(&self, repository: &str) -> Option<PathBuf> {
        self.git.dir(repository).filter(|d| d.exists())
    }

    pub(super) fn open_repository(&self, repository: &str) -> Option<Repository> {
        Repository::open_bare(self.repository_path(repository)?).ok()
    }

    /// The tip of `branch` in `repository`, if both exist.
    pub fn branch_head(&self, repository: &str, branch: &str) -> Option<String> {
        let repo = self.open_repository(repository)?;
        let tip = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .ok()?
            .peel_to_commit()
            .ok()?
            .id();
        Some(tip.to_string())
    }

    /// The branches of `repository`, sorted (empty when it does not exist).
    pub fn branches(&self, repository: &str) -> Vec<String> {
        self.repository_path(repository)
            .and_then(|dir| heads(&dir).ok())
            .map(|heads| heads.into_keys().collect())
            .unwrap_or_default()
    }

    /// The content of `path` at `rev` (a branch, a SHA, anything `git rev-parse` takes) as
    /// UTF-8 (lossy), or `None` when the repository, the revision or the file is missing.
    pub fn file_at(&self, repository: &str, rev: &str, path: &str) -> Option<String> {
        let repo = self.open_repository(repository)?;
        let blob = repo
            .revparse_single(&format!("{rev}:{path}"))
            .ok()?
            .peel_to_blob()
            .ok()?;
        Some(String::from_utf8_lossy(blob.content()).into_owned())
    }

    /// Makes `user` known to `GET /users/{login}` and to email linking by login.
    pub fn add_user(&mut self, user: &User) {
        self.users
            .insert(user.login.to_ascii_lowercase(), user.clone());
    }

    /// Links git commits with `email` to `user` (a verified email on their account).
    pub fn add_email(&mut self, user: &User, email: &str) {
        self.add_user(user);
        self.emails.insert(email.to_ascii_lowercase(), user.clone());
    }

    /// The GitHub account GitHub shows for a git identity, or [`User::unlinked`].
    pub(super) fn account_for(&self, identity: &GitIdentity) -> User {
        let email = identity.email.to_ascii_lowercase();
        if let Some(user) = self.emails.get(&email) {
            return user.clone();
        }
        let linked = email
            .strip_suffix("@users.noreply.github.com")
            .and_then(|local| match local.split_once('+') {
                Some((id, login)) => {
                    let id = id.parse::<u64>().ok().filter(|id| *id != 0)?;
                    let login = self.known_user(login).map_or(login.to_owned(), |u| u.login);
                    Some(if login.ends_with("[bot]") {
                        User::bot(id, &login)
                    } else {
                        User::new(id, &login)
                    })
                }
                None => self.known_user(local),
            });
        linked.unwrap_or_else(|| User::unlinked(&identity.name))
    }

    /// Pull requests opened through the API whose head one of `pushes` moved, with their
    /// base branch.
    pub(super) fn pulls_to_refresh(&self, pushes: &[Push]) -> Vec<(u64, String)> {
        self.pulls
            .iter()
            .filter(|((repo, _), pr)| {
                pr.from_git
                    && pr.state == "open"
                    && pushes.iter().any(|p| {
                        p.repository.eq_ignore_ascii_case(repo)
                            && p.branch == pr.head_branch
                            && p.new_sha != ZERO_SHA
                    })
            })
            .map(|((_, number), pr)| (*number, pr.base_branch.clone()))
            .collect()
    }
}

/// `<id>+<login>@users.noreply.github.com` (GitHub's form that links to the account).
pub(super) fn noreply_email(user: &User) -> String {
    format!("{}+{}@users.noreply.github.com", user.id, user.login)
}

/// Writes a commit with `changes` applied to `branch`'s tree (the default branch's when
/// `branch` does not exist yet; nothing in a new repository) and moves the branch to it.
pub(super) fn write_commit(
    repo: &Repository,
    branch: &str,
    changes: &[(&str, Option<&str>)],
    message: &str,
    identity: &GitIdentity,
) -> Result<String, git2::Error> {
    let reference = format!("refs/heads/{branch}");
    // A new branch starts from the default branch, like `git switch -c <branch>` would.
    let parent = repo
        .find_reference(&reference)
        .or_else(|_| repo.head())
        .ok()
        .and_then(|r| r.peel_to_commit().ok());
    let mut index = git2::Index::new()?;
    if let Some(parent) = &parent {
        index.read_tree(&parent.tree()?)?;
    }
    for (path, content) in changes {
        match content {
            Some(content) => {
                let id = repo.blob(content.as_bytes())?;
                index.add(&IndexEntry {
                    ctime: IndexTime::new(0, 0),
                    mtime: IndexTime::new(0, 0),
                    dev: 0,
                    ino: 0,
                    mode: 0o100_644,
                    uid: 0,
                    gid: 0,
                    file_size: u32::try_from(content.len()).unwrap_or(u32::MAX),
                    id,
                    flags: 0,
                    flags_extended: 0,
                    path: path.as_bytes().to_vec(),
                })?;
            }
            None => index.remove_path(Path::new(path))?,
        }
    }
    let tree = repo.find_tree(index.write_tree_to(repo)?)?;
    let time = git2::Time::new(identity.date.as_second(), 0);
    let signature = Signature::new(&identity.name, &identity.email, &time)?;
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let id = repo.commit(
        Some(&reference),
        &signature,
        &signature,
        message,
        &tree,
        &parents,
    )?;
    Ok(id.to_string())
}

/// Every branch of the bare repository at `dir` with its tip.
pub(super) fn heads(dir: &Path) -> Result<BTreeMap<String, String>, git2::Error> {
    let repo = Repository::open_bare(dir)?;
    let mut heads = BTreeMap::new();
    for reference in repo.references_glob("refs/heads/*")? {
        let reference = reference?;
        let (Ok(name), Some(target)) = (reference.name(), reference.target()) else {
            continue;
        };
        if let Some(branch) = name.strip_prefix("refs/heads/") {
            heads.insert(branch.to_owned(), target.to_string());
        }
    }
    Ok(heads)
}

/// The branch updates between two [`heads`] snapshots of `repository`.
pub(super) fn pushes_between(
    repository: &str,
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<Push> {
    let branches: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    branches
        .into_iter()
        .filter_map(|branch| {
            let (old, new) = (before.get(branch), after.get(branch));
            (old != new).then(|| Push {
                repository: repository.to_owned(),
                branch: branch.clone(),
                old_sha: old.map_or_else(|| ZERO_SHA.to_owned(), Clone::clone),
                new_sha: new.map_or_else(|| ZERO_SHA.to_owned(), Clone::clone),
            })
        })
        .collect()
}

/// A commit as git has it.
#[derive(Clone, Debug)]
pub(super) struct RawCommit {
    pub(super) sha: String,
    pub(super) tree_sha: String,
    pub(super) parent: Option<String>,
    pub(super) author: GitIdentity,
    pub(super) committer: GitIdentity,
    pub(super) message: String,
}

/// `base...head` of one repository, as a pull request shows it.
#[derive(Clone, Debug)]
pub(super) struct Comparison {
    /// The base branch's tip.
    pub(super) base: RawCommit,
    /// The head branch's tip.
    pub(super) head_sha: String,
    /// The merge base of the two.
    pub(super) merge_base: RawCommit,
    /// `merge-base..head`, oldest first.
    pub(super) commits: Vec<RawCommit>,
    /// `git diff base...head` with renames found.
    pub(super) files: Vec<ChangedFile>,
}

/// Why two branches cannot be compared (each is a 422 on `POST …/pulls`).
#[derive(Debug, thiserror::Error)]
pub(super) enum CompareError {
    /// The base branch does not exist.
    #[error("the base branch does not exist")]
    NoBase,
    /// The head branch does not exist.
    #[error("the head branch does not exist")]
    NoHead,
    /// The head has no commits the base lacks.
    #[error("no commits between the branches")]
    NoCommits,
    /// Reading the repository failed.
    #[error("cannot read the repository")]
    Git(#[from] git2::Error),
}

pub(super) fn raw_commit(commit: &git2::Commit<'_>) -> RawCommit {
    let identity = |s: git2::Signature<'_>| GitIdentity {
        name: String::from_utf8_lossy(s.name_bytes()).into_owned(),
        email: String::from_utf8_lossy(s.email_bytes()).into_owned(),
        date: Timestamp::from_second(s.when().seconds()).unwrap_or(WORLD_EPOCH),
    };
    RawCommit {
        sha: commit.id().to_string(),
        tree_sha: commit.tree_id().to_string(),
        parent: commit.parent_ids().next().map(|p| p.to_string()),
        author: identity(commit.author()),
        committer: identity(commit.committer()),
        message: String::from_utf8_lossy(commit.message_bytes()).into_owned(),
    }
}

/// Compares branches (or any revisions: SHAs, `refs/…`) `base` and `head` of the bare
/// repository at `dir` (blocking).
pub(super) fn compare(dir: &Path, base: &str, head: &str) -> Result<Comparison, CompareError> {
    let repo = Repository::open_bare(dir)?;
    let tip = |rev: &str| {
        repo.find_reference(&format!("refs/heads/{rev}"))
            .ok()
            .and_then(|r| r.peel_to_commit().ok())
            .or_else(|| {
                repo.revparse_single(rev)
                    .ok()
                    .and_then(|o| o.peel_to_commit().ok())
            })
    };
    let base_tip = tip(base).ok_or(CompareError::NoBase)?;
    let head_tip = tip(head).ok_or(CompareError::NoHead)?;
    let merge_base = repo
        .merge_base(base_tip.id(), head_tip.id())
        .map_err(|_| CompareError::NoCommits)?;
    if merge_base == head_tip.id() {
        return Err(CompareError::NoCommits);
    }
    let mut walk = repo.revwalk()?;
    walk.set_sorting(Sort::TOPOLOGICAL | Sort::REVERSE)?;
    walk.push(head_tip.id())?;
    walk.hide(merge_base)?;
    let commits = walk
        .map(|id| Ok(raw_commit(&repo.find_commit(id?)?)))
        .collect::<Result<Vec<_>, git2::Error>>()?;
    let files = changed_files(&repo, merge_base, head_tip.id())?;
    Ok(Comparison {
        base: raw_commit(&base_tip),
        head_sha: head_tip.id().to_string(),
        merge_base: raw_commit(&repo.find_commit(merge_base)?),
        commits,
        files,
    })
}

/// `git diff from..to` per file, with renames found as git finds them (50% similarity).
fn changed_files(repo: &Repository, from: Oid, to: Oid) -> Result<Vec<ChangedFile>, git2::Error> {
    let old = repo.find_commit(from)?.tree()?;
    let new = repo.find_commit(to)?.tree()?;
    let mut diff = repo.diff_tree_to_tree(Some(&old), Some(&new), None)?;
    diff.find_similar(Some(DiffFindOptions::new().renames(true)))?;
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
        let filename = if delta.status() == Delta::Deleted {
            path(delta.old_file())
        } else {
            path(delta.new_file())
        };
        let (additions, deletions, patch) = match git2::Patch::from_diff(&diff, i)? {
            Some(mut patch) => {
                let (_, added, deleted) = patch.line_stats()?;
                let text = patch.to_buf()?;
                (added as u64, deleted as u64, hunks_only(&text))
            }
            None => (0, 0, None),
        };
        // GitHub lists the blob after the change, and the removed blob for a deletion.
        let blob = if delta.status() == Delta::Deleted {
            delta.old_file().id()
        } else {
            delta.new_file().id()
        };
        files.push(ChangedFile {
            filename,
            additions,
            deletions,
            status: status.to_owned(),
            previous_filename: previous,
            sha: Some(blob.to_string()),
            patch: if delta.new_file().is_binary() || delta.old_file().is_binary() {
                None
            } else {
                patch
            },
        });
    }
    Ok(files)
}

/// The hunks of a patch as GitHub's `patch` field shows them: from the first `@@` on, without
/// the `diff --git`/`index`/`---`/`+++` header; `None` when there are no hunks.
fn hunks_only(buf: &git2::Buf) -> Option<String> {
    let text = String::from_utf8_lossy(buf);
    let start = if text.starts_with("@@") {
        0
    } else {
        text.find("\n@@")? + 1
    };
    Some(text[start..].trim_end_matches('\n').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_are_checked_like_github_does() {
        assert_eq!(split_repository("acme/api"), Some(("acme", "api")));
        assert_eq!(split_repository("acme/api.git"), Some(("acme", "api")));
        assert_eq!(split_repository("acme/../etc"), None);
        assert_eq!(split_repository("acme/.."), None);
        assert_eq!(split_repository("acme"), None);
        assert_eq!(split_repository("acme/a b"), None);
    }

    #[test]
    fn noreply_emails_link_to_accounts_and_others_stay_unlinked() {
        let mut world = World::default();
        let at = WORLD_EPOCH;
        let id = |email: &str| GitIdentity {
            name: "Some Name".into(),
            email: email.into(),
            date: at,
        };
        let bot = world.account_for(&id(
            "4242000+countersign-test[bot]@users.noreply.github.com",
        ));
        assert_eq!(bot, User::test_app_bot());
        assert_eq!(
            world.account_for(&id("7+alice@users.noreply.github.com")),
            User::new(7, "alice")
        );
        let unknown = world.account_for(&id("someone@example.com"));
        assert!(!unknown.is_linked());
        assert_eq!(unknown.login, "Some Name");
        world.add_email(&User::new(8, "bob"), "Bob@Example.com");
        assert_eq!(
            world.account_for(&id("bob@example.com")),
            User::new(8, "bob")
        );
        assert_eq!(
            world.account_for(&id("bob@users.noreply.github.com")),
            User::new(8, "bob"),
            "the old noreply form links a known login"
        );
    }

    #[test]
    fn pushes_are_the_branches_that_moved() {
        let before = BTreeMap::from([
            ("main".to_owned(), "a".to_owned()),
            ("x".to_owned(), "b".to_owned()),
        ]);
        let after = BTreeMap::from([
            ("main".to_owned(), "a".to_owned()),
            ("y".to_owned(), "c".to_owned()),
        ]);
        let pushes = pushes_between("o/r", &before, &after);
        assert_eq!(pushes.len(), 2);
        assert_eq!(
            (pushes[0].branch.as_str(), pushes[0].new_sha.as_str()),
            ("x", ZERO_SHA)
        );
        assert_eq!(
            (pushes[1].branch.as_str(), pushes[1].old_sha.as_str()),
            ("y", ZERO_SHA)
        );
    }
}
