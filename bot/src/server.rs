//! `countersign bot`: the HTTP server (`/webhook`, `/healthz`, `/readyz`, `/metrics`, the gate
//! pages, `/api/v1`, `/admission/riskpolicies`), over HTTP or HTTPS, the Project index and
//! the delivery workers, wired together.
//!
//! Shutdown is graceful: on SIGTERM the server stops accepting requests, the queue closes,
//! and the workers finish every delivery already accepted (each one was answered 202, so
//! GitHub will not send it again) before the process exits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use countersign_webhooks::github::deliveries::Deliveries;
use countersign_webhooks::github::event::Delivery;
use countersign_webhooks::github::ingress::{self, Ingress};
use countersign_webhooks::github::signature::Verifier;
use tokio::sync::mpsc;

use crate::config::BotArgs;
use crate::handlers::Handler;
use crate::metrics::Metrics;
use crate::pages::PagesState;
use crate::projects::Projects;
use crate::replies::ReplyLimiter;
use crate::worker;
use countersign_github::GitHubApp;
use countersign_github::authz::Authorizer;
use countersign_policies::ownership::RepositoryAllowList;

/// How long a webhook request waits for room in a full queue before answering 503.
pub const ENQUEUE_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts at reading the App's slug at startup.
const SLUG_ATTEMPTS: u32 = 5;

/// What the non-webhook endpoints read.
#[derive(Clone)]
pub struct Probes {
    /// The Project index (`/readyz` waits for its first list).
    pub projects: Projects,
    /// What `/metrics` serves.
    pub metrics: Arc<Metrics>,
}

/// Path of the RiskPolicy validating admission webhook on the bot (the webhooks crate's own
/// [`RISK_POLICY_ADMISSION_PATH`](countersign_webhooks::RISK_POLICY_ADMISSION_PATH) is served
/// too).
pub const RISK_POLICY_ADMISSION_ROUTE: &str = "/admission/riskpolicies";

/// The HTTP knobs beyond the webhook.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Serve `/gates/{namespace}/{name}` (404 there when false).
    pub gate_pages: bool,
    /// The public base URL, for the pages' canonical links.
    pub public_url: Option<String>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            gate_pages: true,
            public_url: None,
        }
    }
}

/// The bot's whole HTTP surface without the gate pages (which need a kube client).
pub fn router(ingress: Arc<Ingress>, probes: Probes) -> Router {
    let probes_routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes);
    ingress::router(ingress)
        .merge(probes_routes)
        .merge(crate::api::router())
        .merge(countersign_webhooks::app())
        .route(
            RISK_POLICY_ADMISSION_ROUTE,
            post(countersign_webhooks::admission::risk_policy_handler),
        )
}

async fn readyz(State(probes): State<Probes>) -> Response {
    if probes.projects.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first list of Projects",
        )
            .into_response()
    }
}

async fn metrics(State(probes): State<Probes>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        probes.metrics.encode(),
    )
        .into_response()
}

/// A running bot without its HTTP listener: the pieces tests and `serve` share.
pub struct Bot {
    /// The webhook endpoint's state.
    pub ingress: Arc<Ingress>,
    /// Probes and metrics.
    pub probes: Probes,
    /// The handlers.
    pub handler: Arc<Handler>,
    client: kube::Client,
    queue: mpsc::Receiver<Delivery>,
    projects_driver: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// How to assemble a [`Bot`].
pub struct BotSettings {
    /// Accepted webhook secrets.
    pub secrets: Vec<Vec<u8>>,
    /// Projects namespace (`None`: all).
    pub namespace: Option<String>,
    /// Queue length.
    pub queue: usize,
    /// Delivery-id memory.
    pub delivery_memory: usize,
    /// Delivery-id TTL.
    pub delivery_ttl: Duration,
    /// The App's bot login.
    pub bot_login: String,
    /// Which namespaces may manage which repositories (`--allowed-repositories`); `None`
    /// applies the default (`countersign_policies::ownership::RepositoryAllowList::effective`).
    pub allowed_repositories: Option<RepositoryAllowList>,
}

impl Bot {
    /// Assembles the bot; nothing runs until [`Bot::run`].
    pub fn new(client: kube::Client, github: GitHubApp, settings: BotSettings) -> Self {
        let allowed = RepositoryAllowList::effective(
            settings.allowed_repositories,
            settings.namespace.as_deref(),
        );
        let (projects, driver) =
            Projects::watch(client.clone(), settings.namespace.as_deref(), allowed);
        let metrics = Arc::new(Metrics::default());
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let ingress = Arc::new(Ingress {
            verifier: Verifier::new(settings.secrets),
            deliveries: Deliveries::new(settings.delivery_memory, settings.delivery_ttl),
            queue: tx,
            metrics: metrics.ingress.clone(),
            enqueue_timeout: ENQUEUE_TIMEOUT,
        });
        let handler = Arc::new(Handler {
            client: client.clone(),
            github,
            projects: projects.clone(),
            authorizer: Authorizer::default(),
            replies: ReplyLimiter::default(),
            bot_login: settings.bot_login,
        });
        Self {
            ingress,
            probes: Probes { projects, metrics },
            handler,
            client,
            queue: rx,
            projects_driver: Box::pin(driver),
        }
    }

