//! `countersign-sandbox demo`: the newcomer's one-command tour of Countersign.
//!
//! GitHub and the AI models are simulated in this process (the fake GitHub with a sample
//! repository and two issues, a scripted OpenAI-compatible model per Agent). Kubernetes is
//! either the real control plane (kube-apiserver, etcd and kube-controller-manager built from
//! Kubernetes' Go modules by `scripts/controlplane`: real RBAC, Pod Security admission and CEL
//! validation) or the test kit's fake apiserver (starts in milliseconds); either way the test
//! kit's kubelet runs the agent pods as local processes. The controller, the bot, the provider
//! gateway and the agent's three steps are the real `countersign` binary, started as processes
//! exactly as in a cluster. The agent reaches the model only through the gateway, which holds
//! the key.
//!
//! The tour plays two scenarios on that one stage (see [`tour`]). First it labels issue #1 for
//! the backend Agent, follows the run (phases, pod, branch, pull request), shows the risk and
//! the approvals it needs, approves as the required roles and waits for the
//! `countersign/approval` check to turn green. Then an architect Agent breaks issue #2 into a
//! backend and a frontend sub-task (see [`breakdown`]); once the tech lead approves the
//! breakdown, both run at once as child runs, each opens its own pull request, and each gate
//! scores its own risk: the database migration critical, the page change medium. Every wait
//! has a timeout; any step that fails ends the tour with an error that says which step and
//! where the logs are.

mod breakdown;
pub(crate) mod processes;
pub(crate) mod script;
mod tour;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::cluster::{ClusterKind, TestCluster};
use crate::controlplane::Binaries;
use crate::github::{FakeGitHub, TEST_APP_ID, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_SLUG, User};
use crate::model::FakeModel;

use self::processes::Started;

/// The namespace the tour works in.
pub const NAMESPACE: &str = "demo";
/// The sample repository.
pub const REPOSITORY: &str = "acme/shop";
/// The webhook secret shared by the fake GitHub's deliveries and the bot.
const WEBHOOK_SECRET: &str = "demo-webhook-secret";
/// The GitHub App installation on `acme`.
const INSTALLATION: u64 = 7;
/// How often state is polled while waiting.
const POLL: Duration = Duration::from_millis(100);
/// The name of the one required check.
const CHECK: &str = "countersign/approval";

/// How to run the tour.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The `countersign` binary to run as controller, bot and agent.
    pub countersign: PathBuf,
    /// Directory for the kubeconfig, the App key, logs and pod files.
    pub dir: PathBuf,
    /// Longest wait for any one step.
    pub step_timeout: Duration,
    /// The Kubernetes the tour runs on.
    pub kubernetes: DemoKubernetes,
}

/// The Kubernetes a tour runs on.
#[derive(Clone, Debug)]
pub enum DemoKubernetes {
    /// The real control plane from these binaries (see [`Binaries`]).
    Real(Binaries),
    /// The test kit's fake apiserver.
    Fake,
}

impl DemoKubernetes {
    /// What `--control-plane` asks for: `real` (built now when it is not), `fake`, or
    /// `auto`: real when `scripts/controlplane` has built it, else fake.
    pub async fn choose(requested: &str) -> anyhow::Result<DemoKubernetes> {
        match requested {
            "real" => Ok(DemoKubernetes::Real(Binaries::find_or_build().await?)),
            "fake" => Ok(DemoKubernetes::Fake),
            "auto" => Ok(match Binaries::find().await? {
                Some(binaries) => DemoKubernetes::Real(binaries),
                None => DemoKubernetes::Fake,
            }),
            other => bail!("--control-plane {other:?}: expected real, fake or auto"),
        }
    }
}

/// What the tour did, for its caller (and tests).
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// The AgentRun's name.
    pub run: String,
    /// The pull request the agent's change became.
    pub pull_request: u64,
    /// Risk level of the pull request.
    pub risk: String,
    /// The roles whose approval turned the check green.
    pub approved_roles: Vec<String>,
    /// The check run's conclusion.
    pub conclusion: String,
    /// The second scenario: the architect's breakdown and its child runs.
    pub breakdown: BreakdownReport,
    /// The bot's address (gate pages live under `/gates/`).
    pub bot: SocketAddr,
    /// The kubeconfig of the simulated cluster.
    pub kubeconfig: PathBuf,
}

/// What the second scenario did: an architect's breakdown, approved and carried out as child
/// runs that each opened a pull request behind a gate of its own.
#[derive(Clone, Debug)]
pub struct BreakdownReport {
    /// The architect's AgentRun, the children's parent.
    pub run: String,
    /// The issue it broke down.
    pub issue: u64,
    /// Who approved the breakdown with `/approve`.
    pub approved_by: String,
    /// The parent's phase once its children had opened their pull requests.
    pub phase: countersign_crds::RunPhase,
    /// One per sub-task, in the breakdown's order.
    pub children: Vec<ChildReport>,
}

