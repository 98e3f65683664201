//! What a change consists of: the files it touches, with their line counts and added lines.
//! Built by [`super::Workspace::changes`], read by the guardrails and the secret scan, and by
//! hand in their tests.

use git2::{Delta, Patch};

/// How a file changed against the base commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChangeStatus {
    /// A new file.
    Added,
    /// An existing file with new content, mode or type.
    Modified,
    /// A file that is gone.
    Deleted,
    /// A file moved to a new path (possibly with edits); see [`FileChange::old_path`].
    Renamed,
}

impl std::fmt::Display for ChangeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChangeStatus::Added => "added",
            ChangeStatus::Modified => "modified",
            ChangeStatus::Deleted => "deleted",
            ChangeStatus::Renamed => "renamed",
        })
    }
}

/// One line a change adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddedLine {
    /// Its line number in the new file, from 1.
    pub number: u32,
    /// Its text, without the line ending (invalid UTF-8 replaced).
    pub text: String,
}

/// One changed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// The path relative to the repository root, with `/` separators: the new path, or for
    /// a deleted file the old one.
    pub path: String,
    /// For a rename, the path it had before.
    pub old_path: Option<String>,
    /// How it changed.
    pub status: ChangeStatus,
    /// Lines added (0 for binary files).
    pub additions: u64,
    /// Lines removed (0 for binary files).
    pub deletions: u64,
    /// Whether the new content is binary (always false for a deleted file).
    pub binary: bool,
    /// The lines the change adds, in order, for the secret scan.
    pub added_lines: Vec<AddedLine>,
}

impl FileChange {
    /// The paths the change touches: the path, and for a rename also the old path (moving a
    /// protected file away is as much a change to it as editing it).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.path.as_str()).chain(self.old_path.as_deref())
    }
}

/// Everything a change touches, against the base commit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// The changed files, in path order.
    pub files: Vec<FileChange>,
    /// Lines added in all files.
    pub additions: u64,
    /// Lines removed in all files.
    pub deletions: u64,
    tree: Option<String>,
}

impl ChangeSet {
    /// A change set of `files`, with the totals added up. Such a change set cannot be
    /// committed; [`super::Workspace::changes`] makes ones that can.
    pub fn new(files: Vec<FileChange>) -> Self {
        Self {
            additions: files.iter().map(|f| f.additions).sum(),
            deletions: files.iter().map(|f| f.deletions).sum(),
            files,
            tree: None,
        }
    }

    pub(super) fn from_tree(files: Vec<FileChange>, tree: String) -> Self {
        Self {
            tree: Some(tree),
            ..Self::new(files)
        }
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Lines added plus lines removed.
    pub fn changed_lines(&self) -> u64 {
        self.additions + self.deletions
    }

    /// The git tree this change set describes, when it came from a workspace.
    pub fn tree(&self) -> Option<&str> {
        self.tree.as_deref()
    }
}

/// Describes one file of a diff.
pub(super) fn file_change(patch: &Patch<'_>) -> Result<FileChange, git2::Error> {
    let delta = patch.delta();
    let path_of = |file: git2::DiffFile<'_>| {
        file.path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let new_path = path_of(delta.new_file());
    let old_path = path_of(delta.old_file());
    let (status, path, old_path) = match delta.status() {
        Delta::Added => (ChangeStatus::Added, new_path, None),
        Delta::Deleted => (ChangeStatus::Deleted, old_path, None),
        Delta::Renamed => (ChangeStatus::Renamed, new_path, Some(old_path)),
        _ => (ChangeStatus::Modified, new_path, None),
    };
    let binary = status != ChangeStatus::Deleted && delta.flags().is_binary();
    let (_, additions, deletions) = patch.line_stats()?;
    let mut added_lines = Vec::new();
    for hunk in 0..patch.num_hunks() {
        for i in 0..patch.num_lines_in_hunk(hunk)? {
            let line = patch.line_in_hunk(hunk, i)?;
            if let (git2::DiffLineType::Addition, Some(number)) =
                (line.origin_value(), line.new_lineno())
            {
                let text = String::from_utf8_lossy(line.content());
                added_lines.push(AddedLine {
                    number,
                    text: text.trim_end_matches(['\n', '\r']).to_owned(),
                });
            }
        }
    }
    Ok(FileChange {
        path,
        old_path,
        status,
        additions: additions as u64,
        deletions: deletions as u64,
        binary,
        added_lines,
    })
}
