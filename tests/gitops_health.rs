//! GitOps health of every kind, checked with the real readers: the Argo CD health scripts
//! (`charts/countersign/health/*.lua`) run in gopher-lua, the Lua VM Argo CD embeds, and
//! kstatus (`sigs.k8s.io/cli-utils`, what Flux's `wait: true` uses) computes each object's
//! status. The fixtures are not written by hand: they are the statuses the controllers'
//! own functions produce (`project::desired_status`, `agent::desired_status`,
//! `risk_policy::desired_status`, every `RunPhase` and `GatePhase` through its
//! `readiness()` and `apply_readiness`), plus an object without status and one whose status
//! is older than its spec. Argo CD and kstatus must agree: Healthy is Current, Degraded is
//! Failed, Progressing and Suspended are InProgress. Then `kubectl wait` on a real
//! control plane with the real controller: `--for=condition=Ready riskpolicy/default`.

mod support;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use countersign_controller::metrics::Metrics;
use countersign_controller::{Context, Settings, agent, project, risk_policy};
use countersign_crds::conditions::{Readiness, apply_readiness};
use countersign_crds::{
    Agent, AgentRun, AgentRunStatus, ApprovalGateStatus, GatePhase, Project, RiskPolicy, RunPhase,
};
use countersign_github::tokens::{MintError, Unconfigured};
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::tools::Tool;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// One object and what each reader must say about it.
struct Fixture {
    name: String,
    object: Value,
    argo: &'static str,
    kstatus: &'static str,
}

const KINDS: [&str; 5] = ["Project", "Agent", "AgentRun", "ApprovalGate", "RiskPolicy"];

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).expect("time")
}

/// The kstatus answer Argo CD's answer must agree with.
fn kstatus_for(argo: &str) -> &'static str {
    match argo {
        "Healthy" => "Current",
        "Degraded" => "Failed",
        _ => "InProgress",
    }
}

fn fixture(name: impl Into<String>, object: Value, argo: &'static str) -> Fixture {
    Fixture {
        name: name.into(),
        object,
        argo,
        kstatus: kstatus_for(argo),
    }
}

fn base(kind: &str, name: &str, generation: i64) -> Value {
    json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": "team-a", "generation": generation},
    })
}

fn with_status(mut object: Value, status: impl serde::Serialize) -> Value {
    object["status"] = serde_json::to_value(status).expect("status");
    object
}

/// Fixtures every kind gets: just created (no status) and a spec change not yet observed.
fn common(kind: &str, observed: Value) -> Vec<Fixture> {
    let mut stale = observed;
    stale["metadata"]["generation"] = json!(3);
    vec![
        // kstatus cannot tell a custom object nobody has reconciled yet from a done one (no
        // status, nothing to compare): it says Current. Argo CD's script says Progressing.
        // Countersign's controllers write a status within a reconcile of the create.
        Fixture {
            name: format!("{kind} just created"),
            object: base(kind, "new", 1),
            argo: "Progressing",
            kstatus: "Current",
        },
        fixture(
            format!("{kind} with a spec change not yet observed"),
            stale,
            "Progressing",
        ),
    ]
}

fn project_fixtures() -> Vec<Fixture> {
    let mut project: Project = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
        "metadata": {"name": "api", "namespace": "team-a", "generation": 2},
        "spec": {"repository": {"owner": "acme", "name": "api"}}
    }))
    .expect("project");
    let observe = |project: &Project, found: bool, installation: Option<Result<u64, MintError>>| {
        project::desired_status(
            project,
            &project::Observed {
                claim: countersign_policies::ownership::Claim::Owner,
                ledger: None,
                policy_found: found,
                installation,
                runs: Vec::new(),
                gates: Vec::new(),
            },
            now(),
        )
    };
    let object = |status| with_status(base("Project", "api", 2), status);
    let ready = observe(&project, true, Some(Ok(31)));
    let mut fixtures = vec![
        fixture("Project ready", object(ready.clone()), "Healthy"),
        fixture(
            "Project without GitHub",
            object(observe(&project, true, None)),
            "Healthy",
        ),
        fixture(
            "Project whose RiskPolicy is missing",
            object(observe(&project, false, None)),
            "Degraded",
        ),
        fixture(
            "Project whose App is not installed",
            object(observe(
                &project,
                true,
                Some(Err(MintError::InstallationNotFound {
                    owner: "acme".into(),
                    name: "api".into(),
                })),
            )),
            "Degraded",
        ),
        fixture(
            "Project first observed while GitHub is down",
            object(observe(
                &project,
                true,
                Some(Err(MintError::Unavailable("503".into()))),
            )),
            "Progressing",
        ),
    ];
    // Ready, then GitHub goes down: Reconciling again, never Stalled.
    project.status = Some(ready);
    fixtures.push(fixture(
        "Project whose GitHub went down after it was ready",
        object(observe(
            &project,
            true,
            Some(Err(MintError::RateLimited {
                retry_after_secs: 30,
            })),
        )),
        "Progressing",
    ));
    fixtures.extend(common("Project", object(observe(&project, true, None))));
    fixtures
}

