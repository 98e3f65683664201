//! The one renderer of an `ApprovalGate`'s facts: the `countersign/approval` check run the
//! controller publishes ([`check_output`]) and the bot's details page ([`html_page`]).
//!
//! Both read the same [`Facts`] (built once from the gate's status), so the check run and the
//! page can never disagree about a requirement, an approval or why an approval did not count.
//! Pure: a gate in, text out. Every string a user controls (logins, reasons, paths, rule
//! names) is escaped for the target, Markdown or HTML.

use std::fmt::Write as _;

use countersign_crds::approval_gate::{
    ApprovalRecord, ApprovalVia, Decision, Escalation, GatePhase, InvalidReason, RoleRequirement,
};
use countersign_crds::risk_policy::{EscalationMode, RiskFactor, RiskLevel, TimeoutAction};
use countersign_crds::{ApprovalGate, ApprovalGateStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::CheckStatus;

mod html;
mod markdown;

pub use html::{esc as escape_html, html_page};
pub use markdown::escape_markdown;
use markdown::summary;
#[cfg(test)]
use markdown::truncate_to;

/// GitHub's limit on a check run's `output.summary`, in bytes.
pub const MAX_SUMMARY_BYTES: usize = 65_535;
/// Appended to a summary cut at [`MAX_SUMMARY_BYTES`].
pub const TRUNCATION_MARKER: &str = "\n\n… (truncated: the full report is on the details page)";
/// Check run titles are one line; GitHub shows about this much of it.
const MAX_TITLE_CHARS: usize = 250;

/// What the `countersign/approval` check run shows for a gate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutput {
    /// `in_progress` while waiting, `completed` once decided.
    pub status: CheckStatus,
    /// `success`, `failure` or `neutral` when completed; never set while waiting (a neutral
    /// conclusion would satisfy branch protection).
    pub conclusion: Option<&'static str>,
    /// One line, e.g. `Approved: medium risk (score 6), developer ✓ tech_lead ✓`.
    pub title: String,
    /// Markdown, at most [`MAX_SUMMARY_BYTES`] bytes.
    pub summary: String,
}

/// The check run for `gate`; `details_url` (see [`gate_page_url`]) is linked from the summary.
pub fn check_output(gate: &ApprovalGate, details_url: Option<&str>) -> CheckOutput {
    let facts = Facts::of(gate);
    let (status, conclusion) = match facts.phase {
        None | Some(GatePhase::Pending | GatePhase::Held) => (CheckStatus::InProgress, None),
        Some(GatePhase::Approved | GatePhase::Merged) => (CheckStatus::Completed, Some("success")),
        Some(GatePhase::Rejected | GatePhase::Expired) => (CheckStatus::Completed, Some("failure")),
        Some(GatePhase::Closed) => (CheckStatus::Completed, Some("neutral")),
    };
    CheckOutput {
        status,
        conclusion,
        title: facts.title(),
        summary: summary(&facts, details_url),
    }
}

/// `{base}/gates/{namespace}/{name}` with each segment percent-encoded; a trailing `/` on
/// `base_url` is ignored.
pub fn gate_page_url(base_url: &str, namespace: &str, name: &str) -> String {
    format!(
        "{}/gates/{}/{}",
        base_url.trim_end_matches('/'),
        percent_encode_segment(namespace),
        percent_encode_segment(name)
    )
}

fn percent_encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// The facts both renderers show, unescaped; each renderer escapes for its format.
pub(crate) struct Facts {
    pub(crate) pull_request: u64,
    pub(crate) phase: Option<GatePhase>,
    pub(crate) head_sha: Option<String>,
    pub(crate) risk: Option<RiskFacts>,
    pub(crate) requirements: Vec<RequirementRow>,
    pub(crate) approvals: Vec<ApprovalRow>,
    pub(crate) deadline: Option<String>,
    pub(crate) escalations: Vec<String>,
    /// Why the workflow approved by itself, when it did.
    pub(crate) auto_approve_reason: Option<String>,
    /// Why the last evaluation failed, when it did.
    pub(crate) last_error: Option<String>,
    /// Who held or rejected, for the headline.
    actor: Option<String>,
}

pub(crate) struct RiskFacts {
    pub(crate) level: &'static str,
    pub(crate) score: u8,
    pub(crate) workflow: String,
    pub(crate) factors: Vec<FactorRow>,
}