/// One sub-task of the breakdown: its child run, pull request and gate.
#[derive(Clone, Debug)]
pub struct ChildReport {
    /// The sub-task's id in the breakdown.
    pub task: String,
    /// The child AgentRun (`<parent>-<task>`).
    pub run: String,
    /// The Agent that did it.
    pub agent: String,
    /// Its pull request.
    pub pull_request: u64,
    /// Its ApprovalGate.
    pub gate: String,
    /// The gate's risk level, e.g. `critical`.
    pub risk: String,
    /// The gate's risk score, 0 to 10.
    pub score: u8,
    /// The roles the gate needs an approval from.
    pub required_roles: Vec<String>,
    /// The state of `countersign/approval` on the pull request's head (`pending`).
    pub check: String,
}

/// The people of the sample repository.
struct Cast {
    rita: User,
    dev: User,
    lead: User,
}

fn cast() -> Cast {
    Cast {
        rita: User::new(101, "rita"),
        dev: User::new(102, "dev"),
        lead: User::new(103, "lead"),
    }
}

/// Prints the tour's lines with the time since it started.
struct Narrator {
    started: Instant,
    say: Box<dyn FnMut(&str) + Send>,
}

impl Narrator {
    fn line(&mut self, text: &str) {
        let elapsed = self.started.elapsed().as_secs_f32();
        (self.say)(&format!("[{elapsed:5.1}s] {text}"));
    }

    fn plain(&mut self, text: &str) {
        (self.say)(text);
    }
}

/// The scripted models, one per Agent: the fake answers every request from one queue, so the
/// backend and frontend sub-tasks, which run at once, must not share one.
struct Models {
    backend: FakeModel,
    frontend: FakeModel,
    architect: FakeModel,
}

impl Models {
    async fn start() -> anyhow::Result<Self> {
        let start = || async {
            let model = FakeModel::start()
                .await
                .context("Cannot start a scripted model")?;
            model.require_api_key(script::MODEL_KEY);
            anyhow::Ok(model)
        };
        Ok(Self {
            backend: start().await?,
            frontend: start().await?,
            architect: start().await?,
        })
    }
}

/// Everything the tour runs; dropped at the end, which stops the processes and fakes.
struct Stage {
    api: TestCluster,
    github: FakeGitHub,
    models: Models,
    bot: Started,
    _controller: Started,
    gateway: Started,
    kubelet: tokio::task::JoinHandle<()>,
    kubeconfig: PathBuf,
}

impl Drop for Stage {
    fn drop(&mut self) {
        self.kubelet.abort();
    }
}

/// Runs the tour, writing its narration through `say`, and returns what it did. With
/// `keep`, the simulated world keeps running after the green check until `keep` resolves.
pub async fn run(
    options: &DemoOptions,
    say: impl FnMut(&str) + Send + 'static,
    keep: impl std::future::Future<Output = ()>,
) -> anyhow::Result<DemoReport> {
    let mut n = Narrator {
        started: Instant::now(),
        say: Box::new(say),
    };
    if !options.countersign.is_file() {
        bail!(
            "the countersign binary {} does not exist; build it first: cargo build --release --bins",
            options.countersign.display()
        );
    }
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("Cannot create {}", options.dir.display()))?;
    // Pods run in directories of their own: a relative path would not reach the binary.
    let options = &DemoOptions {
        countersign: std::fs::canonicalize(&options.countersign)
            .with_context(|| format!("Cannot resolve {}", options.countersign.display()))?,
        ..options.clone()
    };
    let stage = set_stage(options, &mut n).await?;
    let report = tour::tour(options, &stage, &mut n).await.map_err(|e| {
        e.context(format!(
            "the demo stopped; logs: {}, {} and {}",
            options.dir.join("controller.log").display(),
            options.dir.join("bot.log").display(),
            options.dir.join("gateway.log").display()
        ))
    })?;
    n.plain("");
    n.line(&format!(
        "✔ done: issue #1 → agent → pull request #{} → {} risk → approvals by {} → check {}",
        report.pull_request,
        report.risk,
        report.approved_roles.join(" + "),
        report.conclusion
    ));
    let children: Vec<String> = report
        .breakdown
        .children
        .iter()
        .map(|c| {
            format!(
                "{} → pull request #{} → {} risk",
                c.agent, c.pull_request, c.risk
            )
        })
        .collect();
    n.line(&format!(
        "✔ done: issue #{} → architect → breakdown approved by {} → {} (each waits for its own approvals)",
        report.breakdown.issue,
        report.breakdown.approved_by,
        children.join(", ")
    ));
    n.plain("");
    n.plain("Explore the cluster while it runs (with --keep), e.g.:");
    n.plain(&format!(
        "  export KUBECONFIG={}",
        stage.kubeconfig.display()
    ));
    n.plain(&format!(
        "  kubectl get countersign -n {NAMESPACE}; kubectl describe csgate -n {NAMESPACE}"
    ));
    for pr in std::iter::once(report.pull_request)
        .chain(report.breakdown.children.iter().map(|c| c.pull_request))
    {
        n.plain(&format!(
            "  open http://{}/gates/{NAMESPACE}/shop-pr-{pr}",
            report.bot
        ));
    }
    n.plain(&match stage.api.kind() {
        ClusterKind::Real => "This tour ran on the real control plane; `./scripts/demo \
                              --control-plane fake` runs it on the fast simulated apiserver."
            .to_owned(),
        ClusterKind::Fake => "This tour ran on the SIMULATED apiserver; `./scripts/demo \
                              --control-plane real` runs it on a real kube-apiserver and etcd \
                              (built on first use, about 10 minutes, needs Go)."
            .to_owned(),
    });
    n.plain("Next: install on a real cluster with a real GitHub App (README, \"Install on a real cluster\").");
    keep.await;
    drop(stage);
    Ok(report)
}

