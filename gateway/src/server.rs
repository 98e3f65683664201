//! The gateway's HTTP server: the two provider endpoints, the milestones endpoint, `/metrics`, `/healthz` and
//! `/readyz` (ready once the watches have their first complete lists), and `serve`, which
//! wires flags, the Kubernetes client, the watches and graceful shutdown (usage not yet
//! written is written before the process exits).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

use crate::catalog::Catalog;
use crate::config::GatewayArgs;
use crate::metrics::Metrics;
use crate::milestones;
use crate::proxy::{self, Gateway, Settings};

/// Largest request body accepted from an agent (prompts with whole files are large).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;
/// How long usage not yet written may take to be written at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(10);
/// How long requests in flight (streams included) may go on after a stop is asked for; with
/// [`SHUTDOWN_FLUSH`] within the chart's 30-second termination grace period.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(15);

/// The router of a gateway; `ready` says whether `/readyz` answers 200.
pub fn router(gateway: Arc<Gateway>, ready: Arc<AtomicBool>) -> Router {
    let metrics = gateway.metrics.clone();
    Router::new()
        .route("/v1/chat/completions", post(proxy::chat_completions))
        .route("/v1/messages", post(proxy::messages))
        .route(
            milestones::PATH,
            post(milestones::post).layer(DefaultBodyLimit::max(milestones::MAX_BODY_BYTES)),
        )
        .with_state(gateway)
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz).with_state(ready))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> impl IntoResponse {
    if ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the watches have not synced yet",
        )
    }
}

/// A running gateway (for tests and the sandbox): its address, state and tasks.
pub struct Running {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// Its state (ledgers, metrics).
    pub gateway: Arc<Gateway>,
    ready: Arc<AtomicBool>,
    stop: tokio::sync::watch::Sender<bool>,
    serving: Option<tokio::task::JoinHandle<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// The base URL agents use: `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests (and answers `/readyz` with 503), lets the ones in flight
    /// finish for up to [`SHUTDOWN_DRAIN`] (their usage is counted), then writes what usage
    /// is not written yet.
    pub async fn stop(mut self) {
        self.ready.store(false, Ordering::SeqCst);
        let _ = self.stop.send(true);
        if let Some(mut serving) = self.serving.take()
            && tokio::time::timeout(SHUTDOWN_DRAIN, &mut serving)
                .await
                .is_err()
        {
            tracing::warn!(
                drain = ?SHUTDOWN_DRAIN,
                "requests were still in flight when the drain time ran out; they are cut"
            );
            serving.abort();
        }
        self.gateway.ledgers.flush(SHUTDOWN_FLUSH).await;
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in self.tasks.iter().chain(&self.serving) {
            task.abort();
        }
    }
}

/// Starts a gateway on `listener` with `client`, serving `namespace` (or all), and waits
/// until its watches are ready.
pub async fn start(
    client: kube::Client,
    namespace: Option<&str>,
    listener: tokio::net::TcpListener,
    settings: Settings,
) -> anyhow::Result<Running> {
    let addr = listener
        .local_addr()
        .context("Cannot read the bound address")?;
    let (catalog, watch) = Catalog::start(&client, namespace);
    let watching = tokio::spawn(watch);
    let gateway = Arc::new(Gateway::new(
        catalog.clone(),
        client,
        Arc::new(Metrics::default()),
        settings,
    ));
    let ready = Arc::new(AtomicBool::new(false));
    let app = router(gateway.clone(), ready.clone());
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let serving = tokio::spawn(async move {
        let stopping = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stopping)
            .await
        {
            tracing::error!(%error, "the gateway's HTTP server stopped");
        }
    });
    catalog.ready().await;
    ready.store(true, Ordering::SeqCst);
    Ok(Running {
        addr,
        gateway,
        ready,
        stop,
        serving: Some(serving),
        tasks: vec![watching],
    })
}

/// The Kubernetes client `args` describe: `--kubeconfig`, else in-cluster, `$KUBECONFIG`,
/// `~/.kube/config`.
pub async fn client(args: &GatewayArgs) -> anyhow::Result<kube::Client> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("Cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("Cannot use kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("Cannot find a Kubernetes configuration; pass --kubeconfig")?,
    };
    kube::Client::try_from(config).context("Cannot build the Kubernetes client")
}

/// `countersign gateway`: serves until `shutdown` completes, then writes pending usage.
pub async fn serve(
    args: GatewayArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = args.settings()?;
    let client = client(&args).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("Cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("Cannot read the bound address")?;
    tracing::info!(%addr, version = env!("CARGO_PKG_VERSION"), namespace = args.namespace.as_deref().unwrap_or("(all)"), "starting countersign gateway");
    let running = start(client, args.namespace.as_deref(), listener, settings).await?;
    tracing::info!(%addr, "the gateway is ready");
    shutdown.await;
    tracing::info!("stopping: writing pending usage");
    running.stop().await;
    Ok(())
}
