//! Applies a model's unified diff (one or more files) to the workspace, all or nothing.
//!
//! The input comes from the `apply_diff` tool, so it is untrusted and often slightly wrong:
//! hunk line counts are recomputed from the hunk bodies (models miscount them), and diffy
//! finds each hunk near its stated line by its context. A file section is `--- a/path` +
//! `+++ b/path` (optionally after a `diff --git` line); `/dev/null` on the old side creates the
//! file, on the new side deletes it. Every file is checked and patched in memory first; only
//! when all of them apply is anything written. Paths go through [`crate::tools::confine`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::tools::{PathError, confine, read_text};

/// What a diff did to one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A new file.
    Created,
    /// An existing file changed.
    Modified,
    /// A file removed.
    Deleted,
}

/// One file a diff changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileChange {
    /// Path relative to the workspace root.
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
}

impl fmt::Display for FileChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self.kind {
            ChangeKind::Created => "created",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
        };
        write!(f, "{verb} {}", self.path)
    }
}

/// Why a diff was not applied (nothing was written).
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    /// The text is not a unified diff this module understands.
    #[error("cannot parse the diff: {0}")]
    Parse(String),
    /// A path in the diff is refused.
    #[error("{path}: {source}")]
    Path {
        /// The path as the diff names it.
        path: String,
        /// Why it is refused.
        #[source]
        source: PathError,
    },
    /// A file section is inconsistent with the workspace (missing file, existing new file,
    /// binary file, …).
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A hunk's context or removed lines were not found in the file.
    #[error(
        "{path}: hunk #{hunk} does not apply (its context and removed lines must match the \
         file exactly; read the file again and resend the diff)"
    )]
    Hunk {
        /// The file.
        path: String,
        /// The hunk's 1-based number within the file's section.
        hunk: usize,
    },
    /// Writing a patched file failed (earlier writes of this diff were undone).
    #[error("{path}: cannot write: {source}")]
    Io {
        /// The file.
        path: String,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// One `---`/`+++` section of the diff.
#[derive(Debug, PartialEq, Eq)]
struct Section {
    /// Old path (`None` for `/dev/null`).
    old: Option<String>,
    /// New path (`None` for `/dev/null`).
    new: Option<String>,
    /// The hunks, with recomputed headers.
    hunks: String,
    /// The first old and new line after the last hunk so far (1-based).
    next_old: usize,
    next_new: usize,
}

/// Applies `diff` to the workspace at `root`; nothing is written unless every file applies.
pub fn apply(root: &Path, diff: &str) -> Result<Vec<FileChange>, DiffError> {
    let sections = parse(diff)?;
    // Resolved path → (path as named, original bytes if any, new content or None to delete).
    let mut pending: BTreeMap<PathBuf, Pending> = BTreeMap::new();
    let mut changes = Vec::new();
    for section in &sections {
        let (name, kind) = match (&section.old, &section.new) {
            (None, Some(new)) => (new, ChangeKind::Created),
            (Some(old), None) => (old, ChangeKind::Deleted),
            (Some(old), Some(new)) if old == new => (new, ChangeKind::Modified),
            (Some(old), Some(new)) => {
                return Err(DiffError::File {
                    path: new.clone(),
                    reason: format!(
                        "renames (from {old}) are not supported; create the new file and delete the old one"
                    ),
                });
            }
            (None, None) => {
                return Err(DiffError::Parse(
                    "a section has /dev/null on both sides".into(),
                ));
            }
        };
        let file_error = |reason: &str| DiffError::File {
            path: name.clone(),
            reason: reason.to_owned(),
        };
        let path = confine(root, name).map_err(|source| DiffError::Path {
            path: name.clone(),
            source,
        })?;
        let current = match pending.get(&path) {
            Some(entry) => entry.content.clone(),
            None if fs::symlink_metadata(&path).is_ok() => {
                Some(read_utf8(&path).map_err(|reason| file_error(&reason))?)
            }
            None => None,
        };
        let base = match (kind, current) {
            (ChangeKind::Created, Some(_)) => {
                return Err(file_error(
                    "already exists; diff against it instead of /dev/null",
                ));
            }
            (ChangeKind::Created, None) => String::new(),
            (_, None) => return Err(file_error("no such file")),
            (_, Some(text)) => text,
        };
        let patch_text = format!("--- a\n+++ b\n{}", section.hunks);
        let patch = diffy::Patch::from_str(&patch_text)
            .map_err(|e| DiffError::Parse(format!("{name}: {e}")))?;
        let patched = diffy::apply(&base, &patch).map_err(|e| DiffError::Hunk {
            path: name.clone(),
            hunk: hunk_number(&e),
        })?;
        let content = if kind == ChangeKind::Deleted {
            if !patched.trim().is_empty() {
                return Err(file_error(
                    "the diff deletes the file but does not remove all of its lines",
                ));
            }
            None
        } else {
            Some(patched)
        };
        match pending.get_mut(&path) {
            Some(entry) => entry.content = content,
            None => {
                let original = fs::read(&path).ok();
                pending.insert(
                    path,
                    Pending {
                        name: name.clone(),
                        original,
                        content,
                    },
                );
            }
        }
        // A file named twice keeps one entry: created-then-deleted cancels out.
        match changes.iter().position(|c: &FileChange| &c.path == name) {
            Some(at) if kind == ChangeKind::Deleted && changes[at].kind == ChangeKind::Created => {
                changes.remove(at);
            }
            Some(at) if kind == ChangeKind::Deleted => changes[at].kind = kind,
            Some(_) => {}
            None => changes.push(FileChange {
                path: name.clone(),
                kind,
            }),
        }
    }
    write_all(&pending)?;
    Ok(changes)
}

/// A file's state while the diff is applied in memory.
struct Pending {
    name: String,
    original: Option<Vec<u8>>,
    content: Option<String>,
}

/// Writes every pending file; on the first failure restores what was already written.
fn write_all(pending: &BTreeMap<PathBuf, Pending>) -> Result<(), DiffError> {
    let mut done: Vec<(&PathBuf, &Pending)> = Vec::new();
    for (path, entry) in pending {
        let result = match &entry.content {
            None => fs::remove_file(path),
            Some(content) => path
                .parent()
                .map_or(Ok(()), fs::create_dir_all)
                .and_then(|()| fs::write(path, content)),
        };
        if let Err(source) = result {
            for (path, entry) in done {
                // Best effort: the original state is what the model saw last.
                let _ = match &entry.original {
                    Some(bytes) => fs::write(path, bytes),
                    None => fs::remove_file(path),
                };
            }
            return Err(DiffError::Io {
                path: entry.name.clone(),
                source,
            });
        }
        done.push((path, entry));
    }
    Ok(())
}

/// A file's text for patching: binary and non-UTF-8 files are refused (patching them as
/// text would corrupt them).
fn read_utf8(path: &Path) -> Result<String, String> {
    let text = read_text(path)?;
    if text.contains(char::REPLACEMENT_CHARACTER) {
        let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
        return String::from_utf8(bytes).map_err(|_| "not UTF-8 text; use write_file".to_owned());
    }
    Ok(text)
}

/// The hunk number in diffy's error ("error applying hunk #N").
fn hunk_number(error: &diffy::ApplyError) -> usize {
    let text = error.to_string();
    text.rsplit('#')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(1)
}

/// Splits `diff` into file sections with recomputed hunk headers.
fn parse(diff: &str) -> Result<Vec<Section>, DiffError> {
    let lines: Vec<&str> = diff.split_inclusive('\n').collect();
    let mut sections: Vec<Section> = Vec::new();
    // `Some` while inside a section; the current hunk's header and body lines.
    let mut current: Option<Section> = None;
    let mut hunk: Option<(&str, Vec<&str>)> = None;
    let mut git_header: Option<&str> = None;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let starts_file = line.starts_with("--- ")
            && lines.get(i + 1).is_some_and(|l| l.starts_with("+++ "))
            && (hunk.is_none() || lines.get(i + 2).is_some_and(|l| l.starts_with("@@")));
        if line.starts_with("diff --git ") || starts_file {
            finish_hunk(&mut current, &mut hunk);
            if let Some(section) = current.take() {
                sections.push(section);
            }
            if starts_file {
                current = Some(Section {
                    old: file_name(line, "--- ", "a/"),
                    new: file_name(lines[i + 1], "+++ ", "b/"),
                    hunks: String::new(),
                    next_old: 1,
                    next_new: 1,
                });
                git_header = None;
                i += 2;
                continue;
            }
            git_header = Some(line.trim_end());
        } else if line.starts_with("@@") {
            if current.is_none() {
                return Err(DiffError::Parse(format!(
                    "hunk header at line {} before any `--- a/path` / `+++ b/path` header",
                    i + 1
                )));
            }
            finish_hunk(&mut current, &mut hunk);
            hunk = Some((line, Vec::new()));
        } else if let Some((_, body)) = hunk.as_mut() {
            body.push(line);
        } else if let Some(header) = git_header.filter(|_| line.starts_with("Binary files")) {
            return Err(DiffError::Parse(format!(
                "binary patches are not supported ({header})"
            )));
        }
        // Anything else outside a hunk is preamble (`index …`, `new file mode …`, prose).
        i += 1;
    }
    finish_hunk(&mut current, &mut hunk);
    if let Some(section) = current.take() {
        sections.push(section);
    }
    if let Some(header) = git_header {
        return Err(DiffError::Parse(format!(
            "`{header}` has no `---`/`+++` lines (mode-only, binary or rename changes are not \
             supported; use write_file)"
        )));
    }
    if sections.is_empty() {
        return Err(DiffError::Parse(
            "no `--- a/path` / `+++ b/path` file header found".into(),
        ));
    }
    if let Some(empty) = sections.iter().find(|s| s.hunks.is_empty()) {
        let name = empty
            .new
            .as_ref()
            .or(empty.old.as_ref())
            .map_or("?", String::as_str);
        return Err(DiffError::Parse(format!("{name}: no hunks")));
    }
    Ok(sections)
}

