//! `countersign policy`: try a RiskPolicy offline, before installing anything.
//!
//! `eval` scores a change — the diff between two revisions of a local git repository (read
//! with git2, from their merge base as GitHub does) or a JSON change description — and
//! prints the level, score, workflow, required roles and every factor's reason. `validate`
//! compiles policy manifests for CI on policy repositories. The deciding is done by
//! `countersign-policies`; this module only reads files and git, and prints.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use countersign_policies::{
    Assessment, AuthorKind, AutoApprove, Change, ChangedFile, CompiledPolicy, DEFAULT_POLICY_YAML,
    HitSource, factor_name, level_name, parse_policies, validate_policies,
};

/// Never-auto-approve hits listed in the table before the rest is summarised.
const MAX_LISTED_HITS: usize = 20;

/// `countersign policy …`.
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Score a change with a RiskPolicy: level, score, workflow, required roles and reasons.
    Eval(EvalArgs),
    /// Compile RiskPolicy manifests; exits non-zero listing every error with its field path.
    Validate(ValidateArgs),
}

/// Arguments of `countersign policy eval`.
#[derive(Args, Debug, Default)]
pub struct EvalArgs {
    /// RiskPolicy manifest (YAML) to use; the built-in default policy when omitted.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Local git repository whose change from --base to --head is scored.
    #[arg(long, value_name = "PATH", requires_all = ["base", "head"], conflicts_with = "change")]
    pub repo: Option<PathBuf>,
    /// The revision the pull request merges into (branch, tag or SHA).
    #[arg(long, value_name = "REV", requires = "repo")]
    pub base: Option<String>,
    /// The pull request's revision (branch, tag or SHA).
    #[arg(long, value_name = "REV", requires = "repo")]
    pub head: Option<String>,
    /// A change description as JSON: {"files": [{"path", "additions", "deletions"}],
    /// "labels", "authorKind", "baseBranch", "gitopsPaths"}.
    #[arg(long, value_name = "FILE.json", required_unless_present = "repo")]
    pub change: Option<PathBuf>,
    /// A pull request label (repeatable); added to the change's labels.
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
    /// Who wrote the change (default: human, or the JSON file's value).
    #[arg(long, value_enum, value_name = "KIND")]
    pub author_kind: Option<AuthorKindArg>,
    /// The branch the pull request merges into (default: --base when it names a local branch).
    #[arg(long, value_name = "BRANCH")]
    pub base_branch: Option<String>,
    /// A GitOps path glob of the Project, e.g. `deploy/production/**` (repeatable).
    #[arg(long = "gitops-path", value_name = "GLOB")]
    pub gitops_paths: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// Arguments of `countersign policy validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// RiskPolicy manifests (YAML, possibly several documents each).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// `--author-kind`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorKindArg {
    /// A person.
    Human,
    /// A bot or GitHub App (e.g. Dependabot).
    Bot,
    /// A Countersign agent run.
    Ai,
}

impl From<AuthorKindArg> for AuthorKind {
    fn from(kind: AuthorKindArg) -> Self {
        match kind {
            AuthorKindArg::Human => AuthorKind::Human,
            AuthorKindArg::Bot => AuthorKind::Bot,
            AuthorKindArg::Ai => AuthorKind::Ai,
        }
    }
}

/// `--output`.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputFormat {
    /// A table for people.
    #[default]
    Table,
    /// The assessment as JSON, for scripts.
    Json,
}

/// Runs a `countersign policy` command, printing to stdout. A failed validation is an `Err`
/// after the problems are printed, so the process exits non-zero.
pub fn run(command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Eval(args) => {
            let output = args.output;
            let eval = eval(&args)?;
            match output {
                OutputFormat::Table => print!("{}", render_table(&eval)),
                OutputFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&eval.assessment)
                        .context("Cannot render the assessment as JSON")?
                ),
            }
            Ok(())
        }
        PolicyCommand::Validate(args) => {
            let report = validate_files(&args.files);
            print!("{}", report.text);
            if report.ok {
                Ok(())
            } else {
                bail!("{} problem(s) found", report.problems)
            }
        }
    }
}

