//! Flags and environment of `countersign agent clone|work|push`. In a pod every value comes
//! from the environment the controller sets for that step's container (see
//! `controller/src/agent_run/resources.rs`); the flags exist for running the steps by hand.

use std::path::PathBuf;
use std::time::Duration;

use countersign_crds::GoDuration;
use countersign_crds::task_file::{
    CLONE_TOKEN_DIR, GATEWAY_TOKEN_DIR, HANDOFF_DIR, PUSH_TOKEN_DIR, TASK_DIR, TASK_KEY,
    TOKEN_FILE, WORKSPACE_DIR,
};

/// The shortest time an attempt keeps for its provider after the reserve for committing,
/// pushing and reporting, however short its timeout.
pub const MIN_WORK_TIME: Duration = Duration::from_secs(10);

/// The step to run.
#[derive(clap::Subcommand, Clone, Debug)]
pub enum AgentCommand {
    /// Init container 1: clone the base branch into the workspace with the read-only clone
    /// token, and hand the base commit to the push step.
    Clone(StepArgs),
    /// Init container 2: the model/tool loop and the verify commands, talking to the provider
    /// gateway with the attempt's gateway token; commits locally and reports to the push step.
    Work(StepArgs),
    /// Main container: re-check the work step's commit, push it with the push token and write
    /// the result the controller reads.
    Push(StepArgs),
}

/// Flags shared by the three steps (each step reads the ones it needs).
#[derive(clap::Args, Clone, Debug)]
pub struct StepArgs {
    /// The attempt's task document (JSON, from the attempt's Secret).
    #[arg(long, env = "COUNTERSIGN_TASK_FILE", value_name = "FILE")]
    pub task_file: Option<PathBuf>,

    /// Scratch directory; the repository is cloned into `<DIR>/repo`.
    #[arg(long, env = "COUNTERSIGN_WORKSPACE", default_value = WORKSPACE_DIR, value_name = "DIR")]
    pub workspace: PathBuf,

    /// Where the step writes its termination message (for `push`: the result the controller
    /// reads; for `clone`: its result when it fails).
    #[arg(
        long,
        env = "COUNTERSIGN_TERMINATION_LOG",
        default_value = "/dev/termination-log",
        value_name = "FILE"
    )]
    pub termination_log: PathBuf,

    /// Directory shared by `clone` (writes the base commit) and `push` (reads it), which the
    /// `work` step does not mount.
    #[arg(long, env = "COUNTERSIGN_HANDOFF_DIR", default_value = HANDOFF_DIR, value_name = "DIR")]
    pub handoff_dir: PathBuf,

    /// `clone`: file holding the read-only repository token.
    #[arg(long, env = "COUNTERSIGN_CLONE_TOKEN_FILE", value_name = "FILE")]
    pub clone_token_file: Option<PathBuf>,

    /// `push`: file holding the repository token it pushes with.
    #[arg(long, env = "COUNTERSIGN_PUSH_TOKEN_FILE", value_name = "FILE")]
    pub push_token_file: Option<PathBuf>,

    /// `work`: file holding the attempt's gateway token.
    #[arg(long, env = "COUNTERSIGN_GATEWAY_TOKEN_FILE", value_name = "FILE")]
    pub gateway_token_file: Option<PathBuf>,

    /// `work`: base URL of the provider gateway, e.g. `http://countersign-gateway.countersign-system:8080`.
    #[arg(long, env = countersign_crds::task_file::GATEWAY_URL_ENV, value_name = "URL")]
    pub gateway_url: Option<String>,

    /// `work`: time kept back from the attempt's timeout for the push step after the
    /// provider's work.
    #[arg(long, env = "COUNTERSIGN_AGENT_RESERVE", default_value = "60s")]
    pub reserve: GoDuration,
}

impl StepArgs {
    /// Arguments with every path at its default under `workspace` and `secrets` (for tests
    /// and hand runs: `<secrets>/task/task.json`, `<secrets>/clone/token` …).
    pub fn local(workspace: PathBuf, secrets: &std::path::Path, termination_log: PathBuf) -> Self {
        Self {
            task_file: Some(secrets.join("task").join(TASK_KEY)),
            workspace,
            termination_log,
            handoff_dir: secrets.join("handoff"),
            clone_token_file: Some(secrets.join("clone").join(TOKEN_FILE)),
            push_token_file: Some(secrets.join("push").join(TOKEN_FILE)),
            gateway_token_file: Some(secrets.join("gateway").join(TOKEN_FILE)),
            gateway_url: None,
            reserve: GoDuration(Duration::from_secs(60)),
        }
    }

    /// The task file path.
    pub fn task_file(&self) -> PathBuf {
        self.task_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(TASK_DIR).join(TASK_KEY))
    }

    /// The clone token file path.
    pub fn clone_token_file(&self) -> PathBuf {
        self.clone_token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(CLONE_TOKEN_DIR).join(TOKEN_FILE))
    }

    /// The push token file path.
    pub fn push_token_file(&self) -> PathBuf {
        self.push_token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(PUSH_TOKEN_DIR).join(TOKEN_FILE))
    }

    /// The gateway token file path.
    pub fn gateway_token_file(&self) -> PathBuf {
        self.gateway_token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(GATEWAY_TOKEN_DIR).join(TOKEN_FILE))
    }

    /// The checkout.
    pub fn repo_dir(&self) -> PathBuf {
        self.workspace.join("repo")
    }

    /// The work step's report for the push step.
    pub fn work_report(&self) -> PathBuf {
        self.workspace
            .join(countersign_crds::task_file::WORK_REPORT_FILE)
    }
}
