//! One evaluation of a gate: read the pull request and its signals from GitHub, score it with
//! the Project's RiskPolicy, decide (see [`super::decide`]), carry out the plan's side effects
//! ([`super::effects`]) and write the status ([`super::status`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_crds::conditions::{self};
use countersign_crds::{
    AgentRun, ApprovalGate, ApprovalGateStatus, GatePhase, GitHubUser, Project,
};
use countersign_github::{Account, AccountKind};
use countersign_github::{GitHubApp, GitHubError, InstallationClient};
use countersign_policies::CompiledPolicy;
use countersign_policies::approvals::{PullFacts, SignalKind};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};

use super::decide::{self, Audit, Inputs, PullState};
use super::facts::{self, CommentPlace, SignalContext};
use super::read::{change_ids, read_pull};
use crate::context::Context;
use crate::error::Result;

use super::effects::{Checks, MergeStep, notice_marker, notice_text, reviewers_for, try_merge};
use super::status::{publish, save};
use super::{Failure, MERGE_POLL, problem};

/// Most requesters a gate keeps (its schema's `maxItems`).
const MAX_REQUESTERS: usize = 50;
/// Most pushers a gate keeps (its schema's `maxItems`).
const MAX_PUSHERS: usize = 200;

/// Evaluates `gate`; `current` (a copy of it) follows every status write, so the caller
/// records a failure on top of what was saved.
pub(super) async fn evaluate(
    gate: &ApprovalGate,
    current: &mut ApprovalGate,
    ctx: &Arc<Context>,
    recorder: &Recorder,
) -> Result<Action, Failure> {
    let ns = gate.namespace().unwrap_or_default();
    let wait = ctx.settings.wait_requeue;
    ctx.claims
        .ready()
        .await
        .map_err(|e| problem("ClaimUnknown", e.to_string(), wait))?;
    let Some(project) = ctx.claims.project(&ns, &gate.spec.project_ref.name) else {
        return Err(problem(
            "ProjectNotFound",
            format!("Project {} does not exist", gate.spec.project_ref.name),
            wait,
        ));
    };
    // A Project that does not manage its repository publishes nothing for it.
    let claim = ctx
        .claims
        .claim_of(&project)
        .await
        .map_err(|e| problem("ClaimUnknown", e.to_string(), wait))?;
    if !claim.owns() {
        return Err(problem(
            claim.reason(),
            claim.message(&project),
            Duration::from_secs(300),
        ));
    }
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
    let Some(read) = read_pull(ctx, &github, (owner, repo_name), pr).await? else {
        return Err(Failure::Problem(super::Problem {
            reason: "PullRequestMoving",
            message: "the pull request's head kept moving while it was read; trying again"
                .to_owned(),
            retry: wait,
            transient: true,
        }));
    };
    let pr = &read.pr;
    let now = ctx.clock.now();
    let bot_login = format!("{}[bot]", app.slug().await?);
    let prev = gate.status.clone().unwrap_or_default();

    let tree_sha = match read.commits.iter().find(|c| c.sha == pr.head_sha) {
        Some(c) => c.tree_sha.clone(),
        None => github
            .commit_tree(owner, repo_name, &pr.head_sha)
            .await?
            .unwrap_or_default(),
    };
    let tampered = facts::tampered_comments(gate);
    let heads = facts::command_heads(gate);
    let review_bodies = facts::review_bodies(gate);
    let cx = SignalContext {
        bot_login: &bot_login,
        head_sha: &pr.head_sha,
        previous: &prev.approvals,
        tampered: &tampered,
        heads: &heads,
        review_bodies: &review_bodies,
        now,
    };
    let mut signals = facts::review_signals(&read.reviews, &cx);
    signals.extend(facts::comment_signals(
        &read.issue_comments,
        CommentPlace::Issue,
        &cx,
    ));
    signals.extend(facts::comment_signals(
        &read.review_comments,
        CommentPlace::Review,
        &cx,
    ));
    let (changes, remembered) = change_ids(
        &github,
        (owner, repo_name),
        &pr.base_ref,
        &prev.changes,
        (&pr.head_sha, read.change_id.as_deref()),
        signals
            .iter()
            .filter(|s| s.kind == SignalKind::Approve)
            .filter_map(|s| s.sha.as_deref()),
    )
    .await?;

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

    let requesters = requesters(ctx, &ns, gate, &prev).await?;
    let pushers = facts::unique_users(facts::pushers_of(gate), MAX_PUSHERS);
    let change = facts::change_of(gate, &project, pr, &read.files, read.incomplete.clone());
    let assessment = policy.evaluate(&change);
    let agent = GitHubUser {
        login: bot_login.clone(),
        id: None,
    };
    // Once the bot has seen pushes of this pull request, a head it has not seen yet is one
    // whose pusher is not known: nothing approves until its event arrives (moments later;
    // the gate is looked at again soon).
    let pushed_heads = countersign_crds::keys::pushed_heads(gate.annotations());
    let awaiting_push =
        !pushed_heads.is_empty() && !pushed_heads.contains(&pr.head_sha.to_ascii_lowercase());
    let pull_facts = PullFacts {
        awaiting_push,
        head_sha: pr.head_sha.clone(),
        change_id: read.change_id.clone(),
        author: Some(facts::user_of(&pr.author)),
        ai_generated: gate.spec.ai_generated,
        requesters: requesters.clone(),
        agent_accounts: vec![agent],
        committers: facts::committers_of(&read.commits),
        pushers: pushers.clone(),
        changes,
        signals,
        roles,
        // Filled in from the status's escalations by `decide`.
        escalated_roles: Vec::new(),
        stand_ins: Vec::new(),
    };
    let state = if pr.merged {
        PullState::Merged
    } else if pr.state == countersign_github::PullState::Closed {
        PullState::Closed
    } else {
        PullState::Open
    };
    let settings = &project.spec.pull_requests;
    let plan = decide::decide(Inputs {
        gate,
        assessment: &assessment,
        duties: policy.separation_of_duties(),
        facts: pull_facts,
        audit: Audit {
            tree_sha,
            changes: remembered,
            requesters,
            pushers,
        },
        state,
        draft: pr.draft,
        request_reviewers: settings.request_reviewers,
        auto_merge: settings.auto_merge,
        now,
    });

    let mut requeue = plan.requeue_after;
    if awaiting_push {
        requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
    }

    // Side effects are recorded as they happen, so a failure in between never repeats one
    // and the status never claims what GitHub has not been told. First the decision itself,
    // with nothing done yet: the reviews not asked, the notice pending, the check runs as
    // they were. Written with the resourceVersion it was decided from, it also proves the
    // copy current before GitHub hears of it.
    let checks = Checks::new(ctx, gate, &project, &plan.status, app.app_id());
    let mut status = plan.status.clone();
    status.requested_roles = prev.requested_roles.clone();
    let effects =
        checks.due() || !plan.request_roles.is_empty() || plan.notice.is_some() || plan.merge;
    save(current, ctx, &status, effects).await?;
    if prev.phase != status.phase {
        let type_ = match status.phase {
            GatePhase::Rejected | GatePhase::Expired | GatePhase::Held => EventType::Warning,
            _ => EventType::Normal,
        };
        // Same reason as the Ready condition's (the phase's name).
        let reason = format!("{:?}", status.phase);
        publish(recorder, gate, type_, &reason, &conditions_message(&status)).await;
        tracing::info!(phase = ?status.phase, "approval gate changed phase");
    }

    if checks.publish_head(&github, &mut status).await? {
        save(current, ctx, &status, false).await?;
    }
    if checks.publish_merge_group(&github, &mut status).await? {
        save(current, ctx, &status, false).await?;
    }
    if !plan.request_roles.is_empty() {
        let (users, teams) =
            reviewers_for(&project, &plan.request_roles, &pr.author.login, &bot_login);
        if !users.is_empty() || !teams.is_empty() {
            github
                .request_reviewers(owner, repo_name, number, &users, &teams)
                .await?;
        }
        status.requested_roles = plan.status.requested_roles.clone();
        save(current, ctx, &status, false).await?;
    }
    if let Some(notice) = &plan.notice {
        let marker = status
            .escalations
            .last()
            .map(|e| notice_marker(gate, e))
            .unwrap_or_default();
        // A pass that posted it and failed before recording it left the marker behind.
        let posted = read.issue_comments.iter().any(|c| {
            c.user
                .as_ref()
                .is_some_and(|u| u.login.eq_ignore_ascii_case(&bot_login))
                && c.body.contains(&marker)
        });
        if !posted {
            let body = format!("{}\n\n{marker}", notice_text(&project, notice, &status));
            github
                .create_issue_comment(owner, repo_name, number, &body)
                .await?;
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
        if let Some(last) = status.escalations.last_mut() {
            last.notice_pending = false;
        }
        save(current, ctx, &status, false).await?;
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
                status.phase = GatePhase::Merged;
                conditions::apply_readiness(
                    &mut status.conditions,
                    &GatePhase::Merged.readiness("Merged automatically"),
                    gate.metadata.generation,
                    ctx.clock.now(),
                );
                publish(
                    recorder,
                    gate,
                    EventType::Normal,
                    "Merged",
                    &conditions_message(&status),
                )
                .await;
                tracing::info!(phase = ?status.phase, "approval gate changed phase");
            }
            MergeStep::Waiting => requeue = Some(requeue.map_or(MERGE_POLL, |r| r.min(MERGE_POLL))),
            MergeStep::Refused(message) => {
                status.last_error = Some(countersign_policies::truncate(
                    &format!("automatic merge refused: {message}"),
                    1024,
                ));
                requeue = Some(Duration::from_secs(300));
            }
        }
        save(current, ctx, &status, false).await?;
    }
    // What was published and not saved yet (a check run updated).
    save(current, ctx, &status, false).await?;
    // The waits were measured from when the evaluation read the clock; what it spent since
    // (GitHub retries and their backoff) is taken off, so a deadline is not missed by it.
    let spent = Duration::try_from(ctx.clock.now().duration_since(now)).unwrap_or_default();
    Ok(match requeue {
        Some(after) => Action::requeue(after.saturating_sub(spent).max(Duration::from_secs(1))),
        None => Action::requeue(ctx.settings.resync_interval),
    })
}

