//! AgentRun reconciliation: one locked-down pod per attempt, retries with provider fallback,
//! timeouts, cancellation, capacity queueing and TTL.
//!
//! [`decide`](decide::decide) is the pure state machine; this module observes (the run, its
//! Agent and Project, its pods, its ApprovalGate, the admission ledger), calls it, and
//! applies the result: children and GitHub side effects first (idempotently: deterministic
//! names, pull requests found by branch, the progress comment found by its marker), then
//! status through the status subresource with server-side apply, then Events.

pub mod capacity;
pub mod decide;
pub mod github;
pub mod report;
pub mod resources;
pub mod routing;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use countersign_crds::agent_run::{TokenKind, Usage};
use countersign_crds::progress::{
    Milestone, MilestoneLog, PROGRESS_KEY, PROGRESS_LABEL, progress_name,
};
use countersign_crds::result::AgentResult;
use countersign_crds::task_file;
use countersign_crds::usage::{UsageLedger, day_of};
use countersign_crds::{Agent, AgentRun, ApprovalGate, Project};
use countersign_github::tokens::MintError;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use self::capacity::{Admission, Limits};
use self::decide::{Action, Blocker, Decision, Inputs, PodState, PodView, decide, wants_admission};
use self::report::RunFacts;
use self::resources::{AttemptSpec, AttemptTokens, RUN_LABEL, attempt_name};
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};

/// What the AgentRun reconciler shares besides the [`Context`].
pub struct RunContext {
    ctx: Arc<Context>,
    runs: Store<AgentRun>,
    /// The gates as the watch that triggers runs on gate changes left them: a reconcile
    /// that a gate's change triggered sees that change here. (The shared gates cache is
    /// another watch's store, which may not have it yet: a run then missed its gate's merge
    /// until the next resync.)
    gates: Store<ApprovalGate>,
    recorder: Recorder,
    /// Observation-mode runs' progress notes (ConfigMaps the gateway writes), as the watch
    /// that triggers their runs left them.
    progress: Store<ConfigMap>,
    /// Parents to look at again because one of their children changed.
    nudge: tokio::sync::mpsc::UnboundedSender<ObjectRef<AgentRun>>,
}

/// An API handle for `K` in the controller's scope (one namespace or all).
pub(crate) fn scoped<K>(ctx: &Context) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    }
}

/// Runs the AgentRun controller until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    // The runs cache other reconcilers read is this watch's store.
    let Some(writer) = ctx.caches.runs.take_writer() else {
        tracing::error!("the AgentRun controller runs once per context");
        return;
    };
    let stream = watcher(scoped::<AgentRun>(&ctx), watcher::Config::default())
        .default_backoff()
        .modify(crate::cache::trim)
        .reflect(writer)
        .applied_objects();
    let controller = Controller::for_stream(stream, ctx.caches.runs.store()).with_config(
        kube::runtime::controller::Config::default().concurrency(crate::settings::RUN_CONCURRENCY),
    );
    let runs = controller.store();
    let by_agent = runs.clone();
    let resync = tokio_stream_interval(ctx.settings.resync_interval);
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    let sweep = sweep::sweep_orphans(ctx.clone(), runs.clone());
    let gauges = capacity_gauges(ctx.clone(), runs.clone());
    // Gate changes reach their run through this watch, whose store the reconcile reads the
    // gate's phase from: updated before the trigger, so the two always agree.
    let (gates, gates_writer) = kube::runtime::reflector::store::<ApprovalGate>();
    let gate_changes = watcher(scoped::<ApprovalGate>(&ctx), watcher::Config::default())
        .default_backoff()
        .modify(crate::cache::trim)
        .reflect(gates_writer)
        .applied_objects();
    // A progress note the gateway recorded re-renders its run's progress comment.
    let (progress, progress_writer) = kube::runtime::reflector::store::<ConfigMap>();
    let progress_changes = watcher(
        scoped::<ConfigMap>(&ctx),
        watcher::Config::default().labels(PROGRESS_LABEL),
    )
    .default_backoff()
    .modify(crate::cache::trim)
    .reflect(progress_writer)
    .applied_objects();
    let (nudge, nudged) = tokio::sync::mpsc::unbounded_channel();
    let run_ctx = Arc::new(RunContext {
        ctx: ctx.clone(),
        runs,
        gates,
        recorder,
        progress,
        nudge,
    });
    let nudged = futures::stream::unfold(nudged, |mut rx| async move {
        rx.recv().await.map(|parent| (parent, rx))
    });
    // A pod's change reaches its run through its owner reference: its metadata is all the
    // trigger needs (the pod itself is read from the trimmed cache).
    let pod_changes = watcher(
        scoped::<kube::core::PartialObjectMeta<Pod>>(&ctx),
        watcher::Config::default().labels(RUN_LABEL),
    )
    .default_backoff()
    .touched_objects();
    let reconciling = controller
        .owns_stream(pod_changes)
        // A fixed Secret or a resumed Agent lets waiting runs start: look at its runs again.
        .watches(
            scoped::<Agent>(&ctx),
            watcher::Config::default(),
            move |agent| {
                let (ns, name) = (agent.namespace(), agent.name_any());
                by_agent
                    .state()
                    .into_iter()
                    // Runs of this Agent, and runs waiting to be routed (a new or resumed
                    // Agent may be the one they wait for).
                    .filter(|r| {
                        r.namespace() == ns
                            && !is_finished(r)
                            && r.agent_name().is_none_or(|a| a == name)
                    })
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        )
        // A merged or closed pull request finishes its run.
        .watches_stream(
            gate_changes,
            // The gate names its run: no scan of every run per gate event.
            move |gate| {
                let ns = gate.namespace().unwrap_or_default();
                gate.spec
                    .agent_run_ref
                    .as_ref()
                    .map(|r| ObjectRef::<AgentRun>::new(&r.name).within(&ns))
            },
        )
        // The notes name their run as owner.
        .watches_stream(progress_changes, |map| {
            let ns = map.namespace().unwrap_or_default();
            map.owner_references()
                .iter()
                .find(|o| o.kind == "AgentRun")
                .map(|o| ObjectRef::<AgentRun>::new(&o.name).within(&ns))
        })
        // A child's change reaches its parent (which mirrors it and starts the next ones).
        .reconcile_on(nudged)
        .reconcile_all_on(resync)
        .run(reconcile, error_policy, run_ctx)
        .for_each(move |result| {
            crate::backoff::reset_on_success(&ctx.error_backoff, &result);
            if let Err(err) = result {
                tracing::debug!(error = %err, "agent run reconcile did not complete");
            }
            async {}
        });
    tokio::join!(reconciling, sweep, gauges);
}

