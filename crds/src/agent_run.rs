//! `AgentRun`: one task for one agent, from an issue label, a comment command or kubectl.
//!
//! The status stays small on purpose (etcd objects are capped at 1.5 MiB and big statuses
//! hurt every watcher): no diffs, prompts or transcripts, only outcomes and pointers.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{GitHubUser, GoDuration, LocalRef, PullRequestRef, RunMode, Usd};
use crate::conditions::Readiness;

/// Largest task body kept, in bytes. Longer issue bodies are cut before they become a task.
pub const MAX_TASK_BODY_BYTES: usize = 16 * 1024;

/// One task for one agent: what to change in which Project's repository, how it is steered,
/// and how often to retry. The controller runs it in a locked-down pod and opens the pull
/// request.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "AgentRun",
    namespaced,
    status = "AgentRunStatus",
    shortname = "csrun",
    category = "countersign",
    doc = "One task for one agent on one Project: the controller runs it in a locked-down pod, \
           pushes a branch and opens the pull request that humans countersign.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Agent","type":"string","jsonPath":".spec.agentRef.name"}"#,
    printcolumn = r#"{"name":"Routed","type":"string","jsonPath":".status.routing.agent"}"#,
    printcolumn = r#"{"name":"Parent","type":"string","jsonPath":".spec.parentRef.name"}"#,
    printcolumn = r#"{"name":"Issue","type":"integer","jsonPath":".spec.task.issueNumber"}"#,
    printcolumn = r#"{"name":"PR","type":"integer","jsonPath":".status.pullRequest.number"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.agentRef) != has(self.capabilities)", "message": "a run names either `agentRef` or `capabilities`, not both and not neither"},
    {"rule": "has(self.agentRef) == has(oldSelf.agentRef) && has(self.capabilities) == has(oldSelf.capabilities)", "message": "agentRef and capabilities are immutable"},
    {"rule": "has(self.parentRef) == has(oldSelf.parentRef)", "message": "parentRef is set only at creation"},
    {"rule": "has(self.followUpOf) == has(oldSelf.followUpOf)", "message": "followUpOf is set only at creation"},
    {"rule": "(has(self.breakdown) && self.breakdown) == (has(oldSelf.breakdown) && oldSelf.breakdown)", "message": "breakdown is set only at creation"},
]))]
pub struct AgentRunSpec {
    /// The Project (same namespace) whose repository the agent works on. Immutable.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "projectRef is immutable"}]))]
    pub project_ref: LocalRef,
    /// The Agent (same namespace) that does the work. Immutable. Give either this or
    /// `capabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "agentRef is immutable"}]))]
    pub agent_ref: Option<LocalRef>,
    /// Instead of `agentRef`: the capabilities the work needs, e.g. `[rust, backend]`. The
    /// controller routes the run to one of the namespace's Agents whose `capabilities`
    /// include all of them (least loaded, then cheapest) once one has a free slot, and
    /// records its choice and why in `status.routing`. Immutable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(
        length(min = 1, max = 32),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    ))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "capabilities are immutable"}]))]
    pub capabilities: Vec<String>,
    /// What to do. Immutable: start a new run for a different task.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "task is immutable"}]))]
    pub task: Task,
    /// The run whose approved breakdown this run is one sub-task of, set by the controller
    /// on the child runs it creates. A child never breaks its task down again. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "parentRef is immutable"}]))]
    pub parent_ref: Option<LocalRef>,
    /// The run (same namespace) this run follows up on, set by the controller from the
    /// Project's `followUps`: it works on that run's pull request (cloning its branch and
    /// pushing on top of it) and comments there. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "followUpOf is immutable"}]))]
    pub follow_up_of: Option<LocalRef>,
    /// Ask the Agent to plan: its first attempt proposes a work breakdown (sub-tasks for
    /// other Agents, with dependencies) instead of a change, whatever its role, and the run
    /// carries it out once a human approves it with `/approve`. An `architect` Agent's runs
    /// always do. Ignored for sub-tasks (depth one), follow-ups and observation mode. Set
    /// only at creation.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub breakdown: bool,
    /// How humans steer the run. Defaults to the trigger's or the Agent's mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
    /// Set to true to stop the run: its pod is deleted and it ends Cancelled.
    #[serde(default)]
    pub cancel_requested: bool,
    /// Extra attempts after a failed one, with exponential backoff. A provider failure moves
    /// the next attempt to the Agent's next provider.
    #[serde(default = "default_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: u32,
    /// Overrides the Agent's per-attempt timeout, e.g. `45m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// Seconds after the run finishes before it (and its pods and Secrets) is deleted.
    /// Kept forever if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31536000))]
    pub ttl_seconds_after_finished: Option<u32>,
}

