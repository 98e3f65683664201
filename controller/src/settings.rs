//! Runtime settings of the controller, already parsed into domain types.
//!
//! `config` turns command-line flags and environment variables into a [`Settings`]; tests
//! build one directly with [`Settings::default`] and adjust the fields they care about.

use std::time::Duration;

/// Agent and Project statuses summarise many runs; changes arriving within this window are
/// folded into one reconciliation so a burst of run updates does not list every run each time.
pub const SUMMARY_DEBOUNCE: Duration = Duration::from_secs(1);

/// Most ApprovalGates evaluated at once. Each evaluation reads its pull request with up to six
/// concurrent GitHub requests, and GitHub answers more than 100 concurrent requests from one
/// App installation with a secondary rate limit: a resync of thousands of gates, all due at
/// the same moment, must not fire them all together.
pub const GATE_CONCURRENCY: u16 = 16;

/// Most AgentRuns reconciled at once. A resync makes every run due at the same moment; each
/// reconcile looks at the whole runs cache (capacity, pods), so without a bound the memory
/// of one pass grows with the square of the number of runs.
pub const RUN_CONCURRENCY: u16 = 32;

/// The git host that serves the repositories of the GitHub REST API at `api_url`:
/// `https://api.github.com` → `https://github.com`; GitHub Enterprise Server's
/// `https://HOST/api/v3` → `https://HOST`; anything else is taken to serve both.
pub fn git_url_for_api(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if let Some(rest) = api.strip_prefix("https://api.") {
        return format!("https://{rest}");
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_owned()
}

/// GitHub's published address blocks for git (the `git` list of
/// `https://api.github.com/meta`, its stable blocks; the list also names single addresses of
/// regional edges that change, so refresh with
/// `curl -s https://api.github.com/meta | jq -r '.git[]'` and pass `--git-egress-cidrs`).
/// GitHub Enterprise Server needs its own addresses.
pub const GITHUB_GIT_CIDRS: &[&str] = &[
    "192.30.252.0/22",
    "185.199.108.0/22",
    "140.82.112.0/20",
    "143.55.64.0/20",
    "2a0a:a440::/29",
    "2606:50c0::/32",
];

/// Where agent pods may reach the git host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GitEgress {
    /// These address blocks, on the git URL's port.
    Cidrs(Vec<String>),
    /// Any public address (private, link-local and loopback ranges blocked): for git hosts
    /// whose addresses are not known in advance.
    Public,
}

/// The provider gateway agent pods reach their models through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewaySettings {
    /// Its base URL as agent pods reach it, e.g.
    /// `http://countersign-gateway.countersign-system.svc:8080`.
    pub url: String,
    /// The namespace its pods run in (for the agent pods' NetworkPolicy).
    pub namespace: String,
    /// Labels of its pods (for the agent pods' NetworkPolicy).
    pub pod_labels: std::collections::BTreeMap<String, String>,
    /// The port agent pods connect to.
    pub port: u16,
}

impl GatewaySettings {
    /// Settings for a gateway at `url` whose pods run in `namespace` with `pod_labels`.
    pub fn new(
        url: &str,
        namespace: &str,
        pod_labels: std::collections::BTreeMap<String, String>,
    ) -> Result<Self, String> {
        let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("the gateway is reached over http or https".into());
        }
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| "the URL has no port".to_owned())?;
        Ok(Self {
            url: url.trim_end_matches('/').to_owned(),
            namespace: namespace.to_owned(),
            pod_labels,
            port,
        })
    }
}

/// Everything the reconcilers need to know about how this controller was started.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch and act only in this namespace; all namespaces when `None`.
    pub namespace: Option<String>,
    /// Image of agent pods whose Agent names none (normally this controller's own image).
    pub agent_image: String,
    /// Command that starts the agent program inside the image.
    pub agent_command: Vec<String>,
    /// How often every object is reconciled even without a change, to repair drift a lost
    /// watch event or a hand-made change left behind.
    pub resync_interval: Duration,
    /// Wait before the first retry of a failed attempt; doubles per attempt.
    pub retry_backoff_base: Duration,
    /// Longest wait between attempts.
    pub retry_backoff_max: Duration,
    /// Requeue interval while a run waits for capacity or for a missing dependency.
    pub wait_requeue: Duration,
    /// Extra time after an attempt's timeout before the controller gives up on its pod.
    pub timeout_grace: Duration,
    /// How long an attempt's pod may fail to start (image pull or container configuration
    /// errors) before the attempt fails and is retried.
    pub pod_start_grace: Duration,
    /// How long an attempt's pod may stay unschedulable (no node fits it) before the attempt
    /// fails and is retried; longer than `pod_start_grace`, so an autoscaler can add a node.
    pub unschedulable_grace: Duration,
    /// Public base URL of the bot's gate pages, linked from check runs.
    pub gates_url: Option<String>,
    /// Base URL agent pods clone from and push to: `<git_url>/<owner>/<name>.git`.
    pub git_url: String,
    /// Who agent commits are made as when no GitHub App is configured (with an App, its bot
    /// account is used).
    pub commit_identity: (String, String),
    /// Which namespaces may manage which repositories (`--allowed-repositories`); `None`
    /// applies the default: with `namespace`, that namespace may manage any repository;
    /// cluster-wide, none may.
    pub allowed_repositories: Option<countersign_policies::ownership::RepositoryAllowList>,
    /// The longest reading a pull request's change with git may take (when GitHub's file
    /// listing stops at 3000 files).
    pub git_read_timeout: Duration,
    /// The provider gateway; without one, agent runs wait with a condition saying so.
    pub gateway: Option<GatewaySettings>,
    /// Where agent pods may reach the git host.
    pub git_egress: GitEgress,
}

/// How long reading a pull request's change with git may take by default.
pub const GIT_READ_TIMEOUT: Duration = Duration::from_secs(120);

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespace: None,
            agent_image: "ghcr.io/countersign-dev/countersign:latest".to_owned(),
            agent_command: vec!["countersign".to_owned(), "agent".to_owned()],
            resync_interval: Duration::from_secs(300),
            retry_backoff_base: Duration::from_secs(10),
            retry_backoff_max: Duration::from_secs(300),
            wait_requeue: Duration::from_secs(30),
            timeout_grace: Duration::from_secs(60),
            pod_start_grace: Duration::from_secs(120),
            unschedulable_grace: Duration::from_secs(300),
            gates_url: None,
            git_url: "https://github.com".to_owned(),
            commit_identity: (
                "countersign[bot]".to_owned(),
                "countersign[bot]@users.noreply.github.com".to_owned(),
            ),
            allowed_repositories: None,
            git_read_timeout: GIT_READ_TIMEOUT,
            gateway: None,
            git_egress: GitEgress::Cidrs(
                GITHUB_GIT_CIDRS.iter().map(|c| (*c).to_owned()).collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::git_url_for_api;

    #[test]
    fn git_hosts_follow_the_api_url() {
        assert_eq!(
            git_url_for_api("https://api.github.com"),
            "https://github.com"
        );
        assert_eq!(
            git_url_for_api("https://api.github.com/"),
            "https://github.com"
        );
        assert_eq!(
            git_url_for_api("https://ghe.example.com/api/v3"),
            "https://ghe.example.com"
        );
        assert_eq!(
            git_url_for_api("http://127.0.0.1:4000"),
            "http://127.0.0.1:4000"
        );
    }
}
