//! Leader election on a real Lease (the real kube-apiserver when built, see
//! `countersign_testkit::cluster`; the fake for injected faults): replicas with different
//! identities campaign on one Lease; only the holder runs its work, a stopped or crashed holder
//! hands over to the standby, a holder that loses the Lease or cannot renew it stops at once.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_controller::leader::{self, Leadership, LeaseConfig};
use countersign_testkit::apiserver::FakeApiServer;
use countersign_testkit::cluster::TestCluster;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Upper bound of any single wait (a handover takes about one lease duration).
const WAIT: Duration = Duration::from_secs(20);
const LEASE: &str = "countersign-controller";

/// The apiserver of one test and the namespace its Lease lives in.
struct Kube {
    cluster: TestCluster,
    ns: String,
}

impl Kube {
    /// The backend `COUNTERSIGN_TEST_CONTROL_PLANE` chooses (real when built).
    async fn start() -> Kube {
        Kube::on(TestCluster::start().await.expect("test cluster")).await
    }

    /// The fake apiserver, for injected faults.
    async fn fake() -> Kube {
        Kube::on(TestCluster::fake().await.expect("fake apiserver")).await
    }

    async fn on(cluster: TestCluster) -> Kube {
        let ns = within("a namespace", cluster.create_namespace("lease"))
            .await
            .expect("namespace");
        Kube { cluster, ns }
    }

    fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    fn fake_server(&self) -> &FakeApiServer {
        self.cluster
            .as_fake()
            .expect("fault injection needs the fake apiserver")
    }

    fn lease_config(&self, identity: &str) -> LeaseConfig {
        lease_config(&self.ns, identity)
    }
}

fn lease_config(ns: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: LEASE.into(),
        namespace: ns.into(),
        identity: identity.into(),
        duration: Duration::from_secs(2),
        grace: Duration::from_secs(1),
    }
}

/// Who is working right now, and how often each replica started working.
#[derive(Default)]
struct Tracker {
    active: AtomicUsize,
    max_active: AtomicUsize,
    starts: Mutex<Vec<String>>,
    current: Mutex<Option<watch::Sender<usize>>>,
}

/// Held by a running work future; dropping the future (losing leadership) drops it.
struct Working(Arc<Tracker>);

impl Tracker {
    fn enter(self: &Arc<Self>, who: &str) -> Working {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        self.starts.lock().unwrap().push(who.to_owned());
        self.publish();
        Working(self.clone())
    }

    fn publish(&self) {
        if let Some(tx) = self.current.lock().unwrap().as_ref() {
            tx.send_replace(self.active.load(Ordering::SeqCst));
        }
    }

    fn active_watch(&self) -> watch::Receiver<usize> {
        let mut current = self.current.lock().unwrap();
        let tx = current.get_or_insert_with(|| watch::channel(0).0);
        tx.send_replace(self.active.load(Ordering::SeqCst));
        tx.subscribe()
    }

    fn starts_of(&self, who: &str) -> usize {
        self.starts
            .lock()
            .unwrap()
            .iter()
            .filter(|w| *w == who)
            .count()
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
        self.0.publish();
    }
}

/// One campaigning replica.
struct Replica {
    identity: String,
    leadership: watch::Receiver<Leadership>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

fn spawn_replica(kube: &Kube, identity: &str, tracker: &Arc<Tracker>) -> Replica {
    let (state, leadership) = leader::leadership_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let tracker = tracker.clone();
    let who = identity.to_owned();
    let work = move || {
        let working = tracker.enter(&who);
        async move {
            let _working = working;
            std::future::pending::<()>().await
        }
    };
    let shutdown = async {
        let _ = stopped.await;
    };
    let task = tokio::spawn(leader::run_when_leader(
        kube.lease_config(identity),
        kube.client(),
        state,
        work,
        shutdown,
    ));
    Replica {
        identity: identity.to_owned(),
        leadership,
        stop: Some(stop),
        task,
    }
}

impl Replica {
    async fn wait_for(&mut self, what: &str, f: impl Fn(&Leadership) -> bool) {
        let reached = matches!(
            timeout(WAIT, self.leadership.wait_for(|l| f(l))).await,
            Ok(Ok(_))
        );
        let state = self.leadership.borrow().clone();
        assert!(
            reached,
            "{} never became {what}; it is {state:?}",
            self.identity
        );
    }

