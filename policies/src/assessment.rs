//! The decision of a RiskPolicy about one change: a plain value (never an `Err`) that the
//! controller writes into the ApprovalGate status, the bot renders in the check run and the
//! gate page, and `countersign policy eval` prints.

use countersign_crds::approval_gate::{FactorScore, RiskAssessment};
use countersign_crds::risk_policy::{
    ApproverRequirement, EscalationMode, FactorScores, RiskFactor, RiskLevel, TimeoutAction,
};
use countersign_crds::{GoDuration, RoleName};
use serde::{Deserialize, Serialize};

/// The longest reason the ApprovalGate status accepts (its CRD schema's `maxLength`).
pub const MAX_REASON_LEN: usize = 1024;

/// The rule name recorded for factors raised by the policy's Rego module.
pub const REGO_RULE: &str = "rego";

/// Everything a RiskPolicy decided about one change, with its reasons.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    /// Combined score from 0 (trivial) to 10 (critical).
    pub score: u8,
    /// The level the score falls in.
    pub level: RiskLevel,
    /// Impact, complexity and businessImpact, in that order, each with the rule that set it.
    pub factors: [FactorResult; 3],
    /// Every rule that matched, in policy order, with what it matched.
    pub matched_rules: Vec<MatchedRule>,
    /// Who must approve, by when, and whether the change approves itself.
    pub workflow: WorkflowDecision,
    /// Changed paths that always need a human, and the glob each matched.
    pub never_auto_approve: Vec<NeverAutoApproveHit>,
    /// What the Rego module said, if the policy has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rego: Option<RegoVerdict>,
}

/// One factor's final score.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FactorResult {
    /// The factor.
    pub factor: RiskFactor,
    /// Its score from 0 to 10 (0 when no rule set it).
    pub score: u8,
    /// The rule that set it (the first one when several gave the same score), `rego` when
    /// the Rego module raised it, `None` when no rule did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The concrete reason, e.g.
    /// `impact 9: migrations/0042_add_index.sql matched rule data-migration (migrations/**)`.
    pub reason: String,
}

/// A rule that matched the change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct MatchedRule {
    /// The rule's name.
    pub name: String,
    /// The scores it sets.
    pub set: FactorScores,
    /// What matched, e.g. `migrations/0042_add_index.sql matched rule data-migration (migrations/**)`.
    pub evidence: String,
}

/// The workflow that applies to the change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowDecision {
    /// The level whose workflow applies: the assessed level, or the first higher level with
    /// approvers when a never-auto-approve path blocks an approver-less auto-approve workflow.
    pub level: RiskLevel,
    /// The workflow's name, e.g. `supervised`.
    pub name: String,
    /// Approvals needed per role.
    pub approvers: Vec<ApproverRequirement>,
    /// Whether the change approves itself, and why (or why not).
    pub auto_approve: AutoApprove,
    /// How long approvers have; no deadline if `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
    /// What happens at the deadline.
    pub on_timeout: TimeoutAction,
    /// The role asked to approve when the workflow escalates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalate_to: Option<RoleName>,
    /// How the escalation role's approval counts (the workflow's `escalationMode`, `standIn`
    /// when unset); only for workflows that escalate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation_mode: Option<EscalationMode>,
}

impl WorkflowDecision {
    /// Whether the change is approved without a human.
    pub fn auto_approves(&self) -> bool {
        matches!(self.auto_approve, AutoApprove::Approved { .. })
    }

    /// The approver roles, in policy order.
    pub fn roles(&self) -> impl Iterator<Item = &RoleName> {
        self.approvers.iter().map(|a| &a.role)
    }
}

/// Whether a change approves itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "decision")]
pub enum AutoApprove {
    /// Approved without a human; the reason is recorded for the audit.
    Approved {
        /// Why, e.g. `score 1 is below medium (5); workflow standard auto-approves`.
        reason: String,
    },
    /// The level's workflow would auto-approve, but a never-auto-approve path changed.
    Blocked {
        /// Which paths blocked it and which workflow applies instead.
        reason: String,
    },
    /// The workflow needs human approvals.
    NotOffered,
}

/// A changed path that always needs a human.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct NeverAutoApproveHit {
    /// The changed path.
    pub path: String,
    /// The glob it matched.
    pub glob: String,
    /// Where the glob comes from.
    pub source: HitSource,
}

/// Where a never-auto-approve glob comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum HitSource {
    /// The policy's `neverAutoApprovePaths`.
    Policy,
    /// The Project's GitOps paths: changes there deploy, so they always need a human.
    GitOps,
}

/// What the policy's Rego module contributed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum RegoVerdict {
    /// The module ran; `raised` lists the factors it raised above the native rules.
    Evaluated {
        /// Factors the module raised.
        raised: Vec<RiskFactor>,
        /// The module's `reasons`.
        reasons: Vec<String>,
    },
    /// The module failed at runtime; the assessment failed closed (every factor 10, no
    /// auto-approve).
    Failed {
        /// regorus's message.
        error: String,
    },
}

impl Assessment {
    /// The score of one factor.
    pub fn factor(&self, factor: RiskFactor) -> &FactorResult {
        self.factors
            .iter()
            .find(|f| f.factor == factor)
            .unwrap_or(&self.factors[factor_index(factor)])
    }

    /// The reasons of every factor, in factor order.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.factors.iter().map(|f| f.reason.as_str())
    }

    /// The shape the ApprovalGate status stores (reasons cut to the CRD's length limit).
    pub fn to_risk_assessment(&self) -> RiskAssessment {
        RiskAssessment {
            score: self.score,
            level: self.level,
            workflow: self.workflow.name.clone(),
            factors: self
                .factors
                .iter()
                .map(|f| FactorScore {
                    factor: f.factor,
                    score: f.score,
                    rule: f.rule.clone(),
                    reason: truncate(&f.reason, MAX_REASON_LEN),
                })
                .collect(),
        }
    }
}

/// The three factors, in the order the engine keeps them.
pub const FACTORS: [RiskFactor; 3] = [
    RiskFactor::Impact,
    RiskFactor::Complexity,
    RiskFactor::BusinessImpact,
];

pub(crate) fn factor_index(factor: RiskFactor) -> usize {
    match factor {
        RiskFactor::Impact => 0,
        RiskFactor::Complexity => 1,
        RiskFactor::BusinessImpact => 2,
    }
}

/// The name of a factor as written in policies (`impact`, `complexity`, `businessImpact`).
pub fn factor_name(factor: RiskFactor) -> &'static str {
    match factor {
        RiskFactor::Impact => "impact",
        RiskFactor::Complexity => "complexity",
        RiskFactor::BusinessImpact => "businessImpact",
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