fn agent_fixtures() -> Vec<Fixture> {
    let agent = |suspend: bool| -> Agent {
        serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
            "metadata": {"name": "backend", "namespace": "team-a", "generation": 2},
            "spec": {"role": "backend", "suspend": suspend, "providers": [
                {"name": "p", "kind": "openai", "model": "m"}]}
        }))
        .expect("agent")
    };
    let running: AgentRun = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": "r", "namespace": "team-a"},
        "spec": {"projectRef": {"name": "api"}, "agentRef": {"name": "backend"},
                 "task": {"title": "t"}},
        "status": {"phase": "Running"}
    }))
    .expect("run");
    let object = |status| with_status(base("Agent", "backend", 2), status);
    let idle = agent::desired_status(&agent(false), &[], None, now());
    let mut fixtures = vec![
        fixture("Agent idle", object(idle.clone()), "Healthy"),
        fixture(
            "Agent active",
            object(agent::desired_status(
                &agent(false),
                &[running],
                None,
                now(),
            )),
            "Healthy",
        ),
        fixture(
            "Agent whose provider Secret is missing",
            object(agent::desired_status(
                &agent(false),
                &[],
                Some("Secret \"keys\" is missing".into()),
                now(),
            )),
            "Degraded",
        ),
        fixture(
            "Agent suspended (as its spec asks)",
            object(agent::desired_status(&agent(true), &[], None, now())),
            "Healthy",
        ),
    ];
    fixtures.extend(common("Agent", object(idle)));
    fixtures
}

fn run_fixtures() -> Vec<Fixture> {
    let object = |readiness: Readiness, phase: RunPhase| {
        let mut status = AgentRunStatus {
            phase,
            observed_generation: Some(1),
            ..AgentRunStatus::default()
        };
        apply_readiness(&mut status.conditions, &readiness, Some(1), now());
        with_status(base("AgentRun", "run", 1), status)
    };
    let mut fixtures = Vec::new();
    for phase in [
        RunPhase::Pending,
        RunPhase::Queued,
        RunPhase::Planning,
        RunPhase::AwaitingPlanApproval,
        RunPhase::AwaitingAnswer,
        RunPhase::Running,
        RunPhase::PullRequestOpen,
        RunPhase::Coordinating,
        RunPhase::Succeeded,
        RunPhase::Failed,
        RunPhase::Cancelled,
        RunPhase::TimedOut,
    ] {
        let argo = match phase {
            RunPhase::Succeeded => "Healthy",
            RunPhase::Failed | RunPhase::TimedOut => "Degraded",
            RunPhase::AwaitingPlanApproval
            | RunPhase::AwaitingAnswer
            | RunPhase::PullRequestOpen
            | RunPhase::Coordinating
            | RunPhase::Cancelled => "Suspended",
            RunPhase::Pending | RunPhase::Queued | RunPhase::Planning | RunPhase::Running => {
                "Progressing"
            }
        };
        fixtures.push(fixture(
            format!("AgentRun {phase:?}"),
            object(phase.readiness("the phase's message"), phase),
            argo,
        ));
    }
    // A run blocked before it starts (decide's blockers: a missing Agent, Secret, App).
    fixtures.push(fixture(
        "AgentRun waiting on a missing Secret",
        object(
            Readiness::Stalled {
                reason: "SecretMissing".into(),
                message: "Secret \"keys\" is missing".into(),
            },
            RunPhase::Pending,
        ),
        "Degraded",
    ));
    fixtures.extend(common(
        "AgentRun",
        object(RunPhase::Running.readiness("running"), RunPhase::Running),
    ));
    fixtures
}

