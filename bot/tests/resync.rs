//! The resync through its real entry points: Projects on a real control plane, the fake GitHub
//! holding labelled issues and pull requests whose deliveries never arrived, the bot
//! assembled as `countersign bot` assembles it, and one `resync::once` pass at a time.
//!
//! Two Projects named `widgets` manage two repositories in two namespaces, so a delivery
//! handled for one and a resync for the other must produce the very same objects.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use countersign_bot::handlers::Handler;
use countersign_bot::metrics::Metrics;
use countersign_bot::resync::{self, Pass, Recovered, Resync, SkipReason};
use countersign_bot::server::{Bot, BotSettings};
use countersign_crds::keys::{CREATED_BY_DELIVERY_ANNOTATION, PUSHED_HEADS_ANNOTATION};
use countersign_crds::{AgentRun, ApprovalGate, Project};
use countersign_github::Permission;
use countersign_github::authz::Denial;
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{ChangedFile, Delivery, FakeGitHub, TEST_APP_SLUG, User};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tower::ServiceExt;

/// Every wait of these tests.
const WAIT: Duration = Duration::from_secs(30);
const SECRET: &str = "resync-secret";
const INSTALLATION: u64 = 77;
/// `team-a/widgets` manages this repository; its deliveries are the ones that get lost.
const WIDGETS: &str = "octo-org/widgets";
const NS_A: &str = "team-a";
/// `team-b/widgets` manages this one; its deliveries arrive, for comparison.
const GADGETS: &str = "octo-org/gadgets";
const NS_B: &str = "team-b";
const LABEL: &str = "ai:backend";

fn bot_login() -> String {
    format!("{TEST_APP_SLUG}[bot]")
}

struct Setup {
    api: TestCluster,
    github: FakeGitHub,
    router: Router,
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    resync: Resync,
    alice: User,
    rita: User,
    _bot: tokio::task::JoinHandle<()>,
}

fn project(namespace: &str, repository: &str) -> Project {
    let (owner, name) = repository.split_once('/').expect("owner/name");
    serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "widgets", "namespace": namespace},
        "spec": {
            "repository": {"owner": owner, "name": name},
            "triggers": {
                "labels": [{"label": LABEL, "agent": {"name": "backend"}}],
                "minPermission": "write"
            }
        }
    }))
    .expect("project")
}

/// A bot as `countersign bot` assembles it (not yet serving anything).
fn assemble_bot(api: &TestCluster, github: &FakeGitHub) -> Bot {
    Bot::new(
        api.client(),
        github.app_client(),
        BotSettings {
            secrets: vec![SECRET.as_bytes().to_vec()],
            namespace: None,
            queue: 64,
            delivery_memory: 1_000,
            delivery_ttl: Duration::from_secs(3600),
            bot_login: bot_login(),
            allowed_repositories: Some(
                countersign_policies::ownership::RepositoryAllowList::everything(),
            ),
        },
    )
}

impl Setup {
    async fn start() -> Setup {
        let api = TestCluster::start_dedicated().await.expect("test cluster");
        api.install_crds().await.expect("CRDs");
        let mut created = Vec::new();
        for (namespace, repository) in [(NS_A, WIDGETS), (NS_B, GADGETS)] {
            api.create_named_namespace(namespace, &[])
                .await
                .expect("namespace");
            let stored = Api::<Project>::namespaced(api.client(), namespace)
                .create(&PostParams::default(), &project(namespace, repository))
                .await
                .expect("create project");
            created.extend(stored.metadata.creation_timestamp.map(|t| t.0));
        }
        let github = FakeGitHub::start().await.expect("fake GitHub");
        let (alice, rita) = (User::new(1, "alice"), User::new(2, "rita"));
        {
            let mut w = github.world();
            w.install(INSTALLATION, "octo-org", &["widgets", "gadgets"]);
            for repository in [WIDGETS, GADGETS] {
                w.set_permission(repository, "alice", "write");
                w.set_permission(repository, "rita", "read");
            }
            // What happens on GitHub from now on happens after the Projects were created.
            w.advance_clock_past(created.into_iter().max().expect("creation times"));
        }
        let bot = assemble_bot(&api, &github);
        let handler = bot.handler.clone();
        let metrics = bot.probes.metrics.clone();
        let router = bot.router();
        let resync = Resync::new(handler.clone(), metrics.clone());
        let workers = tokio::spawn(bot.run(2));
        let setup = Setup {
            api,
            github,
            router,
            handler,
            metrics,
            resync,
            alice,
            rita,
            _bot: workers,
        };
        setup.wait_for_projects().await;
        setup
    }

