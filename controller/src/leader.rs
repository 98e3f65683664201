//! Leader election on a coordination.k8s.io/v1 Lease (through `kube-lease-manager`), and the
//! gate that runs the controllers only while this process holds it.
//!
//! Every replica campaigns; the holder runs the work future, the others wait. When the holder
//! learns it no longer holds the Lease, or cannot tell because the API server fails, the work
//! future is dropped at once and the process keeps campaigning. On shutdown the holder stops
//! the work first and then releases the Lease so a standby can take over without waiting for it
//! to expire. The current state is published on a `watch` channel for `/readyz` and tests.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use anyhow::anyhow;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;

/// First wait after the Lease could not be read or renewed; doubles up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_millis(250);
/// Longest wait between two attempts to reach the Lease after failures.
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// Field managers of the Lease are this prefix plus the replica's identity.
pub const FIELD_MANAGER_PREFIX: &str = "countersign-lease-";

/// Which Lease to campaign on, as whom, and its timing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's holder identity; unique among replicas.
    pub identity: String,
    /// Validity of the Lease after each renewal (whole seconds).
    pub duration: Duration,
    /// How long before expiry the holder renews (whole seconds, less than `duration`).
    pub grace: Duration,
}

/// What this process is doing about leadership, as `/readyz` and tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// Nothing has been heard from the API server about the Lease yet.
    Starting,
    /// This process holds the Lease and runs the controllers.
    Leader,
    /// Another process holds (or is about to take) the Lease; this one waits to take over.
    Standby,
    /// Leader election is turned off: this process runs the controllers unconditionally.
    Unelected,
    /// The Lease could not be read or renewed; the controllers are stopped until it can.
    Failing {
        /// The last error, for `/readyz` and logs.
        error: String,
    },
    /// Shut down: the controllers have stopped (and the Lease was released if it was held).
    Stopped,
}

impl Leadership {
    /// Whether this process is running the controllers.
    pub fn is_acting(&self) -> bool {
        matches!(self, Self::Leader | Self::Unelected)
    }

    /// `Ok` when the process serves as it should (acting, or a healthy standby); otherwise why not.
    pub fn readiness(&self) -> Result<&'static str, String> {
        match self {
            Self::Leader => Ok("leader: running the controllers"),
            Self::Unelected => Ok("leader election off: running the controllers"),
            Self::Standby => Ok("standby: another replica holds the lease"),
            Self::Starting => Err("leader election has not reached the API server yet".into()),
            Self::Failing { error } => Err(format!("leader election is failing: {error}")),
            Self::Stopped => Err("shutting down".into()),
        }
    }
}

/// A channel for [`Leadership`], starting at [`Leadership::Starting`].
pub fn leadership_channel() -> (watch::Sender<Leadership>, watch::Receiver<Leadership>) {
    watch::channel(Leadership::Starting)
}

/// Runs `work()` while this process holds the Lease described by `lease`, until `shutdown`
/// completes. A new `work()` future is started for every term of leadership and dropped as
/// soon as the term ends. Errors talking to the API server end the term too (the Lease may
/// have expired meanwhile), and campaigning resumes after a backoff.
///
/// Returns `Ok` after `shutdown`, and `Err` only when `work()` finishes by itself while this
/// process leads (the Lease is released first, so a standby takes over).
pub async fn run_when_leader<W, F>(
    lease: LeaseConfig,
    client: kube::Client,
    state: watch::Sender<Leadership>,
    mut work: W,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    let mut shutdown = pin!(shutdown);
    let mut manager: Option<LeaseManager> = None;
    let mut working: Option<Pin<Box<F>>> = None;
    let mut retry = RETRY_MIN;
    loop {
        let Some(current) = manager.as_ref() else {
            let built = tokio::select! {
                biased;
                () = &mut shutdown => None,
                built = build_manager(&client, &lease) => Some(built),
            };
            match built {
                None => return stopped(&state, None, &lease).await,
                Some(Ok(built)) => {
                    state.send_replace(Leadership::Standby);
                    manager = Some(built);
                }
                Some(Err(error)) => {
                    if !fail_and_wait(&state, &lease, &error, &mut retry, &mut shutdown).await {
                        return stopped(&state, None, &lease).await;
                    }
                }
            }
            continue;
        };
        tokio::select! {
            biased;
            () = &mut shutdown => {
                // Stop acting before giving the Lease away.
                let held = working.take().is_some();
                return stopped(&state, manager.take().filter(|_| held), &lease).await;
            }
            changed = current.changed() => match changed {
                Ok(true) => {
                    tracing::info!(lease = %lease.name, identity = %lease.identity, "acquired the lease; starting the controllers");
                    retry = RETRY_MIN;
                    working = Some(Box::pin(work()));
                    state.send_replace(Leadership::Leader);
                }
                Ok(false) => {
                    tracing::warn!(lease = %lease.name, identity = %lease.identity, "lost the lease; controllers stopped");
                    retry = RETRY_MIN;
                    working = None;
                    state.send_replace(Leadership::Standby);
                }
                Err(error) => {
                    if working.take().is_some() {
                        tracing::warn!(lease = %lease.name, "cannot renew the lease; controllers stopped until it is confirmed again");
                    }
                    // A fresh manager re-reads the Lease instead of trusting what this one
                    // believed (its view of who holds it may be stale).
                    manager = None;
                    if !fail_and_wait(&state, &lease, &error, &mut retry, &mut shutdown).await {
                        return stopped(&state, None, &lease).await;
                    }
                }
            },
            () = poll_work(&mut working), if working.is_some() => {
                tracing::error!(lease = %lease.name, "the controllers stopped on their own; releasing the lease");
                if let Some(held) = manager.take() {
                    release(held, &lease).await;
                }
                state.send_replace(Leadership::Stopped);
                return Err(anyhow!("the controllers stopped unexpectedly while this process was leader"));
            }
        }
    }
}