/// Keeps the queued and running gauges current, once a second: counting looks at every run,
/// too much to do at the end of every reconcile with thousands of runs.
async fn capacity_gauges(ctx: Arc<Context>, runs: kube::runtime::reflector::Store<AgentRun>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (running, queued) = ctx.ledger.counts(&runs.state());
        ctx.metrics.set_capacity(queued, running);
    }
}

/// A stream that ticks every `period` (skipping the immediate first tick).
pub(crate) fn tokio_stream_interval(
    period: Duration,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let period = period.max(Duration::from_secs(1));
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        |mut tick| async {
            tick.tick().await;
            Some(((), tick))
        },
    )
}

fn is_finished(run: &AgentRun) -> bool {
    run.status.as_ref().is_some_and(|s| s.phase.is_finished())
}

fn error_policy(run: Arc<AgentRun>, err: &Error, rc: Arc<RunContext>) -> Requeue {
    rc.ctx
        .metrics
        .reconcile_failed("AgentRun", err.metric_label());
    let wait = rc
        .ctx
        .error_backoff
        .next(&crate::backoff::key(run.as_ref()), err);
    tracing::warn!(run = %run.name_any(), namespace = ?run.namespace(), error = %err, retry_in = ?wait, "agent run reconcile failed");
    Requeue::requeue(wait)
}