/// Extra attempts a run gets when its spec does not say.
pub const DEFAULT_RETRIES: u32 = 2;

fn default_retries() -> u32 {
    DEFAULT_RETRIES
}

/// The work an agent is asked to do.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// The GitHub issue this run works on. The pull request will close it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub issue_number: Option<u64>,
    /// One line saying what to do, usually the issue title.
    #[schemars(length(min = 1, max = 256))]
    pub title: String,
    /// Details, usually the issue body, with hidden HTML and comments stripped and cut to
    /// 16 KiB. Treated as untrusted input by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub body: Option<String>,
    /// Extra instructions from the person who started the run, e.g. the text after
    /// `/countersign run backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub instructions: Option<String>,
    /// Who asked for the run. That person cannot approve the resulting pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<GitHubUser>,
    /// Everyone else who asked for this run, e.g. whoever said `/retry`. Like `requestedBy`,
    /// none of them can approve the resulting pull request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub requesters: Vec<GitHubUser>,
    /// How the run was started.
    #[serde(default)]
    pub source: TaskSource,
}

/// Most entries of `task.requesters` (the schema's `maxItems`).
pub const MAX_REQUESTERS: usize = 20;

/// How a run was started.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TaskSource {
    /// A Project trigger label was added to an issue.
    IssueLabel,
    /// A `/countersign run` comment command.
    Comment,
    /// Created directly with kubectl or GitOps.
    #[default]
    Kubectl,
    /// Created by the controller from a sub-task of its parent run's approved breakdown.
    Breakdown,
    /// Created by the controller from one of the Project's `followUps`.
    FollowUp,
}

/// Where a run is in its lifecycle.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum RunPhase {
    /// Created; the controller has not looked at it yet.
    #[default]
    Pending,
    /// Waiting for capacity (Agent or Project limits).
    Queued,
    /// The agent is writing a plan (control mode).
    Planning,
    /// The plan is posted and waits for a human `/approve`.
    AwaitingPlanApproval,
    /// Guidance mode: the agent asked a question on the issue and waits for an answer
    /// (`/countersign answer …`) or for the question's deadline.
    AwaitingAnswer,
    /// The agent pod is working.
    Running,
    /// The change is pushed and its pull request awaits approval and merge.
    PullRequestOpen,
    /// The approved breakdown's child runs are working; the run finishes when they all have.
    Coordinating,
    /// Finished: the pull request merged, or the run had nothing to change.
    Succeeded,
    /// Finished without success after its retries.
    Failed,
    /// Stopped on request.
    Cancelled,
    /// Stopped because it ran out of time.
    TimedOut,
}

impl RunPhase {
    /// Whether the run has finished and will not change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }

    /// The kstatus conditions this phase implies.
    pub fn readiness(self, message: &str) -> Readiness {
        let reason = format!("{self:?}");
        let message = message.to_owned();
        match self {
            Self::Succeeded => Readiness::Ready { reason, message },
            Self::Failed | Self::TimedOut => Readiness::Stalled { reason, message },
            Self::Cancelled => Readiness::NotReady { reason, message },
            // Waiting on humans is not abnormal progress, but the run is not done either.
            Self::AwaitingPlanApproval
            | Self::AwaitingAnswer
            | Self::PullRequestOpen
            | Self::Coordinating => Readiness::NotReady { reason, message },
            Self::Pending | Self::Queued | Self::Planning | Self::Running => {
                Readiness::Progressing { reason, message }
            }
        }
    }
}

