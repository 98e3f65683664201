//! The pure half of gate reconciliation: from the facts read from GitHub, the RiskPolicy's
//! assessment and the previous status to the next status and the side effects to perform.
//!
//! Deadlines: the current content (the change's fingerprint) starts waiting when first seen; the workflow's
//! timeout counts from there, or from the last reminder or escalation. At the deadline the
//! workflow reminds (and waits another timeout), escalates (asks `escalateTo`, once; later
//! deadlines remind) or expires (the check fails until new content is pushed). A new change
//! starts over: approvals on the old one are stale anyway.
//!
//! An escalation's `escalationMode` decides what the `escalateTo` role's approval does:
//! `standIn` (the default) lets one approval by one of its holders satisfy every requirement
//! still missing at the deadline (recorded in the escalation as `standsInFor`, so later
//! evaluations stand in for the same roles); `additional` makes it one more required
//! approval. Escalations recorded without a mode count as `additional`, as they did.

use std::time::Duration;

use countersign_crds::approval_gate::{Escalation, HeadChange};
use countersign_crds::conditions;
use countersign_crds::risk_policy::{EscalationMode, SeparationOfDuties, TimeoutAction};
use countersign_crds::{ApprovalGate, ApprovalGateStatus, GatePhase, GitHubUser, RoleName};
use countersign_policies::Assessment;
use countersign_policies::approvals::{PullFacts, StandIn, Verdict, evaluate_approvals};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Whether the pull request is still open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullState {
    /// Open (drafts included).
    Open,
    /// Merged.
    Merged,
    /// Closed without merging.
    Closed,
}

/// Everything [`decide`] needs.
pub struct Inputs<'a> {
    /// The gate as last read (its status is the previous decision).
    pub gate: &'a ApprovalGate,
    /// The RiskPolicy's decision about the change.
    pub assessment: &'a Assessment,
    /// The policy's separation-of-duties switches.
    pub duties: &'a SeparationOfDuties,
    /// The facts about the pull request (escalated roles are filled in here).
    pub facts: PullFacts,
    /// What the status records besides the verdict.
    pub audit: Audit,
    /// Open, merged or closed.
    pub state: PullState,
    /// Whether the pull request is a draft (never auto-merged).
    pub draft: bool,
    /// Whether the Project asks missing roles for reviews.
    pub request_reviewers: bool,
    /// Whether the Project merges approved pull requests.
    pub auto_merge: bool,
    /// The time now.
    pub now: Timestamp,
}

/// What the status records for the audit besides the verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// The head's tree.
    pub tree_sha: String,
    /// The change fingerprints of the heads the gate knows, newest last.
    pub changes: Vec<HeadChange>,
    /// Everyone who asked for the AI run.
    pub requesters: Vec<GitHubUser>,
    /// Everyone who pushed to the branch.
    pub pushers: Vec<GitHubUser>,
}

/// A message for the pull request's conversation at a deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// What happened.
    pub action: TimeoutAction,
    /// The roles still missing (including a newly escalated one); for reminders also the
    /// roles that may stand in for them.
    pub missing: Vec<RoleName>,
    /// The role newly asked, for escalations.
    pub to_role: Option<RoleName>,
    /// For escalations: in place of the missing roles or in addition to them.
    pub mode: Option<EscalationMode>,
    /// For `standIn` escalations: the roles the escalation role may approve for.
    pub stands_in_for: Vec<RoleName>,
}

/// What to write and do.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The next status.
    pub status: ApprovalGateStatus,
    /// The approval rules' verdict the status was built from.
    pub verdict: Verdict,
    /// A reminder, escalation or expiry to announce.
    pub notice: Option<Notice>,
    /// Roles to ask for a review now (not asked before).
    pub request_roles: Vec<RoleName>,
    /// Merge the pull request (approved, open, not a draft, auto-merge on).
    pub merge: bool,
    /// Reconcile again after this long (the next deadline).
    pub requeue_after: Option<Duration>,
}

