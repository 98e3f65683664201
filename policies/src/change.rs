//! The facts about a pull request that a RiskPolicy scores.
//!
//! The controller builds a [`Change`] from GitHub's pull request files, labels and author;
//! `countersign policy eval` builds one from a local git diff or a JSON file. Its JSON form
//! (camelCase, unknown fields rejected) is also the `input` document a policy's Rego module sees.

use serde::{Deserialize, Serialize};

pub use countersign_crds::risk_policy::AuthorKind;

/// One changed file of a pull request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangedFile {
    /// Repository-relative path with `/` separators, e.g. `migrations/0042_add_index.sql`.
    pub path: String,
    /// Lines added.
    #[serde(default)]
    pub additions: u32,
    /// Lines deleted.
    #[serde(default)]
    pub deletions: u32,
}

impl ChangedFile {
    /// A changed file with the given line counts.
    pub fn new(path: impl Into<String>, additions: u32, deletions: u32) -> Self {
        Self {
            path: path.into(),
            additions,
            deletions,
        }
    }

    /// Lines touched: additions plus deletions.
    pub fn lines(&self) -> u64 {
        u64::from(self.additions) + u64::from(self.deletions)
    }
}

/// Everything a RiskPolicy looks at when it scores a pull request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Change {
    /// The changed files, in the order GitHub (or git) lists them. The first file that
    /// matches a rule is the one quoted in that rule's reason.
    #[serde(default)]
    pub files: Vec<ChangedFile>,
    /// The pull request's labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Who wrote the change.
    #[serde(default = "default_author_kind")]
    pub author_kind: AuthorKind,
    /// The branch the pull request merges into, e.g. `main`; `None` when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// Globs of the paths a GitOps tool syncs to clusters (the Project's `gitops.paths`),
    /// e.g. `deploy/production/**`. A glob without wildcards also covers everything below it.
    #[serde(default)]
    pub gitops_paths: Vec<String>,
    /// Why `files` is not the whole change, when it is not (GitHub listed fewer files than
    /// the pull request changes and git could not read them either). The policy then fails
    /// closed: every factor scores 10 with this reason, and nothing approves itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

fn default_author_kind() -> AuthorKind {
    AuthorKind::Human
}

impl Default for Change {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            labels: Vec::new(),
            author_kind: default_author_kind(),
            base_branch: None,
            gitops_paths: Vec::new(),
            incomplete: None,
        }
    }
}

impl Change {
    /// A change by a human touching `paths`, ten added lines each.
    pub fn touching<I, S>(paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            files: paths
                .into_iter()
                .map(|p| ChangedFile::new(p, 10, 0))
                .collect(),
            ..Self::default()
        }
    }

    /// Adds a changed file.
    pub fn with_file(mut self, path: impl Into<String>, additions: u32, deletions: u32) -> Self {
        self.files
            .push(ChangedFile::new(path, additions, deletions));
        self
    }

    /// Adds a label.
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.labels.push(label.into());
        self
    }

    /// Sets the author kind.
    pub fn with_author_kind(mut self, kind: AuthorKind) -> Self {
        self.author_kind = kind;
        self
    }

    /// Sets the base branch.
    pub fn with_base_branch(mut self, branch: impl Into<String>) -> Self {
        self.base_branch = Some(branch.into());
        self
    }

    /// Adds a GitOps path glob.
    pub fn with_gitops_path(mut self, glob: impl Into<String>) -> Self {
        self.gitops_paths.push(glob.into());
        self
    }

    /// Marks the file list as incomplete, saying why.
    pub fn incomplete_because(mut self, why: impl Into<String>) -> Self {
        self.incomplete = Some(why.into());
        self
    }

    /// Lines touched over all files.
    pub fn total_lines(&self) -> u64 {
        self.files.iter().map(ChangedFile::lines).sum()
    }
}

/// The lower-case name of an author kind, as written in policies (`human`, `bot`, `ai`).
pub fn author_kind_name(kind: AuthorKind) -> &'static str {
    match kind {
        AuthorKind::Human => "human",
        AuthorKind::Bot => "bot",
        AuthorKind::Ai => "ai",
    }
}
