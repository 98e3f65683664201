//! `countersign bot`: two HTTP listeners, the Project index and the delivery workers, wired
//! together.
//!
//! - The **public** listener carries what GitHub and people's browsers need: `POST /webhook`,
//!   and the gate pages with GitHub sign-in (`/gates/*`, `/login`, `/oauth/callback`,
//!   `/logout`) when they are on.
//! - The **internal** listener carries what only the cluster needs: `/healthz`, `/readyz`,
//!   `/metrics`, the policy API (`/api/v1/*`) and the RiskPolicy admission webhook.
//!
//! Both are served by [`crate::listener`], with header-read, body-read and idle time limits.
//!
//! Shutdown is graceful: on SIGTERM the servers stop accepting requests, the queue closes,
//! and the workers finish every delivery already accepted (each one was answered 202, so
//! GitHub will not send it again) before the process exits.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use countersign_github::oauth::OAuthClient;
use countersign_webhooks::github::deliveries::{Deliveries, Queued};
use countersign_webhooks::github::ingress::{self, Ingress, IngressLimits};
use countersign_webhooks::github::signature::Verifier;
use tokio::sync::mpsc;

use crate::api::{PolicyLimits, PolicyRunner};
use crate::config::BotArgs;
use crate::handlers::Handler;
use crate::listener::ListenerOptions;
use crate::login::Login;
use crate::metrics::Metrics;
use crate::pages::PagesState;
use crate::projects::Projects;
use crate::replies::ReplyLimiter;
use crate::worker;
use countersign_github::GitHubApp;
use countersign_github::authz::Authorizer;
use countersign_policies::ownership::RepositoryAllowList;

/// How long a verified delivery waits for room in a full backlog before answering 503.
pub const ENQUEUE_TIMEOUT: Duration = ingress::DEFAULT_ENQUEUE_TIMEOUT;
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
    /// The public base URL, for the pages' canonical links and the sign-in callback.
    pub public_url: Option<String>,
    /// The App's OAuth client, for signing in to see gates of private repositories.
    pub oauth: Option<OAuthClient>,
    /// Serve gate pages of public repositories without sign-in.
    pub public_repositories_open: bool,
    /// Where and how the policy API evaluates.
    pub policy: PolicyLimits,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            gate_pages: true,
            public_url: None,
            oauth: None,
            public_repositories_open: true,
            policy: PolicyLimits::default(),
        }
    }
}

/// The internal routes: probes, metrics, the policy API and admission.
pub fn internal_router(probes: Probes, runner: PolicyRunner) -> Router {
    let probes_routes = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes);
    probes_routes
        .merge(crate::api::router(runner))
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
    queue: mpsc::Receiver<Queued>,
    projects_driver: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// How to assemble a [`Bot`].
pub struct BotSettings {
    /// Accepted webhook secrets.
    pub secrets: Vec<Vec<u8>>,
    /// Projects namespace (`None`: all).
    pub namespace: Option<String>,
    /// Deliveries accepted and not yet handled, in all (`--queue`).
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

/// The webhook endpoint's limits beyond [`BotSettings`]; the default is the flags' defaults.
#[derive(Clone, Debug)]
pub struct DeliveryLimits {
    /// Deliveries about one issue or pull request accepted and not yet handled
    /// (`--queue-per-issue`); at most [`BotSettings::queue`].
    pub per_issue: usize,
    /// Bytes of webhook bodies held before their signature is checked, over all requests
    /// together (`--unverified-body-budget-mib`).
    pub unverified_body_budget: usize,
    /// How long a verified delivery waits for room in a full backlog before 503.
    pub enqueue_timeout: Duration,
    /// Webhook requests read, verified, parsed and queued at once (`--max-in-flight`).
    pub in_flight: usize,
}

impl Default for DeliveryLimits {
    fn default() -> Self {
        let ingress = IngressLimits::default();
        Self {
            per_issue: ingress.backlog_per_subject,
            unverified_body_budget: ingress.unverified_body_budget,
            enqueue_timeout: ENQUEUE_TIMEOUT,
            in_flight: ingress.in_flight,
        }
    }
}

impl Bot {
    /// Assembles the bot with the default [`DeliveryLimits`]; nothing runs until [`Bot::run`].
    pub fn new(client: kube::Client, github: GitHubApp, settings: BotSettings) -> Self {
        Self::with_limits(client, github, settings, DeliveryLimits::default())
    }