/// How one attempt ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum AttemptOutcome {
    /// The attempt finished its task.
    Succeeded,
    /// The model provider answered with an error; the next attempt uses the next provider.
    ProviderError,
    /// The model provider rate-limited the attempt; the next attempt uses the next provider.
    RateLimited,
    /// The attempt ran out of time.
    TimedOut,
    /// A guardrail refused the change (forbidden path, secret, size).
    GuardrailViolation,
    /// The pod crashed, disappeared, or the agent reported a failure; retried.
    Failed,
    /// The pod ended without a readable result (malformed, too large, unknown version). Not
    /// retried: another attempt of the same image would fail the same way.
    InvalidResult,
    /// The run was cancelled while this attempt ran.
    Cancelled,
    /// The pod did not start in time: its image could not be pulled, a container could not
    /// be made from its configuration, or no node could take it. Retried: these often pass.
    NotStarted,
    /// The pod can never start as written (an invalid image name, or an image the nodes may
    /// never pull). Not retried.
    Unstartable,
}

/// One attempt (one pod) of a run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first attempt, 2 for the first retry, …
    #[schemars(range(min = 1))]
    pub number: u32,
    /// The pod that ran this attempt.
    pub pod: String,
    /// The provider entry (`Agent.spec.providers[].name`) this attempt used.
    pub provider: String,
    /// When the pod was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the attempt ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_time: Option<Time>,
    /// How it ended; empty while running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<AttemptOutcome>,
    /// Why it ended that way, for people (e.g. `provider returned 429 Too Many Requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// Tokens and cost of this attempt, as the provider gateway counted them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The attempt's GitHub tokens revoked so far: `clone` once the clone step ended, `push`
    /// once the attempt ended. The attempt's Secret is deleted when both are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub revoked_tokens: Vec<TokenKind>,
}

/// One of an attempt's GitHub tokens.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum TokenKind {
    /// The read-only token of the clone step.
    Clone,
    /// The token the push step pushes with.
    Push,
}

/// Tokens and money a run used, summed over its attempts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Prompt tokens sent to providers.
    #[serde(default)]
    pub input_tokens: u64,
    /// Completion tokens received from providers.
    #[serde(default)]
    pub output_tokens: u64,
    /// Estimated provider cost in US dollars.
    #[serde(default)]
    pub cost: Usd,
}

/// Longest plan kept in the status, in characters.
pub const MAX_PLAN_CHARS: usize = 4096;

/// A plan proposed in control mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunPlan {
    /// The plan, in Markdown, exactly as posted on the issue and, once approved, handed to
    /// the coding attempt: only what a reader of the comment sees (hidden Markdown, HTML
    /// comments and invisible characters are removed when the plan is recorded).
    #[schemars(length(max = 4096))]
    pub text: String,
    /// The attempt that wrote it.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// What a human with an approver role said about it, once they did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<PlanDecision>,
}

/// A human's `/approve` or `/reject` of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanDecision {
    /// Whether the plan was approved (coding continues) or rejected (the run ends).
    pub approved: bool,
    /// The GitHub login of who decided, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The webhook delivery that carried the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    /// When the controller saw it.
    pub time: Time,
}

/// The comment the controller keeps up to date on the run's issue.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressComment {
    /// The comment's id on GitHub.
    #[schemars(range(min = 1))]
    pub id: u64,
    /// A fingerprint of what the comment says now, so it is edited only when that changes.
    #[schemars(length(max = 64))]
    pub digest: String,
}

