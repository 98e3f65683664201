//! Who may start: Agent and Project limits, served first come, first served.
//!
//! A run holds capacity from the moment it is admitted until it finishes. The watch cache
//! lags behind our own status writes, so two runs reconciled at once could both see a free
//! slot; the [`Ledger`] remembers admissions this process made until the cache shows them,
//! and admission decisions are taken under its lock (never held across an `.await`).

use std::collections::HashSet;
use std::sync::Mutex;

use countersign_crds::{AgentRun, RunPhase};
use jiff::Timestamp;
use kube::ResourceExt;

/// Limits that apply to one run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `Agent.spec.maxConcurrentRuns`.
    pub agent_max: u32,
    /// `Project.spec.limits.maxConcurrentRuns`.
    pub project_max: u32,
    /// `Project.spec.limits.maxRunsPerDay`.
    pub project_per_day: u32,
    /// `Project.spec.limits.maxSpendPerDay` and what the Project spent today (UTC) through
    /// the provider gateway (its usage ledger), when a limit is set.
    pub spend_today: Option<(countersign_crds::Usd, countersign_crds::Usd)>,
}

/// The outcome of an admission check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// The run may start now.
    Admit,
    /// The run waits; the text says for what, for people.
    Wait(String),
}

/// What one run looks like to admission.
#[derive(Clone, Debug)]
struct Entry {
    uid: String,
    namespace: String,
    name: String,
    agent: String,
    project: String,
    created: Option<Timestamp>,
    phase: RunPhase,
    started: Option<Timestamp>,
}

impl Entry {
    fn of(run: &AgentRun) -> Option<Self> {
        Some(Self {
            uid: run.uid()?,
            namespace: run.namespace().unwrap_or_default(),
            name: run.name_any(),
            agent: run.spec.agent_ref.name.clone(),
            project: run.spec.project_ref.name.clone(),
            created: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
            phase: run.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            started: run
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0),
        })
    }

    fn waiting(&self) -> bool {
        matches!(self.phase, RunPhase::Pending | RunPhase::Queued)
    }
}

/// Whether `t` falls on the same UTC day as `now` (daily limits reset at midnight UTC).
pub fn same_utc_day(t: Timestamp, now: Timestamp) -> bool {
    let utc = jiff::tz::TimeZone::UTC;
    t.to_zoned(utc.clone()).date() == now.to_zoned(utc).date()
}

/// Whether a phase holds capacity (an agent pod may be running for it).
pub fn holds_capacity(phase: RunPhase) -> bool {
    matches!(phase, RunPhase::Running | RunPhase::Planning)
}

/// Admissions made by this process that the watch cache may not reflect yet.
#[derive(Debug, Default)]
pub struct Ledger {
    admitted: Mutex<HashSet<String>>,
}

impl Ledger {
    /// Decides whether `run` may start, given every run the cache knows, and records the
    /// admission when it may. `now` decides which runs count as today's.
    pub fn admit(
        &self,
        run: &AgentRun,
        all: &[std::sync::Arc<AgentRun>],
        limits: &Limits,
        now: Timestamp,
    ) -> Admission {
        let Some(me) = Entry::of(run) else {
            return Admission::Wait("the run has no uid yet".into());
        };
        let entries: Vec<Entry> = all.iter().filter_map(|r| Entry::of(r)).collect();
        let mut admitted = self
            .admitted
            .lock()
            .expect("admission ledger lock poisoned");
        // Forget admissions the cache now shows as finished, or whose run is gone.
        let live: HashSet<&str> = entries.iter().map(|e| e.uid.as_str()).collect();
        admitted.retain(|uid| {
            live.contains(uid.as_str())
                && entries
                    .iter()
                    .find(|e| &e.uid == uid)
                    .is_none_or(|e| !e.phase.is_finished())
        });
        if admitted.contains(&me.uid) {
            return Admission::Admit;
        }
        let decision = decide(&me, &entries, &admitted, limits, now);
        if decision == Admission::Admit {
            admitted.insert(me.uid.clone());
        }
        decision
    }

