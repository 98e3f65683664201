//! The task file: what the controller hands an agent pod, as JSON in the attempt's Secret
//! (mounted at [`TASK_DIR`]). Together with [`crate::result`] it is the whole contract
//! between the controller and the agent program, so both sides use these types.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentLimits, Guardrails, Provider, VerifyCommand};
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
    /// Paths the agent may or may not change.
    #[serde(default)]
    pub guardrails: Guardrails,
    /// Commands that check the change before the push.
    #[serde(default)]
    pub verify: Vec<VerifyCommand>,
    /// Who the commit is authored and committed by: the GitHub App's bot account.
    pub commit_author: CommitIdentity,
    /// In control mode, the plan a human approved; the attempt implements it. Absent in
    /// control mode, the attempt only writes a plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_plan: Option<String>,
}

impl TaskFile {
    /// Whether this attempt writes a plan instead of changing code (control mode before
    /// the plan is approved).
    pub fn is_planning(&self) -> bool {
        self.mode == RunMode::Control && self.approved_plan.is_none()
    }
}

/// A git identity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CommitIdentity {
    /// Name, e.g. `countersign[bot]`.
    pub name: String,
    /// Email, e.g. `41898282+countersign[bot]@users.noreply.github.com`, which GitHub links
    /// to the App's bot account.
    pub email: String,
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
    /// HTTPS clone address without credentials, e.g. `https://github.com/acme/api.git`.
    /// The token is handed to git separately and never written into the address.
    pub clone_url: String,
}

/// The branch an agent run pushes.
pub fn branch_for(run: &str) -> String {
    format!("countersign/{run}")
}