#[tracing::instrument(skip_all, fields(kind = "AgentRun", namespace = run.namespace().unwrap_or_default(), name = run.name_any()))]
async fn reconcile(run: Arc<AgentRun>, rc: Arc<RunContext>) -> Result<Requeue> {
    let ctx = &rc.ctx;
    let _timer = ctx.metrics.reconcile("AgentRun");
    let ns = run.namespace().unwrap_or_default();
    if run.metadata.deletion_timestamp.is_some() {
        ctx.ledger.release(&run.uid().unwrap_or_default());
        ctx.caches.own_runs.forget(&run.uid().unwrap_or_default());
        return Ok(Requeue::await_change());
    }
    // A pod's event can trigger this reconcile before the watch shows our last status write.
    let run = ctx.caches.own_runs.newest(run);
    // A finished run only waits for its TTL: nothing else needs reading. The rest comes from
    // the watch caches, filled before the first decision.
    let finished = is_finished(&run);
    if !finished && (ctx.caches.ready().await.is_err() || ctx.claims.ready().await.is_err()) {
        return Ok(Requeue::requeue(std::time::Duration::from_secs(5)));
    }
    let (agent, project, pods) = if finished {
        (None, None, Vec::new())
    } else {
        let agent = run.agent_name().and_then(|a| ctx.caches.agents.get(&ns, a));
        let project = ctx.claims.project(&ns, &run.spec.project_ref.name);
        let mut pods = cached_pods(ctx, &run);
        // The cache may not show a pod created moments ago: before the open attempt's pod
        // counts as gone, the API is asked.
        let open = run
            .status
            .as_ref()
            .and_then(|s| s.attempts.last())
            .filter(|a| a.outcome.is_none())
            .map(|a| a.number);
        if let Some(number) = open
            && !pods.iter().any(|p| p.attempt == number)
        {
            pods = owned_pods(ctx, &run).await?;
        }
        (
            agent.map(|a| (*a).clone()),
            project.map(|p| (*p).clone()),
            pods,
        )
    };
    // Blockers only stop a first attempt; retries reuse what the first attempt had.
    let waiting = wants_admission(&run, &pods)
        || decide::guidance::answered_question_waits(&run, &pods, jiff::Timestamp::now());
    // A run given capabilities is routed as it is admitted: the choice is tried on a copy
    // and kept only if the run starts.
    let unrouted = Arc::clone(&run);
    let mut route = None;
    let (run, agent) = if waiting && run.agent_name().is_none() {
        let candidates = routing::candidates(
            ctx.caches
                .agents
                .state()
                .iter()
                .filter(|a| a.namespace().as_deref() == Some(ns.as_str()))
                .map(|a| a.as_ref()),
            &run.spec.capabilities,
        );
        let chosen = ctx.ledger.route(&run, &rc.runs.state(), &candidates);
        let routed = match &chosen {
            routing::Route::To { agent, reason } => ctx
                .caches
                .agents
                .get(&ns, agent)
                .map(|a| (with_routing(&run, agent, reason, jiff::Timestamp::now()), a)),
            _ => None,
        };
        route = Some(chosen);
        match routed {
            Some((routed, agent)) => (routed, Some((*agent).clone())),
            None => (run, None),
        }
    } else if !finished && run.agent_name().is_none() {
        // Routed, its pod created, but the status write that recorded the choice was lost:
        // the pod's label says which Agent it runs as.
        match recovered_route(ctx, &ns, &pods) {
            Some((name, agent)) => {
                let reason = "recovered from the label of the run's pod";
                (
                    with_routing(&run, &name, reason, jiff::Timestamp::now()),
                    Some(agent),
                )
            }
            None => (run, agent),
        }
    } else {
        (run, agent)
    };
    let blocker = match &route {
        Some(routing::Route::NoCandidate(why)) => Some(Blocker::NoCapableAgent(why.clone())),
        Some(routing::Route::Wait(_)) => None,
        _ if waiting => blocker(ctx, &run, agent.as_ref(), project.as_ref()).await?,
        _ => None,
    };
    // A follow-up works on the pull request of the run it follows up on.
    let follow_up = match &run.spec.follow_up_of {
        Some(origin) if !finished => rc
            .runs
            .get(&ObjectRef::new(&origin.name).within(&ns))
            .and_then(|o| {
                let status = o.status.as_ref()?;
                Some(decide::FollowUpTarget {
                    branch: status.branch.clone()?,
                    pull_request: status.pull_request.clone()?,
                })
            }),
        _ => None,
    };
    // Computed before admission, so a follow-up without a target never takes a slot.
    let blocker = match (&run.spec.follow_up_of, &follow_up, blocker) {
        (Some(origin), None, None) if waiting && !finished => {
            Some(Blocker::NoFollowUpTarget(format!(
                "the run it follows up on, {}, is gone or has no pull request",
                origin.name
            )))
        }
        (_, _, blocker) => blocker,
    };
    let gate = match run.status.as_ref().and_then(|s| s.gate_ref.as_ref()) {
        // The shared cache stands in until this watch has listed.
        Some(gate_ref) if !finished => rc
            .gates
            .get(&ObjectRef::new(&gate_ref.name).within(&ns))
            .or_else(|| ctx.caches.gates.get(&ns, &gate_ref.name))
            .and_then(|g| g.status.as_ref().map(|s| s.phase)),
        _ => None,
    };
    let now = jiff::Timestamp::now();
    // What the provider gateway counted: each attempt's usage and the Project's spend today.
    let usage_ledger = match &project {
        Some(project) if !finished => ctx.caches.ledger(&ns, &project.name_any()),
        _ => None,
    };
    let gateway_usage = usage_ledger
        .as_ref()
        .map(|l| attempts_usage(l, &run))
        .unwrap_or_default();
    let admission = match (&blocker, &agent, &project) {
        (None, Some(agent), Some(project)) if waiting => {
            let spent = usage_ledger
                .as_ref()
                .map(|l| l.spend_on(&day_of(&now)).cost())
                .unwrap_or_default();
            let limits = Limits {
                agent_max: agent.spec.max_concurrent_runs,
                project_max: project.spec.limits.max_concurrent_runs,
                project_per_day: project.spec.limits.max_runs_per_day,
                spend_today: project
                    .spec
                    .limits
                    .max_spend_per_day
                    .map(|max| (spent, max)),
                today: capacity::DayCount::today(project.status.as_ref(), now),
            };
            Some(ctx.ledger.admit(&run, &rc.runs.state(), &limits, now))
        }
        (None, _, _) if waiting => match &route {
            Some(routing::Route::Wait(why)) => Some(Admission::Wait(why.clone())),
            _ => None,
        },
        _ => None,
    };
    // The Agents a breakdown may name, and the children of a run carrying one out.
    let mapped_agents: Vec<String> = project
        .as_ref()
        .map(|p| {
            p.spec
                .triggers
                .mapped_agents()
                .into_iter()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let has_breakdown = run.status.as_ref().is_some_and(|s| s.breakdown.is_some());
    let children: Vec<decide::ChildView> = if has_breakdown && !finished {
        rc.runs
            .state()
            .iter()
            .filter_map(|r| decide::ChildView::of(r, &run))
            .collect()
    } else {
        Vec::new()
    };
    // A child stops with its parent.
    let parent_cancelled = match &run.spec.parent_ref {
        Some(parent) if !finished => rc
            .runs
            .get(&ObjectRef::new(&parent.name).within(&ns))
            .is_some_and(|p| decide::children::parent_cancelled(&p)),
        _ => false,
    };
    let mut inputs = Inputs {
        run: &run,
        agent: agent.as_ref(),
        blocker,
        admission: admission.clone(),
        pods: &pods,
        now,
        settings: &ctx.settings,
        can_open_pull_requests: ctx.github.is_some(),
        gate,
        gateway_usage: &gateway_usage,
        mapped_agents: &mapped_agents,
        children: &children,
        parent_cancelled,
        follow_up: follow_up.as_ref(),
        within_depth: ancestors(&rc.runs, &run)
            < project
                .as_ref()
                .map_or(1, |p| p.spec.limits.max_breakdown_depth),
    };
    let mut decision = decide(&inputs);
    let starts = |d: &Decision| {
        d.actions
            .iter()
            .any(|a| matches!(a, Action::StartAttempt { .. }))
    };
    if let Some(Admission::Admit) = admission
        && !starts(&decision)
    {
        ctx.ledger.release(&run.uid().unwrap_or_default());
    }
    // The day's count in the Project's status takes the run before its pod exists.
    if let (Some(Admission::Admit), Some(project)) = (&admission, &project)
        && starts(&decision)
    {
        let uid = run.uid().unwrap_or_default();
        let counted = crate::project::count_admission(ctx, project, &uid, &rc.runs.state(), now)
            .await
            .inspect_err(|_| ctx.ledger.release(&uid))?;
        if let capacity::DayAdmission::Full(reason) = counted {
            ctx.ledger.release(&uid);
            inputs.admission = Some(Admission::Wait(reason));
            decision = decide(&inputs);
        }
    }

    // The routing choice stands once the run starts; otherwise it is made again next time.
    let run = match &route {
        Some(routing::Route::To { agent, reason }) if starts(&decision) => {
            decision.notes.push(decide::Note {
                warning: false,
                reason: "Routed",
                message: decide::truncate(&format!("routed to Agent {agent}: {reason}"), 1024),
            });
            Arc::clone(&run)
        }
        Some(_) => {
            decision.status.routing = None;
            unrouted
        }
        None => Arc::clone(&run),
    };

    let result = last_result(&decision, &pods);
    apply_actions(
        ctx,
        &run,
        agent.as_ref(),
        project.as_ref(),
        &mut decision,
        result.as_ref(),
        &inputs,
    )
    .await?;
    // A pull request opened (and its gate created, Pending) in this pass: decide again from
    // the status that left, so the run reaches PullRequestOpen in this same status write,
    // with its event and conditions, instead of in a second write on the next pass.
    if decision.actions.contains(&Action::OpenPullRequest) && decision.status.pull_request.is_some()
    {
        let mut opened = (*run).clone();
        opened.status = Some(decision.status.clone());
        let again = decide(&Inputs {
            run: &opened,
            blocker: None,
            admission: None,
            gate: Some(countersign_crds::GatePhase::Pending),
            ..inputs
        });
        if again.actions.is_empty() {
            decision.notes.extend(again.notes);
            decision.status = again.status;
            decision.requeue = again.requeue;
        }
    }
    if decision.actions.contains(&Action::DeleteRun) {
        return Ok(Requeue::await_change());
    }
    if let (Some(agent), Some(project)) = (&agent, &project) {
        let milestones = milestones_of(&rc.progress, &run, &decision.status);
        publish_progress(
            ctx,
            &run,
            agent,
            project,
            &mut decision,
            result.as_ref(),
            &milestones,
        )
        .await?;
    }
    let changed = run.status.as_ref() != Some(&decision.status);
    write_status(ctx, &run, &decision).await?;
    publish_notes(&rc, &run, &decision).await;
    if changed && let Some(parent) = &run.spec.parent_ref {
        let _ = rc.nudge.send(ObjectRef::new(&parent.name).within(&ns));
    }
    // A cancelled parent's children stop too: they look at it again now.
    if changed && decision.status.phase == countersign_crds::RunPhase::Cancelled {
        for child in &decision.status.children {
            let _ = rc.nudge.send(ObjectRef::new(&child.name).within(&ns));
        }
    }

    let now_finished = decision.status.phase.is_finished();
    if !capacity::holds_capacity(decision.status.phase) {
        ctx.ledger.release(&run.uid().unwrap_or_default());
    }
    if now_finished && !finished {
        ctx.metrics.run_finished(phase_label(decision.status.phase));
    }
    Ok(decision
        .requeue
        .map_or_else(Requeue::await_change, Requeue::requeue))
}

/// The Agent a routed run's pods run as, when the run's status lost it.
fn recovered_route(ctx: &Context, ns: &str, pods: &[PodView]) -> Option<(String, Agent)> {
    let label = pods.iter().find_map(|p| p.agent.as_deref())?;
    ctx.caches
        .agents
        .state()
        .iter()
        .filter(|a| a.namespace().as_deref() == Some(ns))
        .find(|a| resources::label_value(&a.name_any()) == label)
        .map(|a| (a.name_any(), (**a).clone()))
}

/// `run` with the routing choice in its status.
fn with_routing(run: &AgentRun, agent: &str, reason: &str, now: jiff::Timestamp) -> Arc<AgentRun> {
    let mut routed = run.clone();
    routed.status.get_or_insert_with(Default::default).routing =
        Some(countersign_crds::agent_run::Routing {
            agent: agent.to_owned(),
            reason: reason.to_owned(),
            time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
        });
    Arc::new(routed)
}

fn phase_label(phase: countersign_crds::RunPhase) -> &'static str {
    use countersign_crds::RunPhase::*;
    match phase {
        Succeeded => "Succeeded",
        Failed => "Failed",
        Cancelled => "Cancelled",
        TimedOut => "TimedOut",
        _ => "Other",
    }
}

/// The run's pods as the cache shows them: labelled with its name and owned by this very
/// run (not a namesake).
fn cached_pods(ctx: &Context, run: &AgentRun) -> Vec<PodView> {
    let ns = run.namespace().unwrap_or_default();
    let label = resources::label_value(&run.name_any());
    let uid = run.uid();
    // Looked up by name, not by scanning every cached pod: an attempt's pod is named after
    // the run and its number, so the run's pods are those of its recorded attempts and the
    // one after them (started by a pass whose status write was lost).
    let attempts = run
        .status
        .as_ref()
        .map(|s| s.attempts.as_slice())
        .unwrap_or_default();
    let next = attempts.iter().map(|a| a.number).max().unwrap_or(0) + 1;
    let mut names: Vec<String> = attempts.iter().map(|a| a.pod.clone()).collect();
    names.push(resources::attempt_name(&run.name_any(), next));
    names.sort();
    names.dedup();
    names
        .iter()
        .filter_map(|name| ctx.caches.pods.get(&ns, name))
        .filter(|p| p.labels().get(RUN_LABEL) == Some(&label))
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(|p| PodView::of(&p))
        .collect()
}

/// The run's pods read from the API: labelled with its name and owned by this very run
/// (not a namesake).
async fn owned_pods(ctx: &Context, run: &AgentRun) -> Result<Vec<PodView>> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let selector = format!("{RUN_LABEL}={}", resources::label_value(&run.name_any()));
    let uid = run.uid();
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .filter_map(PodView::of)
        .collect())
}

