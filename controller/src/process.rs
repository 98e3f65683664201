//! `countersign controller` as a process: turns [`ControllerArgs`] into settings, a Kubernetes
//! client and a Lease; serves `/metrics`, `/healthz` and `/readyz`; runs the reconcilers while
//! this replica leads; and stops cleanly when the shutdown future completes (SIGTERM or Ctrl-C
//! in `main`): controllers first, then the Lease, then the HTTP server.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use countersign_github::GitHubApp;
use countersign_github::tokens::{TokenMinter, Unconfigured};
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ControllerArgs;
use crate::context::Context;
use crate::leader::{self, Leadership, LeaseConfig};
use crate::metrics::Metrics;
use crate::server::{self, AppState};
use crate::settings::Settings;

/// Longest wait for the HTTP server and the Lease release after shutdown was requested.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Shortest per-request timeout of the leader-election client (see [`lease_client`]).
const MIN_LEASE_REQUEST_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs `countersign controller` until `shutdown` completes.
pub async fn serve(args: ControllerArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    Process::bind(args).await?.run(shutdown).await
}

/// A controller process that has validated its configuration, built its clients and bound its
/// HTTP port, but not started anything yet. Tests use it to learn the bound address and watch
/// leadership before [`Process::run`].
pub struct Process {
    settings: Settings,
    client: kube::Client,
    lease: Option<(LeaseConfig, kube::Client)>,
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
    minter: Arc<dyn TokenMinter>,
    github: Option<GitHubApp>,
    leadership: (watch::Sender<Leadership>, watch::Receiver<Leadership>),
}

impl Process {
    /// Validates `args`, builds the Kubernetes clients (from `--kubeconfig`, else the
    /// in-cluster configuration or `$KUBECONFIG`) and binds `--listen`.
    pub async fn bind(args: ControllerArgs) -> anyhow::Result<Process> {
        let settings = args
            .settings()
            .context("Invalid controller configuration")?;
        let config = kube_config(args.kubeconfig.as_deref()).await?;
        let lease = args
            .lease(&config.default_namespace)
            .context("Invalid leader-election configuration")?;
        let lease = match lease {
            Some(lease) => {
                let lease_client = lease_client(config.clone(), &lease)?;
                Some((lease, lease_client))
            }
            None => None,
        };
        // Without a GitHub App every run that needs a token waits with a condition saying so.
        let github = args
            .github
            .app()
            .context("Invalid GitHub App configuration")?;
        let minter: Arc<dyn TokenMinter> = match github.clone() {
            Some(app) => Arc::new(app),
            None => Arc::new(Unconfigured),
        };
        let mut metrics = Metrics::default();
        if let Some(app) = &github {
            metrics.register_github(app.metrics());
        }
        let metrics = Arc::new(metrics);
        let client = counted_client(config.clone(), metrics.clone())?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("Cannot listen on {}", args.listen))?;
        let local_addr = listener
            .local_addr()
            .context("Cannot read the HTTP server's bound address")?;
        Ok(Process {
            settings,
            client,
            lease,
            listener,
            local_addr,
            metrics,
            minter,
            github,
            leadership: leader::leadership_channel(),
        })
    }

    /// Where `/metrics`, `/healthz` and `/readyz` are served (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Follows this process's leadership.
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.1.clone()
    }

    /// The metrics `/metrics` serves.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Serves HTTP and runs the controllers (only while leading, when leader election is on)
    /// until `shutdown` completes. `Err` when the HTTP server or the controllers stop by
    /// themselves.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Process {
            settings,
            client,
            lease,
            listener,
            local_addr,
            metrics,
            minter,
            github,
            leadership: (state, watcher),
        } = self;
        log_startup(
            &settings,
            lease.as_ref().map(|(l, _)| l),
            local_addr,
            minter.as_ref(),
        );

        let (stop, stopping) = watch::channel(false);
        let stopped = move || {
            let mut stopping = stopping.clone();
            async move {
                let _ = stopping.wait_for(|s| *s).await;
            }
        };
        let router = server::app(AppState {
            metrics: metrics.clone(),
            leadership: watcher,
        });
        let http = axum::serve(listener, router)
            .with_graceful_shutdown(stopped())
            .into_future();

        // A fresh Context per term of leadership: in-memory state such as the capacity ledger
        // must not outlive a term during which another replica may have acted.
        let work = move || {
            let mut ctx = Context::new(
                client.clone(),
                settings.clone(),
                minter.clone(),
                metrics.clone(),
            );
            if let Some(app) = github.clone() {
                ctx = ctx.with_github(app);
            }
            crate::run_controllers(Arc::new(ctx))
        };
        let controllers = async move {
            match lease {
                Some((lease, lease_client)) => {
                    leader::run_when_leader(lease, lease_client, state, work, stopped()).await
                }
                None => leader::run_unelected(state, work, stopped()).await,
            }
        };

        let mut http = pin!(http);
        let mut controllers = pin!(controllers);
        let mut shutdown = pin!(shutdown);
        let early = tokio::select! {
            () = &mut shutdown => None,
            result = &mut controllers => Some(Finished::Controllers(result)),
            result = &mut http => Some(Finished::Http(result)),
        };
        match &early {
            None => tracing::info!("shutting down"),
            Some(_) => tracing::error!("stopping: a part of the controller ended unexpectedly"),
        }
        let _ = stop.send(true);

        let rest = async {
            let controllers_result = match &early {
                Some(Finished::Controllers(_)) => Ok(()),
                _ => controllers.await,
            };
            let http_result = match &early {
                Some(Finished::Http(_)) => Ok(()),
                _ => http.await.context("The HTTP server failed"),
            };
            controllers_result.and(http_result)
        };
        let finished = tokio::time::timeout(SHUTDOWN_TIMEOUT, rest)
            .await
            .context("Shutdown took too long")?;
        match early {
            None => finished,
            Some(Finished::Controllers(result)) => result.and(finished),
            Some(Finished::Http(result)) => {
                result.context("The HTTP server failed")?;
                finished?;
                Err(anyhow::anyhow!("The HTTP server stopped unexpectedly"))
            }
        }
    }
}