/// Decides the next status and side effects.
pub fn decide(mut inputs: Inputs<'_>) -> Plan {
    let prev = inputs.gate.status.clone().unwrap_or_default();
    let now = inputs.now;
    // The same change keeps its clock (a clean rebase too). When either side's change could
    // not be read, the same head does: a failed read must not revive an expired gate.
    let same_content = match (inputs.facts.change_id.as_deref(), prev.change_id.as_deref()) {
        (Some(now), Some(before)) => now == before,
        _ => prev.head_sha.as_deref() == Some(inputs.facts.head_sha.as_str()),
    };
    let (waiting_since, mut escalations) = if same_content {
        (
            prev.waiting_since.as_ref().map_or(now, |t| t.0),
            prev.escalations.clone(),
        )
    } else {
        (now, Vec::new())
    };
    apply_escalations(&mut inputs.facts, &escalations);
    let mut verdict = evaluate_approvals(inputs.assessment, inputs.duties, &inputs.facts);

    let workflow = &inputs.assessment.workflow;
    let mut notice = None;
    let mut deadline = None;
    let mut phase = verdict.phase;
    let expired = escalations
        .iter()
        .any(|e| e.action == TimeoutAction::Expire);
    if expired && matches!(phase, GatePhase::Pending | GatePhase::Approved) {
        // Expiry sticks to the content: approvals after the deadline do not revive it.
        phase = GatePhase::Expired;
    } else if phase == GatePhase::Pending
        && let Some(timeout) = workflow.timeout.as_ref()
    {
        let timeout = SignedDuration::try_from(timeout.0).unwrap_or(SignedDuration::MAX);
        let from = escalations.last().map_or(waiting_since, |e| e.time.0);
        let due = from.saturating_add(timeout).unwrap_or(Timestamp::MAX);
        if now >= due {
            let escalated_before = |role: &RoleName| {
                escalations.iter().any(|e| {
                    e.action == TimeoutAction::Escalate && e.to_role.as_ref() == Some(role)
                })
            };
            let action = match workflow.on_timeout {
                TimeoutAction::Escalate
                    if workflow
                        .escalate_to
                        .as_ref()
                        .is_some_and(|r| !escalated_before(r)) =>
                {
                    TimeoutAction::Escalate
                }
                TimeoutAction::Escalate => TimeoutAction::Remind,
                other => other,
            };
            let to_role = (action == TimeoutAction::Escalate)
                .then(|| workflow.escalate_to.clone())
                .flatten();
            let mode = (action == TimeoutAction::Escalate)
                .then(|| workflow.escalation_mode.unwrap_or_default());
            // A stand-in answers for the roles missing now, not for whoever stops
            // approving later.
            let stands_in_for: Vec<RoleName> = if mode == Some(EscalationMode::StandIn) {
                verdict.missing_roles().map(|r| r.role.clone()).collect()
            } else {
                Vec::new()
            };
            escalations.push(Escalation {
                time: Time(now),
                action,
                to_role: to_role.clone(),
                mode,
                stands_in_for: stands_in_for.clone(),
                notice_pending: true,
            });
            if action == TimeoutAction::Expire {
                phase = GatePhase::Expired;
                deadline = Some(due);
            } else {
                apply_escalations(&mut inputs.facts, &escalations);
                verdict = evaluate_approvals(inputs.assessment, inputs.duties, &inputs.facts);
                phase = verdict.phase;
                deadline = Some(now.saturating_add(timeout).unwrap_or(Timestamp::MAX));
            }
            // A reminder also pings whoever may stand in for a missing role.
            let missing = if action == TimeoutAction::Remind {
                verdict.roles_to_ask()
            } else {
                verdict.missing_roles().map(|r| r.role.clone()).collect()
            };
            notice = Some(Notice {
                action,
                missing,
                to_role,
                mode,
                stands_in_for,
            });
        } else {
            deadline = Some(due);
        }
    }
    phase = match inputs.state {
        PullState::Merged => GatePhase::Merged,
        PullState::Closed => GatePhase::Closed,
        PullState::Open => phase,
    };
    // A notice decided before but not posted (the controller failed in between) is posted
    // now, while the pull request is open; a closed one needs no announcement.
    if let Some(last) = escalations.last_mut()
        && last.notice_pending
        && notice.is_none()
    {
        if inputs.state == PullState::Open {
            notice = Some(Notice {
                action: last.action,
                missing: if last.action == TimeoutAction::Remind {
                    verdict.roles_to_ask()
                } else {
                    verdict.missing_roles().map(|r| r.role.clone()).collect()
                },
                to_role: last.to_role.clone(),
                mode: last.mode,
                stands_in_for: last.stands_in_for.clone(),
            });
        } else {
            last.notice_pending = false;
        }
    }

    let decided = matches!(
        phase,
        GatePhase::Approved | GatePhase::Rejected | GatePhase::Expired
    );
    let decision_time = if decided && prev.phase == phase {
        prev.decision_time.clone().or(Some(Time(now)))
    } else if decided {
        Some(Time(now))
    } else {
        None
    };
    let open = inputs.state == PullState::Open;
    let request_roles: Vec<RoleName> =
        if open && phase == GatePhase::Pending && inputs.request_reviewers {
            verdict
                .roles_to_ask()
                .into_iter()
                .filter(|r| !prev.requested_roles.contains(r))
                .collect()
        } else {
            Vec::new()
        };
    let mut requested_roles = prev.requested_roles.clone();
    requested_roles.extend(request_roles.iter().cloned());

    let mut message = summary_line(phase, &verdict, inputs.assessment);
    if inputs.facts.awaiting_push && phase == GatePhase::Pending {
        message = format!(
            "Waiting for GitHub's event for the push of {}: who pushed it is not known yet",
            &inputs.facts.head_sha[..inputs.facts.head_sha.len().min(12)]
        );
    }
    let mut conditions = prev.conditions.clone();
    conditions::apply_readiness(
        &mut conditions,
        &phase.readiness(&message),
        inputs.gate.metadata.generation,
        now,
    );
    let requeue_after = deadline
        .filter(|_| open && phase == GatePhase::Pending)
        .map(|d| {
            let wait = d.duration_since(now);
            Duration::try_from(wait).unwrap_or(Duration::ZERO)
        });
    let status = ApprovalGateStatus {
        observed_generation: inputs.gate.metadata.generation,
        conditions,
        phase,
        head_sha: Some(inputs.facts.head_sha.clone()),
        tree_sha: Some(inputs.audit.tree_sha.clone()).filter(|t| !t.is_empty()),
        change_id: inputs.facts.change_id.clone(),
        changes: inputs.audit.changes.clone(),
        requesters: inputs.audit.requesters.clone(),
        pushers: inputs.audit.pushers.clone(),
        risk: Some(inputs.assessment.to_risk_assessment()),
        requirements: verdict.requirements.clone(),
        approvals: verdict.records.clone(),
        deadline: deadline.filter(|_| open).map(Time),
        escalations,
        held_by: verdict.held_by.clone(),
        auto_approve_reason: verdict
            .auto_approved
            .as_deref()
            .map(|r| countersign_policies::truncate(r, countersign_policies::MAX_REASON_LEN)),
        waiting_since: Some(Time(waiting_since)),
        requested_roles,
        check_run_id: prev.check_run_id,
        check_run_sha: prev.check_run_sha.clone(),
        check_run_output: prev.check_run_output.clone(),
        merge_group_sha: prev.merge_group_sha.clone(),
        merge_group_check_run_id: prev.merge_group_check_run_id,
        merge_group_check_run_output: prev.merge_group_check_run_output.clone(),
        last_error: None,
        decision_time,
    };
    Plan {
        merge: open && phase == GatePhase::Approved && inputs.auto_merge && !inputs.draft,
        status,
        verdict,
        notice,
        request_roles,
        requeue_after,
    }
}

