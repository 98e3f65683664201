//! The system the attacks run against, as in production but on loopback: signed webhooks
//! into the real bot router, the bot's workers writing to the fake apiserver, the real
//! controller (cluster-wide, every reconciler) reading the fake GitHub and publishing there.
//!
//! One Project, `team-a/widgets`, manages `octo-org/widgets` with the default RiskPolicy;
//! attacks add namespaces, Projects, Agents and runs of their own.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use countersign_bot::server::{Bot, BotSettings};
use countersign_controller::metrics::Metrics;
use countersign_controller::{Context, Settings, run_controllers};
use countersign_crds::approval_gate::ApprovalRecord;
use countersign_crds::{ApprovalGate, GatePhase, Project, RiskPolicy};
use countersign_testkit::apiserver::FakeApiServer;
use countersign_testkit::github::{ChangedFile, CheckRun, FakeGitHub, TEST_APP_SLUG, User};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource};
use serde_json::{Value, json};

pub const NS: &str = "team-a";
pub const REPO: &str = "octo-org/widgets";
pub const INSTALLATION: u64 = 77;
pub const SECRET: &str = "webhook-secret";
pub const WAIT: Duration = Duration::from_secs(30);
pub const CHECK: &str = "countersign/approval";

/// Everyone in the attacks.
pub struct People {
    /// developer (team devs), write access.
    pub alice: User,
    /// developer (team devs), write access.
    pub carol: User,
    /// tech_lead.
    pub lead: User,
    /// manager.
    pub mgr: User,
    /// security_team (team security).
    pub sam: User,
    /// cto.
    pub cto: User,
    /// An outside contributor with read access: the usual author.
    pub erin: User,
    /// Read access, no role.
    pub mallory: User,
}

pub fn people() -> People {
    People {
        alice: User::new(1, "alice"),
        carol: User::new(2, "carol"),
        lead: User::new(1010, "lead"),
        mgr: User::new(1020, "mgr"),
        sam: User::new(1030, "sam"),
        cto: User::new(1040, "cto"),
        erin: User::new(5, "erin"),
        mallory: User::new(6, "mallory"),
    }
}

pub fn bot_user() -> User {
    User::bot(
        countersign_testkit::github::TEST_APP_BOT_USER_ID,
        &format!("{TEST_APP_SLUG}[bot]"),
    )
}

/// What a world starts with besides the defaults.
#[derive(Default)]
pub struct Options {
    /// The Project's `pullRequests`.
    pub pull_requests: Option<Value>,
    /// Host `octo-org/widgets` as a real git repository with these files on `main`.
    pub git_files: Option<Vec<(&'static str, &'static str)>>,
}

pub struct World {
    pub api: FakeApiServer,
    pub github: FakeGitHub,
    pub router: Router,
    pub p: People,
    pub bot_metrics: Arc<countersign_bot::metrics::Metrics>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The operator's allow-list of these worlds: team-a manages octo-org's repositories,
/// team-b is trusted with any repository, team-c only with other-org's.
pub fn allowed_repositories() -> countersign_policies::ownership::RepositoryAllowList {
    countersign_policies::ownership::RepositoryAllowList::parse(&[
        "team-a=octo-org/*",
        "team-b=*/*",
        "team-c=other-org/*",
    ])
    .expect("a valid allow-list")
}

pub fn widgets_project(pull_requests: Value) -> Value {
    json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "widgets", "namespace": NS},
        "spec": {
            "repository": {"owner": "octo-org", "name": "widgets"},
            "installation": {"id": INSTALLATION},
            "triggers": {"minPermission": "write", "labels": [
                {"label": "ai:backend", "agent": {"name": "backend"}}
            ]},
            "roles": [
                {"role": "developer", "teams": [{"slug": "devs"}]},
                {"role": "tech_lead", "users": [{"login": "lead", "id": 1010}]},
                {"role": "manager", "users": [{"login": "mgr", "id": 1020}]},
                {"role": "security_team", "teams": [{"slug": "security"}]},
                {"role": "cto", "users": [{"login": "cto", "id": 1040}]}
            ],
            "pullRequests": pull_requests
        }
    })
}