    async fn wait_for_projects(&self) {
        tokio::time::timeout(WAIT, async {
            while self.handler.projects.managed().len() < 2 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("both Projects indexed in time");
    }

    /// One resync pass.
    async fn resync(&self) -> Pass {
        tokio::time::timeout(WAIT, resync::once(&self.resync))
            .await
            .expect("a resync pass in time")
    }

    /// Delivers `payload` to the bot's webhook endpoint.
    async fn deliver(&self, event: &str, payload: &serde_json::Value) {
        deliver_to(&self.router, event, payload).await;
    }

    async fn runs(&self, namespace: &str) -> Vec<AgentRun> {
        Api::<AgentRun>::namespaced(self.api.client(), namespace)
            .list(&ListParams::default())
            .await
            .expect("list runs")
            .items
    }

    async fn gates(&self, namespace: &str) -> Vec<ApprovalGate> {
        Api::<ApprovalGate>::namespaced(self.api.client(), namespace)
            .list(&ListParams::default())
            .await
            .expect("list gates")
            .items
    }

    /// Waits until `namespace` holds `n` runs (a delivery being handled by the workers).
    async fn wait_for_runs(&self, namespace: &str, n: usize) -> Vec<AgentRun> {
        tokio::time::timeout(WAIT, async {
            loop {
                let runs = self.runs(namespace).await;
                if runs.len() >= n {
                    return runs;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the delivered run in time")
    }

    /// Waits until `namespace` holds `n` gates.
    async fn wait_for_gates(&self, namespace: &str, n: usize) -> Vec<ApprovalGate> {
        tokio::time::timeout(WAIT, async {
            loop {
                let gates = self.gates(namespace).await;
                if gates.len() >= n {
                    return gates;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the delivered gate in time")
    }

    /// The bot's comments on `repository#number`.
    fn bot_comments(&self, repository: &str, number: u64) -> Vec<String> {
        self.github
            .world()
            .comments_on(repository, number)
            .iter()
            .filter(|c| c.author == bot_login())
            .map(|c| c.body.clone())
            .collect()
    }

    fn metric(&self, series: &str) -> Option<String> {
        let text = self.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_owned()))
    }
}

async fn deliver_to(router: &Router, event: &str, payload: &serde_json::Value) {
    let delivery = Delivery::from_payload(event, payload, SECRET).expect("delivery");
    let request = delivery.to_request("/webhook").expect("request");
    let answer = tokio::time::timeout(WAIT, router.clone().oneshot(request))
        .await
        .expect("answered in time")
        .expect("answer");
    assert_eq!(answer.status(), StatusCode::ACCEPTED, "{event} accepted");
}

fn names(objects: &[impl ResourceExt]) -> Vec<(String, Option<String>)> {
    let mut names: Vec<_> = objects
        .iter()
        .map(|o| (o.name_any(), o.resource_version()))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_labelled_issue_whose_delivery_was_lost_gets_the_run_its_delivery_would_have_made() {
    let s = Setup::start().await;
    let delivered = {
        let mut w = s.github.world();
        for repository in [WIDGETS, GADGETS] {
            w.open_issue(
                repository,
                "Add retries",
                "Retry <!-- hidden -->the calls.",
                &s.alice,
            );
        }
        w.label_issue(WIDGETS, 1, LABEL, &s.alice); // never delivered
        w.label_issue(GADGETS, 1, LABEL, &s.alice)
    };
    s.deliver("issues", &delivered).await;
    let by_delivery = s.wait_for_runs(NS_B, 1).await;
    let untouched = names(&by_delivery);

    let pass = s.resync().await;

    assert_eq!(
        pass.recovered,
        [Recovered {
            kind: "AgentRun",
            namespace: NS_A.into(),
            name: "widgets-issue-1-backend".into()
        }]
    );
    assert!(
        pass.skipped.is_empty() && pass.failed.is_empty(),
        "{pass:?}"
    );
    let recovered = s.runs(NS_A).await;
    assert_eq!(recovered.len(), 1, "{recovered:?}");
    let (run, twin) = (&recovered[0], &by_delivery[0]);
    assert_eq!(
        run.name_any(),
        twin.name_any(),
        "the same deterministic name"
    );
    assert_eq!(
        serde_json::to_value(&run.spec).expect("spec"),
        serde_json::to_value(&twin.spec).expect("spec"),
        "the same spec: task, requester, source, mode"
    );
    assert_eq!(run.labels(), twin.labels());
    assert_eq!(
        run.spec.task.requested_by.as_ref().map(|u| u.id),
        Some(Some(1)),
        "the labeler, from the issue's events"
    );
    let labeled = s.github.world().events_on(WIDGETS, 1)[0].id;
    assert_eq!(
        run.annotations()
            .get(CREATED_BY_DELIVERY_ANNOTATION)
            .map(String::as_str),
        Some(format!("resync/issue-event/{labeled}").as_str())
    );
    assert_eq!(
        names(&s.runs(NS_B).await),
        untouched,
        "the delivered run is left alone"
    );
    assert_eq!(
        s.metric(r#"countersign_bot_resync_recovered_total{kind="AgentRun"}"#)
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        s.metric(r#"countersign_bot_resync_passes_total{result="complete"}"#)
            .as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_label_by_someone_without_permission_starts_nothing_and_says_why_once() {
    let s = Setup::start().await;
    {
        let mut w = s.github.world();
        w.open_issue(WIDGETS, "Add retries", "", &s.alice);
        w.label_issue(WIDGETS, 1, LABEL, &s.rita);
    }

    let first = s.resync().await;
    assert!(s.runs(NS_A).await.is_empty());
    assert_eq!(first.recovered, []);
    assert_eq!(first.skipped.len(), 1, "{first:?}");
    assert_eq!(first.skipped[0].issue, 1);
    assert_eq!(
        first.skipped[0].reason,
        SkipReason::Denied(Denial::Permission {
            have: Permission::Read,
            need: countersign_crds::project::RepoPermission::Write
        })
    );
    let comments = s.bot_comments(WIDGETS, 1);
    assert_eq!(
        comments.len(),
        1,
        "the answer a delivery gets: {comments:?}"
    );
    assert!(comments[0].contains("@rita"), "{}", comments[0]);
    assert_eq!(
        s.metric(r#"countersign_bot_resync_skipped_total{reason="denied"}"#)
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        s.metric(r#"countersign_bot_delivery_outcomes_total{event="issues",outcome="denied"}"#)
            .as_deref(),
        Some("1")
    );

    // The same labeling is not handled again: no second answer, nothing counted.
    let second = s.resync().await;
    assert!(
        second.skipped.is_empty() && second.recovered.is_empty(),
        "{second:?}"
    );
    assert_eq!(s.bot_comments(WIDGETS, 1).len(), 1);
    assert_eq!(
        s.metric(r#"countersign_bot_delivery_outcomes_total{event="issues",outcome="denied"}"#)
            .as_deref(),
        Some("1")
    );

    // Someone allowed labels it again (that delivery is lost too): now it runs, as alice's.
    {
        let mut w = s.github.world();
        w.unlabel_issue(WIDGETS, 1, LABEL, &s.alice);
        w.label_issue(WIDGETS, 1, LABEL, &s.alice);
    }
    let third = s.resync().await;
    assert_eq!(third.recovered.len(), 1, "{third:?}");
    let runs = s.runs(NS_A).await;
    assert_eq!(
        runs[0]
            .spec
            .task
            .requested_by
            .as_ref()
            .map(|u| u.login.as_str()),
        Some("alice")
    );
}

#[tokio::test]
async fn an_open_pull_request_without_a_delivery_gets_the_gate_its_delivery_would_have_made() {
    let s = Setup::start().await;
    let files = || vec![ChangedFile::modified("src/retry.rs", 12, 2)];
    let delivered = {
        let mut w = s.github.world();
        w.open_pull_request(WIDGETS, "Add retries", "retries", files(), &s.alice); // lost
        w.open_pull_request(WIDGETS, "Old idea", "old", files(), &s.alice);
        w.pulls
            .get_mut(&(WIDGETS.to_owned(), 2))
            .expect("pull request #2")
            .state = "closed".into();
        w.open_pull_request(GADGETS, "Add retries", "retries", files(), &s.alice)
    };
    s.deliver("pull_request", &delivered).await;
    let by_delivery = s.wait_for_gates(NS_B, 1).await;

    let pass = s.resync().await;

    assert_eq!(
        pass.recovered,
        [Recovered {
            kind: "ApprovalGate",
            namespace: NS_A.into(),
            name: "widgets-pr-1".into()
        }]
    );
    let gates = s.gates(NS_A).await;
    assert_eq!(
        gates.len(),
        1,
        "no gate for the closed pull request: {gates:?}"
    );
    let (gate, twin) = (&gates[0], &by_delivery[0]);
    assert_eq!(gate.name_any(), twin.name_any());
    assert_eq!(
        serde_json::to_value(&gate.spec).expect("spec"),
        serde_json::to_value(&twin.spec).expect("spec"),
        "the same spec: number, base, author, origin"
    );
    let head = s.github.world().pulls[&(WIDGETS.to_owned(), 1)]
        .head_sha
        .clone();
    assert_eq!(
        gate.annotations()
            .get(PUSHED_HEADS_ANNOTATION)
            .map(String::as_str),
        Some(head.as_str()),
        "the head recorded as `opened` records it"
    );
    assert_eq!(
        s.metric(r#"countersign_bot_resync_recovered_total{kind="ApprovalGate"}"#)
            .as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_second_pass_with_nothing_changed_costs_only_304s_and_changes_nothing() {
    let s = Setup::start().await;
    let delivered = {
        let mut w = s.github.world();
        w.open_issue(WIDGETS, "Add retries", "", &s.alice);
        w.label_issue(WIDGETS, 1, LABEL, &s.alice); // lost
        w.open_issue(WIDGETS, "Drop the cache", "", &s.alice);
        w.label_issue(WIDGETS, 2, LABEL, &s.rita); // lost, and refused
        w.open_pull_request(WIDGETS, "Tidy", "tidy", Vec::new(), &s.alice); // #3, lost
        w.open_issue(GADGETS, "Add retries", "", &s.alice);
        w.label_issue(GADGETS, 1, LABEL, &s.alice)
    };
    s.deliver("issues", &delivered).await;
    s.wait_for_runs(NS_B, 1).await;

    let first = s.resync().await;
    assert_eq!(first.recovered.len(), 2, "{first:?}");
    assert_eq!(first.skipped.len(), 1, "{first:?}");
    // The recovered run finishes; the label stays on the issue. That is not a lost delivery.
    let run = first
        .recovered
        .iter()
        .find(|r| r.kind == "AgentRun")
        .expect("a run");
    Api::<AgentRun>::namespaced(s.api.client(), NS_A)
        .patch_status(
            &run.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Succeeded"}})),
        )
        .await
        .expect("finish the run");
    let before = (
        names(&s.runs(NS_A).await),
        names(&s.gates(NS_A).await),
        names(&s.runs(NS_B).await),
        names(&s.gates(NS_B).await),
    );
    let calls_before = s.github.calls().len();

    let second = s.resync().await;

    assert!(
        second.recovered.is_empty() && second.skipped.is_empty() && second.failed.is_empty(),
        "{second:?}"
    );
    assert_eq!(second.projects, 2);
    assert_eq!(
        second.not_modified, second.listings,
        "every listing answered 304: {second:?}"
    );
    let calls = s.github.calls();
    let new = &calls[calls_before..];
    assert!(!new.is_empty());
    assert!(
        new.iter().all(|c| c.method == "GET" && c.status == 304),
        "only conditional reads answered 304: {new:#?}"
    );
    let after = (
        names(&s.runs(NS_A).await),
        names(&s.gates(NS_A).await),
        names(&s.runs(NS_B).await),
        names(&s.gates(NS_B).await),
    );
    assert_eq!(after, before, "nothing created, nothing touched");
    let not_modified = s
        .metric(r#"countersign_bot_resync_listings_total{listing="issues",answer="not_modified"}"#);
    assert_eq!(not_modified.as_deref(), Some("2"), "one per Project");
}

#[tokio::test]
async fn deliveries_accepted_before_a_crash_are_recovered_by_the_next_bot() {
    let s = Setup::start().await;
    let (labeled, opened) = {
        let mut w = s.github.world();
        w.open_issue(WIDGETS, "Add retries", "", &s.alice);
        let labeled = w.label_issue(WIDGETS, 1, LABEL, &s.alice);
        let opened = w.open_pull_request(WIDGETS, "Tidy", "tidy", Vec::new(), &s.alice);
        (labeled, opened)
    };
    // A bot accepts both deliveries (202: GitHub will not send them again) and stops before
    // any worker took them.
    let crashed = assemble_bot(&s.api, &s.github);
    let endpoint = crashed.router();
    deliver_to(&endpoint, "issues", &labeled).await;
    deliver_to(&endpoint, "pull_request", &opened).await;
    drop(endpoint);
    drop(crashed);
    assert!(s.runs(NS_A).await.is_empty() && s.gates(NS_A).await.is_empty());

    let pass = s.resync().await;

    let mut kinds: Vec<&str> = pass.recovered.iter().map(|r| r.kind).collect();
    kinds.sort_unstable();
    assert_eq!(kinds, ["AgentRun", "ApprovalGate"], "{pass:?}");
    assert_eq!(s.runs(NS_A).await.len(), 1);
    assert_eq!(s.gates(NS_A).await.len(), 1);
}
