//! Project reconciliation: readiness (the Project manages its repository — it is the oldest
//! Project naming it in a namespace allowed to; the RiskPolicy exists; the GitHub App
//! installation GitHub reports for the repository is reachable and is the one the spec names,
//! if any) and the counts platform teams watch: active and queued runs, runs and spend
//! today, open approval gates.
//!
//! The day's run count (`runsDay`, `runsToday`, `runsTodayUids`) is the one part of the
//! status written with the Project's resourceVersion as a precondition, by
//! [`count_admission`] when a run is admitted and here when a day begins: the status apply
//! leaves it out, so a reconcile working from a stale copy can never undo an admission.

use std::sync::Arc;

use countersign_crds::conditions::{self, Readiness};
use countersign_crds::{
    AgentRun, ApprovalGate, GatePhase, Project, ProjectStatus, RiskPolicy, RunPhase, Usd,
};
use countersign_github::tokens::{MintError, RepoRef};
use countersign_policies::ownership::Claim;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::agent_run::capacity::{DayAdmission, DayCount, holds_capacity, same_utc_day};
use crate::agent_run::{scoped, tokio_stream_interval};
use crate::backoff;
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};

/// Runs the Project controller until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    let controller = Controller::new(scoped::<Project>(&ctx), watcher::Config::default())
        .with_config(
            kube::runtime::controller::Config::default()
                .debounce(crate::settings::SUMMARY_DEBOUNCE),
        );
    let projects = controller.store();
    controller
        .watches(
            scoped::<AgentRun>(&ctx),
            watcher::Config::default(),
            |run| {
                let ns = run.namespace().unwrap_or_default();
                Some(ObjectRef::<Project>::new(&run.spec.project_ref.name).within(&ns))
            },
        )
        .watches(
            scoped::<RiskPolicy>(&ctx),
            watcher::Config::default(),
            move |policy| {
                let (ns, name) = (policy.namespace(), policy.name_any());
                projects
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace() == ns && p.spec.risk_policy_ref.name == name)
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
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

fn error_policy(project: Arc<Project>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_failed("Project", err.metric_label());
    let wait = ctx.error_backoff.next(&backoff::key(project.as_ref()), err);
    tracing::warn!(project = %project.name_any(), error = %err, retry_in = ?wait, "project reconcile failed");
    Action::requeue(wait)
}

/// What the Project reconciler learned from the API and GitHub.
pub struct Observed {
    /// Whether it manages its repository.
    pub claim: Claim,
    /// Whether the referenced RiskPolicy exists.
    pub policy_found: bool,
    /// The installation lookup, when GitHub is configured.
    pub installation: Option<Result<u64, MintError>>,
    /// The Project's runs.
    pub runs: Vec<AgentRun>,
    /// The Project's approval gates.
    pub gates: Vec<ApprovalGate>,
    /// The provider gateway's usage ledger of the Project, when it has one (it outlives runs).
    pub ledger: Option<countersign_crds::usage::UsageLedger>,
}

#[tracing::instrument(skip_all, fields(kind = "Project", namespace = project.namespace().unwrap_or_default(), name = project.name_any()))]
async fn reconcile(project: Arc<Project>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile("Project");
    let ns = project.namespace().unwrap_or_default();
    let name = project.name_any();
    if ctx.caches.ready().await.is_err() {
        return Ok(Action::requeue(ctx.settings.wait_requeue));
    }
    let policy_found = ctx
        .caches
        .policies
        .get(&ns, &project.spec.risk_policy_ref.name)
        .is_some();
    let claim = match ctx.claims.claim_of(&project).await {
        Ok(claim) => claim,
        Err(not_listed) => {
            tracing::debug!(error = %not_listed, "cannot tell who owns the repository yet");
            return Ok(Action::requeue(ctx.settings.wait_requeue));
        }
    };
    // A Project that does not own its repository asks GitHub nothing.
    let installation = if ctx.minter.is_configured() && claim.owns() {
        let repo = RepoRef {
            owner: project.spec.repository.owner.clone(),
            name: project.spec.repository.name.clone(),
            expected_installation: project.spec.installation.as_ref().map(|i| i.id),
        };
        Some(ctx.minter.installation_for(&repo).await)
    } else {
        None
    };
    // The Project's runs and gates, from the caches their controllers fill.
    let runs: Vec<AgentRun> = ctx
        .caches
        .runs
        .state()
        .iter()
        .filter(|r| r.namespace().as_deref() == Some(ns.as_str()))
        .filter(|r| r.spec.project_ref.name == name)
        .map(|r| (**r).clone())
        .collect();
    let gates: Vec<ApprovalGate> = ctx
        .caches
        .gates
        .state()
        .iter()
        .filter(|g| g.namespace().as_deref() == Some(ns.as_str()))
        .filter(|g| g.spec.project_ref.name == name)
        .map(|g| (**g).clone())
        .collect();
    let ledger = ctx.caches.ledger(&ns, &name);
    let observed = Observed {
        claim,
        ledger,
        policy_found,
        installation,
        runs,
        gates,
    };
    let now = Timestamp::now();
    // A new day starts its count from zero; runs started before the count was kept here
    // are added to it.
    let today = DayCount::today(project.status.as_ref(), now).with_started(&observed.runs);
    let mut requeue = ctx.settings.resync_interval;
    if !today.is_recorded_in(project.status.as_ref()) {
        match write_day_count(&ctx.client, &project, &today).await {
            Ok(_) => {}
            // Someone counted a run meanwhile: look again with the newer Project.
            Err(err) if is_conflict(&err) => requeue = ctx.settings.wait_requeue,
            Err(err) => return Err(err.into()),
        }
    }
    let status = desired_status(&project, &observed, now);
    if project.status.as_ref().map(without_sync_time) != Some(without_sync_time(&status)) {
        let mut applied = serde_json::to_value(&status).map_err(|source| Error::Serialize {
            what: "Project status",
            source,
        })?;
        if let Some(fields) = applied.as_object_mut() {
            for day_field in ["runsDay", "runsToday", "runsTodayUids"] {
                fields.remove(day_field);
            }
        }
        let patch = json!({"apiVersion": Project::api_version(&()), "kind": Project::kind(&()), "status": applied});
        Api::<Project>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        let old = project.status.as_ref().map(|s| s.conditions.as_slice());
        if let Some(event) =
            crate::events::readiness_event(old.unwrap_or_default(), &status.conditions, "Reconcile")
        {
            crate::events::publish(&ctx.recorder, &project.object_ref(&()), event).await;
        }
    }
    Ok(Action::requeue(requeue))
}

/// The field manager of the day's run count (a merge patch, not the status apply).
const DAY_COUNT_MANAGER: &str = "countersign-controller-day-count";

/// How many requests [`count_admission`] tries before it gives up and the run's reconcile
/// fails (and is retried with the error's backoff).
const COUNT_ATTEMPTS: usize = 8;

/// Writes `count` into the Project's status if the Project is still the version it was read
/// from; a conflict (see [`is_conflict`]) when it is not: someone else wrote first.
async fn write_day_count(
    client: &kube::Client,
    project: &Project,
    count: &DayCount,
) -> Result<Project, kube::Error> {
    let api = Api::<Project>::namespaced(client.clone(), &project.namespace().unwrap_or_default());
    let version = project.resource_version().unwrap_or_default();
    let params = PatchParams {
        field_manager: Some(DAY_COUNT_MANAGER.into()),
        ..PatchParams::default()
    };
    api.patch_status(
        &project.name_any(),
        &params,
        &Patch::Merge(count.status_patch(&version)),
    )
    .await
}

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
}

