//! Approval gates through the whole system: signed webhooks into the real bot router, the
//! bot's workers writing ApprovalGates to the fake apiserver, the real controller reading
//! the pull request from the fake GitHub, applying the RiskPolicy and the approval rules, and
//! publishing the `countersign/approval` check run there.
//!
//! Deadlines use tokio's clock: the controller's clock is `base + tokio elapsed`, and the
//! deadline tests pause tokio time and advance it past the deadline, so the requeue the
//! controller scheduled fires without anyone sleeping for hours.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use countersign_bot::server::{Bot, BotSettings};
use countersign_controller::clock::Clock;
use countersign_controller::metrics::Metrics;
use countersign_controller::{Context, Settings, run_controllers};
use countersign_crds::approval_gate::InvalidReason;
use countersign_crds::{AgentRun, ApprovalGate, GatePhase, Project, RiskPolicy};
use countersign_github::GitHubApp;
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{ChangedFile, CheckRun, FakeGitHub, TEST_APP_SLUG, User};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const NS: &str = "team-a";
const REPO: &str = "octo-org/widgets";
const INSTALLATION: u64 = 77;
const SECRET: &str = "webhook-secret";
const WAIT: Duration = Duration::from_secs(30);
const CHECK: &str = "countersign/approval";

/// `base` plus however far tokio's clock moved since the test started.
#[derive(Debug)]
struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.start.elapsed()).unwrap_or(SignedDuration::MAX);
        self.base.saturating_add(elapsed).unwrap_or(Timestamp::MAX)
    }
}

struct People {
    alice: User, // developer (team devs), writes to the repository
    carol: User, // developer (team devs)
    lead: User,  // tech_lead
    mgr: User,   // manager
    sam: User,   // security_team (team security)
    cto: User,   // cto
    erin: User,  // an outside contributor: the usual author
    mallory: User,
}

