//! The chart's RBAC, proved by use: the ServiceAccounts, Roles, ClusterRoles and bindings
//! `helm template` renders are applied to the real control plane, and the real controller
//! (as `countersign controller` runs it: `Process`, with the Deployment's own flags and the
//! leader-election Lease), the provider gateway (with its Deployment's flags and a kubeconfig
//! of its ServiceAccount) and the bot's Kubernetes side run with TokenRequest tokens of
//! those ServiceAccounts, nothing else. A labelled issue then goes all the way: the bot
//! creates the AgentRun, the controller creates the attempt's Secret, NetworkPolicy and Pod
//! (in a namespace enforcing Pod Security `restricted`), the agent's model calls go through
//! the gateway (which resolves its token from the pod, reads the provider's key Secret and
//! writes the usage ledger the controller reads back), the agent pushes, the controller
//! opens the pull request, the bot applies the ApprovalGate and the controller evaluates it;
//! RiskPolicy, Project and Agent become Ready with Events. A missing permission fails one of
//! these steps. Then what must stay impossible is checked (Secrets outside the listed
//! namespaces, Secrets cluster-wide, spec writes by the controller, anything but its kinds
//! for the bot, anything but reading keys and writing ledgers where agents run for the
//! gateway), and a namespace the chart does not grant shows up as a `Stalled` Agent naming
//! the chart value instead of an error loop.

mod support;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use countersign_bot::server::{Bot, BotSettings};
use countersign_controller::config::ControllerArgs;
use countersign_controller::process::Process;
use countersign_crds::conditions::{READY, STALLED, find};
use countersign_crds::{Agent, AgentRun, ApprovalGate, GatePhase, Project, RiskPolicy, RunPhase};
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{FakeGitHub, TEST_APP_ID, TEST_APP_SLUG, User};
use countersign_testkit::model::{FakeModel, Step};
use countersign_testkit::tools::Tool;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

const REPO: &str = "acme/api";
const INSTALLATION: u64 = 31;
const SECRET: &str = "webhook-secret";
const WAIT: Duration = Duration::from_secs(120);
const MODEL_KEY: &str = "sk-model-key";

#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: ControllerArgs,
}

#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct GatewayCli {
    #[command(flatten)]
    args: countersign_gateway::config::GatewayArgs,
}

fn rita() -> User {
    User::new(11, "rita") // asks for runs
}
fn dev() -> User {
    User::new(21, "dev") // developer
}
fn lead() -> User {
    User::new(22, "lead") // tech_lead through the acme/leads team
}

/// The `--allowed-repositories` the chart gives a Deployment (the same for bot and controller).
fn rendered_allow_list(
    rendered: &support::chart::Rendered,
    deployment: &str,
) -> countersign_policies::ownership::RepositoryAllowList {
    let deployment = rendered
        .named("Deployment", deployment)
        .expect("Deployment");
    let entries: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str()?.strip_prefix("--allowed-repositories="))
        .flat_map(|list| list.split(','))
        .map(str::to_owned)
        .collect();
    assert!(
        !entries.is_empty(),
        "{deployment} gets --allowed-repositories"
    );
    countersign_policies::ownership::RepositoryAllowList::parse(&entries).expect("allow list")
}

/// The GitHub App's Secret the chart's Deployments mount (in the release namespace).
fn github_secret_name(rendered: &support::chart::Rendered) -> String {
    let volumes = rendered
        .named("Deployment", "countersign-controller")
        .expect("Deployment")["spec"]["template"]["spec"]["volumes"]
        .clone();
    volumes
        .as_array()
        .expect("volumes")
        .iter()
        .find_map(|v| v["secret"]["secretName"].as_str())
        .expect("the GitHub App Secret")
        .to_owned()
}

