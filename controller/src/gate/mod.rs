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
pub mod facts;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_crds::conditions::{self, Readiness};
use countersign_crds::keys::MERGE_GROUP_SHA_ANNOTATION;
use countersign_crds::{
    AgentRun, ApprovalGate, ApprovalGateStatus, GatePhase, GitHubUser, Project, RiskPolicy,
    RoleName,
};
use countersign_github::CHECK_NAME;
use countersign_github::authz::Authorizer;
use countersign_github::gate_report;
use countersign_github::{
    CheckRunRequest, CheckStatus, GitHubApp, GitHubError, InstallationClient, MergeMethod,
    MergeOutcome,
};
use countersign_policies::CompiledPolicy;
use countersign_policies::approvals::{PullFacts, SignalKind};
use countersign_webhooks::github::event::{Account, AccountKind};
use futures::StreamExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{Predicate, WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::decide::{Inputs, Notice, Plan, PullState};
use self::facts::CommentContext;
use crate::agent_run::{scoped, tokio_stream_interval};
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};

/// How often an approved gate waiting for other checks before auto-merging looks again.
pub const MERGE_POLL: Duration = Duration::from_secs(30);
/// Most old commits whose tree is looked up per reconcile (approvals on force-pushed heads).
const MAX_TREE_LOOKUPS: usize = 10;

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
    let (reader, writer) = reflector::store();
    // Only spec and annotation changes (the bot's nudges) trigger a reconcile; our own
    // status writes do not, so a gate is not re-read from GitHub after every write.
    let gates = watcher(scoped::<ApprovalGate>(&ctx), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(
            predicates::generation.combine(predicates::annotations),
            Default::default(),
        );
    let controller = Controller::for_stream(gates, reader);
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
        .run(reconcile, error_policy, Arc::new((ctx, recorder)))
        .for_each(|_| async {})
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
    tracing::warn!(gate = %gate.name_any(), error = %err, "approval gate reconcile failed");
    Action::requeue(err.backoff())
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
    match evaluate(&gate, ctx, recorder).await {
        Ok(action) => Ok(action),
        Err(Failure::Problem(problem)) => {
            write_problem(&gate, ctx, &problem).await?;
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
            write_problem(&gate, ctx, &problem).await?;
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
}

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

async fn evaluate(
    gate: &ApprovalGate,
    ctx: &Arc<Context>,
    recorder: &Recorder,
) -> Result<Action, Failure> {
    let ns = gate.namespace().unwrap_or_default();
    let wait = ctx.settings.wait_requeue;
    let Some(project) = Api::<Project>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&gate.spec.project_ref.name)
        .await?
    else {
        return Err(problem(
            "ProjectNotFound",
            format!("Project {} does not exist", gate.spec.project_ref.name),
            wait,
        ));
    };
    let Some(app) = ctx.github.clone() else {
        return Err(problem(
            "NoGitHubCredentials",
            "the controller has no GitHub App configured (--github-app-id), so it cannot read \
             the pull request"
                .to_owned(),
            wait,
        ));
    };
    let policy = compiled_policy(ctx, &ns, &project).await?;
    let github = installation(&app, &project).await?;
    let repo = &project.spec.repository;
    let (owner, repo_name) = (repo.owner.as_str(), repo.name.as_str());
    let number = gate.spec.pull_request_number;

    let pr = match github.pull_request(owner, repo_name, number).await {
        Ok(pr) => pr,
        Err(GitHubError::NotFound(_)) => {
            return Err(problem(
                "PullRequestNotFound",
                format!("{owner}/{repo_name}#{number} does not exist or is not visible to the App"),
                Duration::from_secs(300),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let (files, commits, reviews, issue_comments, review_comments) = tokio::try_join!(
        github.pull_request_files(owner, repo_name, number),
        github.pull_request_commits(owner, repo_name, number),
        github.pull_request_reviews(owner, repo_name, number),
        github.issue_comments(owner, repo_name, number),
        github.review_comments(owner, repo_name, number),
    )?;
    let now = ctx.clock.now();
    let bot_login = format!("{}[bot]", app.slug().await?);
    let prev = gate.status.clone().unwrap_or_default();

    let mut trees = facts::trees_of(&commits);
    let tree_sha = match trees.get(&pr.head_sha) {
        Some(tree) => tree.clone(),
        None => github
            .commit_tree(owner, repo_name, &pr.head_sha)
            .await?
            .unwrap_or_default(),
    };
    let tampered = facts::tampered_ids(gate);
    let mut signals = facts::review_signals(&reviews, &pr.head_sha, now);
    let comments: Vec<_> = issue_comments.into_iter().chain(review_comments).collect();
    signals.extend(facts::comment_signals(
        &comments,
        &CommentContext {
            bot_login: &bot_login,
            head_sha: &pr.head_sha,
            commits: &commits,
            previous: &prev.approvals,
            tampered: &tampered,
        },
    ));
    let mut lookups = 0;
    for s in &signals {
        if !trees.contains_key(&s.sha) && lookups < MAX_TREE_LOOKUPS {
            lookups += 1;
            if let Some(tree) = github.commit_tree(owner, repo_name, &s.sha).await? {
                trees.insert(s.sha.clone(), tree);
            }
        }
    }

    // Roles of everyone who said something; holds count only from role holders or people
    // who can write to the repository (like Prow's /hold).
    let mut roles = HashMap::new();
    for s in &signals {
        let Some(id) = s.user.id else { continue };
        if roles.contains_key(&id) {
            continue;
        }
        let account = Account {
            id,
            login: s.user.login.clone(),
            kind: AccountKind::User,
        };
        let held = ctx
            .gates
            .authorizer
            .roles(&github, &project, &account)
            .await?;
        roles.insert(id, held);
    }
    let mut may_hold: HashMap<u64, bool> = HashMap::new();
    for s in &signals {
        let (Some(id), true) = (
            s.user.id,
            matches!(s.kind, SignalKind::Hold | SignalKind::Unhold),
        ) else {
            continue;
        };
        if may_hold.contains_key(&id) {
            continue;
        }
        let allowed = roles.get(&id).is_some_and(|r| !r.is_empty())
            || github
                .repo_permission(owner, repo_name, &s.user.login)
                .await?
                .satisfies(countersign_crds::project::RepoPermission::Write);
        may_hold.insert(id, allowed);
    }
    signals.retain(|s| {
        !matches!(s.kind, SignalKind::Hold | SignalKind::Unhold)
            || s.user.id.and_then(|id| may_hold.get(&id).copied()) == Some(true)
    });

    let requester = requester(ctx, &ns, gate).await?;
    let change = facts::change_of(gate, &project, &pr, &files);
    let assessment = policy.evaluate(&change);
    let agent = GitHubUser {
        login: bot_login.clone(),
        id: None,
    };
    let pull_facts = PullFacts {
        head_sha: pr.head_sha.clone(),
        tree_sha,
        author: Some(facts::user_of(&pr.author)),
        ai_generated: gate.spec.ai_generated,
        requester,
        agent_accounts: vec![agent],
        committers: facts::committers_of(&commits),
        trees,
        signals,
        roles,
        escalated_roles: Vec::new(),
    };
    let state = if pr.merged {
        PullState::Merged
    } else if pr.state == countersign_github::PullState::Closed {
        PullState::Closed
    } else {
        PullState::Open
    };
    let settings = &project.spec.pull_requests;
    let mut plan = decide::decide(Inputs {
        gate,
        assessment: &assessment,
        duties: policy.separation_of_duties(),
        facts: pull_facts,
        state,
        draft: pr.draft,
        request_reviewers: settings.request_reviewers,
        auto_merge: settings.auto_merge,
        now,
    });

    let mut requeue = plan.requeue_after;
    publish_checks(ctx, gate, &github, &project, &mut plan).await?;
    if !plan.request_roles.is_empty() {
        let (users, teams) =
            reviewers_for(&project, &plan.request_roles, &pr.author.login, &bot_login);
        if !users.is_empty() || !teams.is_empty() {
            github
                .request_reviewers(owner, repo_name, number, &users, &teams)
                .await?;
        }
    }
    if let Some(notice) = &plan.notice {
        let body = notice_text(&project, notice, &plan.status);
        github
            .create_issue_comment(owner, repo_name, number, &body)
            .await?;
    }
    if plan.merge {
        match try_merge(
            &github,
            owner,
            repo_name,
            number,
            &pr.head_sha,
            settings.merge_method,
            &app,
        )
        .await?
        {
            MergeStep::Merged => {
                // The phase-change event below announces it.
                plan.status.phase = GatePhase::Merged;
                conditions::apply_readiness(
                    &mut plan.status.conditions,
                    &GatePhase::Merged.readiness("Merged automatically"),
                    gate.metadata.generation,
                    ctx.clock.now(),
                );
            }
            MergeStep::Waiting => requeue = Some(requeue.map_or(MERGE_POLL, |r| r.min(MERGE_POLL))),
            MergeStep::Refused(message) => {
                plan.status.last_error = Some(countersign_policies::truncate(
                    &format!("automatic merge refused: {message}"),
                    1024,
                ));
                requeue = Some(Duration::from_secs(300));
            }
        }
    }

    if prev.phase != plan.status.phase {
        let type_ = match plan.status.phase {
            GatePhase::Rejected | GatePhase::Expired | GatePhase::Held => EventType::Warning,
            _ => EventType::Normal,
        };
        // Same reason as the Ready condition's (the phase's name).
        let reason = format!("{:?}", plan.status.phase);
        publish(
            recorder,
            gate,
            type_,
            &reason,
            &conditions_message(&plan.status),
        )
        .await;
        tracing::info!(phase = ?plan.status.phase, "approval gate changed phase");
    }
    if let Some(notice) = &plan.notice {
        let reason = match notice.action {
            countersign_crds::risk_policy::TimeoutAction::Remind => "Reminded",
            countersign_crds::risk_policy::TimeoutAction::Escalate => "Escalated",
            countersign_crds::risk_policy::TimeoutAction::Expire => "Expired",
        };
        publish(
            recorder,
            gate,
            EventType::Warning,
            reason,
            "deadline reached",
        )
        .await;
    }
    write_status(gate, ctx, &plan.status).await?;
    Ok(match requeue {
        Some(after) => Action::requeue(after.max(Duration::from_secs(1))),
        None => Action::requeue(ctx.settings.resync_interval),
    })
}

fn conditions_message(status: &ApprovalGateStatus) -> String {
    conditions::find(&status.conditions, conditions::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

async fn compiled_policy(
    ctx: &Context,
    ns: &str,
    project: &Project,
) -> Result<Arc<CompiledPolicy>, Failure> {
    let name = &project.spec.risk_policy_ref.name;
    let Some(policy) = Api::<RiskPolicy>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await?
    else {
        return Err(problem(
            "RiskPolicyNotFound",
            format!(
                "RiskPolicy {name} (referenced by Project {}) does not exist",
                project.name_any()
            ),
            ctx.settings.wait_requeue,
        ));
    };
    let key = policy.uid().unwrap_or_else(|| format!("{ns}/{name}"));
    let generation = policy.metadata.generation.unwrap_or_default();
    if let Some((g, compiled)) = lock(&ctx.gates.policies).get(&key)
        && *g == generation
    {
        return Ok(compiled.clone());
    }
    let compiled = CompiledPolicy::compile(&policy.spec).map_err(|errors| {
        let message: Vec<String> = errors.errors().iter().map(ToString::to_string).collect();
        problem(
            "RiskPolicyInvalid",
            countersign_policies::truncate(
                &format!("RiskPolicy {name} is invalid: {}", message.join("; ")),
                1024,
            ),
            ctx.settings.wait_requeue,
        )
    })?;
    let compiled = Arc::new(compiled);
    lock(&ctx.gates.policies).insert(key, (generation, compiled.clone()));
    Ok(compiled)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn installation(app: &GitHubApp, project: &Project) -> Result<InstallationClient, Failure> {
    let repo = &project.spec.repository;
    let id = match project.known_installation_id() {
        Some(id) => id,
        None => match app.installation_for_repo(&repo.owner, &repo.name).await {
            Ok(id) => id,
            Err(GitHubError::NotFound(_)) => {
                return Err(problem(
                    "InstallationNotFound",
                    format!(
                        "the GitHub App is not installed on {}/{}",
                        repo.owner, repo.name
                    ),
                    Duration::from_secs(300),
                ));
            }
            Err(e) => return Err(e.into()),
        },
    };
    Ok(app.installation(id))
}

async fn requester(
    ctx: &Context,
    ns: &str,
    gate: &ApprovalGate,
) -> Result<Option<GitHubUser>, Failure> {
    let Some(run) = gate
        .spec
        .agent_run_ref
        .as_ref()
        .filter(|_| gate.spec.ai_generated)
    else {
        return Ok(None);
    };
    Ok(Api::<AgentRun>::namespaced(ctx.client.clone(), ns)
        .get_opt(&run.name)
        .await?
        .and_then(|r| r.spec.task.requested_by))
}

/// Keeps the check run on the head (and the newest merge-queue commit) in step with the
/// new status; creates a new one when the head moved or the old one disappeared.
async fn publish_checks(
    ctx: &Context,
    gate: &ApprovalGate,
    github: &InstallationClient,
    project: &Project,
    plan: &mut Plan,
) -> Result<(), Failure> {
    let repo = &project.spec.repository;
    let (owner, name) = (repo.owner.as_str(), repo.name.as_str());
    let ns = gate.namespace().unwrap_or_default();
    let details = ctx
        .settings
        .gates_url
        .as_deref()
        .map(|base| gate_report::gate_page_url(base, &ns, &gate.name_any()));
    let mut next = gate.clone();
    next.status = Some(plan.status.clone());
    let out = gate_report::check_output(&next, details.as_deref());
    let head = plan.status.head_sha.clone().unwrap_or_default();
    let external_id = format!("{ns}/{}", gate.name_any());
    let request = CheckRunRequest {
        name: CHECK_NAME,
        head_sha: &head,
        status: out.status,
        conclusion: out.conclusion,
        title: &out.title,
        summary: &out.summary,
        details_url: details.as_deref(),
        external_id: Some(&external_id),
    };
    let prev = gate.status.clone().unwrap_or_default();
    let same_head = prev.check_run_sha.as_deref() == Some(head.as_str());
    let before = gate_report::check_output(gate, details.as_deref());
    let unchanged = same_head && before == out;
    // GitHub never moves a completed check run back to in progress: a gate that was
    // decided and is pending again (a hold, an unhold racing a push) gets a new run, which
    // GitHub and branch protection then treat as the check's state.
    let reopened = before.status == CheckStatus::Completed && out.status != CheckStatus::Completed;
    match prev.check_run_id.filter(|_| same_head && !reopened) {
        Some(_) if unchanged => {}
        Some(id) => match github.update_check_run(owner, name, id, &request).await {
            Ok(()) => {}
            Err(GitHubError::NotFound(_)) => {
                let id = github.create_check_run(owner, name, &request).await?;
                plan.status.check_run_id = Some(id);
            }
            Err(e) => return Err(e.into()),
        },
        None if unchanged => {}
        None => {
            let id = github.create_check_run(owner, name, &request).await?;
            plan.status.check_run_id = Some(id);
            plan.status.check_run_sha = Some(head.clone());
        }
    }
    let merge_group = gate
        .annotations()
        .get(MERGE_GROUP_SHA_ANNOTATION)
        .filter(|sha| Some(sha.as_str()) != prev.merge_group_sha.as_deref())
        .cloned();
    if let Some(sha) = merge_group {
        let request = CheckRunRequest {
            head_sha: &sha,
            ..request
        };
        github.create_check_run(owner, name, &request).await?;
        plan.status.merge_group_sha = Some(sha);
    }
    Ok(())
}

/// Logins and team slugs bound to `roles`, without the author and the bot (GitHub refuses
/// to ask an author to review their own pull request).
fn reviewers_for(
    project: &Project,
    roles: &[RoleName],
    author: &str,
    bot_login: &str,
) -> (Vec<String>, Vec<String>) {
    let mut users = Vec::new();
    let mut teams = Vec::new();
    for binding in project
        .spec
        .roles
        .iter()
        .filter(|b| roles.contains(&b.role))
    {
        for u in &binding.users {
            let skip =
                u.login.eq_ignore_ascii_case(author) || u.login.eq_ignore_ascii_case(bot_login);
            if !skip && !users.contains(&u.login) {
                users.push(u.login.clone());
            }
        }
        for t in &binding.teams {
            if !teams.contains(&t.slug) {
                teams.push(t.slug.clone());
            }
        }
    }
    (users, teams)
}

/// The comment posted at a deadline, mentioning who is still needed.
fn notice_text(project: &Project, notice: &Notice, status: &ApprovalGateStatus) -> String {
    use countersign_crds::risk_policy::TimeoutAction;
    let owner = &project.spec.repository.owner;
    let mentions = |role: &RoleName| -> String {
        let mut who: Vec<String> = Vec::new();
        for b in project.spec.roles.iter().filter(|b| &b.role == role) {
            who.extend(b.users.iter().map(|u| format!("@{}", u.login)));
            who.extend(b.teams.iter().map(|t| format!("@{owner}/{}", t.slug)));
        }
        if who.is_empty() {
            format!("`{role}`")
        } else {
            format!("`{role}` ({})", who.join(", "))
        }
    };
    let missing: Vec<String> = notice.missing.iter().map(mentions).collect();
    let missing = if missing.is_empty() {
        "nobody".to_owned()
    } else {
        missing.join(", ")
    };
    let deadline = status
        .deadline
        .as_ref()
        .map(|d| d.0.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    match notice.action {
        TimeoutAction::Remind => format!(
            "⏰ **Reminder:** this pull request is still waiting for approval from {missing}. \
             Next reminder: {deadline}."
        ),
        TimeoutAction::Escalate => format!(
            "⏫ **Escalated:** nobody approved before the deadline, so {} is now asked as well. \
             Still needed: {missing}. Next deadline: {deadline}.",
            notice.to_role.as_ref().map(mentions).unwrap_or_default()
        ),
        TimeoutAction::Expire => format!(
            "⌛ **Expired:** the approval deadline passed without the approvals from {missing}. \
             The `{CHECK_NAME}` check failed; push new changes to start over."
        ),
    }
}

enum MergeStep {
    Merged,
    Waiting,
    Refused(String),
}

/// Merges when every other check run and commit status on the head succeeded; never waits
/// on our own check (it is the one saying "approved").
#[allow(clippy::too_many_arguments)]
async fn try_merge(
    github: &InstallationClient,
    owner: &str,
    repo: &str,
    number: u64,
    head: &str,
    method: countersign_crds::MergeMethod,
    app: &GitHubApp,
) -> Result<MergeStep, Failure> {
    let (runs, statuses) = tokio::try_join!(
        github.check_runs_for_ref(owner, repo, head),
        github.commit_statuses(owner, repo, head),
    )?;
    let ours = |r: &countersign_github::CheckRunInfo| {
        r.name == CHECK_NAME && r.app_id.is_none_or(|id| id == app.app_id())
    };
    // GitHub lists every run; a re-run supersedes older runs of the same check.
    let mut latest: HashMap<(&str, Option<u64>), &countersign_github::CheckRunInfo> =
        HashMap::new();
    for run in runs.iter().filter(|r| !ours(r)) {
        let slot = latest.entry((run.name.as_str(), run.app_id)).or_insert(run);
        if run.id > slot.id {
            *slot = run;
        }
    }
    let mut waiting = false;
    for run in latest.into_values() {
        if run.status != "completed" {
            waiting = true;
            continue;
        }
        match run.conclusion.as_deref() {
            Some("success" | "neutral" | "skipped") => {}
            other => {
                return Ok(MergeStep::Refused(format!(
                    "check {} concluded {}",
                    run.name,
                    other.unwrap_or("without a conclusion")
                )));
            }
        }
    }
    for status in &statuses {
        match status.state.as_str() {
            "success" => {}
            "pending" => waiting = true,
            other => {
                return Ok(MergeStep::Refused(format!(
                    "status {} is {other}",
                    status.context
                )));
            }
        }
    }
    if waiting {
        return Ok(MergeStep::Waiting);
    }
    let method = match method {
        countersign_crds::MergeMethod::Merge => MergeMethod::Merge,
        countersign_crds::MergeMethod::Squash => MergeMethod::Squash,
        countersign_crds::MergeMethod::Rebase => MergeMethod::Rebase,
    };
    Ok(
        match github
            .merge_pull_request(owner, repo, number, head, method)
            .await?
        {
            MergeOutcome::Merged { .. } => MergeStep::Merged,
            MergeOutcome::NotMergeable(message) => MergeStep::Refused(message),
        },
    )
}

async fn publish(
    recorder: &Recorder,
    gate: &ApprovalGate,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.to_owned()),
        action: "Evaluate".into(),
        secondary: None,
    };
    // Events are best effort: a lost event must not fail or repeat the reconcile.
    if let Err(err) = recorder.publish(&event, &gate.object_ref(&())).await {
        tracing::debug!(error = %err, "could not publish event");
    }
}

async fn write_status(
    gate: &ApprovalGate,
    ctx: &Context,
    status: &ApprovalGateStatus,
) -> Result<(), kube::Error> {
    if gate.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = gate.namespace().unwrap_or_default();
    let patch = json!({
        "apiVersion": ApprovalGate::api_version(&()),
        "kind": ApprovalGate::kind(&()),
        "status": status,
    });
    Api::<ApprovalGate>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &gate.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(drop)
}

/// Records why the gate could not be evaluated. The check run is left as it is: pending
/// stays pending (nothing merges unevaluated); an earlier conclusion is re-evaluated when
/// the problem is fixed.
async fn write_problem(
    gate: &ApprovalGate,
    ctx: &Context,
    problem: &Problem,
) -> Result<(), kube::Error> {
    let mut status = gate.status.clone().unwrap_or_default();
    status.last_error = Some(countersign_policies::truncate(&problem.message, 1024));
    status.observed_generation = gate.metadata.generation;
    let (reason, message) = (problem.reason.to_owned(), problem.message.clone());
    let readiness = if problem.transient {
        Readiness::Progressing { reason, message }
    } else {
        Readiness::Stalled { reason, message }
    };
    conditions::apply_readiness(
        &mut status.conditions,
        &readiness,
        gate.metadata.generation,
        ctx.clock.now(),
    );
    write_status(gate, ctx, &status).await
}