fn people() -> People {
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

struct World {
    api: TestCluster,
    github: FakeGitHub,
    router: Router,
    p: People,
    /// The controller's metrics (reconciles by kind).
    metrics: Arc<Metrics>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for World {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn app(github: &FakeGitHub) -> GitHubApp {
    github.app_client()
}

fn bot_user() -> User {
    User::bot(99, &format!("{TEST_APP_SLUG}[bot]"))
}

impl World {
    async fn start(pull_requests: Value) -> World {
        // A Kubernetes of this test alone (real when built): the bot watches every namespace.
        let api = TestCluster::start_dedicated().await.expect("test cluster");
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

        let bot = Bot::new(
            client.clone(),
            app(&github),
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
        let router = bot.router();
        let workers = tokio::spawn(bot.run(2));

        let settings = Settings {
            namespace: Some(NS.into()),
            resync_interval: Duration::from_secs(600),
            wait_requeue: Duration::from_millis(300),
            gates_url: Some("https://countersign.example.com".into()),
            ..Settings::default()
        };
        let app = app(&github);
        let clock = Arc::new(TokioClock {
            base: Timestamp::from_second(1_800_000_000).expect("time"),
            start: tokio::time::Instant::now(),
        });
        let metrics = Arc::new(Metrics::default());
        let ctx = Context::new(client, settings, Arc::new(app.clone()), metrics.clone())
            .with_github(app)
            .with_clock(clock);
        let controller = tokio::spawn(run_controllers(Arc::new(ctx)));
        let world = World {
            api,
            github,
            router,
            p,
            metrics,
            tasks: vec![workers, controller],
        };
        world.wait_ready().await;
        world
    }

    /// The bot answers `/readyz` once it has read the Projects.
    async fn wait_ready(&self) {
        countersign_testkit::github::wait_until_ready(&self.router, WAIT).await;
    }

    /// Sends `payload` to the bot as GitHub would.
    async fn deliver(&self, event: &str, payload: &Value) {
        let status =
            countersign_testkit::github::deliver_to(&self.router, event, payload, SECRET).await;
        assert!(status.is_success(), "{event} delivery answered {status}");
    }

    async fn open(&self, branch: &str, files: &[&str], author: &User) -> u64 {
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

    async fn review(&self, number: u64, who: &User, state: &str) {
        let payload = self
            .github
            .world()
            .submit_review(REPO, number, who, state, "");
        self.deliver("pull_request_review", &payload).await;
    }

    async fn comment(&self, number: u64, who: &User, body: &str) {
        let payload = self.github.world().comment(REPO, number, body, who);
        self.deliver("issue_comment", &payload).await;
    }

    async fn push(&self, number: u64, files: &[&str], who: &User) {
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

    async fn gate(&self, number: u64) -> Option<ApprovalGate> {
        Api::<ApprovalGate>::namespaced(self.api.client(), NS)
            .get_opt(&format!("widgets-pr-{number}"))
            .await
            .expect("get gate")
    }

    fn head(&self, number: u64) -> String {
        self.github
            .world()
            .pulls
            .get(&(REPO.to_owned(), number))
            .expect("pull request")
            .head_sha
            .clone()
    }

    /// The newest `countersign/approval` check run on `sha`.
    fn check_on(&self, sha: &str) -> Option<CheckRun> {
        self.github
            .world()
            .check_runs_on(REPO, sha)
            .into_iter()
            .rev()
            .find(|c| c.name == CHECK)
            .cloned()
    }

    /// Waits until the gate of `number` satisfies `done`; panics with the last gate seen.
    async fn wait_gate(
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
    async fn wait_check(
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

fn phase(g: &ApprovalGate) -> Option<GatePhase> {
    g.status.as_ref().map(|s| s.phase)
}

fn evaluated_at(g: &ApprovalGate, head: &str) -> bool {
    g.status
        .as_ref()
        .is_some_and(|s| s.head_sha.as_deref() == Some(head) && s.risk.is_some())
}

fn success(c: &CheckRun) -> bool {
    c.status == "completed" && c.conclusion.as_deref() == Some("success")
}

fn pending(c: &CheckRun) -> bool {
    c.status != "completed" && c.conclusion.is_none()
}

fn records_of<'a>(
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

#[tokio::test]
async fn a_docs_only_pull_request_approves_itself_with_the_reason_in_the_check() {
    let w = World::start(json!({})).await;
    let n = w
        .open("docs-typo", &["docs/guide.md", "README.md"], &w.p.erin)
        .await;
    let gate = w
        .wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let status = gate.status.expect("status");
    let risk = status.risk.expect("risk");
    assert_eq!(risk.workflow, "standard");
    let reason = status
        .auto_approve_reason
        .expect("auto-approve reason recorded");
    let check = w.wait_check(n, "success", success).await;
    let summary = check.summary.clone().unwrap_or_default();
    assert!(
        summary.contains(&reason) || summary.contains("standard"),
        "{summary}"
    );
    assert_eq!(
        check.details_url.as_deref(),
        Some("https://countersign.example.com/gates/team-a/widgets-pr-1")
    );
    assert!(
        w.github.world().review_requests_on(REPO, n).is_empty(),
        "nobody is asked to review an auto-approved change"
    );

    // Settled: our own status writes and the Project's count updates do not trigger the
    // gate again. Quiescence cannot be awaited, so this watches the reconcile counter over a
    // window of ten of the shortest requeue the reconciler uses (300 ms here): a loop driven
    // by our own writes would reconcile every time, a settled gate not at all.
    let reconciles = || w.metrics.reconciles_of("ApprovalGate");
    let before = reconciles();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(reconciles(), before, "no reconcile loop");
}

#[tokio::test]
async fn a_feature_needs_a_developer_and_a_tech_lead_and_turns_green_only_after_both() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    let head = w.head(n);
    let gate = w
        .wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;
    let status = gate.status.expect("status");
    assert_eq!(status.phase, GatePhase::Pending);
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(roles, ["developer", "tech_lead"]);
    assert!(status.deadline.is_some(), "supervised has a 4h deadline");
    w.wait_check(n, "pending", pending).await;
    // The missing roles were asked once: the lead by login, the developers by team.
    let requests: Vec<(Vec<String>, Vec<String>)> = w
        .github
        .world()
        .review_requests_on(REPO, n)
        .iter()
        .map(|r| (r.users.clone(), r.teams.clone()))
        .collect();
    assert_eq!(
        requests,
        [(vec!["lead".to_owned()], vec!["devs".to_owned()])]
    );

    w.review(n, &w.p.alice, "APPROVED").await;
    w.wait_gate(n, "alice counted", |g| {
        g.status.as_ref().is_some_and(|s| {
            s.requirements
                .iter()
                .any(|r| r.role.0 == "developer" && r.approved_by == ["alice"])
        })
    })
    .await;
    let check = w.check_on(&head).expect("check");
    assert!(pending(&check), "one of two roles is not enough: {check:?}");

    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let check = w.wait_check(n, "success", success).await;
    let summary = check.summary.unwrap_or_default();
    assert!(
        summary.contains("alice") && summary.contains("lead"),
        "{summary}"
    );
    assert_eq!(
        w.github.world().review_requests_on(REPO, n).len(),
        1,
        "asked once"
    );
}

#[tokio::test]
async fn an_auth_change_needs_a_tech_lead_and_a_manager() {
    let w = World::start(json!({})).await;
    let n = w.open("login", &["src/auth/session.rs"], &w.p.erin).await;
    let head = w.head(n);
    let gate = w
        .wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;
    let status = gate.status.expect("status");
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(roles, ["tech_lead", "manager"]);
    assert_eq!(status.risk.expect("risk").workflow, "managed");

    // A developer's approval does not count for either role.
    w.review(n, &w.p.alice, "APPROVED").await;
    let gate = w
        .wait_gate(n, "alice recorded", |g| !records_of(g, "alice").is_empty())
        .await;
    assert_eq!(
        records_of(&gate, "alice")[0].invalid_reason,
        Some(InvalidReason::NotInRole)
    );
    w.review(n, &w.p.lead, "APPROVED").await;
    w.review(n, &w.p.mgr, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    w.wait_check(n, "success", success).await;
}

#[tokio::test]
async fn a_push_after_approval_invalidates_it_but_a_clean_rebase_does_not() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let first_head = w.head(n);
    assert!(success(&w.check_on(&first_head).expect("check")));

    // A clean rebase: new SHAs, the same change. The approvals carry over (once the push's
    // webhook said who pushed the new head).
    let payload = w.github.world().rebase_pull_request(REPO, n, &w.p.erin);
    w.deliver("pull_request", &payload).await;
    let rebased = w.head(n);
    assert_ne!(rebased, first_head);
    w.wait_gate(n, "approved on the rebased head", |g| {
        evaluated_at(g, &rebased) && phase(g) == Some(GatePhase::Approved)
    })
    .await;
    w.wait_check(n, "success on the rebased head", success)
        .await;

    // New content: the approvals are stale.
    w.push(
        n,
        &["src/orders/checkout.rs", "src/orders/cart.rs"],
        &w.p.erin,
    )
    .await;
    let pushed = w.head(n);
    let gate = w
        .wait_gate(n, "evaluated on the pushed head", |g| {
            evaluated_at(g, &pushed)
        })
        .await;
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
    for login in ["alice", "lead"] {
        assert_eq!(
            records_of(&gate, login)[0].invalid_reason,
            Some(InvalidReason::Stale),
            "{login}"
        );
    }
    w.wait_check(n, "pending on the new head", pending).await;
    // The old head's check keeps its conclusion; the new head has its own.
    assert!(success(&w.check_on(&first_head).expect("old check")));
}

#[tokio::test]
async fn the_requester_of_an_ai_run_cannot_approve_its_pull_request() {
    let w = World::start(json!({})).await;
    // The run that wrote the change, asked for by alice.
    let run: AgentRun = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": "widgets-issue-3-backend", "namespace": NS},
        "spec": {
            "projectRef": {"name": "widgets"},
            "agentRef": {"name": "backend"},
            "task": {"issue": 3, "title": "Add retries",
                     "requestedBy": {"login": "alice", "id": 1}, "source": "issueLabel"}
        }
    }))
    .expect("run");
    Api::<AgentRun>::namespaced(w.api.client(), NS)
        .create(&PostParams::default(), &run)
        .await
        .expect("create run");
    let n = w
        .open(
            "countersign/widgets-issue-3-backend",
            &["src/retry.rs"],
            &bot_user(),
        )
        .await;
    let gate = w.wait_gate(n, "a gate", |g| g.status.is_some()).await;
    assert!(gate.spec.ai_generated, "{:?}", gate.spec);

    w.review(n, &w.p.alice, "APPROVED").await;
    let gate = w
        .wait_gate(n, "alice recorded", |g| !records_of(g, "alice").is_empty())
        .await;
    let alice = records_of(&gate, "alice")[0];
    assert!(!alice.valid);
    assert_eq!(alice.invalid_reason, Some(InvalidReason::Requester));
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
    let check = w
        .wait_check(n, "lists the requester", |c| {
            c.summary
                .as_deref()
                .is_some_and(|s| s.contains("requester"))
        })
        .await;
    assert!(pending(&check));

    // Another developer and the lead can.
    w.review(n, &w.p.carol, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    w.wait_check(n, "success", success).await;
}

#[tokio::test]
async fn hold_blocks_and_unhold_releases() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;

    w.comment(n, &w.p.mgr, "Wait for the freeze to end.\n\n/hold")
        .await;
    let gate = w
        .wait_gate(n, "held", |g| phase(g) == Some(GatePhase::Held))
        .await;
    assert_eq!(
        gate.status.and_then(|s| s.held_by).map(|u| u.login),
        Some("mgr".to_owned())
    );
    w.wait_check(n, "pending while held", pending).await;

    // Someone without write access or a role cannot lift it.
    w.comment(n, &w.p.mallory, "/unhold").await;
    w.comment(n, &w.p.mgr, "/unhold").await;
    w.wait_gate(n, "approved again", |g| {
        phase(g) == Some(GatePhase::Approved)
    })
    .await;
    w.wait_check(n, "success", success).await;
}

#[tokio::test]
async fn a_merge_group_commit_gets_the_gates_conclusion() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let queue_sha = "c".repeat(40);
    let head = w.head(n);
    let payload = json!({
        "action": "checks_requested",
        "merge_group": {
            "head_sha": queue_sha,
            "head_ref": format!("refs/heads/gh-readonly-queue/main/pr-{n}-{head}"),
            "base_ref": "refs/heads/main",
            "base_sha": "b".repeat(40)
        },
        "repository": {"id": 1, "name": "widgets", "full_name": REPO,
                       "owner": {"login": "octo-org", "id": 9000, "type": "Organization"}},
        "sender": {"id": 1, "login": "alice", "type": "User"},
        "installation": {"id": INSTALLATION}
    });
    w.deliver("merge_group", &payload).await;
    let found = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(c) = w.check_on(&queue_sha) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
    .expect("a check run on the merge-group commit");
    assert!(success(&found), "{found:?}");
}

#[tokio::test]
async fn an_approval_comment_edited_by_someone_else_is_tampering() {
    let w = World::start(json!({})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    w.review(n, &w.p.alice, "APPROVED").await;
    // The lead writes a harmless comment; an admin (mgr) edits it into an approval.
    w.comment(n, &w.p.lead, "Will look tomorrow.").await;
    let id = w
        .github
        .world()
        .comments_on(REPO, n)
        .iter()
        .find(|c| c.author == "lead")
        .map(|c| c.id)
        .expect("lead's comment");
    let payload = w
        .github
        .world()
        .edit_comment(REPO, id, "/approve", &w.p.mgr);
    w.deliver("issue_comment", &payload).await;
    let gate = w
        .wait_gate(n, "lead's forged approval recorded", |g| {
            !records_of(g, "lead").is_empty()
        })
        .await;
    assert_eq!(
        records_of(&gate, "lead")[0].invalid_reason,
        Some(InvalidReason::Tampered)
    );
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
}

#[tokio::test]
async fn an_approved_pull_request_merges_itself_once_the_other_checks_pass() {
    let w = World::start(json!({"autoMerge": true, "mergeMethod": "squash"})).await;
    let n = w
        .open("feature", &["src/orders/checkout.rs"], &w.p.erin)
        .await;
    let head = w.head(n);
    w.github
        .world()
        .add_check_run(REPO, &head, "ci/test", 15368, "in_progress", None);
    w.review(n, &w.p.alice, "APPROVED").await;
    w.review(n, &w.p.lead, "APPROVED").await;
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    w.wait_check(n, "success", success).await;
    let merged = |w: &World| {
        w.github
            .world()
            .pulls
            .get(&(REPO.to_owned(), n))
            .is_some_and(|p| p.merged)
    };
    assert!(!merged(&w), "ci/test is still running");
    // CI finishes; the next look (a nudge here, the 30 s poll otherwise) merges.
    w.github
        .world()
        .add_check_run(REPO, &head, "ci/test", 15368, "completed", Some("success"));
    Api::<ApprovalGate>::namespaced(w.api.client(), NS)
        .patch(
            &format!("widgets-pr-{n}"),
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"countersign.dev/last-delivery": "ci-done"}}}),
            ),
        )
        .await
        .expect("nudge");
    w.wait_gate(n, "merged", |g| phase(g) == Some(GatePhase::Merged))
        .await;
    assert!(merged(&w));
}

