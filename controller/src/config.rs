//! Command-line flags and environment variables of `countersign controller`, and their
//! validation into [`Settings`] (for the reconcilers) and a [`LeaseConfig`] (for leader
//! election). Invalid combinations are rejected here, before anything starts serving.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use countersign_crds::GoDuration;

use crate::leader::LeaseConfig;
use crate::settings::Settings;

/// Name of the Lease the controllers campaign on unless told otherwise.
pub const DEFAULT_LEASE_NAME: &str = "countersign-controller";

/// Image of agent pods whose Agent names none: the image of this very release.
pub const DEFAULT_AGENT_IMAGE: &str = concat!(
    "ghcr.io/countersign-dev/countersign:",
    env!("CARGO_PKG_VERSION")
);

/// The agent program inside the agent image (comma-separated argv): the image's
/// `countersign` binary, found on `PATH` (`/usr/local/bin` in the Dockerfile).
pub const DEFAULT_AGENT_COMMAND: &str = "countersign,agent";

/// Flags of `countersign controller`. Every flag can also be set through the environment
/// variable named in its help.
#[derive(clap::Args, Clone, Debug)]
pub struct ControllerArgs {
    /// Watch and act in this namespace only (all namespaces when unset).
    #[arg(long, env = "COUNTERSIGN_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Image of agent pods whose Agent does not name one.
    #[arg(long, env = "COUNTERSIGN_AGENT_IMAGE", default_value = DEFAULT_AGENT_IMAGE)]
    pub agent_image: String,

