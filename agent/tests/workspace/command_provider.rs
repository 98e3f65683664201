//! The `command` provider with a real shell script as the coding agent.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use countersign_agent::provider::command::CommandAgent;
use countersign_agent::provider::{Budget, Job, JobKind, Limit, Provider, ProviderError};
use countersign_crds::ProviderKind;
use countersign_crds::agent::{
    AgentLimits, CommandProvider, Provider as ProviderSpec, SecretEnvVar,
};
use countersign_crds::common::SecretKeyRef;

fn spec(script: &str, env: &[&str]) -> ProviderSpec {
    ProviderSpec {
        name: "script".into(),
        kind: ProviderKind::Command,
        model: None,
        base_url: None,
        api_key_secret_ref: None,
        command: Some(CommandProvider {
            command: vec!["sh".into(), "-c".into(), script.into()],
            api: None,
            env: env
                .iter()
                .map(|name| SecretEnvVar {
                    name: (*name).into(),
                    secret_key_ref: SecretKeyRef {
                        name: "agent-keys".into(),
                        key: name.to_lowercase(),
                    },
                })
                .collect(),
        }),
        retries: Some(0),
        input_price_per_million: None,
        output_price_per_million: None,
    }
}

/// What the pod's environment holds: the basics, a key the Agent passes on, and things the
/// coding agent must never see.
fn pod_env(name: &str) -> Option<String> {
    let vars: HashMap<&str, String> = HashMap::from([
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("HOME", "/home/agent".into()),
        ("LANG", "C.UTF-8".into()),
        ("VENDOR_API_KEY", "passed-on".into()),
        ("UNLISTED_SECRET", "must-not-leak".into()),
        ("COUNTERSIGN_PROVIDER_API_KEY", "must-not-leak".into()),
    ]);
    vars.get(name).cloned()
}

fn agent(script: &str, env: &[&str], dir: &Path) -> CommandAgent {
    CommandAgent::with_env(&spec(script, env), dir, pod_env).expect("a command agent")
}

fn budget(time: Duration) -> Budget {
    Budget::new(
        AgentLimits::default(),
        &spec("true", &[]),
        Instant::now() + time,
    )
}

fn job(kind: JobKind, prompt: &str) -> Job {
    Job {
        may_ask: false,
        milestones: None,
        kind,
        prompt: prompt.into(),
    }
}

#[test]
fn a_script_agent_reads_the_task_and_changes_the_workspace() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut agent = agent(
        "cat > task.txt; echo 'reading the task'; echo 'wrote task.txt'",
        &[],
        dir.path(),
    );
    let mut budget = budget(Duration::from_secs(60));
    let work = agent
        .start(&job(JobKind::Change, "Fix the parser"), &mut budget)
        .expect("the script succeeds");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("task.txt")).expect("read"),
        "Fix the parser"
    );
    assert_eq!(work.summary, "reading the task\nwrote task.txt");
    assert_eq!(work.report, None);
    assert_eq!(budget.spent.turns, 1);
    assert_eq!(budget.spent.input_tokens + budget.spent.output_tokens, 0);

    let work = agent
        .follow_up("unit-tests failed: exit code 1", &mut budget)
        .expect("the follow-up succeeds");
    let task = std::fs::read_to_string(dir.path().join("task.txt")).expect("read");
    assert!(
        task.starts_with("Fix the parser\n\n## Follow-up\n"),
        "{task}"
    );
    assert!(task.ends_with("unit-tests failed: exit code 1\n"), "{task}");
    assert_eq!(work.summary, "reading the task\nwrote task.txt");
    assert_eq!(budget.spent.turns, 2);
}

#[test]
fn plans_and_analyses_report_the_whole_output() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut agent = agent(
        "for i in $(seq 1 30); do echo \"step $i\"; done",
        &[],
        dir.path(),
    );
    let mut budget = budget(Duration::from_secs(60));
    let work = agent
        .start(&job(JobKind::Plan, "Plan it"), &mut budget)
        .expect("a plan");
    let report = work.report.expect("a report");
    assert!(report.starts_with("step 1\n") && report.ends_with("step 30"));
    assert_eq!(work.summary.lines().count(), 20);
    assert!(work.summary.starts_with("step 11\n"));
}

