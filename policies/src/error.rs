//! Why a RiskPolicy cannot be compiled: every error names the field (`spec.rules[3].match.paths[1]`)
//! or, for Rego, the line, so `countersign policy validate`, the admission webhook and the
//! RiskPolicy `Ready` condition can all point the author at the fix.

use std::fmt;

/// Where in a RiskPolicy a problem is, written the way `kubectl explain` spells fields,
/// e.g. `spec.rules[3].match.paths[1]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FieldPath(pub String);

impl FieldPath {
    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for FieldPath {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for FieldPath {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A semantic problem in an otherwise well-formed spec (the CRD's CEL rules catch most of
/// these at apply time; the engine checks again so a policy loaded from a file is held to
/// the same rules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecProblem {
    /// Two rules share a name, so reasons would be ambiguous.
    DuplicateRuleName(String),
    /// A rule's `set` sets no factor.
    EmptySet,
    /// A factor score above 10.
    ScoreOutOfRange(u8),
    /// `combine.method: weighted` without `combine.weights`.
    MissingWeights,
    /// Weights that do not add up to 100.
    WeightsSum(u32),
    /// Thresholds outside 1..=10 or not rising.
    ThresholdsNotRising {
        /// `thresholds.medium`.
        medium: u8,
        /// `thresholds.high`.
        high: u8,
        /// `thresholds.critical`.
        critical: u8,
    },
    /// A workflow that neither auto-approves nor names approvers could never pass.
    NoApprovers,
    /// `onTimeout: escalate` without `escalateTo`.
    MissingEscalateTo,
    /// `escalationMode` on a workflow that does not escalate.
    EscalationModeWithoutEscalate,
    /// An approver count outside 1..=10.
    CountOutOfRange(u32),
    /// The same role listed twice in one workflow.
    DuplicateRole(String),
    /// A Rego package name that is not a dotted identifier.
    BadRegoPackage(String),
    /// The Rego module declares a different package than `spec.rego.package`.
    RegoPackageMismatch {
        /// `spec.rego.package`.
        expected: String,
        /// The package the module declares.
        declared: String,
    },
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateRuleName(name) => write!(f, "duplicate rule name {name:?}"),
            Self::EmptySet => f.write_str("set at least one of impact, complexity, businessImpact"),
            Self::ScoreOutOfRange(v) => write!(f, "score {v} is out of range 0..10"),
            Self::MissingWeights => f.write_str("method weighted needs weights"),
            Self::WeightsSum(sum) => write!(f, "weights must add up to 100, not {sum}"),
            Self::ThresholdsNotRising {
                medium,
                high,
                critical,
            } => write!(
                f,
                "thresholds must rise within 1..10: medium {medium} < high {high} < critical {critical}"
            ),
            Self::NoApprovers => f.write_str("a workflow without autoApprove needs approvers"),
            Self::MissingEscalateTo => f.write_str("onTimeout escalate needs escalateTo"),
            Self::EscalationModeWithoutEscalate => {
                f.write_str("escalationMode applies only to onTimeout escalate")
            }
            Self::CountOutOfRange(c) => write!(f, "count {c} is out of range 1..10"),
            Self::DuplicateRole(role) => write!(f, "role {role:?} is listed twice"),
            Self::BadRegoPackage(p) => {
                write!(
                    f,
                    "package {p:?} is not a dotted name like countersign.risk"
                )
            }
            Self::RegoPackageMismatch { expected, declared } => write!(
                f,
                "the module declares package {declared:?}, but spec.rego.package is {expected:?}"
            ),
        }
    }
}

/// One reason a RiskPolicy does not compile.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A glob that globset cannot parse.
    #[error("{field}: invalid glob {glob:?}: {}", .source.kind())]
    Glob {
        /// Where the glob is.
        field: FieldPath,
        /// The glob as written.
        glob: String,
        /// globset's complaint.
        #[source]
        source: globset::Error,
    },
    /// The Rego module does not parse or compile.
    #[error("{field}{}: {message}", line_suffix(*.line, *.column))]
    Rego {
        /// Always `spec.rego.module`.
        field: FieldPath,
        /// 1-based line in the module, when regorus names one.
        line: Option<u32>,
        /// 1-based column, when regorus names one.
        column: Option<u32>,
        /// regorus's message, without its source excerpt.
        message: String,
    },
    /// A well-formed field with a value the engine refuses.
    #[error("{field}: {problem}")]
    Spec {
        /// Where the problem is.
        field: FieldPath,
        /// What is wrong.
        problem: SpecProblem,
    },
}

fn line_suffix(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(" line {l} column {c}"),
        (Some(l), None) => format!(" line {l}"),
        _ => String::new(),
    }
}

impl PolicyError {
    /// The field the error is about.
    pub fn field(&self) -> &FieldPath {
        match self {
            Self::Glob { field, .. } | Self::Rego { field, .. } | Self::Spec { field, .. } => field,
        }
    }

    pub(crate) fn spec(field: impl Into<FieldPath>, problem: SpecProblem) -> Self {
        Self::Spec {
            field: field.into(),
            problem,
        }
    }
}

/// Every reason a RiskPolicy does not compile (never empty), in the order of the spec, so an
/// author fixes them all in one round.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.0))]
pub struct PolicyErrors(Vec<PolicyError>);

fn render(errors: &[PolicyError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PolicyErrors {
    /// Wraps a non-empty list; `None` when there is nothing to report.
    pub fn from_vec(errors: Vec<PolicyError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self(errors))
    }

    /// A single error.
    pub fn one(error: PolicyError) -> Self {
        Self(vec![error])
    }

    /// The individual errors.
    pub fn errors(&self) -> &[PolicyError] {
        &self.0
    }

    /// The individual errors, owned.
    pub fn into_errors(self) -> Vec<PolicyError> {
        self.0
    }
}