/// The result of `policy eval`, before printing.
#[derive(Debug)]
pub struct Evaluation {
    /// Which policy scored the change, e.g. `default (built-in)`.
    pub policy: String,
    /// The change as scored.
    pub change: Change,
    /// The decision.
    pub assessment: Assessment,
}

/// Loads the policy and the change and scores it.
pub fn eval(args: &EvalArgs) -> anyhow::Result<Evaluation> {
    let (policy_name, policy) = load_policy(args.policy.as_deref())?;
    let mut change = match (&args.repo, &args.change) {
        (Some(repo), _) => {
            let (base, head) = match (&args.base, &args.head) {
                (Some(b), Some(h)) => (b.as_str(), h.as_str()),
                _ => bail!("--repo needs --base and --head"),
            };
            change_from_git(repo, base, head)?
        }
        (None, Some(file)) => {
            let text = fs::read_to_string(file)
                .with_context(|| format!("Cannot read {}", file.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("Cannot parse {} as a change", file.display()))?
        }
        (None, None) => bail!("give --repo PATH --base REV --head REV, or --change FILE.json"),
    };
    change.labels.extend(args.labels.iter().cloned());
    change
        .gitops_paths
        .extend(args.gitops_paths.iter().cloned());
    if let Some(kind) = args.author_kind {
        change.author_kind = kind.into();
    }
    if let Some(branch) = &args.base_branch {
        change.base_branch = Some(branch.clone());
    }
    let assessment = policy.evaluate(&change);
    Ok(Evaluation {
        policy: policy_name,
        change,
        assessment,
    })
}

/// Reads and compiles the one RiskPolicy of `path`, or the built-in default.
fn load_policy(path: Option<&Path>) -> anyhow::Result<(String, CompiledPolicy)> {
    let (text, origin) = match path {
        Some(p) => (
            fs::read_to_string(p).with_context(|| format!("Cannot read {}", p.display()))?,
            p.display().to_string(),
        ),
        None => (DEFAULT_POLICY_YAML.to_owned(), "built-in".to_owned()),
    };
    let mut docs = parse_policies(&text).with_context(|| format!("Cannot read {origin}"))?;
    if docs.len() != 1 {
        let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
        bail!(
            "{origin} holds {} RiskPolicies ({}); give a file with exactly one",
            docs.len(),
            names.join(", ")
        );
    }
    let doc = docs.remove(0);
    for field in &doc.unknown_fields {
        eprintln!(
            "warning: {origin}: {field}: unknown field (ignored here, rejected by the cluster)"
        );
    }
    let compiled = CompiledPolicy::compile(&doc.policy.spec)
        .map_err(|e| {
            anyhow::anyhow!(
                "{}",
                e.errors()
                    .iter()
                    .map(|e| format!("\n  {e}"))
                    .collect::<String>()
            )
        })
        .with_context(|| format!("RiskPolicy {} in {origin} does not compile", doc.name))?;
    Ok((format!("{} ({origin})", doc.name), compiled))
}

/// The changed files between `base` and `head` of a local repository, diffed from their
/// merge base like a pull request. Renames count as a deletion plus an addition, so both
/// paths are scored. When `base` names a local branch it becomes the base branch. The line
/// counts are `git diff --no-renames --numstat base...head`'s (binary files count 0).
pub fn change_from_git(repo: &Path, base: &str, head: &str) -> anyhow::Result<Change> {
    let repo = open_without_worktree(repo)
        .with_context(|| format!("Cannot open the git repository {}", repo.display()))?;
    let commit = |rev: &str| {
        repo.revparse_single(rev)
            .and_then(|o| o.peel_to_commit())
            .with_context(|| format!("Cannot resolve {rev:?} to a commit"))
    };
    let base_commit = commit(base)?;
    let head_commit = commit(head)?;
    let from = match repo.merge_base(base_commit.id(), head_commit.id()) {
        Ok(id) => repo.find_commit(id).context("Cannot read the merge base")?,
        Err(_) => base_commit,
    };
    let (old_tree, new_tree) = (from.tree_id(), head_commit.tree_id());
    // git does not re-hash objects it reads (only `git fsck` does); libgit2 does by default,
    // with collision-detecting SHA-1, which was a third of reading the blobs.
    git2::opts::strict_hash_verification(false);
    let files = changed_files(&repo, old_tree, new_tree, None)?;
    let base_branch = repo
        .find_branch(base, git2::BranchType::Local)
        .ok()
        .map(|_| base.to_owned());
    Ok(Change {
        files,
        base_branch,
        ..Change::default()
    })
}

/// Changed files per line-counting thread: a thread opens the repository and diffs the trees
/// again (a few milliseconds), so small changes are counted by one.
const FILES_PER_THREAD: usize = 1_000;

/// At most this many threads count lines.
const MAX_THREADS: usize = 8;

/// How many threads count the lines of `files` changed files.
fn counting_threads(files: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores
        .min(MAX_THREADS)
        .min(files.div_ceil(FILES_PER_THREAD))
        .max(1)
}

/// The changed files from tree `old` to tree `new` with their line counts, in git's order.
/// Counting is most of the work and each file is independent, so large changes are split
/// between `threads` (by default one per core, see [`counting_threads`]), each with its own
/// repository handle (libgit2's are not shared between threads).
fn changed_files(
    repo: &git2::Repository,
    old: git2::Oid,
    new: git2::Oid,
    threads: Option<usize>,
) -> anyhow::Result<Vec<ChangedFile>> {
    let diff = diff_trees(repo, old, new)?;
    let threads = threads.unwrap_or_else(|| counting_threads(diff.deltas().len()));
    let git_dir = repo.path();
    let mut counted = std::thread::scope(|scope| -> anyhow::Result<Vec<(usize, ChangedFile)>> {
        let others: Vec<_> = (1..threads)
            .map(|thread| {
                scope.spawn(move || {
                    let repo = git2::Repository::open_bare(git_dir)
                        .context("Cannot open the git repository again")?;
                    let diff = diff_trees(&repo, old, new)?;
                    count_lines(&diff, thread, threads)
                })
            })
            .collect();
        let mut counted = count_lines(&diff, 0, threads)?;
        for other in others {
            let part = other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            counted.extend(part);
        }
        Ok(counted)
    })?;
    counted.sort_unstable_by_key(|(i, _)| *i);
    Ok(counted.into_iter().map(|(_, file)| file).collect())
}

fn diff_trees(
    repo: &git2::Repository,
    old: git2::Oid,
    new: git2::Oid,
) -> anyhow::Result<git2::Diff<'_>> {
    let old = repo.find_tree(old).context("Cannot read the base tree")?;
    let new = repo.find_tree(new).context("Cannot read the head tree")?;
    repo.diff_tree_to_tree(Some(&old), Some(&new), None)
        .context("Cannot diff base and head")
}

