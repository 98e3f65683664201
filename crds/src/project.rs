//! `Project`: one GitHub repository placed under Countersign's management.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{GitHubTeam, GitHubUser, LocalRef, RoleName, RunMode, Usd};

/// A GitHub repository managed by Countersign: where agents may work, who may start them,
/// who holds which approver role, and which RiskPolicy scores its pull requests.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "Project",
    namespaced,
    status = "ProjectStatus",
    shortname = "csproj",
    category = "countersign",
    doc = "A GitHub repository managed by Countersign: trigger labels that start agents, who may \
           start them, approver roles, limits, and the RiskPolicy that scores its pull requests.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".spec.repository.owner"}"#,
    printcolumn = r#"{"name":"Repository","type":"string","jsonPath":".spec.repository.name"}"#,
    printcolumn = r#"{"name":"Active Runs","type":"integer","jsonPath":".status.activeRuns"}"#,
    printcolumn = r#"{"name":"Open Gates","type":"integer","jsonPath":".status.openGates"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    /// The GitHub repository this Project manages.
    pub repository: Repository,
    /// The GitHub App installation that grants Countersign access to the repository. The
    /// installation used is always the one GitHub reports for the repository; a value here
    /// is only checked against it (a mismatch stops the Project with `InstallationMismatch`).
    /// Leave empty to use whatever GitHub reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<Installation>,
    /// What starts agent runs on this repository and who may start them.
    #[serde(default)]
    pub triggers: Triggers,
    /// Approver roles (developer, tech_lead, manager, security_team, cto, or your own) bound
    /// to GitHub users and teams. RiskPolicy workflows require approvals by role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["role"]))]
    pub roles: Vec<RoleBinding>,
    /// Budgets that keep agents on this repository within bounds. Runs over a limit wait in
    /// the queue instead of failing.
    #[serde(default)]
    pub limits: ProjectLimits,
    /// The RiskPolicy (same namespace) that scores this repository's pull requests.
    /// Defaults to the policy named `default`.
    #[serde(default = "default_risk_policy")]
    pub risk_policy_ref: LocalRef,
    /// Where this repository's merged changes go when Argo CD or Flux sync it to clusters.
    /// Changes under these paths count as deployments in risk scoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops: Option<GitOps>,
    /// What Countersign does on this repository's pull requests besides the check: asking
    /// the missing roles for review and merging approved pull requests.
    #[serde(default)]
    pub pull_requests: PullRequestSettings,
    /// Agents that follow up on other runs, e.g. "when an agent's pull request opens, run
    /// the `qa` Agent on it". A follow-up works on the same pull request (it pushes a commit
    /// to its branch, which the gate evaluates again, or comments its findings), asked by
    /// the same requester. A follow-up never starts another follow-up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub follow_ups: Vec<FollowUpRule>,
}

/// One follow-up: an event of an agent run and the Agent that reacts to it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FollowUpRule {
    /// What starts the follow-up. (Named `event`, not `on`: YAML 1.1 tools read a bare `on`
    /// key as `true`.)
    pub event: FollowUpEvent,
    /// The Agent (same namespace) that follows up.
    pub agent: LocalRef,
    /// Overrides the Agent's default mode for the follow-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
}

/// Events of an agent run that follow-ups react to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FollowUpEvent {
    /// An agent run (not itself a follow-up) opened its pull request.
    PullRequestOpened,
}

