use super::*;
use crate::secret_scan::SecretKind;
use crate::workspace::{AddedLine, FileChange};

fn file(path: &str, additions: u64) -> FileChange {
    FileChange {
        path: path.into(),
        old_path: None,
        status: ChangeStatus::Modified,
        additions,
        deletions: 0,
        binary: false,
        added_lines: (1..=additions.min(3) as u32)
            .map(|number| AddedLine {
                number,
                text: format!("line {number}"),
            })
            .collect(),
    }
}

fn changes(files: Vec<FileChange>) -> ChangeSet {
    ChangeSet::new(files)
}

fn limits(files: u32, lines: u32) -> AgentLimits {
    AgentLimits {
        max_changed_files: files,
        max_changed_lines: lines,
        ..AgentLimits::default()
    }
}

fn guardrails(forbidden: &[&str], allowed: &[&str]) -> Guardrails {
    Guardrails {
        forbidden_paths: forbidden.iter().map(|p| (*p).to_owned()).collect(),
        allowed_paths: allowed.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn check_default(files: Vec<FileChange>) -> Result<(), Violation> {
    check(
        &changes(files),
        &AgentLimits::default(),
        &Guardrails::default(),
    )
}

#[test]
fn an_empty_change_passes() {
    assert_eq!(check_default(vec![]), Ok(()));
}

#[test]
fn an_ordinary_change_passes() {
    assert_eq!(
        check_default(vec![file("src/lib.rs", 10), file("README.md", 2)]),
        Ok(())
    );
}

#[test]
fn too_many_files() {
    let files = (0..5000)
        .map(|i| file(&format!("src/f{i}.rs"), 0))
        .collect();
    let violation = check_default(files).expect_err("too many files");
    assert_eq!(
        violation,
        Violation::TooManyFiles {
            changed: 5000,
            max: 50
        }
    );
    assert_eq!(
        violation.to_string(),
        "5000 files changed; this agent may change at most 50 (limits.maxChangedFiles)"
    );
}

#[test]
fn too_many_lines() {
    let mut big = file("src/big.rs", 3000);
    big.deletions = 2001;
    let violation = check_default(vec![big]).expect_err("too many lines");
    assert_eq!(
        violation,
        Violation::TooManyLines {
            changed: 5001,
            max: 5000
        }
    );
    assert_eq!(
        violation.to_string(),
        "5001 lines changed (added plus removed); this agent may change at most 5000 \
         (limits.maxChangedLines)"
    );
}

#[test]
fn limits_exactly_at_the_boundary_pass() {
    let files = vec![file("a.rs", 4), file("b.rs", 6)];
    assert_eq!(
        check(&changes(files), &limits(2, 10), &Guardrails::default()),
        Ok(())
    );
    let files = vec![file("a.rs", 4), file("b.rs", 7)];
    assert!(matches!(
        check(&changes(files), &limits(2, 10), &Guardrails::default()),
        Err(Violation::TooManyLines { changed: 11, .. })
    ));
    let files = vec![file("a.rs", 1), file("b.rs", 1), file("c.rs", 1)];
    assert!(matches!(
        check(&changes(files), &limits(2, 10), &Guardrails::default()),
        Err(Violation::TooManyFiles { changed: 3, .. })
    ));
}

#[test]
fn built_in_forbidden_paths() {
    let violation = check_default(vec![file(".github/workflows/ci.yml", 1)]).expect_err("CI");
    assert_eq!(
        violation,
        Violation::ForbiddenPath {
            path: ".github/workflows/ci.yml".into(),
            pattern: ".github/workflows/**".into(),
            source: PatternSource::BuiltIn,
        }
    );
    assert_eq!(
        violation.to_string(),
        ".github/workflows/ci.yml matches the forbidden path .github/workflows/** (built in); \
         to let this agent change it, add it to guardrails.allowedPaths"
    );
    for path in [
        "CODEOWNERS",
        ".github/CODEOWNERS",
        ".github/actions/setup/action.yml",
        ".countersign/policy.yaml",
        "deploy/prod-riskpolicy.yaml",
        "risk-policy.yml",
        ".GitHub/Workflows/release.yml",
    ] {
        assert!(
            matches!(
                check_default(vec![file(path, 1)]),
                Err(Violation::ForbiddenPath { .. })
            ),
            "{path}"
        );
    }
    for path in [
        "src/CODEOWNERS.rs",
        "docs/github-workflows.md",
        "src/codeowners/mod.rs",
    ] {
        assert_eq!(check_default(vec![file(path, 1)]), Ok(()), "{path}");
    }
}

#[test]
fn deleting_or_renaming_away_a_forbidden_file_is_forbidden() {
    let mut deleted = file("CODEOWNERS", 0);
    deleted.status = ChangeStatus::Deleted;
    assert!(matches!(
        check_default(vec![deleted]),
        Err(Violation::ForbiddenPath { path, .. }) if path == "CODEOWNERS"
    ));
    let mut moved = file("old/ci.yml", 0);
    moved.status = ChangeStatus::Renamed;
    moved.old_path = Some(".github/workflows/ci.yml".into());
    assert!(matches!(
        check_default(vec![moved]),
        Err(Violation::ForbiddenPath { path, .. }) if path == ".github/workflows/ci.yml"
    ));
}

#[test]
fn allowed_paths_lift_a_built_in_path() {
    let ci = vec![file(".github/workflows/ci.yml", 1)];
    let rails = guardrails(&[], &[".github/workflows/**"]);
    assert_eq!(
        check(&changes(ci.clone()), &AgentLimits::default(), &rails),
        Ok(())
    );
    // Lifting one file lifts only that file.
    let rails = guardrails(&[], &[".github/workflows/docs.yml"]);
    assert!(check(&changes(ci), &AgentLimits::default(), &rails).is_err());
    // A directory name covers what is under it.
    let rails = guardrails(&[], &[".github/actions"]);
    let action = vec![file(".github/actions/setup/action.yml", 1)];
    assert_eq!(
        check(&changes(action), &AgentLimits::default(), &rails),
        Ok(())
    );
}

#[test]
fn custom_forbidden_paths() {
    let rails = guardrails(&["deploy/**", "**/*.lock", "secrets"], &[]);
    let check_one = |path: &str| {
        check(
            &changes(vec![file(path, 1)]),
            &AgentLimits::default(),
            &rails,
        )
    };
    let violation = check_one("deploy/prod/values.yaml").expect_err("deploy");
    assert_eq!(
        violation,
        Violation::ForbiddenPath {
            path: "deploy/prod/values.yaml".into(),
            pattern: "deploy/**".into(),
            source: PatternSource::Agent,
        }
    );
    assert!(
        violation
            .to_string()
            .contains("(guardrails.forbiddenPaths)")
    );
    assert!(check_one("Cargo.lock").is_err());
    assert!(check_one("web/package.lock").is_err());
    assert!(
        check_one("secrets/db.env").is_err(),
        "a directory pattern covers its files"
    );
    assert_eq!(check_one("src/deploy.rs"), Ok(()));
    assert_eq!(check_one("docs/secrets.md"), Ok(()));
}

#[test]
fn a_star_stays_in_its_directory() {
    let rails = guardrails(&["config/*.yaml"], &[]);
    let check_one = |path: &str| {
        check(
            &changes(vec![file(path, 1)]),
            &AgentLimits::default(),
            &rails,
        )
    };
    assert!(check_one("config/app.yaml").is_err());
    assert_eq!(check_one("config/dev/app.yaml"), Ok(()));
}

#[test]
fn an_invalid_pattern_is_a_violation() {
    let rails = guardrails(&["src/[oops"], &[]);
    let violation = check(
        &changes(vec![file("a.rs", 1)]),
        &AgentLimits::default(),
        &rails,
    )
    .expect_err("invalid glob");
    assert!(matches!(
        &violation,
        Violation::InvalidPattern { field: "guardrails.forbiddenPaths", pattern, .. } if pattern == "src/[oops"
    ));
}

#[test]
fn binary_files_are_refused_but_may_be_deleted() {
    let mut logo = file("assets/logo.png", 0);
    logo.binary = true;
    logo.added_lines.clear();
    let violation = check_default(vec![logo.clone()]).expect_err("binary");
    assert_eq!(
        violation.to_string(),
        "assets/logo.png has binary content; agents may not add or change binary files"
    );
    logo.status = ChangeStatus::Deleted;
    logo.binary = false;
    assert_eq!(check_default(vec![logo]), Ok(()));
}

#[test]
fn secrets_are_refused_without_showing_them() {
    let token = ["ghs_aB3dE5gH7jK9", "mN1pQ3sT5vW7", "yZ9bC1dF3hJ5"].concat();
    let mut config = file("src/config.rs", 1);
    config.added_lines = vec![AddedLine {
        number: 12,
        text: format!("const TOKEN: &str = \"{token}\";"),
    }];
    let violation = check_default(vec![file("src/lib.rs", 2), config]).expect_err("a secret");
    assert!(matches!(
        &violation,
        Violation::Secret(finding) if finding.kind == SecretKind::GitHubToken && finding.line == 12
    ));
    let shown = violation.to_string();
    assert_eq!(
        shown,
        "src/config.rs:12 adds what looks like a GitHub token; credentials must not be committed"
    );
    assert!(!shown.contains(&token));
}

#[test]
fn size_is_checked_before_paths_and_paths_before_content() {
    let mut ci = file(".github/workflows/ci.yml", 1);
    ci.binary = true;
    let many: Vec<FileChange> = std::iter::once(ci.clone())
        .chain((0..60).map(|i| file(&format!("f{i}"), 1)))
        .collect();
    assert!(matches!(
        check_default(many),
        Err(Violation::TooManyFiles { .. })
    ));
    assert!(matches!(
        check_default(vec![ci]),
        Err(Violation::ForbiddenPath { .. })
    ));
}