pub(super) fn conditions_message(status: &ApprovalGateStatus) -> String {
    conditions::find(&status.conditions, conditions::READY)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

pub(super) async fn compiled_policy(
    ctx: &Context,
    ns: &str,
    project: &Project,
) -> Result<Arc<CompiledPolicy>, Failure> {
    let name = &project.spec.risk_policy_ref.name;
    ctx.caches.policies.ready().await.map_err(|e| {
        problem(
            "RiskPolicyUnknown",
            e.to_string(),
            ctx.settings.wait_requeue,
        )
    })?;
    let Some(policy) = ctx.caches.policies.get(ns, name) else {
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The client of the installation GitHub reports for the Project's repository; a number
/// in the Project's spec is only checked against it.
pub(super) async fn installation(
    app: &GitHubApp,
    project: &Project,
) -> Result<InstallationClient, Failure> {
    let repo = &project.spec.repository;
    let expected = project.spec.installation.as_ref().map(|i| i.id);
    match app
        .verified_installation(&repo.owner, &repo.name, expected)
        .await
    {
        Ok(id) => Ok(app.installation(id)),
        Err(e) if e.is_transient() => Err(Failure::GitHub(GitHubError::Transport(e.to_string()))),
        Err(e) => Err(problem(e.reason(), e.to_string(), Duration::from_secs(300))),
    }
}

/// Everyone who asked for the AI run: the gate's own record (its spec, written when the
/// pull request was opened, and its status, kept once seen) and the AgentRun while it
/// exists. Deleting the run takes nobody off the list.
pub(super) async fn requesters(
    ctx: &Context,
    ns: &str,
    gate: &ApprovalGate,
    prev: &ApprovalGateStatus,
) -> Result<Vec<GitHubUser>, Failure> {
    let mut all: Vec<GitHubUser> = gate.spec.requesters.clone();
    all.extend(prev.requesters.iter().cloned());
    if let Some(run) = gate.spec.agent_run_ref.as_ref() {
        // From the runs cache; a run it does not show is looked up in the API before it
        // counts as gone (its requesters must not be missed).
        let run = match ctx.caches.runs.get(ns, &run.name) {
            Some(cached) => Some((*cached).clone()),
            None => {
                Api::<AgentRun>::namespaced(ctx.client.clone(), ns)
                    .get_opt(&run.name)
                    .await?
            }
        };
        if let Some(run) = run {
            all.extend(run.spec.task.requested_by);
            all.extend(run.spec.task.requesters);
        }
    }
    Ok(facts::unique_users(all, MAX_REQUESTERS))
}
