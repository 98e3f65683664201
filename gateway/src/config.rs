//! Flags and environment of `countersign gateway`, parsed into [`Settings`] at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;

use countersign_crds::GoDuration;

use crate::proxy::Settings;

/// Flags of `countersign gateway`.
#[derive(clap::Args, Clone, Debug)]
pub struct GatewayArgs {
    /// Address agents, `/metrics`, `/healthz` and `/readyz` are served on.
    #[arg(
        long,
        env = "COUNTERSIGN_GATEWAY_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    pub listen: SocketAddr,

    /// Serve attempts of this namespace only (all namespaces when unset).
    #[arg(long, env = "COUNTERSIGN_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Kubeconfig file to use (default: in-cluster, then `$KUBECONFIG`, then `~/.kube/config`).
    #[arg(long, env = "COUNTERSIGN_KUBECONFIG", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Longest wait for a provider's answer to start, and between two chunks of a stream.
    #[arg(
        long,
        env = "COUNTERSIGN_GATEWAY_UPSTREAM_TIMEOUT",
        default_value = "10m"
    )]
    pub upstream_timeout: GoDuration,

    /// Longest `Retry-After` or backoff waited before retrying a provider; a longer one fails
    /// over to the Agent's next provider at once.
    #[arg(
        long,
        env = "COUNTERSIGN_GATEWAY_MAX_RETRY_WAIT",
        default_value = "30s"
    )]
    pub max_retry_wait: GoDuration,

    /// Longest wait for one of the Agent's request slots before answering 429.
    #[arg(long, env = "COUNTERSIGN_GATEWAY_QUEUE_WAIT", default_value = "30s")]
    pub queue_wait: GoDuration,

    /// Requests one attempt may have in flight; an Agent gets this times its
    /// `maxConcurrentRuns` slots (per gateway replica).
    #[arg(
        long,
        env = "COUNTERSIGN_GATEWAY_REQUESTS_PER_ATTEMPT",
        default_value_t = 4
    )]
    pub requests_per_attempt: u32,

    /// Longest wait for a request's usage to be written to the ledger before its answer
    /// ends (it is written later if the apiserver is slow).
    #[arg(
        long,
        env = "COUNTERSIGN_GATEWAY_LEDGER_WRITE_TIMEOUT",
        default_value = "5s"
    )]
    pub ledger_write_timeout: GoDuration,
}

/// Why the flags cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("--{0} must be longer than 0s")]
    Zero(&'static str),
    /// `--requests-per-attempt` is 0.
    #[error("--requests-per-attempt must be at least 1")]
    NoRequests,
}

impl GatewayArgs {
    /// The settings the flags describe.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        for (flag, value) in [
            ("upstream-timeout", self.upstream_timeout),
            ("queue-wait", self.queue_wait),
            ("ledger-write-timeout", self.ledger_write_timeout),
        ] {
            if value.0.is_zero() {
                return Err(ConfigError::Zero(flag));
            }
        }
        if self.requests_per_attempt == 0 {
            return Err(ConfigError::NoRequests);
        }
        Ok(Settings {
            upstream_timeout: self.upstream_timeout.0,
            max_retry_wait: self.max_retry_wait.0,
            queue_wait: self.queue_wait.0,
            requests_per_attempt: self.requests_per_attempt,
            ledger_write_timeout: self.ledger_write_timeout.0,
            ..Settings::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: GatewayArgs,
    }

    #[test]
    fn defaults_and_invalid_values() {
        let args = Cli::try_parse_from(["gw"]).expect("defaults").args;
        let settings = args.settings().expect("valid");
        assert_eq!(settings.requests_per_attempt, 4);
        assert_eq!(settings.max_retry_wait.as_secs(), 30);
        let zero = Cli::try_parse_from(["gw", "--queue-wait", "0s"])
            .expect("parses")
            .args;
        assert_eq!(
            zero.settings().expect_err("invalid").to_string(),
            "--queue-wait must be longer than 0s"
        );
    }
}