/// Counts the run `uid` among the runs `project` admitted today, before the run's first pod
/// is created: [`DayAdmission::Counted`] once the Project's status lists it, or
/// [`DayAdmission::Full`] when the day has no run left. `runs` is what the cache shows (runs
/// started today that the status does not list yet count too). The write carries the
/// Project's resourceVersion; when another controller or reconcile wrote first, or the
/// request failed, the Project is read again and the limit checked again, so the day's last
/// run is admitted once and no admission is lost.
pub(crate) async fn count_admission(
    ctx: &Context,
    project: &Project,
    uid: &str,
    runs: &[Arc<AgentRun>],
    now: Timestamp,
) -> Result<DayAdmission> {
    let ns = project.namespace().unwrap_or_default();
    let name = project.name_any();
    let client = &ctx.client;
    let api = Api::<Project>::namespaced(client.clone(), &ns);
    let ours = || {
        runs.iter()
            .filter(|r| r.namespace().as_deref() == Some(ns.as_str()))
            .filter(|r| r.spec.project_ref.name == name)
            .map(|r| r.as_ref())
    };
    // One count at a time in this process: runs admitted together then race each other
    // only once, not once per run.
    let mut last_counts = ctx.ledger.counting_turn().await;
    let key = (ns.clone(), name.clone());
    // First the Project as this reconcile read it, or the newer copy this process's own
    // last count left when the cache has not caught up with that write yet; after a lost
    // race or a failed request it is read again (a write that went through despite an error
    // is then listed: Counted).
    let cached_version = project.resource_version().unwrap_or_default();
    let mut written_over = match last_counts.remove(&key) {
        Some(last) if last.written_over.contains(&cached_version) => {
            Some((last.project, last.written_over))
        }
        _ => None,
    };
    let mut current = Some(match &written_over {
        Some((newer, _)) => newer.clone(),
        None => project.clone(),
    });
    let mut attempt = 0;
    loop {
        attempt += 1;
        let last = attempt >= COUNT_ATTEMPTS;
        let project = match current.take() {
            Some(project) => project,
            None => match api.get_opt(&name).await {
                Ok(Some(project)) => project,
                Ok(None) => {
                    return Ok(DayAdmission::Full(format!(
                        "project {name} no longer exists"
                    )));
                }
                Err(err) if !last && worth_retrying(&err) => continue,
                Err(err) => return Err(err.into()),
            },
        };
        let today = DayCount::today(project.status.as_ref(), now).with_started(ours());
        let next = match today.admit(uid, &name, project.spec.limits.max_runs_per_day) {
            DayAdmission::Add(next) => next,
            decided => return Ok(decided),
        };
        match write_day_count(client, &project, &next).await {
            Ok(written) => {
                let mut replaced = written_over.take().map(|(_, v)| v).unwrap_or_default();
                replaced.insert(project.resource_version().unwrap_or_default());
                last_counts.insert(
                    key,
                    crate::agent_run::capacity::LastCount {
                        written_over: replaced,
                        project: written,
                    },
                );
                return Ok(DayAdmission::Counted);
            }
            Err(err) if !last && worth_retrying(&err) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// A conflict, a server error or a broken connection: reading again and retrying may work.
fn worth_retrying(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => matches!(status.code, 409 | 429 | 500..=599),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn without_sync_time(status: &ProjectStatus) -> ProjectStatus {
    ProjectStatus {
        last_sync_time: None,
        ..status.clone()
    }
}

/// The Project's status from what was observed.
pub fn desired_status(project: &Project, observed: &Observed, now: Timestamp) -> ProjectStatus {
    let mut status = project.status.clone().unwrap_or_default();
    status.observed_generation = project.metadata.generation;
    let phase_of = |r: &AgentRun| r.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let started_today = |r: &&AgentRun| {
        r.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .is_some_and(|t| same_utc_day(t.0, now))
    };
    status.active_runs = count(observed.runs.iter().filter(|r| holds_capacity(phase_of(r))));
    status.queued_runs = count(
        observed
            .runs
            .iter()
            .filter(|r| matches!(phase_of(r), RunPhase::Pending | RunPhase::Queued)),
    );
    // runsDay, runsToday and runsTodayUids stay as read: only `count_admission` and the
    // day's first reconcile write them, with a precondition.
    // The gateway's ledger counts every request, also of runs deleted since; without one
    // (no gateway yet), the runs started today are summed.
    status.spend_today = Some(match &observed.ledger {
        Some(ledger) => ledger
            .spend_on(&countersign_crds::usage::day_of(&now))
            .cost(),
        None => Usd {
            cents: observed
                .runs
                .iter()
                .filter(started_today)
                .filter_map(|r| r.status.as_ref())
                .map(|s| s.usage.cost.cents)
                .sum(),
        },
    });
    status.open_gates = count(observed.gates.iter().filter(|g| {
        !matches!(
            g.status.as_ref().map(|s| s.phase).unwrap_or_default(),
            GatePhase::Merged | GatePhase::Closed
        )
    }));
    status.last_sync_time = Some(Time(now));

    let readiness = if !observed.claim.owns() {
        status.installation_id = None;
        Readiness::Stalled {
            reason: observed.claim.reason().into(),
            message: observed.claim.message(project),
        }
    } else if !observed.policy_found {
        Readiness::Stalled {
            reason: "RiskPolicyNotFound".into(),
            message: format!(
                "RiskPolicy {:?} does not exist in this namespace",
                project.spec.risk_policy_ref.name
            ),
        }
    } else {
        match &observed.installation {
            Some(Ok(id)) => {
                status.installation_id = Some(*id).filter(|id| *id != 0);
                Readiness::Ready {
                    reason: "Ready".into(),
                    message: "RiskPolicy found; GitHub installation reachable".into(),
                }
            }
            Some(Err(err)) if err.is_transient() => Readiness::Progressing {
                reason: "GitHubUnavailable".into(),
                message: err.to_string(),
            },
            Some(Err(err)) => {
                status.installation_id = None;
                Readiness::Stalled {
                    reason: err.reason().into(),
                    message: err.to_string(),
                }
            }
            None => Readiness::Ready {
                reason: "Ready".into(),
                message: "RiskPolicy found; no GitHub credentials are configured, so runs wait"
                    .into(),
            },
        }
    };
    conditions::apply_readiness(
        &mut status.conditions,
        &readiness,
        project.metadata.generation,
        now,
    );
    status
}

fn count<T>(items: impl Iterator<Item = T>) -> u32 {
    u32::try_from(items.count()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use countersign_crds::usage::{Spend, UsageLedger, day_of};
    use serde_json::json;

    use super::*;

    #[test]
    fn spend_today_comes_from_the_gateways_ledger_which_outlives_runs() {
        let project: Project = serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "Project",
            "metadata": {"name": "p", "namespace": "team"},
            "spec": {"repository": {"owner": "acme", "name": "api"}}
        }))
        .expect("project");
        let now = Timestamp::from_second(1_750_000_000).expect("time");
        let mut ledger = UsageLedger::new();
        let spend = |micro| Spend {
            cost_micro_cents: micro,
            requests: 1,
            ..Spend::default()
        };
        // A deleted run's spend today, and yesterday's, which does not count.
        ledger.record("team/gone/1", "u1", "a", &day_of(&now), &spend(250_000_000));
        ledger.record("team/old/1", "u2", "a", "2000-01-01", &spend(900_000_000));
        let observed = Observed {
            claim: countersign_policies::ownership::Claim::Owner,
            policy_found: true,
            installation: None,
            runs: Vec::new(),
            gates: Vec::new(),
            ledger: Some(ledger),
        };
        let status = desired_status(&project, &observed, now);
        assert_eq!(status.spend_today, Some(Usd { cents: 250 }));
        let without = Observed {
            ledger: None,
            ..observed
        };
        assert_eq!(
            desired_status(&project, &without, now).spend_today,
            Some(Usd { cents: 0 })
        );
    }
}
