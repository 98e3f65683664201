//! The agent pod's result: a small, versioned JSON document the agent writes to its
//! termination message (`/dev/termination-log`) and the controller reads from the pod status.
//!
//! Kubernetes caps termination messages at 4096 bytes, so the result carries outcomes and
//! pointers only (branch, commit, counts, a short summary), never diffs or transcripts.
//! Anything that does not parse, is too large or has an unknown version is a failed attempt
//! with a readable reason, never a panic.

use serde::{Deserialize, Serialize};

use crate::agent_run::Usage;

/// The result format version this build writes and reads.
pub const RESULT_VERSION: u32 = 1;
/// Largest termination message Kubernetes keeps, in bytes.
pub const MAX_RESULT_BYTES: usize = 4096;
/// Longest summary kept in a result, in characters.
pub const MAX_SUMMARY_CHARS: usize = 1024;
/// Longest report (a control-mode plan or an observation-mode analysis) kept in a result,
/// in characters. The agent also prints the whole report to its log.
pub const MAX_REPORT_CHARS: usize = 2500;
/// Longest verification line kept in a result, in characters.
pub const MAX_VERIFICATION_CHARS: usize = 300;
/// The reason of a `NoChanges` result that has nothing more to say. A follow-up's reason is
/// instead its findings (its summary), which the controller posts as a review.
pub const NOTHING_CHANGED: &str = "The agent made no changes, so nothing was pushed";

/// What an agent pod reports when it ends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentResult {
    /// Format version; see [`RESULT_VERSION`].
    pub version: u32,
    /// How the attempt ended.
    pub outcome: ResultOutcome,
    /// The provider entry (`Agent.spec.providers[].name`) that did the work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The branch pushed, for `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit pushed, for `succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Number of files changed.
    #[serde(default)]
    pub files_changed: u32,
    /// Lines added by the change.
    #[serde(default)]
    pub lines_added: u64,
    /// Lines removed by the change.
    #[serde(default)]
    pub lines_removed: u64,
    /// A short summary of the change or of the analysis, for the pull request and the issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Why the attempt did not succeed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For `planReady`, the plan; in observation mode, the analysis. Markdown, posted on the
    /// issue by the controller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// How the verify commands went, one line, e.g. `unit-tests passed (2 rounds)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
    /// Tokens and cost this attempt used.
    #[serde(default)]
    pub usage: Usage,
}

/// How an agent attempt ended, as the agent saw it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub enum ResultOutcome {
    /// A change was committed and pushed.
    Succeeded,
    /// The task needed no change; nothing was pushed.
    NoChanges,
    /// A plan was written and waits for approval (control mode).
    PlanReady,
    /// The agent asked the people steering the run a question (guidance mode); the report
    /// holds it as JSON.
    Question,
    /// The provider failed (5xx, bad response); another provider may do better.
    ProviderError,
    /// The provider rate-limited the agent; another provider may do better.
    RateLimited,
    /// A guardrail refused the change; nothing was pushed.
    GuardrailViolation,
    /// Anything else went wrong.
    Failed,
}

/// Why a termination message could not be read as a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultError {
    /// The pod ended without writing a result.
    Empty,
    /// The message is larger than Kubernetes keeps, so it was cut.
    TooLarge(usize),
    /// The message is not a result document.
    Malformed(String),
    /// The result was written by an agent speaking another format version.
    UnsupportedVersion(u32),
}

impl std::fmt::Display for ResultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Empty => f.write_str("the agent wrote no result"),
            Self::TooLarge(n) => write!(
                f,
                "the agent's result is {n} bytes, over the {MAX_RESULT_BYTES}-byte limit"
            ),
            Self::Malformed(e) => write!(f, "the agent's result is not valid: {e}"),
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "the agent's result has version {v}; this controller reads version {RESULT_VERSION}"
                )
            }
        }
    }
}

impl std::error::Error for ResultError {}