/// Applies the rendered RBAC objects (and nothing else) as the cluster admin.
async fn apply_rbac(client: &kube::Client, rendered: &support::chart::Rendered) -> usize {
    let mut applied = 0;
    for object in &rendered.objects {
        let kind = object["kind"].as_str().unwrap_or_default();
        let (group, version) = match kind {
            "ServiceAccount" => ("", "v1"),
            "Role" | "RoleBinding" | "ClusterRole" | "ClusterRoleBinding" => {
                ("rbac.authorization.k8s.io", "v1")
            }
            _ => continue,
        };
        let plural = format!("{}s", kind.to_lowercase());
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, kind),
            &plural,
        );
        let object: DynamicObject = serde_json::from_value(object.clone()).expect("object");
        let name = object.metadata.name.clone().expect("name");
        let api: Api<DynamicObject> = match &object.metadata.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(
            &name,
            &PatchParams::apply("helm").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {kind} {name}: {e}"));
        applied += 1;
    }
    applied
}

/// A kubeconfig file acting as ServiceAccount `ns/name` (a TokenRequest token).
async fn service_account_kubeconfig(
    cluster: &TestCluster,
    ns: &str,
    name: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let real = cluster.as_real().expect("real control plane");
    let token = real
        .service_account_token(ns, name)
        .await
        .expect("TokenRequest");
    let ca = {
        use std::io::Write as _;
        let mut encoder = Vec::new();
        encoder
            .write_all(real.ca_cert_pem().as_bytes())
            .expect("write");
        base64_encode(&encoder)
    };
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {name}, namespace: {ns}}}\ncurrent-context: test\n",
        real.url()
    );
    let path = dir.join(format!("{name}.kubeconfig"));
    std::fs::write(&path, yaml).expect("kubeconfig");
    path
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn create<K>(client: &kube::Client, ns: &str, value: Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(value).expect("valid object");
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &object)
        .await
        .expect("create");
}

/// A RiskPolicy, a provider key Secret, a Project for `acme/api` and an Agent in `ns`.
async fn project_in(client: &kube::Client, ns: &str, model: &FakeModel) {
    let mut policy: RiskPolicy = countersign_policies::default_policy();
    policy.metadata.namespace = Some(ns.into());
    Api::<RiskPolicy>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &policy)
        .await
        .expect("policy");
    create::<Secret>(
        client,
        ns,
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "model-keys"}, "stringData": {"primary": MODEL_KEY}}),
    )
    .await;
    create::<Project>(
        client,
        ns,
        json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
               "metadata": {"name": "api"},
               "spec": {"repository": {"owner": "acme", "name": "api"},
                        "installation": {"id": INSTALLATION},
                        "triggers": {"minPermission": "write", "labels": [
                            {"label": "ai:backend", "agent": {"name": "backend"}},
                            {"label": "ai:analyse", "agent": {"name": "backend"}, "mode": "observation"}]},
                        "roles": [
                            {"role": "developer", "users": [{"login": "dev", "id": 21}]},
                            {"role": "tech_lead", "teams": [{"slug": "leads"}]}],
                        "pullRequests": {"draft": false, "autoMerge": true}}}),
    )
    .await;
    create::<Agent>(
        client,
        ns,
        json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
               "metadata": {"name": "backend"},
               "spec": {"role": "backend", "providers": [
                   {"name": "primary", "kind": "openai", "model": "model-a", "retries": 0,
                    "baseUrl": model.openai_base_url(),
                    "apiKeySecretRef": {"name": "model-keys", "key": "primary"}}],
                 "limits": {"timeout": "5m"}}}),
    )
    .await;
}

async fn wait_for<K, F>(api: &Api<K>, name: &str, what: &str, pred: F) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: Fn(&K) -> bool,
{
    let mut last = None;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(object) = api.get_opt(name).await.expect("get")
                && pred(&object)
            {
                return object;
            } else if let Some(object) = api.get_opt(name).await.expect("get") {
                last = Some(object);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("{name} never {what}; last seen {last:#?}"))
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what} must be forbidden, got {other:?}"),
    }
}