    /// Command (comma-separated argv) that starts the agent program inside the agent image.
    #[arg(
        long,
        env = "COUNTERSIGN_AGENT_COMMAND",
        value_delimiter = ',',
        default_value = DEFAULT_AGENT_COMMAND,
        value_name = "ARGV"
    )]
    pub agent_command: Vec<String>,

    /// How often every object is reconciled without a change, to repair drift a lost watch
    /// event or a hand-made change left behind (Go duration: `30s`, `5m`, `1h`).
    #[arg(long, env = "COUNTERSIGN_RESYNC_INTERVAL", default_value = "5m")]
    pub resync_interval: GoDuration,

    /// Wait before the first retry of a failed agent-run attempt; doubles per attempt.
    #[arg(long, env = "COUNTERSIGN_RETRY_BACKOFF_BASE", default_value = "10s")]
    pub retry_backoff_base: GoDuration,

    /// Longest wait between two attempts of an agent run.
    #[arg(long, env = "COUNTERSIGN_RETRY_BACKOFF_MAX", default_value = "5m")]
    pub retry_backoff_max: GoDuration,

    /// How often a run that waits for capacity or for a missing dependency is looked at again.
    #[arg(long, env = "COUNTERSIGN_WAIT_REQUEUE", default_value = "30s")]
    pub wait_requeue: GoDuration,

    /// Extra time after an attempt's timeout before the controller gives up on its pod.
    #[arg(long, env = "COUNTERSIGN_TIMEOUT_GRACE", default_value = "60s")]
    pub timeout_grace: GoDuration,

    /// How long an attempt's pod may fail to start (image pull or container configuration
    /// errors, which the kubelet keeps retrying) before the attempt fails and is retried.
    #[arg(long, env = "COUNTERSIGN_POD_START_GRACE", default_value = "2m")]
    pub pod_start_grace: GoDuration,

    /// How long an attempt's pod may stay unschedulable before the attempt fails and is
    /// retried (long enough for a cluster autoscaler to add a node).
    #[arg(long, env = "COUNTERSIGN_UNSCHEDULABLE_GRACE", default_value = "5m")]
    pub unschedulable_grace: GoDuration,

    /// Public base URL of `countersign bot` (e.g. `https://countersign.example.com`), the
    /// same value as the bot's `--public-url`. The `countersign/approval` check links each
    /// pull request to its gate page under `/gates/NAMESPACE/NAME` there. No link when unset.
    /// (`--gates-url` is the old name and still accepted.)
    #[arg(
        long = "public-url",
        alias = "gates-url",
        env = "COUNTERSIGN_PUBLIC_URL",
        value_name = "URL"
    )]
    pub gates_url: Option<String>,

    /// Base URL agent pods clone from and push to (`<URL>/<owner>/<repo>.git`)
    /// [default: derived from --github-api-url: `https://github.com` for api.github.com,
    /// `https://HOST` for GitHub Enterprise Server's `https://HOST/api/v3`].
    #[arg(long, env = "GITHUB_GIT_URL", value_name = "URL")]
    pub github_git_url: Option<String>,

    /// Which namespaces' Projects may manage which GitHub repositories, as comma-separated
    /// `NAMESPACE=OWNER/REPOSITORY` entries where `*` matches any run of characters (e.g.
    /// `team-a=acme/*,team-b=acme/billing-*,platform=*/*`). A Project outside its
    /// namespace's allowance manages nothing. Unset: with `--namespace`, that namespace may
    /// manage any repository; cluster-wide, no namespace may (a shared cluster must say who
    /// may manage what). `*=*/*` trusts every namespace. Give the bot the same.
    #[arg(
        long = "allowed-repositories",
        env = "COUNTERSIGN_ALLOWED_REPOSITORIES",
        value_delimiter = ',',
        value_name = "NS=OWNER/REPO"
    )]
    pub allowed_repositories: Vec<String>,

    /// Base URL of the provider gateway as agent pods reach it (e.g.
    /// `http://countersign-gateway.countersign-system.svc:8080`). Agent pods have no provider
    /// keys: without a gateway, runs wait with a condition saying so.
    #[arg(long, env = "COUNTERSIGN_GATEWAY_URL", value_name = "URL")]
    pub gateway_url: Option<String>,

    /// Namespace of the gateway's pods, for the agent pods' NetworkPolicy [default:
    /// $POD_NAMESPACE, else `countersign-system`].
    #[arg(long, env = "COUNTERSIGN_GATEWAY_NAMESPACE", value_name = "NAMESPACE")]
    pub gateway_namespace: Option<String>,

    /// Labels of the gateway's pods (`k=v,k=v`), for the agent pods' NetworkPolicy.
    #[arg(
        long,
        env = "COUNTERSIGN_GATEWAY_POD_LABELS",
        default_value = "app.kubernetes.io/name=countersign-gateway",
        value_name = "LABELS"
    )]
    pub gateway_pod_labels: String,

    /// Address blocks (comma-separated CIDRs) agent pods may reach the git host at, on the
    /// git URL's port; `public` allows any public address instead [default: GitHub's
    /// published git ranges, see docs/security.md].
    #[arg(long, env = "COUNTERSIGN_GIT_EGRESS_CIDRS", value_name = "CIDRS")]
    pub git_egress_cidrs: Option<String>,

    /// Address of the HTTP server for `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "COUNTERSIGN_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Campaign for a coordination.k8s.io Lease and reconcile only while holding it. Turn off
    /// only when exactly one replica can ever run.
    #[arg(
        long,
        env = "COUNTERSIGN_LEADER_ELECT",
        default_value = "true",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        value_name = "BOOL"
    )]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "COUNTERSIGN_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,

    /// Namespace of the leader-election Lease [default: $POD_NAMESPACE, else the namespace of
    /// the in-cluster service account or kubeconfig context, else `default`].
    #[arg(long, env = "COUNTERSIGN_LEASE_NAMESPACE", value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease [default: $POD_NAME, else the host name plus a
    /// random suffix].
    #[arg(long, env = "COUNTERSIGN_LEASE_IDENTITY", value_name = "ID")]
    pub lease_identity: Option<String>,

    /// How long a Lease stays valid after its holder last renewed it; a standby takes over at
    /// most this long after the leader stops renewing (whole seconds).
    #[arg(long, env = "COUNTERSIGN_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: GoDuration,

    /// How long before expiry the holder renews; also the clock skew tolerated between nodes
    /// (whole seconds, shorter than the lease duration).
    #[arg(long, env = "COUNTERSIGN_LEASE_GRACE", default_value = "5s")]
    pub lease_grace: GoDuration,

    /// Kubeconfig file to use instead of the in-cluster configuration or `$KUBECONFIG`.
    #[arg(long, env = "COUNTERSIGN_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// The GitHub App that mints repository-scoped tokens for agent pods. Without it, runs
    /// that need a token wait with a condition saying GitHub is not configured.
    #[command(flatten)]
    pub github: countersign_github::args::GitHubAppArgs,
}