/// Moves tokio's clock (and so the controller's) forward by `by`, firing the requeue the
/// controller scheduled for the deadline.
async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

#[tokio::test]
async fn a_migration_needs_three_executives_and_expires_at_its_deadline() {
    let w = World::start(json!({})).await;
    let n = w
        .open("migrate", &["migrations/0042_add_index.sql"], &w.p.erin)
        .await;
    let head = w.head(n);
    let gate = w
        .wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;
    let status = gate.status.expect("status");
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(roles, ["manager", "security_team", "cto"]);
    let waiting = status.waiting_since.expect("clock started").0;
    let deadline = status.deadline.expect("72h deadline").0;
    assert_eq!(
        deadline.duration_since(waiting),
        SignedDuration::from_hours(72)
    );
    w.review(n, &w.p.mgr, "APPROVED").await;
    w.review(n, &w.p.sam, "APPROVED").await;
    w.wait_gate(n, "two approvals", |g| {
        g.status
            .as_ref()
            .is_some_and(|s| s.requirements.iter().filter(|r| r.satisfied == 1).count() == 2)
    })
    .await;

    advance(Duration::from_secs(72 * 3600 + 5)).await;
    let gate = w
        .wait_gate(n, "expired", |g| phase(g) == Some(GatePhase::Expired))
        .await;
    let status = gate.status.expect("status");
    assert_eq!(
        status.escalations.last().map(|e| e.action),
        Some(countersign_crds::risk_policy::TimeoutAction::Expire)
    );
    let check = w
        .wait_check(n, "failure", |c| c.conclusion.as_deref() == Some("failure"))
        .await;
    assert_eq!(check.status, "completed");
    let comments = w
        .github
        .world()
        .comments_on(REPO, n)
        .iter()
        .map(|c| c.body.clone())
        .collect::<Vec<_>>();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("Expired") && c.contains("@cto")),
        "{comments:?}"
    );

    // The cto approving afterwards does not revive it: new content must be pushed.
    w.review(n, &w.p.cto, "APPROVED").await;
    let gate = w
        .wait_gate(n, "cto recorded", |g| !records_of(g, "cto").is_empty())
        .await;
    assert_eq!(phase(&gate), Some(GatePhase::Expired));
}