    /// Drops a run from the ledger (it finished or was deleted).
    pub fn release(&self, uid: &str) {
        self.admitted
            .lock()
            .expect("admission ledger lock poisoned")
            .remove(uid);
    }

    /// Runs holding capacity and runs waiting, across everything the cache knows.
    pub fn counts(&self, all: &[std::sync::Arc<AgentRun>]) -> (usize, usize) {
        let admitted = self
            .admitted
            .lock()
            .expect("admission ledger lock poisoned");
        let mut running = 0;
        let mut waiting = 0;
        for entry in all.iter().filter_map(|r| Entry::of(r)) {
            if holds_capacity(entry.phase) || admitted.contains(&entry.uid) && entry.waiting() {
                running += 1;
            } else if entry.waiting() {
                waiting += 1;
            }
        }
        (running, waiting)
    }
}

/// The pure admission rule.
fn decide(
    me: &Entry,
    entries: &[Entry],
    admitted: &HashSet<String>,
    limits: &Limits,
    now: Timestamp,
) -> Admission {
    let holding = |e: &Entry| holds_capacity(e.phase) || admitted.contains(&e.uid);
    let same_ns = |e: &&Entry| e.namespace == me.namespace && e.uid != me.uid;

    if let Some((spent, max)) = limits.spend_today
        && spent.cents >= max.cents
    {
        return Admission::Wait(format!(
            "waiting for tomorrow (UTC): project {} spent ${spent} of its ${max} for today \
             (limits.maxSpendPerDay)",
            me.project
        ));
    }

    let agent_running = entries
        .iter()
        .filter(same_ns)
        .filter(|e| e.agent == me.agent && holding(e))
        .count();
    if agent_running >= limits.agent_max as usize {
        return Admission::Wait(format!(
            "waiting for agent {}: {agent_running} of {} concurrent runs in use",
            me.agent, limits.agent_max
        ));
    }
    // First come, first served among the runs waiting for the same agent.
    let ahead = entries
        .iter()
        .filter(same_ns)
        .filter(|e| e.agent == me.agent && e.waiting() && !admitted.contains(&e.uid))
        .filter(|e| (e.created, &e.name) < (me.created, &me.name))
        .count();
    let free_agent_slots = limits.agent_max as usize - agent_running;
    if ahead >= free_agent_slots {
        return Admission::Wait(format!(
            "queued behind {ahead} earlier run(s) of agent {}",
            me.agent
        ));
    }
    let project_running = entries
        .iter()
        .filter(same_ns)
        .filter(|e| e.project == me.project && holding(e))
        .count();
    if project_running >= limits.project_max as usize {
        return Admission::Wait(format!(
            "waiting for project {}: {project_running} of {} concurrent runs in use",
            me.project, limits.project_max
        ));
    }
    let started_today = entries
        .iter()
        .filter(same_ns)
        .filter(|e| e.project == me.project)
        .filter(|e| admitted.contains(&e.uid) || e.started.is_some_and(|t| same_utc_day(t, now)))
        .count();
    if started_today >= limits.project_per_day as usize {
        return Admission::Wait(format!(
            "project {} reached its limit of {} runs per day (UTC)",
            me.project, limits.project_per_day
        ));
    }
    Admission::Admit
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use countersign_crds::AgentRunStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn run(name: &str, created: i64, agent: &str, phase: RunPhase) -> Arc<AgentRun> {
        let mut run: AgentRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"projectRef": {"name": "p"}, "agentRef": {"name": agent}, "task": {"title": "t"}}
        }))
        .expect("valid run");
        run.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).expect("ts")));
        run.status = Some(AgentRunStatus {
            phase,
            ..Default::default()
        });
        Arc::new(run)
    }

    fn limits(agent_max: u32) -> Limits {
        Limits {
            agent_max,
            project_max: 10,
            project_per_day: 100,
            spend_today: None,
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("ts")
    }

    #[test]
    fn runs_of_one_agent_start_one_at_a_time_in_creation_order() {
        let ledger = Ledger::default();
        let runs = vec![
            run("c", 3, "a", RunPhase::Pending),
            run("a", 1, "a", RunPhase::Pending),
            run("b", 2, "a", RunPhase::Pending),
        ];
        assert!(
            matches!(ledger.admit(&runs[0], &runs, &limits(1), now()), Admission::Wait(w) if w.contains("queued behind 2"))
        );
        assert!(matches!(
            ledger.admit(&runs[2], &runs, &limits(1), now()),
            Admission::Wait(_)
        ));
        assert_eq!(
            ledger.admit(&runs[1], &runs, &limits(1), now()),
            Admission::Admit,
            "the oldest goes first"
        );
        // The cache does not show "a" running yet; the ledger still holds its slot.
        assert!(
            matches!(ledger.admit(&runs[2], &runs, &limits(1), now()), Admission::Wait(w) if w.contains("1 of 1"))
        );
        assert_eq!(
            ledger.admit(&runs[1], &runs, &limits(1), now()),
            Admission::Admit,
            "admission is idempotent"
        );
        assert_eq!(ledger.counts(&runs), (1, 2));

        // "a" finishes: "b" is next, not "c".
        let runs = vec![
            run("c", 3, "a", RunPhase::Pending),
            run("a", 1, "a", RunPhase::Succeeded),
            run("b", 2, "a", RunPhase::Pending),
        ];
        assert!(matches!(
            ledger.admit(&runs[0], &runs, &limits(1), now()),
            Admission::Wait(_)
        ));
        assert_eq!(
            ledger.admit(&runs[2], &runs, &limits(1), now()),
            Admission::Admit
        );
    }

    #[test]
    fn project_limits_apply_across_agents() {
        let ledger = Ledger::default();
        let runs = vec![
            run("x", 1, "a", RunPhase::Running),
            run("y", 2, "b", RunPhase::Pending),
        ];
        let tight = Limits {
            agent_max: 5,
            project_max: 1,
            project_per_day: 100,
            spend_today: None,
        };
        assert!(
            matches!(ledger.admit(&runs[1], &runs, &tight, now()), Admission::Wait(w) if w.contains("project p"))
        );
        let mut started = (*run("x", 1, "a", RunPhase::Succeeded)).clone();
        started.status.as_mut().unwrap().start_time = Some(Time(now()));
        let runs = vec![Arc::new(started), run("y", 2, "b", RunPhase::Pending)];
        let per_day = Limits {
            agent_max: 5,
            project_max: 5,
            project_per_day: 1,
            spend_today: None,
        };
        assert!(
            matches!(ledger.admit(&runs[1], &runs, &per_day, now()), Admission::Wait(w) if w.contains("per day"))
        );
        let usd = |cents| countersign_crds::Usd { cents };
        let spent = Limits {
            spend_today: Some((usd(500), usd(500))),
            ..limits(5)
        };
        assert!(
            matches!(ledger.admit(&runs[1], &runs, &spent, now()), Admission::Wait(w) if w.contains("spent $5.00 of its $5.00") && w.contains("maxSpendPerDay"))
        );
        let left = Limits {
            spend_today: Some((usd(499), usd(500))),
            ..limits(5)
        };
        assert_eq!(
            ledger.admit(&runs[1], &runs, &left, now()),
            Admission::Admit
        );
    }

    #[test]
    fn other_namespaces_do_not_share_capacity() {
        let ledger = Ledger::default();
        let mut other = (*run("o", 0, "a", RunPhase::Running)).clone();
        other.metadata.namespace = Some("elsewhere".into());
        let runs = vec![Arc::new(other), run("m", 1, "a", RunPhase::Pending)];
        assert_eq!(
            ledger.admit(&runs[1], &runs, &limits(1), now()),
            Admission::Admit
        );
    }
}