/// What the controller last observed about this run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentRunStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True once the run succeeded; `Reconciling` while it progresses; `Stalled`
    /// when it failed or timed out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Where the run is: Pending, Queued, Planning, AwaitingPlanApproval, Running,
    /// PullRequestOpen, Succeeded, Failed, Cancelled or TimedOut.
    #[serde(default)]
    pub phase: RunPhase,
    /// A sentence for people about the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,
    /// Every attempt so far, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub attempts: Vec<Attempt>,
    /// The branch the agent pushed, `countersign/<run>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit the agent pushed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-f]{40}([0-9a-f]{24})?$"))]
    pub commit: Option<String>,
    /// The pull request opened for the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestRef>,
    /// The ApprovalGate guarding that pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_ref: Option<LocalRef>,
    /// Tokens and cost used so far, summed over the attempts (as the provider gateway counted
    /// them).
    #[serde(default)]
    pub usage: Usage,
    /// In control mode: the plan the agent proposed and what a human decided about it. For
    /// an architect's breakdown, the breakdown as posted on the issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<RunPlan>,
    /// The work breakdown an architect agent proposed (see `plan` for the decision). Once
    /// approved, each sub-task becomes a child run, started when the sub-tasks it depends
    /// on have succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<crate::breakdown::Breakdown>,
    /// Guidance mode: the questions the agent asked, oldest first, and how each was answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 3))]
    pub questions: Vec<AskedQuestion>,
    /// The child runs of the approved breakdown, one per sub-task, in the breakdown's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub children: Vec<ChildRun>,
    /// The one comment on the issue that follows this run through its phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_comment: Option<ProgressComment>,
    /// For a run given `capabilities` instead of an Agent: the Agent the controller chose and
    /// why. Set once, when the run is admitted; absent while it waits for a free Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<Routing>,
    /// When the first attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// A question an agent asked in guidance mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AskedQuestion {
    /// The attempt that asked it.
    #[schemars(range(min = 1))]
    pub attempt: u32,
    /// The question, for people.
    #[schemars(length(max = 500))]
    pub question: String,
    /// The answers the agent offered.
    #[schemars(length(max = 5))]
    pub options: Vec<String>,
    /// The option taken when nobody answers by the deadline.
    #[schemars(length(max = 100))]
    pub default: String,
    /// When the run stops waiting and takes the default.
    pub deadline: Time,
    /// The answer the run went on with, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub answer: Option<String>,
    /// The GitHub login of who answered; absent when the default was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_by: Option<String>,
    /// When the answer was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer_time: Option<Time>,
}

/// One sub-task of a run's breakdown and the child run doing it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChildRun {
    /// The sub-task's id in the breakdown.
    #[schemars(length(min = 1, max = 20))]
    pub task: String,
    /// The child AgentRun, `<run>-<task>`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The child's phase; absent until it is created (it waits for its dependencies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RunPhase>,
    /// For people: what the child waits for, or how it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub message: Option<String>,
    /// The child's pull request, once opened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_request: Option<PullRequestRef>,
    /// The ApprovalGate of that pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_ref: Option<LocalRef>,
}

/// The controller's choice of Agent for a run that asked for capabilities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    /// The chosen Agent (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub agent: String,
    /// Why, for people: each candidate's load and price, and what decided.
    #[schemars(length(max = 1024))]
    pub reason: String,
    /// When the choice was made.
    pub time: Time,
}

impl AgentRunSpec {
    /// Who the run asks for: the named Agent, or any Agent with its capabilities.
    pub fn assignee(&self) -> crate::project::Assignee<'_> {
        match &self.agent_ref {
            Some(agent) => crate::project::Assignee::Agent(&agent.name),
            None => crate::project::Assignee::capabilities(&self.capabilities),
        }
    }
}

impl AgentRun {
    /// The Agent doing the work: `spec.agentRef`, or the Agent the controller routed the run
    /// to. `None` while a run given capabilities waits for one.
    pub fn agent_name(&self) -> Option<&str> {
        match &self.spec.agent_ref {
            Some(agent) => Some(agent.name.as_str()),
            None => self
                .status
                .as_ref()
                .and_then(|s| s.routing.as_ref())
                .map(|r| r.agent.as_str()),
        }
    }
}
