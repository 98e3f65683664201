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
/// paths are scored. When `base` names a local branch it becomes the base branch.
pub fn change_from_git(repo: &Path, base: &str, head: &str) -> anyhow::Result<Change> {
    let repo = git2::Repository::open(repo)
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
    let old_tree = from.tree().context("Cannot read the base tree")?;
    let new_tree = head_commit.tree().context("Cannot read the head tree")?;
    let diff = repo
        .diff_tree_to_tree(Some(&old_tree), Some(&new_tree), None)
        .context("Cannot diff base and head")?;
    let mut files = Vec::new();
    for (i, delta) in diff.deltas().enumerate() {
        let Some(path) = delta.new_file().path().or_else(|| delta.old_file().path()) else {
            continue;
        };
        let (additions, deletions) = match git2::Patch::from_diff(&diff, i)
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
        files.push(ChangedFile::new(
            path.to_string_lossy().replace('\\', "/"),
            u32::try_from(additions).unwrap_or(u32::MAX),
            u32::try_from(deletions).unwrap_or(u32::MAX),
        ));
    }
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