fn ready(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    find(conditions, READY).is_some_and(|c| c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_bot_and_gateway_run_end_to_end_with_exactly_the_charts_rbac() {
    // A permission the chart lacks shows up in the controller's and bot's warnings.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            "warn,countersign_controller=info,countersign_bot=info,countersign_gateway=info",
        )
        .with_test_writer()
        .try_init();
    let Some(helm) = Tool::Helm.for_test("chart RBAC end to end").expect("helm") else {
        return;
    };
    let Some(cluster) = TestCluster::real_or_skip("chart RBAC end to end")
        .await
        .expect("cluster")
    else {
        return;
    };
    let admin = cluster.client();
    let system = cluster.create_namespace("cs-system").await.expect("ns");
    let team = cluster
        .create_namespace_with_labels(
            "cs-team",
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        )
        .await
        .expect("ns");
    let other = cluster.create_namespace("cs-other").await.expect("ns");

    // The chart's RBAC, as `helm install -n <system> --set controller.agentNamespaces={team}`.
    let agent_namespaces = format!("controller.agentNamespaces={{{team}}}");
    let allowed = format!("allowedRepositories={{{team}=acme/*}}");
    let rendered = support::chart::render(
        &helm,
        &system,
        None,
        &[
            &agent_namespaces,
            &allowed,
            "admissionWebhook.enabled=false",
        ],
    )
    .expect("helm template");
    assert!(apply_rbac(&admin, &rendered).await >= 8);

    let dir = tempfile::tempdir().expect("dir");
    let controller_kubeconfig =
        service_account_kubeconfig(&cluster, &system, "countersign-controller", dir.path()).await;
    let bot_client = cluster
        .service_account_client(&system, "countersign-bot")
        .await
        .expect("bot client");
    let controller_client = cluster
        .service_account_client(&system, "countersign-controller")
        .await
        .expect("controller client");
    // The gateway as its Deployment runs it: the rendered flags, its ServiceAccount's
    // kubeconfig, a loopback port.
    let gateway_kubeconfig =
        service_account_kubeconfig(&cluster, &system, "countersign-gateway", dir.path()).await;
    let mut gateway_argv: Vec<String> = vec!["countersign-gateway".into()];
    gateway_argv.extend(rendered.args("countersign-gateway").into_iter().skip(1));
    gateway_argv.extend(
        [
            "--kubeconfig",
            gateway_kubeconfig.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
        ]
        .map(str::to_owned),
    );
    let gateway_args = GatewayCli::try_parse_from(gateway_argv)
        .expect("the chart's gateway flags parse")
        .args;
    let gateway_client = countersign_gateway::server::client(&gateway_args)
        .await
        .expect("gateway client from its kubeconfig");
    // A new binding takes effect a moment after it is written.
    tokio::time::timeout(WAIT, async {
        while Api::<Project>::all(bot_client.clone())
            .list(&ListParams::default())
            .await
            .is_err()
            || Api::<Secret>::namespaced(controller_client.clone(), &team)
                .list(&ListParams::default())
                .await
                .is_err()
            || Api::<Pod>::all(gateway_client.clone())
                .list(&ListParams::default().limit(1))
                .await
                .is_err()
            || Api::<Secret>::namespaced(gateway_client.clone(), &team)
                .get_opt("not-yet")
                .await
                .is_err()
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("RBAC takes effect");
    let gateway = tokio::time::timeout(
        WAIT,
        countersign_gateway::server::start(
            gateway_client.clone(),
            gateway_args.namespace.as_deref(),
            tokio::net::TcpListener::bind(gateway_args.listen)
                .await
                .expect("bind the gateway"),
            gateway_args
                .settings()
                .expect("the chart's gateway flags are valid"),
        ),
    )
    .await
    .expect("the gateway's watches sync with its ServiceAccount")
    .expect("the gateway starts");

    // What the users apply (as themselves, not as Countersign).
    let model = FakeModel::start().await.expect("model");
    model.require_api_key(MODEL_KEY);
    project_in(&admin, &team, &model).await;
    let github = FakeGitHub::start().await.expect("fake GitHub");
    {
        let mut w = github.world();
        w.install(INSTALLATION, "acme", &["api"]);
        for user in [rita(), dev(), lead()] {
            w.set_permission(REPO, &user.login, "write");
            w.add_user(&user);
        }
        w.add_team_member("acme", "leads", lead());
        w.create_repository(
            REPO,
            &[
                ("README.md", "# api\n"),
                (
                    "src/invoices.rs",
                    "pub fn find(id: u64) -> Option<u64> {\n    None\n}\n",
                ),
            ],
        );
    }

    // The bot's Kubernetes side, as the bot's ServiceAccount (all namespaces, as the chart's
    // default ClusterRole allows).
    let bot = Bot::new(
        bot_client.clone(),
        github.app_client(),
        BotSettings {
            secrets: vec![SECRET.as_bytes().to_vec()],
            namespace: None,
            queue: 64,
            delivery_memory: 1000,
            delivery_ttl: Duration::from_secs(3600),
            bot_login: format!("{TEST_APP_SLUG}[bot]"),
            allowed_repositories: Some(rendered_allow_list(&rendered, "countersign-bot")),
        },
    );
    let router = bot.router();
    let bot_task = tokio::spawn(bot.run(2));
    countersign_testkit::github::wait_until_ready(&router, WAIT).await;

    // The controller as the Deployment runs it: the rendered flags, then the test's own.
    let deployment = rendered
        .named("Deployment", "countersign-controller")
        .expect("controller Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let lease_name = container["env"]
        .as_array()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "COUNTERSIGN_LEASE_NAME")
        .and_then(|e| e["value"].as_str())
        .expect("lease name")
        .to_owned();
    let key_file = dir.path().join("app.pem");
    std::fs::write(
        &key_file,
        countersign_testkit::github::TEST_APP_PRIVATE_KEY_PEM,
    )
    .expect("key");
    let mut argv: Vec<String> = vec!["countersign-controller".into()];
    argv.extend(
        container["args"]
            .as_array()
            .expect("args")
            .iter()
            .skip(1) // the `controller` subcommand
            .map(|a| a.as_str().expect("string").to_owned()),
    );
    // The chart points the controller at its gateway Service; here the gateway listens on
    // loopback, so only the URL is replaced (namespace and pod labels stay the chart's).
    let chart_gateway_url = format!("--gateway-url=http://countersign-gateway.{system}.svc:8080");
    assert!(
        argv.contains(&chart_gateway_url)
            && argv.contains(&format!("--gateway-namespace={system}")),
        "{argv:?}"
    );
    let agent = format!("{},agent", env!("CARGO_BIN_EXE_countersign"));
    argv.extend(
        [
            "--kubeconfig",
            controller_kubeconfig.to_str().expect("utf-8"),
            "--listen",
            "127.0.0.1:0",
            "--lease-namespace",
            &system,
            "--lease-name",
            &lease_name,
            "--lease-identity",
            "countersign-controller-test-0",
            "--agent-command",
            &agent,
            "--github-app-id",
            &TEST_APP_ID.to_string(),
            "--github-app-private-key-file",
            key_file.to_str().expect("utf-8"),
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
            "--gateway-url",
            &gateway.url(),
        ]
        .map(str::to_owned),
    );
    let args = Cli::try_parse_from(argv)
        .expect("the chart's flags parse")
        .args;
    assert!(args.leader_elect, "the chart elects a leader");
    let process = Process::bind(args).await.expect("controller binds");
    let mut leadership = process.leadership();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller_task = tokio::spawn(process.run(async {
        let _ = stopped.await;
    }));
    tokio::time::timeout(
        WAIT,
        leadership.wait_for(|l| matches!(l, countersign_controller::leader::Leadership::Leader)),
    )
    .await
    .expect("the controller takes the Lease with its ServiceAccount")
    .expect("leadership channel");

    let pods_dir = tempfile::tempdir().expect("pods");
    let kubelet = cluster.kubelet(&team, pods_dir.path());
    let kubelet_task = tokio::spawn(async move {
        if let Err(e) = kubelet.run().await {
            panic!("kubelet stopped: {e:#}");
        }
    });

    // Status writes of every kind, with the chart's rules.
    let policies = Api::<RiskPolicy>::namespaced(admin.clone(), &team);
    wait_for(&policies, "default", "became Ready", |p| {
        p.status.as_ref().is_some_and(|s| ready(&s.conditions))
    })
    .await;
    wait_for(
        &Api::<Agent>::namespaced(admin.clone(), &team),
        "backend",
        "became Ready",
        |a| a.status.as_ref().is_some_and(|s| ready(&s.conditions)),
    )
    .await;
    wait_for(
        &Api::<Project>::namespaced(admin.clone(), &team),
        "api",
        "became Ready",
        |p| p.status.as_ref().is_some_and(|s| ready(&s.conditions)),
    )
    .await;

    // A labelled issue all the way to an evaluated gate.
    model.script(vec![
        Step::ToolCalls(vec![(
            "write_file".into(),
            json!({"path": "src/invoices.rs", "content": "pub fn find(id: u64) -> Result<u64, u64> {\n    Err(id)\n}\n"}),
        )]),
        Step::ToolCalls(vec![("finish".into(), json!({"summary": "404 for unknown invoices"}))]),
    ]);
    let payload = {
        let mut w = github.world();
        let n = w.open_issue(REPO, "Return 404 for unknown invoices", "Please.", &rita());
        w.label_issue(REPO, n, "ai:backend", &rita())
    };
    let status = countersign_testkit::github::deliver_to(&router, "issues", &payload, SECRET).await;
    assert!(status.is_success(), "{status}");
    let issue = payload["issue"]["number"].as_u64().expect("number");
    let runs = Api::<AgentRun>::namespaced(admin.clone(), &team);
    let run_name = tokio::time::timeout(WAIT, async {
        loop {
            let list = runs
                .list(&ListParams::default().labels(&format!("countersign.dev/issue={issue}")))
                .await
                .expect("list");
            if let Some(run) = list.items.into_iter().next() {
                return run.metadata.name.expect("name");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the bot created the AgentRun with its ServiceAccount");
    let run = wait_for(&runs, &run_name, "opened its pull request", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == RunPhase::PullRequestOpen || s.phase.is_finished())
    })
    .await;
    let status = run.status.clone().expect("status");
    assert_eq!(status.phase, RunPhase::PullRequestOpen, "{status:#?}");
    let pr = status.pull_request.clone().expect("pull request").number;
    let opened = github
        .world()
        .pull_request_payload(REPO, pr, "opened", &User::test_app_bot());
    let answer =
        countersign_testkit::github::deliver_to(&router, "pull_request", &opened, SECRET).await;
    assert!(answer.is_success(), "{answer}");
    // The check run's id is recorded in a status write after the one with the risk: wait
    // for both (the wait failing names what never came).
    let gate = wait_for(
        &Api::<ApprovalGate>::namespaced(admin.clone(), &team),
        &format!("api-pr-{pr}"),
        "was evaluated and published its check run",
        |g| {
            g.status
                .as_ref()
                .is_some_and(|s| s.risk.is_some() && s.check_run_id.is_some())
        },
    )
    .await;
    let published = gate.status.expect("status").check_run_id;
    assert!(
        github
            .world()
            .check_runs
            .iter()
            .any(|c| Some(c.id) == published),
        "the check run exists on GitHub"
    );

    // A command naming an Agent that does not exist: the bot looks it up and lists the ones
    // that do (get and list of Agents).
    let help = github
        .world()
        .comment(REPO, issue, "/countersign run nosuch", &rita());
    let answer =
        countersign_testkit::github::deliver_to(&router, "issue_comment", &help, SECRET).await;
    assert!(answer.is_success(), "{answer}");
    tokio::time::timeout(WAIT, async {
        loop {
            let replied =
                github.world().comments_on(REPO, issue).iter().any(|c| {
                    c.author.ends_with("[bot]") && c.body.contains("Available: `backend`")
                });
            if replied {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let w = github.world();
        let comments: Vec<(&str, &str)> = w
            .comments_on(REPO, issue)
            .iter()
            .map(|c| (c.author.as_str(), c.body.as_str()))
            .collect();
        panic!("the bot never listed the Agents: {comments:#?}")
    });

    // Approvals by role (a user and a team member), then auto-merge once every other status
    // on the head succeeded.
    for reviewer in [dev(), lead()] {
        let review = github
            .world()
            .submit_review(REPO, pr, &reviewer, "APPROVED", "");
        let answer = countersign_testkit::github::deliver_to(
            &router,
            "pull_request_review",
            &review,
            SECRET,
        )
        .await;
        assert!(answer.is_success(), "{answer}");
    }
    let gates = Api::<ApprovalGate>::namespaced(admin.clone(), &team);
    wait_for(&gates, &format!("api-pr-{pr}"), "merged", |g| {
        g.status
            .as_ref()
            .is_some_and(|s| s.phase == GatePhase::Merged)
    })
    .await;
    wait_for(&runs, &run_name, "succeeded", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == RunPhase::Succeeded)
    })
    .await;

    // An observation-mode run's progress note: the gateway (its ServiceAccount) writes the
    // run's progress ConfigMap, the controller (its ServiceAccount) watches it and edits the
    // issue's comment.
    model.script(vec![
        Step::ToolCalls(vec![(
            "report_progress".into(),
            json!({"milestone": "Read src/invoices.rs"}),
        )]),
        Step::ToolCalls(vec![(
            "finish".into(),
            json!({"summary": "analysed", "report": "`find` is a stub."}),
        )]),
    ]);
    let payload = {
        let mut w = github.world();
        let n = w.open_issue(REPO, "Why do invoices vanish?", "Please look.", &rita());
        w.label_issue(REPO, n, "ai:analyse", &rita())
    };
    let status = countersign_testkit::github::deliver_to(&router, "issues", &payload, SECRET).await;
    assert!(status.is_success(), "{status}");
    let analysed = payload["issue"]["number"].as_u64().expect("number");
    tokio::time::timeout(WAIT, async {
        loop {
            let shown = github.world().comments_on(REPO, analysed).iter().any(|c| {
                c.author.ends_with("[bot]")
                    && c.body.contains("Read src/invoices.rs")
                    && c.body.contains("`find` is a stub.")
            });
            if shown {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let w = github.world();
        let comments: Vec<&str> = w
            .comments_on(REPO, analysed)
            .iter()
            .map(|c| c.body.as_str())
            .collect();
        panic!("the progress note never reached the issue: {comments:#?}")
    });

    // The model was reached only through the gateway, with the key it read from the
    // provider's Secret (the fake model refuses any other), and the usage the gateway wrote
    // to the Project's ledger (its ServiceAccount creating the ConfigMap) is what the
    // controller (its ServiceAccount reading it) put into the run's status.
    let requests = model.requests();
    assert!(
        !requests.is_empty()
            && requests
                .iter()
                .all(|r| r.api_key.as_deref() == Some(MODEL_KEY)),
        "every model request carried the provider's key"
    );
    let ledger = wait_for(
        &Api::<ConfigMap>::namespaced(admin.clone(), &team),
        &countersign_crds::usage::ledger_name("api"),
        "was written by the gateway",
        |_| true,
    )
    .await;
    assert!(
        ledger
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .all(|f| f.manager.as_deref() == Some(countersign_gateway::ledger::MANAGER)),
        "written by the gateway only: {:?}",
        ledger.metadata.managed_fields
    );
    wait_for(&runs, &run_name, "showed the gateway's usage", |r| {
        r.status.as_ref().is_some_and(|s| s.usage.input_tokens > 0)
    })
    .await;

    // The GitHub App manifest asks for exactly what these calls need.
    let calls = github.calls();
    let needed = support::github_permissions::needed(
        calls.iter().map(|c| (c.method.as_str(), c.path.as_str())),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let needed: std::collections::BTreeMap<String, String> = needed
        .into_iter()
        .map(|(p, l)| (p.to_owned(), l.as_str().to_owned()))
        .collect();
    let (manifest, _) = support::github_permissions::manifest();
    assert_eq!(
        manifest, needed,
        "app.yml's default_permissions differ from what the code's GitHub calls need"
    );

    // The controller's Events reached the API (events.k8s.io create/patch).
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), &team);
    let ours = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("countersign-controller"))
        .count();
    assert!(ours > 0, "the controller published Events");

    // What must stay impossible.
    forbidden(
        Api::<Secret>::all(controller_client.clone())
            .list(&ListParams::default())
            .await,
        "listing every Secret in the cluster as the controller",
    );
    forbidden(
        Api::<Secret>::namespaced(controller_client.clone(), &other)
            .get_opt("anything")
            .await,
        "reading a Secret outside controller.agentNamespaces",
    );
    forbidden(
        Api::<Secret>::namespaced(controller_client.clone(), &system)
            .list(&ListParams::default())
            .await,
        "reading the release namespace's Secrets (the App key) as the controller",
    );
    forbidden(
        Api::<AgentRun>::namespaced(controller_client.clone(), &team)
            .patch(
                &run_name,
                &PatchParams::apply("countersign-controller"),
                &Patch::Apply(
                    json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
                                     "spec": {"cancelRequested": true}}),
                ),
            )
            .await,
        "writing an AgentRun's spec as the controller",
    );
    forbidden(
        Api::<Secret>::namespaced(bot_client.clone(), &team)
            .list(&ListParams::default())
            .await,
        "reading Secrets as the bot",
    );
    forbidden(
        Api::<Pod>::namespaced(bot_client.clone(), &team)
            .list(&ListParams::default())
            .await,
        "reading Pods as the bot",
    );
    forbidden(
        Api::<AgentRun>::namespaced(bot_client.clone(), &team)
            .delete(&run_name, &Default::default())
            .await,
        "deleting AgentRuns as the bot",
    );

    // The gateway reads the providers' keys where agents run, by name only, and nothing
    // else: not other namespaces' Secrets, not the release namespace's (the App key), not a
    // list; it writes ledgers only where agents run, and nothing but ledgers.
    let key = Api::<Secret>::namespaced(gateway_client.clone(), &team)
        .get("model-keys")
        .await
        .expect("the gateway reads a provider key Secret in an agent namespace");
    assert!(key.data.is_some_and(|d| d.contains_key("primary")));
    forbidden(
        Api::<Secret>::namespaced(gateway_client.clone(), &other)
            .get_opt("model-keys")
            .await,
        "reading a Secret outside controller.agentNamespaces as the gateway",
    );
    forbidden(
        Api::<Secret>::namespaced(gateway_client.clone(), &system)
            .get_opt(&github_secret_name(&rendered))
            .await,
        "reading the release namespace's Secrets (the App key) as the gateway",
    );
    forbidden(
        Api::<Secret>::namespaced(gateway_client.clone(), &team)
            .list(&ListParams::default())
            .await,
        "listing Secrets as the gateway",
    );
    forbidden(
        Api::<Secret>::all(gateway_client.clone())
            .list(&ListParams::default())
            .await,
        "listing every Secret in the cluster as the gateway",
    );
    forbidden(
        Api::<ConfigMap>::namespaced(gateway_client.clone(), &other)
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "countersign-usage-api"}}))
                .expect("configmap"),
            )
            .await,
        "writing a ConfigMap outside controller.agentNamespaces as the gateway",
    );
    forbidden(
        Api::<ConfigMap>::namespaced(gateway_client.clone(), &team)
            .delete(
                &countersign_crds::usage::ledger_name("api"),
                &Default::default(),
            )
            .await,
        "deleting a usage ledger as the gateway",
    );
    forbidden(
        Api::<Pod>::namespaced(gateway_client.clone(), &team)
            .delete("anything", &Default::default())
            .await,
        "deleting Pods as the gateway",
    );
    forbidden(
        Api::<AgentRun>::namespaced(gateway_client.clone(), &team)
            .patch_status(
                &run_name,
                &PatchParams::apply("countersign-gateway"),
                &Patch::Apply(
                    json!({"apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
                    "status": {"phase": "Failed"}}),
                ),
            )
            .await,
        "writing an AgentRun's status as the gateway",
    );

    // A namespace the chart does not grant: the Agent says so instead of looping on 403s.
    project_in(&admin, &other, &model).await;
    let stalled = wait_for(
        &Api::<Agent>::namespaced(admin.clone(), &other),
        "backend",
        "showed the missing Secret permission",
        |a| {
            a.status
                .as_ref()
                .and_then(|s| find(&s.conditions, STALLED))
                .is_some_and(|c| c.status == "True")
        },
    )
    .await;
    let message = find(&stalled.status.expect("status").conditions, READY)
        .expect("Ready")
        .message
        .clone();
    assert!(
        message.contains("controller.agentNamespaces") && message.contains(&other),
        "{message}"
    );

    stop.send(()).ok();
    tokio::time::timeout(WAIT, controller_task)
        .await
        .expect("controller stops")
        .expect("no panic")
        .expect("clean shutdown");
    tokio::time::timeout(WAIT, gateway.stop())
        .await
        .expect("the gateway stops");
    bot_task.abort();
    kubelet_task.abort();
    drop(router);
    let _ = Arc::new(());
}

