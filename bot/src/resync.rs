//! The resync: what a lost delivery should have created, created anyway.
//!
//! GitHub does not redeliver a failed delivery by itself, and a delivery the bot accepted
//! (answered 202) but had not handled when it stopped is gone with the process. So every
//! `--resync-interval` (jittered) the bot asks GitHub, for each Project it manages (the
//! [`Projects`](crate::projects::Projects) index, ownership as for deliveries), what should
//! exist, and compares with the cluster:
//!
//! - every open issue carrying one of the Project's trigger labels needs an AgentRun of that
//!   label's Agent. When there is none (in any phase: a finished run is not started again),
//!   the labeling is handled exactly as its `issues.labeled` delivery would have been: the
//!   labeler is the actor of the issue event that put the label on (the latest `labeled`
//!   event not undone by an `unlabeled` one), authorised by the same checks, and the run is
//!   built by the same code under the same deterministic name. A label applied before the
//!   Project existed is left alone, as its delivery would have been (no Project managed the
//!   repository then).
//! - every open pull request needs an ApprovalGate. When there is none, the pull request is
//!   handled as its `pull_request.opened` delivery would have been.
//!
//! Nothing here decides who may trigger or what the objects look like: the delivery is
//! rebuilt from GitHub's answers and given to [`Handler::handle`], the handlers' own entry.
//! Its id is deterministic (`resync/…`), so two replicas or two passes racing for the same
//! issue create one run. A labeling that was refused (the labeler lacks permission, a bot)
//! is remembered per labeled event, so the person gets one answer, not one per pass; a new
//! labeling is looked at again.
//!
//! Every GitHub read is a conditional request: an unchanged repository costs `304`s, which
//! GitHub does not count against the rate limit (one listing per trigger label and one of
//! open pull requests per pass, plus the events of an issue that still needs a decision).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use countersign_crds::names::gate_name;
use countersign_crds::{AgentRun, ApprovalGate, Project};
use countersign_github::{InstallationClient, IssueEventKind};
use countersign_webhooks::github::event::{
    Delivery, Event, IssuesAction, IssuesEvent, PullRequestAction, PullRequestEvent, Repository,
};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use tracing::Instrument;

use crate::handlers::{HandleError, Handler, Outcome};
use crate::metrics::Metrics;

mod decide;
mod metrics;

pub use decide::{
    IssueDecision, SkipReason, account_of, decide_issue, first_wait, issue_of, jittered,
    labeled_delivery_id, opened_delivery_id, pull_request_of, refusal,
};
pub use metrics::ResyncMetrics;

/// Time between passes when `--resync-interval` is not given.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// How much each wait varies, as a fraction of the interval either way, so replicas and
/// restarted bots do not ask GitHub in step. The first pass comes within this fraction of
/// the interval after start, so deliveries lost in a crash are recovered soon after it.
pub const JITTER: f64 = 0.1;

/// How the resync runs.
#[derive(Clone, Debug)]
pub struct ResyncSettings {
    /// Time between passes (`--resync-interval`); zero turns the resync off.
    pub interval: Duration,
}

impl Default for ResyncSettings {
    fn default() -> Self {
        Self {
            interval: DEFAULT_INTERVAL,
        }
    }
}

/// What the resync works with: the handlers (and their Project index, GitHub App and
/// Kubernetes client) and the bot's metrics, plus what it remembers between passes.
pub struct Resync {
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    /// Labelings looked at and left without a run, by (Project uid, issue, Agent): the id of
    /// the `labeled` event decided on (`None`: GitHub showed none). Not handled again until
    /// another labeling replaces it.
    settled: Mutex<HashMap<SettledKey, Option<u64>>>,
}

type SettledKey = (String, u64, String);

impl Resync {
    /// A resync with nothing remembered yet.
    pub fn new(handler: Arc<Handler>, metrics: Arc<Metrics>) -> Self {
        Self {
            handler,
            metrics,
            settled: Mutex::new(HashMap::new()),
        }
    }
}

