//! Agent reconciliation: lifecycle phase (Created → Active ↔ Idle → Terminated), run counts,
//! and readiness (a provider Secret that does not exist makes the Agent not Ready, with the
//! Secret and key named, instead of letting runs crash).

use std::sync::Arc;

use countersign_crds::agent::{HistoryLimits, LastRun};
use countersign_crds::conditions::{self, Readiness};
use countersign_crds::{Agent, AgentPhase, AgentRun, AgentStatus, RunPhase};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::agent_run::capacity::holds_capacity;
use crate::agent_run::{missing_secret, scoped, tokio_stream_interval};
use crate::backoff;
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};

/// Runs the Agent controller until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    Controller::new(scoped::<Agent>(&ctx), watcher::Config::default())
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(crate::settings::SUMMARY_DEBOUNCE),
        )
        .watches(
            scoped::<AgentRun>(&ctx),
            watcher::Config::default(),
            |run| {
                let ns = run.namespace().unwrap_or_default();
                run.agent_name()
                    .map(|name| ObjectRef::<Agent>::new(name).within(&ns))
            },
        )
        .reconcile_all_on(tokio_stream_interval(ctx.settings.resync_interval))
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            backoff::reset_on_success(&ctx.error_backoff, &result);
            async {}
        })
        .await;
}

fn error_policy(agent: Arc<Agent>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed("Agent", err.metric_label());
    let wait = ctx.error_backoff.next(&backoff::key(agent.as_ref()), err);
    tracing::warn!(agent = %agent.name_any(), error = %err, retry_in = ?wait, "agent reconcile failed");
    Action::requeue(wait)
}

#[tracing::instrument(skip_all, fields(kind = "Agent", namespace = agent.namespace().unwrap_or_default(), name = agent.name_any()))]
async fn reconcile(agent: Arc<Agent>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("Agent");
    let ns = agent.namespace().unwrap_or_default();
    if ctx.caches.runs.ready().await.is_err() {
        return Ok(Action::requeue(ctx.settings.wait_requeue));
    }
    // The Agent's runs, from the cache the AgentRun controller fills (a run deleted moments
    // ago may still be there: deleting it again is a 404, ignored below).
    let name = agent.name_any();
    let runs: Vec<AgentRun> = ctx
        .caches
        .runs
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()) && r.agent_name() == Some(&name))
        .map(|r| (**r).clone())
        .collect();
    let runs_api = Api::<AgentRun>::namespaced(ctx.client.clone(), &ns);
    for name in over_history_limit(&runs, &agent.spec.history_limits) {
        match runs_api
            .delete(&name, &kube::api::DeleteParams::background())
            .await
        {
            Ok(_) => {
                tracing::info!(run = %name, "deleted finished run beyond the agent's history limit")
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => return Err(err.into()),
        }
    }
    let missing = missing_secret(&ctx, agent.as_ref(), &agent).await?;
    let status = desired_status(&agent, &runs, missing, Timestamp::now());
    if agent.status.as_ref() != Some(&status) {
        let patch = json!({"apiVersion": Agent::api_version(&()), "kind": Agent::kind(&()), "status": status});
        Api::<Agent>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &agent.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        let old = agent.status.as_ref().map(|s| s.conditions.as_slice());
        if let Some(event) =
            crate::events::readiness_event(old.unwrap_or_default(), &status.conditions, "Reconcile")
        {
            crate::events::publish(&ctx.recorder, &agent.object_ref(&()), event).await;
        }
    }
    Ok(Action::requeue(ctx.settings.resync_interval))
}

/// The Agent's status given its runs and whether a Secret it needs is missing.
pub fn desired_status(
    agent: &Agent,
    runs: &[AgentRun],
    missing_secret: Option<String>,
    now: Timestamp,
) -> AgentStatus {
    let mut status = agent.status.clone().unwrap_or_default();
    status.observed_generation = agent.metadata.generation;
    let phase_of = |r: &AgentRun| r.status.as_ref().map(|s| s.phase).unwrap_or_default();
    status.running_runs = count(runs, |r| holds_capacity(phase_of(r)));
    status.queued_runs = count(runs, |r| {
        matches!(phase_of(r), RunPhase::Pending | RunPhase::Queued)
    });
    status.succeeded_runs = u64::from(count(runs, |r| phase_of(r) == RunPhase::Succeeded));
    status.failed_runs = u64::from(count(runs, |r| {
        matches!(
            phase_of(r),
            RunPhase::Failed | RunPhase::TimedOut | RunPhase::Cancelled
        )
    }));
    status.last_run = runs
        .iter()
        .max_by_key(|r| (r.metadata.creation_timestamp.clone(), r.name_any()))
        .map(|r| LastRun {
            name: r.name_any(),
            start_time: r.status.as_ref().and_then(|s| s.start_time.clone()),
            phase: r.status.as_ref().map(|s| s.phase),
        });
    let terminated = agent.spec.suspend || agent.meta().deletion_timestamp.is_some();
    status.phase = if terminated {
        AgentPhase::Terminated
    } else if status.running_runs > 0 {
        AgentPhase::Active
    } else {
        AgentPhase::Idle
    };
    let readiness = match (missing_secret, agent.spec.suspend) {
        (Some(why), _) => Readiness::Stalled {
            reason: "SecretMissing".into(),
            message: why,
        },
        // Suspended is the state the spec asks for, so the Agent is Ready: a suspended Agent
        // kept in Git must not hold a GitOps sync (Flux `wait`, Argo CD waves) forever.
        (None, true) => Readiness::Ready {
            reason: "Suspended".into(),
            message: "spec.suspend is true: no new runs start".into(),
        },
        (None, false) => Readiness::Ready {
            reason: format!("{:?}", status.phase),
            message: format!(
                "{} running, {} queued",
                status.running_runs, status.queued_runs
            ),
        },
    };
    conditions::apply_readiness(
        &mut status.conditions,
        &readiness,
        agent.metadata.generation,
        now,
    );
    status
}

