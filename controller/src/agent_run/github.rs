//! The run's side effects on GitHub, applied by the reconciler after [`super::decide`]: the
//! commit identity handed to agent pods, opening the pull request for a pushed branch (with
//! its labels and ApprovalGate), keeping the one progress comment on the issue current, and a
//! follow-up's findings as a review that only comments.
//!
//! Every call is idempotent so a retried reconcile repeats nothing: an existing pull request
//! for the branch is found instead of a second one opened, the progress comment is found by
//! its marker when the status lost its id, and it is edited only when its text changed.

use countersign_crds::agent_run::ProgressComment;
use countersign_crds::approval_gate::ApprovalGateSpec;
use countersign_crds::common::PullRequestRef;
use countersign_crds::keys::{PROJECT_LABEL, PULL_REQUEST_LABEL};
use countersign_crds::task_file::CommitIdentity;
use countersign_crds::{AgentRun, ApprovalGate, GitHubUser, LocalRef, Project};
use countersign_github::tokens::RepoRef;
use countersign_github::{InstallationClient, NewPullRequest, OpenedPullRequest};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use super::report::{self, RunFacts};
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};

/// The installation client for the Project's repository, when a GitHub App is configured
/// and the Project manages the repository (a Project that does not gets no GitHub calls).
pub async fn installation(ctx: &Context, project: &Project) -> Result<Option<InstallationClient>> {
    let Some(app) = &ctx.github else {
        return Ok(None);
    };
    if repository_problem(ctx, project).await?.is_some() {
        return Ok(None);
    }
    let id = ctx
        .minter
        .installation_for(&repo_ref(project))
        .await
        .map_err(Error::Token)?;
    Ok(Some(app.installation(id)))
}

/// The repository of `project` as the token minter takes it: the installation is GitHub's,
/// the spec's number only checked against it.
pub fn repo_ref(project: &Project) -> RepoRef {
    RepoRef {
        owner: project.spec.repository.owner.clone(),
        name: project.spec.repository.name.clone(),
        expected_installation: project.spec.installation.as_ref().map(|i| i.id),
    }
}

/// Why the Project may not act for its repository (`Ready` reason, message), if it may not:
/// it does not own the repository, or (with GitHub configured) the installation GitHub
/// reports is missing or not the one the spec names. Transient GitHub trouble is an error.
pub async fn repository_problem(
    ctx: &Context,
    project: &Project,
) -> Result<Option<(&'static str, String)>> {
    let claim = ctx
        .claims
        .claim_of(project)
        .await
        .map_err(|e| Error::NotOwner(e.to_string()))?;
    if !claim.owns() {
        return Ok(Some((claim.reason(), claim.message(project))));
    }
    if !ctx.minter.is_configured() {
        return Ok(None);
    }
    match ctx.minter.installation_for(&repo_ref(project)).await {
        Ok(_) => Ok(None),
        Err(e) if e.is_transient() => Err(Error::Token(e)),
        Err(e) => Ok(Some((e.reason(), e.to_string()))),
    }
}

/// Who agent commits are made as: the App's bot account (looked up once), else the
/// configured fallback identity.
pub async fn commit_author(ctx: &Context, project: &Project) -> Result<CommitIdentity> {
    let (name, email) = &ctx.settings.commit_identity;
    let fallback = CommitIdentity {
        name: name.clone(),
        email: email.clone(),
    };
    let Some(github) = installation(ctx, project).await? else {
        return Ok(fallback);
    };
    let account = ctx
        .bot_account
        .get_or_try_init(|| async { github.bot_account().await })
        .await?;
    Ok(CommitIdentity {
        name: account.login.clone(),
        email: account.noreply_email(),
    })
}

/// Opens (or finds) the pull request for the run's branch, labels it and makes sure its
/// ApprovalGate exists (the bot also creates it from the `pull_request.opened` webhook; a
/// lost webhook must not leave the pull request without its gate).
pub async fn open_pull_request(
    ctx: &Context,
    github: &InstallationClient,
    project: &Project,
    facts: &RunFacts<'_>,
) -> Result<OpenedPullRequest> {
    let repo = &project.spec.repository;
    let branch = facts
        .status
        .branch
        .clone()
        .unwrap_or_else(|| countersign_crds::task_file::branch_for(&facts.run.name_any()));
    let settings = &project.spec.pull_requests;
    // Fork mode: the branch lives in the fork, and the pull request is cross-repository.
    let head = match &settings.head_repository {
        Some(fork) => format!("{}:{branch}", fork.owner),
        None => branch.clone(),
    };
    let opened = match github
        .pull_request_for_branch(&repo.owner, &repo.name, &head)
        .await?
    {
        Some(existing) => existing,
        None => {
            let title = report::pull_request_title(facts.run);
            let body = report::pull_request_body(facts);
            let pull = NewPullRequest {
                title: &title,
                head: &head,
                base: &repo.default_branch,
                body: &body,
                draft: settings.draft,
            };
            let opened = github
                .open_pull_request(&repo.owner, &repo.name, &pull)
                .await?;
            tracing::info!(number = opened.number, branch = %branch, "opened the agent's pull request");
            opened
        }
    };
    let labels = report::pull_request_labels(facts.agent, &settings.labels);
    github
        .add_labels(&repo.owner, &repo.name, opened.number, &labels)
        .await?;
    ensure_gate(ctx, project, facts.run, &opened).await?;
    Ok(opened)
}

/// The status' record of an opened pull request.
pub fn pull_request_ref(opened: &OpenedPullRequest) -> PullRequestRef {
    PullRequestRef {
        number: opened.number,
        url: opened.html_url.clone(),
    }
}