/// `k=v,k=v` as a label map; `None` when malformed or empty.
fn parse_labels(text: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let mut labels = std::collections::BTreeMap::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        if k.trim().is_empty() {
            return None;
        }
        labels.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    (!labels.is_empty()).then_some(labels)
}

/// Whether `text` is an IPv4 or IPv6 CIDR block.
fn is_cidr(text: &str) -> bool {
    let Some((addr, bits)) = text.split_once('/') else {
        return false;
    };
    match (addr.parse::<std::net::IpAddr>(), bits.parse::<u8>()) {
        (Ok(std::net::IpAddr::V4(_)), Ok(b)) => b <= 32,
        (Ok(std::net::IpAddr::V6(_)), Ok(b)) => b <= 128,
        _ => false,
    }
}

/// A flag value or combination that cannot work. Each message names the flags involved.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--public-url` is not an absolute http(s) URL.
    #[error("--public-url {url:?} is not an absolute http(s) URL: {problem}")]
    InvalidGatesUrl {
        /// The value given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `--github-git-url` is not an absolute http(s) URL.
    #[error("--github-git-url {url:?} is not an absolute http(s) URL: {problem}")]
    InvalidGitUrl {
        /// The value given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `--gateway-url` is not an http(s) URL.
    #[error("--gateway-url {url:?} is not usable: {problem}")]
    InvalidGatewayUrl {
        /// The value given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `--gateway-pod-labels` is not `k=v,k=v`.
    #[error(
        "--gateway-pod-labels {0:?} must be labels like app.kubernetes.io/name=countersign-gateway"
    )]
    InvalidGatewayLabels(String),
    /// `--git-egress-cidrs` is neither `public` nor a list of CIDR blocks.
    #[error("--git-egress-cidrs {0:?} must be `public` or comma-separated CIDR blocks")]
    InvalidGitCidrs(String),
    /// A duration that must be positive is zero.
    #[error("--{flag} must be longer than 0s")]
    ZeroDuration {
        /// The flag, without dashes.
        flag: &'static str,
    },
    /// The first retry would wait longer than the longest allowed wait.
    #[error("--retry-backoff-base ({base}) must not be longer than --retry-backoff-max ({max})")]
    BackoffBaseAboveMax {
        /// The configured base.
        base: GoDuration,
        /// The configured maximum.
        max: GoDuration,
    },
    /// A Lease timing that is not a whole number of seconds (the Lease stores seconds).
    #[error("--{flag} ({value}) must be a whole number of seconds, e.g. 15s")]
    NotWholeSeconds {
        /// The flag, without dashes.
        flag: &'static str,
        /// The configured value.
        value: GoDuration,
    },
    /// The holder would renew after the Lease has already expired.
    #[error("--lease-grace ({grace}) must be shorter than --lease-duration ({duration})")]
    GraceNotBelowDuration {
        /// The configured grace.
        grace: GoDuration,
        /// The configured duration.
        duration: GoDuration,
    },
    /// No agent program to start.
    #[error("--agent-command must name at least one non-empty argument")]
    EmptyAgentCommand,
    /// No default agent image.
    #[error("--agent-image must not be empty")]
    EmptyAgentImage,
    /// A namespace or object name Kubernetes would refuse.
    #[error(
        "--{flag} {value:?} is not a valid Kubernetes name (lowercase letters, digits and '-', \
         starting and ending with a letter or digit, at most {max} characters)"
    )]
    InvalidName {
        /// The flag, without dashes.
        flag: &'static str,
        /// The configured value.
        value: String,
        /// The longest allowed length.
        max: usize,
    },
    /// An empty Lease holder identity.
    #[error("--lease-identity must not be empty")]
    EmptyIdentity,
    /// An `--allowed-repositories` entry that does not parse.
    #[error("--allowed-repositories: {0}")]
    AllowedRepositories(#[from] countersign_policies::ownership::AllowListError),
}