impl AgentResult {
    /// Parses a termination message.
    pub fn parse(message: &str) -> Result<AgentResult, ResultError> {
        let trimmed = message.trim();
        if trimmed.is_empty() {
            return Err(ResultError::Empty);
        }
        if message.len() > MAX_RESULT_BYTES {
            return Err(ResultError::TooLarge(message.len()));
        }
        let version = serde_json::from_str::<serde_json::Value>(trimmed)
            .map_err(|e| ResultError::Malformed(e.to_string()))?
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ResultError::Malformed("missing `version`".into()))?;
        if version != u64::from(RESULT_VERSION) {
            return Err(ResultError::UnsupportedVersion(
                u32::try_from(version).unwrap_or(u32::MAX),
            ));
        }
        serde_json::from_str(trimmed).map_err(|e| ResultError::Malformed(e.to_string()))
    }

    /// Renders the result for the termination message, shortening the free texts (each to
    /// its own cap, then the longest first) until it fits in [`MAX_RESULT_BYTES`].
    pub fn to_message(&self) -> String {
        let mut result = self.clone();
        for (text, cap) in [
            (&mut result.summary, MAX_SUMMARY_CHARS),
            (&mut result.reason, MAX_SUMMARY_CHARS),
            (&mut result.report, MAX_REPORT_CHARS),
            (&mut result.verification, MAX_VERIFICATION_CHARS),
        ] {
            if let Some(text) = text.as_mut() {
                cut(text, cap);
            }
        }
        loop {
            let rendered = serde_json::to_string(&result).expect("a result always serialises");
            if rendered.len() <= MAX_RESULT_BYTES {
                return rendered;
            }
            // Halve the longest free text; the outcome and pointers fit when they are as
            // short as the CRDs make them. A text cut to its `…` cannot shrink further
            // (halving it again looped forever when the pointers alone were too large:
            // found by the `agent_result` fuzz target, docs/fuzzing.md).
            let longest = [
                &mut result.summary,
                &mut result.reason,
                &mut result.report,
                &mut result.verification,
            ]
            .into_iter()
            .flatten()
            .filter(|t| t.chars().count() > 1)
            .max_by_key(|t| t.len());
            match longest {
                Some(text) => {
                    let keep = text.chars().count() / 2;
                    cut(text, keep);
                }
                None => {
                    result.summary = None;
                    result.reason = None;
                    result.report = None;
                    result.verification = None;
                    return serde_json::to_string(&result).expect("a result always serialises");
                }
            }
        }
    }
}

/// Cuts `text` to at most `max_chars` characters, marking the cut with `…`.
fn cut(text: &mut String, max_chars: usize) {
    if text.chars().count() > max_chars {
        *text = text
            .chars()
            .take(max_chars.saturating_sub(1))
            .collect::<String>()
            + "…";
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentResult {
        AgentResult {
            version: RESULT_VERSION,
            outcome: ResultOutcome::Succeeded,
            provider: Some("openrouter".into()),
            branch: Some("countersign/run-1".into()),
            commit: Some("a".repeat(40)),
            files_changed: 3,
            summary: Some("Return 404 for unknown invoices".into()),
            reason: None,
            report: None,
            verification: Some("unit-tests passed".into()),
            lines_added: 12,
            lines_removed: 3,
            usage: Usage::default(),
        }
    }

    #[test]
    fn results_round_trip() {
        let message = sample().to_message();
        assert_eq!(AgentResult::parse(&message), Ok(sample()));
    }

    #[test]
    fn bad_messages_are_readable_errors() {
        assert_eq!(AgentResult::parse("  "), Err(ResultError::Empty));
        assert!(matches!(
            AgentResult::parse("panic: oh no"),
            Err(ResultError::Malformed(_))
        ));
        assert!(matches!(
            AgentResult::parse(r#"{"version":1,"outcome":"exploded"}"#),
            Err(ResultError::Malformed(_))
        ));
        assert_eq!(
            AgentResult::parse(r#"{"version":2,"outcome":"succeeded"}"#),
            Err(ResultError::UnsupportedVersion(2))
        );
        let huge = format!(
            r#"{{"version":1,"outcome":"failed","reason":"{}"}}"#,
            "x".repeat(5000)
        );
        assert_eq!(
            AgentResult::parse(&huge),
            Err(ResultError::TooLarge(huge.len()))
        );
        assert!(
            ResultError::Malformed("x".into())
                .to_string()
                .contains("not valid")
        );
    }

    #[test]
    fn long_summaries_are_shortened_to_fit() {
        let mut result = sample();
        result.summary = Some("é".repeat(10_000));
        result.reason = Some("r".repeat(10_000));
        result.report = Some("p".repeat(10_000));
        let message = result.to_message();
        assert!(message.len() <= MAX_RESULT_BYTES, "{}", message.len());
        let parsed = AgentResult::parse(&message).expect("still parses");
        assert_eq!(parsed.commit, sample().commit);
        let report = parsed.report.expect("the report survives, shortened");
        assert!(report.ends_with('…') && report.chars().count() <= MAX_REPORT_CHARS);
    }
}