fn gate_fixtures() -> Vec<Fixture> {
    let object = |readiness: Readiness, phase: GatePhase| {
        let mut status = ApprovalGateStatus {
            phase,
            observed_generation: Some(1),
            ..ApprovalGateStatus::default()
        };
        apply_readiness(&mut status.conditions, &readiness, Some(1), now());
        with_status(base("ApprovalGate", "api-pr-7", 1), status)
    };
    let mut fixtures = Vec::new();
    for phase in [
        GatePhase::Pending,
        GatePhase::Approved,
        GatePhase::Rejected,
        GatePhase::Held,
        GatePhase::Expired,
        GatePhase::Merged,
        GatePhase::Closed,
    ] {
        let argo = match phase {
            GatePhase::Approved | GatePhase::Merged => "Healthy",
            GatePhase::Expired => "Degraded",
            GatePhase::Pending | GatePhase::Rejected | GatePhase::Held | GatePhase::Closed => {
                "Suspended"
            }
        };
        fixtures.push(fixture(
            format!("ApprovalGate {phase:?}"),
            object(phase.readiness("the phase's message"), phase),
            argo,
        ));
    }
    // The gate reconciler's problems (gate/status.rs): transient and needing a person.
    fixtures.push(fixture(
        "ApprovalGate while GitHub is unavailable",
        object(
            Readiness::Progressing {
                reason: "GitHubUnavailable".into(),
                message: "503".into(),
            },
            GatePhase::Pending,
        ),
        "Progressing",
    ));
    fixtures.push(fixture(
        "ApprovalGate whose RiskPolicy is invalid",
        object(
            Readiness::Stalled {
                reason: "RiskPolicyInvalid".into(),
                message: "invalid glob".into(),
            },
            GatePhase::Pending,
        ),
        "Degraded",
    ));
    fixtures.extend(common(
        "ApprovalGate",
        object(
            GatePhase::Approved.readiness("approved"),
            GatePhase::Approved,
        ),
    ));
    fixtures
}

fn policy_fixtures() -> Vec<Fixture> {
    let mut policy: RiskPolicy = countersign_policies::default_policy();
    policy.metadata.generation = Some(2);
    let object = |status| with_status(base("RiskPolicy", "default", 2), status);
    let compiled = risk_policy::desired_status(&policy, Ok(12), now());
    let invalid = risk_policy::desired_status(
        &policy,
        Err(vec!["spec.rules[1].match.paths[0]: invalid glob".into()]),
        now(),
    );
    let mut fixtures = vec![
        fixture("RiskPolicy compiled", object(compiled.clone()), "Healthy"),
        fixture(
            "RiskPolicy that does not compile",
            object(invalid.clone()),
            "Degraded",
        ),
    ];
    policy.status = Some(invalid);
    fixtures.push(fixture(
        "RiskPolicy fixed after it was invalid",
        object(risk_policy::desired_status(&policy, Ok(12), now())),
        "Healthy",
    ));
    fixtures.extend(common("RiskPolicy", object(compiled)));
    fixtures
}

fn fixtures(kind: &str) -> Vec<Fixture> {
    match kind {
        "Project" => project_fixtures(),
        "Agent" => agent_fixtures(),
        "AgentRun" => run_fixtures(),
        "ApprovalGate" => gate_fixtures(),
        "RiskPolicy" => policy_fixtures(),
        other => unreachable!("{other}"),
    }
}

fn script(kind: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/countersign/health")
        .join(format!("{}.lua", kind.to_lowercase()))
}