pub(crate) struct FactorRow {
    pub(crate) factor: &'static str,
    pub(crate) score: u8,
    pub(crate) rule: String,
    pub(crate) reason: String,
}

pub(crate) struct RequirementRow {
    pub(crate) role: String,
    pub(crate) needed: u32,
    pub(crate) have: u32,
    pub(crate) approved_by: Vec<String>,
    /// The escalation role that may approve in this role's place, after a `standIn`
    /// escalation.
    pub(crate) stand_in: Option<String>,
    /// Who approved in this role's place.
    pub(crate) stood_in_by: Option<String>,
}

impl RequirementRow {
    pub(crate) fn met(&self) -> bool {
        self.have >= self.needed
    }
}

pub(crate) struct ApprovalRow {
    pub(crate) login: String,
    pub(crate) roles: Vec<String>,
    pub(crate) decision: &'static str,
    pub(crate) via: &'static str,
    pub(crate) short_sha: String,
    pub(crate) time: String,
    pub(crate) valid: bool,
    /// `stale`, `self`, … when not valid.
    pub(crate) invalid_word: Option<&'static str>,
    /// Plain-words explanation of `invalid_word`.
    pub(crate) invalid_why: Option<&'static str>,
}

impl Facts {
    pub(crate) fn of(gate: &ApprovalGate) -> Self {
        let status: Option<&ApprovalGateStatus> = gate.status.as_ref();
        let approvals: Vec<ApprovalRow> = status
            .map(|s| s.approvals.iter().map(approval_row).collect())
            .unwrap_or_default();
        let phase = status.map(|s| s.phase);
        let actor = match phase {
            Some(GatePhase::Rejected) => status.and_then(|s| {
                s.approvals
                    .iter()
                    .rev()
                    .find(|a| a.decision == Decision::Reject && a.valid)
                    .or_else(|| {
                        s.approvals
                            .iter()
                            .rev()
                            .find(|a| a.decision == Decision::Reject)
                    })
                    .map(|a| a.user.login.clone())
            }),
            Some(GatePhase::Held) => status.and_then(|s| {
                s.held_by
                    .as_ref()
                    .map(|u| u.login.clone())
                    .or_else(|| held_by_condition(s))
            }),
            _ => None,
        };
        Self {
            pull_request: gate.spec.pull_request_number,
            phase,
            head_sha: status.and_then(|s| s.head_sha.clone()),
            risk: status.and_then(|s| s.risk.as_ref()).map(|r| RiskFacts {
                level: level_word(r.level),
                score: r.score,
                workflow: r.workflow.clone(),
                factors: r
                    .factors
                    .iter()
                    .map(|f| FactorRow {
                        factor: factor_word(f.factor),
                        score: f.score,
                        rule: f.rule.clone().unwrap_or_else(|| "baseline".to_owned()),
                        reason: f.reason.clone(),
                    })
                    .collect(),
            }),
            requirements: status
                .map(|s| s.requirements.iter().map(requirement_row).collect())
                .unwrap_or_default(),
            approvals,
            deadline: status.and_then(|s| s.deadline.as_ref()).map(format_time),
            escalations: status
                .map(|s| s.escalations.iter().map(escalation_line).collect())
                .unwrap_or_default(),
            auto_approve_reason: status.and_then(|s| s.auto_approve_reason.clone()),
            last_error: status.and_then(|s| s.last_error.clone()),
            actor,
        }
    }

    fn missing(&self) -> impl Iterator<Item = &RequirementRow> {
        self.requirements.iter().filter(|r| !r.met())
    }

    fn risk_phrase(&self) -> Option<String> {
        self.risk
            .as_ref()
            .map(|r| format!("{} risk (score {})", r.level, r.score))
    }

