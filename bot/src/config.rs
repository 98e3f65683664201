//! Command-line and environment configuration of `countersign bot` (the GitHub App settings
//! it shares with the controller are `countersign_github::args::GitHubAppArgs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use countersign_crds::GoDuration;

use countersign_github::args::GitHubAppArgs;

/// `countersign bot`.
#[derive(clap::Args, Debug, Clone)]
pub struct BotArgs {
    /// Address serving `/webhook`, `/healthz`, `/readyz`, `/metrics`, the gate pages, the
    /// `/api/v1` endpoints and `/admission/riskpolicies`.
    #[arg(long, env = "COUNTERSIGN_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Files holding webhook secrets, one per file (repeat or comma-separate). A delivery
    /// signed with any of them is accepted, so a secret is rotated by adding the new file,
    /// changing the App's secret, then removing the old file.
    #[arg(
        long = "webhook-secret-file",
        env = "GITHUB_WEBHOOK_SECRET_FILES",
        value_delimiter = ',',
        required = true,
        value_name = "FILE"
    )]
    pub webhook_secret_files: Vec<PathBuf>,

    /// Watch Projects in this namespace only (all namespaces when unset).
    #[arg(long, env = "COUNTERSIGN_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Deliveries handled in parallel (deliveries about one issue or pull request are always
    /// handled in order).
    #[arg(long, env = "COUNTERSIGN_WORKERS", default_value_t = 8)]
    pub workers: usize,

    /// Accepted deliveries waiting for a worker; when full, GitHub is answered 503 and
    /// redelivers later.
    #[arg(long, env = "COUNTERSIGN_QUEUE", default_value_t = 1024)]
    pub queue: usize,

    /// How long a delivery id is remembered in memory to answer redeliveries at once
    /// (objects are named deterministically too, so older redeliveries change nothing).
    #[arg(long, env = "COUNTERSIGN_DELIVERY_TTL", default_value = "1h")]
    pub delivery_ttl: GoDuration,

    /// Most delivery ids remembered.
    #[arg(long, env = "COUNTERSIGN_DELIVERY_MEMORY", default_value_t = 100_000)]
    pub delivery_memory: usize,

    /// The App's bot login (`<slug>[bot]`); read from `GET /app` when unset.
    #[arg(long, env = "COUNTERSIGN_BOT_LOGIN", value_name = "LOGIN")]
    pub bot_login: Option<String>,

    /// Serve each ApprovalGate's details page at `/gates/{namespace}/{name}` (what the
    /// `countersign/approval` check run links to). `false` answers 404 there, for
    /// installations that must not show gate details to anyone who can reach the bot.
    #[arg(
        long,
        env = "COUNTERSIGN_GATE_PAGES",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub gate_pages: bool,

    /// The bot's public base URL, e.g. `https://countersign.example.com/`: the base of the
    /// gate pages' self links. The controller's flag of the same name builds the check run's
    /// "Details" links from it; give both the same value.
    #[arg(long, env = "COUNTERSIGN_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<url::Url>,

    /// Serve HTTPS with this certificate chain (PEM) instead of plain HTTP. Kubernetes calls
    /// the `/admission/riskpolicies` webhook over HTTPS only. Needs `--tls-key-file`.
    #[arg(
        long,
        env = "COUNTERSIGN_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of `--tls-cert-file`.
    #[arg(
        long,
        env = "COUNTERSIGN_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Which namespaces' Projects may manage which GitHub repositories, as comma-separated
    /// `NAMESPACE=OWNER/REPOSITORY` entries where `*` matches any run of characters (e.g.
    /// `team-a=acme/*,team-b=acme/billing-*,platform=*/*`). A Project outside its
    /// namespace's allowance manages nothing. Unset: with `--namespace`, that namespace may
    /// manage any repository; cluster-wide, no namespace may (a shared cluster must say
    /// who may manage what). `*=*/*` trusts every namespace. Give the controller the same.
    #[arg(
        long = "allowed-repositories",
        env = "COUNTERSIGN_ALLOWED_REPOSITORIES",
        value_delimiter = ',',
        value_name = "NS=OWNER/REPO"
    )]
    pub allowed_repositories: Vec<String>,

    /// The GitHub App.
    #[command(flatten)]
    pub github: GitHubAppArgs,
}

impl BotArgs {
    /// The operator's allow-list, when given.
    pub fn allowed_repositories(
        &self,
    ) -> anyhow::Result<Option<countersign_policies::ownership::RepositoryAllowList>> {
        if self.allowed_repositories.iter().all(|e| e.trim().is_empty()) {
            return Ok(None);
        }
        countersign_policies::ownership::RepositoryAllowList::parse(&self.allowed_repositories)
            .map(Some)
            .context("Invalid --allowed-repositories")
    }

    /// The certificate and key files when HTTPS is configured; one without the other is an
    /// error (clap enforces it too, this guards programmatic construction).
    pub fn tls_files(&self) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => Ok(Some((cert.clone(), key.clone()))),
            (None, None) => Ok(None),
            _ => anyhow::bail!("--tls-cert-file and --tls-key-file must be given together"),
        }
    }

    /// Reads every webhook secret file (trailing newlines trimmed); empty files are refused.
    pub fn webhook_secrets(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        self.webhook_secret_files
            .iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("Cannot read the webhook secret {}", path.display())
                })?;
                let secret = text.trim_end_matches(['\r', '\n']);
                anyhow::ensure!(
                    !secret.is_empty(),
                    "The webhook secret {} is empty",
                    path.display()
                );
                Ok(secret.as_bytes().to_vec())
            })
            .collect()
    }
}