/// Everyone who asked for `run`: who started it and whoever asked for a retry.
fn requesters_of(run: &AgentRun) -> Vec<GitHubUser> {
    let task = &run.spec.task;
    let mut all: Vec<GitHubUser> = Vec::new();
    for u in task.requested_by.iter().chain(&task.requesters) {
        if !all
            .iter()
            .any(|k| countersign_policies::approvals::same_person(k, u))
        {
            all.push(u.clone());
        }
    }
    all
}

/// Creates the pull request's ApprovalGate unless it exists, recording who asked for the run
/// on it (`spec.requesters`), so they stay unable to approve even after the run is deleted.
/// Created (not applied) so the bot's server-side apply of its fields later takes them over
/// without a conflict; the bot never sets `requesters`.
async fn ensure_gate(
    ctx: &Context,
    project: &Project,
    run: &AgentRun,
    opened: &OpenedPullRequest,
) -> Result<()> {
    let ns = run.namespace().unwrap_or_default();
    let name = countersign_crds::names::gate_name(&project.name_any(), opened.number);
    let gates = Api::<ApprovalGate>::namespaced(ctx.client.clone(), &ns);
    let requesters = requesters_of(run);
    if let Some(existing) = gates.get_opt(&name).await? {
        let missing = requesters.iter().any(|r| {
            !existing
                .spec
                .requesters
                .iter()
                .any(|k| countersign_policies::approvals::same_person(k, r))
        });
        if missing {
            let mut all = existing.spec.requesters.clone();
            all.extend(requesters);
            let patch = serde_json::json!({"spec": {"requesters": all}});
            let params = kube::api::PatchParams {
                field_manager: Some(MANAGER.into()),
                ..kube::api::PatchParams::default()
            };
            gates
                .patch(&name, &params, &kube::api::Patch::Merge(&patch))
                .await?;
        }
        return Ok(());
    }
    let author = match ctx.bot_account.get() {
        Some(bot) => GitHubUser {
            login: bot.login.clone(),
            id: bot.id,
        },
        None => GitHubUser {
            login: ctx.settings.commit_identity.0.clone(),
            id: None,
        },
    };
    let mut gate = ApprovalGate::new(
        &name,
        ApprovalGateSpec {
            project_ref: LocalRef::new(project.name_any()),
            pull_request_number: opened.number,
            base_branch: project.spec.repository.default_branch.clone(),
            author,
            ai_generated: true,
            agent_run_ref: Some(LocalRef::new(run.name_any())),
            requesters,
        },
    );
    gate.metadata.namespace = Some(ns);
    gate.metadata.labels = Some(
        [
            (
                PROJECT_LABEL.to_owned(),
                countersign_crds::names::label_value(&project.name_any()),
            ),
            (PULL_REQUEST_LABEL.to_owned(), opened.number.to_string()),
        ]
        .into(),
    );
    gate.metadata.owner_references = project.uid().map(|uid| {
        vec![OwnerReference {
            api_version: Project::api_version(&()).into_owned(),
            kind: Project::kind(&()).into_owned(),
            name: project.name_any(),
            uid,
            controller: None,
            block_owner_deletion: None,
        }]
    });
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    match gates.create(&params, &gate).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Brings the progress comment on the run's issue up to date: creates it (or finds it by its
/// marker), or edits it when its text changed. Returns what the status should record; `None`
/// when the run has no issue.
pub async fn update_progress(
    github: &InstallationClient,
    project: &Project,
    facts: &RunFacts<'_>,
) -> Result<Option<ProgressComment>> {
    let Some(issue) = facts.run.spec.task.issue_number else {
        return Ok(None);
    };
    let repo = &project.spec.repository;
    let body = report::progress_comment(facts);
    let digest = report::digest(&body);
    let known = facts.status.progress_comment.clone();
    if known.as_ref().is_some_and(|c| c.digest == digest) {
        return Ok(known);
    }
    let id = match known {
        Some(comment) => Some(comment.id),
        None => {
            let marker = report::progress_marker(facts.run);
            github
                .issue_comments(&repo.owner, &repo.name, issue)
                .await?
                .into_iter()
                .find(|c| c.body.starts_with(&marker) && c.user.as_ref().is_some_and(|u| u.is_bot))
                .map(|c| c.id)
        }
    };
    let id = match id {
        Some(id) => {
            github
                .update_issue_comment(&repo.owner, &repo.name, id, &body)
                .await?;
            id
        }
        None => {
            github
                .create_issue_comment(&repo.owner, &repo.name, issue, &body)
                .await?
        }
    };
    Ok(Some(ProgressComment { id, digest }))
}

/// Posts a follow-up's findings on pull request `number` as a review that only comments
/// (never an approval: the bot's reviews and the commands in them count for nothing), unless
/// a review of the bot's carrying this attempt's marker is there already (a retried reconcile
/// repeats nothing).
pub async fn post_findings(
    github: &InstallationClient,
    project: &Project,
    run: &AgentRun,
    agent: Option<&str>,
    number: u64,
    attempt: u32,
    findings: &str,
) -> Result<()> {
    let repo = &project.spec.repository;
    let marker = report::findings_marker(run, attempt);
    let posted = github
        .pull_request_reviews(&repo.owner, &repo.name, number)
        .await?
        .into_iter()
        .any(|r| r.body.starts_with(&marker) && r.user.as_ref().is_some_and(|u| u.is_bot));
    if !posted {
        let body = report::findings_review(run, agent, attempt, findings);
        github
            .comment_review(&repo.owner, &repo.name, number, &body)
            .await?;
    }
    Ok(())
}