async fn set_stage(options: &DemoOptions, n: &mut Narrator) -> anyhow::Result<Stage> {
    let cast = cast();
    let api = match &options.kubernetes {
        DemoKubernetes::Real(binaries) => TestCluster::dedicated_real(Some(binaries.clone()))
            .await
            .context("Cannot start the real Kubernetes control plane")?,
        DemoKubernetes::Fake => {
            let api = TestCluster::fake()
                .await
                .context("Cannot start the fake kube-apiserver")?;
            api.install_crds()
                .await
                .context("Cannot install the CRDs")?;
            api
        }
    };
    // Agent pods must pass the "restricted" Pod Security profile (enforced on the real one).
    api.create_named_namespace(
        NAMESPACE,
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await?;
    let kubeconfig = options.dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig_yaml())
        .with_context(|| format!("Cannot write {}", kubeconfig.display()))?;
    let github = FakeGitHub::start()
        .await
        .context("Cannot start the fake GitHub")?;
    let models = Models::start().await?;
    models.backend.script(script::change());
    {
        let mut w = github.world();
        w.install(INSTALLATION, "acme", &["shop"]);
        for user in [&cast.rita, &cast.dev, &cast.lead] {
            w.add_user(user);
            w.set_permission(REPOSITORY, &user.login, "write");
        }
        w.create_repository(REPOSITORY, script::REPOSITORY_FILES);
        w.open_issue(
            REPOSITORY,
            script::ISSUE_TITLE,
            script::ISSUE_BODY,
            &cast.rita,
        );
        w.open_issue(
            REPOSITORY,
            script::BREAKDOWN_ISSUE_TITLE,
            script::BREAKDOWN_ISSUE_BODY,
            &cast.rita,
        );
    }
    n.plain("Countersign demo, on this machine alone:");
    match api.as_real() {
        Some(real) => n.plain(&format!(
            "  Kubernetes  a REAL kube-apiserver, etcd and kube-controller-manager at {} (ready in \
             {:.1?}; RBAC, Pod Security \"restricted\" and CEL validation enforced; the test \
             kit's kubelet runs pods as local processes)",
            api.url(),
            real.startup_time()
        )),
        None => n.plain(&format!(
            "  Kubernetes  a SIMULATED kube-apiserver at {} (the test kit's fake; pods run as local \
             processes)",
            api.url()
        )),
    }
    n.plain(&format!(
        "  GitHub      a fake GitHub at {} holding {REPOSITORY} and its issues #1 and #2",
        github.url()
    ));
    n.plain(&format!(
        "  AI models   scripted OpenAI-compatible endpoints, one per Agent: backend {}, frontend \
         {}, architect {} (only the gateway has their key)",
        models.backend.openai_base_url(),
        models.frontend.openai_base_url(),
        models.architect.openai_base_url()
    ));
    n.plain(&format!(
        "  Countersign the real `{}` binary: controller, bot, provider gateway and agent processes",
        options.countersign.display()
    ));
    n.plain("");

    apply_manifests(&api, &models).await?;
    let kubelet = api.kubelet(NAMESPACE, options.dir.join("pods"));
    let kubelet = tokio::spawn(async move {
        if let Err(e) = kubelet.run().await {
            tracing::error!(error = %format!("{e:#}"), "the local kubelet stopped");
        }
    });
    let key = options.dir.join("github-app.pem");
    std::fs::write(&key, TEST_APP_PRIVATE_KEY_PEM).context("Cannot write the App key")?;
    let secret = options.dir.join("webhook-secret");
    std::fs::write(&secret, WEBHOOK_SECRET).context("Cannot write the webhook secret")?;
    let github_flags = [
        "--github-app-id".to_owned(),
        TEST_APP_ID.to_string(),
        "--github-app-private-key-file".to_owned(),
        key.display().to_string(),
        "--github-api-url".to_owned(),
        github.url(),
    ];
    let bot = processes::start(
        options,
        "bot",
        &kubeconfig,
        [
            "bot",
            "--listen",
            "127.0.0.1:0",
            "--internal-listen",
            "127.0.0.1:0",
            "--namespace",
            NAMESPACE,
            "--webhook-secret-file",
            &secret.display().to_string(),
            "--bot-login",
            &format!("{TEST_APP_SLUG}[bot]"),
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(github_flags.iter().cloned())
        .collect(),
    )
    .await?;
    let gateway = processes::start(
        options,
        "gateway",
        &kubeconfig,
        [
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--namespace",
            NAMESPACE,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await?;
    processes::wait_ready(gateway.addr, options.step_timeout).await?;
    n.line(&format!(
        "✔ countersign gateway serving agents on {} (holds the model key), log {}",
        gateway.addr,
        options.dir.join("gateway.log").display()
    ));
    let agent_command = format!("{},agent", options.countersign.display());
    let controller = processes::start(
        options,
        "controller",
        &kubeconfig,
        [
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--namespace",
            NAMESPACE,
            "--leader-elect=false",
            "--agent-command",
            &agent_command,
            "--github-git-url",
            &github.url(),
            "--public-url",
            &format!("http://{}", bot.addr),
            "--retry-backoff-base",
            "1s",
            "--wait-requeue",
            "1s",
            "--gateway-url",
            &format!("http://{}", gateway.addr),
            "--gateway-namespace",
            NAMESPACE,
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(github_flags.iter().cloned())
        .collect(),
    )
    .await?;
    n.line(&format!(
        "✔ countersign controller running (metrics on {}), log {}",
        controller.addr,
        options.dir.join("controller.log").display()
    ));
    // Probes are on the bot's internal listener.
    processes::wait_ready(bot.internal.unwrap_or(bot.addr), options.step_timeout).await?;
    n.line(&format!(
        "✔ countersign bot serving webhooks on {}, log {}",
        bot.addr,
        options.dir.join("bot.log").display()
    ));
    Ok(Stage {
        api,
        github,
        models,
        bot,
        _controller: controller,
        gateway,
        kubelet,
        kubeconfig,
    })
}

/// The RiskPolicy, Project, Agents and model key the tour runs with.
async fn apply_manifests(api: &TestCluster, models: &Models) -> anyhow::Result<()> {
    let client = api.client();
    let mut policy: Value = serde_yaml::from_str(script::DEFAULT_POLICY)
        .context("The default RiskPolicy does not parse")?;
    policy["metadata"]["namespace"] = json!(NAMESPACE);
    let objects = [
        policy,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "model", "namespace": NAMESPACE},
            "stringData": {"api-key": script::MODEL_KEY}
        }),
        script::project(NAMESPACE, INSTALLATION),
        script::agent(
            NAMESPACE,
            "backend",
            "backend",
            "Fixes backend issues in the demo repository.",
            &models.backend.openai_base_url(),
        ),
        script::agent(
            NAMESPACE,
            "frontend",
            "frontend",
            "Works on the demo repository's web pages.",
            &models.frontend.openai_base_url(),
        ),
        script::agent(
            NAMESPACE,
            "architect",
            "architect",
            "Breaks issues down into sub-tasks for the backend and frontend Agents.",
            &models.architect.openai_base_url(),
        ),
    ];
    for object in objects {
        let kind = object["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let plural =
            format!("{}s", kind.to_ascii_lowercase()).replace("riskpolicys", "riskpolicies");
        let resource = kube::api::ApiResource {
            group: group.to_owned(),
            version: version.to_owned(),
            api_version: api_version.clone(),
            kind: kind.clone(),
            plural,
        };
        let dynamic: Api<kube::api::DynamicObject> =
            Api::namespaced_with(client.clone(), NAMESPACE, &resource);
        let object: kube::api::DynamicObject =
            serde_json::from_value(object).context("a demo manifest")?;
        dynamic
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("Cannot create the demo's {kind}"))?;
    }
    Ok(())
}

/// The default directory of a tour: a fresh temporary directory.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir().join(format!("countersign-demo-{}", std::process::id()))
}

/// The `countersign` binary next to `exe` (both are built into the same target directory).
pub fn sibling_binary(exe: &Path) -> PathBuf {
    exe.with_file_name(format!("countersign{}", std::env::consts::EXE_SUFFIX))
}
