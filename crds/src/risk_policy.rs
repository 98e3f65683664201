//! `RiskPolicy`: the risk matrix as data.
//!
//! Rules match facts about a change and set factor scores; the factors combine into one
//! score; thresholds turn the score into a level; each level names the workflow (who must
//! approve, by when, and what happens at the deadline). Evaluation lives in the pure
//! `countersign-policies` crate.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{GoDuration, RoleName};

/// The risk matrix for pull requests: rules that score impact, complexity and business
/// impact, thresholds that map the score to a level, and the approval workflow of each level.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "countersign.dev",
    version = "v1alpha1",
    kind = "RiskPolicy",
    namespaced,
    status = "RiskPolicyStatus",
    shortname = "csrisk",
    category = "countersign",
    doc = "The risk matrix for pull requests: rules that score impact, complexity and business \
           impact, thresholds that map the score to low/medium/high/critical, and who must \
           approve at each level.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Rules","type":"integer","jsonPath":".status.ruleCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RiskPolicySpec {
    /// Rules evaluated against every change. Each matching rule raises the factors it sets;
    /// a factor's score is the highest any matching rule gives it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub rules: Vec<RiskRule>,
    /// How factor scores combine into the overall score.
    #[serde(default)]
    pub combine: Combine,
    /// Scores at which each level starts. Scores below `medium` are low.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// The approval workflow of each risk level.
    pub workflows: Workflows,
    /// Path globs that always need a human approval, whatever the level says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub never_auto_approve_paths: Vec<String>,
    /// Separation-of-duties switches for who may not approve.
    #[serde(default)]
    pub separation_of_duties: SeparationOfDuties,
    /// An optional Rego module (evaluated with regorus) that can raise factors and add reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego: Option<RegoModule>,
}

/// One rule: when the change matches, set these factor scores.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskRule {
    /// A unique name, quoted in every reason this rule produces, e.g. `data-migration`.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"))]
    pub name: String,
    /// What the rule is about, for people reading the policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
    /// The conditions; all that are given must hold (an empty match matches every change).
    #[serde(default, rename = "match")]
    pub matches: RuleMatch,
    /// The factor scores this rule sets when it matches.
    pub set: FactorScores,
}

/// Conditions on a change. Every condition that is given must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleMatch {
    /// Matches when any changed path matches any of these globs (e.g. `migrations/**`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Changed paths matching these globs are left out before `paths` is checked, e.g. to
    /// say "any change except documentation".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub except_paths: Vec<String>,
    /// Matches when every changed path matches one of these globs (e.g. docs-only changes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub only_paths: Vec<String>,
    /// Matches when the pull request has any of these labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    /// Matches when at least this many files changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_files: Option<u32>,
    /// Matches when at least this many lines changed (additions plus deletions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_lines: Option<u32>,
    /// Matches when the author is one of these kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub author_kinds: Vec<AuthorKind>,
    /// Matches when the base branch matches one of these globs (e.g. `release/*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub base_branches: Vec<String>,
    /// Matches when any changed path is under the Project's GitOps paths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitops_paths: Option<bool>,
    /// Match `paths`, `exceptPaths` and `onlyPaths` with case taken into account. Off by
    /// default: paths match whatever their case (`Migrations/0042_drop.SQL` is a migration
    /// for `migrations/**` and `**/*.sql`), as on the case-insensitive file systems many
    /// developers and build tools use.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub case_sensitive: bool,
}

/// Who wrote a change.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum AuthorKind {
    /// A person.
    Human,
    /// A bot or GitHub App other than a Countersign agent (e.g. Dependabot).
    Bot,
    /// A Countersign agent run.
    Ai,
}

/// Factor scores from 0 (no risk) to 10 (critical). Unset factors are left alone.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.impact) || has(self.complexity) || has(self.businessImpact)", "message": "set at least one of impact, complexity, businessImpact"},
]))]
pub struct FactorScores {
    /// How much could break if the change is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub impact: Option<u8>,
    /// How hard the change is to review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub complexity: Option<u8>,
    /// How much the business is exposed (customers, money, compliance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub business_impact: Option<u8>,
}

/// One of the three risk factors.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RiskFactor {
    /// How much could break.
    Impact,
    /// How hard it is to review.
    Complexity,
    /// Business exposure.
    BusinessImpact,
}

/// How factor scores combine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.method != 'weighted' || has(self.weights)", "message": "method weighted needs weights"},
]))]
pub struct Combine {
    /// `max` takes the highest factor (the default and the safest); `weighted` takes the
    /// weighted average, rounded up.
    #[serde(default)]
    pub method: CombineMethod,
    /// Weights for `weighted`, in percent; they must add up to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
}

/// How factor scores combine.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum CombineMethod {
    /// The highest factor.
    #[default]
    Max,
    /// The weighted average, rounded up.
    Weighted,
}

/// Factor weights in percent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.impact + self.complexity + self.businessImpact == 100", "message": "weights must add up to 100"},
]))]
pub struct Weights {
    /// Weight of impact, percent.
    #[schemars(range(min = 0, max = 100))]
    pub impact: u8,
    /// Weight of complexity, percent.
    #[schemars(range(min = 0, max = 100))]
    pub complexity: u8,
    /// Weight of business impact, percent.
    #[schemars(range(min = 0, max = 100))]
    pub business_impact: u8,
}

