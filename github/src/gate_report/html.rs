//! The gate's details page: a complete HTML5 document, no JavaScript, inline CSS, every
//! dynamic string escaped. The `id`s and `data-*` attributes are stable hooks for tests and
//! scripts: `#risk`, `#requirements`, `#approvals`, `#deadline`, rows with `data-role`,
//! `data-user` and `data-valid`.

use std::fmt::Write as _;

use countersign_crds::ApprovalGate;
use countersign_crds::approval_gate::GatePhase;

use super::Facts;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;\
max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1f2328;line-height:1.5}\
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}\
table{border-collapse:collapse;width:100%}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;\
text-align:left;vertical-align:top}th{background:#f6f8fa}\
.verdict{padding:.8rem 1rem;border-radius:6px;border:1px solid #d0d7de}\
.ok{background:#dafbe1}.wait{background:#fff8c5}.no{background:#ffebe9}\
tr[data-valid=false] td{color:#6e7781}code{font-size:.9em}";

/// The details page of `gate`.
pub fn html_page(gate: &ApprovalGate) -> String {
    let facts = Facts::of(gate);
    let phase = facts
        .phase
        .map_or_else(|| "Evaluating".to_owned(), |p| format!("{p:?}"));
    let class = match facts.phase {
        Some(GatePhase::Approved | GatePhase::Merged) => "ok",
        Some(GatePhase::Rejected | GatePhase::Expired) => "no",
        _ => "wait",
    };
    let namespace = gate.metadata.namespace.as_deref().unwrap_or_default();
    let name = gate.metadata.name.as_deref().unwrap_or_default();
    let mut out = String::with_capacity(8 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>PR #{pr} {phase} — Countersign</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Pull request #{pr}: {phase}</h1>\n\
         <p class=\"verdict {class}\" id=\"verdict\">{explanation}</p>\n\
         <p id=\"title\">{title}</p>\n\
         <p>Gate <code>{ns}/{name}</code>, project <code>{project}</code>, base branch \
         <code>{base}</code>, author <code>@{author}</code>{ai}{head}.</p>\n",
        pr = facts.pull_request,
        phase = esc(&phase),
        explanation = esc(&facts.explanation()),
        title = esc(&facts.title()),
        ns = esc(namespace),
        name = esc(name),
        project = esc(&gate.spec.project_ref.name),
        base = esc(&gate.spec.base_branch),
        author = esc(&gate.spec.author.login),
        ai = if gate.spec.ai_generated {
            ", written by an agent"
        } else {
            ""
        },
        head = facts
            .head_sha
            .as_deref()
            .map(|s| format!(", evaluated on <code>{}</code>", esc(s)))
            .unwrap_or_default(),
    );

    if let Some(error) = &facts.last_error {
        let _ = writeln!(
            out,
            "<p class=\"verdict no\" id=\"last-error\">The last evaluation failed: {}</p>",
            esc(error)
        );
    }
    out.push_str("<section id=\"risk\">\n<h2>Risk</h2>\n");
    match &facts.risk {
        None => out.push_str("<p>Not scored yet.</p>\n"),
        Some(risk) => {
            let _ = writeln!(
                out,
                "<p>Level <strong data-level=\"{level}\">{level}</strong>, score \
                 <strong data-score=\"{score}\">{score}</strong>/10, workflow \
                 <strong>{workflow}</strong>.</p>",
                level = risk.level,
                score = risk.score,
                workflow = esc(&risk.workflow)
            );
            if !risk.factors.is_empty() {
                out.push_str(
                    "<table>\n<thead><tr><th>Factor</th><th>Score</th><th>Rule</th>\
                     <th>Reason</th></tr></thead>\n<tbody>\n",
                );
                for f in &risk.factors {
                    let _ = writeln!(
                        out,
                        "<tr data-factor=\"{factor}\"><td>{factor}</td><td>{score}</td>\
                         <td>{rule}</td><td>{reason}</td></tr>",
                        factor = f.factor,
                        score = f.score,
                        rule = esc(&f.rule),
                        reason = esc(&f.reason)
                    );
                }
                out.push_str("</tbody>\n</table>\n");
            }
        }
    }
    out.push_str("</section>\n");

    out.push_str("<section id=\"requirements\">\n<h2>Requirements</h2>\n");
    if facts.requirements.is_empty() {
        out.push_str("<p>No human approval required.</p>\n");
    } else {
        out.push_str(
            "<table>\n<thead><tr><th>Role</th><th>Needed</th><th>Have</th><th>Approved by</th>\
             </tr></thead>\n<tbody>\n",
        );
        for r in &facts.requirements {
            let mut by: Vec<String> = r
                .approved_by
                .iter()
                .map(|l| format!("@{}", esc(l)))
                .collect();
            if let Some(login) = &r.stood_in_by {
                by.push(format!("@{} (standing in)", esc(login)));
            }
            let or = r
                .stand_in
                .as_ref()
                .map(|s| format!(" (or {} standing in)", esc(s)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr data-role=\"{role}\" data-met=\"{met}\"><td>{mark} {role}{or}</td>\
                 <td>{needed}</td><td>{have}</td><td>{by}</td></tr>",
                role = esc(&r.role),
                met = r.met(),
                mark = if r.met() { "✅" } else { "⏳" },
                needed = r.needed,
                have = r.have,
                by = if by.is_empty() {
                    "—".to_owned()
                } else {
                    by.join(", ")
                }
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n");

    out.push_str("<section id=\"approvals\">\n<h2>Approvals</h2>\n");
    if facts.approvals.is_empty() {
        out.push_str("<p>No approvals or rejections yet.</p>\n");
    } else {
        out.push_str(
            "<table>\n<thead><tr><th>User</th><th>Roles</th><th>Decision</th><th>Via</th>\
             <th>Commit</th><th>Time</th><th>Counts</th></tr></thead>\n<tbody>\n",
        );
        for a in &facts.approvals {
            let counts = match (a.invalid_word, a.invalid_why) {
                (Some(word), Some(why)) if !a.valid => format!(
                    "❌ <span class=\"reason\" data-reason=\"{word}\">{word}</span>: {}",
                    esc(why)
                ),
                _ => "✅ counted".to_owned(),
            };
            let roles: Vec<String> = a.roles.iter().map(|r| esc(r)).collect();
            let _ = writeln!(
                out,
                "<tr data-user=\"{user}\" data-valid=\"{valid}\"><td>@{user}</td><td>{roles}</td>\
                 <td>{decision}</td><td>{via}</td><td><code>{sha}</code></td><td>{time}</td>\
                 <td>{counts}</td></tr>",
                user = esc(&a.login),
                valid = a.valid,
                roles = if roles.is_empty() {
                    "—".to_owned()
                } else {
                    roles.join(", ")
                },
                decision = a.decision,
                via = a.via,
                sha = esc(&a.short_sha),
                time = esc(&a.time),
            );
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n");

    out.push_str("<section id=\"deadline\">\n<h2>Deadline</h2>\n");
    match &facts.deadline {
        Some(deadline) => {
            let _ = writeln!(out, "<p><time>{}</time></p>", esc(deadline));
        }
        None => out.push_str("<p>No deadline.</p>\n"),
    }
    if !facts.escalations.is_empty() {
        out.push_str("<ul id=\"escalations\">\n");
        for e in &facts.escalations {
            let _ = writeln!(out, "<li>{}</li>", esc(e));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n</body>\n</html>\n");
    out
}

/// Escapes text for HTML element content and double- or single-quoted attributes.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
