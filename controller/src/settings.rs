//! Runtime settings of the controller, already parsed into domain types.
//!
//! `config` turns command-line flags and environment variables into a [`Settings`]; tests
//! build one directly with [`Settings::default`] and adjust the fields they care about.

use std::time::Duration;

/// Agent and Project statuses summarise many runs; changes arriving within this window are
/// folded into one reconciliation so a burst of run updates does not list every run each time.
pub const SUMMARY_DEBOUNCE: Duration = Duration::from_secs(1);

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
    /// Public base URL of the bot's gate pages, linked from check runs.
    pub gates_url: Option<String>,
}

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
            gates_url: None,
        }
    }
}
