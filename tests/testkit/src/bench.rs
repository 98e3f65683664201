//! The controller at scale (`countersign-sandbox bench-controller`, `scripts/bench-controller`).
//!
//! Starts a Kubernetes API (the real kube-apiserver and etcd of the test suite, or the fake),
//! the fake GitHub with one repository per Project, and the real `countersign controller`
//! binary as a process of its own; creates `runs` AgentRuns, lets a stand-in kubelet finish
//! each agent pod as a successful attempt (it pushes the run's branch to the fake GitHub and
//! reports that commit, through `pods/status` as a kubelet would), and measures:
//!
//! - the time until every run has its pull request and every pull request's ApprovalGate has
//!   been evaluated (its check run created): the controller opens the pull requests and creates
//!   the gates itself, so `runs` runs make `runs` gates;
//! - the controller's own Kubernetes requests (its `countersign_controller_kube_requests_total`
//!   by verb and resource) until then, and the writes per run lifecycle;
//! - the steady state afterwards: requests per minute and reads per reconcile over a window
//!   that holds at least one full resync (`--resync-interval`);
//! - how long one full resync of every gate takes when nothing changed on GitHub, and how the
//!   fake GitHub answered its requests (`304` for a conditional request that matched);
//! - the controller's resident memory (`VmRSS`) and its peak (`VmHWM`).
//!
//! Nothing here asserts: it reports (see docs/benchmarks.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use countersign_crds::result::{AgentResult, RESULT_VERSION, ResultOutcome};
use countersign_crds::{AgentRun, ApprovalGate, RunPhase};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::TestCluster;
use crate::demo::processes::{self, Started};
use crate::demo::{DemoKubernetes, DemoOptions, script};
use crate::github::{FakeGitHub, TEST_APP_ID, TEST_APP_PRIVATE_KEY_PEM, User};
use crate::pods;

/// The namespace everything runs in.
const NS: &str = "bench";
/// The App's installation on `acme`, holding every repository.
const INSTALLATION: u64 = 77;
/// Pods the stand-in kubelet finishes at once.
const KUBELET_PARALLEL: usize = 64;
/// AgentRuns created at once.
const CREATE_PARALLEL: usize = 32;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The `countersign` binary to run as the controller.
    pub countersign: PathBuf,
    /// Directory for the kubeconfig, the App key and the controller's log.
    pub dir: PathBuf,
    /// Which Kubernetes.
    pub kubernetes: DemoKubernetes,
    /// AgentRuns (and so pull requests and ApprovalGates).
    pub runs: usize,
    /// Runs per Project (each Project has its own repository and Agent; at most 100, the
    /// concurrency limit of both).
    pub runs_per_project: usize,
    /// The controller's `--resync-interval`.
    pub resync: Duration,
    /// Length of the steady-state window (at least one resync).
    pub steady: Duration,
    /// Longest wait for convergence.
    pub timeout: Duration,
}

/// Requests by (verb, resource), from the controller's metrics.
type Requests = BTreeMap<(String, String), u64>;

/// One scrape of the controller's `/metrics`.
#[derive(Clone, Debug, Default)]
struct Scrape {
    requests: Requests,
    /// Reconciles started, by kind.
    reconciles: BTreeMap<String, u64>,
    /// Reconciles ended, by kind.
    ended: BTreeMap<String, u64>,
}