    /// The check run title: one line.
    pub(crate) fn title(&self) -> String {
        let title = match self.phase {
            None => "Evaluating".to_owned(),
            Some(GatePhase::Approved) => {
                let mut t = format!(
                    "Approved: {}",
                    self.risk_phrase()
                        .unwrap_or_else(|| "risk unknown".to_owned())
                );
                if self.requirements.is_empty() {
                    t.push_str(", auto-approved");
                } else {
                    t.push(',');
                    for r in &self.requirements {
                        let _ = write!(t, " {} {}", r.role, if r.met() { '✓' } else { '✗' });
                    }
                }
                t
            }
            Some(GatePhase::Pending) => {
                let waiting: Vec<String> = self
                    .missing()
                    .map(|r| {
                        let or = r
                            .stand_in
                            .as_ref()
                            .map(|s| format!(" or {s}"))
                            .unwrap_or_default();
                        if r.have > 0 || r.needed > 1 {
                            format!("{} ({} of {}){or}", r.role, r.have, r.needed)
                        } else {
                            format!("{}{or}", r.role)
                        }
                    })
                    .collect();
                let mut t = if waiting.is_empty() {
                    "Waiting for approvals".to_owned()
                } else {
                    format!("Waiting for {}", waiting.join(", "))
                };
                if let Some(deadline) = &self.deadline {
                    let _ = write!(t, " — deadline {deadline}");
                }
                t
            }
            Some(GatePhase::Held) => match &self.actor {
                Some(login) => format!("Held by @{login}"),
                None => "Held until /unhold".to_owned(),
            },
            Some(GatePhase::Rejected) => match &self.actor {
                Some(login) => format!("Rejected by @{login}"),
                None => "Rejected".to_owned(),
            },
            Some(GatePhase::Expired) => match &self.deadline {
                Some(deadline) => format!("Expired at {deadline} without the required approvals"),
                None => "Expired without the required approvals".to_owned(),
            },
            Some(GatePhase::Merged) => "Merged".to_owned(),
            Some(GatePhase::Closed) => "Closed without merging".to_owned(),
        };
        one_line(&title, MAX_TITLE_CHARS)
    }

    /// Why the pull request may or may not merge, in plain words (unescaped).
    pub(crate) fn explanation(&self) -> String {
        match self.phase {
            None => "Countersign has not evaluated this pull request yet, so it may not merge; \
                     the risk and the approvals it needs appear here once the controller has \
                     looked at it."
                .to_owned(),
            Some(GatePhase::Approved) if self.requirements.is_empty() => format!(
                "This pull request may merge: it is {} and its workflow approves it \
                 automatically{}.",
                self.risk_phrase().unwrap_or_else(|| "low risk".to_owned()),
                self.auto_approve_reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Some(GatePhase::Approved) => format!(
                "This pull request may merge: every required role approved the current head ({}).",
                self.risk_phrase()
                    .unwrap_or_else(|| "risk unknown".to_owned())
            ),
            Some(GatePhase::Pending) => {
                let needs: Vec<String> = self
                    .missing()
                    .map(|r| {
                        let more = r.needed.saturating_sub(r.have);
                        let or = r
                            .stand_in
                            .as_ref()
                            .map(|s| format!(" (or one from {s}, standing in)"))
                            .unwrap_or_default();
                        format!(
                            "{more} more approval{} from {}{or}",
                            if more == 1 { "" } else { "s" },
                            r.role
                        )
                    })
                    .collect();
                let mut t = if needs.is_empty() {
                    "This pull request may not merge yet: it is waiting for approvals.".to_owned()
                } else {
                    format!(
                        "This pull request may not merge yet: it needs {}.",
                        needs.join(" and ")
                    )
                };
                if let Some(deadline) = &self.deadline {
                    let _ = write!(t, " The deadline is {deadline}.");
                }
                t
            }
            Some(GatePhase::Held) => format!(
                "This pull request may not merge: {} put it on hold, and nothing merges until \
                 someone says /unhold.",
                self.actor
                    .as_ref()
                    .map_or_else(|| "someone".to_owned(), |l| format!("@{l}"))
            ),
            Some(GatePhase::Rejected) => format!(
                "This pull request may not merge: {} rejected it (requested changes or said \
                 /reject).",
                self.actor
                    .as_ref()
                    .map_or_else(|| "a role holder".to_owned(), |l| format!("@{l}"))
            ),
            Some(GatePhase::Expired) => "This pull request may not merge: the deadline passed \
                                         without the required approvals. Push a new commit to \
                                         start over."
                .to_owned(),
            Some(GatePhase::Merged) => "This pull request has merged.".to_owned(),
            Some(GatePhase::Closed) => "This pull request was closed without merging.".to_owned(),
        }
    }
}

/// The first `@login` in the Ready condition's message of a held gate, for statuses written
/// before `heldBy` existed.
fn held_by_condition(status: &ApprovalGateStatus) -> Option<String> {
    let condition = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    let at = condition.message.find('@')?;
    let login: String = condition.message[at + 1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '[' | ']'))
        .collect();
    (!login.is_empty()).then_some(login)
}