    /// The HTTP router of this bot, gate pages on.
    pub fn router(&self) -> Router {
        self.router_with(&HttpOptions::default())
    }

    /// The HTTP router of this bot with `options`.
    pub fn router_with(&self, options: &HttpOptions) -> Router {
        router(self.ingress.clone(), self.probes.clone()).merge(crate::pages::router(PagesState {
            client: self.client.clone(),
            enabled: options.gate_pages,
            public_url: options.public_url.clone(),
        }))
    }

    /// Runs the Project watch and `workers` delivery workers until every sender of the queue
    /// (the ingress and its routers) is dropped and the accepted deliveries are handled.
    pub fn run(self, workers: usize) -> impl Future<Output = ()> + Send + 'static {
        let Bot {
            ingress,
            probes,
            handler,
            client: _,
            queue,
            projects_driver,
        } = self;
        drop(ingress);
        async move {
            let watch = tokio::spawn(projects_driver);
            worker::run(handler, probes.metrics, queue, workers).await;
            watch.abort();
        }
    }
}

/// Runs `countersign bot` until `shutdown` completes.
pub async fn serve(
    args: BotArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let secrets = args.webhook_secrets()?;
    let tls = match args.tls_files()? {
        Some((cert, key)) => Some(crate::tls::load(&cert, &key)?),
        None => None,
    };
    let github = args.github.app()?.context(
        "The bot needs a GitHub App: set --github-app-id and --github-app-private-key-file",
    )?;
    let client = kube::Client::try_default()
        .await
        .context("Cannot build the Kubernetes client (in-cluster config or KUBECONFIG)")?;
    let bot_login = match &args.bot_login {
        Some(login) => login.clone(),
        None => format!("{}[bot]", app_slug(&github).await?),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("Cannot listen on {}", args.listen))?;
    let addr = listener
        .local_addr()
        .context("Cannot read the bound address")?;
    let bot = Bot::new(
        client,
        github,
        BotSettings {
            secrets,
            namespace: args.namespace.clone(),
            queue: args.queue,
            delivery_memory: args.delivery_memory,
            delivery_ttl: args.delivery_ttl.0,
            bot_login: bot_login.clone(),
            allowed_repositories: args.allowed_repositories()?,
        },
    );
    tracing::info!(
        %addr,
        bot = %bot_login,
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        secrets = args.webhook_secret_files.len(),
        https = tls.is_some(),
        gate_pages = args.gate_pages,
        "starting countersign bot (POST /webhook, /api/v1/*, /admission/riskpolicies; \
         GET /gates/*, /healthz, /readyz, /metrics)"
    );
    let app = bot.router_with(&HttpOptions {
        gate_pages: args.gate_pages,
        public_url: args.public_url.as_ref().map(ToString::to_string),
    });
    let workers = tokio::spawn(bot.run(args.workers));
    match tls {
        Some(config) => crate::tls::serve(listener, config, app, shutdown)
            .await
            .context("The HTTPS server failed")?,
        None => axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .context("The HTTP server failed")?,
    }
    tracing::info!("no longer accepting deliveries; finishing the accepted ones");
    workers.await.context("The delivery workers panicked")?;
    Ok(())
}

async fn app_slug(github: &GitHubApp) -> anyhow::Result<String> {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=SLUG_ATTEMPTS {
        match github.slug().await {
            Ok(slug) => return Ok(slug),
            Err(error) if error.is_transient() && attempt < SLUG_ATTEMPTS => {
                tracing::warn!(%error, attempt, "cannot read the App from GitHub yet; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => {
                return Err(error).context(
                    "Cannot read the App from GitHub (GET /app); check the App id, key and API URL",
                );
            }
        }
    }
    anyhow::bail!("Cannot read the App from GitHub after {SLUG_ATTEMPTS} attempts")
}