impl World {
    pub async fn start() -> World {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> World {
        let api = FakeApiServer::start().await.expect("fake apiserver");
        for crd in countersign_crds::all() {
            api.install_crd(&crd).expect("install CRD");
        }
        api.create_namespace(NS).expect("namespace");
        let client = api.client();
        let mut policy: RiskPolicy = countersign_policies::default_policy();
        policy.metadata.namespace = Some(NS.into());
        Api::<RiskPolicy>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &policy)
            .await
            .expect("create policy");
        create(
            &client,
            NS,
            widgets_project(options.pull_requests.unwrap_or_else(|| json!({}))),
        )
        .await;

        let github = FakeGitHub::start().await.expect("fake GitHub");
        let p = people();
        {
            let mut w = github.world();
            w.install(INSTALLATION, "octo-org", &["widgets", "payments"]);
            for u in [&p.alice, &p.carol, &p.lead, &p.mgr, &p.sam, &p.cto] {
                w.set_permission(REPO, &u.login, "write");
                w.add_user(u);
            }
            for u in [&p.erin, &p.mallory] {
                w.set_permission(REPO, &u.login, "read");
                w.add_user(u);
            }
            w.add_team_member("octo-org", "devs", p.alice.clone());
            w.add_team_member("octo-org", "devs", p.carol.clone());
            w.add_team_member("octo-org", "security", p.sam.clone());
            if let Some(files) = &options.git_files {
                w.create_repository(REPO, files);
            }
        }

        let bot = Bot::new(
            client.clone(),
            github.app_client(),
            BotSettings {
                secrets: vec![SECRET.as_bytes().to_vec()],
                namespace: None,
                queue: 1024,
                delivery_memory: 10_000,
                delivery_ttl: Duration::from_secs(3600),
                bot_login: bot_user().login,
                allowed_repositories: Some(allowed_repositories()),
            },
        );
        let router = bot.router();
        let bot_metrics = bot.probes.metrics.clone();
        let workers = tokio::spawn(bot.run(2));

        let settings = Settings {
            namespace: None,
            resync_interval: Duration::from_secs(600),
            wait_requeue: Duration::from_millis(300),
            gates_url: Some("https://countersign.example.com".into()),
            git_url: github.url(),
            allowed_repositories: Some(allowed_repositories()),
            ..Settings::default()
        };
        let app = github.app_client();
        let ctx = Context::new(
            client,
            settings,
            Arc::new(app.clone()),
            Arc::new(Metrics::default()),
        )
        .with_github(app);
        let controller = tokio::spawn(run_controllers(Arc::new(ctx)));
        let world = World {
            api,
            github,
            router,
            p,
            bot_metrics,
            tasks: vec![workers, controller],
        };
        countersign_testkit::github::wait_until_ready(&world.router, WAIT).await;
        world
    }

    /// A new namespace with the default RiskPolicy, or `policy` as its `default`.
    pub async fn add_namespace(&self, ns: &str, policy: Option<Value>) {
        self.api.create_namespace(ns).expect("namespace");
        let mut default: RiskPolicy = countersign_policies::default_policy();
        default.metadata.namespace = Some(ns.into());
        let value = match policy {
            Some(mut p) => {
                p["metadata"] = json!({"name": "default", "namespace": ns});
                p
            }
            None => serde_json::to_value(&default).expect("policy"),
        };
        create(&self.api.client(), ns, value).await;
    }

    /// Sends `payload` to the bot as GitHub would.
    pub async fn deliver(&self, event: &str, payload: &Value) {
        let status =
            countersign_testkit::github::deliver_to(&self.router, event, payload, SECRET).await;
        assert!(status.is_success(), "{event} delivery answered {status}");
    }