/// Lines added and removed in every `stride`-th changed file of `diff` from `first` on, with
/// the file's place in the diff; 0/0 for binary files, as `git diff --numstat` counts them.
fn count_lines(
    diff: &git2::Diff<'_>,
    first: usize,
    stride: usize,
) -> anyhow::Result<Vec<(usize, ChangedFile)>> {
    let mut files = Vec::with_capacity(diff.deltas().len() / stride + 1);
    for (i, delta) in diff.deltas().enumerate().skip(first).step_by(stride) {
        let Some(path) = delta.new_file().path().or_else(|| delta.old_file().path()) else {
            continue;
        };
        let (additions, deletions) = match git2::Patch::from_diff(diff, i)
            .with_context(|| format!("Cannot diff {}", path.display()))?
        {
            Some(patch) => {
                let (_, a, d) = patch
                    .line_stats()
                    .with_context(|| format!("Cannot count lines of {}", path.display()))?;
                (a, d)
            }
            None => (0, 0), // binary
        };
        let file = ChangedFile::new(
            path.to_string_lossy().replace('\\', "/"),
            u32::try_from(additions).unwrap_or(u32::MAX),
            u32::try_from(deletions).unwrap_or(u32::MAX),
        );
        files.push((i, file));
    }
    Ok(files)
}