fn requirement_row(r: &RoleRequirement) -> RequirementRow {
    RequirementRow {
        role: r.role.as_str().to_owned(),
        needed: r.count,
        have: r.satisfied,
        approved_by: r.approved_by.clone(),
        stand_in: r.stand_in.as_ref().map(|s| s.as_str().to_owned()),
        stood_in_by: r.stood_in_by.clone(),
    }
}

fn approval_row(a: &ApprovalRecord) -> ApprovalRow {
    let invalid = (!a.valid).then_some(a.invalid_reason);
    ApprovalRow {
        login: a.user.login.clone(),
        roles: a.roles.iter().map(|r| r.as_str().to_owned()).collect(),
        decision: match a.decision {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        },
        via: match a.via {
            ApprovalVia::Review => "review",
            ApprovalVia::Comment => "comment",
            ApprovalVia::Kubectl => "kubectl",
        },
        short_sha: a.sha.chars().take(7).collect(),
        time: format_time(&a.time),
        valid: a.valid,
        invalid_word: invalid.map(|r| r.map_or("invalid", invalid_word)),
        invalid_why: invalid.map(|r| r.map_or("does not count", invalid_why)),
    }
}

fn escalation_line(e: &Escalation) -> String {
    let time = format_time(&e.time);
    match (e.action, &e.to_role) {
        (TimeoutAction::Escalate, Some(role)) => match e.mode {
            Some(EscalationMode::StandIn) if e.stands_in_for.is_empty() => {
                format!("{time}: escalated to {role} (stands in for missing approvers)")
            }
            Some(EscalationMode::StandIn) => {
                let roles: Vec<&str> = e.stands_in_for.iter().map(|r| r.as_str()).collect();
                format!(
                    "{time}: escalated to {role} (stands in for {})",
                    roles.join(", ")
                )
            }
            Some(EscalationMode::Additional) | None => {
                format!("{time}: escalated to {role} (required in addition)")
            }
        },
        (TimeoutAction::Escalate, None) => format!("{time}: escalated"),
        (TimeoutAction::Remind, _) => format!("{time}: reminded the missing approvers"),
        (TimeoutAction::Expire, _) => format!("{time}: expired"),
    }
}

/// The word the CRD uses for an invalid reason.
pub fn invalid_word(reason: InvalidReason) -> &'static str {
    match reason {
        InvalidReason::Stale => "stale",
        InvalidReason::SelfApproval => "self",
        InvalidReason::Requester => "requester",
        InvalidReason::Committer => "committer",
        InvalidReason::Agent => "agent",
        InvalidReason::NotInRole => "not-in-role",
        InvalidReason::Tampered => "tampered",
        InvalidReason::Superseded => "superseded",
        InvalidReason::Pusher => "pusher",
        InvalidReason::HeadUnknown => "head-unknown",
    }
}

/// Why an approval with this reason does not count, in plain words.
pub fn invalid_why(reason: InvalidReason) -> &'static str {
    match reason {
        InvalidReason::Stale => {
            "given on an older head whose change (the diff from the merge base) differs from the current one"
        }
        InvalidReason::SelfApproval => "the author cannot approve their own pull request",
        InvalidReason::Requester => "the person who asked for the AI run cannot approve its result",
        InvalidReason::Committer => "someone who committed to the pull request cannot approve it",
        InvalidReason::Agent => "the agent's own identity cannot approve",
        InvalidReason::NotInRole => "holds none of the roles still required",
        InvalidReason::Tampered => "the comment or review was edited by someone else",
        InvalidReason::Superseded => "the same person decided again later; only the latest counts",
        InvalidReason::Pusher => {
            "someone who pushed to the pull request's branch cannot approve it"
        }
        InvalidReason::HeadUnknown => {
            "Countersign never received this comment, so it does not know which head it approved; say it again"
        }
    }
}

fn level_word(level: RiskLevel) -> &'static str {
    match level {
        RiskLevel::Low => "low",
        RiskLevel::Medium => "medium",
        RiskLevel::High => "high",
        RiskLevel::Critical => "critical",
    }
}

fn factor_word(factor: RiskFactor) -> &'static str {
    match factor {
        RiskFactor::Impact => "impact",
        RiskFactor::Complexity => "complexity",
        RiskFactor::BusinessImpact => "businessImpact",
    }
}

/// `2026-12-04 18:00 UTC`.
pub(crate) fn format_time(time: &Time) -> String {
    time.0.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

fn one_line(text: &str, max_chars: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max_chars {
        return flat;
    }
    let mut cut: String = flat.chars().take(max_chars.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests;
