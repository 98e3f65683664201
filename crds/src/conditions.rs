//! kstatus-style conditions shared by every kind.
//!
//! Every object carries `Ready`; `Reconciling` and `Stalled` appear only while something is
//! abnormal and are removed once it is not, which is what Argo CD, Flux and `kubectl wait`
//! expect. Conditions are merged by `type` (the CRDs declare the list as a list-map), and a
//! condition's `lastTransitionTime` only moves when its status actually changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// `Ready`: the object reached the state its spec asks for.
pub const READY: &str = "Ready";
/// `Reconciling`: the controller is working towards the desired state.
pub const RECONCILING: &str = "Reconciling";
/// `Stalled`: the controller cannot make progress without a change to the spec or the world.
pub const STALLED: &str = "Stalled";

/// The status value of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// The controller cannot tell yet.
    Unknown,
}

impl ConditionStatus {
    /// The string the Kubernetes API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

/// Where an object stands, as the three kstatus conditions summarise it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Done: `Ready=True`, no `Reconciling`, no `Stalled`.
    Ready { reason: String, message: String },
    /// Work in progress: `Ready=False` (or `Unknown` before the first observation) and
    /// `Reconciling=True`.
    Progressing { reason: String, message: String },
    /// Cannot progress: `Ready=False` and `Stalled=True`.
    Stalled { reason: String, message: String },
    /// Finished without success but nothing left to do (e.g. a cancelled run):
    /// `Ready=False`, no `Reconciling`, no `Stalled`.
    NotReady { reason: String, message: String },
}

/// Builds a condition observed at `generation` and `now`.
pub fn condition(
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

/// Returns the condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Inserts or replaces the condition with `new.type_`. When the status is unchanged the
/// previous `lastTransitionTime` is kept, so the time tells when the status last flipped.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// Removes the condition of `type_`; returns whether one was there.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) -> bool {
    let before = conditions.len();
    conditions.retain(|c| c.type_ != type_);
    before != conditions.len()
}

/// Writes `Ready`, `Reconciling` and `Stalled` so they describe `readiness`, removing the
/// abnormal-only conditions when they no longer apply.
pub fn apply_readiness(
    conditions: &mut Vec<Condition>,
    readiness: &Readiness,
    generation: Option<i64>,
    now: Timestamp,
) {
    use ConditionStatus::{False, True, Unknown};
    // Progress keeps `Ready=Unknown` from the first observation until something is known
    // (one status write less per object than flipping it to `False` on the second pass);
    // progress after a known state (ready, stalled) is `False`.
    let unknown_so_far = find(conditions, READY).is_none_or(|c| c.status == Unknown.as_str());
    let (ready, reason, message, reconciling, stalled) = match readiness {
        Readiness::Ready { reason, message } => (True, reason, message, false, false),
        Readiness::Progressing { reason, message } => {
            let status = if unknown_so_far { Unknown } else { False };
            (status, reason, message, true, false)
        }
        Readiness::Stalled { reason, message } => (False, reason, message, false, true),
        Readiness::NotReady { reason, message } => (False, reason, message, false, false),
    };
    set(
        conditions,
        condition(READY, ready, reason, message, generation, now),
    );
    for (type_, wanted) in [(RECONCILING, reconciling), (STALLED, stalled)] {
        if wanted {
            set(
                conditions,
                condition(type_, True, reason, message, generation, now),
            );
        } else {
            remove(conditions, type_);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).expect("valid timestamp")
    }

    #[test]
    fn set_replaces_by_type_and_keeps_transition_time_when_status_is_unchanged() {
        let mut conds = vec![];
        set(
            &mut conds,
            condition(READY, ConditionStatus::False, "Pending", "", Some(1), t(10)),
        );
        set(
            &mut conds,
            condition(READY, ConditionStatus::False, "Running", "", Some(1), t(20)),
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].reason, "Running");
        assert_eq!(conds[0].last_transition_time, Time(t(10)));
        set(
            &mut conds,
            condition(READY, ConditionStatus::True, "Done", "", Some(2), t(30)),
        );
        assert_eq!(conds[0].last_transition_time, Time(t(30)));
        assert_eq!(conds[0].observed_generation, Some(2));
    }

    #[test]
    fn readiness_adds_abnormal_conditions_only_while_abnormal() {
        let mut conds = vec![];
        let progressing = Readiness::Progressing {
            reason: "Queued".into(),
            message: "waiting".into(),
        };
        apply_readiness(&mut conds, &progressing, Some(1), t(1));
        assert_eq!(
            find(&conds, READY).unwrap().status,
            "Unknown",
            "first observation is Unknown"
        );
        assert!(is_true(&conds, RECONCILING));

        apply_readiness(&mut conds, &progressing, Some(1), t(2));
        assert_eq!(
            find(&conds, READY).unwrap().status,
            "Unknown",
            "still progressing: nothing known yet"
        );

        let stalled = Readiness::Stalled {
            reason: "SecretMissing".into(),
            message: "x".into(),
        };
        apply_readiness(&mut conds, &stalled, Some(1), t(3));
        assert!(is_true(&conds, STALLED));
        assert!(find(&conds, RECONCILING).is_none());

        let ready = Readiness::Ready {
            reason: "Succeeded".into(),
            message: String::new(),
        };
        apply_readiness(&mut conds, &ready, Some(1), t(4));
        assert!(is_true(&conds, READY));
        assert_eq!(conds.len(), 1, "only Ready remains: {conds:?}");

        apply_readiness(&mut conds, &progressing, Some(2), t(5));
        assert_eq!(
            find(&conds, READY).unwrap().status,
            "False",
            "progress after a known state is not ready"
        );
    }
}