/// What one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// Projects looked at.
    pub projects: usize,
    /// GitHub listings read (issues per trigger label, open pull requests, issue events).
    pub listings: usize,
    /// Of those, the ones answered `304 Not Modified` on every page.
    pub not_modified: usize,
    /// Objects created.
    pub recovered: Vec<Recovered>,
    /// Labelled issues left without a run this pass, and why.
    pub skipped: Vec<Skipped>,
    /// Projects (`namespace/name`) whose resync failed; the next pass tries again.
    pub failed: Vec<String>,
}

/// An object the resync created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// `AgentRun` or `ApprovalGate`.
    pub kind: &'static str,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// A labelled issue left without a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    /// The Project, `namespace/name`.
    pub project: String,
    /// The issue.
    pub issue: u64,
    /// Why.
    pub reason: SkipReason,
}

/// Runs a pass every `settings.interval` (jittered) once the Project index is filled, until
/// the task is dropped or aborted. A pass interrupted half-way is harmless: everything it
/// does is idempotent and the next pass looks again.
pub async fn run(resync: Resync, settings: ResyncSettings) {
    if settings.interval.is_zero() {
        tracing::info!("resync is off (--resync-interval 0s)");
        return;
    }
    if !resync.handler.projects.ready().await {
        tracing::error!("the Project index stopped before its first list; no resync");
        return;
    }
    let mut wait = first_wait(settings.interval, rand::random());
    loop {
        tokio::time::sleep(wait).await;
        once(&resync).await;
        wait = jittered(settings.interval, rand::random());
    }
}

/// One pass over every Project the bot manages. Failures are per Project: logged, counted,
/// listed in the result, and left to the next pass.
pub async fn once(resync: &Resync) -> Pass {
    let span = tracing::info_span!("resync");
    resync.pass().instrument(span).await
}

/// What the cluster already holds in one namespace: runs by (Project, issue, Agent) and
/// gate names.
#[derive(Default)]
struct Existing {
    runs: HashSet<(String, u64, String)>,
    gates: HashSet<String>,
}

/// One Project's pass: its repository, read lazily.
struct ProjectPass<'a> {
    project: &'a Project,
    key: String,
    github: InstallationClient,
    repository: Option<Repository>,
}