    async fn shut_down(mut self) -> anyhow::Result<()> {
        self.stop.take().expect("not yet stopped").send(()).ok();
        timeout(WAIT, self.task)
            .await
            .expect("the replica stops in time")
            .expect("the replica does not panic")
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn lease(kube: &Kube) -> Lease {
    Api::<Lease>::namespaced(kube.client(), &kube.ns)
        .get(LEASE)
        .await
        .expect("the lease exists")
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref().and_then(|s| s.holder_identity.clone())
}

/// Waits (polling the API, bounded by [`WAIT`]) until the holder's renewals have moved the
/// Lease's renewTime forward `n` times, i.e. time passed during which a standby could have
/// taken over if the election were broken.
async fn wait_for_renewals(kube: &Kube, n: usize) {
    within("lease renewals", async {
        let mut seen = Vec::new();
        loop {
            let renew = lease(kube)
                .await
                .spec
                .and_then(|s| s.renew_time)
                .map(|t| t.0);
            if let Some(renew) = renew
                && seen.last() != Some(&renew)
            {
                seen.push(renew);
                if seen.len() > n {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

/// Starts two replicas and returns (leader, standby) once one of them leads.
async fn elect_two(kube: &Kube, tracker: &Arc<Tracker>) -> (Replica, Replica) {
    let a = spawn_replica(kube, "replica-a", tracker);
    let b = spawn_replica(kube, "replica-b", tracker);
    let mut active = tracker.active_watch();
    within("a leader", active.wait_for(|n| *n == 1))
        .await
        .expect("tracker alive");
    let first = tracker.starts.lock().unwrap()[0].clone();
    let (mut leader, mut standby) = if first == a.identity { (a, b) } else { (b, a) };
    leader
        .wait_for("leader", |l| *l == Leadership::Leader)
        .await;
    standby
        .wait_for("standby", |l| *l == Leadership::Standby)
        .await;
    assert_eq!(
        holder(&lease(kube).await).as_deref(),
        Some(leader.identity.as_str())
    );
    (leader, standby)
}

#[tokio::test]
async fn only_the_lease_holder_works_and_a_stopped_leader_hands_over() {
    let server = Kube::start().await;
    let tracker = Arc::new(Tracker::default());
    let (leader, mut standby) = elect_two(&server, &tracker).await;

    wait_for_renewals(&server, 2).await;
    assert_eq!(
        tracker.starts_of(&leader.identity),
        1,
        "the leader kept working"
    );
    assert_eq!(
        tracker.starts_of(&standby.identity),
        0,
        "the standby never worked"
    );
    assert_eq!(*standby.leadership.borrow(), Leadership::Standby);

    let old = leader.identity.clone();
    let mut old_state = leader.leadership.clone();
    leader.shut_down().await.expect("a clean shutdown");
    assert_eq!(*old_state.borrow_and_update(), Leadership::Stopped);

    standby
        .wait_for("leader", |l| *l == Leadership::Leader)
        .await;
    assert_eq!(tracker.starts_of(&standby.identity), 1);
    assert_eq!(
        tracker.starts_of(&old),
        1,
        "the stopped replica did not restart"
    );
    assert_eq!(
        tracker.max_active.load(Ordering::SeqCst),
        1,
        "two replicas never worked at once"
    );
    assert_eq!(
        holder(&lease(&server).await).as_deref(),
        Some(standby.identity.as_str())
    );

    // The last replica gives the Lease back on shutdown.
    standby.shut_down().await.expect("a clean shutdown");
    assert_eq!(tracker.active.load(Ordering::SeqCst), 0);
    assert_eq!(
        holder(&lease(&server).await),
        None,
        "the lease was released"
    );
}

#[tokio::test]
async fn a_crashed_leader_loses_the_lease_when_it_expires() {
    let server = Kube::start().await;
    let tracker = Arc::new(Tracker::default());
    let (leader, mut standby) = elect_two(&server, &tracker).await;
    let transitions = lease(&server)
        .await
        .spec
        .and_then(|s| s.lease_transitions)
        .unwrap_or(0);

    // A crash: the task vanishes without releasing anything.
    leader.task.abort();
    let _ = within("the aborted task", leader.task).await;
    assert_eq!(tracker.active.load(Ordering::SeqCst), 0);

    standby
        .wait_for("leader", |l| *l == Leadership::Leader)
        .await;
    let lease = lease(&server).await;
    assert_eq!(holder(&lease).as_deref(), Some(standby.identity.as_str()));
    assert!(
        lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0) > transitions,
        "the takeover counts as a transition"
    );
    assert_eq!(tracker.max_active.load(Ordering::SeqCst), 1);
    standby.shut_down().await.expect("a clean shutdown");
}

#[tokio::test]
async fn a_leader_whose_lease_is_taken_stops_working() {
    let server = Kube::start().await;
    let tracker = Arc::new(Tracker::default());
    let mut replica = spawn_replica(&server, "replica-a", &tracker);
    replica
        .wait_for("leader", |l| *l == Leadership::Leader)
        .await;
    let mut active = tracker.active_watch();

    // Someone else (another controller version, an operator with kubectl) takes the Lease.
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let patch = serde_json::json!({"spec": {
        "holderIdentity": "intruder",
        "renewTime": now,
        "acquireTime": now,
        "leaseDurationSeconds": 60,
    }});
    Api::<Lease>::namespaced(server.client(), &server.ns)
        .patch(LEASE, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch the lease");

    within("work to stop", active.wait_for(|n| *n == 0))
        .await
        .expect("tracker alive");
    replica
        .wait_for("standby", |l| *l == Leadership::Standby)
        .await;
    assert_eq!(tracker.starts_of("replica-a"), 1);
    // Checked right away: kube-lease-manager's failed renewal rewrote the intruder's
    // leaseDurationSeconds to ours, so the replica may legitimately win it back once it expires.
    assert_eq!(holder(&lease(&server).await).as_deref(), Some("intruder"));
    replica.shut_down().await.expect("a clean shutdown");
}

#[tokio::test]
async fn failing_renewals_stop_the_work_until_the_lease_is_confirmed_again() {
    let server = Kube::fake().await;
    let tracker = Arc::new(Tracker::default());
    let mut replica = spawn_replica(&server, "replica-a", &tracker);
    replica
        .wait_for("leader", |l| *l == Leadership::Leader)
        .await;
    let mut active = tracker.active_watch();

    server.fake_server().faults().set_error_codes(&[500]);
    server
        .fake_server()
        .faults()
        .set_error_rate_for(1.0, 7, &[], &["leases"]);
    replica
        .wait_for("failing", |l| matches!(l, Leadership::Failing { .. }))
        .await;
    within("work to stop", active.wait_for(|n| *n == 0))
        .await
        .expect("tracker alive");
    assert!(
        replica
            .leadership
            .borrow()
            .readiness()
            .is_err_and(|why| why.contains("leader election is failing")),
        "{:?}",
        replica.leadership.borrow()
    );

    server.fake_server().faults().reset();
    replica
        .wait_for("leader", |l| *l == Leadership::Leader)
        .await;
    within("work to restart", active.wait_for(|n| *n == 1))
        .await
        .expect("tracker alive");
    assert_eq!(
        tracker.starts_of("replica-a"),
        2,
        "one new term after recovery"
    );
    replica.shut_down().await.expect("a clean shutdown");
}

#[tokio::test]
async fn shutdown_survives_a_conflicting_release() {
    let server = Kube::fake().await;
    let tracker = Arc::new(Tracker::default());
    let mut replica = spawn_replica(&server, "replica-a", &tracker);
    replica
        .wait_for("leader", |l| *l == Leadership::Leader)
        .await;

    // kube-lease-manager 0.13 panics when the release PATCH answers 409; the process must
    // still stop cleanly (the Lease then simply expires).
    server
        .fake_server()
        .faults()
        .force_conflicts("leases", 1_000);
    replica.shut_down().await.expect("a clean shutdown");
    assert_eq!(tracker.active.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unreachable_api_server_is_reported_and_never_acts() {
    let server = FakeApiServer::start().await.expect("fake apiserver");
    let client = server.client();
    server.shutdown();
    let tracker = Arc::new(Tracker::default());
    let (state, mut leadership) = leader::leadership_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let work_tracker = tracker.clone();
    let task = tokio::spawn(leader::run_when_leader(
        lease_config("default", "replica-a"),
        client,
        state,
        move || {
            let working = work_tracker.enter("replica-a");
            async move {
                let _working = working;
                std::future::pending::<()>().await
            }
        },
        async {
            let _ = stopped.await;
        },
    ));
    within(
        "the failure to be reported",
        leadership.wait_for(|l| matches!(l, Leadership::Failing { .. })),
    )
    .await
    .expect("sender alive");
    stop.send(()).ok();
    within("shutdown", task)
        .await
        .expect("no panic")
        .expect("a clean shutdown");
    assert_eq!(tracker.starts_of("replica-a"), 0);
    assert_eq!(*leadership.borrow(), Leadership::Stopped);
}
