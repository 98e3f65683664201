//! Milestones: short progress notes an observation-mode agent posts while it works, shown in
//! the run's one progress comment as the run goes (the pod itself can report only when it
//! ends, through its termination message).
//!
//! The model calls its `report_progress` tool; the agent's `work` step posts the note to the
//! provider gateway with the attempt's gateway token (the only credential the step holds).
//! The gateway checks the token is a live attempt of an observation-mode run, bounds the
//! note, and appends it to a ConfigMap `countersign-progress-<run>` owned by the AgentRun
//! (so it goes with it), labelled [`PROGRESS_LABEL`]. The controller watches those
//! ConfigMaps, and each change re-renders the run's progress comment. Notes are model
//! text: the controller neutralises mentions and references before posting them, like every
//! other model-written text.

use serde::{Deserialize, Serialize};

/// Label on progress ConfigMaps (value `true`); the controller watches these.
pub const PROGRESS_LABEL: &str = "countersign.dev/progress";
/// Key of the milestones document in the ConfigMap.
pub const PROGRESS_KEY: &str = "milestones.json";
/// Most milestones one attempt may post; the gateway refuses more (429).
pub const MAX_MILESTONES_PER_ATTEMPT: usize = 10;
/// Most milestones kept in the ConfigMap (the oldest go first).
pub const MAX_KEPT: usize = 20;
/// Longest milestone, in characters (after whitespace is collapsed).
pub const MAX_MILESTONE_CHARS: usize = 280;

/// The name of a run's progress ConfigMap.
pub fn progress_name(run: &str) -> String {
    crate::names::with_suffix(&format!("countersign-progress-{run}"), "")
}

/// One progress note.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Milestone {
    /// The attempt that posted it.
    pub attempt: u32,
    /// When the gateway received it (RFC 3339, UTC).
    pub time: String,
    /// The note, one line.
    pub text: String,
}

/// A run's milestones, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MilestoneLog {
    /// The milestones.
    pub milestones: Vec<Milestone>,
}

impl MilestoneLog {
    /// Reads a stored log.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("the milestones do not parse: {e}"))
    }

    /// The stored form.
    pub fn render(&self) -> String {
        serde_json::to_string(self).expect("milestones always serialise")
    }

    /// How many milestones `attempt` posted (of those kept).
    pub fn count(&self, attempt: u32) -> usize {
        self.milestones
            .iter()
            .filter(|m| m.attempt == attempt)
            .count()
    }

    /// Appends `milestone`, dropping the oldest beyond [`MAX_KEPT`].
    pub fn push(&mut self, milestone: Milestone) {
        self.milestones.push(milestone);
        let excess = self.milestones.len().saturating_sub(MAX_KEPT);
        self.milestones.drain(..excess);
    }

    /// The milestones of `attempt`, oldest first.
    pub fn of_attempt(&self, attempt: u32) -> impl Iterator<Item = &Milestone> {
        self.milestones.iter().filter(move |m| m.attempt == attempt)
    }
}

/// A note as the model wrote it, made one line (whitespace and control characters collapse
/// to single spaces); an error for an empty or too long note, which the model can shorten.
pub fn clean_milestone(text: &str) -> Result<String, String> {
    let one_line = text
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let chars = one_line.chars().count();
    if chars == 0 {
        return Err("the milestone is empty".into());
    }
    if chars > MAX_MILESTONE_CHARS {
        return Err(format!(
            "the milestone has {chars} characters; at most {MAX_MILESTONE_CHARS}"
        ));
    }
    Ok(one_line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(attempt: u32, text: &str) -> Milestone {
        Milestone {
            attempt,
            time: "2026-12-06T23:00:00Z".into(),
            text: text.into(),
        }
    }

    #[test]
    fn notes_become_one_bounded_line() {
        assert_eq!(
            clean_milestone("  Read\n the\tinvoices\u{7}module ").as_deref(),
            Ok("Read the invoices module")
        );
        assert!(clean_milestone(" \n\t ").is_err());
        assert!(clean_milestone(&"x".repeat(MAX_MILESTONE_CHARS)).is_ok());
        let long = clean_milestone(&"é".repeat(MAX_MILESTONE_CHARS + 1)).unwrap_err();
        assert!(long.contains("281 characters"), "{long}");
    }

    #[test]
    fn the_log_keeps_the_newest_and_counts_per_attempt() {
        let mut log = MilestoneLog::default();
        for i in 0..MAX_KEPT + 3 {
            log.push(note(if i < 5 { 1 } else { 2 }, &format!("n{i}")));
        }
        assert_eq!(log.milestones.len(), MAX_KEPT);
        assert_eq!(log.milestones[0].text, "n3", "the three oldest went");
        assert_eq!(log.count(1), 2);
        assert_eq!(log.of_attempt(2).count(), MAX_KEPT - 2);
        let again = MilestoneLog::parse(&log.render()).expect("round trip");
        assert_eq!(again, log);
        assert!(MilestoneLog::parse("{\"milestones\": 3}").is_err());
    }
}
