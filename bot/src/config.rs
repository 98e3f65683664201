//! Command-line and environment configuration of `countersign bot` (the GitHub App settings
//! it shares with the controller are `countersign_github::args::GitHubAppArgs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use countersign_crds::GoDuration;

use countersign_github::args::GitHubAppArgs;

/// `countersign bot`. The GitHub App id and key are required here (the controller can run
/// without them).
#[derive(clap::Args, Debug, Clone)]
#[command(
    mut_arg("github_app_id", |a| a.required(true)),
    mut_arg("github_app_private_key_file", |a| a.required(true))
)]
pub struct BotArgs {
    /// The public listener: `POST /webhook`, and the gate pages with GitHub sign-in
    /// (`/gates/*`, `/login`, `/oauth/callback`, `/logout`) when they are on. The only port
    /// to expose outside the cluster.
    #[arg(long, env = "COUNTERSIGN_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// The internal listener: `/healthz`, `/readyz`, `/metrics`, the policy API
    /// (`/api/v1/*`) and the RiskPolicy admission webhook (`/admission/riskpolicies`). Keep it
    /// inside the cluster (kubelet probes, Prometheus and the apiserver reach it).
    #[arg(
        long,
        env = "COUNTERSIGN_INTERNAL_LISTEN",
        default_value = "0.0.0.0:8081"
    )]
    pub internal_listen: SocketAddr,

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

    /// Deliveries accepted and not yet handled, in all. When it is full a delivery is
    /// answered 503, which GitHub does not redeliver by itself: the controller's periodic
    /// resync repairs gates, a lost trigger needs the label or command again.
    #[arg(long, env = "COUNTERSIGN_QUEUE", default_value_t = 1024)]
    pub queue: usize,

    /// Of `--queue`, deliveries about one issue or pull request (capped at `--queue`); more
    /// about it are answered 503, so one busy issue never makes deliveries about the others
    /// fail.
    #[arg(long, env = "COUNTERSIGN_QUEUE_PER_ISSUE", default_value_t = 64)]
    pub queue_per_issue: usize,

    /// Webhook requests read, verified, parsed and queued at once. The others wait their
    /// turn with their bodies unread, for up to 5 seconds, then get 503 with `Retry-After`:
    /// a flood of connections costs neither memory nor CPU beyond this many requests.
    #[arg(long, env = "COUNTERSIGN_MAX_IN_FLIGHT", default_value_t = countersign_webhooks::github::ingress::DEFAULT_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// Longest a connection may take to send a complete request head (from its start, or on
    /// HTTP/1.1 from the previous response; also bounds the TLS handshake). Both listeners.
    #[arg(long, env = "COUNTERSIGN_HEADER_READ_TIMEOUT", default_value = "10s")]
    pub header_read_timeout: GoDuration,

    /// Longest a request body may take to arrive whole after its head (408 after it).
    /// Both listeners.
    #[arg(long, env = "COUNTERSIGN_BODY_READ_TIMEOUT", default_value = "30s")]
    pub body_read_timeout: GoDuration,

    /// Longest a connection may stay open with no request in flight. Both listeners.
    #[arg(long, env = "COUNTERSIGN_IDLE_TIMEOUT", default_value = "60s")]
    pub idle_timeout: GoDuration,

    /// MiB of webhook bodies held before their signature is checked, over all requests
    /// together; a body that does not fit is answered 503 with `Retry-After` at once instead
    /// of buffered. At least 25 (GitHub's largest delivery).
    #[arg(
        long,
        env = "COUNTERSIGN_UNVERIFIED_BODY_BUDGET_MIB",
        default_value_t = 64
    )]
    pub unverified_body_budget_mib: u64,

    /// How long a delivery id is remembered in memory to answer redeliveries at once
    /// (objects are named deterministically too, so older redeliveries change nothing).
    #[arg(long, env = "COUNTERSIGN_DELIVERY_TTL", default_value = "1h")]
    pub delivery_ttl: GoDuration,

    /// How often the bot asks GitHub what lost deliveries should have created (open issues
    /// with a trigger label and no AgentRun, open pull requests with no ApprovalGate) and
    /// creates it. Each wait varies by ±10%; `0s` turns it off. Reads are conditional, so an
    /// unchanged repository costs only `304`s.
    #[arg(long, env = "COUNTERSIGN_RESYNC_INTERVAL", default_value = "5m")]
    pub resync_interval: GoDuration,

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
    /// gate pages' self links and of the sign-in callback (`{url}/oauth/callback`, to set as
    /// the App's callback URL). The controller's `--gates-url` builds the check run's
    /// "Details" links; give both the same value.
    #[arg(long, env = "COUNTERSIGN_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<url::Url>,

    /// Serve gate pages of public repositories without sign-in. Pages of private
    /// repositories always need a GitHub sign-in by someone who can read the repository.
    #[arg(
        long,
        env = "COUNTERSIGN_GATE_PAGES_PUBLIC_REPOS",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub gate_pages_public_repos: bool,

    /// The GitHub App's OAuth client id (App settings → "Client ID"), for signing in to see
    /// gate pages of private repositories. Needs `--github-oauth-client-secret-file` and
    /// `--public-url`; without them such pages are not shown.
    #[arg(long, env = "GITHUB_OAUTH_CLIENT_ID", value_name = "ID")]
    pub github_oauth_client_id: Option<String>,

    /// File holding the App's OAuth client secret.
    #[arg(long, env = "GITHUB_OAUTH_CLIENT_SECRET_FILE", value_name = "FILE")]
    pub github_oauth_client_secret_file: Option<PathBuf>,

    /// Policy API (`/api/v1/simulate`, `/api/v1/validate`) evaluations running at once;
    /// more wait briefly, then get 503.
    #[arg(long, env = "COUNTERSIGN_POLICY_API_CONCURRENCY", default_value_t = 2)]
    pub policy_api_concurrency: usize,

    /// Longest one policy API evaluation may take.
    #[arg(long, env = "COUNTERSIGN_POLICY_API_TIMEOUT", default_value = "10s")]
    pub policy_api_timeout: GoDuration,

    /// Most memory (MiB of heap) one policy API evaluation may use; each runs in its own
    /// worker process with this limit.
    #[arg(long, env = "COUNTERSIGN_POLICY_API_MEMORY_MIB", default_value_t = 512)]
    pub policy_api_memory_mib: u64,

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

    /// Kubeconfig file to use instead of the in-cluster configuration or `$KUBECONFIG`.
    #[arg(long, env = "COUNTERSIGN_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// How often the webhook secret files and the TLS certificate are checked for changes
    /// (a rotated Secret or a renewed certificate is picked up without a restart).
    #[arg(long, env = "COUNTERSIGN_RELOAD_INTERVAL", default_value = "10s")]
    pub reload_interval: GoDuration,
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
    /// The HTTP options: gate pages, sign-in, and the policy API's limits (its evaluations
    /// run in worker processes of this very binary).
    pub fn http_options(&self) -> anyhow::Result<crate::server::HttpOptions> {
        let oauth = match (
            &self.github_oauth_client_id,
            &self.github_oauth_client_secret_file,
        ) {
            (Some(id), Some(file)) => {
                let secret = std::fs::read_to_string(file).with_context(|| {
                    format!("Cannot read the OAuth client secret {}", file.display())
                })?;
                let secret = secret.trim_end_matches(['\r', '\n']);
                anyhow::ensure!(
                    !secret.is_empty(),
                    "The OAuth client secret {} is empty",
                    file.display()
                );
                anyhow::ensure!(
                    self.public_url.is_some(),
                    "--github-oauth-client-id needs --public-url (the sign-in callback lives there)"
                );
                Some(countersign_github::oauth::OAuthClient {
                    client_id: id.clone(),
                    client_secret: secrecy::SecretString::from(secret.to_owned()),
                })
            }
            (None, None) => None,
            _ => anyhow::bail!(
                "--github-oauth-client-id and --github-oauth-client-secret-file must be given together"
            ),
        };
        anyhow::ensure!(
            self.policy_api_concurrency > 0,
            "--policy-api-concurrency must be at least 1"
        );
        anyhow::ensure!(
            self.policy_api_memory_mib >= 32,
            "--policy-api-memory-mib must be at least 32"
        );
        let program = std::env::current_exe()
            .context("Cannot find this program to run policy API workers")?;
        Ok(crate::server::HttpOptions {
            gate_pages: self.gate_pages,
            public_url: self.public_url.as_ref().map(ToString::to_string),
            oauth,
            public_repositories_open: self.gate_pages_public_repos,
            policy: crate::api::PolicyLimits {
                concurrency: self.policy_api_concurrency,
                timeout: self.policy_api_timeout.0,
                isolation: crate::api::Isolation::Process {
                    program,
                    memory_limit: self.policy_api_memory_mib * 1024 * 1024,
                },
            },
        })
    }

    /// The listeners' time limits; each must be above zero.
    pub fn connection_limits(&self) -> anyhow::Result<crate::listener::ConnectionLimits> {
        for (flag, value) in [
            ("--header-read-timeout", self.header_read_timeout),
            ("--body-read-timeout", self.body_read_timeout),
            ("--idle-timeout", self.idle_timeout),
        ] {
            anyhow::ensure!(!value.0.is_zero(), "{flag} must be above zero");
        }
        Ok(crate::listener::ConnectionLimits {
            header_read: self.header_read_timeout.0,
            body_read: self.body_read_timeout.0,
            idle: self.idle_timeout.0,
        })
    }

    /// The webhook endpoint's limits beyond the queue length.
    pub fn delivery_limits(&self) -> anyhow::Result<crate::server::DeliveryLimits> {
        anyhow::ensure!(self.queue > 0, "--queue must be at least 1");
        anyhow::ensure!(
            self.queue_per_issue > 0,
            "--queue-per-issue must be at least 1"
        );
        let largest = countersign_webhooks::github::ingress::MAX_BODY_BYTES as u64;
        let budget = self.unverified_body_budget_mib.saturating_mul(1024 * 1024);
        anyhow::ensure!(
            budget >= largest,
            "--unverified-body-budget-mib must be at least {} (GitHub's largest delivery)",
            largest / (1024 * 1024)
        );
        Ok(crate::server::DeliveryLimits {
            per_issue: self.queue_per_issue.min(self.queue),
            unverified_body_budget: usize::try_from(budget).unwrap_or(usize::MAX),
            enqueue_timeout: crate::server::ENQUEUE_TIMEOUT,
            in_flight: self.max_in_flight.max(1),
        })
    }

    /// The operator's allow-list, when given.
    pub fn allowed_repositories(
        &self,
    ) -> anyhow::Result<Option<countersign_policies::ownership::RepositoryAllowList>> {
        if self
            .allowed_repositories
            .iter()
            .all(|e| e.trim().is_empty())
        {
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
        read_webhook_secrets(&self.webhook_secret_files)
    }
}

