//! Who may start: Agent and Project limits, served first come, first served.
//!
//! A run holds capacity from the moment it is admitted until it finishes. The watch cache
//! lags behind our own status writes, so two runs reconciled at once could both see a free
//! slot; the [`Ledger`] remembers admissions this process made until the cache shows them,
//! and admission decisions are taken under its lock (never held across an `.await`).
//!
//! The daily run limit counts admissions, not AgentRuns: runs are deleted and pruned, and a
//! count derived from them would hand the day its runs back. The Project's status keeps the
//! day's count as a [`DayCount`] (`runsDay`, `runsToday`, `runsTodayUids`); a run is added
//! there, with the Project's resourceVersion as a precondition, before its first pod is
//! created (`project::count_admission`), and admission reads that set together with the
//! runs the cache shows started today.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use countersign_crds::{AgentRun, ProjectStatus, RunPhase};
use jiff::Timestamp;
use kube::ResourceExt;
use serde_json::json;

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
    /// The runs the Project's status counts for today.
    pub today: DayCount,
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
    /// The capabilities a run given no Agent asks for, sorted.
    capabilities: Vec<String>,
}

impl Entry {
    fn of(run: &AgentRun) -> Option<Self> {
        Some(Self {
            uid: run.uid()?,
            namespace: run.namespace().unwrap_or_default(),
            name: run.name_any(),
            agent: run.agent_name().unwrap_or_default().to_owned(),
            project: run.spec.project_ref.name.clone(),
            created: run.metadata.creation_timestamp.as_ref().map(|t| t.0),
            phase: run.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            started: run
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0),
            capabilities: sorted(&run.spec.capabilities),
        })
    }

    fn waiting(&self) -> bool {
        matches!(self.phase, RunPhase::Pending | RunPhase::Queued)
    }
}

fn sorted(capabilities: &[String]) -> Vec<String> {
    let mut sorted = capabilities.to_vec();
    sorted.sort();
    sorted
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
    /// The runs this process admitted, by uid, with the Agent each was admitted to (a routed
    /// run's Agent is in its status only once the cache shows the write).
    admitted: Mutex<HashMap<String, String>>,
    /// Held while one admission is counted in its Project's status (a read and a
    /// conditional write): admissions of this process then never race each other for the
    /// Project's resourceVersion, which a burst of runs would otherwise turn into a storm
    /// of conflicts and backoffs. An async lock, held across those two requests only. It
    /// holds, per Project, the copy this process last wrote (see [`LastCount`]).
    counting: tokio::sync::Mutex<HashMap<(String, String), LastCount>>,
}

