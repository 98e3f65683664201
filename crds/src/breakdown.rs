//! A work breakdown: what an architect agent proposes instead of a change. Each sub-task
//! becomes a child AgentRun once a human approves the breakdown, started when the sub-tasks
//! it depends on have succeeded.
//!
//! The breakdown travels from the model through the agent pod's result (4 KiB in all) as
//! compact JSON in the report, so it is small by construction: at most [`MAX_SUBTASKS`]
//! sub-tasks, short texts, and [`MAX_BREAKDOWN_BYTES`] in all. Both the agent (to give the
//! model a clear error) and the controller (which trusts nothing from a pod) check it with
//! [`Breakdown::parse`].

use std::collections::BTreeSet;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most sub-tasks in one breakdown (child runs of one run).
pub const MAX_SUBTASKS: usize = 5;
/// Longest sub-task title, in characters.
pub const MAX_SUBTASK_TITLE_CHARS: usize = 80;
/// Longest sub-task instructions, in characters.
pub const MAX_SUBTASK_INSTRUCTIONS_CHARS: usize = 300;
/// Longest breakdown as compact JSON, in bytes (it must fit the pod's 4 KiB result).
pub const MAX_BREAKDOWN_BYTES: usize = 2400;

/// Sub-tasks an architect proposes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Breakdown {
    /// The sub-tasks, in the order they are shown. Each becomes one child run.
    #[schemars(length(min = 1, max = 5))]
    pub tasks: Vec<SubTask>,
}

/// One sub-task of a breakdown.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubTask {
    /// A short id, unique in the breakdown: lower-case letters, digits and dashes, e.g.
    /// `api`. The child run is named `<run>-<id>`.
    #[schemars(length(min = 1, max = 20), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub id: String,
    /// One line saying what to do.
    #[schemars(length(min = 1, max = 80))]
    pub title: String,
    /// What the child agent should do, for it to read.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 300))]
    pub instructions: String,
    /// The Agent (same namespace) that does it. Give either this or `capabilities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The capabilities it needs; the controller routes it like a capability trigger.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub capabilities: Vec<String>,
    /// Ids of sub-tasks that must succeed (their pull requests merged) before this starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub depends_on: Vec<String>,
}

impl Breakdown {
    /// Reads a breakdown written by a model (JSON, possibly inside a ```json fence) and
    /// checks every rule. The error says what is wrong, for the model and for people.
    pub fn parse(text: &str) -> Result<Self, String> {
        let json = text
            .trim()
            .trim_start_matches("```json")
            .trim_start_matches("```")
            .trim_end_matches("```")
            .trim();
        let breakdown: Breakdown = serde_json::from_str(json)
            .map_err(|e| format!("the breakdown is not valid JSON of the expected shape: {e}"))?;
        breakdown.check()?;
        Ok(breakdown)
    }

    /// Checks sizes, ids, who does each sub-task, and that dependencies name earlier
    /// sub-tasks of this breakdown (so there is no cycle).
    pub fn check(&self) -> Result<(), String> {
        if self.tasks.is_empty() || self.tasks.len() > MAX_SUBTASKS {
            return Err(format!(
                "a breakdown has 1 to {MAX_SUBTASKS} sub-tasks, not {}",
                self.tasks.len()
            ));
        }
        let mut seen = BTreeSet::new();
        for task in &self.tasks {
            let id = &task.id;
            let id_ok = !id.is_empty()
                && id.len() <= 20
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !id.starts_with('-')
                && !id.ends_with('-');
            if !id_ok {
                return Err(format!(
                    "sub-task id {id:?} must be 1 to 20 lower-case letters, digits and dashes"
                ));
            }
            if task.title.trim().is_empty()
                || task.title.chars().count() > MAX_SUBTASK_TITLE_CHARS
                || task.title.contains('\n')
            {
                return Err(format!(
                    "sub-task {id}: the title must be one line of 1 to {MAX_SUBTASK_TITLE_CHARS} characters"
                ));
            }
            if task.instructions.chars().count() > MAX_SUBTASK_INSTRUCTIONS_CHARS {
                return Err(format!(
                    "sub-task {id}: instructions are limited to {MAX_SUBTASK_INSTRUCTIONS_CHARS} characters"
                ));
            }
            match (&task.agent, task.capabilities.is_empty()) {
                (Some(agent), true) if valid_name(agent) => {}
                (None, false)
                    if task.capabilities.len() <= 8
                        && task.capabilities.iter().all(|c| valid_capability(c)) => {}
                _ => {
                    return Err(format!(
                        "sub-task {id}: name either one `agent` or a few `capabilities` \
                         (lower-case names), not both"
                    ));
                }
            }
            if task.depends_on.len() > 4 {
                return Err(format!("sub-task {id}: at most 4 dependencies"));
            }
            for dep in &task.depends_on {
                if !seen.contains(dep.as_str()) {
                    return Err(format!(
                        "sub-task {id} depends on {dep:?}, which is not a sub-task listed before it"
                    ));
                }
            }
            if !seen.insert(id.as_str()) {
                return Err(format!("sub-task id {id:?} is used twice"));
            }
        }
        let size = serde_json::to_string(self).map_or(usize::MAX, |s| s.len());
        if size > MAX_BREAKDOWN_BYTES {
            return Err(format!(
                "the breakdown is {size} bytes as JSON, over {MAX_BREAKDOWN_BYTES}: \
                 shorten the instructions or merge sub-tasks"
            ));
        }
        Ok(())
    }

