//! The approval-gate world of the end-to-end tests: a Kubernetes of one test (real when
//! built), the fake GitHub, the real bot router and workers, and the real controller, with
//! tokio's clock as the controller's clock (tests pause it and move it past deadlines).
// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use countersign_bot::server::{Bot, BotSettings};
use countersign_controller::clock::Clock;
use countersign_controller::metrics::Metrics;
use countersign_controller::{Context, Settings, run_controllers};
use countersign_crds::{ApprovalGate, GatePhase, Project, RiskPolicy};
use countersign_github::GitHubApp;
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{ChangedFile, CheckRun, FakeGitHub, TEST_APP_SLUG, User};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

pub const NS: &str = "team-a";
pub const REPO: &str = "octo-org/widgets";
pub const INSTALLATION: u64 = 77;
pub const SECRET: &str = "webhook-secret";
pub const WAIT: Duration = Duration::from_secs(30);
pub const CHECK: &str = "countersign/approval";

/// `base` plus however far tokio's clock moved since the test started.
#[derive(Debug)]
pub struct TokioClock {
    pub base: Timestamp,
    pub start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).unwrap_or(SignedDuration::MAX);
        self.base.saturating_add(elapsed).unwrap_or(Timestamp::MAX)
    }
}

pub struct People {
    pub alice: User, // developer (team devs), writes to the repository
    pub carol: User, // developer (team devs)
    pub lead: User,  // tech_lead
    pub mgr: User,   // manager
    pub sam: User,   // security_team (team security)
    pub cto: User,   // cto
    pub erin: User,  // an outside contributor: the usual author
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

pub struct World {
    pub api: TestCluster,
    pub github: FakeGitHub,
    pub p: People,
    /// The controller's metrics (reconciles by kind); kept across controller restarts.
    pub metrics: Arc<Metrics>,
    clock: Arc<TokioClock>,
    /// The bot's router and handlers (replaced when the bot restarts).
    bot: Mutex<BotParts>,
    controller: Mutex<tokio::task::JoinHandle<()>>,
}

struct BotParts {
    router: Router,
    handler: Arc<countersign_bot::handlers::Handler>,
    workers: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        lock(&self.controller).abort();
        lock(&self.bot).workers.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub fn app(github: &FakeGitHub) -> GitHubApp {
    github.app_client()
}

pub fn bot_user() -> User {
    User::bot(99, &format!("{TEST_APP_SLUG}[bot]"))
}

impl World {
    pub async fn start(pull_requests: Value) -> World {
        // A Kubernetes of this test alone (real when built): the bot watches every namespace.
        let api = TestCluster::start_dedicated().await.expect("test cluster");
        World::start_on(api, pull_requests).await
    }

