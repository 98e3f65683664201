//! `POST /api/v1/simulate`: what Countersign would decide for a change and a set of
//! hypothetical reviewers. Builds the same [`PullFacts`] the controller builds from GitHub
//! and runs the same engine (`CompiledPolicy::evaluate`, then
//! [`evaluate_approvals`]), so the answer is what the gate and its check run would say.

use countersign_crds::approval_gate::{ApprovalVia, InvalidReason};
use countersign_crds::{ApprovalGate, ApprovalGateSpec, ApprovalGateStatus, GitHubUser, RoleName};
use countersign_crds::{LocalRef, RiskPolicySpec};
use countersign_policies::approvals::{PullFacts, Signal, SignalKind, evaluate_approvals};
use countersign_policies::{Change, CompiledPolicy, default_policy};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, FieldError};
use countersign_github::gate_report::{check_output, invalid_why, invalid_word};

/// The head commit simulated decisions are given on.
const SIMULATED_HEAD: &str = "5151515151515151515151515151515151515151";
/// The fingerprint of its change.
const SIMULATED_CHANGE: &str = "p1-simulated";

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SimulateRequest {
    /// A RiskPolicy spec or a whole RiskPolicy object; the built-in default when absent.
    #[serde(default)]
    pub policy: Option<Value>,
    /// The change, as `countersign policy eval` reads it.
    #[serde(default)]
    pub change: Option<Value>,
    /// Who opened the pull request and who else is involved.
    #[serde(default)]
    pub pull_request: PullRequestInput,
    /// Hypothetical reviewers, in the order they decide.
    #[serde(default)]
    pub reviewers: Vec<ReviewerInput>,
}

/// The people of the pull request.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PullRequestInput {
    /// The author.
    #[serde(default)]
    pub author: Option<GitHubUser>,
    /// Whether an agent wrote the change (sets the change's `authorKind` to `ai` unless given).
    #[serde(default)]
    pub ai_generated: bool,
    /// Who asked for the AI run.
    #[serde(default)]
    pub requester: Option<GitHubUser>,
    /// Everyone else who asked for the AI run (e.g. with `/retry`).
    #[serde(default)]
    pub requesters: Vec<GitHubUser>,
    /// Everyone who committed.
    #[serde(default)]
    pub committers: Vec<GitHubUser>,
    /// Everyone who pushed to the branch.
    #[serde(default)]
    pub pushers: Vec<GitHubUser>,
    /// The agent's own accounts.
    #[serde(default)]
    pub agent_accounts: Vec<GitHubUser>,
    /// Roles added by escalations.
    #[serde(default)]
    pub escalated_roles: Vec<RoleName>,
}

/// One hypothetical reviewer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewerInput {
    /// GitHub login.
    pub login: String,
    /// GitHub user id (what roles are matched on).
    pub id: u64,
    /// The Project roles this person holds.
    #[serde(default)]
    pub roles: Vec<RoleName>,
    /// What they say.
    pub decision: ReviewerDecision,
    /// Where (default `review`).
    #[serde(default = "default_via")]
    pub via: ApprovalVia,
    /// Given on an older head (with a different change): the approval is stale.
    #[serde(default)]
    pub stale: bool,
    /// Their approval comment was edited by someone else.
    #[serde(default)]
    pub tampered: bool,
}