    /// The breakdown as compact JSON (what travels in the pod's result).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a breakdown always serialises")
    }

    /// The breakdown in Markdown, as posted on the issue for approval: exactly what the
    /// child runs will be given.
    pub fn to_markdown(&self) -> String {
        let mut text = String::from(
            "**Proposed breakdown** (each sub-task becomes its own run and pull request):\n",
        );
        for (n, task) in self.tasks.iter().enumerate() {
            let who = match &task.agent {
                Some(agent) => format!("Agent `{agent}`"),
                None => format!("any Agent with `{}`", task.capabilities.join("`, `")),
            };
            text.push_str(&format!(
                "\n{}. **{}** (`{}`), {who}",
                n + 1,
                one_line(&task.title),
                task.id
            ));
            if !task.depends_on.is_empty() {
                text.push_str(&format!(", after `{}`", task.depends_on.join("`, `")));
            }
            if !task.instructions.trim().is_empty() {
                text.push_str(&format!("\n   {}", one_line(&task.instructions)));
            }
        }
        text
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn valid_capability(capability: &str) -> bool {
    !capability.is_empty() && capability.len() <= 32 && valid_name(capability)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"tasks": [
        {"id": "api", "title": "Add the endpoint", "instructions": "GET /invoices/{id}", "agent": "backend"},
        {"id": "ui", "title": "Show invoices", "capabilities": ["react"], "dependsOn": ["api"]}
    ]}"#;

    #[test]
    fn a_good_breakdown_parses_from_a_fence_and_renders() {
        let b = Breakdown::parse(&format!("```json\n{GOOD}\n```")).expect("valid");
        assert_eq!(b.tasks.len(), 2);
        assert_eq!(Breakdown::parse(&b.to_json()).expect("round trip"), b);
        let md = b.to_markdown();
        assert!(
            md.contains("1. **Add the endpoint** (`api`), Agent `backend`\n   GET /invoices/{id}"),
            "{md}"
        );
        assert!(
            md.contains("2. **Show invoices** (`ui`), any Agent with `react`, after `api`"),
            "{md}"
        );
    }

    #[test]
    fn bad_breakdowns_say_what_is_wrong() {
        let cases = [
            (r#"{"tasks": []}"#, "1 to 5 sub-tasks"),
            (
                r#"{"tasks": [{"id": "A", "title": "t", "agent": "x"}]}"#,
                "lower-case letters",
            ),
            (
                r#"{"tasks": [{"id": "a", "title": "t"}]}"#,
                "either one `agent`",
            ),
            (
                r#"{"tasks": [{"id": "a", "title": "t", "agent": "x", "capabilities": ["y"]}]}"#,
                "not both",
            ),
            (
                r#"{"tasks": [{"id": "a", "title": "t", "agent": "x", "dependsOn": ["a"]}]}"#,
                "not a sub-task listed before it",
            ),
            (
                r#"{"tasks": [{"id": "a", "title": "t", "agent": "x", "dependsOn": ["b"]}, {"id": "b", "title": "t", "agent": "x"}]}"#,
                "listed before it",
            ),
            (
                r#"{"tasks": [{"id": "a", "title": "t", "agent": "x"}, {"id": "a", "title": "t", "agent": "x"}]}"#,
                "used twice",
            ),
            (
                r#"{"tasks": [{"id": "a", "title": "two\nlines", "agent": "x"}]}"#,
                "one line",
            ),
            (
                r#"{"tasks": [{"id": "a", "title": "t", "agent": "x", "shell": "rm -rf /"}]}"#,
                "unknown field",
            ),
            ("not json", "not valid JSON"),
        ];
        for (text, words) in cases {
            let err = Breakdown::parse(text).expect_err(text);
            assert!(err.contains(words), "{text}: {err}");
        }
        let six: Vec<String> = (0..6)
            .map(|n| format!(r#"{{"id": "t{n}", "title": "t", "agent": "x"}}"#))
            .collect();
        let err =
            Breakdown::parse(&format!(r#"{{"tasks": [{}]}}"#, six.join(","))).expect_err("six");
        assert!(err.contains("not 6"), "{err}");
        let long = "x".repeat(300);
        let caps: Vec<String> = (0..8)
            .map(|n| format!("\"{n}{}\"", "c".repeat(30)))
            .collect();
        let five: Vec<String> = (0..5)
            .map(|n| {
                format!(
                    r#"{{"id": "t{n}", "title": "{}", "instructions": "{long}", "capabilities": [{}]}}"#,
                    "y".repeat(80),
                    caps.join(",")
                )
            })
            .collect();
        let err = Breakdown::parse(&format!(r#"{{"tasks": [{}]}}"#, five.join(",")))
            .expect_err("too big");
        assert!(err.contains("over 2400"), "{err}");
    }
}
