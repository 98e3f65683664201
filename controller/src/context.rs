//! State shared by every reconciler: the API client, settings, metrics, the GitHub token
//! minter and the in-memory admission ledger of agent runs.

use std::sync::Arc;

use countersign_github::GitHubApp;
use countersign_github::tokens::TokenMinter;
use kube::runtime::events::{Recorder, Reporter};

use crate::agent_run::capacity::Ledger;
use crate::backoff::ErrorBackoff;
use crate::clock::{Clock, SystemClock};
use crate::gate::GateCache;
use crate::metrics::Metrics;
use crate::settings::Settings;

/// The field manager (and event reporter) name of this controller.
pub const MANAGER: &str = "countersign-controller";

/// Shared by all reconcilers of one controller process.
pub struct Context {
    /// Client for the cluster this controller manages.
    pub client: kube::Client,
    /// How this controller was started.
    pub settings: Settings,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Where agent-run credentials come from.
    pub minter: Arc<dyn TokenMinter>,
    /// Who Kubernetes Events say they come from.
    pub reporter: Reporter,
    /// Publishes the Project, Agent and RiskPolicy readiness Events.
    pub recorder: Recorder,
    /// Runs admitted to capacity that the watch cache may not show yet.
    pub ledger: Ledger,
    /// The GitHub App the gate reconciler reads pull requests and publishes checks with;
    /// without one, gates say so in their status and stay pending.
    pub github: Option<GitHubApp>,
    /// Where "now" comes from (deadlines).
    pub clock: Arc<dyn Clock>,
    /// Team memberships and compiled policies of the gate reconciler.
    pub gates: GateCache,
    /// The GitHub App's bot account, looked up once: agent commits are made as it.
    pub bot_account: tokio::sync::OnceCell<countersign_github::BotAccount>,
    /// Consecutive failures per object: the error requeue backs off per object.
    pub error_backoff: ErrorBackoff,
    /// Which Project manages each repository.
    pub claims: crate::claims::Claims,
    /// The watch caches the reconcilers read from.
    pub caches: crate::cache::Caches,
}

impl Context {
    /// A context for `client` with fresh metrics and an empty ledger.
    pub fn new(
        client: kube::Client,
        settings: Settings,
        minter: Arc<dyn TokenMinter>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter.clone());
        let claims = crate::claims::Claims::new(
            countersign_policies::ownership::RepositoryAllowList::effective(
                settings.allowed_repositories.clone(),
                settings.namespace.as_deref(),
            ),
        );
        Self {
            claims,
            caches: crate::cache::Caches::default(),
            client,
            settings,
            metrics,
            minter,
            reporter,
            recorder,
            ledger: Ledger::default(),
            github: None,
            clock: Arc::new(SystemClock),
            gates: GateCache::default(),
            bot_account: tokio::sync::OnceCell::new(),
            error_backoff: ErrorBackoff::default(),
        }
    }

    /// The same context reading pull requests and publishing checks as `app`.
    pub fn with_github(mut self, app: GitHubApp) -> Self {
        self.github = Some(app);
        self
    }

    /// The same context taking the time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}
