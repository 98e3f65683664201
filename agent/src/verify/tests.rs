use std::time::Duration;

use countersign_crds::GoDuration;
use countersign_crds::agent::VerifyCommand;

use super::*;

fn sh(name: &str, script: &str) -> VerifyCommand {
    VerifyCommand {
        name: name.into(),
        command: vec!["sh".into(), "-c".into(), script.into()],
        timeout: Some(GoDuration(Duration::from_secs(60))),
    }
}

fn env() -> Vec<(String, String)> {
    crate::process::inherit(["PATH"])
}

fn run(commands: &[VerifyCommand]) -> VerifyReport {
    let dir = tempfile::tempdir().expect("a temp dir");
    run_all(commands, dir.path(), &env(), Duration::from_secs(120))
}

#[test]
fn all_commands_pass() {
    let report = run(&[sh("unit-tests", "echo ok"), sh("lint", "true")]);
    assert_eq!(
        report,
        VerifyReport {
            passed: true,
            failed: None,
            summary_line: "unit-tests passed; lint passed".into(),
            feedback: String::new(),
        }
    );
}

#[test]
fn no_commands_pass_quietly() {
    let report = run(&[]);
    assert!(report.passed);
    assert_eq!(report.summary_line, "");
}

#[test]
fn commands_run_in_the_workspace_without_a_shell() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("marker"), "here").expect("write");
    let commands = [
        VerifyCommand {
            name: "cat".into(),
            command: vec!["cat".into(), "marker".into()],
            timeout: Some(GoDuration(Duration::from_secs(60))),
        },
        // Without a shell, `$HOME` and `;` are plain arguments.
        VerifyCommand {
            name: "echo".into(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "test \"$1\" = '$HOME;'".into(),
                "sh".into(),
                "$HOME;".into(),
            ],
            timeout: Some(GoDuration(Duration::from_secs(60))),
        },
    ];
    let report = run_all(&commands, dir.path(), &env(), Duration::from_secs(60));
    assert!(report.passed, "{report:?}");
}

#[test]
fn a_failure_stops_the_run_and_explains_itself() {
    let report = run(&[
        sh("unit-tests", "true"),
        sh(
            "lint",
            "echo 'warning: unused variable `x`'; echo 'error: 1 warning' >&2; exit 2",
        ),
        sh("e2e", "touch ran"),
    ]);
    assert!(!report.passed);
    let failed = report.failed.clone().expect("lint failed");
    assert_eq!(failed.name, "lint");
    assert_eq!(failed.reason, FailureReason::ExitCode(2));
    assert_eq!(
        failed.output_tail,
        "warning: unused variable `x`\nerror: 1 warning\n"
    );
    assert_eq!(
        report.summary_line,
        "unit-tests passed; lint failed (exit code 2); e2e not run"
    );
    assert!(
        report.feedback.starts_with(
            "The verify command `lint` (`sh -c echo 'warning: unused variable `x`'; echo 'error: 1 warning' >&2; exit 2`) failed: exit code 2.\n"
        ),
        "{}",
        report.feedback
    );
    assert!(
        report
            .feedback
            .ends_with("Its output:\n```\nwarning: unused variable `x`\nerror: 1 warning\n```\n"),
        "{}",
        report.feedback
    );
}

#[test]
fn a_timeout_is_reported_with_its_limit() {
    let mut slow = sh("e2e", "echo started; sleep 100");
    slow.timeout = Some(GoDuration(Duration::from_secs(1)));
    let report = run(&[slow]);
    let failed = report.failed.expect("timed out");
    assert_eq!(
        failed.reason,
        FailureReason::TimedOut(Duration::from_secs(1))
    );
    assert_eq!(failed.output_tail, "started\n");
    assert_eq!(report.summary_line, "e2e failed (timed out after 1s)");
    assert!(report.feedback.contains("It must finish in time"));
}

#[test]
fn the_attempt_deadline_cuts_commands_short() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let report = run_all(
        &[sh("slow", "sleep 100"), sh("next", "true")],
        dir.path(),
        &env(),
        Duration::from_millis(500),
    );
    assert_eq!(
        report.failed.map(|f| f.reason),
        Some(FailureReason::OutOfTime)
    );
    assert_eq!(
        report.summary_line,
        "slow failed (out of the attempt's time); next not run"
    );
    let past = run_all(&[sh("any", "true")], dir.path(), &env(), Duration::ZERO);
    assert_eq!(
        past.failed.map(|f| f.reason),
        Some(FailureReason::OutOfTime)
    );
}

#[test]
fn a_missing_program_is_a_failure_not_a_panic() {
    let report = run(&[VerifyCommand {
        name: "missing".into(),
        command: vec!["countersign-no-such-tool".into()],
        timeout: Some(GoDuration(Duration::from_secs(5))),
    }]);
    let failed = report.failed.expect("failed");
    assert!(matches!(failed.reason, FailureReason::NotStarted(_)));
    assert!(report.feedback.contains("could not be run"));
}

#[test]
fn long_output_is_cut_and_fenced_safely() {
    let report = run(&[sh(
        "noisy",
        "yes 'line with ```` fences' | head -c 100000; exit 1",
    )]);
    let failed = report.failed.expect("failed");
    assert_eq!(failed.output_bytes, 100_000);
    assert!(
        report
            .feedback
            .contains("The last 16384 of its 100000 bytes of output:\n`````\n")
    );
}

#[test]
fn credentials_in_output_are_redacted() {
    let token = ["ghp_", "Zx8Kq2Lm9Np4Rt7Vw1Yb3", "Cd6Fg0Hj5Ks8Pq2Tu4Wx"].concat();
    let report = run(&[sh("leaky", &format!("echo token={token}; exit 1"))]);
    let failed = report.failed.expect("failed");
    assert_eq!(failed.output_tail, "token=[redacted: a GitHub token]\n");
    assert!(!report.feedback.contains(&token));
}

#[test]
fn the_environment_leaves_out_countersign_and_hidden_variables() {
    let pod = [
        ("PATH", "/usr/bin"),
        ("CARGO_HOME", "/usr/local/cargo"),
        ("COUNTERSIGN_TOKEN_FILE", "/var/run/countersign/token"),
        ("COUNTERSIGN_PROVIDER_API_KEY", "key"),
        ("ANTHROPIC_API_KEY", "key"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let names: Vec<String> = without_reserved(pod.into_iter(), &["ANTHROPIC_API_KEY"])
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, vec!["PATH", "CARGO_HOME"]);
    assert!(environment(&[]).iter().any(|(name, _)| name == "PATH"));
}
