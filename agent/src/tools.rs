//! The workspace tools a chat model works with: list, read, search, write, apply a diff and
//! finish. Their JSON-schema definitions ([`specs`]) are rendered by each provider's wire
//! format; [`Toolbox::call`] runs one call from the model.
//!
//! Every path is confined to the workspace root ([`confine`]): relative only, no escape with
//! `..`, nothing inside `.git/`, no symlink that resolves outside the root. A failing call is
//! a value ([`ToolOutcome::Error`]) the session feeds back to the model, never a panic: the
//! model's arguments are untrusted input.

use std::fs;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use serde_json::{Value, json};

/// Most bytes of one tool result sent back to the model (`read_file` has its own caps).
pub const MAX_OUTPUT_BYTES: usize = 30 * 1024;
/// Most lines `read_file` returns per call.
pub const MAX_READ_LINES: usize = 2000;
/// Most bytes of file text `read_file` returns per call.
pub const MAX_READ_BYTES: usize = 100 * 1024;
/// Largest file `read_file`, `search` and `apply_diff` open.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// Default and hard cap of `list_files` entries.
const LIST_DEFAULT: usize = 500;
const LIST_MAX: usize = 5000;
/// Default and hard cap of `search` results.
const SEARCH_DEFAULT: usize = 100;
const SEARCH_MAX: usize = 1000;
/// Longest matched line `search` shows.
const SEARCH_LINE_CHARS: usize = 300;
/// Most directory entries one walk visits (a guard against enormous trees).
const WALK_MAX_ENTRIES: usize = 200_000;
/// How many leading bytes decide whether a file is binary (git's heuristic: a NUL byte).
const BINARY_PROBE: usize = 8000;

/// Which tools a job gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read, search, write, apply diffs, finish (a `Change` job).
    ReadWrite,
    /// Read, search, finish (`Plan` and `Analyse` jobs).
    ReadOnly,
}

/// One tool's definition: what both wire formats render as a function/tool.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    /// The tool's name, e.g. `read_file`.
    pub name: &'static str,
    /// What it does, for the model.
    pub description: &'static str,
    /// JSON schema of its arguments (an `object`).
    pub parameters: Value,
}

/// What the model said when it called `finish`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finish {
    /// A short summary of what was done.
    pub summary: String,
    /// The plan or analysis, in Markdown.
    pub report: Option<String>,
    /// Guidance mode: the question the model asked instead of finishing (compact JSON of a
    /// [`countersign_crds::guidance::Question`]).
    pub question: Option<String>,
}

/// The result of one tool call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolOutcome {
    /// The tool ran; the text goes back to the model.
    Output(String),
    /// The call failed; the text (starting with `error:`) goes back to the model.
    Error(String),
    /// The model called `finish` with valid arguments.
    Finished(Finish),
}

impl ToolOutcome {
    fn error(message: impl std::fmt::Display) -> Self {
        Self::Error(cap_output(format!("error: {message}")))
    }
}

/// Why a path is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Absolute paths are not accepted.
    #[error("absolute paths are not allowed; use a path relative to the workspace root")]
    Absolute,
    /// The path leaves the workspace (`..` or a symlink pointing outside).
    #[error("path escapes the workspace")]
    Escapes,
    /// The path is inside `.git/`.
    #[error("paths inside .git/ are not accessible")]
    GitDir,
    /// The path is not valid (empty component, NUL byte, a dangling symlink …).
    #[error("invalid path: {0}")]
    Invalid(String),
}