/// This run's attempts' usage in the ledger, by attempt number (entries of an earlier run
/// of the same name are not this run's).
fn attempts_usage(ledger: &UsageLedger, run: &AgentRun) -> BTreeMap<u32, Usage> {
    let ns = run.namespace().unwrap_or_default();
    let uid = run.uid().unwrap_or_default();
    let prefix = format!("{ns}/{}/", run.name_any());
    ledger
        .attempts
        .iter()
        .filter(|(_, a)| a.run_uid == uid)
        .filter_map(|(key, a)| {
            let number = key.strip_prefix(&prefix)?.parse().ok()?;
            Some((number, a.spend.usage()))
        })
        .collect()
}

/// Finds what stops the run from starting, if anything. Only looked at before the first
/// attempt; later attempts reuse what the first one had.
async fn blocker(
    ctx: &Context,
    run: &AgentRun,
    agent: Option<&Agent>,
    project: Option<&Project>,
) -> Result<Option<Blocker>> {
    let Some(agent) = agent else {
        return Ok(Some(Blocker::AgentMissing));
    };
    if project.is_none() {
        return Ok(Some(Blocker::ProjectMissing));
    }
    if agent.spec.suspend {
        return Ok(Some(Blocker::AgentNotReady(format!(
            "Agent {} is suspended",
            agent.name_any()
        ))));
    }
    if let Some(provider) = agent
        .spec
        .providers
        .iter()
        .find(|p| p.command.as_ref().is_some_and(|c| !c.env.is_empty()))
    {
        return Ok(Some(Blocker::AgentNotReady(format!(
            "provider {} of Agent {} sets command.env, which is no longer supported: values \
             from Secrets never reach agent pods; give its upstream in baseUrl, \
             apiKeySecretRef and command.api instead (the provider gateway holds the key)",
            provider.name,
            agent.name_any()
        ))));
    }
    if ctx.settings.gateway.is_none() {
        return Ok(Some(Blocker::NoCredentials(
            "no provider gateway is configured for the controller (--gateway-url), so the \
             agent cannot reach a model"
                .into(),
        )));
    }
    if let Some(missing) = missing_secret(ctx, run, agent).await? {
        return Ok(Some(Blocker::AgentNotReady(missing)));
    }
    if let Some(project) = project
        && let Some((reason, message)) = github::repository_problem(ctx, project).await?
    {
        return Ok(Some(Blocker::Repository { reason, message }));
    }
    if !ctx.minter.is_configured() {
        return Ok(Some(Blocker::NoCredentials(
            "no GitHub credentials are configured for the controller, so the agent cannot clone the repository".into(),
        )));
    }
    Ok(None)
}

