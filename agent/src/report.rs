//! The `work` step's report to the `push` step: how the work went, which commit holds the
//! change, and the texts for people (summary, plan or analysis, verification line).
//!
//! The work step runs model-written code, so by the time `push` reads this file anything may
//! have written it. `push` reads at most [`MAX_REPORT_BYTES`], refuses anything that is not
//! exactly this shape, caps every text and strips control characters; the commit id is only
//! a pointer that `push` verifies and re-checks, never a fact it relies on.

use countersign_crds::result::{
    MAX_REPORT_CHARS, MAX_SUMMARY_CHARS, MAX_VERIFICATION_CHARS, ResultOutcome,
};
use serde::{Deserialize, Serialize};

/// Format version of the report.
pub const WORK_REPORT_VERSION: u32 = 1;
/// Largest report `push` reads.
pub const MAX_REPORT_BYTES: u64 = 64 * 1024;

/// What the work step reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkReport {
    /// See [`WORK_REPORT_VERSION`].
    pub version: u32,
    /// How the work ended, as the work step saw it.
    pub outcome: ResultOutcome,
    /// The local commit holding the change (for `succeeded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// A short summary of the change, plan or analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Why the work did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The plan or the analysis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// How the verify commands went, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<String>,
}

impl WorkReport {
    /// A report with only an outcome and a reason.
    pub fn ended(outcome: ResultOutcome, reason: impl Into<String>) -> Self {
        Self {
            version: WORK_REPORT_VERSION,
            outcome,
            commit: None,
            summary: None,
            reason: Some(reason.into()),
            report: None,
            verification: None,
        }
    }

    /// Parses a report as `push` must: strictly, with every text cleaned and capped, and the
    /// commit id checked for shape.
    pub fn parse_untrusted(bytes: &[u8]) -> Result<WorkReport, String> {
        let mut report: WorkReport =
            serde_json::from_slice(bytes).map_err(|e| format!("not a work report: {e}"))?;
        if report.version != WORK_REPORT_VERSION {
            return Err(format!(
                "work report version {}; this agent reads version {WORK_REPORT_VERSION}",
                report.version
            ));
        }
        if let Some(commit) = &report.commit
            && !(commit.len() == 40 || commit.len() == 64)
        {
            return Err("the commit id is not a full object id".into());
        }
        if let Some(commit) = &report.commit
            && !commit
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err("the commit id is not lower-case hex".into());
        }
        for (text, cap) in [
            (&mut report.summary, MAX_SUMMARY_CHARS),
            (&mut report.reason, MAX_SUMMARY_CHARS),
            (&mut report.report, MAX_REPORT_CHARS),
            (&mut report.verification, MAX_VERIFICATION_CHARS),
        ] {
            if let Some(t) = text.as_mut() {
                *t = clean(t, cap);
            }
        }
        Ok(report)
    }
}

/// `text` without control characters (line breaks and tabs kept), at most `max_chars`
/// characters, the cut marked with `…`.
pub fn clean(text: &str, max_chars: usize) -> String {
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .take(max_chars + 1)
        .collect();
    if out.chars().count() > max_chars {
        out = out
            .chars()
            .take(max_chars.saturating_sub(1))
            .collect::<String>()
            + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_texts_are_cleaned() {
        let report = WorkReport {
            commit: Some("a".repeat(40)),
            summary: Some("done\u{1b}[31m red \u{7}".into()),
            ..WorkReport::ended(ResultOutcome::Succeeded, "")
        };
        let text = serde_json::to_vec(&report).expect("serialises");
        let parsed = WorkReport::parse_untrusted(&text).expect("parses");
        assert_eq!(parsed.summary.as_deref(), Some("done[31m red "));
        let long = WorkReport {
            report: Some("x".repeat(10_000)),
            ..WorkReport::ended(ResultOutcome::PlanReady, "")
        };
        let parsed =
            WorkReport::parse_untrusted(&serde_json::to_vec(&long).expect("json")).expect("parses");
        assert_eq!(
            parsed.report.map(|r| r.chars().count()),
            Some(MAX_REPORT_CHARS)
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b"not json"[..],
            br#"{"version":1,"outcome":"succeeded","extra":true}"#,
            br#"{"version":2,"outcome":"succeeded"}"#,
            br#"{"version":1,"outcome":"succeeded","commit":"HEAD"}"#,
            br#"{"version":1,"outcome":"succeeded","commit":"../../../../etc/passwd0000000000000000000"}"#,
            br#"{"version":1,"outcome":"exploded"}"#,
        ] {
            assert!(
                WorkReport::parse_untrusted(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
