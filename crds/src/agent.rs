//! `Agent`: a reusable AI worker definition (the agent registry).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{GoDuration, RunMode, SecretKeyRef, Usd};

/// A reusable AI coding agent: its role, the model providers it tries in order, the image
/// and resources of its pods, and the limits every run of it obeys.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "Agent",
    namespaced,
    status = "AgentStatus",
    shortname = "csagent",
    category = "countersign",
    doc = "A reusable AI coding agent: role, model providers in priority order, pod image and \
           resources, and the limits every run obeys.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Role","type":"string","jsonPath":".spec.role"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.runningRuns"}"#,
    printcolumn = r#"{"name":"Queued","type":"integer","jsonPath":".status.queuedRuns"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// What kind of work this agent does. Shown to reviewers and used to route work.
    pub role: AgentRole,
    /// A sentence for humans about what this agent is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// Free-form capability tags, e.g. `rust`, `react`, `terraform`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub capabilities: Vec<String>,
    /// Model providers in priority order. A run starts on the first; when a provider fails
    /// with an error, rate limit or timeout, the next attempt falls back to the next one.
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub providers: Vec<Provider>,
    /// Container image of the agent pod. Defaults to the Countersign image the controller runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory for the agent pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// RuntimeClass for the agent pod, e.g. `gvisor` or `kata` for stronger isolation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// How runs of this agent are steered unless the trigger or run says otherwise.
    #[serde(default)]
    pub default_mode: RunMode,
    /// Limits every run of this agent obeys.
    #[serde(default)]
    pub limits: AgentLimits,
    /// Paths the agent may or may not change. Checked before anything is committed or
    /// pushed; a change that breaks them fails the run with the path named.
    #[serde(default)]
    pub guardrails: Guardrails,
    /// Commands that check the change before it is pushed, in order, e.g. `cargo test`.
    /// When one fails, the agent sees its output and tries again within its turn budget;
    /// if it still fails, the run fails and nothing is pushed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub verify: Vec<VerifyCommand>,
    /// Runs of this agent executing at once across all Projects; further runs wait in order.
    #[serde(default = "default_max_concurrent_runs")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_runs: u32,
    /// Stop starting new runs of this agent. Running runs finish; queued runs wait.
    #[serde(default)]
    pub suspend: bool,
    /// Extra destinations this agent's pods may reach, besides DNS, the provider gateway and
    /// the git host (which every attempt's NetworkPolicy allows), e.g. a package registry
    /// mirror the verify commands need. Model providers are never listed here: they are
    /// reached through the gateway, which needs the egress instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub egress: Vec<EgressRule>,
    /// How many finished runs of this agent to keep; older ones (with their pods and
    /// Secrets) are deleted. Runs with `ttlSecondsAfterFinished` may go sooner.
    #[serde(default)]
    pub history_limits: HistoryLimits,
}

/// How many finished runs of an agent are kept, newest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryLimits {
    /// Succeeded runs to keep.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 10000))]
    pub succeeded: u32,
    /// Failed, timed-out and cancelled runs to keep.
    #[serde(default = "default_history")]
    #[schemars(range(min = 0, max = 10000))]
    pub failed: u32,
}

/// Retries of a provider whose spec does not say.
pub const DEFAULT_PROVIDER_RETRIES: u32 = 2;

impl Provider {
    /// `retries`, or [`DEFAULT_PROVIDER_RETRIES`].
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(DEFAULT_PROVIDER_RETRIES)
    }
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            succeeded: default_history(),
            failed: default_history(),
        }
    }
}

fn default_history() -> u32 {
    100
}

fn default_max_concurrent_runs() -> u32 {
    1
}

/// What kind of work an agent does.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AgentRole {
    /// User interfaces and web front ends.
    Frontend,
    /// Services, APIs and data access.
    Backend,
    /// Tests and test infrastructure.
    Qa,
    /// Build, deployment and infrastructure code.
    Devops,
    /// Design documents and cross-cutting structure.
    Architect,
    /// Analysis and reports; usually run in observation mode.
    Analyst,
}