/// Runs `tool args…` with the fixtures' objects as a JSON array on stdin.
fn judge(tool: &Path, args: &[&Path], fixtures: &[Fixture]) -> Vec<(String, String)> {
    let objects: Vec<&Value> = fixtures.iter().map(|f| &f.object).collect();
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&serde_json::to_vec(&objects).expect("json"))
        .expect("write");
    let out = child.wait_with_output().expect("tool runs");
    assert!(
        out.status.success(),
        "{}: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON answers");
    answers
        .iter()
        .map(|a| {
            (
                a["status"].as_str().unwrap_or_default().to_owned(),
                a["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[test]
fn argo_cd_health_scripts_in_gopher_lua_cover_every_phase_and_condition() {
    let Some(lua) = Tool::LuaHealth
        .for_test("Argo CD health")
        .expect("luahealth")
    else {
        return;
    };
    let mut seen = 0;
    for kind in KINDS {
        let fixtures = fixtures(kind);
        let answers = judge(&lua, &[&script(kind)], &fixtures);
        for (fixture, (status, message)) in fixtures.iter().zip(&answers) {
            assert_eq!(
                status, fixture.argo,
                "Argo CD health of {}: {message}",
                fixture.name
            );
            assert!(!message.is_empty(), "{} has no message", fixture.name);
            seen += 1;
        }
        // Every Argo CD health status a script can return is exercised for its kind.
        let statuses: std::collections::BTreeSet<&str> = fixtures.iter().map(|f| f.argo).collect();
        let expected: &[&str] = match kind {
            "AgentRun" | "ApprovalGate" => &["Degraded", "Healthy", "Progressing", "Suspended"],
            _ => &["Degraded", "Healthy", "Progressing"],
        };
        assert_eq!(statuses.into_iter().collect::<Vec<_>>(), expected, "{kind}");
    }
    assert!(seen >= 40, "{seen} fixtures");
}

#[test]
fn kstatus_agrees_with_argo_cd_on_every_fixture() {
    let Some(kstatus) = Tool::Kstatus.for_test("kstatus").expect("kstatus") else {
        return;
    };
    for kind in KINDS {
        let fixtures = fixtures(kind);
        let answers = judge(&kstatus, &[], &fixtures);
        for (fixture, (status, message)) in fixtures.iter().zip(&answers) {
            assert_eq!(
                status, fixture.kstatus,
                "kstatus of {} (Argo CD: {}): {message}",
                fixture.name, fixture.argo
            );
        }
    }
}

#[test]
fn the_gitops_docs_carry_the_charts_health_scripts() {
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/gitops.md"))
            .expect("docs/gitops.md");
    for kind in KINDS {
        let script = std::fs::read_to_string(script(kind)).expect("script");
        let key = format!("resource.customizations.health.countersign.dev_{kind}: |");
        let at = docs
            .find(&key)
            .unwrap_or_else(|| panic!("docs/gitops.md lacks {key}"));
        let indented: String = script
            .lines()
            .map(|l| {
                if l.is_empty() {
                    "\n".to_owned()
                } else {
                    format!("    {l}\n")
                }
            })
            .collect();
        assert!(
            docs[at..].contains(&indented),
            "docs/gitops.md's {kind} script differs from charts/countersign/health/"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_wait_for_ready_works_on_risk_policies() {
    let Some(kubectl) = Tool::Kubectl.for_test("kubectl wait").expect("kubectl") else {
        return;
    };
    let Some(cluster) = TestCluster::real_or_skip("kubectl wait on RiskPolicies")
        .await
        .expect("cluster")
    else {
        return;
    };
    let ns = cluster
        .create_namespace("cs-wait")
        .await
        .expect("namespace");
    let client = cluster.client();
    let ctx = Context::new(
        client.clone(),
        Settings {
            namespace: Some(ns.clone()),
            ..Settings::default()
        },
        Arc::new(Unconfigured),
        Arc::new(Metrics::default()),
    );
    let controller = tokio::spawn(countersign_controller::run_controllers(Arc::new(ctx)));
    let policies: Api<RiskPolicy> = Api::namespaced(client, &ns);
    let mut policy = countersign_policies::default_policy();
    policy.metadata.namespace = Some(ns.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("default policy");
    let mut broken = countersign_policies::default_policy();
    broken.metadata.name = Some("broken".into());
    broken.metadata.namespace = Some(ns.clone());
    broken.spec.rules[0].matches.paths = vec!["src/[oops".into()];
    policies
        .create(&PostParams::default(), &broken)
        .await
        .expect("broken policy (no admission webhook here)");

    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).expect("kubeconfig");
    let (kubectl, kubeconfig, wait_ns) = (kubectl.clone(), kubeconfig.clone(), ns.clone());
    let wait = move |condition: &str, name: &str| {
        Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["-n", &wait_ns, "wait", "--timeout=60s"])
            .arg(format!("--for=condition={condition}"))
            .arg(format!("riskpolicy/{name}"))
            .output()
            .expect("kubectl runs")
    };
    let ready = tokio::task::spawn_blocking({
        let wait = wait.clone();
        move || wait("Ready", "default")
    });
    let ready = tokio::time::timeout(Duration::from_secs(90), ready)
        .await
        .expect("in time")
        .expect("joined");
    assert!(
        ready.status.success(),
        "kubectl wait --for=condition=Ready riskpolicy/default: {}",
        String::from_utf8_lossy(&ready.stderr)
    );
    let stalled = tokio::task::spawn_blocking(move || wait("Stalled", "broken"));
    let stalled = tokio::time::timeout(Duration::from_secs(90), stalled)
        .await
        .expect("in time")
        .expect("joined");
    assert!(
        stalled.status.success(),
        "kubectl wait --for=condition=Stalled riskpolicy/broken: {}",
        String::from_utf8_lossy(&stalled.stderr)
    );
    let broken = policies.get("broken").await.expect("broken");
    let status = broken.status.expect("status");
    let ready = countersign_crds::conditions::find(&status.conditions, "Ready").expect("Ready");
    assert_eq!(ready.reason, "Invalid");
    assert!(ready.message.contains("src/[oops"), "{}", ready.message);
    assert_eq!(status.observed_generation, broken.metadata.generation);
    controller.abort();
}
