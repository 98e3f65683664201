//! ApprovalGate reconciliation (ARCHITECTURE.md §3 step 3, §4): GitHub is the source of truth,
//! the gate's status is the audit record.
//!
//! Each reconcile reads the pull request, its files, commits, reviews and comments; scores the
//! change with the Project's RiskPolicy; applies the approval rules; writes the status; keeps
//! one `countersign/approval` check run on the head commit (and on each merge-queue commit)
//! in step; asks the missing roles for reviews once; announces reminders, escalations and
//! expiry at the deadline (the reconcile is requeued for it, and the deadline lives in the
//! status, so a restart keeps it); and merges approved pull requests when the Project asks.
//!
//! Problems that need a person (no Project, no RiskPolicy, an invalid policy, no GitHub App)
//! are written to the status and the check run stays pending: an unevaluated gate never lets
//! anything merge.

pub mod decide;
mod effects;
mod evaluate;
pub mod facts;
mod read;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_crds::{ApprovalGate, GatePhase, Project, RiskPolicy};
use countersign_github::GitHubError;
use countersign_github::authz::Authorizer;
use countersign_policies::CompiledPolicy;
use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};

use self::evaluate::evaluate;
use self::status::write_problem;
use crate::agent_run::{scoped, tokio_stream_interval};
use crate::context::Context;
use crate::error::{Error, Result};

/// How often an approved gate waiting for other checks before auto-merging looks again.
pub const MERGE_POLL: Duration = Duration::from_secs(30);

/// Per-process state of the gate reconciler: team memberships (TTL cache) and compiled
/// RiskPolicies (by uid and generation).
#[derive(Default)]
pub struct GateCache {
    authorizer: Authorizer,
    policies: Mutex<HashMap<String, (i64, Arc<CompiledPolicy>)>>,
}

impl std::fmt::Debug for GateCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateCache").finish_non_exhaustive()
    }
}