impl Resync {
    async fn pass(&self) -> Pass {
        let mut pass = Pass::default();
        if !self.handler.projects.is_ready() {
            tracing::warn!("the Project index is not filled yet; skipping this pass");
            return pass;
        }
        let mut existing: HashMap<String, Existing> = HashMap::new();
        for project in self.handler.projects.managed() {
            pass.projects += 1;
            let key = format!(
                "{}/{}",
                project.namespace().unwrap_or_default(),
                project.name_any()
            );
            let span = tracing::info_span!("project", project = %key);
            let result = self
                .sync_project(&project, &key, &mut existing, &mut pass)
                .instrument(span)
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, project = %key, "resync of the Project failed; the next pass tries again");
                self.metrics.resync.failure(error.label());
                pass.failed.push(key);
            }
        }
        self.metrics.resync.pass(if pass.failed.is_empty() {
            "complete"
        } else {
            "partial"
        });
        tracing::info!(
            projects = pass.projects,
            listings = pass.listings,
            not_modified = pass.not_modified,
            recovered = pass.recovered.len(),
            skipped = pass.skipped.len(),
            failed = pass.failed.len(),
            "resync pass finished"
        );
        pass
    }

    async fn sync_project(
        &self,
        project: &Project,
        key: &str,
        existing: &mut HashMap<String, Existing>,
        pass: &mut Pass,
    ) -> Result<(), HandleError> {
        let existing = match existing.entry(project.namespace().unwrap_or_default()) {
            Entry::Occupied(known) => known.into_mut(),
            Entry::Vacant(unknown) => unknown.insert(self.existing(project).await?),
        };
        let Some(github) = self.handler.installation(None, project).await? else {
            tracing::debug!("the App is not installed on the repository; nothing to resync");
            return Ok(());
        };
        let mut at = ProjectPass {
            project,
            key: key.to_owned(),
            github,
            repository: None,
        };
        self.sync_issues(&mut at, existing, pass).await?;
        self.sync_pulls(&mut at, existing, pass).await
    }

    /// The runs and gates in the Project's namespace.
    async fn existing(&self, project: &Project) -> Result<Existing, kube::Error> {
        let runs: Api<AgentRun> = self.handler.api(project);
        let gates: Api<ApprovalGate> = self.handler.api(project);
        let mut found = Existing::default();
        for run in runs.list(&ListParams::default()).await?.items {
            if let Some(issue) = run.spec.task.issue_number {
                found.runs.insert((
                    run.spec.project_ref.name.clone(),
                    issue,
                    run.spec.assignee().key(),
                ));
            }
        }
        for gate in gates.list(&ListParams::default()).await?.items {
            found.gates.insert(gate.name_any());
        }
        Ok(found)
    }

    async fn sync_issues(
        &self,
        at: &mut ProjectPass<'_>,
        existing: &Existing,
        pass: &mut Pass,
    ) -> Result<(), HandleError> {
        let project = at.project;
        let name = project.name_any();
        let uid = project.uid().unwrap_or_else(|| at.key.clone());
        let repo = &project.spec.repository;
        let created = project.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let mut labels_seen: Vec<&str> = Vec::new();
        let mut looked_at: HashSet<(u64, String)> = HashSet::new();
        for trigger in &project.spec.triggers.labels {
            // A delivery maps a label to the first trigger naming it; so does the resync.
            if labels_seen
                .iter()
                .any(|l| l.eq_ignore_ascii_case(&trigger.label))
            {
                continue;
            }
            labels_seen.push(&trigger.label);
            let agent = &trigger.assignee().key();
            let listing = at
                .github
                .open_issues_with_label(&repo.owner, &repo.name, &trigger.label)
                .await?;
            self.listed(pass, "issues", listing.not_modified);
            for info in listing.items.iter().filter(|i| !i.is_pull_request) {
                if existing
                    .runs
                    .contains(&(name.clone(), info.number, agent.clone()))
                {
                    continue;
                }
                looked_at.insert((info.number, agent.clone()));
                let settled_key = (uid.clone(), info.number, agent.clone());
                let settled = self.settled().get(&settled_key).copied();
                let events = at
                    .github
                    .issue_events(&repo.owner, &repo.name, info.number)
                    .await?;
                self.listed(pass, "issue_events", events.not_modified);
                let skip = match decide_issue(&events.items, &trigger.label, created, settled) {
                    IssueDecision::Settled => continue,
                    IssueDecision::Skip { reason, labeling } => {
                        self.settled().insert(settled_key, labeling);
                        reason
                    }
                    IssueDecision::Recover { event, labeler } => {
                        let label = match &event.kind {
                            IssueEventKind::Labeled(l) => l.clone(),
                            _ => trigger.label.clone(),
                        };
                        let delivery = Delivery {
                            id: labeled_delivery_id(event),
                            event: Event::Issues(IssuesEvent {
                                action: IssuesAction::Labeled(label),
                                issue: issue_of(info),
                                repository: self.repository(at).await?,
                                sender: labeler.clone(),
                                installation_id: Some(at.github.id()),
                            }),
                        };
                        let outcomes = self.handle(&delivery).await?;
                        self.count_recovered(&outcomes, pass);
                        let Some(reason) = refusal(&outcomes) else {
                            continue;
                        };
                        self.settled().insert(settled_key, Some(event.id));
                        reason
                    }
                };
                tracing::info!(issue = info.number, agent = %agent, reason = ?skip, "labelled issue left without a run");
                self.metrics.resync.skipped(skip.label());
                pass.skipped.push(Skipped {
                    project: at.key.clone(),
                    issue: info.number,
                    reason: skip,
                });
            }
        }
        // Forget decisions about issues that closed, lost the label or got a run.
        self.settled().retain(|(u, issue, agent), _| {
            *u != uid || looked_at.contains(&(*issue, agent.clone()))
        });
        Ok(())
    }

    async fn sync_pulls(
        &self,
        at: &mut ProjectPass<'_>,
        existing: &Existing,
        pass: &mut Pass,
    ) -> Result<(), HandleError> {
        let project = at.project;
        let repo = &project.spec.repository;
        let listing = at
            .github
            .open_pull_requests(&repo.owner, &repo.name)
            .await?;
        self.listed(pass, "pull_requests", listing.not_modified);
        for pr in &listing.items {
            if existing
                .gates
                .contains(&gate_name(&project.name_any(), pr.number))
            {
                continue;
            }
            let repository = self.repository(at).await?;
            let delivery = Delivery {
                id: opened_delivery_id(&repository, pr),
                event: Event::PullRequest(PullRequestEvent {
                    action: PullRequestAction::Opened,
                    pull_request: pull_request_of(pr, &repository.full_name()),
                    // GitHub names the author as the sender of `opened`.
                    sender: account_of(&pr.author),
                    repository,
                    installation_id: Some(at.github.id()),
                }),
            };
            let outcomes = self.handle(&delivery).await?;
            self.count_recovered(&outcomes, pass);
        }
        Ok(())
    }

    /// The repository as deliveries name it (its id read from GitHub once per pass).
    async fn repository(&self, at: &mut ProjectPass<'_>) -> Result<Repository, HandleError> {
        if let Some(repository) = &at.repository {
            return Ok(repository.clone());
        }
        let spec = &at.project.spec.repository;
        let id = at.github.repository_id(&spec.owner, &spec.name).await?;
        let repository = Repository {
            id,
            owner: spec.owner.clone(),
            name: spec.name.clone(),
        };
        at.repository = Some(repository.clone());
        Ok(repository)
    }

    /// Handles a rebuilt delivery through the handlers' own entry, logged and counted like
    /// a delivery (`countersign_bot_delivery_outcomes_total`). A failure is returned; the
    /// next pass tries again.
    async fn handle(&self, delivery: &Delivery) -> Result<Vec<Outcome>, HandleError> {
        let event = delivery.event.name();
        let repo = delivery
            .event
            .repository()
            .map(Repository::full_name)
            .unwrap_or_default();
        let span = tracing::info_span!("delivery", delivery = %delivery.id, event, repo);
        async {
            let outcomes = self.handler.handle(delivery).await.inspect_err(|error| {
                self.metrics.failure(event, error.label());
            })?;
            for outcome in &outcomes {
                self.metrics.outcome(event, outcome.label());
                tracing::info!(%outcome, "handled (resync)");
            }
            Ok(outcomes)
        }
        .instrument(span)
        .await
    }

    fn count_recovered(&self, outcomes: &[Outcome], pass: &mut Pass) {
        for outcome in outcomes {
            let (kind, namespace, name) = match outcome {
                Outcome::RunCreated { namespace, name } => ("AgentRun", namespace, name),
                Outcome::GateApplied { namespace, name } => ("ApprovalGate", namespace, name),
                _ => continue,
            };
            self.metrics.resync.recovered(kind);
            pass.recovered.push(Recovered {
                kind,
                namespace: namespace.clone(),
                name: name.clone(),
            });
        }
    }

    fn listed(&self, pass: &mut Pass, listing: &'static str, not_modified: bool) {
        pass.listings += 1;
        pass.not_modified += usize::from(not_modified);
        self.metrics.resync.listing(listing, not_modified);
    }

    fn settled(&self) -> std::sync::MutexGuard<'_, HashMap<SettledKey, Option<u64>>> {
        self.settled.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
