//! One evaluation of a gate: read the pull request and its signals from GitHub, score it with
//! the Project's RiskPolicy, decide (see [`super::decide`]), carry out the plan's side effects
//! ([`super::effects`]) and write the status ([`super::status`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_crds::conditions::{self};
use countersign_crds::{
    AgentRun, ApprovalGate, ApprovalGateStatus, GatePhase, GitHubUser, Project, RiskPolicy,
};
use countersign_github::{Account, AccountKind};
use countersign_github::{GitHubApp, GitHubError, InstallationClient};
use countersign_policies::CompiledPolicy;
use countersign_policies::approvals::{PullFacts, SignalKind};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};

use super::decide::{self, Inputs, PullState};
use super::facts::{self, CommentContext};
use crate::context::Context;
use crate::error::Result;

use super::effects::{MergeStep, notice_text, publish_checks, reviewers_for, try_merge};
use super::status::{publish, write_status};
use super::{Failure, MAX_TREE_LOOKUPS, MERGE_POLL, problem};

pub(super) async fn evaluate(
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(super) async fn installation(
    app: &GitHubApp,
    project: &Project,
) -> Result<InstallationClient, Failure> {
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

pub(super) async fn requester(
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