impl ControllerArgs {
    /// The reconcilers' settings, or the first invalid flag combination.
    #[allow(
        clippy::field_reassign_with_default,
        reason = "settings the reconcilers add later keep their defaults until they get a flag"
    )]
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        if let Some(ns) = &self.namespace {
            check_name("namespace", ns, 63)?;
        }
        if self.agent_image.trim().is_empty() {
            return Err(ConfigError::EmptyAgentImage);
        }
        if self.agent_command.is_empty() || self.agent_command.iter().any(|a| a.is_empty()) {
            return Err(ConfigError::EmptyAgentCommand);
        }
        for (flag, value) in [
            ("resync-interval", self.resync_interval),
            ("retry-backoff-base", self.retry_backoff_base),
            ("retry-backoff-max", self.retry_backoff_max),
            ("wait-requeue", self.wait_requeue),
        ] {
            if value.0.is_zero() {
                return Err(ConfigError::ZeroDuration { flag });
            }
        }
        if self.retry_backoff_base > self.retry_backoff_max {
            return Err(ConfigError::BackoffBaseAboveMax {
                base: self.retry_backoff_base,
                max: self.retry_backoff_max,
            });
        }
        let mut settings = Settings::default();
        settings.namespace = self.namespace.clone();
        settings.agent_image = self.agent_image.clone();
        settings.agent_command = self.agent_command.clone();
        settings.resync_interval = self.resync_interval.0;
        settings.retry_backoff_base = self.retry_backoff_base.0;
        settings.retry_backoff_max = self.retry_backoff_max.0;
        settings.wait_requeue = self.wait_requeue.0;
        settings.timeout_grace = self.timeout_grace.0;
        settings.pod_start_grace = self.pod_start_grace.0;
        settings.unschedulable_grace = self.unschedulable_grace.0;
        if let Some(url) = &self.gates_url {
            let parsed = url::Url::parse(url).map_err(|e| ConfigError::InvalidGatesUrl {
                url: url.clone(),
                problem: e.to_string(),
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(ConfigError::InvalidGatesUrl {
                    url: url.clone(),
                    problem: "only http and https links work in GitHub checks".to_owned(),
                });
            }
            settings.gates_url = Some(url.clone());
        }
        settings.git_url = match &self.github_git_url {
            Some(url) => {
                let parsed = url::Url::parse(url).map_err(|e| ConfigError::InvalidGitUrl {
                    url: url.clone(),
                    problem: e.to_string(),
                })?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(ConfigError::InvalidGitUrl {
                        url: url.clone(),
                        problem: "agents clone over http or https".to_owned(),
                    });
                }
                url.trim_end_matches('/').to_owned()
            }
            None => crate::settings::git_url_for_api(&self.github.github_api_url),
        };
        if self
            .allowed_repositories
            .iter()
            .any(|e| !e.trim().is_empty())
        {
            settings.allowed_repositories =
                Some(countersign_policies::ownership::RepositoryAllowList::parse(
                    &self.allowed_repositories,
                )?);
        }
        settings.gateway = match &self.gateway_url {
            Some(url) => {
                let namespace = self
                    .gateway_namespace
                    .clone()
                    .or_else(|| std::env::var("POD_NAMESPACE").ok())
                    .unwrap_or_else(|| "countersign-system".to_owned());
                let labels = parse_labels(&self.gateway_pod_labels).ok_or_else(|| {
                    ConfigError::InvalidGatewayLabels(self.gateway_pod_labels.clone())
                })?;
                Some(
                    crate::settings::GatewaySettings::new(url, &namespace, labels).map_err(
                        |problem| ConfigError::InvalidGatewayUrl {
                            url: url.clone(),
                            problem,
                        },
                    )?,
                )
            }
            None => None,
        };
        if let Some(cidrs) = &self.git_egress_cidrs {
            settings.git_egress = if cidrs.trim() == "public" {
                crate::settings::GitEgress::Public
            } else {
                let list: Vec<String> = cidrs
                    .split(',')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty())
                    .collect();
                if list.is_empty() || list.iter().any(|c| !is_cidr(c)) {
                    return Err(ConfigError::InvalidGitCidrs(cidrs.clone()));
                }
                crate::settings::GitEgress::Cidrs(list)
            };
        }
        Ok(settings)
    }

    /// The Lease to campaign on, or `None` when leader election is off. `client_namespace` is
    /// the namespace of the in-cluster service account or kubeconfig context, used when
    /// neither `--lease-namespace` nor `$POD_NAMESPACE` is set.
    pub fn lease(&self, client_namespace: &str) -> Result<Option<LeaseConfig>, ConfigError> {
        self.lease_with_env(client_namespace, |name| std::env::var(name).ok())
    }

    /// [`Self::lease`] with the process environment injected, so tests need not mutate it.
    fn lease_with_env(
        &self,
        client_namespace: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<LeaseConfig>, ConfigError> {
        // Validated even when election is off, so turning it on later cannot surprise.
        check_name("lease-name", &self.lease_name, 253)?;
        let duration = whole_seconds("lease-duration", self.lease_duration)?;
        let grace = whole_seconds("lease-grace", self.lease_grace)?;
        if grace >= duration {
            return Err(ConfigError::GraceNotBelowDuration {
                grace: self.lease_grace,
                duration: self.lease_duration,
            });
        }
        if !self.leader_elect {
            return Ok(None);
        }
        let namespace = self
            .lease_namespace
            .clone()
            .or_else(|| env("POD_NAMESPACE").filter(|ns| !ns.is_empty()))
            .unwrap_or_else(|| client_namespace.to_owned());
        let namespace = if namespace.is_empty() {
            "default".to_owned()
        } else {
            namespace
        };
        check_name("lease-namespace", &namespace, 63)?;
        let identity = match &self.lease_identity {
            Some(id) if id.trim().is_empty() => return Err(ConfigError::EmptyIdentity),
            Some(id) => id.clone(),
            None => default_identity(&env),
        };
        Ok(Some(LeaseConfig {
            name: self.lease_name.clone(),
            namespace,
            identity,
            duration,
            grace,
        }))
    }
}

