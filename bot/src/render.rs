//! Markdown the bot posts about a gate (the `/risk` answer). Pure: a gate in, text out.

use std::fmt::Write as _;

use countersign_crds::ApprovalGate;
use countersign_crds::risk_policy::{RiskFactor, RiskLevel};

/// The `/risk` answer for a pull request whose gate is `gate` (None: no gate yet).
pub fn risk_summary(gate: Option<&ApprovalGate>) -> String {
    let Some(risk) = gate
        .and_then(|g| g.status.as_ref())
        .and_then(|s| s.risk.as_ref())
    else {
        return "Countersign has not scored this pull request yet; the score appears here and \
                in the `countersign/approval` check once the controller has evaluated it."
            .to_owned();
    };
    let mut out = format!(
        "**Risk: {} ({}/10)**, workflow `{}`\n\n| Factor | Score | Why |\n| --- | --- | --- |\n",
        level_word(risk.level),
        risk.score,
        risk.workflow
    );
    for factor in &risk.factors {
        let why = factor.reason.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            factor_word(factor.factor),
            factor.score,
            why
        );
    }
    if let Some(status) = gate.and_then(|g| g.status.as_ref())
        && !status.requirements.is_empty()
    {
        out.push_str("\nApprovals needed:\n");
        for req in &status.requirements {
            let _ = writeln!(out, "- `{}`: {}/{}", req.role, req.satisfied, req.count);
        }
    }
    out
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
        RiskFactor::BusinessImpact => "business impact",
    }
}

#[cfg(test)]
mod tests {
    use countersign_crds::approval_gate::{
        ApprovalGateSpec, ApprovalGateStatus, FactorScore, RiskAssessment, RoleRequirement,
    };
    use countersign_crds::{GitHubUser, LocalRef};

    use super::*;

    #[test]
    fn unscored_and_scored_gates() {
        assert!(risk_summary(None).contains("not scored"));
        let mut gate = ApprovalGate::new(
            "p-pr-1",
            ApprovalGateSpec {
                project_ref: LocalRef::new("p"),
                pull_request_number: 1,
                base_branch: "main".into(),
                author: GitHubUser {
                    login: "a".into(),
                    id: Some(1),
                },
                ai_generated: false,
                agent_run_ref: None,
                requesters: Vec::new(),
            },
        );
        gate.status = Some(ApprovalGateStatus {
            risk: Some(RiskAssessment {
                score: 9,
                level: RiskLevel::Critical,
                workflow: "executive".into(),
                factors: vec![FactorScore {
                    factor: RiskFactor::Impact,
                    score: 9,
                    rule: Some("data-migration".into()),
                    reason: "migrations/0042.sql matched data-migration | (migrations/**)".into(),
                }],
            }),
            requirements: vec![RoleRequirement {
                role: "cto".into(),
                count: 1,
                satisfied: 0,
                approved_by: vec![],
                stand_in: None,
                stood_in_by: None,
            }],
            ..ApprovalGateStatus::default()
        });
        let text = risk_summary(Some(&gate));
        assert!(text.contains("**Risk: critical (9/10)**"), "{text}");
        assert!(
            text.contains(
                "| impact | 9 | migrations/0042.sql matched data-migration \\| (migrations/**) |"
            ),
            "{text}"
        );
        assert!(text.contains("- `cto`: 0/1"), "{text}");
    }
}
