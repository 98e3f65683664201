//! `countersign controller`'s process wiring against the real kube-apiserver when it is built
//! (the fake otherwise; see `countersign_testkit::cluster`): configuration from flags and a
//! kubeconfig file, the HTTP server on an ephemeral port, leader-gated controllers that
//! reconcile, and a clean shutdown that releases the Lease.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use countersign_controller::config::ControllerArgs;
use countersign_controller::leader::Leadership;
use countersign_controller::process::{Process, serve};
use countersign_crds::AgentRun;
use countersign_testkit::cluster::TestCluster;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound of any single wait (a handover takes about one lease duration).
const WAIT: Duration = Duration::from_secs(20);
const LEASE: &str = "countersign-controller";

/// Later flags override earlier ones, so a test can adjust [`Cluster::args`]'s defaults.
#[derive(Parser)]
#[command(args_override_self = true)]
struct Cli {
    #[command(flatten)]
    args: ControllerArgs,
}

/// A cluster with our CRDs, a namespace for this test and a kubeconfig file pointing at it.
struct Cluster {
    server: TestCluster,
    ns: String,
    kubeconfig: tempfile::NamedTempFile,
}

async fn cluster() -> Cluster {
    let server = within("a cluster", TestCluster::start())
        .await
        .expect("test cluster");
    within("CRDs", server.install_crds()).await.expect("CRDs");
    let ns = within("a namespace", server.create_namespace("serve"))
        .await
        .expect("namespace");
    let kubeconfig = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(kubeconfig.path(), server.kubeconfig_yaml()).expect("write kubeconfig");
    Cluster {
        server,
        ns,
        kubeconfig,
    }
}

impl Cluster {
    /// Flags for a replica called `identity` on an ephemeral port, with short lease timing.
    fn args(&self, identity: &str, extra: &[&str]) -> ControllerArgs {
        let kubeconfig = self
            .kubeconfig
            .path()
            .to_str()
            .expect("utf-8 path")
            .to_owned();
        let mut argv = vec![
            "countersign-controller".to_owned(),
            "--kubeconfig".into(),
            kubeconfig,
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--namespace".into(),
            self.ns.clone(),
            "--lease-namespace".into(),
            self.ns.clone(),
            "--lease-identity".into(),
            identity.into(),
            "--lease-duration".into(),
            "2s".into(),
            "--lease-grace".into(),
            "1s".into(),
        ];
        argv.extend(extra.iter().map(|s| s.to_string()));
        Cli::try_parse_from(argv).expect("valid flags").args
    }

    async fn lease_holder(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.server.client(), &self.ns)
            .get(LEASE)
            .await
            .expect("the lease exists")
            .spec
            .and_then(|s| s.holder_identity)
    }
}

/// A running `Process`.
struct Running {
    addr: SocketAddr,
    leadership: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(args: ControllerArgs) -> Running {
    let process = within("bind", Process::bind(args))
        .await
        .expect("process binds");
    let addr = process.local_addr();
    assert_ne!(addr.port(), 0, "the bound port is known");
    let leadership = process.leadership();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(process.run(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        leadership,
        stop: Some(stop),
        task,
    }
}

impl Running {
    async fn wait_for(&mut self, what: &str, f: impl Fn(&Leadership) -> bool) {
        let reached = matches!(
            timeout(WAIT, self.leadership.wait_for(|l| f(l))).await,
            Ok(Ok(_))
        );
        assert!(reached, "never {what}: {:?}", *self.leadership.borrow());
    }

    async fn shut_down(mut self) -> anyhow::Result<()> {
        self.stop.take().expect("running").send(()).ok();
        within("shutdown", self.task).await.expect("no panic")
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A plain HTTP/1.1 GET; returns the status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    within(path, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("receive");
        let text = String::from_utf8(raw).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("a complete response");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        (status, body.to_owned())
    })
    .await
}

/// Proves the controllers are running: an AgentRun whose Project does not exist gets a
/// status saying so (the run reconciler watched, read and wrote it). Watched, not polled.
async fn wait_until_reconciled(cluster: &Cluster, name: &str) {
    let runs: Api<AgentRun> = Api::namespaced(cluster.server.client(), &cluster.ns);
    let run: AgentRun = serde_json::from_value(serde_json::json!({
        "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"projectRef": {"name": "absent"}, "agentRef": {"name": "absent"},
                 "task": {"title": "prove the controllers run"}}
    }))
    .expect("an AgentRun");
    within("create the run", runs.create(&PostParams::default(), &run))
        .await
        .expect("create the run");
    let reconciled = kube::runtime::wait::await_condition(runs, name, |run: Option<&AgentRun>| {
        run.and_then(|r| r.status.as_ref())
            .is_some_and(|s| s.observed_generation.is_some())
    });
    within("the run reconciled", reconciled)
        .await
        .expect("watch the run");
}

#[tokio::test]
async fn serve_leads_runs_the_controllers_and_stops_cleanly() {
    let cluster = cluster().await;
    let mut running = start(cluster.args("replica-a", &[])).await;

    let (status, body) = http_get(running.addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));

