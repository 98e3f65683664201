//! Kubernetes Events for readiness changes of Projects, Agents and RiskPolicies: one Event
//! when the `Ready` condition changes status or reason, a `Warning` when the object becomes
//! `Stalled` (it needs a person), `Normal` otherwise. `kubectl describe` then tells what went
//! wrong and when it was fixed, without an Event on every resync.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType, Recorder};

use countersign_crds::conditions::{self, READY, STALLED};

/// Longest Event note the API server accepts (`events.k8s.io/v1` refuses longer ones).
pub const MAX_NOTE_BYTES: usize = 1024;

/// The Event to publish when the conditions go from `old` to `new`: `None` when `Ready` kept
/// its status and reason.
pub fn readiness_event(old: &[Condition], new: &[Condition], action: &str) -> Option<Event> {
    let ready = conditions::find(new, READY)?;
    let before = conditions::find(old, READY);
    if before.is_some_and(|b| b.status == ready.status && b.reason == ready.reason) {
        return None;
    }
    let stalled = conditions::is_true(new, STALLED);
    Some(Event {
        type_: if stalled {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: ready.reason.clone(),
        note: Some(truncate(&ready.message, MAX_NOTE_BYTES)),
        action: action.to_owned(),
        secondary: None,
    })
}

/// Publishes `event` about `object`, best effort: a lost Event must not fail the reconcile,
/// but it is logged as a warning. The note is cut to [`MAX_NOTE_BYTES`] bytes at a character
/// boundary, whatever built it (the API server refuses the whole Event otherwise).
pub async fn publish(
    recorder: &Recorder,
    object: &k8s_openapi::api::core::v1::ObjectReference,
    mut event: Event,
) {
    event.note = event.note.map(|note| truncate(&note, MAX_NOTE_BYTES));
    if let Err(err) = recorder.publish(&event, object).await {
        tracing::warn!(
            error = %err,
            reason = %event.reason,
            object = ?object.name,
            "could not publish an Event"
        );
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked with `...` when cut.
fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

#[cfg(test)]
mod tests {
    use countersign_crds::conditions::{Readiness, apply_readiness};
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn with(readiness: Readiness) -> Vec<Condition> {
        let mut conditions = Vec::new();
        apply_readiness(&mut conditions, &readiness, Some(1), Timestamp::UNIX_EPOCH);
        conditions
    }

    #[test]
    fn stalled_is_a_warning_and_recovery_is_normal() {
        let stalled = with(Readiness::Stalled {
            reason: "SecretMissing".into(),
            message: "Secret \"keys\" does not exist".into(),
        });
        let ready = with(Readiness::Ready {
            reason: "Idle".into(),
            message: "0 running".into(),
        });
        let event = readiness_event(&[], &stalled, "Reconcile").expect("an event");
        assert_eq!(event.type_, EventType::Warning);
        assert_eq!(event.reason, "SecretMissing");
        let event = readiness_event(&stalled, &ready, "Reconcile").expect("an event");
        assert_eq!(event.type_, EventType::Normal);
        assert_eq!(event.reason, "Idle");
        assert!(readiness_event(&ready, &ready, "Reconcile").is_none());
    }

    #[test]
    fn notes_fit_the_api_limit() {
        let long = "é".repeat(2000);
        let stalled = with(Readiness::Stalled {
            reason: "Invalid".into(),
            message: long,
        });
        let note = readiness_event(&[], &stalled, "Compile")
            .and_then(|e| e.note)
            .expect("note");
        assert!(note.len() <= MAX_NOTE_BYTES, "{}", note.len());
    }

    #[test]
    fn notes_are_cut_by_bytes_at_a_character_boundary() {
        let long = "é".repeat(1000); // 2000 bytes in 1000 characters
        let cut = truncate(&format!("Attempt 1 ended Failed: {long}"), MAX_NOTE_BYTES);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{} bytes", cut.len());
        assert!(
            cut.len() >= MAX_NOTE_BYTES - 4,
            "cut no shorter than needed"
        );
        assert!(cut.ends_with("..."));
        assert_eq!(truncate("short", MAX_NOTE_BYTES), "short");
        let exact = "x".repeat(MAX_NOTE_BYTES);
        assert_eq!(truncate(&exact, MAX_NOTE_BYTES), exact);
    }
}