/// Opens the repository at `path` as if it were bare: the diff of two commits needs
/// nothing from the checkout.
///
/// Why: before diffing a file libgit2 looks up its `diff` attribute (binary or text), and
/// with a working tree every lookup resolves the file's directory there with `realpath`: on a
/// 10,000-file change that was 127,850 failing `readlink` calls (docs/benchmarks.md). Without
/// a working tree the attributes come from the index's `.gitattributes` (what is checked out,
/// unless edited since), `info/attributes` and the global and system files, read once per
/// diff, so `-diff` and `binary` still count a file as binary.
fn open_without_worktree(path: &Path) -> Result<git2::Repository, git2::Error> {
    let repo = git2::Repository::open(path)?;
    if repo.is_bare() {
        return Ok(repo);
    }
    git2::Repository::open_bare(repo.path())
}

/// A human-readable report of an evaluation.
pub fn render_table(eval: &Evaluation) -> String {
    let a = &eval.assessment;
    let c = &eval.change;
    let mut out = String::new();
    let _ = writeln!(out, "Policy:        {}", eval.policy);
    let _ = writeln!(
        out,
        "Change:        {} file(s), {} line(s) changed, author {}{}{}",
        c.files.len(),
        c.total_lines(),
        countersign_policies::author_kind_name(c.author_kind),
        c.base_branch
            .as_deref()
            .map(|b| format!(", base {b}"))
            .unwrap_or_default(),
        if c.labels.is_empty() {
            String::new()
        } else {
            format!(", labels {}", c.labels.join(", "))
        }
    );
    let _ = writeln!(
        out,
        "Risk:          {} (score {}/10)",
        level_name(a.level).to_uppercase(),
        a.score
    );
    let w = &a.workflow;
    let roles: Vec<String> = w
        .approvers
        .iter()
        .map(|r| format!("{} x{}", r.role, r.count))
        .collect();
    let deadline = match &w.timeout {
        Some(t) => format!(
            "; within {t}, then {}",
            timeout_action(w.on_timeout, w.escalate_to.as_ref())
        ),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "Workflow:      {} ({}){}",
        w.name,
        level_name(w.level),
        deadline
    );
    let _ = writeln!(
        out,
        "Approvers:     {}",
        if roles.is_empty() {
            "none".to_owned()
        } else {
            roles.join(", ")
        }
    );
    let auto = match &w.auto_approve {
        AutoApprove::Approved { reason } => format!("yes: {reason}"),
        AutoApprove::Blocked { reason } => format!("no: {reason}"),
        AutoApprove::NotOffered => "no: the workflow needs human approvals".to_owned(),
    };
    let _ = writeln!(out, "Auto-approve:  {auto}");
    let _ = writeln!(out);
    let rule_width = a
        .factors
        .iter()
        .map(|f| f.rule.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(1)
        .max(4);
    let _ = writeln!(
        out,
        "{:<15} {:>5}  {:<rule_width$}  REASON",
        "FACTOR", "SCORE", "RULE"
    );
    for f in &a.factors {
        let _ = writeln!(
            out,
            "{:<15} {:>5}  {:<rule_width$}  {}",
            factor_name(f.factor),
            f.score,
            f.rule.as_deref().unwrap_or("-"),
            f.reason
        );
    }
    if !a.matched_rules.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Matched rules:");
        for r in &a.matched_rules {
            let sets: Vec<String> = [
                ("impact", r.set.impact),
                ("complexity", r.set.complexity),
                ("businessImpact", r.set.business_impact),
            ]
            .into_iter()
            .filter_map(|(name, score)| score.map(|s| format!("{name} {s}")))
            .collect();
            let _ = writeln!(out, "  {} -> {}", r.evidence, sets.join(", "));
        }
    }
    if !a.never_auto_approve.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(out, "Never auto-approved (a human must approve):");
        for hit in a.never_auto_approve.iter().take(MAX_LISTED_HITS) {
            let source = match hit.source {
                HitSource::Policy => "neverAutoApprovePaths",
                HitSource::GitOps => "GitOps path",
            };
            let _ = writeln!(out, "  {}  matched {source} {}", hit.path, hit.glob);
        }
        if a.never_auto_approve.len() > MAX_LISTED_HITS {
            let _ = writeln!(
                out,
                "  … and {} more",
                a.never_auto_approve.len() - MAX_LISTED_HITS
            );
        }
    }
    out
}