/// Resolves `relative` inside the workspace `root` to an absolute path whose every existing
/// part (symlinks resolved) stays inside the root and outside `.git/`. The path need not
/// exist (for writes); its deepest existing ancestor is what gets resolved. An empty path or
/// `.` is the root itself.
pub fn confine(root: &Path, relative: &str) -> Result<PathBuf, PathError> {
    let root = root
        .canonicalize()
        .map_err(|e| PathError::Invalid(format!("the workspace root cannot be resolved: {e}")))?;
    if relative.contains('\0') {
        return Err(PathError::Invalid("NUL byte in path".into()));
    }
    let mut lexical = PathBuf::new();
    for component in Path::new(relative).components() {
        match component {
            Component::Prefix(_) | Component::RootDir => return Err(PathError::Absolute),
            Component::CurDir => {}
            Component::ParentDir => {
                if !lexical.pop() {
                    return Err(PathError::Escapes);
                }
            }
            Component::Normal(part) => {
                if part == ".git" {
                    return Err(PathError::GitDir);
                }
                lexical.push(part);
            }
        }
    }
    // Resolve the deepest part that exists (a dangling symlink counts as existing, and then
    // fails to resolve); the rest is created later and contains no symlinks yet.
    let mut existing = root.join(&lexical);
    let mut missing = Vec::new();
    while fs::symlink_metadata(&existing).is_err() {
        match (
            existing.file_name().map(ToOwned::to_owned),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                missing.push(name);
                existing = parent.to_path_buf();
            }
            _ => return Err(PathError::Escapes),
        }
    }
    let resolved = existing
        .canonicalize()
        .map_err(|_| PathError::Invalid(format!("{relative} is a dangling symlink")))?;
    let inside = resolved
        .strip_prefix(&root)
        .map_err(|_| PathError::Escapes)?;
    if inside.components().any(|c| c.as_os_str() == ".git") {
        return Err(PathError::GitDir);
    }
    Ok(missing
        .iter()
        .rev()
        .fold(resolved, |path, part| path.join(part)))
}

/// The definitions of the tools a job with `access` gets, in a stable order.
pub fn specs(access: Access) -> Vec<ToolSpec> {
    let mut specs = vec![
        ToolSpec {
            name: "list_files",
            description: "List the files under a directory of the workspace, recursively, sorted, \
                          skipping .git/. Paths are relative to the workspace root.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "Directory relative to the workspace root; default: the root."},
                    "max": {"type": "integer", "minimum": 1, "description": "Most files to list (default 500)."}
                },
                "required": []
            }),
        },
        ToolSpec {
            name: "read_file",
            description: "Read a text file of the workspace. Lines are numbered (1-based); at \
                          most 2000 lines or 100 KB per call, so read big files in ranges.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "File path relative to the workspace root."},
                    "start_line": {"type": "integer", "minimum": 1, "description": "First line to read (1-based, default 1)."},
                    "end_line": {"type": "integer", "minimum": 1, "description": "Last line to read (inclusive)."}
                },
                "required": ["path"]
            }),
        },
        ToolSpec {
            name: "search",
            description: "Search the workspace's text files for a regular expression (Rust regex \
                          syntax). Answers `path:line:text` per matching line.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "pattern": {"type": "string", "description": "Regular expression to find."},
                    "path": {"type": "string", "description": "File or directory to search, relative to the workspace root; default: the root."},
                    "max_results": {"type": "integer", "minimum": 1, "description": "Most matching lines to return (default 100)."}
                },
                "required": ["pattern"]
            }),
        },
    ];
    if access == Access::ReadWrite {
        specs.push(ToolSpec {
            name: "write_file",
            description: "Create or overwrite a file of the workspace with the given content \
                          (parent directories are created). Prefer apply_diff for small edits \
                          of existing files.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string", "description": "File path relative to the workspace root."},
                    "content": {"type": "string", "description": "The complete new content of the file."}
                },
                "required": ["path", "content"]
            }),
        });
        specs.push(ToolSpec {
            name: "apply_diff",
            description: "Apply a unified diff (as `git diff` prints it: `--- a/path`, \
                          `+++ b/path`, `@@` hunks with context lines) to one or more files. \
                          `/dev/null` creates or deletes a file. Nothing is changed unless every \
                          hunk applies.",
            parameters: json!({
                "type": "object",
                "properties": {
                    "diff": {"type": "string", "description": "The unified diff."}
                },
                "required": ["diff"]
            }),
        });
    }
    specs.push(ToolSpec {
        name: "finish",
        description: "Call once when the job is done. `summary` says briefly what you did; \
                      `report` holds the plan or analysis in Markdown when the job asks for one.",
        parameters: json!({
            "type": "object",
            "properties": {
                "summary": {"type": "string", "description": "One or two sentences on what was done."},
                "report": {"type": "string", "description": "The plan or analysis, in Markdown (required for plan and analysis jobs)."}
            },
            "required": ["summary"]
        }),
    });
    specs
}

