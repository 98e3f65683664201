//! What an agent run says on GitHub, as pure functions: the pull request's title, body and
//! labels, and the one progress comment on the issue that follows the run through its phases.
//!
//! Text written by the model (summaries, plans, analyses) and the issue title are untrusted:
//! mentions and issue references in them are neutralised, so a summary can neither ping
//! people nor close unrelated issues (`Fixes #5`). Only the `Closes #n` line we write
//! ourselves links the task's issue.

use countersign_crds::agent_run::Usage;
use countersign_crds::progress::Milestone;
use countersign_crds::result::AgentResult;
use countersign_crds::{AgentRun, AgentRunStatus, RunMode, RunPhase};
use kube::ResourceExt;

/// Label every agent pull request carries.
pub const AI_LABEL: &str = "countersign/ai-generated";
/// GitHub refuses longer label names.
const MAX_LABEL_CHARS: usize = 50;
/// Longest pull request title GitHub keeps comfortably (it allows 256).
const MAX_TITLE_CHARS: usize = 200;

/// Facts about the run the rendered texts are built from.
pub struct RunFacts<'a> {
    /// The run.
    pub run: &'a AgentRun,
    /// Its status as it is about to be written.
    pub status: &'a AgentRunStatus,
    /// The Agent's name.
    pub agent: &'a str,
    /// How the run is steered.
    pub mode: RunMode,
    /// The model of the provider that did the work, when known.
    pub model: Option<&'a str>,
    /// The result of the attempt that did the work, when its pod still holds it.
    pub result: Option<&'a AgentResult>,
    /// The progress notes of the latest attempt (observation mode), oldest first.
    pub milestones: &'a [Milestone],
}

/// The pull request's title: the task's title (neutralised, one line, capped).
pub fn pull_request_title(run: &AgentRun) -> String {
    let title = neutralise(
        run.spec
            .task
            .title
            .lines()
            .next()
            .unwrap_or_default()
            .trim(),
    );
    let title = if title.is_empty() {
        format!("Changes by agent run {}", run.name_any())
    } else {
        title
    };
    super::decide::truncate(&title, MAX_TITLE_CHARS)
}

/// The labels of an agent pull request: [`AI_LABEL`], `countersign/agent:<agent>` when it
/// fits, and the Project's extra labels.
pub fn pull_request_labels(agent: &str, extra: &[String]) -> Vec<String> {
    let mut labels = vec![AI_LABEL.to_owned()];
    let agent_label = format!("countersign/agent:{agent}");
    if agent_label.chars().count() <= MAX_LABEL_CHARS {
        labels.push(agent_label);
    }
    for label in extra {
        if !label.is_empty() && !labels.contains(label) {
            labels.push(label.clone());
        }
    }
    labels
}

/// The pull request's body: the task, who asked, the agent, provider and model, usage,
/// verification, the agent's summary, and `Closes #n`.
pub fn pull_request_body(f: &RunFacts<'_>) -> String {
    let run = f.run;
    let task = &run.spec.task;
    let mut body = String::new();
    body.push_str(&format!(
        "This change was written by the Countersign agent **{}** for run `{}`. A human must approve it before it merges: see the `countersign/approval` check.\n\n",
        neutralise(f.agent),
        run.name_any()
    ));
    body.push_str(&format!("### Task\n\n**{}**\n", neutralise(&task.title)));
    if let Some(instructions) = task
        .instructions
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        body.push_str(&format!("\nInstructions:\n\n{}\n", quote(instructions)));
    }
    if let Some(user) = &task.requested_by {
        body.push_str(&format!(
            "\nRequested by @{} (who therefore cannot approve this pull request).\n",
            user.login
        ));
    }
    if let Some(summary) = f
        .result
        .and_then(|r| r.summary.as_deref())
        .filter(|s| !s.trim().is_empty())
    {
        body.push_str(&format!("\n### What the agent did\n\n{}\n", quote(summary)));
    }
    body.push_str("\n### Details\n\n| | |\n|---|---|\n");
    let attempt = f.status.attempts.last();
    if let Some(a) = attempt {
        body.push_str(&format!("| Provider | `{}` |\n", a.provider));
    }
    if let Some(model) = f.model {
        body.push_str(&format!("| Model | `{}` |\n", neutralise(model)));
    }
    body.push_str(&format!(
        "| Attempts | {} |\n| Usage | {} |\n",
        f.status.attempts.len(),
        usage_line(&f.status.usage)
    ));
    if let Some(result) = f.result {
        body.push_str(&format!(
            "| Change | {} file{}, +{} −{} |\n",
            result.files_changed,
            if result.files_changed == 1 { "" } else { "s" },
            result.lines_added,
            result.lines_removed
        ));
        if let Some(verification) = result.verification.as_deref() {
            body.push_str(&format!(
                "| Verification | {} |\n",
                table_cell(verification)
            ));
        }
    }
    if let (Some(branch), Some(commit)) = (&f.status.branch, &f.status.commit) {
        body.push_str(&format!("| Branch | `{branch}` at {commit} |\n"));
    }
    if let Some(issue) = task.issue_number {
        // A sub-task's pull request is one part of the issue: merging it does not close it.
        if f.run.spec.parent_ref.is_some() {
            body.push_str(&format!("\nPart of #{issue}\n"));
        } else {
            body.push_str(&format!("\nCloses #{issue}\n"));
        }
    }
    body
}

