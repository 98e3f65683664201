//! `kubectl wait` against our kinds on the real kube-apiserver, with the real `countersign
//! controller` binary reconciling (scoped to the test's namespace, GitHub App from the fake
//! GitHub): what GitOps tools and scripts rely on.
//!
//! - `--for=condition=Ready` returns for a RiskPolicy, a Project (its installation checked on
//!   the fake GitHub) and an Agent (its provider key Secret present); a RiskPolicy whose Rego
//!   does not compile (the CRD admits it; without the admission webhook it is stored) goes
//!   `Stalled` with reason `Invalid`, and `--for=condition=Ready` times out on it. Breaking and
//!   fixing a Ready policy moves it to `Stalled` and back, at the new generation.
//! - AgentRun: `Ready` means `Succeeded`, the end of the whole pipeline (pull request merged;
//!   `tests/chart_rbac.rs` and `tests/agent_runs_e2e.rs` go there). Here: a run naming a
//!   missing Agent is `Stalled` (`AgentNotFound`); an admitted run is `Reconciling` while its
//!   pod waits (no kubelet here); cancelled, it is `Ready=False` with neither `Reconciling`
//!   nor `Stalled`, so `--for=condition=Ready` never returns for it.
//! - ApprovalGate: `Ready` means `Approved` or `Merged`. A docs-only pull request's gate
//!   approves itself and is `Ready`; a gate waiting for people is `Ready=False` (not
//!   `Stalled`); a gate naming a missing Project is `Stalled`.
//! - Server-side apply between field managers on a RiskPolicy (the Widget test kind in
//!   `tests/testkit/tests/apiserver_patch.rs` pins the generic rules; this pins our CRD's
//!   list-map keys and the controller's status manager): `kubectl apply --server-side` by a
//!   second manager conflicts on a field the first one set, `--force-conflicts` takes it
//!   over, rules (keyed by `name`) and approvers (keyed by `role`) from two managers merge
//!   instead of replacing each other, and the controller's status writes conflict with
//!   neither.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;
use support::kubectl::{Kubectl, text};

use countersign_crds::RiskPolicy;
use countersign_crds::conditions::{READY, RECONCILING, STALLED, find};
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{
    ChangedFile, FakeGitHub, TEST_APP_ID, TEST_APP_PRIVATE_KEY_PEM, User,
};
use kube::api::Api;

/// Upper bound of any single wait; `kubectl wait --timeout` stays below it.
const WAIT: Duration = Duration::from_secs(90);
const REPO: &str = "acme/shop";
const INSTALLATION: u64 = 77;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name)
}

/// What every test applies: the default RiskPolicy, a Project for `acme/shop`, an Agent with
/// its provider key Secret.
const BASE: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: model-keys
stringData:
  primary: sk-test
---
apiVersion: countersign.dev/v1alpha1
kind: Project
metadata:
  name: shop
spec:
  repository: { owner: acme, name: shop }
  installation: { id: 77 }
  roles:
    - role: developer
      users: [{ login: dev, id: 21 }]
    - role: tech_lead
      users: [{ login: lead, id: 22 }]
  riskPolicyRef: { name: default }
---
apiVersion: countersign.dev/v1alpha1
kind: Agent
metadata:
  name: backend
spec:
  role: backend
  providers:
    - name: primary
      kind: openai
      model: model-a
      baseUrl: http://127.0.0.1:9/v1
      apiKeySecretRef: { name: model-keys, key: primary }
  limits:
    timeout: 5m
"#;

/// The real control plane, a namespace with [`BASE`] applied, a fake GitHub with the App
/// installed on `acme/shop`, and `countersign controller` reconciling that namespace.
struct World {
    cluster: TestCluster,
    ns: String,
    dir: tempfile::TempDir,
    kubectl: Kubectl,
    github: FakeGitHub,
    _controller: tokio::process::Child,
}