fn timeout_action(
    action: countersign_crds::risk_policy::TimeoutAction,
    escalate_to: Option<&countersign_crds::RoleName>,
) -> String {
    use countersign_crds::risk_policy::TimeoutAction;
    match (action, escalate_to) {
        (TimeoutAction::Remind, _) => "remind".to_owned(),
        (TimeoutAction::Escalate, Some(role)) => format!("escalate to {role}"),
        (TimeoutAction::Escalate, None) => "escalate".to_owned(),
        (TimeoutAction::Expire, _) => "expire".to_owned(),
    }
}

/// What `policy validate` found.
#[derive(Debug)]
pub struct ValidateReport {
    /// One line per policy or problem.
    pub text: String,
    /// Number of problems.
    pub problems: usize,
    /// Whether every file holds only valid RiskPolicies.
    pub ok: bool,
}

/// Validates every file: each policy is either `ok` or listed with its problems.
pub fn validate_files(files: &[PathBuf]) -> ValidateReport {
    let mut text = String::new();
    let mut problems = 0;
    for file in files {
        let shown = file.display();
        let yaml = match fs::read_to_string(file) {
            Ok(y) => y,
            Err(e) => {
                let _ = writeln!(text, "{shown}: cannot read: {e}");
                problems += 1;
                continue;
            }
        };
        match validate_policies(&yaml) {
            Err(e) => {
                let _ = writeln!(text, "{shown}: {e}");
                problems += 1;
            }
            Ok(reports) => {
                for r in reports {
                    if r.is_ok() {
                        let _ = writeln!(
                            text,
                            "{shown}: RiskPolicy {}: ok ({} rules)",
                            r.name, r.rule_count
                        );
                    } else {
                        for p in r.problems() {
                            let _ = writeln!(text, "{shown}: RiskPolicy {}: {p}", r.name);
                            problems += 1;
                        }
                    }
                }
            }
        }
    }
    ValidateReport {
        text,
        problems,
        ok: problems == 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use countersign_crds::risk_policy::RiskLevel;

    use super::*;

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "countersign-policy-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().expect("has a parent")).expect("parent dir");
            fs::write(&path, text).expect("write");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A real repository: `main` with a README, then `docs` (a docs change on top of main)
    /// and `migration` (a migration on top of docs).
    fn repo_with_history() -> TempDir {
        let dir = TempDir::new("repo");
        let repo = git2::Repository::init(&dir.0).expect("git init");
        let sig = git2::Signature::now("Test", "test@example.com").expect("signature");
        let commit = |files: &[(&str, &str)], message: &str, branch: &str| {
            for (path, text) in files {
                dir.write(path, text);
            }
            let mut index = repo.index().expect("index");
            for (path, _) in files {
                index.add_path(Path::new(path)).expect("add");
            }
            index.write().expect("write index");
            let tree = repo
                .find_tree(index.write_tree().expect("tree"))
                .expect("find tree");
            let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
            let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
            let id = repo
                .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
                .expect("commit");
            let commit = repo.find_commit(id).expect("find commit");
            repo.branch(branch, &commit, true).expect("branch");
        };
        commit(
            &[("README.md", "# demo\n"), ("src/lib.rs", "pub fn a() {}\n")],
            "init",
            "main",
        );
        commit(&[("docs/guide.md", "one\ntwo\nthree\n")], "docs", "docs");
        commit(
            &[(
                "migrations/0042_add_index.sql",
                "CREATE INDEX users_email ON users (email);\n",
            )],
            "migration",
            "migration",
        );
        dir
    }

    /// Commits on top of HEAD: writes `files` (text or binary), removes `removed`, and points
    /// `branch` at the commit.
    fn commit_change(
        dir: &TempDir,
        repo: &git2::Repository,
        files: &[(&str, &[u8])],
        removed: &[&str],
        branch: &str,
    ) {
        let sig = git2::Signature::now("Test", "test@example.com").expect("signature");
        let mut index = repo.index().expect("index");
        for (path, bytes) in files {
            let full = dir.0.join(path);
            fs::create_dir_all(full.parent().expect("has a parent")).expect("parent dir");
            fs::write(&full, bytes).expect("write");
            index.add_path(Path::new(path)).expect("add");
        }
        for path in removed {
            fs::remove_file(dir.0.join(path)).expect("remove");
            index
                .remove_path(Path::new(path))
                .expect("remove from index");
        }
        index.write().expect("write index");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("find tree");
        let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = repo
            .commit(Some("HEAD"), &sig, &sig, branch, &tree, &parents)
            .expect("commit");
        let commit = repo.find_commit(id).expect("find commit");
        repo.branch(branch, &commit, true).expect("branch");
    }

    /// `git diff --numstat` (the git command line) of `base...head`, binary files as 0/0.
    fn git_numstat(dir: &TempDir, base: &str, head: &str) -> Vec<ChangedFile> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(&dir.0)
            .args([
                "diff",
                "--no-renames",
                "--numstat",
                &format!("{base}...{head}"),
            ])
            .output()
            .expect("git is installed");
        assert!(out.status.success(), "{out:?}");
        let count = |n: &str| {
            if n == "-" {
                0
            } else {
                n.parse().expect("a count")
            }
        };
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .lines()
            .map(|row| {
                let mut cols = row.splitn(3, '\t');
                let (a, d, path) = (cols.next(), cols.next(), cols.next());
                let (Some(a), Some(d), Some(path)) = (a, d, path) else {
                    panic!("a numstat row: {row:?}");
                };
                ChangedFile::new(path, count(a), count(d))
            })
            .collect()
    }

    #[test]
    fn line_counts_match_git_diff_numstat() {
        // Diffed without the working tree (attributes from the index); the counts must stay
        // git's for every kind of change, binary files included.
        let dir = TempDir::new("numstat");
        let repo = git2::Repository::init(&dir.0).expect("git init");
        let png = |seed: u8| -> Vec<u8> {
            let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
            bytes.extend((0..600u32).map(|i| (i as u8).wrapping_mul(seed)));
            bytes
        };
        let lib: String = (1..=40).map(|i| format!("pub fn f{i}() {{}}\n")).collect();
        let guide: String = (1..=12).map(|i| format!("line {i}\n")).collect();
        commit_change(
            &dir,
            &repo,
            &[
                ("src/lib.rs", lib.as_bytes()),
                ("docs/old-guide.md", guide.as_bytes()),
                ("assets/logo.png", &png(3)),
                ("obsolete/notes.txt", b"one\ntwo\nthree\n"),
                ("no-newline.txt", b"a\nb"),
                (".gitattributes", b"*.dat -diff\n"),
                ("data/table.dat", b"text\nthat git counts as binary\n"),
            ],
            &[],
            "main",
        );
        let edited_lib = lib
            .replace("pub fn f7() {}\n", "pub fn f7() { todo!() }\n")
            .replace("pub fn f20() {}\n", "")
            .replace(
                "pub fn f30() {}\n",
                "pub fn f30() {}\npub fn g() {}\npub fn h() {}\n",
            );
        let renamed_guide = guide.replace("line 5\n", "line five\n");
        commit_change(
            &dir,
            &repo,
            &[
                ("src/lib.rs", edited_lib.as_bytes()),
                ("docs/guide.md", renamed_guide.as_bytes()),
                ("assets/logo.png", &png(5)),
                ("assets/icon.png", &png(7)),
                ("no-newline.txt", b"a\nb\nc"),
                ("src/new.rs", b"fn main() {}\n"),
                ("data/table.dat", b"text\nthat git still counts as binary\n"),
            ],
            &["docs/old-guide.md", "obsolete/notes.txt"],
            "change",
        );

        let ours = change_from_git(&dir.0, "main", "change")
            .expect("diffs")
            .files;
        assert_eq!(ours, git_numstat(&dir, "main", "change"));
        // Split between threads (large changes are), the result is the same, in the same order.
        let repo = open_without_worktree(&dir.0).expect("opens");
        let tree = |rev: &str| {
            let commit = repo.revparse_single(rev).expect("rev").peel_to_commit();
            commit.expect("a commit").tree_id()
        };
        for threads in [2, 3, 20] {
            let split = changed_files(&repo, tree("main"), tree("change"), Some(threads));
            assert_eq!(split.expect("diffs"), ours, "{threads} threads");
        }
        // The cases this test is about are all there: binary (modified and added), a rename
        // (a deletion plus an addition), a plain deletion, edits, a missing final newline and a
        // text file that `.gitattributes` declares binary.
        assert_eq!(
            ours,
            [
                ChangedFile::new("assets/icon.png", 0, 0),
                ChangedFile::new("assets/logo.png", 0, 0),
                ChangedFile::new("data/table.dat", 0, 0),
                ChangedFile::new("docs/guide.md", 12, 0),
                ChangedFile::new("docs/old-guide.md", 0, 12),
                ChangedFile::new("no-newline.txt", 2, 1),
                ChangedFile::new("obsolete/notes.txt", 0, 3),
                ChangedFile::new("src/lib.rs", 3, 2),
                ChangedFile::new("src/new.rs", 1, 0),
            ]
        );
    }

    fn git_args(repo: &TempDir, base: &str, head: &str) -> EvalArgs {
        EvalArgs {
            repo: Some(repo.0.clone()),
            base: Some(base.to_owned()),
            head: Some(head.to_owned()),
            ..EvalArgs::default()
        }
    }

    #[test]
    fn a_docs_commit_in_a_real_repo_is_low_and_auto_approved() {
        let repo = repo_with_history();
        let eval = eval(&git_args(&repo, "main", "docs")).expect("evaluates");
        assert_eq!(eval.change.files, [ChangedFile::new("docs/guide.md", 3, 0)]);
        assert_eq!(eval.change.base_branch.as_deref(), Some("main"));
        assert_eq!(eval.assessment.level, RiskLevel::Low);
        assert!(eval.assessment.workflow.auto_approves());
        let table = render_table(&eval);
        assert!(table.contains("Risk:          LOW (score 1/10)"), "{table}");
        assert!(
            table.contains("Auto-approve:  yes: score 1 is low"),
            "{table}"
        );
        assert!(
            table.contains("Policy:        default (built-in)"),
            "{table}"
        );
    }

    #[test]
    fn a_migration_commit_in_a_real_repo_is_critical() {
        let repo = repo_with_history();
        let eval = eval(&git_args(&repo, "docs", "migration")).expect("evaluates");
        assert_eq!(
            eval.change.files,
            [ChangedFile::new("migrations/0042_add_index.sql", 1, 0)]
        );
        let a = &eval.assessment;
        assert_eq!((a.level, a.score), (RiskLevel::Critical, 9));
        let table = render_table(&eval);
        for needle in [
            "Risk:          CRITICAL (score 9/10)",
            "Workflow:      executive (critical); within 72h, then expire",
            "Approvers:     manager x1, security_team x1, cto x1",
            "impact 9: migrations/0042_add_index.sql matched rule data-migration (migrations/**)",
            "migrations/0042_add_index.sql  matched neverAutoApprovePaths migrations/**",
        ] {
            assert!(table.contains(needle), "missing {needle:?} in\n{table}");
        }
    }

    #[test]
    fn the_diff_starts_at_the_merge_base() {
        // main..migration includes the docs commit too, as a pull request would.
        let repo = repo_with_history();
        let change = change_from_git(&repo.0, "main", "migration").expect("diffs");
        let paths: Vec<&str> = change.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["docs/guide.md", "migrations/0042_add_index.sql"]);
        let err = change_from_git(&repo.0, "main", "nope").expect_err("unknown rev");
        assert!(format!("{err:#}").contains("\"nope\""), "{err:#}");
    }

    #[test]
    fn a_json_change_with_flags_and_a_policy_file() {
        let dir = TempDir::new("json");
        let change = dir.write(
            "change.json",
            r#"{"files": [{"path": "src/auth/session.rs", "additions": 40, "deletions": 2}], "authorKind": "ai"}"#,
        );
        let args = EvalArgs {
            change: Some(change),
            labels: vec!["security".to_owned()],
            base_branch: Some("main".to_owned()),
            output: OutputFormat::Json,
            ..EvalArgs::default()
        };
        let eval = eval(&args).expect("evaluates");
        assert_eq!(eval.change.author_kind, AuthorKind::Ai);
        assert_eq!(eval.change.labels, ["security"]);
        let a = &eval.assessment;
        assert_eq!(
            (a.level, a.workflow.name.as_str()),
            (RiskLevel::High, "managed")
        );
        let json = serde_json::to_value(a).expect("json");
        assert_eq!(json["level"], "high");
        assert_eq!(json["workflow"]["approvers"][1]["role"], "manager");

        let policy = dir.write(
            "policy.yaml",
            &countersign_policies::DEFAULT_POLICY_YAML.replace("medium: 5", "medium: 3"),
        );
        let eval = super::eval(&EvalArgs {
            policy: Some(policy.clone()),
            ..args
        })
        .expect("evaluates");
        assert!(eval.policy.starts_with("default ("), "{}", eval.policy);
    }

    #[test]
    fn a_bad_policy_file_is_an_error_naming_the_field() {
        let dir = TempDir::new("badpolicy");
        let policy = dir.write(
            "policy.yaml",
            &countersign_policies::DEFAULT_POLICY_YAML
                .replace("\"migrations/**\", ", "\"migrations/[\", "),
        );
        let change = dir.write("change.json", r#"{"files": [{"path": "a"}]}"#);
        let err = eval(&EvalArgs {
            policy: Some(policy),
            change: Some(change),
            ..EvalArgs::default()
        })
        .expect_err("bad glob");
        let msg = format!("{err:#}");
        assert!(msg.contains("does not compile"), "{msg}");
        assert!(
            msg.contains("match.paths[0]: invalid glob \"migrations/[\""),
            "{msg}"
        );
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: PolicyCommand,
    }

    fn parse(args: &[&str]) -> Result<PolicyCommand, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(std::iter::once("policy").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    #[test]
    fn command_line_shapes() {
        let Ok(PolicyCommand::Eval(args)) = parse(&[
            "eval",
            "--repo",
            ".",
            "--base",
            "main",
            "--head",
            "HEAD",
            "--label",
            "a",
            "--label",
            "b",
            "--author-kind",
            "ai",
            "--output",
            "json",
        ]) else {
            panic!("a git eval parses");
        };
        assert_eq!(args.labels, ["a", "b"]);
        assert_eq!(args.author_kind, Some(AuthorKindArg::Ai));
        assert_eq!(args.output, OutputFormat::Json);
        assert!(matches!(
            parse(&["eval", "--change", "c.json"]),
            Ok(PolicyCommand::Eval(_))
        ));
        for bad in [
            &["eval"][..],
            &["eval", "--repo", "."],
            &[
                "eval", "--repo", ".", "--base", "a", "--head", "b", "--change", "c.json",
            ],
            &["eval", "--change", "c.json", "--author-kind", "robot"],
            &["validate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(
            parse(&["validate", "a.yaml", "b.yaml"]),
            Ok(PolicyCommand::Validate(ValidateArgs { files })) if files.len() == 2
        ));
    }

    #[test]
    fn validate_lists_every_problem_with_its_field() {
        let dir = TempDir::new("validate");
        let good = dir.write("good.yaml", countersign_policies::DEFAULT_POLICY_YAML);
        let bad = dir.write(
            "bad.yaml",
            &countersign_policies::DEFAULT_POLICY_YAML
                .replace("onlyPaths:", "onlyPathz:")
                .replace("critical: 9\n", "critical: 7\n"),
        );
        let report = validate_files(std::slice::from_ref(&good));
        assert!(report.ok, "{}", report.text);
        assert!(
            report.text.contains("RiskPolicy default: ok (14 rules)"),
            "{}",
            report.text
        );
        let report = validate_files(&[good, bad, dir.0.join("missing.yaml")]);
        assert!(!report.ok);
        assert_eq!(report.problems, 3, "{}", report.text);
        for needle in [
            "bad.yaml: RiskPolicy default: spec.rules[0].match.onlyPathz: unknown field",
            "bad.yaml: RiskPolicy default: spec.thresholds: thresholds must rise",
            "missing.yaml: cannot read",
        ] {
            assert!(
                report.text.contains(needle),
                "missing {needle:?} in\n{}",
                report.text
            );
        }
    }
}
