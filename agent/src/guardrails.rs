//! Decides whether a change may be committed: the Agent's size limits
//! (`limits.maxChangedFiles`, `limits.maxChangedLines`), its path guardrails (the built-in
//! [`DEFAULT_FORBIDDEN_PATHS`] plus `guardrails.forbiddenPaths`, minus
//! `guardrails.allowedPaths`), no binary content, and no credentials (see
//! [`crate::secret_scan`]). Pure: the input is the workspace's [`ChangeSet`].
//!
//! Patterns are globs matched against repository paths with `/` separators, ignoring case:
//! `*` stays within one directory, `**` crosses directories, and a pattern that names a
//! directory (`deploy`, `.github/workflows`) covers everything under it.

use countersign_crds::agent::{AgentLimits, DEFAULT_FORBIDDEN_PATHS, Guardrails};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::secret_scan::{self, Finding};
use crate::workspace::{ChangeSet, ChangeStatus};

/// Where a forbidden pattern comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatternSource {
    /// The built-in list, [`DEFAULT_FORBIDDEN_PATHS`].
    BuiltIn,
    /// The Agent's `guardrails.forbiddenPaths`.
    Agent,
}

/// The first concrete reason a change may not be committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// More files changed than `limits.maxChangedFiles`.
    TooManyFiles {
        /// Files changed.
        changed: usize,
        /// The limit.
        max: u32,
    },
    /// More lines (added plus removed) changed than `limits.maxChangedLines`.
    TooManyLines {
        /// Lines changed.
        changed: u64,
        /// The limit.
        max: u32,
    },
    /// A file matches a forbidden path that no allowed path lifts.
    ForbiddenPath {
        /// The file.
        path: String,
        /// The forbidden pattern it matches.
        pattern: String,
        /// Where the pattern comes from.
        source: PatternSource,
    },
    /// A file with binary content was added or changed.
    BinaryFile {
        /// The file.
        path: String,
    },
    /// An added line looks like a credential.
    Secret(Finding),
    /// A pattern of the Agent's guardrails is not a valid glob (the Agent's admission
    /// should have refused it).
    InvalidPattern {
        /// `guardrails.forbiddenPaths` or `guardrails.allowedPaths`.
        field: &'static str,
        /// The pattern.
        pattern: String,
        /// Why it is invalid.
        error: String,
    },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::TooManyFiles { changed, max } => write!(
                f,
                "{changed} files changed; this agent may change at most {max} \
                 (limits.maxChangedFiles)"
            ),
            Violation::TooManyLines { changed, max } => write!(
                f,
                "{changed} lines changed (added plus removed); this agent may change at most \
                 {max} (limits.maxChangedLines)"
            ),
            Violation::ForbiddenPath {
                path,
                pattern,
                source,
            } => {
                let origin = match source {
                    PatternSource::BuiltIn => "built in",
                    PatternSource::Agent => "guardrails.forbiddenPaths",
                };
                write!(
                    f,
                    "{path} matches the forbidden path {pattern} ({origin}); to let this agent \
                     change it, add it to guardrails.allowedPaths"
                )
            }
            Violation::BinaryFile { path } => write!(
                f,
                "{path} has binary content; agents may not add or change binary files"
            ),
            Violation::Secret(finding) => write!(
                f,
                "{}:{} adds what looks like {}; credentials must not be committed",
                finding.path, finding.line, finding.kind
            ),
            Violation::InvalidPattern {
                field,
                pattern,
                error,
            } => write!(f, "{field} has an invalid pattern {pattern:?}: {error}"),
        }
    }
}

/// Checks `changes` against the Agent's limits and guardrails. An empty change set passes
/// (the caller reports "no changes").
pub fn check(
    changes: &ChangeSet,
    limits: &AgentLimits,
    guardrails: &Guardrails,
) -> Result<(), Violation> {
    if changes.files.len() > limits.max_changed_files as usize {
        return Err(Violation::TooManyFiles {
            changed: changes.files.len(),
            max: limits.max_changed_files,
        });
    }
    if changes.changed_lines() > u64::from(limits.max_changed_lines) {
        return Err(Violation::TooManyLines {
            changed: changes.changed_lines(),
            max: limits.max_changed_lines,
        });
    }
    let rules = PathRules::new(guardrails)?;
    for file in &changes.files {
        for path in file.paths() {
            if let Some((pattern, source)) = rules.forbidden(path) {
                return Err(Violation::ForbiddenPath {
                    path: path.to_owned(),
                    pattern: pattern.to_owned(),
                    source,
                });
            }
        }
    }
    if let Some(file) = changes
        .files
        .iter()
        .find(|f| f.binary && f.status != ChangeStatus::Deleted)
    {
        return Err(Violation::BinaryFile {
            path: file.path.clone(),
        });
    }
    if let Some(finding) = secret_scan::scan(changes).into_iter().next() {
        return Err(Violation::Secret(finding));
    }
    Ok(())
}

/// The forbidden and allowed path patterns, compiled once per check.
struct PathRules {
    forbidden: GlobSet,
    forbidden_patterns: Vec<(String, PatternSource)>,
    allowed: GlobSet,
}

impl PathRules {
    fn new(guardrails: &Guardrails) -> Result<Self, Violation> {
        let forbidden_patterns: Vec<(String, PatternSource)> = DEFAULT_FORBIDDEN_PATHS
            .iter()
            .map(|p| ((*p).to_owned(), PatternSource::BuiltIn))
            .chain(
                guardrails
                    .forbidden_paths
                    .iter()
                    .map(|p| (p.clone(), PatternSource::Agent)),
            )
            .collect();
        let forbidden = glob_set(
            "guardrails.forbiddenPaths",
            forbidden_patterns.iter().map(|(p, _)| p.as_str()),
        )?;
        let allowed = glob_set(
            "guardrails.allowedPaths",
            guardrails.allowed_paths.iter().map(String::as_str),
        )?;
        Ok(Self {
            forbidden,
            forbidden_patterns,
            allowed,
        })
    }

    /// The forbidden pattern `path` falls under, unless an allowed pattern lifts it.
    fn forbidden(&self, path: &str) -> Option<(&str, PatternSource)> {
        let hit = self.first_match(&self.forbidden, path)?;
        if self.first_match(&self.allowed, path).is_some() {
            return None;
        }
        let (pattern, source) = &self.forbidden_patterns[hit];
        Some((pattern, *source))
    }

    /// The index of the first pattern of `set` that matches `path` or a directory above it.
    fn first_match(&self, set: &GlobSet, path: &str) -> Option<usize> {
        let trimmed = path.trim_matches('/');
        let ancestors = trimmed
            .match_indices('/')
            .map(|(at, _)| &trimmed[..at])
            .chain(std::iter::once(trimmed));
        ancestors
            .filter_map(|candidate| set.matches(candidate).into_iter().min())
            .min()
    }
}

fn glob_set<'a>(
    field: &'static str,
    patterns: impl Iterator<Item = &'a str>,
) -> Result<GlobSet, Violation> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = GlobBuilder::new(pattern.trim_matches('/'))
            .literal_separator(true)
            .case_insensitive(true)
            .build()
            .map_err(|e| Violation::InvalidPattern {
                field,
                pattern: pattern.to_owned(),
                error: e.kind().to_string(),
            })?;
        set.add(glob);
    }
    set.build().map_err(|e| Violation::InvalidPattern {
        field,
        pattern: String::new(),
        error: e.to_string(),
    })
}

#[cfg(test)]
mod tests;