/// Where each level starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.medium < self.high && self.high < self.critical", "message": "thresholds must rise: medium < high < critical"},
]))]
pub struct Thresholds {
    /// Lowest score that is medium risk.
    #[serde(default = "default_medium")]
    #[schemars(range(min = 1, max = 10))]
    pub medium: u8,
    /// Lowest score that is high risk.
    #[serde(default = "default_high")]
    #[schemars(range(min = 1, max = 10))]
    pub high: u8,
    /// Lowest score that is critical risk.
    #[serde(default = "default_critical")]
    #[schemars(range(min = 1, max = 10))]
    pub critical: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            medium: default_medium(),
            high: default_high(),
            critical: default_critical(),
        }
    }
}

fn default_medium() -> u8 {
    5
}

fn default_high() -> u8 {
    8
}

fn default_critical() -> u8 {
    9
}

/// A risk level.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum RiskLevel {
    /// Routine change.
    Low,
    /// Needs ordinary review.
    Medium,
    /// Needs senior review.
    High,
    /// Needs executive and security sign-off.
    Critical,
}

/// The workflow of each level.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workflows {
    /// Workflow for low risk.
    pub low: Workflow,
    /// Workflow for medium risk.
    pub medium: Workflow,
    /// Workflow for high risk.
    pub high: Workflow,
    /// Workflow for critical risk.
    pub critical: Workflow,
}

/// Who must approve, by when, and what happens at the deadline.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.autoApprove || (has(self.approvers) && size(self.approvers) > 0)", "message": "a workflow without autoApprove needs approvers"},
    {"rule": "self.onTimeout != 'escalate' || has(self.escalateTo)", "message": "onTimeout escalate needs escalateTo"},
    {"rule": "!has(self.escalationMode) || self.onTimeout == 'escalate'", "message": "escalationMode applies only to onTimeout escalate"},
]))]
pub struct Workflow {
    /// A name shown in checks and the gate page, e.g. `standard`, `supervised`, `managed`, `executive`.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// Approvals needed, per role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["role"]))]
    pub approvers: Vec<ApproverRequirement>,
    /// Approve automatically (recorded with the reason), unless a never-auto-approve path changed.
    #[serde(default)]
    pub auto_approve: bool,
    /// How long approvers have, e.g. `4h`. No deadline if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// What happens when the timeout runs out.
    #[serde(default)]
    pub on_timeout: TimeoutAction,
    /// The role asked to approve when the workflow escalates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<RoleName>,
    /// How the `escalateTo` role's approval counts once the workflow escalated (only with
    /// `onTimeout: escalate`). `standIn` (the default when unset): one approval by a holder of
    /// `escalateTo` satisfies every requirement still missing at the deadline, in place of the
    /// roles that did not approve in time; their own approvals still count as well.
    /// `additional`: `escalateTo` becomes one more required approval on top of the workflow's
    /// approvers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_mode: Option<EscalationMode>,
}

/// Approvals needed from one role.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApproverRequirement {
    /// The role, as bound in the Project's `roles`.
    pub role: RoleName,
    /// How many distinct holders of the role must approve.
    #[serde(default = "default_count")]
    #[schemars(range(min = 1, max = 10))]
    pub count: u32,
}

fn default_count() -> u32 {
    1
}

/// What happens at a workflow's deadline.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TimeoutAction {
    /// Remind the missing approvers and keep waiting.
    #[default]
    Remind,
    /// Ask the `escalateTo` role to approve, in place of the missing roles or in addition to
    /// them, as `escalationMode` says.
    Escalate,
    /// Fail the check; a new push starts over.
    Expire,
}

/// How the `escalateTo` role's approval counts once a workflow escalated (`onTimeout:
/// escalate`; a workflow that leaves `escalationMode` unset uses `standIn`). `standIn`: one
/// approval by a holder of `escalateTo`, who fills no other requirement, satisfies every
/// requirement still missing at the deadline; the original roles can still approve.
/// `additional`: `escalateTo` becomes one more required approval on top of the workflow's
/// approvers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EscalationMode {
    /// The escalation role stands in for the roles that had not approved by the deadline:
    /// one approval by one of its holders, who fills no other requirement, satisfies every
    /// requirement still missing then. The original roles can still approve too.
    #[default]
    StandIn,
    /// The escalation role is required in addition: one more approval, by one of its
    /// holders, on top of the workflow's approvers.
    Additional,
}

/// Who may not approve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SeparationOfDuties {
    /// The pull request's author cannot approve it.
    #[serde(default = "yes")]
    pub exclude_author: bool,
    /// For AI pull requests, whoever asked for the run cannot approve it.
    #[serde(default = "yes")]
    pub exclude_requester: bool,
    /// Anyone who authored or committed a commit of the pull request cannot approve it
    /// (always on for AI pull requests).
    #[serde(default = "yes")]
    pub exclude_committers: bool,
    /// Anyone who pushed to the pull request's branch cannot approve it, whatever name and
    /// email the pushed commits carry (always on for AI pull requests).
    #[serde(default = "yes")]
    pub exclude_pushers: bool,
}

impl Default for SeparationOfDuties {
    fn default() -> Self {
        Self {
            exclude_author: true,
            exclude_requester: true,
            exclude_committers: true,
            exclude_pushers: true,
        }
    }
}

fn yes() -> bool {
    true
}

/// A Rego module for custom factors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegoModule {
    /// The module source. It reads the change as `input` and defines `factors` (an object of
    /// factor → score) and optionally `reasons` (a list of strings).
    #[schemars(length(min = 1, max = 65536))]
    pub module: String,
    /// The package to query, e.g. `countersign.risk`.
    #[serde(default = "default_rego_package")]
    #[schemars(length(min = 1, max = 253))]
    pub package: String,
}

fn default_rego_package() -> String {
    "countersign.risk".to_owned()
}

/// What the controller last observed about this RiskPolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RiskPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` is False with the compile error when a glob or the Rego module is invalid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Number of rules in the policy.
    #[serde(default)]
    pub rule_count: u32,
}