impl Scrape {
    async fn take(addr: SocketAddr) -> anyhow::Result<Scrape> {
        let text = processes::get_text(addr, "/metrics").await?;
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("countersign_controller_kube_requests_total{") {
                let (labels, value) = rest.split_once("} ").unwrap_or_default();
                let verb = label(labels, "verb");
                let resource = label(labels, "resource");
                let value: f64 = value.trim().parse().unwrap_or(0.0);
                scrape.requests.insert((verb, resource), value as u64);
            } else if let Some(rest) = line.strip_prefix("countersign_controller_reconciles_total{")
            {
                let (labels, value) = rest.split_once("} ").unwrap_or_default();
                let value: f64 = value.trim().parse().unwrap_or(0.0);
                scrape
                    .reconciles
                    .insert(label(labels, "kind"), value as u64);
            } else if let Some(rest) =
                line.strip_prefix("countersign_controller_reconcile_duration_seconds_count{")
            {
                // Counted when a reconcile ends.
                let (labels, value) = rest.split_once("} ").unwrap_or_default();
                let value: f64 = value.trim().parse().unwrap_or(0.0);
                scrape.ended.insert(label(labels, "kind"), value as u64);
            }
        }
        Ok(scrape)
    }

    fn since(&self, earlier: &Scrape) -> Scrape {
        Scrape {
            requests: self
                .requests
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.requests.get(k).copied().unwrap_or(0)))
                .filter(|(_, v)| *v > 0)
                .collect(),
            reconciles: self
                .reconciles
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v - earlier.reconciles.get(k).copied().unwrap_or(0),
                    )
                })
                .collect(),
            ended: self
                .ended
                .iter()
                .map(|(k, v)| (k.clone(), v - earlier.ended.get(k).copied().unwrap_or(0)))
                .collect(),
        }
    }

    fn count(&self, verbs: &[&str]) -> u64 {
        self.requests
            .iter()
            .filter(|((verb, _), _)| verbs.contains(&verb.as_str()))
            .map(|(_, v)| v)
            .sum()
    }

    fn started(&self, kind: &str) -> u64 {
        self.reconciles.get(kind).copied().unwrap_or(0)
    }

    fn ended(&self, kind: &str) -> u64 {
        self.ended.get(kind).copied().unwrap_or(0)
    }
}

const READS: &[&str] = &["get", "list"];
const WRITES: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

fn label(labels: &str, name: &str) -> String {
    labels
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
        .unwrap_or_default()
}

/// Resident and peak resident memory of a process, in bytes.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// What was measured.
#[derive(Debug)]
pub struct BenchReport {
    /// The Markdown report printed at the end.
    pub markdown: String,
    /// Whether every run and gate converged.
    pub converged: bool,
}

