//! Breakdowns: an architect's proposed sub-tasks, checked when its attempt ends, and, once a
//! human approved them, carried out as child runs in dependency order. Part of the pure
//! [`super::decide`].
//!
//! A child is created when every sub-task it depends on has succeeded (its pull request
//! merged, or nothing to change); a sub-task whose dependency ended otherwise is never
//! started. The parent finishes when no child is active and none can start: `Succeeded` if
//! every sub-task succeeded, else `Failed` naming what did not.

use countersign_crds::agent_run::{ChildRun, MAX_PLAN_CHARS};
use countersign_crds::breakdown::Breakdown;
use countersign_crds::common::LocalRef;
use countersign_crds::common::PullRequestRef;
use countersign_crds::{AgentRun, RunPhase};
use kube::ResourceExt;

use super::{Action, Decision, Inputs, finish, truncate};

/// What the parent sees of one child run (from the watch cache).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildView {
    /// The child's name.
    pub name: String,
    /// Its phase.
    pub phase: RunPhase,
    /// Its status message.
    pub message: Option<String>,
    /// Its pull request.
    pub pull_request: Option<PullRequestRef>,
    /// Its gate.
    pub gate_ref: Option<LocalRef>,
}

impl ChildView {
    /// The view of `run` when it is a child of `parent` (names it and is owned by it).
    pub fn of(run: &AgentRun, parent: &AgentRun) -> Option<Self> {
        let named = run.spec.parent_ref.as_ref()?.name == parent.name_any()
            && run.namespace() == parent.namespace();
        let owned = run
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == parent.metadata.uid.as_ref());
        if !named || !owned {
            return None;
        }
        let status = run.status.clone().unwrap_or_default();
        Some(Self {
            name: run.name_any(),
            phase: status.phase,
            message: status.message,
            pull_request: status.pull_request,
            gate_ref: status.gate_ref,
        })
    }
}

/// The name of the child run doing sub-task `task` of `parent`.
pub fn child_name(parent: &str, task: &str) -> String {
    countersign_crds::names::with_suffix(parent, &format!("-{task}"))
}

/// Checks a breakdown an attempt reported: its shape (never trusted from a pod) and that
/// every Agent it names is one the Project lets runs name (its triggers).
pub(super) fn check(i: &Inputs<'_>, report: &str) -> Result<Breakdown, String> {
    let breakdown = Breakdown::parse(report)?;
    for task in &breakdown.tasks {
        if let Some(agent) = &task.agent
            && !i.mapped_agents.iter().any(|a| a == agent)
        {
            return Err(format!(
                "sub-task {} names Agent {agent:?}, which the Project's triggers do not map \
                 (triggers.labels or triggers.agents)",
                task.id
            ));
        }
    }
    Ok(breakdown)
}

/// Records an accepted breakdown as the run's plan: the approval is of exactly this text.
pub(super) fn record(d: &mut Decision, breakdown: Breakdown) {
    if let Some(plan) = d.status.plan.as_mut() {
        plan.text = truncate(&breakdown.to_markdown(), MAX_PLAN_CHARS);
    }
    d.status.breakdown = Some(breakdown);
}

/// Carries out an approved breakdown: creates the children whose dependencies succeeded,
/// mirrors every child in `status.children`, and finishes the run once nothing is left.
pub(super) fn coordinate(i: &Inputs<'_>, d: &mut Decision) {
    let Some(breakdown) = d.status.breakdown.clone() else {
        return;
    };
    let parent = i.run.name_any();
    let mut children = Vec::new();
    let (mut succeeded, mut active, mut unsuccessful) = (0, 0, Vec::new());
    for task in &breakdown.tasks {
        let name = child_name(&parent, &task.id);
        let phase_of = |id: &str| {
            let dep = child_name(&parent, id);
            i.children.iter().find(|c| c.name == dep).map(|c| c.phase)
        };
        let mut child = ChildRun {
            task: task.id.clone(),
            name: name.clone(),
            phase: None,
            message: None,
            pull_request: None,
            gate_ref: None,
        };
        match i.children.iter().find(|c| c.name == name) {
            Some(view) => {
                child.phase = Some(view.phase);
                child.message = view.message.as_deref().map(|m| truncate(m, 256));
                child.pull_request = view.pull_request.clone();
                child.gate_ref = view.gate_ref.clone();
                match view.phase {
                    RunPhase::Succeeded => succeeded += 1,
                    phase if phase.is_finished() => {
                        unsuccessful.push(format!("{} {phase:?}", task.id));
                    }
                    _ => active += 1,
                }
            }
            None => {
                let failed_dep = task
                    .depends_on
                    .iter()
                    .find(|dep| never_succeeds(&breakdown, i, &parent, dep));
                let waiting: Vec<&str> = task
                    .depends_on
                    .iter()
                    .filter(|dep| phase_of(dep) != Some(RunPhase::Succeeded))
                    .map(String::as_str)
                    .collect();
                if let Some(dep) = failed_dep {
                    unsuccessful.push(format!("{} not started", task.id));
                    child.message = Some(format!("not started: {dep} did not succeed"));
                } else if !waiting.is_empty() {
                    active += 1;
                    child.message = Some(format!("waiting for {}", waiting.join(", ")));
                } else if d.status.phase.is_finished() || i.run.spec.cancel_requested {
                    unsuccessful.push(format!("{} not started", task.id));
                } else {
                    active += 1;
                    child.message = Some("starting".into());
                    d.actions.push(Action::CreateChild {
                        task: task.id.clone(),
                    });
                }
            }
        }
        children.push(child);
    }
    d.status.children = children;
    let total = breakdown.tasks.len();
    if active == 0 {
        if succeeded == total {
            finish(
                d,
                RunPhase::Succeeded,
                format!("All {total} sub-tasks succeeded"),
                i.now,
            );
        } else {
            finish(
                d,
                RunPhase::Failed,
                format!(
                    "{succeeded} of {total} sub-tasks succeeded; {}",
                    unsuccessful.join(", ")
                ),
                i.now,
            );
        }
        return;
    }
    d.status.phase = RunPhase::Coordinating;
    d.status.message = Some(format!(
        "{succeeded} of {total} sub-tasks succeeded; {active} in progress or waiting"
    ));
    // Children nudge their parent when they change; this is the fallback.
    d.requeue = Some(i.settings.wait_requeue);
}

/// Whether sub-task `id` will never succeed: its run finished unsuccessfully, or it was never
/// created and one of its own dependencies will never succeed.
fn never_succeeds(breakdown: &Breakdown, i: &Inputs<'_>, parent: &str, id: &str) -> bool {
    let name = child_name(parent, id);
    match i.children.iter().find(|c| c.name == name) {
        Some(child) => child.phase.is_finished() && child.phase != RunPhase::Succeeded,
        None => breakdown
            .tasks
            .iter()
            .find(|t| t.id == id)
            .is_some_and(|task| {
                task.depends_on
                    .iter()
                    .any(|dep| never_succeeds(breakdown, i, parent, dep))
            }),
    }
}

/// Whether `parent`, the parent of a child run, was cancelled or asked to be: the child then
/// stops too (the controller never writes a run's spec).
pub fn parent_cancelled(parent: &AgentRun) -> bool {
    parent.spec.cancel_requested
        || parent
            .status
            .as_ref()
            .is_some_and(|s| s.phase == RunPhase::Cancelled)
}