/// Sets the high-risk workflow's `escalationMode` (the default policy's is `standIn`); the
/// controller reads the RiskPolicy on every evaluation.
async fn set_high_risk_escalation_mode(w: &World, mode: &str) {
    Api::<RiskPolicy>::namespaced(w.api.client(), NS)
        .patch(
            "default",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"workflows": {"high": {"escalationMode": mode}}}})),
        )
        .await
        .expect("patch the RiskPolicy");
}

/// Opens a high-risk pull request, lets its 24h deadline pass and returns the escalated gate
/// with the comments on the pull request.
async fn escalate_high_risk_change(w: &World) -> (u64, ApprovalGate, Vec<String>) {
    let n = w.open("login", &["src/auth/session.rs"], &w.p.erin).await;
    let head = w.head(n);
    w.wait_gate(n, "evaluated", |g| evaluated_at(g, &head))
        .await;

    advance(Duration::from_secs(24 * 3600 + 5)).await;
    let gate = w
        .wait_gate(n, "escalated", |g| {
            g.status.as_ref().is_some_and(|s| !s.escalations.is_empty())
        })
        .await;
    let comments: Vec<String> = w
        .github
        .world()
        .comments_on(REPO, n)
        .iter()
        .map(|c| c.body.clone())
        .collect();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("Escalated") && c.contains("@cto")),
        "{comments:?}"
    );
    // cto was asked for a review as well.
    let asked_cto = w
        .github
        .world()
        .review_requests_on(REPO, n)
        .iter()
        .any(|r| r.users.contains(&"cto".to_owned()));
    assert!(asked_cto);
    (n, gate, comments)
}