fn default_via() -> ApprovalVia {
    ApprovalVia::Review
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReviewerDecision {
    /// Approve.
    Approve,
    /// Request changes / `/reject`.
    Reject,
    /// `/hold`.
    Hold,
    /// `/unhold`.
    Unhold,
}

/// Runs the simulation; the JSON answer of `POST /api/v1/simulate`.
pub fn simulate(request: SimulateRequest) -> Result<Value, ApiError> {
    let spec = policy_spec(request.policy)?;
    let policy = CompiledPolicy::compile(&spec).map_err(|errors| {
        ApiError::InvalidPolicy(
            errors
                .errors()
                .iter()
                .map(FieldError::from_policy_error)
                .collect(),
        )
    })?;
    let pr = request.pull_request;
    let mut change = request.change.unwrap_or_else(|| json!({}));
    if let Value::Object(map) = &mut change
        && pr.ai_generated
        && !map.contains_key("authorKind")
    {
        map.insert("authorKind".to_owned(), json!("ai"));
    }
    let change: Change =
        serde_json::from_value(change).map_err(|e| ApiError::BadRequest(format!("change: {e}")))?;
    let assessment = policy.evaluate(&change);

    let start = Timestamp::now();
    let mut facts = PullFacts {
        head_sha: SIMULATED_HEAD.to_owned(),
        change_id: Some(SIMULATED_CHANGE.to_owned()),
        author: pr.author.clone(),
        ai_generated: pr.ai_generated,
        requesters: pr.requester.into_iter().chain(pr.requesters).collect(),
        agent_accounts: pr.agent_accounts,
        committers: pr.committers,
        pushers: pr.pushers,
        escalated_roles: pr.escalated_roles,
        ..PullFacts::default()
    };
    for (i, r) in request.reviewers.iter().enumerate() {
        let user = GitHubUser {
            login: r.login.clone(),
            id: Some(r.id),
        };
        facts
            .roles
            .entry(r.id)
            .or_default()
            .extend(r.roles.iter().cloned());
        let sha = if r.stale {
            // An older head whose change is unknown, so it differs.
            format!("{:040x}", i + 1)
        } else {
            SIMULATED_HEAD.to_owned()
        };
        facts.signals.push(Signal {
            user,
            kind: match r.decision {
                ReviewerDecision::Approve => SignalKind::Approve,
                ReviewerDecision::Reject => SignalKind::Reject,
                ReviewerDecision::Hold => SignalKind::Hold,
                ReviewerDecision::Unhold => SignalKind::Unhold,
            },
            via: r.via,
            sha: Some(sha),
            time: start
                .checked_add(SignedDuration::from_secs(
                    i64::try_from(i).unwrap_or(i64::MAX),
                ))
                .unwrap_or(start),
            tampered: r.tampered,
        });
    }
    let verdict = evaluate_approvals(&assessment, policy.separation_of_duties(), &facts);

    // The gate the controller would write, rendered the way the check run renders it.
    let gate = ApprovalGate {
        metadata: Default::default(),
        spec: ApprovalGateSpec {
            project_ref: LocalRef::new("simulation"),
            pull_request_number: 1,
            base_branch: change
                .base_branch
                .clone()
                .unwrap_or_else(|| "main".to_owned()),
            author: pr.author.unwrap_or_else(|| GitHubUser {
                login: "author".to_owned(),
                id: None,
            }),
            ai_generated: pr.ai_generated,
            agent_run_ref: None,
            requesters: Vec::new(),
        },
        status: Some(ApprovalGateStatus {
            phase: verdict.phase,
            head_sha: Some(SIMULATED_HEAD.to_owned()),
            risk: Some(assessment.to_risk_assessment()),
            requirements: verdict.requirements.clone(),
            approvals: verdict.records.clone(),
            held_by: verdict.held_by.clone(),
            auto_approve_reason: verdict.auto_approved.clone(),
            ..ApprovalGateStatus::default()
        }),
    };
    let check = check_output(&gate, None);

    let requirements: Vec<Value> = verdict
        .requirements
        .iter()
        .map(|r| {
            json!({
                "role": r.role,
                "needed": r.count,
                "have": r.satisfied,
                "approvedBy": r.approved_by,
                "satisfied": r.satisfied >= r.count,
            })
        })
        .collect();
    let records: Vec<Value> = verdict
        .records
        .iter()
        .map(|a| {
            json!({
                "login": a.user.login,
                "id": a.user.id,
                "roles": a.roles,
                "decision": a.decision,
                "via": a.via,
                "valid": a.valid,
                "invalidReason": a.invalid_reason.map(invalid_word),
                "why": a.invalid_reason.map(explain),
            })
        })
        .collect();
    Ok(json!({
        "phase": verdict.phase,
        "risk": assessment.to_risk_assessment(),
        "assessment": assessment,
        "requirements": requirements,
        "reviewers": records,
        "heldBy": verdict.held_by.map(|u| u.login),
        "rejectedBy": verdict.rejected_by.iter().map(|u| u.login.clone()).collect::<Vec<_>>(),
        "autoApproved": verdict.auto_approved,
        "check": {
            "status": check_status_name(check.status),
            "conclusion": check.conclusion,
            "title": check.title,
            "summary": check.summary,
        },
    }))
}

fn explain(reason: InvalidReason) -> &'static str {
    invalid_why(reason)
}

fn check_status_name(status: countersign_github::CheckStatus) -> &'static str {
    use countersign_github::CheckStatus;
    match status {
        CheckStatus::Queued => "queued",
        CheckStatus::InProgress => "in_progress",
        CheckStatus::Completed => "completed",
    }
}

/// The policy of a request: a spec, a whole object (its `spec`), or the default.
fn policy_spec(policy: Option<Value>) -> Result<RiskPolicySpec, ApiError> {
    let Some(mut value) = policy else {
        return Ok(default_policy().spec);
    };
    if let Some(spec) = value.get_mut("spec") {
        value = spec.take();
    }
    serde_json::from_value(value).map_err(|e| ApiError::BadRequest(format!("policy: {e}")))
}
