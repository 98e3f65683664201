use countersign_crds::ApprovalGate;
use countersign_crds::approval_gate::GatePhase;
use serde_json::{Value, json};

use super::*;
use crate::CheckStatus;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn gate(status: Option<Value>) -> ApprovalGate {
    let mut object = json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "ApprovalGate",
        "metadata": {"name": "widgets-pr-42", "namespace": "team-a"},
        "spec": {
            "projectRef": {"name": "widgets"},
            "pullRequestNumber": 42,
            "baseBranch": "main",
            "author": {"login": "agent-bot[bot]", "id": 9},
            "aiGenerated": true
        }
    });
    if let Some(status) = status {
        object["status"] = status;
    }
    serde_json::from_value(object).expect("valid gate")
}

fn record(login: &str, roles: &[&str], valid: bool, reason: Option<&str>) -> Value {
    let mut r = json!({
        "user": {"login": login, "id": 100},
        "roles": roles,
        "decision": "approve",
        "sha": SHA,
        "time": "2026-12-04T10:30:00Z",
        "via": "review",
        "valid": valid
    });
    if let Some(reason) = reason {
        r["invalidReason"] = json!(reason);
    }
    r
}

fn full_status(phase: &str) -> Value {
    json!({
        "phase": phase,
        "headSha": SHA,
        "risk": {
            "score": 6, "level": "medium", "workflow": "supervised",
            "factors": [
                {"factor": "impact", "score": 6, "rule": "features",
                 "reason": "src/api/handler.rs matched features (src/**)"},
                {"factor": "complexity", "score": 2, "reason": "baseline"}
            ]
        },
        "requirements": [
            {"role": "developer", "count": 1, "satisfied": 1, "approvedBy": ["dave"]},
            {"role": "tech_lead", "count": 1, "satisfied": 0}
        ],
        "approvals": [
            record("dave", &["developer"], true, None),
            record("rita", &["tech_lead"], false, Some("requester")),
            record("old", &["tech_lead"], false, Some("stale")),
        ],
        "deadline": "2026-12-04T18:00:00Z",
        "escalations": [{"time": "2026-12-04T14:00:00Z", "action": "remind"}]
    })
}

fn with_phase(phase: &str) -> ApprovalGate {
    gate(Some(full_status(phase)))
}

#[test]
fn conclusions_follow_the_phase() {
    let cases = [
        ("Approved", CheckStatus::Completed, Some("success")),
        ("Merged", CheckStatus::Completed, Some("success")),
        ("Rejected", CheckStatus::Completed, Some("failure")),
        ("Expired", CheckStatus::Completed, Some("failure")),
        ("Closed", CheckStatus::Completed, Some("neutral")),
        ("Pending", CheckStatus::InProgress, None),
        ("Held", CheckStatus::InProgress, None),
    ];
    for (phase, status, conclusion) in cases {
        let out = check_output(&with_phase(phase), None);
        assert_eq!(out.status, status, "{phase}");
        assert_eq!(out.conclusion, conclusion, "{phase}");
        assert!(!out.title.contains('\n'), "{phase}: {}", out.title);
    }
}

#[test]
fn a_gate_without_status_is_evaluating() {
    let out = check_output(&gate(None), None);
    assert_eq!(out.status, CheckStatus::InProgress);
    assert_eq!(out.conclusion, None);
    assert_eq!(out.title, "Evaluating");
    assert!(html_page(&gate(None)).contains("Pull request #42: Evaluating"));
}

#[test]
fn titles_say_who_and_what() {
    let mut approved = full_status("Approved");
    approved["requirements"][1]["satisfied"] = json!(1);
    assert_eq!(
        check_output(&gate(Some(approved)), None).title,
        "Approved: medium risk (score 6), developer ✓ tech_lead ✓"
    );
    assert_eq!(
        check_output(&with_phase("Pending"), None).title,
        "Waiting for tech_lead — deadline 2026-12-04 18:00 UTC"
    );
    let mut rejected = full_status("Rejected");
    rejected["approvals"][0]["decision"] = json!("reject");
    rejected["approvals"][0]["user"]["login"] = json!("bob");
    assert_eq!(
        check_output(&gate(Some(rejected)), None).title,
        "Rejected by @bob"
    );
    let mut held = full_status("Held");
    held["conditions"] = json!([{
        "type": "Ready", "status": "False", "reason": "Held",
        "message": "held by @alice with /hold", "lastTransitionTime": "2026-12-04T11:00:00Z"
    }]);
    assert_eq!(
        check_output(&gate(Some(held)), None).title,
        "Held by @alice"
    );
    let mut auto = json!({"phase": "Approved", "autoApproveReason": "docs only: README.md",
        "risk": {"score": 2, "level": "low", "workflow": "standard"}});
    auto["requirements"] = json!([]);
    let auto = gate(Some(auto));
    assert_eq!(
        check_output(&auto, None).title,
        "Approved: low risk (score 2), auto-approved"
    );
    assert!(
        check_output(&auto, None)
            .summary
            .contains("docs only: README.md")
    );
    assert!(html_page(&auto).contains("docs only: README.md"));
    let mut held = full_status("Held");
    held["heldBy"] = json!({"login": "carol", "id": 5});
    assert_eq!(
        check_output(&gate(Some(held)), None).title,
        "Held by @carol"
    );
}