impl World {
    /// `None` (after a loud note) when the real control plane is not built outside CI.
    async fn start(test: &str) -> Option<World> {
        let cluster = TestCluster::real_or_skip(test).await.expect("cluster")?;
        let real = cluster.as_real().expect("the real control plane");
        let ns = cluster.create_namespace("wait").await.expect("ns");
        let dir = tempfile::tempdir().expect("temp dir");
        let github = FakeGitHub::start().await.expect("fake GitHub");
        github.world().install(INSTALLATION, "acme", &["shop"]);

        let key = dir.path().join("app.pem");
        std::fs::write(&key, TEST_APP_PRIVATE_KEY_PEM).expect("write App key");
        let log = std::fs::File::create(dir.path().join("controller.log")).expect("log");
        let agent = format!("{},agent", env!("CARGO_BIN_EXE_countersign"));
        let controller = tokio::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
            .args(["controller", "--kubeconfig"])
            .arg(real.kubeconfig_path())
            .args([
                "--namespace",
                &ns,
                "--listen",
                "127.0.0.1:0",
                "--lease-namespace",
                &ns,
                "--lease-identity",
                "kubectl-wait-test",
                "--agent-command",
                &agent,
                "--gateway-url",
                "http://127.0.0.1:9",
                "--github-app-id",
                &TEST_APP_ID.to_string(),
                "--github-app-private-key-file",
                key.to_str().expect("utf-8"),
                "--github-api-url",
                &github.url(),
                "--github-git-url",
                &github.url(),
                "--retry-backoff-base",
                "100ms",
                "--retry-backoff-max",
                "400ms",
                "--wait-requeue",
                "300ms",
            ])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start countersign controller");

        let kubectl = Kubectl::new(
            real.kubeconfig_path().to_owned(),
            dir.path().join("home"),
            Some(ns.clone()),
            WAIT,
        )
        .await;
        let world = World {
            cluster,
            ns,
            dir,
            kubectl,
            github,
            _controller: controller,
        };
        world.apply_yaml("base", BASE).await;
        world
            .apply_yaml("default-policy", countersign_policies::DEFAULT_POLICY_YAML)
            .await;
        Some(world)
    }

    /// `kubectl apply -f` of `yaml` (written to a file named after `what`).
    async fn apply_yaml(&self, what: &str, yaml: &str) {
        let path = self.dir.path().join(format!("{what}.yaml"));
        std::fs::write(&path, yaml).expect("write manifest");
        self.ok(&["apply", "-f", path.to_str().expect("utf-8")])
            .await;
    }

    /// Runs kubectl and expects it to succeed; on failure shows what the objects and the
    /// controller looked like.
    async fn ok(&self, args: &[&str]) -> Output {
        let out = self.kubectl.run(args).await;
        if !out.status.success() {
            panic!(
                "kubectl {args:?} failed ({}):\n{}{}\n{}",
                out.status,
                text(&out.stdout),
                text(&out.stderr),
                self.diagnostics().await
            );
        }
        out
    }

    /// Runs kubectl and expects it to fail; returns its stderr.
    async fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl.run(args).await;
        assert!(
            !out.status.success(),
            "kubectl {args:?} must fail: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stderr)
    }

    /// Every object of ours in the namespace and the end of the controller's log.
    async fn diagnostics(&self) -> String {
        let objects = self
            .kubectl
            .run(&["get", "countersign", "-o", "yaml"])
            .await;
        let log =
            std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!(
            "objects:\n{}{}\ncontroller log (end):\n{}",
            text(&objects.stdout),
            text(&objects.stderr),
            tail.join("\n")
        )
    }

    async fn jsonpath(&self, object: &str, path: &str) -> String {
        let out = self
            .ok(&["get", object, "-o", &format!("jsonpath={path}")])
            .await;
        text(&out.stdout)
    }

    async fn policy(&self, name: &str) -> RiskPolicy {
        Api::<RiskPolicy>::namespaced(self.cluster.client(), &self.ns)
            .get(name)
            .await
            .expect("get the RiskPolicy")
    }
}

