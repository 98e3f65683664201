//! The check run summary: the gate's facts as GitHub Markdown, every user-controlled string
//! escaped, cut to GitHub's size limit with the details link kept.

use std::fmt::Write as _;

use super::{Facts, MAX_SUMMARY_BYTES, TRUNCATION_MARKER};

/// Escapes a user-controlled string for Markdown text and table cells: no markup, no HTML,
/// no line breaks, no `|` that would split a cell.
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '|' | '~' | '@' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn markdown_summary(facts: &Facts) -> String {
    let md = escape_markdown;
    let mut out = format!("**{}**\n", md(&facts.explanation()));
    if let Some(error) = &facts.last_error {
        let _ = writeln!(out, "\n⚠️ The last evaluation failed: {}", md(error));
    }
    if let Some(sha) = &facts.head_sha {
        let short: String = sha.chars().take(7).collect();
        let _ = writeln!(out, "\nEvaluated on commit {}.", md(&short));
    }

    out.push_str("\n### Risk\n\n");
    match &facts.risk {
        None => out.push_str("Not scored yet.\n"),
        Some(risk) => {
            let _ = writeln!(
                out,
                "Level **{}**, score **{}**/10, workflow **{}**.\n",
                risk.level,
                risk.score,
                md(&risk.workflow)
            );
            if !risk.factors.is_empty() {
                out.push_str("| Factor | Score | Rule | Reason |\n| --- | --- | --- | --- |\n");
                for f in &risk.factors {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} |",
                        f.factor,
                        f.score,
                        md(&f.rule),
                        md(&f.reason)
                    );
                }
            }
        }
    }

    out.push_str("\n### Requirements\n\n");
    if facts.requirements.is_empty() {
        out.push_str("No human approval required.\n");
    } else {
        out.push_str("| Role | Needed | Have | Approved by |\n| --- | --- | --- | --- |\n");
        for r in &facts.requirements {
            let mut by: Vec<String> = r
                .approved_by
                .iter()
                .map(|l| format!("\\@{}", md(l)))
                .collect();
            if let Some(login) = &r.stood_in_by {
                by.push(format!("\\@{} (standing in)", md(login)));
            }
            let or = r
                .stand_in
                .as_ref()
                .map(|s| format!(" (or {} standing in)", md(s)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} {}{or} | {} | {} | {} |",
                if r.met() { "✅" } else { "⏳" },
                md(&r.role),
                r.needed,
                r.have,
                if by.is_empty() {
                    "—".to_owned()
                } else {
                    by.join(", ")
                }
            );
        }
    }

    out.push_str("\n### Approvals\n\n");
    if facts.approvals.is_empty() {
        out.push_str("No approvals or rejections yet.\n");
    } else {
        out.push_str(
            "| User | Roles | Decision | Via | Commit | Time | Counts |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        for a in &facts.approvals {
            let counts = match (a.invalid_word, a.invalid_why) {
                (Some(word), Some(why)) if !a.valid => format!("❌ {word}: {why}"),
                _ => "✅ counted".to_owned(),
            };
            let roles: Vec<String> = a.roles.iter().map(|r| md(r)).collect();
            let _ = writeln!(
                out,
                "| \\@{} | {} | {} | {} | {} | {} | {} |",
                md(&a.login),
                if roles.is_empty() {
                    "—".to_owned()
                } else {
                    roles.join(", ")
                },
                a.decision,
                a.via,
                md(&a.short_sha),
                a.time,
                counts
            );
        }
    }

    out.push_str("\n### Deadline\n\n");
    match &facts.deadline {
        Some(deadline) => {
            let _ = writeln!(out, "{deadline}");
        }
        None => out.push_str("No deadline.\n"),
    }
    for e in &facts.escalations {
        let _ = writeln!(out, "- {}", md(e));
    }

    out
}

/// The summary: the facts cut to fit [`MAX_SUMMARY_BYTES`], then the details link (kept even
/// when the facts are cut).
pub(super) fn summary(facts: &Facts, details_url: Option<&str>) -> String {
    let footer = details_url
        .map(|url| format!("\n[Details page]({})\n", url.replace([' ', ')', '\n'], "")))
        .unwrap_or_default();
    let mut body = markdown_summary(facts);
    truncate_to(&mut body, MAX_SUMMARY_BYTES.saturating_sub(footer.len()));
    body.push_str(&footer);
    body
}

/// Cuts `text` to at most `max` bytes on a char boundary, ending with [`TRUNCATION_MARKER`].
pub(crate) fn truncate_to(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub(TRUNCATION_MARKER.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(TRUNCATION_MARKER);
}