#[test]
fn summary_holds_every_fact() {
    let out = check_output(
        &with_phase("Pending"),
        Some("https://cs.example/gates/team-a/widgets-pr-42"),
    );
    let s = &out.summary;
    for needle in [
        "| impact | 6 | features | src/api/handler.rs matched features (src/\\*\\*) |",
        "Level **medium**, score **6**/10, workflow **supervised**",
        "| ✅ developer | 1 | 1 | \\@dave |",
        "| ⏳ tech\\_lead | 1 | 0 | — |",
        "✅ counted",
        "❌ requester: the person who asked for the AI run cannot approve its result",
        "❌ stale",
        "0123456",
        "2026-12-04 10:30 UTC",
        "2026-12-04 18:00 UTC",
        "reminded the missing approvers",
        "[Details page](https://cs.example/gates/team-a/widgets-pr-42)",
    ] {
        assert!(s.contains(needle), "summary lacks {needle:?}:\n{s}");
    }
}

#[test]
fn hostile_strings_are_escaped() {
    let mut status = full_status("Pending");
    status["approvals"][0]["user"]["login"] = json!("<script>alert(1)</script>");
    status["risk"]["factors"][0]["reason"] = json!("deploy/|prod|/`x`<img src=x>.yaml");
    status["requirements"][0]["approvedBy"] = json!(["a|b"]);
    let g = gate(Some(status));
    let summary = check_output(&g, None).summary;
    assert!(!summary.contains("<script>"), "{summary}");
    assert!(!summary.contains("<img"), "{summary}");
    assert!(summary.contains("deploy/\\|prod\\|/\\`x\\`&lt;img src=x&gt;.yaml"));
    assert!(summary.contains("a\\|b"));
    for line in summary.lines().filter(|l| l.starts_with('|')) {
        let cells = line.matches(" | ").count();
        assert!(cells <= 6, "a `|` split a cell: {line}");
    }
    let page = html_page(&g);
    assert!(!page.contains("<script>"), "{page}");
    assert!(!page.contains("<img"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("data-user=\"&lt;script&gt;alert(1)&lt;/script&gt;\""));
    assert!(!page.to_ascii_lowercase().contains("<script"));
}

#[test]
fn long_summaries_are_cut_on_a_char_boundary() {
    let mut status = full_status("Pending");
    let reason = "é".repeat(500);
    let approvals: Vec<Value> = (0..200)
        .map(|i| record(&format!("user{i}-ééééééééééé"), &["developer"], true, None))
        .collect();
    status["approvals"] = json!(approvals);
    status["risk"]["factors"] = json!(
        (0..100)
            .map(|i| json!({"factor": "impact", "score": 1, "rule": format!("r{i}"), "reason": reason}))
            .collect::<Vec<_>>()
    );
    let out = check_output(&gate(Some(status)), Some("https://cs.example/gates/a/b"));
    assert!(
        out.summary.len() <= MAX_SUMMARY_BYTES,
        "{}",
        out.summary.len()
    );
    assert!(out.summary.contains(TRUNCATION_MARKER));
    assert!(
        out.summary
            .ends_with("[Details page](https://cs.example/gates/a/b)\n")
    );
    let mut short = "ab".to_owned();
    truncate_to(&mut short, 10);
    assert_eq!(short, "ab");
}

#[test]
fn the_page_shows_what_the_summary_shows() {
    for phase in ["Pending", "Approved", "Rejected", "Held", "Expired"] {
        let g = with_phase(phase);
        let summary = check_output(&g, None).summary;
        let page = html_page(&g);
        let facts = Facts::of(&g);
        assert!(page.contains(&format!("<h1>Pull request #42: {phase}</h1>")));
        assert!(page.contains(&escape_html(&facts.explanation())));
        assert!(summary.contains(&escape_markdown(&facts.explanation())));
        for id in ["risk", "requirements", "approvals", "deadline"] {
            assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
        }
        for r in &facts.requirements {
            assert!(page.contains(&format!("data-role=\"{}\"", r.role)));
            let row = format!(" | {} | {} | ", r.needed, r.have);
            assert!(summary.contains(&format!("{}{row}", escape_markdown(&r.role))));
            assert!(page.contains(&format!("<td>{}</td><td>{}</td>", r.needed, r.have)));
        }
        assert_eq!(
            page.matches("data-user=").count(),
            facts.approvals.len(),
            "{phase}"
        );
        for a in &facts.approvals {
            assert!(page.contains(&format!(
                "data-user=\"{}\" data-valid=\"{}\"",
                a.login, a.valid
            )));
            assert!(summary.contains(&format!("\\@{} |", escape_markdown(&a.login))));
            if let (Some(word), Some(why)) = (a.invalid_word, a.invalid_why) {
                assert!(summary.contains(&format!("❌ {word}: {why}")));
                assert!(page.contains(&format!("data-reason=\"{word}\">{word}</span>: {why}")));
            }
        }
        for f in &facts.risk.as_ref().expect("risk").factors {
            assert!(summary.contains(&escape_markdown(&f.reason)));
            assert!(page.contains(&escape_html(&f.reason)));
        }
        let deadline = facts.deadline.as_deref().expect("deadline");
        assert!(summary.contains(deadline) && page.contains(deadline));
        for e in &facts.escalations {
            assert!(summary.contains(&escape_markdown(e)) && page.contains(&escape_html(e)));
        }
    }
}

#[test]
fn a_stand_in_escalation_says_who_stands_in_for_whom() {
    let mut pending = full_status("Pending");
    pending["requirements"] = json!([
        {"role": "tech_lead", "count": 1, "satisfied": 0, "standIn": "cto"},
        {"role": "manager", "count": 1, "satisfied": 1, "approvedBy": ["mgr"]}
    ]);
    pending["escalations"] = json!([{
        "time": "2026-12-04T14:00:00Z", "action": "escalate", "toRole": "cto",
        "mode": "standIn", "standsInFor": ["tech_lead"]
    }]);
    let out = check_output(&gate(Some(pending.clone())), None);
    assert!(
        out.title.starts_with("Waiting for tech_lead or cto"),
        "{}",
        out.title
    );
    assert!(
        out.summary
            .contains("2026-12-04 14:00 UTC: escalated to cto (stands in for tech\\_lead)"),
        "{}",
        out.summary
    );
    assert!(
        out.summary.contains("tech\\_lead (or cto standing in) |"),
        "{}",
        out.summary
    );
    let page = html_page(&gate(Some(pending.clone())));
    assert!(
        page.contains("escalated to cto (stands in for tech_lead)"),
        "{page}"
    );
    assert!(page.contains("1 more approval from tech_lead (or one from cto, standing in)"));

    let mut approved = pending;
    approved["phase"] = json!("Approved");
    approved["requirements"][0]["satisfied"] = json!(1);
    approved["requirements"][0]["stoodInBy"] = json!("cto");
    let out = check_output(&gate(Some(approved.clone())), None);
    assert!(
        out.summary.contains("\\@cto (standing in)"),
        "{}",
        out.summary
    );
    assert!(html_page(&gate(Some(approved))).contains("@cto (standing in)"));

    let mut additional = full_status("Pending");
    additional["escalations"] = json!([
        {"time": "2026-12-04T14:00:00Z", "action": "escalate", "toRole": "cto", "mode": "additional"},
        {"time": "2026-12-05T14:00:00Z", "action": "escalate", "toRole": "cfo"}
    ]);
    let page = html_page(&gate(Some(additional)));
    assert!(
        page.contains("escalated to cto (required in addition)"),
        "{page}"
    );
    assert!(
        page.contains("escalated to cfo (required in addition)"),
        "{page}"
    );
}

#[test]
fn page_urls_are_encoded() {
    assert_eq!(
        gate_page_url("https://x/", "team-a", "pr-1"),
        "https://x/gates/team-a/pr-1"
    );
    assert_eq!(
        gate_page_url("https://x", "a b", "c/d?e"),
        "https://x/gates/a%20b/c%2Fd%3Fe"
    );
}

#[test]
fn every_phase_renders_a_complete_document() {
    for phase in [
        GatePhase::Pending,
        GatePhase::Approved,
        GatePhase::Rejected,
        GatePhase::Held,
        GatePhase::Expired,
        GatePhase::Merged,
        GatePhase::Closed,
    ] {
        let page = html_page(&with_phase(&format!("{phase:?}")));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.trim_end().ends_with("</html>"));
        assert!(!page.contains("<script"));
    }
}