/// The first Secret key an Agent's providers need that does not exist, described for people.
pub(crate) async fn missing_secret(
    ctx: &Context,
    run_or_agent: &impl ResourceExt,
    agent: &Agent,
) -> Result<Option<String>> {
    let secrets = Api::<Secret>::namespaced(
        ctx.client.clone(),
        &run_or_agent.namespace().unwrap_or_default(),
    );
    let mut refs = Vec::new();
    for provider in &agent.spec.providers {
        refs.extend(provider.api_key_secret_ref.clone());
        for var in provider.command.iter().flat_map(|c| c.env.iter()) {
            refs.push(var.secret_key_ref.clone());
        }
    }
    let ns = run_or_agent.namespace().unwrap_or_default();
    for secret_ref in refs {
        let keys = match ctx.caches.secret_keys.get(&ns, &secret_ref.name) {
            Some(keys) => keys,
            None => {
                let keys = match secrets.get_opt(&secret_ref.name).await {
                    Ok(found) => found.map(|s| crate::cache::secret_keys(&s)),
                    // Missing RBAC is a problem for a person, not an error to retry every
                    // second: the chart grants Secrets only in the namespaces it lists
                    // (controller.agentNamespaces).
                    Err(kube::Error::Api(status)) if status.code == 403 => {
                        return Ok(Some(format!(
                            "the controller may not read Secrets in namespace {ns:?} (Kubernetes \
                             RBAC), so it cannot check Secret {:?} needed by Agent {}; add the \
                             namespace to the chart's controller.agentNamespaces",
                            secret_ref.name,
                            agent.name_any()
                        )));
                    }
                    Err(err) => return Err(err.into()),
                };
                ctx.caches
                    .secret_keys
                    .remember(&ns, &secret_ref.name, keys.clone());
                keys
            }
        };
        let has_key = keys.as_ref().is_some_and(|k| k.contains(&secret_ref.key));
        if !has_key {
            let what = if keys.is_some() {
                "has no key"
            } else {
                "is missing; expected key"
            };
            return Ok(Some(format!(
                "Secret {:?} {what} {:?} (needed by Agent {})",
                secret_ref.name,
                secret_ref.key,
                agent.name_any()
            )));
        }
    }
    Ok(None)
}

/// The result of the run's last attempt, read from its pod's termination message while
/// the pod exists.
fn last_result(decision: &Decision, pods: &[PodView]) -> Option<AgentResult> {
    let last = decision.status.attempts.last()?;
    pods.iter()
        .filter(|p| p.attempt == last.number)
        .find_map(|p| match &p.state {
            PodState::Terminated { message, .. } => AgentResult::parse(message).ok(),
            PodState::Active => None,
        })
}

/// The progress notes of the run's latest attempt, from the ConfigMap the gateway keeps (an
/// unreadable one, or one owned by an earlier run of the same name, counts as none).
fn milestones_of(
    progress: &Store<ConfigMap>,
    run: &AgentRun,
    status: &countersign_crds::AgentRunStatus,
) -> Vec<Milestone> {
    let Some(attempt) = status.attempts.last().map(|a| a.number) else {
        return Vec::new();
    };
    let ns = run.namespace().unwrap_or_default();
    let key = ObjectRef::new(&progress_name(&run.name_any())).within(&ns);
    let Some(map) = progress.get(&key) else {
        return Vec::new();
    };
    let ours = map
        .owner_references()
        .iter()
        .any(|o| o.kind == "AgentRun" && Some(&o.uid) == run.metadata.uid.as_ref());
    let log = map
        .data
        .as_ref()
        .and_then(|d| d.get(PROGRESS_KEY))
        .and_then(|text| MilestoneLog::parse(text).ok());
    match log {
        Some(log) if ours => log.of_attempt(attempt).cloned().collect(),
        _ => Vec::new(),
    }
}