/// Review requests and automatic merging.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestSettings {
    /// Ask the users and teams bound to each missing role for a review, once per role and
    /// pull request. On by default.
    #[serde(default = "yes")]
    pub request_reviewers: bool,
    /// Merge a pull request as soon as its gate is Approved and every other check and
    /// status on its head commit succeeded. Off by default; branch protection still applies.
    #[serde(default)]
    pub auto_merge: bool,
    /// How automatic merges merge: `merge`, `squash` or `rebase`.
    #[serde(default)]
    pub merge_method: MergeMethod,
    /// Open agent pull requests as drafts, so nobody mistakes them for finished work before
    /// a human looked. On by default; drafts are never merged automatically.
    #[serde(default = "yes")]
    pub draft: bool,
    /// Extra labels for agent pull requests, besides `countersign/ai-generated` and
    /// `countersign/agent:<agent>` (when that fits GitHub's 50-character label limit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub labels: Vec<String>,
    /// Fork mode: agents push their branches to this fork (which the GitHub App must be
    /// installed on) and their pull requests are cross-repository, so the base repository's
    /// Actions treat them as pull requests from a fork (no secrets, and with "require approval
    /// for fork pull request workflows" no run before a maintainer approves). Unset: branches
    /// are pushed to the repository itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_repository: Option<HeadRepository>,
}

/// The fork agent branches are pushed to in fork mode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadRepository {
    /// Owner of the fork, e.g. `acme-agents`.
    #[schemars(
        length(min = 1, max = 39),
        pattern(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
    )]
    pub owner: String,
    /// Name of the fork, e.g. `payments-api`.
    #[schemars(length(min = 1, max = 100), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    /// The App installation on the fork's owner, when it differs from the repository's and
    /// should not be discovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<Installation>,
}

impl Project {
    /// The GitHub App installation serving the repository, when known without asking GitHub:
    /// the one the spec names, else the one the controller discovered (`status.installationId`).
    pub fn known_installation_id(&self) -> Option<u64> {
        self.spec
            .installation
            .as_ref()
            .map(|i| i.id)
            .or(self.status.as_ref().and_then(|s| s.installation_id))
    }
}

impl Default for PullRequestSettings {
    fn default() -> Self {
        Self {
            request_reviewers: true,
            auto_merge: false,
            merge_method: MergeMethod::default(),
            draft: true,
            labels: Vec::new(),
            head_repository: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// How a pull request is merged.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MergeMethod {
    /// A merge commit.
    Merge,
    /// One squashed commit (the default).
    #[default]
    Squash,
    /// The commits rebased onto the base branch.
    Rebase,
}

fn default_risk_policy() -> LocalRef {
    LocalRef::new("default")
}

/// A GitHub repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    /// The user or organisation that owns the repository, e.g. `acme`.
    #[schemars(
        length(min = 1, max = 39),
        pattern(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
    )]
    pub owner: String,
    /// The repository name, e.g. `payments-api`.
    #[schemars(length(min = 1, max = 100), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub name: String,
    /// The branch pull requests target by default.
    #[serde(default = "default_branch")]
    #[schemars(length(min = 1, max = 255))]
    pub default_branch: String,
}

fn default_branch() -> String {
    "main".to_owned()
}

/// The GitHub App installation used for this repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Installation {
    /// The installation id shown in the App's installation settings URL.
    #[schemars(range(min = 1))]
    pub id: u64,
}

/// What starts agent runs and who may start them.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggers {
    /// Issue labels that start an agent run. Removing the label cancels the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["label"]))]
    pub labels: Vec<LabelTrigger>,
    /// The minimum repository permission a person needs to start or steer a run. GitHub's
    /// levels, lowest first: read, triage, write, maintain, admin.
    #[serde(default)]
    pub min_permission: RepoPermission,
    /// If set, only these users may trigger runs (in addition to the permission check).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_users: Vec<GitHubUser>,
    /// If set, only members of these teams may trigger runs (in addition to the permission
    /// check). Combined with `allowedUsers` as "either".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_teams: Vec<GitHubTeam>,
    /// Let other bots and GitHub Apps trigger runs. Off by default: bots triggering bots is
    /// how loops and drive-by costs start. Countersign never reacts to its own events.
    #[serde(default)]
    pub allow_bots: bool,
    /// Agents (same namespace) that `/countersign run <agent>` may start on this repository,
    /// besides the Agents the trigger labels map. No other Agent of the namespace can be
    /// started from a comment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub agents: Vec<LocalRef>,
}