#[test]
fn a_failing_command_is_a_command_error_with_its_last_lines() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut agent = agent(
        "cat >/dev/null; echo 'model overloaded' >&2; exit 3",
        &[],
        dir.path(),
    );
    let mut budget = budget(Duration::from_secs(60));
    let error = agent
        .start(&job(JobKind::Change, "x"), &mut budget)
        .expect_err("exit 3");
    assert!(
        matches!(&error, ProviderError::Command(m) if m == "exit code 3: model overloaded"),
        "{error:?}"
    );
    assert_eq!(budget.spent.turns, 1, "a failed run is still a turn");
}

#[test]
fn running_out_of_time_is_out_of_budget() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut agent = agent("sleep 100", &[], dir.path());
    let mut budget = budget(Duration::from_secs(1));
    let error = agent
        .start(&job(JobKind::Change, "x"), &mut budget)
        .expect_err("timed out");
    assert!(
        matches!(error, ProviderError::OutOfBudget(Limit::Time)),
        "{error:?}"
    );

    // With no time left it does not start at all.
    let error = agent
        .follow_up("again", &mut budget)
        .expect_err("no time left");
    assert!(
        matches!(error, ProviderError::OutOfBudget(Limit::Time)),
        "{error:?}"
    );
}

#[test]
fn the_environment_is_the_allow_list_only() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut agent = agent(
        "cat >/dev/null; env | sort > env.txt",
        &["VENDOR_API_KEY", "NOT_IN_THE_POD"],
        dir.path(),
    );
    agent
        .start(
            &job(JobKind::Change, "x"),
            &mut budget(Duration::from_secs(60)),
        )
        .expect("runs");
    let env = std::fs::read_to_string(dir.path().join("env.txt")).expect("read");
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !["PWD", "SHLVL", "_", "OLDPWD"].contains(k))
        .collect();
    assert_eq!(names, vec!["HOME", "LANG", "PATH", "VENDOR_API_KEY"]);
    assert!(env.contains("VENDOR_API_KEY=passed-on\n"));
    assert!(!env.contains("must-not-leak"));
}

#[test]
fn countersign_variables_cannot_be_passed_on() {
    let refused = CommandAgent::with_env(
        &spec("true", &["COUNTERSIGN_PROVIDER_API_KEY"]),
        Path::new("/tmp"),
        pod_env,
    );
    assert!(matches!(refused, Err(ProviderError::Refused(_))));
}

#[test]
fn a_provider_without_a_command_is_refused() {
    let mut no_command = spec("true", &[]);
    no_command.command = None;
    assert!(matches!(
        CommandAgent::new(&no_command, Path::new("/tmp")),
        Err(ProviderError::Refused(_))
    ));
    let mut empty = spec("true", &[]);
    if let Some(command) = empty.command.as_mut() {
        command.command.clear();
    }
    assert!(matches!(
        CommandAgent::new(&empty, Path::new("/tmp")),
        Err(ProviderError::Refused(_))
    ));
}

#[test]
fn a_follow_up_needs_a_start() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut agent = agent("true", &[], dir.path());
    assert!(matches!(
        agent.follow_up("x", &mut budget(Duration::from_secs(60))),
        Err(ProviderError::Command(_))
    ));
}

#[test]
fn through_the_gateway_a_cli_gets_the_gateway_its_token_and_the_milestones_url() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let gateway = countersign_agent::provider::Gateway {
        url: "http://gateway.countersign-system:8080/".into(),
        token: "csgw-attempt-token".to_owned().into(),
        attempt: "team/fix-1/1".into(),
    };
    let mut agent = countersign_agent::provider::provider_via_gateway(
        &spec("cat >/dev/null; env | sort > env.txt", &[]),
        &gateway,
        dir.path(),
    )
    .expect("a command agent");
    agent
        .start(
            &job(JobKind::Analyse, "x"),
            &mut budget(Duration::from_secs(60)),
        )
        .expect("runs");
    let env = std::fs::read_to_string(dir.path().join("env.txt")).expect("read");
    for line in [
        "OPENAI_BASE_URL=http://gateway.countersign-system:8080/v1\n",
        "OPENAI_API_KEY=csgw-attempt-token\n",
        "ANTHROPIC_BASE_URL=http://gateway.countersign-system:8080\n",
        "ANTHROPIC_API_KEY=csgw-attempt-token\n",
        "COUNTERSIGN_MILESTONES_URL=http://gateway.countersign-system:8080/countersign/v1/milestones\n",
    ] {
        assert!(env.contains(line), "{line} missing from {env}");
    }
}