    pub async fn start_on(api: TestCluster, pull_requests: Value) -> World {
        api.install_crds().await.expect("CRDs");
        api.create_named_namespace(NS, &[])
            .await
            .expect("namespace");
        let client = api.client();
        let mut policy: RiskPolicy = countersign_policies::default_policy();
        policy.metadata.namespace = Some(NS.into());
        Api::<RiskPolicy>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &policy)
            .await
            .expect("create policy");
        let project: Project = serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1",
            "kind": "Project",
            "metadata": {"name": "widgets", "namespace": NS},
            "spec": {
                "repository": {"owner": "octo-org", "name": "widgets"},
                "installation": {"id": INSTALLATION},
                "triggers": {"minPermission": "write"},
                "roles": [
                    {"role": "developer", "teams": [{"slug": "devs"}]},
                    {"role": "tech_lead", "users": [{"login": "lead", "id": 1010}]},
                    {"role": "manager", "users": [{"login": "mgr", "id": 1020}]},
                    {"role": "security_team", "teams": [{"slug": "security"}]},
                    {"role": "cto", "users": [{"login": "cto", "id": 1040}]}
                ],
                "pullRequests": pull_requests
            }
        }))
        .expect("project");
        Api::<Project>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &project)
            .await
            .expect("create project");

        let github = FakeGitHub::start().await.expect("fake GitHub");
        let p = people();
        {
            let mut w = github.world();
            w.install(INSTALLATION, "octo-org", &["widgets"]);
            for u in [&p.alice, &p.carol, &p.lead, &p.mgr, &p.sam, &p.cto] {
                w.set_permission(REPO, &u.login, "write");
            }
            w.set_permission(REPO, "erin", "read");
            w.set_permission(REPO, "mallory", "read");
            w.add_team_member("octo-org", "devs", p.alice.clone());
            w.add_team_member("octo-org", "devs", p.carol.clone());
            w.add_team_member("octo-org", "security", p.sam.clone());
        }

        let clock = Arc::new(TokioClock {
            base: Timestamp::from_second(1_800_000_000).expect("time"),
            start: tokio::time::Instant::now(),
        });
        let metrics = Arc::new(Metrics::default());
        let bot = start_bot(&api, &github);
        let controller = start_controller(&api, &github, &clock, &metrics);
        let world = World {
            api,
            github,
            p,
            metrics,
            clock,
            bot: Mutex::new(bot),
            controller: Mutex::new(controller),
        };
        world.wait_ready().await;
        world
    }

    /// Kills the controller wherever it is (a reconcile half done included) and starts a
    /// new one with empty caches, as a crash and a restart would.
    pub async fn restart_controller(&self) {
        let old = std::mem::replace(&mut *lock(&self.controller), tokio::spawn(async {}));
        old.abort();
        // Gone before the new one acts, as leader election would have it.
        let _cancelled = old.await;
        *lock(&self.controller) =
            start_controller(&self.api, &self.github, &self.clock, &self.metrics);
    }

    /// Kills the bot with whatever deliveries its queue holds (they are lost) and starts a
    /// new one, ready once it has read the Projects.
    pub async fn restart_bot(&self) {
        let old = std::mem::replace(&mut lock(&self.bot).workers, tokio::spawn(async {}));
        old.abort();
        let _cancelled = old.await;
        *lock(&self.bot) = start_bot(&self.api, &self.github);
        self.wait_ready().await;
    }

    /// One pass of the bot's resync (what `countersign bot` runs every `--resync-interval`).
    pub async fn resync(&self) -> countersign_bot::resync::Pass {
        let handler = lock(&self.bot).handler.clone();
        let resync = countersign_bot::resync::Resync::new(
            handler,
            Arc::new(countersign_bot::metrics::Metrics::default()),
        );
        tokio::time::timeout(WAIT, countersign_bot::resync::once(&resync))
            .await
            .expect("a resync pass in time")
    }

    /// The controller's clock now.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    fn router(&self) -> Router {
        lock(&self.bot).router.clone()
    }

    /// The bot answers `/readyz` once it has read the Projects.
    pub async fn wait_ready(&self) {
        countersign_testkit::github::wait_until_ready(&self.router(), WAIT).await;
    }

    /// Sends `payload` to the bot as GitHub would.
    pub async fn deliver(&self, event: &str, payload: &Value) {
        let status =
            countersign_testkit::github::deliver_to(&self.router(), event, payload, SECRET).await;
        assert!(status.is_success(), "{event} delivery answered {status}");
    }

    pub async fn open(&self, branch: &str, files: &[&str], author: &User) -> u64 {
        let files = files
            .iter()
            .map(|f| ChangedFile::modified(f, 10, 2))
            .collect();
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

    pub async fn push(&self, number: u64, files: &[&str], who: &User) {
        let files = files
            .iter()
            .map(|f| ChangedFile::modified(f, 1, 1))
            .collect();
        let payload = self
            .github
            .world()
            .push_to_pull_request(REPO, number, files, who);
        self.deliver("pull_request", &payload).await;
    }

    pub async fn gate(&self, number: u64) -> Option<ApprovalGate> {
        Api::<ApprovalGate>::namespaced(self.api.client(), NS)
            .get_opt(&format!("widgets-pr-{number}"))
            .await
            .expect("get gate")
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
}

pub fn phase(g: &ApprovalGate) -> Option<GatePhase> {
    g.status.as_ref().map(|s| s.phase)
}

/// Evaluated on `head` and its check run published (the status is saved before the check).
pub fn evaluated_at(g: &ApprovalGate, head: &str) -> bool {
    g.status.as_ref().is_some_and(|s| {
        s.head_sha.as_deref() == Some(head)
            && s.risk.is_some()
            && s.check_run_sha.as_deref() == Some(head)
    })
}

pub fn success(c: &CheckRun) -> bool {
    c.status == "completed" && c.conclusion.as_deref() == Some("success")
}

pub fn pending(c: &CheckRun) -> bool {
    c.status != "completed" && c.conclusion.is_none()
}

pub fn records_of<'a>(
    g: &'a ApprovalGate,
    login: &str,
) -> Vec<&'a countersign_crds::approval_gate::ApprovalRecord> {
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

/// Moves tokio's clock (and so the controller's) forward by `by`, firing the requeue the
/// controller scheduled for the deadline.
pub async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Our check runs on `sha`.
pub fn our_checks(w: &World, sha: &str) -> Vec<CheckRun> {
    w.github
        .world()
        .check_runs_on(REPO, sha)
        .into_iter()
        .filter(|c| c.name == CHECK)
        .cloned()
        .collect()
}

pub fn last_error(g: &ApprovalGate) -> Option<&str> {
    g.status.as_ref().and_then(|s| s.last_error.as_deref())
}

/// How far past a GitHub failure the gate is looked at again (its backoff is 15 s).
pub const PAST_GITHUB_BACKOFF: Duration = Duration::from_secs(16);

fn start_bot(api: &TestCluster, github: &FakeGitHub) -> BotParts {
    let bot = Bot::new(
        api.client(),
        app(github),
        BotSettings {
            secrets: vec![SECRET.as_bytes().to_vec()],
            namespace: Some(NS.into()),
            queue: 1024,
            delivery_memory: 10_000,
            delivery_ttl: Duration::from_secs(3600),
            bot_login: bot_user().login,
            allowed_repositories: None,
        },
    );
    BotParts {
        router: bot.router(),
        handler: bot.handler.clone(),
        workers: tokio::spawn(bot.run(2)),
    }
}

fn start_controller(
    api: &TestCluster,
    github: &FakeGitHub,
    clock: &Arc<TokioClock>,
    metrics: &Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    let settings = Settings {
        namespace: Some(NS.into()),
        resync_interval: Duration::from_secs(600),
        wait_requeue: Duration::from_millis(300),
        gates_url: Some("https://countersign.example.com".into()),
        ..Settings::default()
    };
    let app = app(github);
    let ctx = Context::new(
        api.client(),
        settings,
        Arc::new(app.clone()),
        metrics.clone(),
    )
    .with_github(app)
    .with_clock(clock.clone());
    tokio::spawn(run_controllers(Arc::new(ctx)))
}