/// A Project as this process's last day-count write left it, and the resourceVersions its
/// writes replaced since the watch cache last caught up. While the cache still shows one of
/// those older versions, the next admission starts from this newer copy instead of losing a
/// conditional write to a conflict and reading the Project again (one request per admission
/// instead of three).
#[derive(Clone, Debug)]
pub struct LastCount {
    /// The resourceVersions this process's writes replaced.
    pub written_over: HashSet<String>,
    /// The Project the apiserver answered the write with.
    pub project: countersign_crds::Project,
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
        let mut admitted = self
            .admitted
            .lock()
            .expect("admission ledger lock poisoned");
        let entries = entries_of(all, &mut admitted);
        if admitted.contains_key(&me.uid) {
            return Admission::Admit;
        }
        let held: HashSet<String> = admitted.keys().cloned().collect();
        let decision = decide(&me, &entries, &held, limits, now);
        if decision == Admission::Admit {
            admitted.insert(me.uid.clone(), me.agent.clone());
        }
        decision
    }

    /// Chooses among `candidates` the Agent a run given capabilities goes to, counting every
    /// run the cache knows and the admissions this process made.
    pub fn route(
        &self,
        run: &AgentRun,
        all: &[std::sync::Arc<AgentRun>],
        candidates: &[super::routing::Candidate],
    ) -> super::routing::Route {
        let mut admitted = self
            .admitted
            .lock()
            .expect("admission ledger lock poisoned");
        let entries = entries_of(all, &mut admitted);
        let Some(me) = Entry::of(run) else {
            return super::routing::Route::Wait("the run has no uid yet".into());
        };
        let (namespace, uid) = (me.namespace.clone(), me.uid.clone());
        // Admitted by an earlier pass whose writes did not land: same Agent again.
        if let Some(agent) = admitted.get(&uid)
            && candidates.iter().any(|c| &c.name == agent)
        {
            return super::routing::Route::To {
                agent: agent.clone(),
                reason: format!(
                    "capabilities {}: admitted to {agent} earlier",
                    run.spec.capabilities.join(", ")
                ),
            };
        }
        let loads: Vec<super::routing::Load> = candidates
            .iter()
            .map(|c| {
                let mine = entries
                    .iter()
                    .filter(|e| e.namespace == namespace && e.uid != uid && e.agent == c.name);
                let holding = mine
                    .clone()
                    .filter(|e| holds_capacity(e.phase) || admitted.contains_key(&e.uid))
                    .count();
                let queued = mine
                    .filter(|e| e.waiting() && !admitted.contains_key(&e.uid))
                    .count();
                super::routing::Load {
                    running: holding as u32,
                    queued: queued as u32,
                }
            })
            .collect();
        // First come, first served among the unrouted runs of the Project that want the
        // same capabilities (so the same Agents): older ones take the free slots first.
        let ahead = entries
            .iter()
            .filter(|e| e.namespace == namespace && e.project == me.project && e.uid != uid)
            .filter(|e| e.agent.is_empty() && e.waiting() && e.capabilities == me.capabilities)
            .filter(|e| (e.created, &e.name) < (me.created, &me.name))
            .count();
        let free: usize = candidates
            .iter()
            .zip(&loads)
            .map(|(c, l)| c.max.saturating_sub(l.running + l.queued) as usize)
            .sum();
        if ahead > 0 && ahead >= free {
            return super::routing::Route::Wait(format!(
                "queued behind {ahead} earlier run(s) wanting capabilities {}",
                run.spec.capabilities.join(", ")
            ));
        }
        super::routing::choose(&run.spec.capabilities, candidates, &loads)
    }
    /// Waits for this process's turn to count an admission in a Project's status.
    pub async fn counting_turn(
        &self,
    ) -> tokio::sync::MutexGuard<'_, HashMap<(String, String), LastCount>> {
        self.counting.lock().await
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
            if holds_capacity(entry.phase) || admitted.contains_key(&entry.uid) && entry.waiting() {
                running += 1;
            } else if entry.waiting() {
                waiting += 1;
            }
        }
        (running, waiting)
    }
}

/// What admission sees of every run the cache knows. Forgets admissions the cache now shows
/// as finished, or whose run is gone, and fills in the Agent of a routed run the cache does
/// not show routed yet.
fn entries_of(
    all: &[std::sync::Arc<AgentRun>],
    admitted: &mut HashMap<String, String>,
) -> Vec<Entry> {
    let mut entries: Vec<Entry> = all.iter().filter_map(|r| Entry::of(r)).collect();
    let live: HashMap<&str, &Entry> = entries.iter().map(|e| (e.uid.as_str(), e)).collect();
    admitted.retain(|uid, _| {
        live.get(uid.as_str())
            .is_some_and(|e| !e.phase.is_finished())
    });
    for entry in &mut entries {
        if entry.agent.is_empty()
            && let Some(agent) = admitted.get(&entry.uid)
        {
            entry.agent = agent.clone();
        }
    }
    entries
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
    // A run the status already counts for today has its place (its pod was not created
    // yet, or it waits for a second admission after its plan was approved).
    if !limits.today.contains(&me.uid) {
        let mut today: HashSet<&str> = limits.today.uids.iter().map(String::as_str).collect();
        today.extend(
            entries
                .iter()
                .filter(same_ns)
                .filter(|e| e.project == me.project)
                .filter(|e| {
                    admitted.contains(&e.uid) || e.started.is_some_and(|t| same_utc_day(t, now))
                })
                .map(|e| e.uid.as_str()),
        );
        if today.len() >= limits.project_per_day as usize {
            return Admission::Wait(per_day_reason(
                &me.project,
                limits.project_per_day,
                today.len(),
            ));
        }
    }
    Admission::Admit
}

/// Why a run waits for the next day.
pub fn per_day_reason(project: &str, limit: u32, counted: usize) -> String {
    format!(
        "project {project} reached its limit of {limit} runs per day (UTC): {counted} admitted \
         today (limits.maxRunsPerDay)"
    )
}

/// The largest `limits.maxRunsPerDay`, and so the most uids a day's count keeps.
pub const MAX_RUNS_PER_DAY: usize = 10_000;

/// The runs a Project admitted on one UTC day, as its status keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DayCount {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The uids of the runs admitted that day.
    pub uids: BTreeSet<String>,
}

/// Whether a run may be counted for today.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DayAdmission {
    /// It already is: nothing to write.
    Counted,
    /// There is room: write this count.
    Add(DayCount),
    /// The day is full; the text says so, for people.
    Full(String),
}

