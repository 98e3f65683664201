//! `ApprovalGate`: one per pull request, the audit record of its risk and approvals.
//!
//! GitHub is the source of truth for reviews and comments; the gate's status is what the
//! controller concluded from them, with every approval and why it did or did not count.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{GitHubUser, LocalRef, RoleName};
use crate::conditions::Readiness;
use crate::risk_policy::{EscalationMode, RiskFactor, RiskLevel, TimeoutAction};

/// The approval state of one pull request: its risk, the roles that must approve, every
/// approval and rejection, and the check run that tells branch protection whether it may merge.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "ApprovalGate",
    namespaced,
    status = "ApprovalGateStatus",
    shortname = "csgate",
    category = "countersign",
    doc = "The approval state of one pull request: risk score and level, required approver \
           roles, every approval with why it counted or not, deadline, and the check run that \
           branch protection requires.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"PR","type":"integer","jsonPath":".spec.pullRequestNumber"}"#,
    printcolumn = r#"{"name":"Risk","type":"string","jsonPath":".status.risk.level"}"#,
    printcolumn = r#"{"name":"Score","type":"integer","jsonPath":".status.risk.score"}"#,
    printcolumn = r#"{"name":"Deadline","type":"string","jsonPath":".status.deadline","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalGateSpec {
    /// The Project whose repository holds the pull request. Immutable.
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "projectRef is immutable"}]))]
    pub project_ref: LocalRef,
    /// The pull request number. Immutable: one gate per pull request.
    #[schemars(range(min = 1))]
    #[schemars(extend("x-kubernetes-validations" = [{"rule": "self == oldSelf", "message": "pullRequestNumber is immutable"}]))]
    pub pull_request_number: u64,
    /// The branch the pull request merges into.
    #[schemars(length(min = 1, max = 255))]
    pub base_branch: String,
    /// Who opened the pull request. The author never approves their own pull request.
    pub author: GitHubUser,
    /// Whether an agent wrote the change. AI pull requests apply separation of duties: the
    /// requester, the agent identity and every committer cannot approve.
    #[serde(default)]
    pub ai_generated: bool,
    /// The AgentRun that produced the change, when `aiGenerated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_run_ref: Option<LocalRef>,
    /// Everyone who asked for the AI run that produced the change (who started it, and
    /// whoever asked for a retry). Written by the controller when it opens the pull request,
    /// so they stay unable to approve even if the AgentRun is deleted or pruned later.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub requesters: Vec<GitHubUser>,
}

/// Where a gate stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum GatePhase {
    /// Waiting for the approvals the risk level requires.
    #[default]
    Pending,
    /// Every required role approved the current head (or the risk level auto-approves).
    Approved,
    /// A role holder requested changes or said `/reject`.
    Rejected,
    /// Someone said `/hold`; nothing merges until `/unhold`.
    Held,
    /// The deadline passed and the workflow says to expire.
    Expired,
    /// The pull request merged.
    Merged,
    /// The pull request was closed without merging.
    Closed,
}

impl GatePhase {
    /// The kstatus conditions this phase implies.
    pub fn readiness(self, message: &str) -> Readiness {
        let reason = format!("{self:?}");
        let message = message.to_owned();
        match self {
            Self::Approved | Self::Merged => Readiness::Ready { reason, message },
            Self::Expired => Readiness::Stalled { reason, message },
            Self::Pending | Self::Rejected | Self::Held | Self::Closed => {
                Readiness::NotReady { reason, message }
            }
        }
    }
}

/// The risk of the evaluated change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskAssessment {
    /// Combined score from 0 (trivial) to 10 (critical).
    #[schemars(range(min = 0, max = 10))]
    pub score: u8,
    /// The level the score falls in.
    pub level: RiskLevel,
    /// The RiskPolicy workflow applied, e.g. `supervised`.
    pub workflow: String,
    /// Each factor's score, with the rule that set it and the concrete reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub factors: Vec<FactorScore>,
}

/// One factor's contribution to the risk score.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FactorScore {
    /// The factor.
    pub factor: RiskFactor,
    /// Its score from 0 to 10.
    #[schemars(range(min = 0, max = 10))]
    pub score: u8,
    /// The RiskPolicy rule that set it, empty for the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why, concretely, e.g. `migrations/0042_add_index.sql matched data-migration (migrations/**)`.
    #[schemars(length(max = 1024))]
    pub reason: String,
}

/// What one role must contribute.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRequirement {
    /// The role.
    pub role: RoleName,
    /// Approvals needed from holders of this role.
    #[schemars(range(min = 1, max = 10))]
    pub count: u32,
    /// Valid approvals counted so far.
    #[serde(default)]
    pub satisfied: u32,
    /// Logins whose approvals counted for this role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved_by: Vec<String>,
    /// After an escalation in `standIn` mode that found this role missing: the escalation
    /// role, one of whose holders may approve in this role's place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stand_in: Option<RoleName>,
    /// The login of the `standIn` holder whose approval satisfied this requirement in place
    /// of the role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stood_in_by: Option<String>,
}

/// One approval or rejection as recorded for the audit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalRecord {
    /// Who.
    pub user: GitHubUser,
    /// The roles this person holds on the Project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleName>,
    /// Approve or reject.
    pub decision: Decision,
    /// The head commit the decision was made on; empty when nobody recorded it (a comment
    /// the bot never received, which then counts for no head).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(pattern(r"^([0-9a-f]{40}([0-9a-f]{24})?)?$"))]
    pub sha: String,
    /// When.
    pub time: Time,
    /// Where the decision was made.
    pub via: ApprovalVia,
    /// Whether it counts.
    pub valid: bool,
    /// Why it does not count, when `valid` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<InvalidReason>,
}