/// The chart's rules, reviewed: adding a verb or a resource means changing this list (and
/// proving the need above).
#[test]
fn the_charts_rules_are_the_reviewed_ones() {
    let Some(helm) = Tool::Helm.for_test("chart rules").expect("helm") else {
        return;
    };
    let rendered = support::chart::render(
        &helm,
        "countersign-system",
        None,
        &["controller.agentNamespaces={team-a}"],
    )
    .expect("template");
    let rules = |kind: &str, name: &str| -> Value {
        rendered
            .named(kind, name)
            .unwrap_or_else(|| panic!("{kind} {name}"))["rules"]
            .clone()
    };
    assert_eq!(
        rules("ClusterRole", "countersign-controller"),
        json!([
            {"apiGroups": ["countersign.dev"], "resources": ["projects", "agents", "agentruns", "approvalgates", "riskpolicies"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["countersign.dev"], "resources": ["projects/status", "agents/status", "agentruns/status", "approvalgates/status", "riskpolicies/status"], "verbs": ["patch"]},
            {"apiGroups": ["countersign.dev"], "resources": ["agentruns"], "verbs": ["create", "delete"]},
            {"apiGroups": ["countersign.dev"], "resources": ["approvalgates"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "create", "delete"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["list", "create", "delete"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"]}
        ])
    );
    assert_eq!(
        rules("Role", "countersign-controller-secrets"),
        json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "create", "delete"]}])
    );
    assert_eq!(
        rules("Role", "countersign-controller-leader-election"),
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "patch"]}])
    );
    let gateway_reads = json!([
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["countersign.dev"], "resources": ["agentruns", "agents", "projects"], "verbs": ["get", "list", "watch"]}
    ]);
    let gateway_keys_and_ledgers = json!([
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "update"]}
    ]);
    assert_eq!(rules("ClusterRole", "countersign-gateway"), gateway_reads);
    let keys = rendered
        .named("Role", "countersign-gateway-keys")
        .expect("the gateway's Role in team-a");
    assert_eq!(keys["metadata"]["namespace"], "team-a");
    assert_eq!(keys["rules"], gateway_keys_and_ledgers);
    assert_eq!(
        rendered
            .of_kind("Role")
            .iter()
            .filter(|r| r["metadata"]["name"] == "countersign-gateway-keys")
            .count(),
        1,
        "a Role in each agent namespace, nowhere else"
    );
    // Secrets cluster-wide only when the chart's switch says so, then for both.
    let wide = support::chart::render(
        &helm,
        "countersign-system",
        None,
        &["controller.secretsClusterWide=true"],
    )
    .expect("template");
    let mut expected = gateway_reads.as_array().expect("rules").clone();
    expected.extend(gateway_keys_and_ledgers.as_array().expect("rules").clone());
    assert_eq!(
        wide.named("ClusterRole", "countersign-gateway")
            .expect("ClusterRole")["rules"],
        Value::Array(expected)
    );
    assert!(wide.named("Role", "countersign-gateway-keys").is_none());
    // One namespace: Roles only.
    let one = support::chart::render(
        &helm,
        "countersign-system",
        None,
        &["controller.watchNamespace=team-a"],
    )
    .expect("template");
    assert!(one.named("ClusterRole", "countersign-gateway").is_none());
    let role = one.named("Role", "countersign-gateway").expect("Role");
    assert_eq!(role["metadata"]["namespace"], "team-a");
    let mut expected = gateway_reads.as_array().expect("rules").clone();
    expected.extend(gateway_keys_and_ledgers.as_array().expect("rules").clone());
    assert_eq!(role["rules"], Value::Array(expected));

    assert_eq!(
        rules("ClusterRole", "countersign-bot"),
        json!([
            {"apiGroups": ["countersign.dev"], "resources": ["projects"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["countersign.dev"], "resources": ["agents"], "verbs": ["get", "list"]},
            {"apiGroups": ["countersign.dev"], "resources": ["agentruns", "approvalgates"], "verbs": ["get", "list", "create", "patch"]}
        ])
    );
}