    /// How many deliveries of `event` the bot finished handling.
    pub fn handled(&self, event: &str) -> u64 {
        let text = self.bot_metrics.encode();
        let needle =
            format!("countersign_bot_delivery_handling_seconds_count{{event=\"{event}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&needle))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the bot finished handling `count` deliveries of `event`.
    pub async fn wait_handled(&self, event: &str, count: u64) {
        wait_for(&format!("{count} {event} deliveries handled"), || async {
            (self.handled(event) >= count).then_some(())
        })
        .await;
    }

    pub async fn open(&self, branch: &str, files: &[&str], author: &User) -> u64 {
        let files = files
            .iter()
            .map(|f| ChangedFile::modified(f, 10, 2))
            .collect();
        self.open_files(branch, files, author).await
    }

    pub async fn open_files(&self, branch: &str, files: Vec<ChangedFile>, author: &User) -> u64 {
        let payload = self
            .github
            .world()
            .open_pull_request(REPO, "A change", branch, files, author);
        self.deliver("pull_request", &payload).await;
        payload["number"].as_u64().expect("number")
    }

    pub async fn review(&self, number: u64, who: &User, state: &str) {
        let payload = self
            .github
            .world()
            .submit_review(REPO, number, who, state, "");
        self.deliver("pull_request_review", &payload).await;
    }

    pub async fn comment(&self, number: u64, who: &User, body: &str) {
        let payload = self.github.world().comment(REPO, number, body, who);
        self.deliver("issue_comment", &payload).await;
    }

    /// Asks the controller to look at the gate again, as any later webhook would. The bot
    /// handles deliveries after answering them, so the gate of a pull request just opened
    /// may not exist yet: a missing gate is waited for.
    pub async fn nudge(&self, number: u64, why: &str) {
        let gates = Api::<ApprovalGate>::namespaced(self.api.client(), NS);
        let name = format!("widgets-pr-{number}");
        let patch = Patch::Merge(
            json!({"metadata": {"annotations": {"countersign.dev/last-delivery": why}}}),
        );
        wait_for(&format!("nudge {name}"), || async {
            match gates.patch(&name, &PatchParams::default(), &patch).await {
                Ok(_) => Some(()),
                Err(kube::Error::Api(status)) if status.code == 404 => None,
                Err(error) => panic!("nudge {name}: {error}"),
            }
        })
        .await;
    }

    /// Returns once the controller finished an evaluation of the gate of `number` that
    /// started after everything delivered so far was handled: it nudges twice and waits
    /// for the second evaluation to start reading the pull request (evaluations of one
    /// gate never overlap, so the first one, and its status write, are done).
    pub async fn settle(&self, number: u64) {
        let path = format!("/pulls/{number}/files");
        for round in 0..2 {
            let before = self.github.calls_to(&path).len();
            let nonce = format!(
                "settle-{round}-{}",
                k8s_openapi::jiff::Timestamp::now().as_nanosecond()
            );
            self.nudge(number, &nonce).await;
            wait_for("an evaluation after the nudge", || async {
                (self.github.calls_to(&path).len() > before).then_some(())
            })
            .await;
        }
    }

    pub async fn gate_in(&self, ns: &str, name: &str) -> Option<ApprovalGate> {
        Api::<ApprovalGate>::namespaced(self.api.client(), ns)
            .get_opt(name)
            .await
            .expect("get gate")
    }

    pub async fn gate(&self, number: u64) -> Option<ApprovalGate> {
        self.gate_in(NS, &format!("widgets-pr-{number}")).await
    }

    pub fn head(&self, number: u64) -> String {
        self.github
            .world()
            .pulls
            .get(&(REPO.to_owned(), number))
            .expect("pull request")
            .head_sha
            .clone()
    }

    pub fn merged(&self, number: u64) -> bool {
        self.github
            .world()
            .pulls
            .get(&(REPO.to_owned(), number))
            .is_some_and(|p| p.merged)
    }

    /// The newest `countersign/approval` check run on `sha`.
    pub fn check_on(&self, sha: &str) -> Option<CheckRun> {
        self.github
            .world()
            .check_runs_on(REPO, sha)
            .into_iter()
            .rev()
            .find(|c| c.name == CHECK)
            .cloned()
    }

    /// Waits until the gate of `number` satisfies `done`; panics with the last gate seen.
    pub async fn wait_gate(
        &self,
        number: u64,
        what: &str,
        done: impl Fn(&ApprovalGate) -> bool,
    ) -> ApprovalGate {
        let mut last = None;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(g) = self.gate(number).await {
                    if done(&g) {
                        return g;
                    }
                    last = Some(g);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "gate of #{number}: {what} in time; last: {:#?}",
                last.map(|g| g.status)
            )
        })
    }