/// Runs `work()` without leader election until `shutdown` completes, for single-replica
/// installs and local runs. `Err` when `work()` finishes by itself.
pub async fn run_unelected<W, F>(
    state: watch::Sender<Leadership>,
    mut work: W,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    W: FnMut() -> F,
    F: Future<Output = ()>,
{
    state.send_replace(Leadership::Unelected);
    let result = tokio::select! {
        () = shutdown => Ok(()),
        () = work() => Err(anyhow!("the controllers stopped unexpectedly")),
    };
    state.send_replace(Leadership::Stopped);
    result
}

async fn poll_work<F: Future<Output = ()>>(working: &mut Option<Pin<Box<F>>>) {
    match working {
        Some(work) => work.await,
        None => std::future::pending().await,
    }
}

async fn build_manager(
    client: &kube::Client,
    lease: &LeaseConfig,
) -> kube_lease_manager::Result<LeaseManager> {
    // `config` validates the timing; clamp anyway, as `LeaseParams::new` panics on bad values.
    let duration = lease.duration.as_secs().max(2);
    let grace = lease.grace.as_secs().clamp(1, duration - 1);
    // One field manager per replica: server-side apply conflicts are what make two replicas'
    // simultaneous attempts to take a free Lease fail for all but one.
    let field_manager: String = format!("{FIELD_MANAGER_PREFIX}{}", lease.identity)
        .chars()
        .take(128)
        .collect();
    let params =
        LeaseParams::new(lease.identity.clone(), duration, grace).with_field_manager(field_manager);
    LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_parameters(params)
        .with_create_mode(LeaseCreateMode::AutoCreate)
        .build()
        .await
}

/// Publishes the failure, then waits out the backoff. `false` when `shutdown` came first.
async fn fail_and_wait(
    state: &watch::Sender<Leadership>,
    lease: &LeaseConfig,
    error: &kube_lease_manager::LeaseManagerError,
    retry: &mut Duration,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tracing::warn!(lease = %lease.name, namespace = %lease.namespace, %error, retry_in = ?*retry, "leader election failed");
    state.send_replace(Leadership::Failing {
        error: error.to_string(),
    });
    let wait = *retry;
    *retry = (*retry * 2).min(RETRY_MAX);
    tokio::select! {
        biased;
        () = shutdown.as_mut() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

async fn stopped(
    state: &watch::Sender<Leadership>,
    held: Option<LeaseManager>,
    lease: &LeaseConfig,
) -> anyhow::Result<()> {
    if let Some(held) = held {
        release(held, lease).await;
    }
    state.send_replace(Leadership::Stopped);
    Ok(())
}

/// Gives the Lease up so a standby need not wait for it to expire. Bounded by the grace
/// period; failures are logged, as the Lease then simply expires.
async fn release(manager: LeaseManager, lease: &LeaseConfig) {
    // Spawned because kube-lease-manager 0.13 panics (`unreachable!`) when the release PATCH
    // answers 409 Conflict; a panic in a task is contained in its JoinHandle.
    let mut task = tokio::spawn(async move { manager.release().await });
    let outcome = tokio::select! {
        joined = &mut task => Some(joined),
        () = tokio::time::sleep(lease.grace.max(Duration::from_secs(1))) => None,
    };
    match outcome {
        Some(Ok(Ok(()))) => {
            tracing::info!(lease = %lease.name, identity = %lease.identity, "released the lease")
        }
        Some(Ok(Err(error))) => {
            tracing::warn!(lease = %lease.name, %error, "cannot release the lease; it will expire")
        }
        Some(Err(error)) => {
            tracing::warn!(lease = %lease.name, %error, "releasing the lease failed; it will expire")
        }
        None => {
            task.abort();
            tracing::warn!(lease = %lease.name, "releasing the lease timed out; it will expire");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_leaders_and_unelected_processes_act() {
        assert!(Leadership::Leader.is_acting());
        assert!(Leadership::Unelected.is_acting());
        for state in [
            Leadership::Starting,
            Leadership::Standby,
            Leadership::Stopped,
            Leadership::Failing { error: "x".into() },
        ] {
            assert!(!state.is_acting(), "{state:?}");
        }
    }

    #[test]
    fn standby_is_ready_but_failing_election_is_not() {
        assert!(Leadership::Standby.readiness().is_ok());
        assert!(Leadership::Leader.readiness().is_ok());
        let failing = Leadership::Failing {
            error: "connection refused".into(),
        };
        assert_eq!(
            failing.readiness(),
            Err("leader election is failing: connection refused".to_owned())
        );
        assert!(Leadership::Starting.readiness().is_err());
    }

    #[tokio::test]
    async fn unelected_work_runs_until_shutdown() {
        let (tx, mut rx) = leadership_channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(run_unelected(tx, std::future::pending, async {
            let _ = stopped.await;
        }));
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(Leadership::is_acting))
            .await
            .expect("acting in time")
            .expect("sender alive");
        stop.send(()).expect("runner alive");
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("stops in time")
            .expect("no panic")
            .expect("clean stop");
        assert_eq!(*rx.borrow(), Leadership::Stopped);
    }

    #[tokio::test]
    async fn unelected_work_that_ends_is_an_error() {
        let (tx, _rx) = leadership_channel();
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            run_unelected(tx, || async {}, std::future::pending()),
        )
        .await
        .expect("returns in time");
        assert!(result.is_err());
    }
}