/// Reads the webhook secret files (trailing newlines trimmed); empty files are refused.
pub fn read_webhook_secrets(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    {
        files
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::BotArgs;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bot: BotArgs,
    }

    fn parse(extra: &[&str]) -> Result<BotArgs, clap::Error> {
        let required = [
            "countersign-bot",
            "--github-app-id=1",
            "--github-app-private-key-file=app.pem",
            "--webhook-secret-file=secret",
        ];
        Cli::try_parse_from(required.iter().chain(extra)).map(|cli| cli.bot)
    }

    #[test]
    fn the_front_door_limits_default_sanely_and_are_checked() {
        let args = parse(&[]).expect("defaults");
        let limits = args.connection_limits().expect("default limits");
        assert_eq!(limits, crate::listener::ConnectionLimits::default());
        assert_eq!(limits.header_read, Duration::from_secs(10));
        assert_eq!(limits.body_read, Duration::from_secs(30));
        assert_eq!(limits.idle, Duration::from_secs(60));
        let delivery = args.delivery_limits().expect("default delivery limits");
        assert_eq!(delivery.per_issue, 64);
        assert_eq!(delivery.unverified_body_budget, 64 * 1024 * 1024);

        let args = parse(&["--queue=8", "--header-read-timeout=500ms"]).expect("flags");
        assert_eq!(
            args.delivery_limits().expect("limits").per_issue,
            8,
            "capped"
        );
        assert_eq!(
            args.connection_limits().expect("limits").header_read,
            Duration::from_millis(500)
        );

        for refused in [
            &["--idle-timeout=0s"][..],
            &["--unverified-body-budget-mib=24"],
            &["--queue-per-issue=0"],
        ] {
            let args = parse(refused).expect("parses");
            assert!(
                args.connection_limits().is_err() || args.delivery_limits().is_err(),
                "{refused:?}"
            );
        }
    }
}