    /// Assembles the bot; nothing runs until [`Bot::run`].
    pub fn with_limits(
        client: kube::Client,
        github: GitHubApp,
        settings: BotSettings,
        limits: DeliveryLimits,
    ) -> Self {
        let allowed = RepositoryAllowList::effective(
            settings.allowed_repositories,
            settings.namespace.as_deref(),
        );
        let (projects, driver) =
            Projects::watch(client.clone(), settings.namespace.as_deref(), allowed);
        let mut metrics = Metrics::default();
        metrics.register_github(github.metrics());
        let metrics = Arc::new(metrics);
        let (ingress, rx) = Ingress::new(
            Verifier::new(settings.secrets),
            Deliveries::new(settings.delivery_memory, settings.delivery_ttl),
            metrics.ingress.clone(),
            IngressLimits {
                backlog: settings.queue,
                backlog_per_subject: limits.per_issue,
                unverified_body_budget: limits.unverified_body_budget,
                enqueue_timeout: limits.enqueue_timeout,
                in_flight: limits.in_flight,
            },
        );
        let ingress = Arc::new(ingress);
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

    /// Every route of this bot on one router, gate pages on: for in-process tests, which
    /// reach the webhook and the probes through one handle. `countersign bot` never serves
    /// this: it serves [`Bot::public_router`] and [`Bot::internal_router`] apart.
    pub fn router(&self) -> Router {
        self.router_with(&HttpOptions::default())
    }

    /// Every route of this bot with `options`, on one router (see [`Bot::router`]).
    pub fn router_with(&self, options: &HttpOptions) -> Router {
        self.public_router(options)
            .merge(self.internal_router(options))
    }

    /// The public listener's routes: `POST /webhook`, and the gate pages with sign-in.
    pub fn public_router(&self, options: &HttpOptions) -> Router {
        let login = match (&options.oauth, &options.public_url) {
            (Some(client), Some(url)) => {
                Some(Login::new(self.handler.github.clone(), client.clone(), url))
            }
            _ => None,
        };
        let mut router = ingress::router(self.ingress.clone());
        if options.gate_pages
            && let Some(login) = &login
        {
            router = router.merge(crate::login::router(login.clone()));
        }
        router.merge(crate::pages::router(PagesState {
            client: self.client.clone(),
            enabled: options.gate_pages,
            public_url: options.public_url.clone(),
            github: self.handler.github.clone(),
            login,
            public_repositories_open: options.public_repositories_open,
            visibility: Arc::new(Mutex::new(HashMap::new())),
        }))
    }

    /// The internal listener's routes: probes, metrics, the policy API, admission.
    pub fn internal_router(&self, options: &HttpOptions) -> Router {
        internal_router(
            self.probes.clone(),
            PolicyRunner::new(options.policy.clone()),
        )
    }

    /// Runs the Project watch and handles deliveries, up to `workers` at once, until every
    /// sender of the queue (the ingress and its routers) is dropped and the accepted
    /// deliveries are handled.
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
    let limits = args.connection_limits()?;
    let delivery_limits = args.delivery_limits()?;
    let tls_files = args.tls_files()?;
    let tls_loaded = match &tls_files {
        Some((cert, key)) => Some(crate::tls::load(cert, key)?),
        None => None,
    };
    let tls = tls_loaded.as_ref().map(|(config, _)| config.clone());
    let github = args.github.app()?.context(
        "The bot needs a GitHub App: set --github-app-id and --github-app-private-key-file",
    )?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let bot_login = match &args.bot_login {
        Some(login) => login.clone(),
        None => format!("{}[bot]", app_slug(&github).await?),
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("Cannot listen on {}", args.listen))?;
    let internal = tokio::net::TcpListener::bind(args.internal_listen)
        .await
        .with_context(|| format!("Cannot listen on {}", args.internal_listen))?;
    let addr = listener
        .local_addr()
        .context("Cannot read the bound address")?;
    let internal_addr = internal
        .local_addr()
        .context("Cannot read the bound internal address")?;
    let allowed = args.allowed_repositories()?;
    let options = args.http_options()?;
    let bot = Bot::with_limits(
        client,
        github,
        BotSettings {
            secrets,
            namespace: args.namespace.clone(),
            queue: args.queue,
            delivery_memory: args.delivery_memory,
            delivery_ttl: args.delivery_ttl.0,
            bot_login: bot_login.clone(),
            allowed_repositories: allowed.clone(),
        },
        delivery_limits,
    );
    let effective = RepositoryAllowList::effective(allowed, args.namespace.as_deref());
    if effective.is_empty() {
        tracing::warn!(
            "no namespace may manage any repository: the bot serves every namespace and \
             --allowed-repositories is unset, so every delivery is ignored (set e.g. \
             --allowed-repositories 'team-a=acme/*', or '*=*/*' for a one-team cluster)"
        );
    }
    tracing::info!(
        addr = %addr,
        internal = %internal_addr,
        bot = %bot_login,
        namespace = args.namespace.as_deref().unwrap_or("<all>"),
        allowed = %effective,
        secrets = args.webhook_secret_files.len(),
        https = tls.is_some(),
        gate_pages = args.gate_pages,
        sign_in = options.oauth.is_some(),
        "starting countersign bot (public: POST /webhook, GET /gates/*; internal: /healthz, \
         /readyz, /metrics, /api/v1/*, /admission/riskpolicies)"
    );
    let public_app = bot.public_router(&options);
    let internal_app = bot.internal_router(&options);
    let listener_options = |name| ListenerOptions {
        name,
        tls: tls.clone(),
        limits,
        metrics: bot.probes.metrics.connections.clone(),
    };
    let public_options = listener_options("public");
    let internal_options = listener_options("internal");
    // Rotated webhook secrets and renewed certificates are picked up while running.
    let mut reloads = vec![tokio::spawn(crate::reload::watch(
        "webhook secrets",
        args.webhook_secret_files.clone(),
        args.reload_interval.0,
        crate::config::read_webhook_secrets,
        {
            let ingress = bot.ingress.clone();
            move |secrets: Vec<Vec<u8>>| ingress.verifier.replace(secrets)
        },
    ))];
    if let (Some((cert, key)), Some((_, certificates))) = (&tls_files, &tls_loaded) {
        reloads.push(tokio::spawn(crate::tls::watch_files(
            cert,
            key,
            certificates.clone(),
            args.reload_interval.0,
        )));
    }
    // Lost deliveries (never sent, or accepted and lost in a crash) are recovered from GitHub.
    let resync = tokio::spawn(crate::resync::run(
        crate::resync::Resync::new(bot.handler.clone(), bot.probes.metrics.clone()),
        crate::resync::ResyncSettings {
            interval: args.resync_interval.0,
        },
    ));
    let workers = tokio::spawn(bot.run(args.workers));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let public = crate::listener::serve(listener, public_app, public_options, stopping());
    let private = crate::listener::serve(internal, internal_app, internal_options, stopping());
    let watcher = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    let (public, private, ()) = tokio::join!(public, private, watcher);
    resync.abort();
    for reload in reloads {
        reload.abort();
    }
    public.context("The public HTTP server failed")?;
    private.context("The internal HTTP server failed")?;
    tracing::info!("no longer accepting deliveries; finishing the accepted ones");
    workers.await.context("The delivery workers panicked")?;
    Ok(())
}

/// The Kubernetes client: `--kubeconfig` when given, otherwise the usual inference
/// (in-cluster service account, then `$KUBECONFIG` / `~/.kube/config`).
async fn kube_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("Cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .with_context(|| format!("Cannot use kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "Cannot find a Kubernetes configuration (not in a cluster, no usable $KUBECONFIG \
             or ~/.kube/config); pass --kubeconfig",
        )?,
    };
    kube::Client::try_from(config).context("Cannot build the Kubernetes client")
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