    /// Waits until the gate of `number` was evaluated at the pull request's current head.
    pub async fn wait_evaluated(&self, number: u64) -> ApprovalGate {
        let head = self.head(number);
        self.wait_gate(number, "evaluated at the head", |g| evaluated_at(g, &head))
            .await
    }

    /// Waits until the head's check run satisfies `done`.
    pub async fn wait_check(
        &self,
        number: u64,
        what: &str,
        done: impl Fn(&CheckRun) -> bool,
    ) -> CheckRun {
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(c) = self.check_on(&self.head(number))
                    && done(&c)
                {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "check of #{number}: {what} in time; last: {:#?}",
                self.check_on(&self.head(number))
            )
        })
    }

    /// Waits until Project `ns/name` has a `Ready` condition satisfying `done`.
    pub async fn wait_project(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        done: impl Fn(&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) -> bool,
    ) -> Project {
        let api = Api::<Project>::namespaced(self.api.client(), ns);
        let mut last = None;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = api.get_opt(name).await.expect("get project") {
                    let ready = p
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
                    if ready.as_ref().is_some_and(&done) {
                        return p;
                    }
                    last = ready;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("Project {ns}/{name}: {what} in time; last: {last:#?}"))
    }
}

/// Creates the object `value` in `ns`.
pub async fn create(client: &kube::Client, ns: &str, value: Value) {
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    let api_version = value["apiVersion"].as_str().unwrap_or_default().to_owned();
    let (group, version) = api_version
        .split_once('/')
        .unwrap_or(("", api_version.as_str()));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    let api = Api::<kube::api::DynamicObject>::namespaced_with(client.clone(), ns, &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(value).expect("a valid object");
    api.create(&PostParams::default(), &object)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

/// Polls `probe` until it returns `Some`, for at most [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(v) = probe().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} in time"))
}

/// Waits until the wall clock is in a later second than `t`, so an object created now has
/// a strictly later `creationTimestamp` (the apiserver stamps whole seconds).
pub async fn after_second_of<K: Resource>(object: &K) {
    let created = object
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or_default();
    wait_for("the next second", || async {
        (k8s_openapi::jiff::Timestamp::now().as_second() > created).then_some(())
    })
    .await;
}

pub fn phase(g: &ApprovalGate) -> Option<GatePhase> {
    g.status.as_ref().map(|s| s.phase)
}

pub fn evaluated_at(g: &ApprovalGate, head: &str) -> bool {
    g.status
        .as_ref()
        .is_some_and(|s| s.head_sha.as_deref() == Some(head) && s.risk.is_some())
}

pub fn success(c: &CheckRun) -> bool {
    c.status == "completed" && c.conclusion.as_deref() == Some("success")
}

pub fn pending(c: &CheckRun) -> bool {
    c.status != "completed" && c.conclusion.is_none()
}

pub fn records_of<'a>(g: &'a ApprovalGate, login: &str) -> Vec<&'a ApprovalRecord> {
    g.status
        .as_ref()
        .map(|s| {
            s.approvals
                .iter()
                .filter(|r| r.user.login == login)
                .collect()
        })
        .unwrap_or_default()
}

pub fn level(g: &ApprovalGate) -> Option<countersign_crds::risk_policy::RiskLevel> {
    g.status
        .as_ref()
        .and_then(|s| s.risk.as_ref())
        .map(|r| r.level)
}

/// Why a record does not count, as the CRD spells it (`stale`, `pusher`, …), or `valid`.
pub fn reason_of(record: &ApprovalRecord) -> String {
    match &record.invalid_reason {
        Some(reason) => serde_json::to_value(reason)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        None => "valid".to_owned(),
    }
}