/// One model provider an agent can use.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind != 'command' || has(self.command)", "message": "a provider of kind command needs `command`"},
    {"rule": "self.kind == 'command' || has(self.model)", "message": "openai and anthropic providers need `model`"},
]))]
pub struct Provider {
    /// A short unique name for this provider entry, e.g. `openrouter` or `local-vllm`.
    /// Recorded on each attempt so you can see which provider did the work.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub name: String,
    /// The provider protocol.
    pub kind: ProviderKind,
    /// Model identifier as the provider names it, e.g. `anthropic/claude-sonnet-4` or
    /// `qwen2.5-coder:32b`. Required for `openai` and `anthropic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 200))]
    pub model: Option<String>,
    /// Base URL of an OpenAI-compatible or Anthropic endpoint, e.g.
    /// `https://openrouter.ai/api/v1` or `http://vllm.ml.svc:8000/v1`. Defaults to the
    /// vendor's public endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^https?://"))]
    pub base_url: Option<String>,
    /// The Secret key holding the API key. Mounted only into this agent's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// For `command` providers: the command-line coding agent to run in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandProvider>,
    /// How often a request that failed with a rate limit, a 5xx answer, a dropped connection
    /// or a timeout is repeated on this provider (with backoff, honouring `Retry-After`)
    /// before the attempt ends and the run falls back to the next provider. Default 2.
    // No schema default: defaults inside list items make `kubectl apply` and GitOps tools
    // see a change on every sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: Option<u32>,
    /// Price per million input tokens in US dollars, used to enforce `limits.maxCost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_price_per_million: Option<Usd>,
    /// Price per million output tokens in US dollars, used to enforce `limits.maxCost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_price_per_million: Option<Usd>,
}

/// A provider protocol.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProviderKind {
    /// OpenAI-compatible chat completions with tool calls: OpenAI, OpenRouter, vLLM, Ollama.
    Openai,
    /// Anthropic's Messages API with tool use.
    Anthropic,
    /// Any command-line coding agent (e.g. `claude -p`, `aider`, `codex exec`) run in the
    /// checked-out workspace.
    Command,
}

/// A command-line coding agent run inside the workspace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandProvider {
    /// The program and its arguments, e.g. `["aider", "--yes", "--message-file", "-"]`.
    /// The task is written to its standard input.
    #[schemars(length(min = 1, max = 64))]
    pub command: Vec<String>,
    /// The API the command speaks to its model, which the provider gateway forwards to this
    /// provider's `baseUrl` with the key from `apiKeySecretRef`. The command gets the gateway
    /// as `OPENAI_BASE_URL`/`ANTHROPIC_BASE_URL` and the attempt's gateway token as
    /// `OPENAI_API_KEY`/`ANTHROPIC_API_KEY`, never the real key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ProviderApi>,
    /// No longer supported: values from Secrets never reach the pod, because model-written
    /// code runs there. Runs of an Agent that sets this wait with a message saying so; give
    /// the command's upstream key in `apiKeySecretRef` instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<SecretEnvVar>,
}

/// Extra egress of an agent's pods: TCP to these address blocks, on these ports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressRule {
    /// Address blocks in CIDR notation, e.g. `10.20.0.0/16` or `2001:db8::/32`.
    #[schemars(length(min = 1, max = 50))]
    pub cidrs: Vec<String>,
    /// TCP ports, e.g. `[443]`. Empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub ports: Vec<u16>,
}

/// The wire API a command-line coding agent speaks, which the gateway forwards.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProviderApi {
    /// OpenAI-compatible chat completions (`/v1/chat/completions`).
    Openai,
    /// Anthropic Messages (`/v1/messages`).
    Anthropic,
}

/// An environment variable whose value comes from a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretEnvVar {
    /// Variable name, e.g. `ANTHROPIC_API_KEY`.
    #[schemars(pattern(r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Where the value comes from.
    pub secret_key_ref: SecretKeyRef,
}

/// Paths no agent may change unless its Agent lists them in `guardrails.allowedPaths`: CI
/// workflows and actions, CODEOWNERS, and Countersign's own policy files. A change there
/// could weaken the very checks that review the agent's work.
pub const DEFAULT_FORBIDDEN_PATHS: &[&str] = &[
    ".github/workflows/**",
    ".github/actions/**",
    "CODEOWNERS",
    ".github/CODEOWNERS",
    "docs/CODEOWNERS",
    ".countersign/**",
    "**/*riskpolicy*.y*ml",
    "**/*risk-policy*.y*ml",
];

/// Paths an agent may or may not change (globs like `deploy/**` or `**/*.lock`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Guardrails {
    /// Paths the agent must never change, in addition to the built-in list (CI workflows
    /// and actions, CODEOWNERS, `.countersign/**` and RiskPolicy files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub forbidden_paths: Vec<String>,
    /// Paths exempt from the forbidden lists, e.g. `.github/workflows/**` for an agent
    /// that maintains CI. Such changes still score critical risk in the default policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub allowed_paths: Vec<String>,
}