/// The path of a `---`/`+++` line without its `a/`/`b/` prefix, or `None` for `/dev/null`.
fn file_name(line: &str, marker: &str, prefix: &str) -> Option<String> {
    let rest = line
        .strip_prefix(marker)
        .unwrap_or(line)
        .trim_end_matches(['\n', '\r']);
    // A tab separates an optional timestamp.
    let name = rest.split('\t').next().unwrap_or(rest).trim();
    let name = name
        .strip_prefix('"')
        .and_then(|n| n.strip_suffix('"'))
        .unwrap_or(name);
    if name == "/dev/null" {
        return None;
    }
    Some(name.strip_prefix(prefix).unwrap_or(name).to_owned())
}

/// Appends the open hunk to the section, with its header's counts recomputed from its body
/// and its start lines kept in order after the previous hunk's (diffy requires that; models
/// get them wrong, and the hunk is placed by its context anyway).
fn finish_hunk(section: &mut Option<Section>, hunk: &mut Option<(&str, Vec<&str>)>) {
    let (Some(section), Some((header, mut body))) = (section.as_mut(), hunk.take()) else {
        return;
    };
    // Blank lines after the last hunk line are the end of the model's text, not context.
    while body
        .last()
        .is_some_and(|l| l.trim_end_matches(['\n', '\r']).is_empty())
    {
        body.pop();
    }
    let header = HunkHeader::parse(header);
    let (mut old_len, mut new_len) = (0, 0);
    let mut body_text = String::new();
    for line in &body {
        match line.as_bytes().first() {
            Some(b'-') => old_len += 1,
            Some(b'+') => new_len += 1,
            Some(b'\\') => {}
            // Context (a bare empty line is context whose leading space got lost); any other
            // line is left for diffy to reject with its message.
            _ => {
                old_len += 1;
                new_len += 1;
            }
        }
        body_text.push_str(line);
    }
    if !body_text.is_empty() && !body_text.ends_with('\n') {
        body_text.push('\n');
    }
    let old_start = header.old.unwrap_or(section.next_old).max(section.next_old);
    let new_start = header.new.unwrap_or(section.next_new).max(section.next_new);
    section.next_old = old_start + old_len;
    section.next_new = new_start + new_len;
    // An empty range is written as starting at the line before it (0 for a new file).
    let written = |start: usize, len: usize| if len == 0 { start - 1 } else { start };
    section.hunks.push_str(&format!(
        "@@ -{},{old_len} +{},{new_len} @@{}\n{body_text}",
        written(old_start, old_len),
        written(new_start, new_len),
        header.context,
    ));
}

