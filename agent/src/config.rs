//! Flags and environment of `countersign agent`. In a pod every value comes from the
//! environment the controller sets (see `controller/src/agent_run/resources.rs`); the flags
//! exist for running the agent by hand against a task file.

use std::path::PathBuf;
use std::time::Duration;

use countersign_crds::GoDuration;
use countersign_crds::task_file::{API_KEY_ENV, TASK_DIR, TASK_KEY, TOKEN_KEY};

/// The shortest time an attempt keeps for its provider after the reserve for committing,
/// pushing and reporting, however short its timeout.
pub const MIN_WORK_TIME: Duration = Duration::from_secs(10);

/// Flags of `countersign agent`.
#[derive(clap::Args, Clone, Debug)]
pub struct AgentArgs {
    /// The attempt's task document (JSON, written by the controller into the attempt's
    /// Secret) [default: /var/run/countersign/task.json].
    #[arg(long, env = "COUNTERSIGN_TASK_FILE", value_name = "FILE")]
    pub task_file: Option<PathBuf>,

    /// File holding the repository token (a short-lived, repository-scoped GitHub App
    /// installation token) [default: /var/run/countersign/token].
    #[arg(long, env = "COUNTERSIGN_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Scratch directory; the repository is cloned into `<DIR>/repo`.
    #[arg(
        long,
        env = "COUNTERSIGN_WORKSPACE",
        default_value = "/workspace",
        value_name = "DIR"
    )]
    pub workspace: PathBuf,

    /// Where the result document is written (Kubernetes reads it as the container's
    /// termination message).
    #[arg(
        long,
        env = "COUNTERSIGN_TERMINATION_LOG",
        default_value = "/dev/termination-log",
        value_name = "FILE"
    )]
    pub termination_log: PathBuf,

    /// Time kept back from the attempt's timeout for checking, committing, pushing and
    /// reporting after the provider's work.
    #[arg(long, env = "COUNTERSIGN_AGENT_RESERVE", default_value = "60s")]
    pub reserve: GoDuration,
}

impl AgentArgs {
    /// The task file path.
    pub fn task_file(&self) -> PathBuf {
        self.task_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(TASK_DIR).join(TASK_KEY))
    }

    /// The token file path.
    pub fn token_file(&self) -> PathBuf {
        self.token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(TASK_DIR).join(TOKEN_KEY))
    }
}

/// The provider API key from [`API_KEY_ENV`], when set and not empty.
pub fn api_key_from_env() -> Option<secrecy::SecretString> {
    std::env::var(API_KEY_ENV)
        .ok()
        .filter(|k| !k.trim().is_empty())
        .map(|k| secrecy::SecretString::from(k.trim().to_owned()))
}