/// The marker that identifies a run's progress comment, so it is found again when the
/// status lost its id.
pub fn progress_marker(run: &AgentRun) -> String {
    format!(
        "<!-- countersign:run {}/{} -->",
        run.namespace().unwrap_or_default(),
        run.name_any()
    )
}

/// The first line of the review holding a follow-up attempt's findings.
pub fn findings_marker(run: &AgentRun, attempt: u32) -> String {
    format!(
        "<!-- countersign:findings {}/{} attempt {attempt} -->",
        run.namespace().unwrap_or_default(),
        run.name_any()
    )
}

/// The review holding a follow-up's findings: the marker, who found them, and the findings
/// (model-written, so neutralised: no mentions, no issue links).
pub fn findings_review(
    run: &AgentRun,
    agent: Option<&str>,
    attempt: u32,
    findings: &str,
) -> String {
    let by = agent.map(|a| format!(" (Agent `{a}`)")).unwrap_or_default();
    format!(
        "{}\n**Findings of follow-up run `{}`**{by}, attempt {attempt}. It added nothing to this \
         pull request; this review approves nothing.\n\n{}\n",
        findings_marker(run, attempt),
        run.name_any(),
        neutralise(findings.trim())
    )
}

/// The progress comment for the run's current state.
pub fn progress_comment(f: &RunFacts<'_>) -> String {
    let status = f.status;
    let phase = status.phase;
    let mut body = format!("{}\n", progress_marker(f.run));
    body.push_str(&format!(
        "**Countersign agent `{}`** — {} **{}**\n\n",
        neutralise(f.agent),
        icon(phase),
        phase_words(phase)
    ));
    if let Some(message) = status.message.as_deref().filter(|m| !m.is_empty()) {
        body.push_str(&format!("{}\n\n", quote(message)));
    }
    if let Some(pr) = &status.pull_request {
        body.push_str(&format!(
            "Pull request: #{}. It merges only after the approvals its risk requires (the `countersign/approval` check).\n\n",
            pr.number
        ));
    }
    if let Some(plan) = &status.plan {
        // The plan's bytes as recorded: already reduced to what a reader sees and
        // neutralised when recorded (neutralising again changes nothing), so the approved
        // text, the shown text and the text the coding attempt gets are the same.
        body.push_str("<details open><summary>Plan</summary>\n\n");
        body.push_str(&neutralise(&plan.text));
        body.push_str("\n\n</details>\n\n");
        match &plan.decision {
            None if phase == RunPhase::AwaitingPlanApproval => body.push_str(
                "An approver answers **`/approve`** to let the agent implement this plan, or **`/reject`** to stop.\n\n",
            ),
            Some(d) => body.push_str(&format!(
                "Plan {}{}.\n\n",
                if d.approved { "approved" } else { "rejected" },
                d.by.as_deref().map_or_else(String::new, |l| format!(" by @{l}"))
            )),
            None => {}
        }
    }
    for question in &status.questions {
        body.push_str(&format!(
            "**The agent asks:** {}\n\n",
            neutralise(&question.question)
        ));
        for option in &question.options {
            let default = if *option == question.default {
                " (default)"
            } else {
                ""
            };
            body.push_str(&format!(
                "- `{}`{default}\n",
                neutralise(option).replace('`', "'")
            ));
        }
        match (&question.answer, &question.answered_by) {
            (Some(answer), Some(by)) => body.push_str(&format!(
                "\nAnswered by @{by}: `{}`.\n\n",
                neutralise(answer).replace('`', "'")
            )),
            (Some(answer), None) => body.push_str(&format!(
                "\nNobody answered in time: going on with the default, `{}`.\n\n",
                neutralise(answer).replace('`', "'")
            )),
            (None, _) => body.push_str(&format!(
                "\nSomeone allowed to steer this run answers **`/countersign answer <option>`** \
                 before {}; after that the run goes on with the default.\n\n",
                question.deadline.0
            )),
        }
    }
    if !status.children.is_empty() {
        body.push_str("### Sub-tasks\n\n");
        for child in &status.children {
            let done = child.phase == Some(RunPhase::Succeeded);
            let state = match (child.phase, &child.pull_request) {
                (Some(phase), Some(pr)) => {
                    format!("{}, pull request #{}", phase_words(phase), pr.number)
                }
                (Some(phase), None) => phase_words(phase).to_owned(),
                (None, _) => child
                    .message
                    .as_deref()
                    .map_or_else(|| "not started".to_owned(), neutralise),
            };
            body.push_str(&format!(
                "- [{}] `{}`: {} (run `{}`)\n",
                if done { "x" } else { " " },
                child.task,
                state,
                child.name
            ));
        }
        body.push('\n');
    }
    if !f.milestones.is_empty() {
        body.push_str("### Progress\n\n");
        for milestone in f.milestones {
            // `2026-12-06T23:01:02Z` → `23:01:02`; the notes are one line already.
            let time = milestone
                .time
                .split_once('T')
                .map_or(milestone.time.as_str(), |(_, t)| t.trim_end_matches('Z'));
            body.push_str(&format!(
                "- `{}` {}\n",
                time.replace('`', ""),
                neutralise(&milestone.text.lines().collect::<Vec<_>>().join(" "))
            ));
        }
        body.push('\n');
    }
    if f.mode == RunMode::Observation
        && phase == RunPhase::Succeeded
        && let Some(report) = f.result.and_then(|r| r.report.as_deref())
    {
        body.push_str("### Analysis\n\n");
        body.push_str(&neutralise(report));
        body.push_str("\n\n");
    }
    let attempts = status.attempts.len();
    if attempts > 0 {
        body.push_str(&format!(
            "<sub>Run `{}` · {} attempt{} · {}</sub>\n",
            f.run.name_any(),
            attempts,
            if attempts == 1 { "" } else { "s" },
            usage_line(&status.usage)
        ));
    } else {
        body.push_str(&format!("<sub>Run `{}`</sub>\n", f.run.name_any()));
    }
    body
}