/// Runs the benchmark.
pub async fn run(options: &BenchOptions) -> anyhow::Result<BenchReport> {
    if options.runs_per_project == 0 || options.runs_per_project > 100 {
        bail!(
            "--runs-per-project must be 1..=100 (the concurrency limit of a Project and an Agent)"
        );
    }
    std::fs::create_dir_all(&options.dir)
        .with_context(|| format!("Cannot create {}", options.dir.display()))?;
    let started_at = Instant::now();
    let (cluster, backend) = match &options.kubernetes {
        DemoKubernetes::Real(binaries) => (
            TestCluster::dedicated_real(Some(binaries.clone()))
                .await
                .context("Cannot start the real Kubernetes control plane")?,
            "real kube-apiserver + etcd",
        ),
        DemoKubernetes::Fake => {
            let cluster = TestCluster::fake()
                .await
                .context("Cannot start the fake kube-apiserver")?;
            cluster
                .install_crds()
                .await
                .context("Cannot install the CRDs")?;
            (cluster, "the test kit's fake apiserver")
        }
    };
    cluster
        .create_named_namespace(NS, &[("pod-security.kubernetes.io/enforce", "restricted")])
        .await?;
    let kubeconfig = options.dir.join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml())
        .with_context(|| format!("Cannot write {}", kubeconfig.display()))?;
    let client = cluster.client();

    let projects = options.runs.div_ceil(options.runs_per_project);
    let github = Arc::new(
        FakeGitHub::start()
            .await
            .context("Cannot start the fake GitHub")?,
    );
    {
        let names: Vec<String> = (0..projects).map(|p| format!("p{p}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut w = github.world();
        w.install(INSTALLATION, "acme", &names);
        for name in &names {
            w.create_repository(&format!("acme/{name}"), &[("README.md", "# service\n")]);
        }
    }
    apply_fixtures(&client, projects).await?;
    eprintln!(
        "bench: {} on {backend} ready in {:.1?}; {projects} Projects, Agents and repositories",
        options.runs,
        started_at.elapsed()
    );

    let created = Instant::now();
    create_runs(&client, options).await?;
    let create_time = created.elapsed();
    eprintln!(
        "bench: {} AgentRuns created in {create_time:.1?}",
        options.runs
    );

    // Watch progress the way a user would (`kubectl get -w`), before the controller starts.
    let progress = Progress::default();
    let watches = progress.watch(client.clone());
    let finished_pods = Arc::new(AtomicUsize::new(0));
    let kubelet = tokio::spawn(kubelet(
        client.clone(),
        github.clone(),
        finished_pods.clone(),
    ));

    let key = options.dir.join("github-app.pem");
    std::fs::write(&key, TEST_APP_PRIVATE_KEY_PEM).context("Cannot write the App key")?;
    let demo = DemoOptions {
        countersign: options.countersign.clone(),
        dir: options.dir.clone(),
        step_timeout: Duration::from_secs(60),
        kubernetes: options.kubernetes.clone(),
    };
    let resync = format!("{}s", options.resync.as_secs().max(1));
    let start = Instant::now();
    let controller = processes::start(
        &demo,
        "controller",
        &kubeconfig,
        [
            "controller",
            "--listen",
            "127.0.0.1:0",
            "--namespace",
            NS,
            "--leader-elect=false",
            "--github-app-id",
            &TEST_APP_ID.to_string(),
            "--github-app-private-key-file",
            &key.display().to_string(),
            "--github-api-url",
            &github.url(),
            "--github-git-url",
            &github.url(),
            "--gateway-url",
            "http://127.0.0.1:9",
            "--gateway-namespace",
            NS,
            "--resync-interval",
            &resync,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect(),
    )
    .await?;
    let pid = controller.pid().context("the controller has no pid")?;
    let result = measure(
        options,
        &controller,
        pid,
        &progress,
        &github,
        start,
        &finished_pods,
    )
    .await;
    kubelet.abort();
    watches.abort();
    let mut report = result?;
    report.markdown = format!(
        "{}\nKubernetes: {backend}; {projects} Projects/Agents/repositories; runs created in {create_time:.1?} \
         (before the controller started)\n",
        report.markdown
    );
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    options: &BenchOptions,
    controller: &Started,
    pid: u32,
    progress: &Progress,
    github: &FakeGitHub,
    start: Instant,
    finished_pods: &AtomicUsize,
) -> anyhow::Result<BenchReport> {
    let n = options.runs;
    let mut converged = false;
    let mut last_print = Instant::now();
    while start.elapsed() < options.timeout {
        let (opened, checked) = progress.counts();
        if last_print.elapsed() >= Duration::from_secs(5) {
            let (rss, _) = memory(pid);
            eprintln!(
                "bench: {:>6.1?} pods finished {:>6} runs with a pull request {opened:>6}/{n} gates evaluated {checked:>6}/{n} controller RSS {}",
                start.elapsed(),
                finished_pods.load(Ordering::Relaxed),
                mib(rss)
            );
            last_print = Instant::now();
        }
        if opened >= n && checked >= n {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let converge_time = start.elapsed();
    let at_converge = Scrape::take(controller.addr).await?;
    let (rss_converged, hwm_converged) = memory(pid);
    if !converged {
        let (opened, checked) = progress.counts();
        return Ok(BenchReport {
            markdown: format!(
                "NOT CONVERGED within {:?}: {opened}/{n} runs with a pull request, {checked}/{n} gates evaluated; \
                 controller RSS {}, peak {}\n",
                options.timeout,
                mib(rss_converged),
                mib(hwm_converged)
            ),
            converged,
        });
    }
    eprintln!(
        "bench: converged in {converge_time:.1?}; measuring the steady state for {:?}",
        options.steady
    );

    // The steady state: let the last status writes settle, then a window with a full resync.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let window_start = Scrape::take(controller.addr).await?;
    let window_began = Instant::now();
    let mut resync = ResyncWatch::default();
    while window_began.elapsed() < options.steady {
        let now = Scrape::take(controller.addr).await?;
        resync.observe(
            now.started("ApprovalGate"),
            now.ended("ApprovalGate"),
            n as u64,
            github.call_count(),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = window_began.elapsed();
    let window_end = Scrape::take(controller.addr).await?;
    let (rss_end, hwm_end) = memory(pid);
    let steady = window_end.since(&window_start);

    let calls = github.calls();
    let mut report = String::new();
    let minutes = window.as_secs_f64() / 60.0;
    let writes = at_converge.count(WRITES);
    let reads = at_converge.count(READS);
    report.push_str(&format!(
        "| measure | value |\n|---|---|\n\
         | runs (= pull requests = gates) | {n} |\n\
         | time to converge (controller start → every run has its pull request and every gate its check run) | {:.1} s |\n\
         | controller requests until converged: writes / reads (get+list) / watches | {writes} / {reads} / {} |\n\
         | writes per run lifecycle (run + its pod, Secret, NetworkPolicy, gate, Events) | {:.2} |\n\
         | steady state: requests per minute (all verbs) | {:.0} |\n\
         | steady state: reads per reconcile | {:.3} ({} reads, {} reconciles in {:.0} s) |\n\
         | full resync of {n} gates with nothing changed on GitHub | {} |\n\
         | controller RSS at convergence / end; peak (VmHWM) | {} / {}; {} |\n",
        converge_time.as_secs_f64(),
        at_converge.count(&["watch"]),
        writes as f64 / n as f64,
        steady.count(&["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection", "other"]) as f64 / minutes,
        steady.count(READS) as f64 / steady.reconciles.values().sum::<u64>().max(1) as f64,
        steady.count(READS),
        steady.reconciles.values().sum::<u64>(),
        window.as_secs_f64(),
        resync.describe(&calls),
        mib(rss_converged),
        mib(rss_end),
        mib(hwm_end.max(hwm_converged)),
    ));
    report.push_str("\nController requests until converged, by verb and resource:\n\n| verb | resource | requests | per run |\n|---|---|---|---|\n");
    for ((verb, resource), count) in &at_converge.requests {
        report.push_str(&format!(
            "| {verb} | {resource} | {count} | {:.2} |\n",
            *count as f64 / n as f64
        ));
    }
    report.push_str(&format!(
        "\nSteady state ({:.0} s window), by verb and resource:\n\n| verb | resource | requests |\n|---|---|---|\n",
        window.as_secs_f64()
    ));
    for ((verb, resource), count) in &steady.requests {
        report.push_str(&format!("| {verb} | {resource} | {count} |\n"));
    }
    report.push_str(&progress.status_report());
    report.push_str(&format!(
        "\nReconciles in the window: {}\n",
        steady
            .reconciles
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(BenchReport {
        markdown: report,
        converged,
    })
}

/// Finds the full gate resync in the steady-state window: the first burst of gate reconciles
/// after a quiet moment, from the poll that saw the first one start to the poll that saw as
/// many end as there are gates.
#[derive(Debug, Default)]
struct ResyncWatch {
    last_started: Option<u64>,
    /// GitHub calls at the previous poll.
    last_calls: usize,
    /// When it began, reconciles ended before it, GitHub calls before it.
    burst: Option<(Instant, u64, usize)>,
    done: Option<(Duration, usize, usize)>,
}

impl ResyncWatch {
    fn observe(&mut self, started: u64, ended: u64, gates: u64, github_calls: usize) {
        if self.done.is_some() {
            return;
        }
        let previous = self.last_started.replace(started);
        let calls_before = std::mem::replace(&mut self.last_calls, github_calls);
        match (self.burst, previous) {
            (None, Some(previous)) if started > previous => {
                // It began after the previous poll, when none of its reconciles had ended.
                self.burst = Some((Instant::now(), ended.min(previous), calls_before));
            }
            (Some((began, ended_before, calls_from)), _) if ended - ended_before >= gates => {
                self.done = Some((began.elapsed(), calls_from, github_calls));
            }
            _ => {}
        }
    }

    fn describe(&self, calls: &[crate::github::Call]) -> String {
        match self.done {
            None => "not seen in the window (make the window longer than --resync-interval)".into(),
            Some((took, from, to)) => {
                let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
                for call in calls.get(from..to).unwrap_or_default() {
                    *statuses.entry(call.status).or_default() += 1;
                }
                let statuses = statuses
                    .iter()
                    .map(|(s, c)| format!("{c}×{s}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "{:.1} s (±0.1 s); GitHub requests {} ({statuses})",
                    took.as_secs_f64(),
                    to - from
                )
            }
        }
    }
}

/// Runs with their pull request and gates with their check run, from watches.
#[derive(Clone, Default)]
struct Progress {
    opened: Arc<std::sync::Mutex<HashSet<String>>>,
    checked: Arc<std::sync::Mutex<HashSet<String>>>,
    /// Every version of each run's status the watch saw, in order.
    statuses: Arc<std::sync::Mutex<HashMap<String, Vec<String>>>>,
}

/// The first run, whose status versions the report lists.
const FIRST_RUN: &str = "p0-run-0";

/// A status version in one line, timestamps left out.
fn status_line(run: &AgentRun) -> String {
    let Some(status) = run.status.as_ref() else {
        return "(no status)".into();
    };
    let attempts: Vec<String> = status
        .attempts
        .iter()
        .map(|a| {
            format!(
                "#{} {:?} revoked {:?}",
                a.number, a.outcome, a.revoked_tokens
            )
        })
        .collect();
    format!(
        "{:?}: {} [{}] pr={:?} gate={:?} conditions={:?}",
        status.phase,
        status.message.clone().unwrap_or_default(),
        attempts.join("; "),
        status.pull_request.as_ref().map(|p| p.number),
        status.gate_ref.as_ref().map(|g| g.name.clone()),
        status
            .conditions
            .iter()
            .map(|c| format!("{}={}", c.type_, c.status))
            .collect::<Vec<_>>()
    )
}

impl Progress {
    /// How many status versions the runs went through (a watch may merge two quick writes
    /// into one event, so this is a lower bound), and those of the first run and of the run
    /// with the most.
    fn status_report(&self) -> String {
        let Ok(statuses) = self.statuses.lock() else {
            return String::new();
        };
        let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
        for versions in statuses.values() {
            // The first version is the run as created, without a status.
            *histogram
                .entry(versions.len().saturating_sub(1))
                .or_default() += 1;
        }
        let list = |name: &str| {
            statuses
                .get(name)
                .map(|v| v.iter().map(|l| format!("1. {l}\n")).collect::<String>())
                .unwrap_or_default()
        };
        let most = statuses
            .iter()
            .max_by_key(|(name, v)| (v.len(), std::cmp::Reverse((*name).clone())))
            .map(|(name, _)| name.clone())
            .unwrap_or_default();
        format!(
            "\nStatus versions per run as a watch saw them (versions: runs): {}\n\n\
             {FIRST_RUN}:\n\n{}\n{most} (the most):\n\n{}\n",
            histogram
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", "),
            list(FIRST_RUN),
            list(&most)
        )
    }

    fn counts(&self) -> (usize, usize) {
        (
            self.opened.lock().map(|s| s.len()).unwrap_or(0),
            self.checked.lock().map(|s| s.len()).unwrap_or(0),
        )
    }

    fn watch(&self, client: Client) -> tokio::task::JoinHandle<()> {
        let runs = Api::<AgentRun>::namespaced(client.clone(), NS);
        let gates = Api::<ApprovalGate>::namespaced(client, NS);
        let (opened, checked) = (self.opened.clone(), self.checked.clone());
        let statuses = self.statuses.clone();
        tokio::spawn(async move {
            let runs = watcher(runs, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .for_each(|run| {
                    if let Ok(run) = &run
                        && let Ok(mut statuses) = statuses.lock()
                    {
                        let line = status_line(run);
                        let versions = statuses.entry(run.name_any()).or_default();
                        if versions.last() != Some(&line) {
                            versions.push(line);
                        }
                    }
                    if let Ok(run) = run
                        && run.status.as_ref().is_some_and(|s| {
                            s.phase == RunPhase::PullRequestOpen && s.pull_request.is_some()
                        })
                        && let Ok(mut opened) = opened.lock()
                    {
                        opened.insert(run.name_any());
                    }
                    async {}
                });
            let gates = watcher(gates, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .for_each(|gate| {
                    if let Ok(gate) = gate
                        && gate
                            .status
                            .as_ref()
                            .is_some_and(|s| s.check_run_id.is_some())
                        && let Ok(mut checked) = checked.lock()
                    {
                        checked.insert(gate.name_any());
                    }
                    async {}
                });
            futures::join!(runs, gates);
        })
    }
}

/// The default RiskPolicy, the model key, and per Project its repository and Agent.
async fn apply_fixtures(client: &Client, projects: usize) -> anyhow::Result<()> {
    let mut policy: Value = serde_yaml::from_str(script::DEFAULT_POLICY)
        .context("The default RiskPolicy does not parse")?;
    policy["metadata"]["namespace"] = json!(NS);
    let mut objects = vec![
        (policy, "riskpolicies"),
        (
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "model", "namespace": NS},
                "stringData": {"api-key": "sk-bench"}
            }),
            "secrets",
        ),
    ];
    for p in 0..projects {
        objects.push((
            json!({
                "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
                "metadata": {"name": format!("p{p}"), "namespace": NS},
                "spec": {
                    "repository": {"owner": "acme", "name": format!("p{p}")},
                    "installation": {"id": INSTALLATION},
                    "limits": {"maxConcurrentRuns": 100, "maxRunsPerDay": 10000},
                    "riskPolicyRef": {"name": "default"}
                }
            }),
            "projects",
        ));
        objects.push((
            json!({
                "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
                "metadata": {"name": format!("a{p}"), "namespace": NS},
                "spec": {
                    "role": "backend",
                    "maxConcurrentRuns": 100,
                    "providers": [{
                        "name": "model", "kind": "openai", "model": "bench-model",
                        "baseUrl": "http://127.0.0.1:9/v1",
                        "apiKeySecretRef": {"name": "model", "key": "api-key"}
                    }],
                    "limits": {"timeout": "30m"}
                }
            }),
            "agents",
        ));
    }
    for (object, plural) in objects {
        create(client, object, plural).await?;
    }
    Ok(())
}

async fn create(client: &Client, object: Value, plural: &str) -> anyhow::Result<()> {
    let kind = object["kind"].as_str().unwrap_or_default().to_owned();
    let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let resource = kube::api::ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.clone(),
        kind: kind.clone(),
        plural: plural.to_owned(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &resource);
    let object: DynamicObject = serde_json::from_value(object).context("a bench object")?;
    let mut delay = Duration::from_millis(50);
    loop {
        match api.create(&PostParams::default(), &object).await {
            Ok(_) => return Ok(()),
            // The apiserver sheds load with 429s and the odd timeout: back off and retry.
            Err(kube::Error::Api(status)) if status.code == 429 || status.code >= 500 => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("Cannot create {kind} {}", object.name_any()));
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// `runs` AgentRuns, `runs_per_project` per Project and its Agent.
async fn create_runs(client: &Client, options: &BenchOptions) -> anyhow::Result<()> {
    futures::stream::iter(0..options.runs)
        .map(|i| {
            let p = i / options.runs_per_project;
            let run = json!({
                "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
                "metadata": {"name": run_name(p, i), "namespace": NS},
                "spec": {
                    "projectRef": {"name": format!("p{p}")},
                    "agentRef": {"name": format!("a{p}")},
                    "task": {"title": format!("Task {i}")}
                }
            });
            create(client, run, "agentruns")
        })
        .buffer_unordered(CREATE_PARALLEL)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn run_name(project: usize, i: usize) -> String {
    format!("p{project}-run-{i}")
}

/// The repository of a run (`p3-run-317` → `acme/p3`).
fn repository_of(run: &str) -> String {
    format!("acme/{}", run.split('-').next().unwrap_or_default())
}

/// A stand-in kubelet: each new agent pod pushes its run's branch (one commit) to the fake
/// GitHub, then goes Running and terminates successfully with the result the agent's push
/// step writes, through `pods/status`.
async fn kubelet(client: Client, github: Arc<FakeGitHub>, finished: Arc<AtomicUsize>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut seen = HashSet::new();
    let parallel = Arc::new(tokio::sync::Semaphore::new(KUBELET_PARALLEL));
    let mut pushed: HashMap<String, (String, String)> = HashMap::new();
    while let Some(event) = events.next().await {
        let Ok(pod) = event else { continue };
        let name = pod.name_any();
        if pod.metadata.deletion_timestamp.is_some() || !seen.insert(name.clone()) {
            continue;
        }
        let run = pod
            .labels()
            .get("countersign.dev/run")
            .cloned()
            .unwrap_or_default();
        let provider = pod
            .labels()
            .get("countersign.dev/provider")
            .cloned()
            .unwrap_or_default();
        let (branch, commit) = pushed
            .entry(run.clone())
            .or_insert_with(|| {
                let branch = format!("countersign/{run}");
                let sha = github.world().commit_files(
                    &repository_of(&run),
                    &branch,
                    &[(&format!("src/{run}.rs"), Some("// the agent's change\n"))],
                    &format!("Change for {run}"),
                    &User::test_app_bot(),
                );
                (branch, sha)
            })
            .clone();
        let message = AgentResult {
            version: RESULT_VERSION,
            outcome: ResultOutcome::Succeeded,
            provider: Some(provider),
            branch: Some(branch),
            commit: Some(commit),
            files_changed: 1,
            summary: Some(format!("Change for {run}")),
            reason: None,
            report: None,
            verification: None,
            lines_added: 1,
            lines_removed: 0,
            usage: countersign_crds::agent_run::Usage {
                input_tokens: 1000,
                output_tokens: 500,
                cost: countersign_crds::Usd { cents: 1 },
            },
        }
        .to_message();
        let (client, finished, parallel) = (client.clone(), finished.clone(), parallel.clone());
        tokio::spawn(async move {
            let Ok(_permit) = parallel.acquire_owned().await else {
                return;
            };
            if retry(|| pods::set_running(client.clone(), NS, &name)).await
                && retry(|| pods::finish(client.clone(), NS, &name, 0, &message)).await
            {
                finished.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// Retries a status write until it succeeds (true) or the pod is gone (false).
async fn retry<F, Fut>(write: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut delay = Duration::from_millis(50);
    for _ in 0..40 {
        match write().await {
            Ok(()) => return true,
            Err(err)
                if err.chain().any(|e| {
                    matches!(e.downcast_ref::<kube::Error>(), Some(kube::Error::Api(s)) if s.code == 404)
                }) =>
            {
                return false;
            }
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_resync_is_the_first_burst_that_ends_on_every_gate() {
        let mut watch = ResyncWatch::default();
        watch.observe(100, 100, 10, 0);
        watch.observe(100, 100, 10, 0);
        watch.observe(110, 103, 10, 5);
        assert!(watch.done.is_none());
        watch.observe(110, 109, 10, 9);
        assert!(watch.done.is_none(), "9 of 10 gates ended");
        watch.observe(110, 110, 10, 12);
        let (_, from, to) = watch.done.expect("every gate's reconcile ended");
        assert_eq!(
            (from, to),
            (0, 12),
            "the calls since the poll before it began"
        );
    }

    #[test]
    fn metric_lines_are_read_by_their_labels() {
        assert_eq!(label(r#"verb="list",resource="pods""#, "resource"), "pods");
        assert_eq!(label(r#"verb="list",resource="pods""#, "verb"), "list");
        assert_eq!(repository_of("p12-run-1200"), "acme/p12");
    }
}