/// Finished runs beyond the history limits, oldest first: succeeded and unsuccessful runs
/// are counted separately, newest kept.
pub fn over_history_limit(runs: &[AgentRun], limits: &HistoryLimits) -> Vec<String> {
    let finished_at = |r: &AgentRun| {
        r.status
            .as_ref()
            .and_then(|s| s.completion_time.clone())
            .map(|t| t.0)
    };
    let mut doomed = Vec::new();
    for (succeeded, keep) in [(true, limits.succeeded), (false, limits.failed)] {
        let mut finished: Vec<&AgentRun> = runs
            .iter()
            .filter(|r| r.metadata.deletion_timestamp.is_none())
            .filter(|r| {
                let phase = r.status.as_ref().map(|s| s.phase).unwrap_or_default();
                phase.is_finished() && (phase == RunPhase::Succeeded) == succeeded
            })
            .collect();
        finished.sort_by_key(|r| std::cmp::Reverse((finished_at(r), r.name_any())));
        doomed.extend(finished.iter().skip(keep as usize).map(|r| r.name_any()));
    }
    doomed.sort();
    doomed
}

fn count(runs: &[AgentRun], pred: impl Fn(&AgentRun) -> bool) -> u32 {
    u32::try_from(runs.iter().filter(|r| pred(r)).count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use countersign_crds::AgentRunStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn run(name: &str, phase: RunPhase, finished: i64) -> AgentRun {
        let mut run: AgentRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun", "metadata": {"name": name},
            "spec": {"projectRef": {"name": "p"}, "agentRef": {"name": "a"}, "task": {"title": "t"}}
        }))
        .expect("run");
        run.status = Some(AgentRunStatus {
            phase,
            completion_time: phase
                .is_finished()
                .then(|| Time(Timestamp::from_second(finished).expect("ts"))),
            ..Default::default()
        });
        run
    }

    #[test]
    fn the_oldest_finished_runs_beyond_each_limit_go() {
        let runs = vec![
            run("ok-old", RunPhase::Succeeded, 1),
            run("ok-new", RunPhase::Succeeded, 3),
            run("ok-mid", RunPhase::Succeeded, 2),
            run("bad-old", RunPhase::Failed, 1),
            run("timeout-new", RunPhase::TimedOut, 5),
            run("running", RunPhase::Running, 0),
        ];
        let limits = HistoryLimits {
            succeeded: 2,
            failed: 1,
        };
        assert_eq!(over_history_limit(&runs, &limits), ["bad-old", "ok-old"]);
        let keep_none = HistoryLimits {
            succeeded: 0,
            failed: 0,
        };
        assert_eq!(
            over_history_limit(&runs, &keep_none).len(),
            5,
            "never a run that is still going"
        );
    }

    #[test]
    fn agent_phase_follows_running_runs_and_suspension() {
        let mut agent: Agent = serde_json::from_value(serde_json::json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent", "metadata": {"name": "a", "generation": 3},
            "spec": {"role": "qa", "providers": [{"name": "p", "kind": "openai", "model": "m"}]}
        }))
        .expect("agent");
        let now = Timestamp::from_second(100).expect("ts");
        let busy = desired_status(
            &agent,
            &[
                run("r", RunPhase::Running, 0),
                run("q", RunPhase::Queued, 0),
            ],
            None,
            now,
        );
        assert_eq!(
            (busy.phase, busy.running_runs, busy.queued_runs),
            (AgentPhase::Active, 1, 1)
        );
        assert_eq!(busy.observed_generation, Some(3));
        let idle = desired_status(&agent, &[run("r", RunPhase::Succeeded, 1)], None, now);
        assert_eq!((idle.phase, idle.succeeded_runs), (AgentPhase::Idle, 1));
        assert!(conditions::is_true(&idle.conditions, conditions::READY));
        agent.spec.suspend = true;
        let suspended = desired_status(&agent, &[], None, now);
        assert_eq!(suspended.phase, AgentPhase::Terminated);
        // Suspended is what the spec asks for: Ready, so GitOps syncs do not wait on it.
        let ready = conditions::find(&suspended.conditions, conditions::READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Suspended")
        );
    }
}
