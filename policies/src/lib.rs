//! Countersign's risk engine: a pure function from a RiskPolicy and the facts about a pull
//! request to a decision with its reasons.
//!
//! ```text
//! RiskPolicySpec ──CompiledPolicy::compile──▶ CompiledPolicy ──evaluate(&Change)──▶ Assessment
//! ```
//!
//! Compiling parses every glob once (one combined globset for all rules) and the optional
//! Rego module (regorus); every problem names its field (`spec.rules[3].match.paths[1]`) or
//! Rego line. Evaluating never fails: a factor's score is the highest any matching rule gives
//! it, the Rego module may only raise factors, factors combine by `max` or rounded-up
//! weights, thresholds pick the level, and the level's workflow says who approves. The
//! controller, the bot, the admission webhook and `countersign policy` all call this one
//! implementation. No kube, HTTP or tokio here.

pub mod approvals;
mod assessment;
mod change;
pub mod commands;
mod compile;
mod error;
mod evaluate;
mod manifest;
pub mod ownership;
mod path_index;
mod rego;
pub mod visible;

pub use assessment::{
    Assessment, AutoApprove, FACTORS, FactorResult, HitSource, MAX_REASON_LEN, MatchedRule,
    NeverAutoApproveHit, REGO_RULE, RegoVerdict, WorkflowDecision, factor_name, truncate,
};
pub use change::{AuthorKind, Change, ChangedFile, author_kind_name};
pub use compile::{CompiledPolicy, MAX_SCORE, level_name};
pub use error::{FieldPath, PolicyError, PolicyErrors, SpecProblem};
pub use evaluate::INCOMPLETE_RULE;
pub use manifest::{
    ManifestError, PolicyDocument, PolicyReport, default_policy, parse_policies, validate_policies,
};
pub use rego::REGO_TIME_LIMIT;

/// The default RiskPolicy manifest (`policies/manifests/default-riskpolicy.yaml`), built in so
/// `countersign policy eval` works before anything is installed.
pub const DEFAULT_POLICY_YAML: &str = include_str!("../manifests/default-riskpolicy.yaml");