#[tokio::test]
async fn a_high_risk_change_escalated_in_additional_mode_needs_the_cto_as_well() {
    use countersign_crds::risk_policy::EscalationMode;
    let w = World::start(json!({})).await;
    set_high_risk_escalation_mode(&w, "additional").await;
    let (n, gate, _) = escalate_high_risk_change(&w).await;
    let status = gate.status.expect("status");
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(roles, ["tech_lead", "manager", "cto"]);
    assert_eq!(status.phase, GatePhase::Pending);
    assert_eq!(status.escalations[0].mode, Some(EscalationMode::Additional));

    // The cto's approval is one more, not a replacement.
    w.review(n, &w.p.cto, "APPROVED").await;
    let gate = w
        .wait_gate(n, "cto counted", |g| {
            g.status.as_ref().is_some_and(|s| {
                s.requirements
                    .iter()
                    .any(|r| r.role.0 == "cto" && r.satisfied == 1)
            })
        })
        .await;
    assert_eq!(phase(&gate), Some(GatePhase::Pending));
    w.wait_check(n, "pending", pending).await;

    for who in [&w.p.lead, &w.p.mgr] {
        w.review(n, who, "APPROVED").await;
    }
    w.wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    w.wait_check(n, "success", success).await;
}

#[tokio::test]
async fn a_high_risk_change_escalated_in_stand_in_mode_is_approved_by_the_cto_alone() {
    use countersign_crds::risk_policy::EscalationMode;
    let w = World::start(json!({})).await;
    // The default policy's mode, written out.
    set_high_risk_escalation_mode(&w, "standIn").await;
    let (n, gate, comments) = escalate_high_risk_change(&w).await;
    let status = gate.status.expect("status");
    let roles: Vec<&str> = status
        .requirements
        .iter()
        .map(|r| r.role.0.as_str())
        .collect();
    assert_eq!(
        roles,
        ["tech_lead", "manager"],
        "cto is no third requirement"
    );
    assert!(
        status
            .requirements
            .iter()
            .all(|r| r.stand_in.as_ref().map(|s| s.as_str()) == Some("cto")),
        "{:?}",
        status.requirements
    );
    let escalation = &status.escalations[0];
    assert_eq!(escalation.mode, Some(EscalationMode::StandIn));
    let stands_in_for: Vec<&str> = escalation
        .stands_in_for
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(stands_in_for, ["tech_lead", "manager"]);
    assert_eq!(status.phase, GatePhase::Pending);
    assert!(
        comments
            .iter()
            .any(|c| c.contains("in place of `tech_lead`, `manager`")),
        "{comments:?}"
    );
    let check = w.wait_check(n, "pending", pending).await;
    let summary = check.summary.unwrap_or_default();
    assert!(
        summary.contains("escalated to cto (stands in for tech\\_lead, manager)"),
        "{summary}"
    );

    // After the deadline, only the cto approves: that is enough.
    w.review(n, &w.p.cto, "APPROVED").await;
    let gate = w
        .wait_gate(n, "approved", |g| phase(g) == Some(GatePhase::Approved))
        .await;
    let status = gate.status.expect("status");
    for r in &status.requirements {
        assert_eq!(r.stood_in_by.as_deref(), Some("cto"), "{r:?}");
        assert_eq!(r.satisfied, r.count, "{r:?}");
    }
    let check = w.wait_check(n, "success", success).await;
    assert!(
        check
            .summary
            .unwrap_or_default()
            .contains("\\@cto (standing in)")
    );
}