/// Runs the model's tool calls in one workspace.
#[derive(Clone, Debug)]
pub struct Toolbox {
    root: PathBuf,
    access: Access,
    report_required: bool,
    breakdown: bool,
    may_ask: bool,
    milestones: Option<crate::milestones::Milestones>,
}

impl Toolbox {
    /// Tools working in `root`. `report_required` makes `finish` insist on a `report`
    /// (plan and analysis jobs).
    pub fn new(root: &Path, access: Access, report_required: bool) -> Self {
        Self {
            root: root.to_path_buf(),
            access,
            report_required,
            breakdown: false,
            may_ask: false,
            milestones: None,
        }
    }

    /// Offers `report_progress`, posting notes through `milestones` (observation mode).
    pub fn with_milestones(mut self, milestones: Option<crate::milestones::Milestones>) -> Self {
        self.milestones = milestones;
        self
    }

    /// Offers `ask_human` (guidance mode, while the run may still ask).
    pub fn with_questions(mut self, may_ask: bool) -> Self {
        self.may_ask = may_ask;
        self
    }

    /// Makes `finish` insist that `report` is a valid work breakdown (JSON).
    pub fn with_breakdown(mut self, breakdown: bool) -> Self {
        self.breakdown = breakdown;
        self
    }

    /// The definitions of this toolbox's tools.
    pub fn specs(&self) -> Vec<ToolSpec> {
        let mut specs = specs(self.access);
        if self.may_ask {
            specs.push(ToolSpec {
                name: "ask_human",
                description: "Stop and ask the people steering this run to decide something you \
                              should not decide alone. The run pauses until they answer (or a \
                              deadline picks `default`), then starts again with the answer.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "question": {"type": "string", "description": "The question, up to 500 characters."},
                        "options": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 5, "description": "The answers you can work with, one line each."},
                        "default": {"type": "string", "description": "The option taken if nobody answers in time."}
                    },
                    "required": ["question", "options", "default"]
                }),
            });
        }
        if self.milestones.is_some() {
            specs.push(ToolSpec {
                name: "report_progress",
                description: "Post a short progress note (one line, up to 280 characters) on the \
                              issue while you work, e.g. what you have read and what you look at \
                              next. People follow the run through these notes; post one at each \
                              milestone, at most 10.",
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "milestone": {"type": "string", "description": "The note, one line."}
                    },
                    "required": ["milestone"]
                }),
            });
        }
        specs
    }

    /// Runs tool `name` with the model's `args` (a JSON object).
    pub fn call(&self, name: &str, args: &Value) -> ToolOutcome {
        let result = match name {
            "list_files" => self.list_files(args),
            // Capped by itself (lines and bytes) with a precise "continue at" hint, which the
            // generic cap would cut off.
            "read_file" => {
                return match self.read_file(args) {
                    Ok(text) => ToolOutcome::Output(text),
                    Err(message) => ToolOutcome::error(message),
                };
            }
            "search" => self.search(args),
            "write_file" | "apply_diff" if self.access == Access::ReadOnly => Err(format!(
                "{name} is not available: this job is read-only; put your result in finish's report"
            )),
            "write_file" => self.write_file(args),
            "apply_diff" => self.apply_diff(args),
            "finish" => return self.finish(args),
            "ask_human" if self.may_ask => return self.ask(args),
            "report_progress" => match &self.milestones {
                Some(milestones) => required_str(args, "milestone")
                    .and_then(countersign_crds::progress::clean_milestone)
                    .and_then(|text| milestones.post(&text))
                    .map(|()| "posted on the issue".to_owned()),
                None => Err(format!("unknown tool {name:?}")),
            },
            other => Err(format!("unknown tool {other:?}")),
        };
        match result {
            Ok(text) => ToolOutcome::Output(cap_output(text)),
            Err(message) => ToolOutcome::error(message),
        }
    }

    fn resolve(&self, relative: &str) -> Result<PathBuf, String> {
        confine(&self.root, relative).map_err(|e| e.to_string())
    }

    fn canonical_root(&self) -> Result<PathBuf, String> {
        self.root
            .canonicalize()
            .map_err(|e| format!("the workspace root cannot be resolved: {e}"))
    }

    fn list_files(&self, args: &Value) -> Result<String, String> {
        let path = optional_str(args, "path")?.unwrap_or("");
        let max = optional_count(args, "max")?
            .unwrap_or(LIST_DEFAULT)
            .min(LIST_MAX);
        let dir = self.resolve(path)?;
        if !dir.is_dir() {
            return Err(format!("{path} is not a directory"));
        }
        let root = self.canonical_root()?;
        let files = walk(&dir);
        let mut out: Vec<String> = files.iter().take(max).map(|f| display(&root, f)).collect();
        if files.is_empty() {
            out.push("(no files)".into());
        } else if files.len() > max {
            out.push(format!(
                "… truncated: showing {max} of {} files; pass a narrower `path`",
                files.len()
            ));
        }
        Ok(out.join("\n"))
    }

    fn read_file(&self, args: &Value) -> Result<String, String> {
        let path = required_str(args, "path")?;
        let start = optional_count(args, "start_line")?.unwrap_or(1);
        let end = optional_count(args, "end_line")?;
        if start == 0 || end.is_some_and(|end| end < start) {
            return Err("start_line must be ≥ 1 and end_line ≥ start_line".into());
        }
        let file = self.resolve(path)?;
        let text = read_text(&file).map_err(|e| format!("{path}: {e}"))?;
        let lines: Vec<&str> = text.lines().collect();
        if lines.is_empty() {
            return Ok(format!("({path} is empty)"));
        }
        if start > lines.len() {
            return Err(format!("{path} has only {} lines", lines.len()));
        }
        let last = end
            .unwrap_or(usize::MAX)
            .min(lines.len())
            .min(start + MAX_READ_LINES - 1);
        let mut out = String::new();
        let mut shown = start - 1;
        for (index, line) in lines.iter().enumerate().take(last).skip(start - 1) {
            let numbered = format!("{:>6}\t{line}\n", index + 1);
            if out.len() + numbered.len() > MAX_READ_BYTES {
                break;
            }
            out.push_str(&numbered);
            shown = index + 1;
        }
        if shown < start {
            return Err(format!("line {start} of {path} is too long to show"));
        }
        if start > 1 || shown < lines.len() {
            out.push_str(&format!("(lines {start}-{shown} of {})", lines.len()));
            if shown < lines.len() {
                out.push_str(&format!("; call again with start_line={}", shown + 1));
            }
        }
        Ok(out)
    }

    fn search(&self, args: &Value) -> Result<String, String> {
        let pattern = required_str(args, "pattern")?;
        let path = optional_str(args, "path")?.unwrap_or("");
        let max = optional_count(args, "max_results")?
            .unwrap_or(SEARCH_DEFAULT)
            .min(SEARCH_MAX);
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| format!("invalid regular expression: {e}"))?;
        let start = self.resolve(path)?;
        let root = self.canonical_root()?;
        let files = if start.is_file() {
            vec![start]
        } else if start.is_dir() {
            walk(&start)
        } else {
            return Err(format!("{path} does not exist"));
        };
        let mut hits = Vec::new();
        let mut truncated = false;
        'files: for file in files.iter().filter(|f| !f.is_symlink()) {
            let Ok(text) = read_text(file) else { continue };
            for (index, line) in text.lines().enumerate() {
                if regex.is_match(line) {
                    if hits.len() == max {
                        truncated = true;
                        break 'files;
                    }
                    let shown: String = line.chars().take(SEARCH_LINE_CHARS).collect();
                    hits.push(format!("{}:{}:{shown}", display(&root, file), index + 1));
                }
            }
        }
        if hits.is_empty() {
            return Ok("(no matches)".into());
        }
        if truncated {
            hits.push(format!(
                "… truncated at {max} results; narrow the pattern or `path`"
            ));
        }
        Ok(hits.join("\n"))
    }

    fn write_file(&self, args: &Value) -> Result<String, String> {
        let path = required_str(args, "path")?;
        let content = required_str(args, "content")?;
        let file = self.resolve(path)?;
        if file == self.canonical_root()? || file.is_dir() {
            return Err(format!("{path} is a directory"));
        }
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {path}'s directory: {e}"))?;
        }
        fs::write(&file, content).map_err(|e| format!("cannot write {path}: {e}"))?;
        Ok(format!("wrote {} bytes to {path}", content.len()))
    }

    fn apply_diff(&self, args: &Value) -> Result<String, String> {
        let diff = required_str(args, "diff")?;
        let changes = crate::diff::apply(&self.root, diff).map_err(|e| e.to_string())?;
        let lines: Vec<String> = changes.iter().map(ToString::to_string).collect();
        Ok(format!("applied:\n{}", lines.join("\n")))
    }

    fn finish(&self, args: &Value) -> ToolOutcome {
        let summary = match required_str(args, "summary") {
            Ok(summary) if !summary.trim().is_empty() => summary.trim().to_owned(),
            Ok(_) => return ToolOutcome::error("`summary` must not be empty"),
            Err(message) => return ToolOutcome::error(message),
        };
        let report = match optional_str(args, "report") {
            Ok(report) => report
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
            Err(message) => return ToolOutcome::error(message),
        };
        if self.report_required && report.is_none() {
            return ToolOutcome::error(
                "this job needs its result in `report` (Markdown); call finish again with it",
            );
        }
        // A breakdown is checked here so the model can fix it while it still can.
        if self.breakdown
            && let Some(text) = &report
            && let Err(why) = countersign_crds::breakdown::Breakdown::parse(text)
        {
            return ToolOutcome::error(format!("{why}; call finish again with a fixed breakdown"));
        }
        ToolOutcome::Finished(Finish {
            summary,
            report,
            question: None,
        })
    }

    fn ask(&self, args: &Value) -> ToolOutcome {
        let question: countersign_crds::guidance::Question =
            match serde_json::from_value(args.clone()) {
                Ok(q) => q,
                Err(e) => return ToolOutcome::error(format!("invalid question: {e}")),
            };
        if let Err(why) = question.check() {
            return ToolOutcome::error(format!("{why}; ask again"));
        }
        ToolOutcome::Finished(Finish {
            summary: format!("Asked: {}", question.question),
            report: None,
            question: Some(question.to_json()),
        })
    }
}