/// A command that checks an agent's change, run in the workspace before the push.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifyCommand {
    /// A short name shown in the pull request, e.g. `unit-tests`.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub name: String,
    /// The program and its arguments, e.g. `["cargo", "test", "--quiet"]`. Run without a
    /// shell; wrap in `["sh", "-c", "…"]` for pipes.
    #[schemars(length(min = 1, max = 64))]
    pub command: Vec<String>,
    /// How long one run of the command may take, e.g. `5m`. Default 10m.
    // No schema default inside list items (see `Provider::retries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// How long a verify command may run when its spec does not say.
pub const DEFAULT_VERIFY_TIMEOUT: GoDuration = GoDuration(std::time::Duration::from_secs(10 * 60));

impl VerifyCommand {
    /// `timeout`, or [`DEFAULT_VERIFY_TIMEOUT`].
    pub fn timeout(&self) -> GoDuration {
        self.timeout.unwrap_or(DEFAULT_VERIFY_TIMEOUT)
    }
}

/// Limits every run of an agent obeys.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentLimits {
    /// Wall-clock time one attempt may take, e.g. `30m`. The pod is stopped after it.
    #[serde(default = "default_timeout")]
    pub timeout: GoDuration,
    /// Model turns (request/response rounds) one attempt may take.
    #[serde(default = "default_max_turns")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_turns: u32,
    /// Input plus output tokens one attempt may use.
    #[serde(default = "default_max_tokens")]
    #[schemars(range(min = 1000, max = 100000000))]
    pub max_tokens: u64,
    /// Provider spend one attempt may cause, in US dollars.
    #[serde(default = "default_max_cost")]
    pub max_cost: Usd,
    /// Files one run may change; larger changes fail before anything is pushed.
    #[serde(default = "default_max_changed_files")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_changed_files: u32,
    /// Lines (added plus removed) one run may change; larger changes fail before anything
    /// is pushed.
    #[serde(default = "default_max_changed_lines")]
    #[schemars(range(min = 1, max = 10000000))]
    pub max_changed_lines: u32,
    /// In guidance mode, how long a question the agent asks waits for an answer before the
    /// run goes on with the default the question named, e.g. `30m`. One hour if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_timeout: Option<GoDuration>,
}

impl Default for AgentLimits {
    fn default() -> Self {
        Self {
            timeout: default_timeout(),
            max_turns: default_max_turns(),
            max_tokens: default_max_tokens(),
            max_cost: default_max_cost(),
            max_changed_files: default_max_changed_files(),
            max_changed_lines: default_max_changed_lines(),
            answer_timeout: None,
        }
    }
}

fn default_timeout() -> GoDuration {
    GoDuration(std::time::Duration::from_secs(30 * 60))
}

fn default_max_turns() -> u32 {
    50
}

fn default_max_tokens() -> u64 {
    2_000_000
}

fn default_max_cost() -> Usd {
    Usd { cents: 500 }
}

fn default_max_changed_files() -> u32 {
    50
}

fn default_max_changed_lines() -> u32 {
    5000
}

/// Lifecycle phase of an Agent.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum AgentPhase {
    /// Just created; the controller has not checked it yet.
    #[default]
    Created,
    /// At least one run of this agent is executing.
    Active,
    /// Ready, with no run executing.
    Idle,
    /// Suspended or being deleted: no new runs start.
    Terminated,
}

/// The most recent run of an agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// Name of the AgentRun.
    pub name: String,
    /// When it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// Its phase when last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<crate::agent_run::RunPhase>,
}

/// What the controller last observed about this Agent.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is False with a reason when a provider's Secret is missing or the spec cannot
    /// be used; `Reconciling`/`Stalled` appear only while abnormal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Lifecycle phase: Created → Active (a run is executing) ↔ Idle → Terminated.
    #[serde(default)]
    pub phase: AgentPhase,
    /// Runs of this agent executing now.
    #[serde(default)]
    pub running_runs: u32,
    /// Runs of this agent waiting for capacity.
    #[serde(default)]
    pub queued_runs: u32,
    /// Runs of this agent that succeeded, since the Agent was created.
    #[serde(default)]
    pub succeeded_runs: u64,
    /// Runs of this agent that failed, timed out or were cancelled, since the Agent was created.
    #[serde(default)]
    pub failed_runs: u64,
    /// The most recently started run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRun>,
}