/// What the PR body and progress comment are rendered from.
fn facts<'a>(
    run: &'a AgentRun,
    agent: &'a Agent,
    status: &'a countersign_crds::AgentRunStatus,
    result: Option<&'a AgentResult>,
    milestones: &'a [Milestone],
) -> RunFacts<'a> {
    let provider = status.attempts.last().map(|a| a.provider.as_str());
    RunFacts {
        run,
        status,
        agent: run.agent_name().unwrap_or_default(),
        mode: decide::run_mode(run, Some(agent)),
        model: agent
            .spec
            .providers
            .iter()
            .find(|p| Some(p.name.as_str()) == provider)
            .and_then(|p| p.model.as_deref()),
        result,
        milestones,
    }
}

/// Brings the issue's progress comment up to date before the status is written. A transient
/// GitHub failure fails the reconcile (nothing is written, so the next one renders the same
/// comment again); a refusal (no permission, issue gone) is logged and does not stop the run.
async fn publish_progress(
    ctx: &Context,
    run: &AgentRun,
    agent: &Agent,
    project: &Project,
    decision: &mut Decision,
    result: Option<&AgentResult>,
    milestones: &[Milestone],
) -> Result<()> {
    if run.spec.task.issue_number.is_none() {
        return Ok(());
    }
    let Some(github) = github::installation(ctx, project).await? else {
        return Ok(());
    };
    let updated = {
        let facts = facts(run, agent, &decision.status, result, milestones);
        github::update_progress(&github, project, &facts).await
    };
    match updated {
        Ok(comment) => decision.status.progress_comment = comment,
        Err(Error::GitHub(e)) if !e.is_transient() => {
            tracing::warn!(error = %e, "cannot update the run's progress comment; carrying on");
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

async fn apply_actions(
    ctx: &Context,
    run: &AgentRun,
    agent: Option<&Agent>,
    project: Option<&Project>,
    decision: &mut Decision,
    result: Option<&AgentResult>,
    inputs: &Inputs<'_>,
) -> Result<()> {
    let ns = run.namespace().unwrap_or_default();
    for action in decision.actions.clone() {
        match &action {
            Action::StartAttempt { number, provider } => {
                let (Some(agent), Some(project)) = (agent, project) else {
                    continue;
                };
                let approved_plan = decide::approved_plan(&decision.status).map(|p| p.text.clone());
                let spec = AttemptSpec {
                    run,
                    agent,
                    project,
                    number: *number,
                    provider: *provider,
                    settings: &ctx.settings,
                    commit_author: github::commit_author(ctx, project).await?,
                    approved_plan,
                    follow_up_branch: inputs.follow_up.map(|f| f.branch.clone()),
                    guidance: decide::guidance::for_task(
                        &decision.status,
                        decide::run_mode(run, Some(agent)),
                    ),
                    breakdown: decide::breaks_down(run, Some(agent), inputs.within_depth),
                };
                start_attempt(ctx, &ns, project, &spec).await?;
            }
            Action::OpenPullRequest => {
                let (Some(agent), Some(project)) = (agent, project) else {
                    continue;
                };
                let Some(client) = github::installation(ctx, project).await? else {
                    continue;
                };
                let opened = {
                    let facts = facts(run, agent, &decision.status, result, &[]);
                    github::open_pull_request(ctx, &client, project, &facts).await?
                };
                let status = &mut decision.status;
                status.pull_request = Some(github::pull_request_ref(&opened));
                status.gate_ref = Some(countersign_crds::LocalRef::new(
                    countersign_crds::names::gate_name(&project.name_any(), opened.number),
                ));
                // `reconcile` decides again from this status: the run moves to
                // PullRequestOpen in the same write, with its event and conditions.
                status.message = Some(format!("Opened pull request #{}", opened.number));
                create_follow_ups(ctx, run, project, opened.number).await?;
            }
            Action::DeletePods(names) => {
                let pods = Api::<Pod>::namespaced(ctx.client.clone(), &ns);
                for name in names {
                    ignore_not_found(
                        pods.delete(name, &DeleteParams::background())
                            .await
                            .map(drop),
                    )?;
                }
            }
            Action::RevokeTokens { number, tokens } => {
                if !revoke_tokens(ctx, &ns, run, *number, tokens, decision).await? {
                    // A revocation failed: look again soon.
                    decision.requeue = Some(
                        decision
                            .requeue
                            .map_or(REVOKE_RETRY, |r| r.min(REVOKE_RETRY)),
                    );
                }
            }
            Action::CreateChild { task } => {
                create_child(ctx, run, &decision.status, task).await?;
            }
            Action::PostFindings {
                pull_request,
                attempt,
                findings,
            } => {
                let Some(project) = project else {
                    continue;
                };
                let Some(client) = github::installation(ctx, project).await? else {
                    continue;
                };
                let posted = github::post_findings(
                    &client,
                    project,
                    run,
                    agent.map(ResourceExt::name_any).as_deref(),
                    *pull_request,
                    *attempt,
                    findings,
                )
                .await;
                match posted {
                    Ok(()) => {}
                    // A locked or deleted pull request: the findings stay in the status and
                    // the progress comment.
                    Err(Error::GitHub(e)) if !e.is_transient() => {
                        tracing::warn!(error = %e, pull_request, "cannot post the follow-up's findings");
                    }
                    Err(e) => return Err(e),
                }
            }
            Action::DeleteRun => {
                let runs = Api::<AgentRun>::namespaced(ctx.client.clone(), &ns);
                ignore_not_found(
                    runs.delete(&run.name_any(), &DeleteParams::background())
                        .await
                        .map(drop),
                )?;
                tracing::info!(run = %run.name_any(), "deleted finished run after its TTL");
            }
        }
    }
    Ok(())
}

/// How many parent runs are above `run` (0 for a run nobody broke down), following
/// `spec.parentRef` (immutable) through the watch's store. Stops counting past the deepest
/// allowed nesting; a parent missing from the store counts, so a gap never allows more.
fn ancestors(runs: &Store<AgentRun>, run: &AgentRun) -> u32 {
    let ns = run.namespace().unwrap_or_default();
    let mut depth = 0;
    let mut parent = run.spec.parent_ref.clone();
    while let Some(p) = parent {
        depth += 1;
        if depth > countersign_crds::project::MAX_BREAKDOWN_DEPTH {
            break;
        }
        parent = runs
            .get(&ObjectRef::new(&p.name).within(&ns))
            .and_then(|r| r.spec.parent_ref.clone());
    }
    depth
}

/// Creates the child run doing sub-task `task` of `parent`'s approved breakdown: the same
/// Project, issue and requesters (who still cannot approve its pull request), the sub-task's
/// title and instructions, owned by the parent. Already there (an earlier pass made it):
/// nothing to do.
async fn create_child(
    ctx: &Context,
    parent: &AgentRun,
    status: &countersign_crds::AgentRunStatus,
    task: &str,
) -> Result<()> {
    let Some(sub) = status
        .breakdown
        .as_ref()
        .and_then(|b| b.tasks.iter().find(|t| t.id == task))
    else {
        return Ok(());
    };
    let name = decide::children::child_name(&parent.name_any(), task);
    let mut spec = parent.spec.clone();
    spec.agent_ref = sub.agent.as_ref().map(countersign_crds::LocalRef::new);
    spec.capabilities = sub.capabilities.clone();
    spec.parent_ref = Some(countersign_crds::LocalRef::new(parent.name_any()));
    spec.mode = None;
    spec.task.title = sub.title.clone();
    spec.task.instructions = Some(sub.instructions.clone()).filter(|i| !i.trim().is_empty());
    spec.task.source = countersign_crds::TaskSource::Breakdown;
    let issue = parent
        .labels()
        .get(countersign_crds::keys::ISSUE_LABEL)
        .cloned();
    create_derived_run(ctx, parent, &name, spec, issue).await
}

/// Creates run `name` for `origin` (one of its sub-tasks or follow-ups) with `spec`, owned
/// by `origin` and labelled with its Project, `issue` and the assignee. It never inherits a
/// cancellation or a request to break down. Already there (an earlier pass made it):
/// nothing to do.
async fn create_derived_run(
    ctx: &Context,
    origin: &AgentRun,
    name: &str,
    mut spec: countersign_crds::AgentRunSpec,
    issue: Option<String>,
) -> Result<()> {
    spec.cancel_requested = false;
    spec.breakdown = false;
    let source = spec.task.source;
    let mut labels = std::collections::BTreeMap::new();
    if let Some(project) = origin.labels().get(countersign_crds::keys::PROJECT_LABEL) {
        labels.insert(
            countersign_crds::keys::PROJECT_LABEL.to_owned(),
            project.clone(),
        );
    }
    if let Some(issue) = issue {
        labels.insert(countersign_crds::keys::ISSUE_LABEL.to_owned(), issue);
    }
    labels.insert(
        countersign_crds::keys::AGENT_LABEL.to_owned(),
        resources::label_value(&spec.assignee().key()),
    );
    let ns = origin.namespace().unwrap_or_default();
    let mut run = AgentRun::new(name, spec);
    run.metadata.namespace = Some(ns.clone());
    run.metadata.labels = Some(labels);
    run.metadata.owner_references = origin.controller_owner_ref(&()).map(|r| vec![r]);
    let runs = Api::<AgentRun>::namespaced(ctx.client.clone(), &ns);
    match runs.create(&PostParams::default(), &run).await {
        Ok(_) => {
            tracing::info!(origin = %origin.name_any(), run = %name, ?source, "created a run");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Starts the Project's follow-ups of `run`'s newly opened pull request `number`: one run
/// per rule, named `<run>-followup-<agent>`, owned by `run`, working on that pull request
/// (its progress comment goes there) for the same requesters. A follow-up's own runs never
/// start follow-ups, so follow-ups cannot loop. Already there: nothing to do.
async fn create_follow_ups(
    ctx: &Context,
    run: &AgentRun,
    project: &Project,
    number: u64,
) -> Result<()> {
    if run.spec.follow_up_of.is_some() {
        return Ok(());
    }
    let rules = project
        .spec
        .follow_ups
        .iter()
        .filter(|r| r.event == countersign_crds::project::FollowUpEvent::PullRequestOpened);
    for rule in rules {
        let name = countersign_crds::names::with_suffix(
            &run.name_any(),
            &format!("-followup-{}", rule.agent.name),
        );
        let mut spec = run.spec.clone();
        spec.agent_ref = Some(rule.agent.clone());
        spec.capabilities = Vec::new();
        spec.parent_ref = None;
        spec.follow_up_of = Some(countersign_crds::LocalRef::new(run.name_any()));
        spec.mode = rule.mode;
        spec.task.issue_number = Some(number);
        spec.task.title = decide::truncate(
            &format!(
                "Follow up on #{number}: {}",
                report::pull_request_title(run)
            ),
            256,
        );
        spec.task.instructions = Some(format!(
            "Another agent opened pull request #{number} for this task; its branch is checked \
             out. Review the change and add what it lacks (for example tests) as a change on \
             top of it, or change nothing and summarise your findings."
        ));
        spec.task.source = countersign_crds::TaskSource::FollowUp;
        create_derived_run(ctx, run, &name, spec, Some(number.to_string())).await?;
    }
    Ok(())
}

/// How soon a run whose token revocation failed is looked at again.
const REVOKE_RETRY: Duration = Duration::from_secs(10);

/// The lower-case hex SHA-256 of `token`: what the pod carries for the gateway.
fn token_hash(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh gateway token (32 random bytes).
fn new_gateway_token() -> Result<String> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| {
            Error::Token(MintError::Unavailable(
                "no randomness for a gateway token".into(),
            ))
        })?;
    Ok(countersign_crds::attempt::gateway_token_from(&bytes))
}

/// Creates the attempt's Secret, NetworkPolicy and Pod. Names are deterministic, so a
/// repeated call (after a lost status write or a restart) finds them and creates nothing new;
/// tokens minted for a Secret that already existed are revoked again at once.
async fn start_attempt(
    ctx: &Context,
    ns: &str,
    project: &Project,
    spec: &AttemptSpec<'_>,
) -> Result<()> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), ns);
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let name = attempt_name(&spec.run.name_any(), spec.number);
    if pods.get_opt(&name).await?.is_some() {
        return Ok(());
    }
    // Tokens only for a repository the Project owns, from the installation GitHub reports.
    if let Some((_, why)) = github::repository_problem(ctx, project).await? {
        return Err(Error::NotOwner(why));
    }
    let repo = github::repo_ref(project);
    // Fork mode pushes to the fork, with a token of the installation GitHub reports for it.
    let push_repo = match &project.spec.pull_requests.head_repository {
        Some(fork) => countersign_github::tokens::RepoRef {
            owner: fork.owner.clone(),
            name: fork.name.clone(),
            expected_installation: fork.installation.as_ref().map(|i| i.id),
        },
        None => repo.clone(),
    };
    let clone = ctx.minter.read_token(&repo).await.map_err(Error::Token)?;
    let push = ctx
        .minter
        .repo_token(&push_repo)
        .await
        .map_err(Error::Token)?;
    let gateway = new_gateway_token()?;
    let secret = spec.secret(&AttemptTokens {
        clone: clone.token.expose_secret(),
        push: push.token.expose_secret(),
        gateway: &gateway,
    });
    let gateway = if create_if_absent(&secrets, &secret).await? {
        gateway
    } else {
        // The Secret of an earlier try exists: its tokens are the attempt's; ours go.
        for token in [&clone.token, &push.token] {
            if let Err(error) = ctx.minter.revoke(token).await {
                tracing::warn!(%error, "cannot revoke an unused token; it expires within the hour");
            }
        }
        let existing = secrets.get(&name).await?;
        existing
            .data
            .as_ref()
            .and_then(|d| d.get(task_file::GATEWAY_TOKEN_KEY))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    create_if_absent(
        &Api::<NetworkPolicy>::namespaced(ctx.client.clone(), ns),
        &spec.network_policy(),
    )
    .await?;
    create_if_absent(&pods, &spec.pod(&token_hash(&gateway))).await?;
    tracing::info!(pod = %name, attempt = spec.number, "started agent attempt");
    Ok(())
}

/// Revokes an attempt's tokens of `kinds` (read back from its Secret), records them in the
/// decision's status, and deletes the Secret once no token in it is live. `false` when a
/// revocation failed (it is tried again later).
async fn revoke_tokens(
    ctx: &Context,
    ns: &str,
    run: &AgentRun,
    number: u32,
    kinds: &[TokenKind],
    decision: &mut Decision,
) -> Result<bool> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let name = attempt_name(&run.name_any(), number);
    let secret = secrets.get_opt(&name).await?;
    let mut done = Vec::new();
    let mut all_ok = true;
    for kind in kinds {
        let key = match kind {
            TokenKind::Clone => task_file::CLONE_TOKEN_KEY,
            TokenKind::Push => task_file::PUSH_TOKEN_KEY,
        };
        let token = secret
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get(key))
            .map(|b| SecretString::from(String::from_utf8_lossy(&b.0).into_owned()));
        let Some(token) = token else {
            // No Secret (or an attempt of an older agent): nothing left to revoke.
            done.push(*kind);
            continue;
        };
        match ctx.minter.revoke(&token).await {
            Ok(how) => {
                tracing::info!(attempt = number, token = ?kind, result = ?how, "revoked an attempt's token");
                done.push(*kind);
            }
            Err(error) => {
                tracing::warn!(attempt = number, token = ?kind, %error, "cannot revoke an attempt's token yet");
                all_ok = false;
            }
        }
    }
    let Some(attempt) = decision
        .status
        .attempts
        .iter_mut()
        .find(|a| a.number == number)
    else {
        return Ok(all_ok);
    };
    attempt.revoked_tokens.extend(done);
    attempt.revoked_tokens.sort();
    attempt.revoked_tokens.dedup();
    let all_revoked = [TokenKind::Clone, TokenKind::Push]
        .iter()
        .all(|k| attempt.revoked_tokens.contains(k));
    if all_revoked && secret.is_some() {
        ignore_not_found(
            secrets
                .delete(&name, &DeleteParams::background())
                .await
                .map(drop),
        )?;
    }
    Ok(all_ok)
}

/// Creates `obj`; `false` when it already existed.
async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<bool>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    match api
        .create(
            &PostParams {
                field_manager: Some(MANAGER.into()),
                ..PostParams::default()
            },
            obj,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err.into()),
    }
}

fn ignore_not_found(result: kube::Result<()>) -> Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => Ok(other?),
    }
}

async fn write_status(ctx: &Context, run: &AgentRun, decision: &Decision) -> Result<()> {
    if run.status.as_ref() == Some(&decision.status) {
        return Ok(());
    }
    let api = Api::<AgentRun>::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let patch = json!({
        "apiVersion": AgentRun::api_version(&()),
        "kind": AgentRun::kind(&()),
        "status": decision.status,
    });
    let written = api
        .patch_status(
            &run.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    ctx.caches.own_runs.wrote(run, written);
    if run.status.as_ref().map(|s| s.phase) != Some(decision.status.phase) {
        tracing::info!(phase = ?decision.status.phase, message = ?decision.status.message, "agent run changed phase");
    }
    Ok(())
}

async fn publish_notes(rc: &RunContext, run: &AgentRun, decision: &Decision) {
    let reference = run.object_ref(&());
    for note in &decision.notes {
        let event = Event {
            type_: if note.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: note.reason.into(),
            note: Some(note.message.clone()),
            action: "Reconcile".into(),
            secondary: None,
        };
        crate::events::publish(&rc.recorder, &reference, event).await;
    }
}