/// The condition types an object carries, read through kubectl.
async fn condition_types(w: &World, object: &str) -> Vec<String> {
    w.jsonpath(object, "{.status.conditions[*].type}")
        .await
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_waits_for_ready_and_stalled_risk_policies_projects_and_agents() {
    let Some(w) = World::start("kubectl wait: RiskPolicy, Project, Agent").await else {
        return;
    };
    let broken = fixture("broken-rego-riskpolicy.yaml");
    w.ok(&["apply", "-f", broken.to_str().expect("utf-8")])
        .await;

    w.ok(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "riskpolicy/default",
        "project/shop",
        "agent/backend",
    ])
    .await;
    // Ready is what the controller observed at the current generation, for the right reason.
    assert_eq!(
        w.jsonpath(
            "project/shop",
            "{.status.installationId} {.status.conditions[?(@.type==\"Ready\")].reason}"
        )
        .await,
        "77 Ready"
    );
    assert_eq!(condition_types(&w, "agent/backend").await, [READY]);
    let policy = w.policy("default").await;
    let status = policy.status.expect("status");
    assert_eq!(status.observed_generation, policy.metadata.generation);
    assert!(status.rule_count > 0);

    // A policy that does not compile: Stalled, never Ready.
    w.ok(&[
        "wait",
        "--for=condition=Stalled",
        "--timeout=60s",
        "riskpolicy/broken",
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=condition=Ready=False",
        "--timeout=10s",
        "riskpolicy/broken",
    ])
    .await;
    let stderr = w
        .fails(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=3s",
            "riskpolicy/broken",
        ])
        .await;
    assert!(
        stderr.contains("timed out waiting for the condition"),
        "{stderr}"
    );
    let stalled = w
        .jsonpath(
            "riskpolicy/broken",
            "{.status.conditions[?(@.type==\"Stalled\")].reason}: {.status.conditions[?(@.type==\"Stalled\")].message}",
        )
        .await;
    assert!(
        stalled.starts_with("Invalid: the policy does not compile")
            && stalled.contains("spec.rego.module"),
        "{stalled}"
    );

    // Breaking a Ready policy: Stalled at the new generation; fixing it: Ready again and
    // Stalled gone.
    w.ok(&[
        "patch",
        "riskpolicy/default",
        "--type=merge",
        "-p",
        r#"{"spec":{"neverAutoApprovePaths":["docs/["]}}"#,
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=condition=Stalled",
        "--timeout=60s",
        "riskpolicy/default",
    ])
    .await;
    let policy = w.policy("default").await;
    let conditions = policy.status.expect("status").conditions;
    let stalled = find(&conditions, STALLED).expect("Stalled");
    assert_eq!(stalled.observed_generation, policy.metadata.generation);
    assert!(
        stalled.message.contains("spec.neverAutoApprovePaths[0]"),
        "{stalled:?}"
    );
    w.ok(&[
        "patch",
        "riskpolicy/default",
        "--type=merge",
        "-p",
        r#"{"spec":{"neverAutoApprovePaths":["docs/**"]}}"#,
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "riskpolicy/default",
    ])
    .await;
    assert_eq!(condition_types(&w, "riskpolicy/default").await, [READY]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_waits_on_agent_runs_and_approval_gates_by_their_conditions() {
    let Some(w) = World::start("kubectl wait: AgentRun, ApprovalGate").await else {
        return;
    };
    let erin = User::new(5, "erin");
    let (docs, code) = {
        let mut world = w.github.world();
        let docs = world.open_pull_request(
            REPO,
            "Fix a typo",
            "typo",
            vec![ChangedFile::modified("README.md", 1, 1)],
            &erin,
        );
        let code = world.open_pull_request(
            REPO,
            "Change the checkout",
            "checkout",
            vec![ChangedFile::modified("src/checkout.rs", 10, 2)],
            &erin,
        );
        (
            docs["number"].as_u64().expect("number"),
            code["number"].as_u64().expect("number"),
        )
    };
    let gate = |name: String, project: &str, number: u64| {
        format!(
            "apiVersion: countersign.dev/v1alpha1\nkind: ApprovalGate\nmetadata:\n  name: {name}\n\
             spec:\n  projectRef: {{name: {project}}}\n  pullRequestNumber: {number}\n  \
             baseBranch: main\n  author: {{login: erin, id: 5}}\n"
        )
    };
    let run = |name: &str, agent: &str, cancel: bool| {
        format!(
            "apiVersion: countersign.dev/v1alpha1\nkind: AgentRun\nmetadata:\n  name: {name}\n\
             spec:\n  projectRef: {{name: shop}}\n  agentRef: {{name: {agent}}}\n  \
             cancelRequested: {cancel}\n  task: {{title: Change the checkout}}\n"
        )
    };
    let manifests = [
        gate(format!("shop-pr-{docs}"), "shop", docs),
        gate(format!("shop-pr-{code}"), "shop", code),
        gate("elsewhere-pr-1".into(), "elsewhere", 1),
        run("orphan", "nobody", false),
        run("work", "backend", false),
    ]
    .join("---\n");
    w.apply_yaml("runs-and-gates", &manifests).await;

    // ApprovalGate: Ready when approved (a docs-only change approves itself).
    let docs_gate = format!("approvalgate/shop-pr-{docs}");
    w.ok(&["wait", "--for=condition=Ready", "--timeout=60s", &docs_gate])
        .await;
    assert_eq!(w.jsonpath(&docs_gate, "{.status.phase}").await, "Approved");
    // Waiting for people is not Ready, and not Stalled either.
    let code_gate = format!("approvalgate/shop-pr-{code}");
    w.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Pending",
        "--timeout=60s",
        &code_gate,
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=condition=Ready=False",
        "--timeout=10s",
        &code_gate,
    ])
    .await;
    assert_eq!(condition_types(&w, &code_gate).await, [READY]);
    // Its deadline is in the future: `kubectl get -o wide` prints it as written, never
    // `<invalid>` (what a `date` printer column shows for a future time).
    let deadline = w.jsonpath(&code_gate, "{.status.deadline}").await;
    assert!(!deadline.is_empty(), "a pending gate has a deadline");
    let wide = text(&w.ok(&["get", &code_gate, "-o", "wide"]).await.stdout);
    assert!(
        wide.contains(&deadline) && !wide.contains("<invalid>"),
        "{wide}"
    );
    let stderr = w
        .fails(&["wait", "--for=condition=Ready", "--timeout=3s", &code_gate])
        .await;
    assert!(
        stderr.contains("timed out waiting for the condition"),
        "{stderr}"
    );
    // A gate whose Project does not exist needs a person: Stalled.
    w.ok(&[
        "wait",
        "--for=condition=Stalled",
        "--timeout=60s",
        "approvalgate/elsewhere-pr-1",
    ])
    .await;

    // AgentRun: a missing Agent stalls it, with the reason GitOps tools show.
    w.ok(&[
        "wait",
        "--for=condition=Stalled",
        "--timeout=60s",
        "agentrun/orphan",
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=jsonpath={.status.conditions[?(@.type==\"Stalled\")].reason}=AgentNotFound",
        "--timeout=10s",
        "agentrun/orphan",
    ])
    .await;
    // An admitted run is Running once its pod exists (the pod never gets a node here: no
    // kubelet), and Reconciling while it runs.
    w.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Running",
        "--timeout=60s",
        "agentrun/work",
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=condition=Reconciling",
        "--timeout=10s",
        "agentrun/work",
    ])
    .await;
    let stderr = w
        .fails(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=3s",
            "agentrun/work",
        ])
        .await;
    assert!(
        stderr.contains("timed out waiting for the condition"),
        "{stderr}"
    );
    // Cancelled: finished without success, so Ready=False with nothing in progress or
    // stuck, and `--for=condition=Ready` never returns.
    w.ok(&[
        "patch",
        "agentrun/work",
        "--type=merge",
        "-p",
        r#"{"spec":{"cancelRequested":true}}"#,
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=jsonpath={.status.phase}=Cancelled",
        "--timeout=60s",
        "agentrun/work",
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=condition=Ready=False",
        "--timeout=10s",
        "agentrun/work",
    ])
    .await;
    let types = condition_types(&w, "agentrun/work").await;
    assert_eq!(types, [READY], "no Reconciling or Stalled once cancelled");
    assert!(!types.iter().any(|t| t == RECONCILING || t == STALLED));
    let stderr = w
        .fails(&[
            "wait",
            "--for=condition=Ready",
            "--timeout=3s",
            "agentrun/work",
        ])
        .await;
    assert!(
        stderr.contains("timed out waiting for the condition"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_field_managers_conflict_and_merge_on_a_risk_policy() {
    let Some(w) = World::start("server-side apply on a RiskPolicy").await else {
        return;
    };
    let valid = fixture("valid-riskpolicy.yaml");
    let valid = valid.to_str().expect("utf-8");
    let out = w
        .ok(&[
            "apply",
            "--server-side",
            "--field-manager=gitops",
            "-f",
            valid,
        ])
        .await;
    assert!(
        text(&out.stdout).contains("riskpolicy.countersign.dev/guarded serverside-applied"),
        "{out:?}"
    );
    w.ok(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "riskpolicy/guarded",
    ])
    .await;

    // A second manager changing a field the first one set: a conflict naming both.
    let human = |timeout: &str| {
        format!(
            "apiVersion: countersign.dev/v1alpha1\nkind: RiskPolicy\nmetadata:\n  name: guarded\n\
             spec:\n  workflows:\n    medium:\n      name: supervised\n      timeout: {timeout}\n"
        )
    };
    let path = w.dir.path().join("human.yaml");
    let path = path.to_str().expect("utf-8");
    std::fs::write(path, human("2h")).expect("write");
    let stderr = w
        .fails(&[
            "apply",
            "--server-side",
            "--field-manager=human",
            "-f",
            path,
        ])
        .await;
    assert!(
        stderr.contains("conflict with \"gitops\"")
            && stderr.contains(".spec.workflows.medium.timeout"),
        "{stderr}"
    );
    assert_eq!(
        w.policy("guarded").await.spec.workflows.medium.timeout,
        Some(countersign_crds::GoDuration(Duration::from_secs(4 * 3600))),
        "nothing changed"
    );
    // The same value is shared ownership, no conflict; forcing takes the field over.
    std::fs::write(path, human("4h")).expect("write");
    w.ok(&[
        "apply",
        "--server-side",
        "--field-manager=human",
        "-f",
        path,
    ])
    .await;
    std::fs::write(path, human("2h")).expect("write");
    w.ok(&[
        "apply",
        "--server-side",
        "--field-manager=human",
        "--force-conflicts",
        "-f",
        path,
    ])
    .await;
    // Now the first manager is the one that conflicts.
    let stderr = w
        .fails(&[
            "apply",
            "--server-side",
            "--field-manager=gitops",
            "-f",
            valid,
        ])
        .await;
    assert!(
        stderr.contains("conflict with \"human\"")
            && stderr.contains(".spec.workflows.medium.timeout"),
        "{stderr}"
    );

    // Rules are a list keyed by name and approvers a list keyed by role: another manager's
    // entries merge with the first one's instead of replacing the list.
    let additions = w.dir.path().join("security.yaml");
    std::fs::write(
        &additions,
        "apiVersion: countersign.dev/v1alpha1\nkind: RiskPolicy\nmetadata:\n  name: guarded\n\
         spec:\n  rules:\n    - name: migrations\n      match: {paths: [\"migrations/**\"]}\n      \
         set: {impact: 9}\n  workflows:\n    high:\n      name: managed\n      approvers:\n        \
         - {role: security_team}\n",
    )
    .expect("write");
    w.ok(&[
        "apply",
        "--server-side",
        "--field-manager=security",
        "-f",
        additions.to_str().expect("utf-8"),
    ])
    .await;
    let policy = w.policy("guarded").await;
    let rules: Vec<&str> = policy.spec.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(rules, ["docs-only", "code-change", "migrations"]);
    let approvers: Vec<&str> = policy
        .spec
        .workflows
        .high
        .approvers
        .iter()
        .map(|a| a.role.as_str())
        .collect();
    assert_eq!(approvers, ["tech_lead", "manager", "security_team"]);

    // The controller's status writes (its own manager, forced on status only) leave every
    // spec manager alone: the new rule is counted at the new generation.
    let generation = policy.metadata.generation.expect("generation");
    w.ok(&[
        "wait",
        &format!("--for=jsonpath={{.status.observedGeneration}}={generation}"),
        "--timeout=60s",
        "riskpolicy/guarded",
    ])
    .await;
    w.ok(&[
        "wait",
        "--for=jsonpath={.status.ruleCount}=3",
        "--timeout=10s",
        "riskpolicy/guarded",
    ])
    .await;
    let managers = w
        .jsonpath(
            "riskpolicy/guarded",
            "{range .metadata.managedFields[*]}{.manager}/{.operation}/{.subresource} {end}",
        )
        .await;
    let mut managers: Vec<&str> = managers.split_whitespace().collect();
    managers.sort_unstable();
    assert_eq!(
        managers,
        [
            "countersign-controller/Apply/status",
            "gitops/Apply/",
            "human/Apply/",
            "security/Apply/",
        ]
    );
    // Re-applying the first manager's own configuration (forced past the field it lost)
    // keeps the other managers' rule and approver.
    w.ok(&[
        "apply",
        "--server-side",
        "--field-manager=gitops",
        "--force-conflicts",
        "-f",
        valid,
    ])
    .await;
    let policy = w.policy("guarded").await;
    assert_eq!(policy.spec.rules.len(), 3);
    assert_eq!(policy.spec.workflows.high.approvers.len(), 3);
}