/// An approval decision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// Approve the change.
    Approve,
    /// Reject the change (request changes or `/reject`).
    Reject,
}

/// Where an approval was given.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ApprovalVia {
    /// A GitHub pull request review.
    Review,
    /// An `/approve` or `/reject` comment command.
    Comment,
    /// Recorded through the Kubernetes API.
    Kubectl,
}

/// Why an approval does not count.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum InvalidReason {
    /// Given on an older head whose change (`changeId`: the diff from the merge base) differs
    /// from the current one.
    Stale,
    /// The pull request's author approved their own change.
    #[serde(rename = "self")]
    SelfApproval,
    /// The person who asked for the AI run approved its result.
    Requester,
    /// Someone who committed to the pull request approved it.
    Committer,
    /// The agent's own identity approved.
    Agent,
    /// The person holds none of the roles still required.
    NotInRole,
    /// The approval comment (issue comment, inline review comment or review body) was
    /// edited by someone other than its author.
    Tampered,
    /// Someone who pushed commits to the pull request's branch approved it (recorded from
    /// GitHub's `synchronize` events, whatever name the commits carry).
    Pusher,
    /// The comment's head commit is unknown: the bot never received the comment, so it
    /// never recorded which head it was written on. Say the command again.
    HeadUnknown,
    /// The same person decided again later; only their latest decision counts.
    Superseded,
}

/// The change fingerprint of one head of the pull request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeadChange {
    /// The head commit.
    #[schemars(pattern(r"^[0-9a-f]{40}([0-9a-f]{24})?$"))]
    pub sha: String,
    /// The fingerprint of the pull request's change at that head (see `changeId`).
    #[schemars(length(max = 80))]
    pub change_id: String,
}

/// A reminder, escalation or expiry that happened at a deadline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Escalation {
    /// When it happened.
    pub time: Time,
    /// What happened.
    pub action: TimeoutAction,
    /// The role newly asked to approve, for escalations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_role: Option<RoleName>,
    /// For escalations: whether `toRole` stands in for the missing roles or is required in
    /// addition (the RiskPolicy workflow's `escalationMode` at the time). Escalations recorded
    /// without it are `additional`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<EscalationMode>,
    /// For `standIn` escalations: the roles still missing at the deadline, which one approval
    /// by a holder of `toRole` now satisfies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub stands_in_for: Vec<RoleName>,
    /// True from the moment the controller decided it until the comment announcing it is
    /// on the pull request. A controller that fails in between posts the comment on its next
    /// pass (once: the comment carries a marker it looks for first).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notice_pending: bool,
}

/// What the controller last concluded about this pull request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalGateStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is True when the pull request may merge; `Stalled` when the gate expired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Pending, Approved, Rejected, Held, Expired, Merged or Closed.
    #[serde(default)]
    pub phase: GatePhase,
    /// The head commit the status was evaluated on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sha: Option<String>,
    /// The tree of that commit (for the audit; approvals follow `changeId`, not the tree).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree_sha: Option<String>,
    /// A fingerprint of the pull request's change at `headSha`: its diff from the merge
    /// base, file by file, without line numbers (a patch id). Approvals given on an older
    /// head still count when that head's change had the same fingerprint (a clean rebase);
    /// any other change, including a same-tree push onto a newer base, makes them stale.
    /// Absent when the change could not be read completely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 80))]
    pub change_id: Option<String>,
    /// The change fingerprint of each head this gate evaluated (newest last, at most 50),
    /// so approvals on those heads can be compared with the current change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub changes: Vec<HeadChange>,
    /// Everyone who asked for the AI run (from the spec and the AgentRun, kept once seen):
    /// none of them can approve.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub requesters: Vec<GitHubUser>,
    /// Everyone who pushed to the pull request's branch, as GitHub reported the pushes:
    /// none of them can approve (on AI pull requests always, on others as the RiskPolicy's
    /// `separationOfDuties.excludePushers` says).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    pub pushers: Vec<GitHubUser>,
    /// The risk of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<RiskAssessment>,
    /// Approvals needed per role and how many are in.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requirements: Vec<RoleRequirement>,
    /// Every approval and rejection seen, valid or not, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    pub approvals: Vec<ApprovalRecord>,
    /// When the workflow's timeout runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Time>,
    /// Reminders, escalations and expiry so far.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalations: Vec<Escalation>,
    /// Who put the pull request on hold with `/hold`, while it is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<GitHubUser>,
    /// Why the gate approved itself, when the risk level auto-approves (the audit record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub auto_approve_reason: Option<String>,
    /// When the current head started waiting for approvals; the deadline counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<Time>,
    /// Roles whose users and teams were asked for a review (each is asked once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requested_roles: Vec<RoleName>,
    /// The id of the `countersign/approval` check run on the head commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_run_id: Option<u64>,
    /// The commit `checkRunId` belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_run_sha: Option<String>,
    /// What the check run on `checkRunSha` shows (`<status>/<conclusion>/<digest of title
    /// and summary>`), recorded once GitHub accepted it: the run is updated whenever the
    /// status would show something else, also after a failure between the two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub check_run_output: Option<String>,
    /// The last merge-queue commit that got a `countersign/approval` check run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_group_sha: Option<String>,
    /// The id of the check run on `mergeGroupSha`, kept in step with the gate (a hold or a
    /// rejection after the pull request entered the queue turns it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_group_check_run_id: Option<u64>,
    /// What the run on `mergeGroupSha` shows, like `checkRunOutput`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub merge_group_check_run_output: Option<String>,
    /// Why the gate could not be evaluated last time (GitHub unreachable, policy invalid …),
    /// cleared by the next successful evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub last_error: Option<String>,
    /// When the gate reached Approved, Rejected or Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_time: Option<Time>,
}