/// Puts the escalations so far into the facts: roles required in addition, and roles that
/// stand in for the ones missing at their deadline.
fn apply_escalations(facts: &mut PullFacts, escalations: &[Escalation]) {
    facts.escalated_roles.clear();
    facts.stand_ins.clear();
    for e in escalations
        .iter()
        .filter(|e| e.action == TimeoutAction::Escalate)
    {
        let Some(role) = e.to_role.clone() else {
            continue;
        };
        match e.mode.unwrap_or(EscalationMode::Additional) {
            EscalationMode::Additional => facts.escalated_roles.push(role),
            EscalationMode::StandIn => facts.stand_ins.push(StandIn {
                role,
                for_roles: e.stands_in_for.clone(),
            }),
        }
    }
}

/// The one-line state used as the `Ready` condition's message.
pub fn summary_line(phase: GatePhase, verdict: &Verdict, assessment: &Assessment) -> String {
    let risk = format!(
        "{} risk (score {})",
        countersign_policies::level_name(assessment.level),
        assessment.score
    );
    match phase {
        GatePhase::Approved if verdict.auto_approved.is_some() => {
            format!("Approved automatically: {risk}")
        }
        GatePhase::Approved => format!("Approved: {risk}"),
        GatePhase::Pending => {
            let missing: Vec<String> = verdict
                .missing_roles()
                .map(|r| {
                    let or = r
                        .stand_in
                        .as_ref()
                        .map(|s| format!(" or {s} standing in"))
                        .unwrap_or_default();
                    format!("{} ({} of {}){or}", r.role, r.count - r.satisfied, r.count)
                })
                .collect();
            format!("Waiting for {}: {risk}", missing.join(", "))
        }
        GatePhase::Held => format!(
            "Held by @{}",
            verdict
                .held_by
                .as_ref()
                .map_or("someone", |u| u.login.as_str())
        ),
        GatePhase::Rejected => {
            let who: Vec<String> = verdict
                .rejected_by
                .iter()
                .map(|u| format!("@{}", u.login))
                .collect();
            format!("Rejected by {}", who.join(", "))
        }
        GatePhase::Expired => format!("Expired: no approval before the deadline; {risk}"),
        GatePhase::Merged => "Merged".to_owned(),
        GatePhase::Closed => "Closed without merging".to_owned(),
    }
}

#[cfg(test)]
mod tests;