/// `$POD_NAME` (unique per pod), else the host name with a random suffix so two processes on
/// one host never share an identity.
fn default_identity(env: &impl Fn(&str) -> Option<String>) -> String {
    if let Some(pod) = env("POD_NAME").filter(|p| !p.trim().is_empty()) {
        return pod;
    }
    let host = env("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| DEFAULT_LEASE_NAME.to_owned());
    format!("{host}-{}", random_suffix())
}

/// Eight hex digits that differ between processes (std's per-process random hash keys).
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    format!("{:08x}", hasher.finish() as u32)
}

fn whole_seconds(flag: &'static str, value: GoDuration) -> Result<Duration, ConfigError> {
    if value.0.is_zero() {
        return Err(ConfigError::ZeroDuration { flag });
    }
    if value.0.subsec_nanos() != 0 {
        return Err(ConfigError::NotWholeSeconds { flag, value });
    }
    Ok(value.0)
}

/// An RFC 1123 label (namespaces) or subdomain-like name (Leases) check, enough to fail at
/// start-up rather than on the first API call.
fn check_name(flag: &'static str, value: &str, max: usize) -> Result<(), ConfigError> {
    let bytes = value.as_bytes();
    let allowed = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let dots_ok = max > 63 || !value.contains('.');
    if value.len() > max
        || !bytes.iter().all(allowed)
        || !dots_ok
        || !edge(bytes.first())
        || !edge(bytes.last())
    {
        return Err(ConfigError::InvalidName {
            flag,
            value: value.to_owned(),
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ControllerArgs,
    }

    fn parse(flags: &[&str]) -> ControllerArgs {
        let argv = std::iter::once("countersign-controller").chain(flags.iter().copied());
        Cli::try_parse_from(argv).expect("flags parse").args
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn gateway_and_git_egress_flags() {
        let settings = parse(&[
            "--gateway-url",
            "http://countersign-gateway.cs.svc:8080/",
            "--gateway-namespace",
            "cs",
            "--gateway-pod-labels",
            "app=gw, tier=ai",
            "--git-egress-cidrs",
            "10.1.0.0/16, 2001:db8::/32",
        ])
        .settings()
        .expect("valid");
        let gateway = settings.gateway.expect("gateway");
        assert_eq!(gateway.url, "http://countersign-gateway.cs.svc:8080");
        assert_eq!((gateway.namespace.as_str(), gateway.port), ("cs", 8080));
        assert_eq!(
            gateway.pod_labels.get("tier").map(String::as_str),
            Some("ai")
        );
        assert_eq!(
            settings.git_egress,
            crate::settings::GitEgress::Cidrs(vec!["10.1.0.0/16".into(), "2001:db8::/32".into()])
        );
        let public = parse(&["--git-egress-cidrs", "public"])
            .settings()
            .expect("valid");
        assert_eq!(public.git_egress, crate::settings::GitEgress::Public);
        assert_eq!(public.gateway, None);
        for bad in [
            &["--git-egress-cidrs", "github.com"][..],
            &["--git-egress-cidrs", "10.0.0.0/33"],
            &["--gateway-url", "ftp://gw"],
            &[
                "--gateway-url",
                "http://gw",
                "--gateway-pod-labels",
                "nolabel",
            ],
        ] {
            assert!(parse(bad).settings().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_match_the_reconcilers_defaults() {
        let settings = parse(&[]).settings().expect("defaults are valid");
        let defaults = Settings::default();
        assert_eq!(settings.namespace, None);
        assert_eq!(settings.agent_command, ["countersign", "agent"]);
        assert_eq!(settings.resync_interval, defaults.resync_interval);
        assert_eq!(settings.retry_backoff_base, defaults.retry_backoff_base);
        assert_eq!(settings.retry_backoff_max, defaults.retry_backoff_max);
        assert_eq!(settings.wait_requeue, defaults.wait_requeue);
        assert_eq!(settings.timeout_grace, defaults.timeout_grace);
        assert_eq!(settings.pod_start_grace, defaults.pod_start_grace);
        assert_eq!(settings.unschedulable_grace, defaults.unschedulable_grace);
        assert!(settings.agent_image.ends_with(env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn flags_become_settings() {
        let args = parse(&[
            "--namespace",
            "team-a",
            "--agent-image",
            "registry.local/agent:dev",
            "--agent-command",
            "/bin/agent,--verbose",
            "--resync-interval",
            "1m30s",
            "--retry-backoff-base",
            "500ms",
            "--retry-backoff-max",
            "2m",
        ]);
        let settings = args.settings().expect("valid");
        assert_eq!(settings.namespace.as_deref(), Some("team-a"));
        assert_eq!(settings.agent_image, "registry.local/agent:dev");
        assert_eq!(settings.agent_command, ["/bin/agent", "--verbose"]);
        assert_eq!(settings.resync_interval, Duration::from_secs(90));
        assert_eq!(settings.retry_backoff_base, Duration::from_millis(500));
        assert_eq!(settings.retry_backoff_max, Duration::from_secs(120));
    }

    #[test]
    fn bad_durations_are_rejected_by_the_parser() {
        let argv = ["x", "--resync-interval", "5 minutes"];
        let err = Cli::try_parse_from(argv).err().expect("rejected");
        assert!(err.to_string().contains("expected e.g. 90s"), "{err}");
    }

    #[test]
    fn backoff_base_above_max_is_rejected() {
        let args = parse(&["--retry-backoff-base", "10m", "--retry-backoff-max", "1m"]);
        let err = args.settings().expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "--retry-backoff-base (10m) must not be longer than --retry-backoff-max (1m)"
        );
    }

    #[test]
    fn zero_resync_and_empty_command_are_rejected() {
        let err = parse(&["--resync-interval", "0s"])
            .settings()
            .expect_err("zero");
        assert_eq!(
            err,
            ConfigError::ZeroDuration {
                flag: "resync-interval"
            }
        );
        let err = parse(&["--agent-command", ""])
            .settings()
            .expect_err("empty");
        assert_eq!(err, ConfigError::EmptyAgentCommand);
    }

    #[test]
    fn invalid_namespace_is_rejected() {
        let err = parse(&["--namespace", "Team_A"])
            .settings()
            .expect_err("bad");
        assert!(
            err.to_string().contains("\"Team_A\" is not a valid"),
            "{err}"
        );
    }

    #[test]
    fn lease_defaults_come_from_the_pod_environment() {
        let env = |name: &str| match name {
            "POD_NAMESPACE" => Some("countersign-system".to_owned()),
            "POD_NAME" => Some("countersign-controller-7d9f-abcde".to_owned()),
            _ => None,
        };
        let lease = parse(&[])
            .lease_with_env("default", env)
            .expect("valid")
            .expect("election is on by default");
        assert_eq!(lease.name, DEFAULT_LEASE_NAME);
        assert_eq!(lease.namespace, "countersign-system");
        assert_eq!(lease.identity, "countersign-controller-7d9f-abcde");
        assert_eq!(lease.duration, Duration::from_secs(15));
        assert_eq!(lease.grace, Duration::from_secs(5));
    }

    #[test]
    fn lease_falls_back_to_client_namespace_and_a_unique_host_identity() {
        let env = |name: &str| (name == "HOSTNAME").then(|| "laptop".to_owned());
        let args = parse(&[]);
        let a = args.lease_with_env("dev", env).expect("valid").expect("on");
        let b = args.lease_with_env("dev", env).expect("valid").expect("on");
        assert_eq!(a.namespace, "dev");
        assert!(a.identity.starts_with("laptop-"), "{}", a.identity);
        assert_ne!(a.identity, b.identity, "identities must not collide");
        let c = args.lease_with_env("", no_env).expect("valid").expect("on");
        assert_eq!(c.namespace, "default");
    }

    #[test]
    fn explicit_lease_flags_win() {
        let args = parse(&[
            "--lease-name",
            "cs-leader",
            "--lease-namespace",
            "ops",
            "--lease-identity",
            "replica-1",
            "--lease-duration",
            "2s",
            "--lease-grace",
            "1s",
        ]);
        let lease = args
            .lease_with_env("default", no_env)
            .expect("valid")
            .expect("on");
        assert_eq!(
            (
                lease.name.as_str(),
                lease.namespace.as_str(),
                lease.identity.as_str()
            ),
            ("cs-leader", "ops", "replica-1")
        );
        assert_eq!(lease.duration, Duration::from_secs(2));
        assert_eq!(lease.grace, Duration::from_secs(1));
    }

    #[test]
    fn leader_election_can_be_turned_off() {
        for flags in [
            &["--leader-elect=false"][..],
            &["--leader-elect", "no"][..],
            &["--leader-elect=0"][..],
        ] {
            let args = parse(flags);
            assert!(!args.leader_elect, "{flags:?}");
            assert_eq!(args.lease_with_env("default", no_env), Ok(None));
        }
        assert!(parse(&["--leader-elect"]).leader_elect);
    }

    #[test]
    fn lease_timing_is_validated() {
        let err = parse(&["--lease-duration", "5s", "--lease-grace", "5s"])
            .lease_with_env("default", no_env)
            .expect_err("grace == duration");
        assert_eq!(
            err.to_string(),
            "--lease-grace (5s) must be shorter than --lease-duration (5s)"
        );
        let err = parse(&["--lease-duration", "1500ms"])
            .lease_with_env("default", no_env)
            .expect_err("fractional");
        assert_eq!(
            err.to_string(),
            "--lease-duration (1s500ms) must be a whole number of seconds, e.g. 15s"
        );
        let err = parse(&["--lease-grace", "0s"])
            .lease_with_env("default", no_env)
            .expect_err("zero");
        assert_eq!(
            err,
            ConfigError::ZeroDuration {
                flag: "lease-grace"
            }
        );
        let err = parse(&["--lease-identity", " "])
            .lease_with_env("default", no_env)
            .expect_err("blank");
        assert_eq!(err, ConfigError::EmptyIdentity);
    }
}