/// What a hunk header (`@@ -a,b +c,d @@ context`) says. Models also write `@@ @@` without
/// numbers; such a hunk goes after the previous one and is placed by its context.
struct HunkHeader {
    /// First old line the hunk covers (1-based), if stated.
    old: Option<usize>,
    /// First new line the hunk covers (1-based), if stated.
    new: Option<usize>,
    /// The function context after the second `@@`, with its leading space.
    context: String,
}

impl HunkHeader {
    fn parse(header: &str) -> Self {
        let header = header.trim_end_matches(['\n', '\r']);
        let inner = header.strip_prefix("@@").unwrap_or(header);
        let (ranges, context) = inner.split_once("@@").unwrap_or((inner, ""));
        let start = |marker: char| {
            let range = ranges
                .split_whitespace()
                .find_map(|r| r.strip_prefix(marker))?;
            let (start, len) = range.split_once(',').unwrap_or((range, "1"));
            let (start, len) = (start.parse::<usize>().ok()?, len.parse::<usize>().ok()?);
            // `-0,0` / `-5,0`: an empty range names the line before it.
            Some(if len == 0 { start + 1 } else { start.max(1) })
        };
        let context = context.trim();
        Self {
            old: start('-'),
            new: start('+'),
            context: if context.is_empty() {
                String::new()
            } else {
                format!(" {context}")
            },
        }
    }
}

#[cfg(test)]
mod tests;