/// Cuts `text` to [`MAX_OUTPUT_BYTES`] (at a character boundary) with a marker.
pub fn cap_output(mut text: String) -> String {
    if text.len() > MAX_OUTPUT_BYTES {
        let mut cut = MAX_OUTPUT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n… [output truncated at 30 KB]");
    }
    text
}

/// Reads a text file: refuses directories, files over [`MAX_FILE_BYTES`] and binary files
/// (a NUL byte early on); other invalid UTF-8 is replaced.
pub(crate) fn read_text(path: &Path) -> Result<String, String> {
    let meta = fs::metadata(path).map_err(|_| "no such file".to_owned())?;
    if meta.is_dir() {
        return Err("is a directory".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("file too large ({} bytes)", meta.len()));
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read: {e}"))?;
    if bytes[..bytes.len().min(BINARY_PROBE)].contains(&0) {
        return Err("binary file; not shown".into());
    }
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// `path` relative to `root`, with `/` separators, for output.
fn display(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let text = relative.to_string_lossy().replace('\\', "/");
    if text.is_empty() { ".".into() } else { text }
}

/// Every file (and symlink) under `dir`, sorted, skipping `.git` and not following
/// symlinked directories.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    let mut visited = 0;
    while let Some(current) = pending.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            if visited > WALK_MAX_ENTRIES {
                break;
            }
            if entry.file_name() == ".git" {
                continue;
            }
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(_) => files.push(entry.path()),
                Err(_) => {}
            }
        }
    }
    files.sort();
    files
}

fn required_str<'a>(args: &'a Value, key: &str) -> Result<&'a str, String> {
    optional_str(args, key)?.ok_or_else(|| format!("missing required string argument `{key}`"))
}

fn optional_str<'a>(args: &'a Value, key: &str) -> Result<Option<&'a str>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("argument `{key}` must be a string")),
    }
}

/// A positive integer argument; models sometimes send numbers as strings, which is accepted.
fn optional_count(args: &Value, key: &str) -> Result<Option<usize>, String> {
    let bad = || format!("argument `{key}` must be a positive integer");
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests;