    running
        .wait_for("leader", |l| *l == Leadership::Leader)
        .await;
    wait_until_reconciled(&cluster, "led").await;
    assert_eq!(cluster.lease_holder().await.as_deref(), Some("replica-a"));
    let (status, body) = http_get(running.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("leader"), "{body}");
    let (status, body) = http_get(running.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(body.contains("countersign_controller_leader 1\n"), "{body}");

    let addr = running.addr;
    let mut leadership = running.leadership.clone();
    running.shut_down().await.expect("a clean shutdown");
    assert_eq!(*leadership.borrow_and_update(), Leadership::Stopped);
    assert_eq!(cluster.lease_holder().await, None, "the lease was released");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the HTTP server stopped"
    );
}

#[tokio::test]
async fn two_processes_share_one_lease_and_the_standby_takes_over() {
    let cluster = cluster().await;
    let mut a = start(cluster.args("replica-a", &[])).await;
    a.wait_for("leader", |l| *l == Leadership::Leader).await;
    let mut b = start(cluster.args("replica-b", &[])).await;
    b.wait_for("standby", |l| *l == Leadership::Standby).await;

    // Both are ready; only the holder reports itself as leader.
    for (running, gauge) in [(&a, 1), (&b, 0)] {
        let (status, body) = http_get(running.addr, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        let (_, metrics) = http_get(running.addr, "/metrics").await;
        assert!(
            metrics.contains(&format!("countersign_controller_leader {gauge}\n")),
            "{metrics}"
        );
    }
    assert_eq!(*a.leadership.borrow(), Leadership::Leader);
    assert_eq!(cluster.lease_holder().await.as_deref(), Some("replica-a"));

    a.shut_down().await.expect("a clean shutdown");
    b.wait_for("leader", |l| *l == Leadership::Leader).await;
    assert_eq!(cluster.lease_holder().await.as_deref(), Some("replica-b"));
    let (_, metrics) = http_get(b.addr, "/metrics").await;
    assert!(
        metrics.contains("countersign_controller_leader 1\n"),
        "{metrics}"
    );
    b.shut_down().await.expect("a clean shutdown");
}

#[tokio::test]
async fn without_leader_election_the_controllers_run_unconditionally() {
    let cluster = cluster().await;
    let mut running = start(cluster.args("replica-a", &["--leader-elect=false"])).await;
    running
        .wait_for("unelected", |l| *l == Leadership::Unelected)
        .await;
    wait_until_reconciled(&cluster, "unelected").await;
    let (status, body) = http_get(running.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let lease = Api::<Lease>::namespaced(cluster.server.client(), &cluster.ns)
        .get_opt(LEASE)
        .await
        .expect("get lease");
    assert!(lease.is_none(), "no lease without election");
    running.shut_down().await.expect("a clean shutdown");
}

#[tokio::test]
async fn invalid_configuration_is_rejected_before_serving() {
    let cluster = cluster().await;
    let cases: [(&[&str], &str); 3] = [
        (
            &["--lease-duration", "5s", "--lease-grace", "5s"],
            "--lease-grace (5s) must be shorter than --lease-duration (5s)",
        ),
        (
            &["--retry-backoff-base", "10m", "--retry-backoff-max", "1m"],
            "--retry-backoff-base (10m) must not be longer than --retry-backoff-max (1m)",
        ),
        (
            &["--kubeconfig", "/nonexistent/kubeconfig"],
            "Cannot read kubeconfig /nonexistent/kubeconfig",
        ),
    ];
    for (flags, message) in cases {
        let args = cluster.args("replica-a", flags);
        let error = within("serve to fail", serve(args, std::future::pending()))
            .await
            .expect_err("invalid configuration");
        let chain = format!("{error:#}");
        assert!(chain.contains(message), "{flags:?}: {chain}");
    }
}