/// Runs the ApprovalGate controller until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    // The gates cache other reconcilers read is this watch's store.
    let Some(writer) = ctx.caches.gates.take_writer() else {
        tracing::error!("the ApprovalGate controller runs once per context");
        return;
    };
    let reader = ctx.caches.gates.store();
    // Only spec and annotation changes (the bot's nudges) trigger a reconcile; our own
    // status writes do not, so a gate is not re-read from GitHub after every write.
    let gates = watcher(scoped::<ApprovalGate>(&ctx), watcher::Config::default())
        .default_backoff()
        .modify(crate::cache::trim)
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::annotations),
            Default::default(),
        );
    let controller = Controller::for_stream(gates, reader).with_config(
        kube::runtime::controller::Config::default().concurrency(crate::settings::GATE_CONCURRENCY),
    );
    let store = controller.store();
    let by_project = store.clone();
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    // Projects and policies matter when their spec changes, not their status (the Project
    // reconciler rewrites its counts whenever a gate changes, which would loop).
    let projects = watcher(scoped::<Project>(&ctx), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let policies = watcher(scoped::<RiskPolicy>(&ctx), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    controller
        .watches_stream(projects, move |project| {
            let (ns, name) = (project.namespace(), project.name_any());
            open_gates(&by_project, |g| {
                g.namespace() == ns && g.spec.project_ref.name == name
            })
        })
        .watches_stream(policies, move |policy| {
            let ns = policy.namespace();
            open_gates(&store, |g| g.namespace() == ns)
        })
        .reconcile_all_on(tokio_stream_interval(ctx.settings.resync_interval))
        .run(reconcile, error_policy, Arc::new((ctx.clone(), recorder)))
        .for_each(|result| {
            crate::backoff::reset_on_success(&ctx.error_backoff, &result);
            async {}
        })
        .await;
}

type GateContext = (Arc<Context>, Recorder);

fn open_gates(
    store: &reflector::Store<ApprovalGate>,
    keep: impl Fn(&ApprovalGate) -> bool,
) -> Vec<ObjectRef<ApprovalGate>> {
    store
        .state()
        .into_iter()
        .filter(|g| !is_final(g))
        .filter(|g| keep(g))
        .map(|g| ObjectRef::from_obj(&*g))
        .collect()
}

fn is_final(gate: &ApprovalGate) -> bool {
    gate.status
        .as_ref()
        .is_some_and(|s| s.phase == GatePhase::Merged)
}

fn error_policy(gate: Arc<ApprovalGate>, err: &Error, gc: Arc<GateContext>) -> Action {
    gc.0.metrics
        .reconcile_failed("ApprovalGate", err.metric_label());
    let wait =
        gc.0.error_backoff
            .next(&crate::backoff::key(gate.as_ref()), err);
    tracing::warn!(gate = %gate.name_any(), error = %err, retry_in = ?wait, "approval gate reconcile failed");
    Action::requeue(wait)
}

/// Why a gate cannot be evaluated now; written to status, never fatal.
struct Problem {
    reason: &'static str,
    message: String,
    retry: Duration,
    /// Retrying alone will fix it (GitHub unavailable), rather than a person.
    transient: bool,
}

#[tracing::instrument(skip_all, fields(kind = "ApprovalGate", namespace = gate.namespace().unwrap_or_default(), name = gate.name_any()))]
async fn reconcile(gate: Arc<ApprovalGate>, gc: Arc<GateContext>) -> Result<Action> {
    let (ctx, recorder) = (&gc.0, &gc.1);
    let _timer = ctx.metrics.reconcile("ApprovalGate");
    if is_final(&gate) {
        return Ok(Action::await_change());
    }
    // The cache lags behind our own status writes. A gate it shows without any status may be
    // one whose first evaluation it has not caught up with yet; evaluating that copy would
    // start the gate's clock again, drop its escalations and ask for reviews twice. Such a
    // gate (normally a new one) is read from the API first.
    let gate = match gate.status {
        Some(_) => gate,
        None => {
            let api = kube::Api::<ApprovalGate>::namespaced(
                ctx.client.clone(),
                &gate.namespace().unwrap_or_default(),
            );
            match api.get_opt(&gate.name_any()).await? {
                Some(latest) => Arc::new(latest),
                None => return Ok(Action::await_change()),
            }
        }
    };
    // The gate as last written: evaluation saves the status after each side effect, and a
    // problem is recorded on top of what was saved, never on the copy it started from.
    let mut current = (*gate).clone();
    match evaluate(&gate, &mut current, ctx, recorder).await {
        Ok(action) => Ok(action),
        Err(Failure::Stale) => {
            // The watch will bring the newer copy (its event reconciles again); the requeue
            // covers a watch that is slow to.
            ctx.metrics.reconcile_failed("ApprovalGate", "stale");
            Ok(Action::requeue(STALE_RETRY))
        }
        Err(Failure::Problem(problem)) => {
            write_problem(&mut current, ctx, &problem).await?;
            Ok(Action::requeue(problem.retry))
        }
        Err(Failure::Kube(err)) => Err(Error::Kube(err)),
        Err(Failure::GitHub(err)) => {
            // Record it for people, then retry with the error's backoff.
            let problem = Problem {
                reason: "GitHubUnavailable",
                message: err.to_string(),
                retry: github_backoff(&err),
                transient: true,
            };
            write_problem(&mut current, ctx, &problem).await?;
            ctx.metrics
                .reconcile_failed("ApprovalGate", github_label(&err));
            Ok(Action::requeue(problem.retry))
        }
    }
}

enum Failure {
    Problem(Problem),
    Kube(kube::Error),
    GitHub(GitHubError),
    /// The gate changed since the copy this evaluation started from (see
    /// [`status::save`]); nothing was done.
    Stale,
}

/// How soon a gate evaluated from an outdated copy is looked at again.
const STALE_RETRY: Duration = Duration::from_secs(1);

impl From<kube::Error> for Failure {
    fn from(e: kube::Error) -> Self {
        Self::Kube(e)
    }
}

impl From<GitHubError> for Failure {
    fn from(e: GitHubError) -> Self {
        match e {
            GitHubError::Unauthorized(_) | GitHubError::Forbidden(_) | GitHubError::Config(_) => {
                Self::Problem(Problem {
                    reason: "GitHubRefused",
                    message: e.to_string(),
                    retry: Duration::from_secs(300),
                    transient: false,
                })
            }
            other => Self::GitHub(other),
        }
    }
}

fn github_backoff(err: &GitHubError) -> Duration {
    match err {
        GitHubError::RateLimited { retry_after } => (*retry_after).max(Duration::from_secs(1)),
        _ => Duration::from_secs(15),
    }
}

fn github_label(err: &GitHubError) -> &'static str {
    match err {
        GitHubError::RateLimited { .. } => "github_rate_limited",
        _ => "github",
    }
}

fn problem(reason: &'static str, message: String, retry: Duration) -> Failure {
    Failure::Problem(Problem {
        reason,
        message,
        retry,
        transient: false,
    })
}