enum Finished {
    Controllers(anyhow::Result<()>),
    Http(std::io::Result<()>),
}

/// The client configuration: `--kubeconfig` when given, otherwise the usual inference
/// (in-cluster service account, then `$KUBECONFIG` / `~/.kube/config`).
async fn kube_config(path: Option<&Path>) -> anyhow::Result<kube::Config> {
    match path {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("Cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("Cannot use kubeconfig {}", path.display()))
        }
        None => kube::Config::infer().await.context(
            "Cannot find a Kubernetes configuration (not in a cluster, no usable $KUBECONFIG \
             or ~/.kube/config); pass --kubeconfig",
        ),
    }
}

/// The reconcilers' client: every request it sends is counted in
/// `countersign_controller_kube_requests_total` by verb and resource, so the load the
/// controller puts on the apiserver can be read from its own metrics.
fn counted_client(config: kube::Config, metrics: Arc<Metrics>) -> anyhow::Result<kube::Client> {
    let count =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            metrics.kube_request(request.method(), request.uri());
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)
        .context("Cannot build a Kubernetes client")?
        .with_layer(&count)
        .build())
}

/// A client for the Lease alone, whose requests give up well within the grace period: a
/// renewal that hangs must fail (and stop the controllers) before the Lease can expire,
/// instead of waiting for the default timeouts of several minutes. Its own retries are off,
/// as the election retries by itself.
fn lease_client(mut config: kube::Config, lease: &LeaseConfig) -> anyhow::Result<kube::Client> {
    let timeout = (lease.grace / 2).max(MIN_LEASE_REQUEST_TIMEOUT);
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    kube::Client::try_from(config).context("Cannot build the leader-election Kubernetes client")
}

fn log_startup(
    settings: &Settings,
    lease: Option<&LeaseConfig>,
    addr: SocketAddr,
    minter: &dyn TokenMinter,
) {
    tracing::info!(
        namespace = settings.namespace.as_deref().unwrap_or("<all>"),
        agent_image = %settings.agent_image,
        resync = ?settings.resync_interval,
        %addr,
        "starting countersign controller (metrics, healthz and readyz on http://{addr})"
    );
    match lease {
        Some(lease) => tracing::info!(
            lease = %lease.name,
            lease_namespace = %lease.namespace,
            identity = %lease.identity,
            duration = ?lease.duration,
            "leader election on: reconciling only while holding the lease"
        ),
        None => tracing::warn!(
            "leader election off: this process reconciles unconditionally; never run two replicas like this"
        ),
    }
    let allowed = countersign_policies::ownership::RepositoryAllowList::effective(
        settings.allowed_repositories.clone(),
        settings.namespace.as_deref(),
    );
    if allowed.is_empty() {
        tracing::warn!(
            "no namespace may manage any repository: this controller watches every namespace \
             and --allowed-repositories is unset; every Project will say RepositoryNotAllowed \
             (set e.g. --allowed-repositories 'team-a=acme/*' or '*=*/*' for a one-team cluster)"
        );
    } else {
        tracing::info!(allowed = %allowed, "repositories namespaces may manage");
    }
    if !minter.is_configured() {
        tracing::warn!(
            "GitHub is not configured: agent runs that need a repository token will wait with \
             a condition saying no GitHub credentials are configured, and Projects cannot show \
             their installation"
        );
    }
}