impl DayCount {
    /// Today's count as `status` keeps it: empty when the status counts an earlier day (or
    /// nothing yet). A status already counting a later day than `now` says (midnight passed
    /// since `now` was taken, or another controller's clock is ahead) is kept: a count never
    /// goes back a day.
    pub fn today(status: Option<&ProjectStatus>, now: Timestamp) -> Self {
        let day = countersign_crds::usage::day_of(&now);
        match status.and_then(|s| Some((s.runs_day.as_deref()?, s))) {
            // `YYYY-MM-DD` sorts by date.
            Some((counted, s)) if counted >= day.as_str() => Self {
                day: counted.to_owned(),
                uids: s.runs_today_uids.iter().cloned().collect(),
            },
            _ => Self {
                day,
                uids: BTreeSet::new(),
            },
        }
    }

    /// Also counts `runs` that started on the counted day but are not listed (started before
    /// the count was kept in the status), up to [`MAX_RUNS_PER_DAY`].
    pub fn with_started<'a>(mut self, runs: impl IntoIterator<Item = &'a AgentRun>) -> Self {
        for run in runs {
            let started = run
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .is_some_and(|t| countersign_crds::usage::day_of(&t.0) == self.day);
            if let Some(uid) = run.uid().filter(|_| started)
                && self.uids.len() < MAX_RUNS_PER_DAY
            {
                self.uids.insert(uid);
            }
        }
        self
    }

    /// Whether `uid` is counted.
    pub fn contains(&self, uid: &str) -> bool {
        self.uids.contains(uid)
    }

    /// How many runs are counted.
    pub fn count(&self) -> u32 {
        u32::try_from(self.uids.len()).unwrap_or(u32::MAX)
    }

    /// Whether `uid` may be added under `limit` runs per day of `project`.
    pub fn admit(&self, uid: &str, project: &str, limit: u32) -> DayAdmission {
        if self.contains(uid) {
            return DayAdmission::Counted;
        }
        if self.uids.len() >= (limit as usize).min(MAX_RUNS_PER_DAY) {
            return DayAdmission::Full(per_day_reason(project, limit, self.uids.len()));
        }
        let mut next = self.clone();
        next.uids.insert(uid.to_owned());
        DayAdmission::Add(next)
    }

    /// Whether `status` already says exactly this.
    pub fn is_recorded_in(&self, status: Option<&ProjectStatus>) -> bool {
        status.is_some_and(|s| {
            s.runs_day.as_deref() == Some(self.day.as_str())
                && s.runs_today == self.count()
                && s.runs_today_uids.len() == self.uids.len()
                && s.runs_today_uids.iter().all(|u| self.uids.contains(u))
        })
    }

    /// The JSON merge patch of the Project's status that records this count, valid only
    /// against `resource_version` (the version the count was read from): a concurrent
    /// writer makes it fail with a conflict instead of losing a run.
    pub fn status_patch(&self, resource_version: &str) -> serde_json::Value {
        json!({
            "metadata": {"resourceVersion": resource_version},
            "status": {
                "runsDay": self.day,
                "runsToday": self.count(),
                "runsTodayUids": self.uids,
            }
        })
    }

    /// Copies this count into `status`.
    pub fn write_to(&self, status: &mut ProjectStatus) {
        status.runs_day = Some(self.day.clone());
        status.runs_today = self.count();
        status.runs_today_uids = self.uids.iter().cloned().collect();
    }
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
            today: DayCount::default(),
        }
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).expect("ts")
    }

    /// A run given capabilities, not routed yet (as the cache shows it).
    fn unrouted(name: &str, created: i64) -> Arc<AgentRun> {
        let mut run: AgentRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {"projectRef": {"name": "p"}, "capabilities": ["rust"], "task": {"title": "t"}}
        }))
        .expect("valid run");
        run.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).expect("ts")));
        Arc::new(run)
    }

    #[test]
    fn a_run_routed_and_admitted_by_this_process_counts_before_the_cache_shows_its_routing() {
        use super::super::routing::{Candidate, Route};
        let ledger = Ledger::default();
        let candidates = [
            Candidate {
                name: "a".into(),
                max: 1,
                price: None,
            },
            Candidate {
                name: "b".into(),
                max: 1,
                price: None,
            },
        ];
        let (one, two) = (unrouted("one", 1), unrouted("two", 2));
        let all = vec![one.clone(), two.clone()];
        let Route::To { agent, .. } = ledger.route(&one, &all, &candidates) else {
            panic!("routed")
        };
        assert_eq!(agent, "a");
        let mut routed = (*one).clone();
        routed.status = Some(AgentRunStatus {
            routing: Some(countersign_crds::agent_run::Routing {
                agent: agent.clone(),
                reason: String::new(),
                time: Time(now()),
            }),
            ..Default::default()
        });
        assert_eq!(
            ledger.admit(&routed, &all, &limits(1), now()),
            Admission::Admit
        );
        // The cache still shows `one` unrouted: the ledger knows it holds a's slot.
        match ledger.route(&two, &all, &candidates) {
            Route::To { agent, reason } => {
                assert_eq!(agent, "b", "{reason}");
                assert!(reason.contains("a 1 of 1 in use"), "{reason}");
            }
            other => panic!("expected b, got {other:?}"),
        }
        // A pass of `one` whose writes were lost routes it to the same Agent again.
        assert!(matches!(
            ledger.route(&one, &all, &candidates),
            Route::To { agent, .. } if agent == "a"
        ));
    }

    /// Unrouted runs of a Project wanting the same capabilities are served first come,
    /// first served: a newer one waits while older ones would take every free slot.
    #[test]
    fn unrouted_runs_wanting_the_same_capabilities_are_served_in_creation_order() {
        use super::super::routing::{Candidate, Route};
        let ledger = Ledger::default();
        let candidates = [Candidate {
            name: "a".into(),
            max: 2,
            price: None,
        }];
        let (one, two, three) = (unrouted("one", 1), unrouted("two", 2), unrouted("three", 3));
        let mut elsewhere = (*unrouted("elsewhere", 4)).clone();
        elsewhere.spec.project_ref.name = "q".into();
        let elsewhere = Arc::new(elsewhere);
        let mut python = (*unrouted("python", 5)).clone();
        python.spec.capabilities = vec!["python".into()];
        let python = Arc::new(python);
        let all = vec![
            one.clone(),
            two.clone(),
            three.clone(),
            elsewhere.clone(),
            python.clone(),
        ];
        let admit = |run: &Arc<AgentRun>| {
            let mut routed = (**run).clone();
            routed.status = Some(AgentRunStatus {
                routing: Some(countersign_crds::agent_run::Routing {
                    agent: "a".into(),
                    reason: String::new(),
                    time: Time(now()),
                }),
                ..Default::default()
            });
            assert_eq!(
                ledger.admit(&routed, &all, &limits(2), now()),
                Admission::Admit
            );
        };
        // Two free slots, two older runs: the third waits; the first two may go.
        match ledger.route(&three, &all, &candidates) {
            Route::Wait(why) => assert_eq!(
                why, "queued behind 2 earlier run(s) wanting capabilities rust",
                "{why}"
            ),
            other => panic!("three must wait, got {other:?}"),
        }
        assert!(matches!(
            ledger.route(&two, &all, &candidates),
            Route::To { .. }
        ));
        // Another Project's run and a run wanting other capabilities queue on their own.
        assert!(matches!(
            ledger.route(&elsewhere, &all, &candidates),
            Route::To { .. }
        ));
        assert!(matches!(
            ledger.route(&python, &all, &candidates),
            Route::To { .. }
        ));
        // `one` takes a slot: one free, `two` still ahead of `three`.
        assert!(matches!(
            ledger.route(&one, &all, &candidates),
            Route::To { .. }
        ));
        admit(&one);
        assert!(matches!(
            ledger.route(&three, &all, &candidates),
            Route::Wait(why) if why.contains("behind 1 earlier")
        ));
        assert!(matches!(
            ledger.route(&two, &all, &candidates),
            Route::To { .. }
        ));
        admit(&two);
        // No slot left: `three` waits for a free Agent, no longer behind anyone.
        match ledger.route(&three, &all, &candidates) {
            Route::Wait(why) => assert!(why.contains("waiting for a free Agent"), "{why}"),
            other => panic!("three must wait, got {other:?}"),
        }
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
            project_max: 1,
            ..limits(5)
        };
        assert!(
            matches!(ledger.admit(&runs[1], &runs, &tight, now()), Admission::Wait(w) if w.contains("project p"))
        );
        let mut started = (*run("x", 1, "a", RunPhase::Succeeded)).clone();
        started.status.as_mut().unwrap().start_time = Some(Time(now()));
        let runs = vec![Arc::new(started), run("y", 2, "b", RunPhase::Pending)];
        let per_day = Limits {
            project_per_day: 1,
            ..limits(5)
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

    fn project_status(day: &str, uids: &[&str]) -> ProjectStatus {
        ProjectStatus {
            runs_day: Some(day.to_owned()),
            runs_today: u32::try_from(uids.len()).expect("few"),
            runs_today_uids: uids.iter().map(|u| (*u).to_owned()).collect(),
            ..ProjectStatus::default()
        }
    }

    #[test]
    fn the_day_count_outlives_deleted_runs_and_a_new_day_starts_from_zero() {
        let today = countersign_crds::usage::day_of(&now());
        let status = project_status(&today, &["uid-gone-1", "uid-gone-2"]);
        let count = DayCount::today(Some(&status), now());
        assert_eq!(count.count(), 2);
        assert!(count.is_recorded_in(Some(&status)));
        // Both runs are gone from the cache; the day still counts them.
        let ledger = Ledger::default();
        let runs = vec![run("third", 3, "a", RunPhase::Pending)];
        let per_day = |today: DayCount| Limits {
            project_per_day: 2,
            today,
            ..limits(5)
        };
        assert!(matches!(
            ledger.admit(&runs[0], &runs, &per_day(count.clone()), now()),
            Admission::Wait(w) if w.contains("limit of 2 runs per day") && w.contains("2 admitted today")
        ));
        assert!(matches!(
            count.admit("uid-third", "p", 2),
            DayAdmission::Full(w) if w.contains("maxRunsPerDay")
        ));
        // A run the day already counts keeps its place.
        assert_eq!(count.admit("uid-gone-1", "p", 2), DayAdmission::Counted);

        // A count of a later day (midnight passed since `now`) is never taken back a day.
        let tomorrow = project_status("2999-01-01", &["uid-late"]);
        let kept = DayCount::today(Some(&tomorrow), now());
        assert_eq!((kept.day.as_str(), kept.count()), ("2999-01-01", 1));
        assert!(kept.is_recorded_in(Some(&tomorrow)));

        // Yesterday's count is not today's.
        let yesterday = project_status("1970-01-11", &["uid-gone-1", "uid-gone-2"]);
        let fresh = DayCount::today(Some(&yesterday), now());
        assert_eq!((fresh.day.as_str(), fresh.count()), (today.as_str(), 0));
        assert!(!fresh.is_recorded_in(Some(&yesterday)));
        assert_eq!(
            ledger.admit(&runs[0], &runs, &per_day(fresh.clone()), now()),
            Admission::Admit
        );
        let DayAdmission::Add(next) = fresh.admit("uid-third", "p", 2) else {
            panic!("room for a run");
        };
        assert_eq!(next.count(), 1);
        let patch = next.status_patch("42");
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["status"]["runsDay"], today.as_str());
        assert_eq!(patch["status"]["runsToday"], 1);
        assert_eq!(
            patch["status"]["runsTodayUids"],
            serde_json::json!(["uid-third"])
        );
    }

    #[test]
    fn runs_started_today_count_once_whether_listed_or_not() {
        let today = countersign_crds::usage::day_of(&now());
        let mut started = (*run("old", 1, "a", RunPhase::Succeeded)).clone();
        started.status.as_mut().expect("status").start_time = Some(Time(now()));
        let mut earlier = (*run("older", 0, "a", RunPhase::Succeeded)).clone();
        earlier.status.as_mut().expect("status").start_time =
            Some(Time(Timestamp::from_second(1).expect("ts")));
        // "old" started today but predates the count; "listed" is counted and deleted.
        let status = project_status(&today, &["uid-listed", "uid-old"]);
        let count = DayCount::today(Some(&status), now()).with_started([&started, &earlier]);
        assert_eq!(count.count(), 2, "{count:?}");
        let unlisted = DayCount::today(None, now()).with_started([&started, &earlier]);
        assert_eq!(unlisted.uids, BTreeSet::from(["uid-old".to_owned()]));

        // Admission counts the union once: listed, started today, or admitted by this
        // process and not yet seen running.
        let ledger = Ledger::default();
        let runs = vec![
            Arc::new(started),
            run("next", 2, "a", RunPhase::Pending),
            run("last", 3, "a", RunPhase::Pending),
        ];
        let limits = Limits {
            project_per_day: 3,
            today: DayCount::today(Some(&status), now()),
            ..limits(5)
        };
        assert_eq!(
            ledger.admit(&runs[1], &runs, &limits, now()),
            Admission::Admit
        );
        assert!(matches!(
            ledger.admit(&runs[2], &runs, &limits, now()),
            Admission::Wait(w) if w.contains("3 admitted today")
        ));
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
