//! The task file: what the controller hands an agent pod, as JSON in the attempt's Secret
//! (mounted at [`TASK_DIR`]). Together with [`crate::result`] it is the whole contract
//! between the controller and the agent program, so both sides use these types.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentLimits, Provider};
use crate::agent_run::Task;
use crate::common::RunMode;

/// Format version of the task file.
pub const TASK_FILE_VERSION: u32 = 1;
/// Where the attempt's Secret is mounted in the agent pod.
pub const TASK_DIR: &str = "/var/run/countersign";
/// Key (and file name) of the task document in the Secret.
pub const TASK_KEY: &str = "task.json";
/// Key (and file name) of the repository token in the Secret.
pub const TOKEN_KEY: &str = "token";
/// Environment variable holding the selected provider's API key, when it has one.
pub const API_KEY_ENV: &str = "COUNTERSIGN_PROVIDER_API_KEY";

/// Everything one attempt of an agent run needs to know.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskFile {
    /// See [`TASK_FILE_VERSION`].
    pub version: u32,
    /// The AgentRun's namespace.
    pub namespace: String,
    /// The AgentRun's name.
    pub run: String,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// The repository to clone and push to.
    pub repository: TaskRepository,
    /// The branch to create and push, `countersign/<run>`.
    pub branch: String,
    /// What to do.
    pub task: Task,
    /// How the run is steered.
    pub mode: RunMode,
    /// The provider this attempt uses (its API key, if any, is in [`API_KEY_ENV`]).
    pub provider: Provider,
    /// Limits of this attempt.
    pub limits: AgentLimits,
}

/// The repository an attempt works on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TaskRepository {
    /// Owner.
    pub owner: String,
    /// Name.
    pub name: String,
    /// Base branch of the change.
    pub default_branch: String,
}

/// The branch an agent run pushes.
pub fn branch_for(run: &str) -> String {
    format!("countersign/{run}")
}