impl Triggers {
    /// Whether `/countersign run <agent>` may start `agent`: a trigger label maps it or
    /// `agents` lists it.
    pub fn maps_agent(&self, agent: &str) -> bool {
        self.labels
            .iter()
            .any(|t| t.agent.as_ref().is_some_and(|a| a.name == agent))
            || self.agents.iter().any(|a| a.name == agent)
    }

    /// The Agents comments may start, in the order the spec names them, without repeats.
    pub fn mapped_agents(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for name in self
            .labels
            .iter()
            .filter_map(|t| t.agent.as_ref().map(|a| a.name.as_str()))
            .chain(self.agents.iter().map(|a| a.name.as_str()))
        {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        names
    }
}

/// One issue label that starts a run: of one named Agent, or of whichever Agent of the
/// namespace has the capabilities it lists (the controller routes the run).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.agent) != has(self.capabilities)", "message": "a trigger names either `agent` or `capabilities`, not both and not neither"},
]))]
pub struct LabelTrigger {
    /// The issue label, e.g. `ai:backend`.
    #[schemars(length(min = 1, max = 50))]
    pub label: String,
    /// The Agent (same namespace) that works on issues with this label. Give either this or
    /// `capabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<LocalRef>,
    /// Instead of naming an Agent: the capabilities the work needs, e.g. `[rust, backend]`.
    /// The controller picks among the namespace's Agents whose `capabilities` include all of
    /// them: the least loaded (running and queued runs against `maxConcurrentRuns`), then the
    /// cheapest (its first provider's prices), and records why in the run's
    /// `status.routing`. When none has a free slot the run waits in the queue.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(min = 1, max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(inner(
        length(min = 1, max = 32),
        pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    ))]
    pub capabilities: Vec<String>,
    /// Overrides the Agent's default mode for runs started by this label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<RunMode>,
    /// Runs started by this label first propose a work breakdown for other Agents (as an
    /// `architect` Agent's runs do), whatever the Agent's role: the AgentRun's `breakdown`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub breakdown: bool,
}

/// Who works on a trigger's runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignee<'a> {
    /// This Agent.
    Agent(&'a str),
    /// Whichever Agent has all these capabilities (sorted, without repeats).
    Capabilities(Vec<&'a str>),
}

impl<'a> Assignee<'a> {
    /// Any Agent with all of `capabilities`.
    pub fn capabilities(capabilities: &'a [String]) -> Self {
        let mut caps: Vec<&str> = capabilities.iter().map(String::as_str).collect();
        caps.sort_unstable();
        caps.dedup();
        Self::Capabilities(caps)
    }

    /// The capabilities asked for (none for a named Agent).
    pub fn capability_list(&self) -> Vec<String> {
        match self {
            Self::Agent(_) => Vec::new(),
            Self::Capabilities(caps) => caps.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    /// The name a trigger's runs are keyed and named by: the Agent's name, or
    /// `any-<capability>-<capability>…` for a routed trigger.
    pub fn key(&self) -> String {
        match self {
            Self::Agent(name) => (*name).to_owned(),
            Self::Capabilities(caps) => format!("any-{}", caps.join("-")).replace('.', "-"),
        }
    }
}

impl LabelTrigger {
    /// Who works on this trigger's runs.
    pub fn assignee(&self) -> Assignee<'_> {
        match &self.agent {
            Some(agent) => Assignee::Agent(&agent.name),
            None => Assignee::capabilities(&self.capabilities),
        }
    }
}

/// A GitHub repository permission level.
#[derive(
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RepoPermission {
    /// Can read and clone.
    Read,
    /// Can manage issues and pull requests without write access.
    Triage,
    /// Can push to the repository.
    #[default]
    Write,
    /// Can manage the repository without access to sensitive actions.
    Maintain,
    /// Full access.
    Admin,
}

/// Binds an approver role to GitHub users and teams.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleBinding {
    /// The role, e.g. `tech_lead`. Lower-case letters, digits and underscores.
    pub role: RoleName,
    /// Users who hold the role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<GitHubUser>,
    /// Teams whose members hold the role. Membership is resolved by user id and cached briefly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<GitHubTeam>,
}

/// Budgets for agents working on this repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectLimits {
    /// Agent runs executing at once on this repository; further runs wait in the queue.
    #[serde(default = "default_concurrent_runs")]
    #[schemars(range(min = 1, max = 100))]
    pub max_concurrent_runs: u32,
    /// Agent runs started per UTC day; further runs wait until the next day.
    #[serde(default = "default_runs_per_day")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_runs_per_day: u32,
    /// Provider spend per UTC day in US dollars, e.g. `"50"` or `"12.50"`. Unlimited if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spend_per_day: Option<Usd>,
    /// How deep breakdowns may nest. 1 (the default): the sub-tasks of an approved breakdown
    /// make changes and never break down again. 2: a sub-task whose Agent is an architect
    /// may propose a breakdown of its own (approved on the issue like the first); at most 3.
    #[serde(default = "default_breakdown_depth")]
    #[schemars(range(min = 1, max = 3))]
    pub max_breakdown_depth: u32,
}

