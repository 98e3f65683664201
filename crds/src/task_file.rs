//! The task file: what the controller hands an agent pod, as JSON in the attempt's Secret
//! (mounted at [`TASK_DIR`]). Together with [`crate::result`] it is the whole contract
//! between the controller and the agent program, so both sides use these types.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentLimits, AgentRole, Guardrails, Provider, VerifyCommand};
use crate::agent_run::Task;
use crate::common::RunMode;

/// Format version of the task file. Version 2 is the three-step pod (clone, work, push).
pub const TASK_FILE_VERSION: u32 = 2;
/// Where the task document is mounted in every step of the agent pod (read-only, from the
/// attempt's Secret; it holds no secret).
pub const TASK_DIR: &str = "/var/run/countersign/task";
/// Key (and file name) of the task document in the attempt's Secret.
pub const TASK_KEY: &str = "task.json";
/// Key in the attempt's Secret of the GitHub token the `clone` step reads with
/// (`contents: read`). Mounted into `clone` only, and revoked when `clone` ends.
pub const CLONE_TOKEN_KEY: &str = "clone-token";
/// Key in the attempt's Secret of the GitHub token the `push` step pushes with
/// (`contents: write`). Mounted into `push` only.
pub const PUSH_TOKEN_KEY: &str = "push-token";
/// Key in the attempt's Secret of the per-attempt gateway token. Mounted into `work` only;
/// it reaches nothing but the provider gateway, within the attempt's budget, until the
/// attempt ends.
pub const GATEWAY_TOKEN_KEY: &str = "gateway-token";
/// Where the `clone` step finds its repository token (file [`TOKEN_FILE`]).
pub const CLONE_TOKEN_DIR: &str = "/var/run/countersign/clone";
/// Where the `push` step finds its repository token (file [`TOKEN_FILE`]).
pub const PUSH_TOKEN_DIR: &str = "/var/run/countersign/push";
/// Where the `work` step finds its gateway token (file [`TOKEN_FILE`]).
pub const GATEWAY_TOKEN_DIR: &str = "/var/run/countersign/gateway";
/// File name of a token inside its directory.
pub const TOKEN_FILE: &str = "token";
/// A small emptyDir shared by `clone` (writes) and `push` (reads) only: what the clone
/// found (the base commit), out of reach of the `work` step.
pub const HANDOFF_DIR: &str = "/var/run/countersign/handoff";
/// The workspace emptyDir: the checkout is `<workspace>/repo`, the work step's report
/// `<workspace>/`[`WORK_REPORT_FILE`].
pub const WORKSPACE_DIR: &str = "/workspace";
/// File (in the workspace, next to the checkout) where the `work` step leaves its report
/// for the `push` step. Written by model-influenced code: `push` treats it as untrusted.
pub const WORK_REPORT_FILE: &str = "work-report.json";
/// Environment variable naming the provider gateway's base URL for the `work` step.
pub const GATEWAY_URL_ENV: &str = "COUNTERSIGN_GATEWAY_URL";

/// The three steps of an agent pod, in the order they run. The names are the containers'.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Init container: clones the base branch with a read-only token.
    Clone,
    /// Init container: the model/tool loop and the verify commands; no GitHub token, no
    /// provider key.
    Work,
    /// Main container: trusted code that re-checks the change, pushes it and writes the
    /// result the controller reads.
    Push,
}

impl Step {
    /// The container name (and the `countersign agent` subcommand).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Clone => "clone",
            Step::Work => "work",
            Step::Push => "push",
        }
    }
}

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
    /// The provider this attempt uses. Its key never reaches the pod: the `work` step talks
    /// to the provider gateway, which holds the key.
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
    /// Whether this attempt proposes a work breakdown instead of a change: the first stage
    /// of an architect Agent's run that is not itself a sub-task. The breakdown is reported
    /// as the attempt's plan.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub breakdown: bool,
    /// A follow-up's attempt: clone `branch` (an open pull request's head) instead of the
    /// base branch, and push the change on top of it, never replacing what is there.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub extend_branch: bool,
    /// Guidance mode: whether the agent may still ask a question (`ask_human`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub may_ask: bool,
    /// Guidance mode: the questions asked so far and the answers to go on with.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<crate::guidance::AnsweredQuestion>,
    /// Who the agent is: its Agent's name, role and capabilities (they reach the prompt).
    /// Absent in task files written before routing existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentIdentity>,
}

/// The Agent an attempt runs as, as its prompt describes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentity {
    /// The Agent's name.
    pub name: String,
    /// Its role.
    pub role: AgentRole,
    /// Its capability tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Its description, written by the team that runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl TaskFile {
    /// The branch the clone step checks out: `branch` for a follow-up, else the base.
    pub fn clone_branch(&self) -> &str {
        if self.extend_branch {
            &self.branch
        } else {
            &self.repository.default_branch
        }
    }

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
    /// Where the branch is pushed, when not to `clone_url`: the fork of fork mode
    /// (`Project.spec.pullRequests.headRepository`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_url: Option<String>,
}

impl TaskRepository {
    /// The address the branch is pushed to: the fork in fork mode, else the repository.
    pub fn push_url(&self) -> &str {
        self.push_url.as_deref().unwrap_or(&self.clone_url)
    }
}

/// The branch an agent run pushes.
pub fn branch_for(run: &str) -> String {
    format!("countersign/{run}")
}
