//! Guidance mode: an agent may stop at a decision point and ask the people steering the run
//! a question with a few options and a default. The run waits for `/countersign answer …`
//! until a deadline, then goes on with the answer (or the default) in the next attempt's
//! prompt. Like a breakdown, the question travels in the pod's result as compact JSON, and
//! both the agent and the controller check it with [`Question::parse`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Most questions one run may ask.
pub const MAX_QUESTIONS: usize = 3;
/// Longest question, in characters.
pub const MAX_QUESTION_CHARS: usize = 500;
/// Longest option (and answer), in characters.
pub const MAX_OPTION_CHARS: usize = 100;
/// How long a question waits for an answer when the Agent does not say
/// (`limits.answerTimeout`).
pub const DEFAULT_ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60 * 60);

/// A decision point an agent raises.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Question {
    /// The question, for people.
    #[schemars(length(min = 1, max = 500))]
    pub question: String,
    /// The answers the agent can work with (2 to 5).
    #[schemars(length(min = 2, max = 5))]
    pub options: Vec<String>,
    /// The option taken when nobody answers in time.
    #[schemars(length(min = 1, max = 100))]
    pub default: String,
}

impl Question {
    /// Reads a question written by a model and checks it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let question: Question = serde_json::from_str(text.trim())
            .map_err(|e| format!("the question is not valid JSON of the expected shape: {e}"))?;
        question.check()?;
        Ok(question)
    }

    /// Checks sizes and that the default is one of the options.
    pub fn check(&self) -> Result<(), String> {
        if self.question.trim().is_empty() || self.question.chars().count() > MAX_QUESTION_CHARS {
            return Err(format!(
                "a question has 1 to {MAX_QUESTION_CHARS} characters"
            ));
        }
        if !(2..=5).contains(&self.options.len()) {
            return Err("a question offers 2 to 5 options".into());
        }
        if self.options.iter().any(|o| {
            o.trim().is_empty() || o.chars().count() > MAX_OPTION_CHARS || o.contains('\n')
        }) {
            return Err(format!(
                "each option is one line of 1 to {MAX_OPTION_CHARS} characters"
            ));
        }
        if !self.options.contains(&self.default) {
            return Err("the default must be one of the options".into());
        }
        Ok(())
    }

    /// The question as compact JSON (what travels in the pod's result).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a question always serialises")
    }
}

/// A question and the answer the run went on with, as the next attempt is told.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AnsweredQuestion {
    /// The question.
    pub question: String,
    /// The answer: a person's, or the default when nobody answered in time.
    pub answer: String,
    /// Whether the default was taken because nobody answered in time.
    #[serde(default)]
    pub defaulted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_checked() {
        let good = r#"{"question": "Which store?", "options": ["postgres", "redis"], "default": "postgres"}"#;
        let q = Question::parse(good).expect("valid");
        assert_eq!(Question::parse(&q.to_json()).expect("round trip"), q);
        for (text, words) in [
            (
                r#"{"question": "Q", "options": ["a"], "default": "a"}"#,
                "2 to 5 options",
            ),
            (
                r#"{"question": "Q", "options": ["a", "b"], "default": "c"}"#,
                "one of the options",
            ),
            (
                r#"{"question": "", "options": ["a", "b"], "default": "a"}"#,
                "1 to 500",
            ),
            (
                r#"{"question": "Q", "options": ["a\nb", "b"], "default": "b"}"#,
                "one line",
            ),
            (
                r#"{"question": "Q", "options": ["a", "b"], "default": "a", "run": "x"}"#,
                "unknown field",
            ),
        ] {
            let err = Question::parse(text).expect_err(text);
            assert!(err.contains(words), "{text}: {err}");
        }
    }
}