impl Default for ProjectLimits {
    fn default() -> Self {
        Self {
            max_concurrent_runs: default_concurrent_runs(),
            max_runs_per_day: default_runs_per_day(),
            max_spend_per_day: None,
            max_breakdown_depth: default_breakdown_depth(),
        }
    }
}

/// The deepest `limits.maxBreakdownDepth` allowed.
pub const MAX_BREAKDOWN_DEPTH: u32 = 3;

fn default_breakdown_depth() -> u32 {
    1
}

fn default_concurrent_runs() -> u32 {
    3
}

fn default_runs_per_day() -> u32 {
    50
}

/// How the repository is deployed by a GitOps tool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitOps {
    /// Globs of paths that a GitOps tool syncs to clusters, e.g. `deploy/production/**`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The Argo CD Application that syncs this repository, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argo_cd_application: Option<NamespacedRef>,
    /// The Flux Kustomization that syncs this repository, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flux_kustomization: Option<NamespacedRef>,
}

/// A reference to an object in any namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespacedRef {
    /// Name of the object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace of the object.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
}

/// What the controller last observed about this Project.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` says whether the repository, installation and RiskPolicy are usable;
    /// `Reconciling` and `Stalled` appear only while something is wrong or in progress.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The GitHub App installation id in use (given or discovered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<u64>,
    /// Agent runs of this Project currently executing.
    #[serde(default)]
    pub active_runs: u32,
    /// Agent runs of this Project waiting for capacity.
    #[serde(default)]
    pub queued_runs: u32,
    /// Approval gates of this Project whose pull request is still open.
    #[serde(default)]
    pub open_gates: u32,
    /// Agent runs admitted on `runsDay` (UTC), counted against `limits.maxRunsPerDay`. The
    /// count lives here rather than being derived from the AgentRuns, so deleting runs,
    /// pruning them (history limits, `ttlSecondsAfterFinished`) and restarting the controller
    /// do not give a day its runs back.
    #[serde(default)]
    pub runs_today: u32,
    /// The UTC day (`YYYY-MM-DD`) that `runsToday` and `runsTodayUids` count; the first
    /// admission or resync of a later day starts again from zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub runs_day: Option<String>,
    /// The uids of the runs admitted on `runsDay`. The controller adds a run here before it
    /// creates the run's first pod, with the Project's `resourceVersion` as a precondition,
    /// and admits it only while fewer than `limits.maxRunsPerDay` are listed: two controllers
    /// (or two reconciles) cannot both take the last run of the day, and none is lost.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub runs_today_uids: Vec<String>,
    /// Provider spend today (UTC) in US dollars, as the provider gateway counted it (its usage
    /// ledger, which outlives deleted runs), counted against `limits.maxSpendPerDay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spend_today: Option<Usd>,
    /// When the controller last compared this Project with GitHub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,
}