/// A short fingerprint of a rendered comment (FNV-1a, hex): equal texts, equal digests.
pub fn digest(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

fn usage_line(usage: &Usage) -> String {
    format!(
        "{} tokens in, {} out, ${}",
        usage.input_tokens, usage.output_tokens, usage.cost
    )
}

fn icon(phase: RunPhase) -> &'static str {
    match phase {
        RunPhase::Pending | RunPhase::Queued => "⏳",
        RunPhase::Planning | RunPhase::Running => "⚙️",
        RunPhase::AwaitingPlanApproval | RunPhase::AwaitingAnswer => "✋",
        RunPhase::PullRequestOpen => "👀",
        RunPhase::Coordinating => "🧩",
        RunPhase::Succeeded => "✅",
        RunPhase::Failed | RunPhase::TimedOut => "❌",
        RunPhase::Cancelled => "⏹️",
    }
}

fn phase_words(phase: RunPhase) -> &'static str {
    match phase {
        RunPhase::Pending => "pending",
        RunPhase::Queued => "queued",
        RunPhase::Planning => "planning",
        RunPhase::AwaitingPlanApproval => "plan awaiting approval",
        RunPhase::AwaitingAnswer => "waiting for an answer",
        RunPhase::Running => "running",
        RunPhase::PullRequestOpen => "pull request opened",
        RunPhase::Coordinating => "sub-tasks in progress",
        RunPhase::Succeeded => "succeeded",
        RunPhase::Failed => "failed",
        RunPhase::Cancelled => "cancelled",
        RunPhase::TimedOut => "timed out",
    }
}

/// Breaks mentions (`@user`, `@org/team`) and issue references (`#12`, `GH-12`) in untrusted
/// text with a zero-width space, so GitHub neither notifies nor links (and never closes).
pub fn neutralise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut previous: Option<char> = None;
    while let Some(c) = chars.next() {
        out.push(c);
        let next = chars.peek().copied();
        let boundary = previous.is_none_or(|p| !p.is_alphanumeric());
        let breaks = match (c, next) {
            ('@', Some(n)) => boundary && (n.is_alphanumeric() || n == '-'),
            ('#', Some(n)) => n.is_ascii_digit(),
            _ => false,
        };
        if breaks {
            out.push('\u{200B}');
        }
        previous = Some(c);
    }
    out
}

/// Untrusted text as a Markdown block quote, neutralised.
fn quote(text: &str) -> String {
    neutralise(text.trim())
        .lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn table_cell(text: &str) -> String {
    neutralise(text).replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests;
