//! The gate's side effects on GitHub: the `countersign/approval` check runs, review requests,
//! notices (reminders, escalations, expiry) and the merge. What to do is decided before;
//! these only do it.

use std::collections::HashMap;

use countersign_crds::keys::MERGE_GROUP_SHA_ANNOTATION;
use countersign_crds::{ApprovalGate, ApprovalGateStatus, Project, RoleName};
use countersign_github::CHECK_NAME;
use countersign_github::gate_report;
use countersign_github::{
    CheckRunRequest, CheckStatus, GitHubApp, GitHubError, InstallationClient, MergeMethod,
    MergeOutcome,
};
use kube::ResourceExt;

use super::decide::{Notice, Plan};
use crate::context::Context;
use crate::error::Result;

use super::Failure;

/// Keeps the check run on the head (and the newest merge-queue commit) in step with the
/// new status; creates a new one when the head moved or the old one disappeared.
pub(super) async fn publish_checks(
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
    // The merge-queue commit's check follows the gate for as long as the pull request is
    // queued: a hold or a rejection after it entered the queue takes the queue's green away.
    let Some(sha) = gate.annotations().get(MERGE_GROUP_SHA_ANNOTATION).cloned() else {
        return Ok(());
    };
    let request = CheckRunRequest {
        head_sha: &sha,
        ..request
    };
    let same_group = prev.merge_group_sha.as_deref() == Some(sha.as_str());
    let known = prev.merge_group_check_run_id.filter(|_| same_group);
    match known {
        Some(_) if unchanged_output(&before, &out) => {}
        Some(id) if !reopened => match github.update_check_run(owner, name, id, &request).await {
            Ok(()) => {}
            Err(GitHubError::NotFound(_)) => {
                let id = github.create_check_run(owner, name, &request).await?;
                plan.status.merge_group_check_run_id = Some(id);
            }
            Err(e) => return Err(e.into()),
        },
        _ => {
            let id = github.create_check_run(owner, name, &request).await?;
            plan.status.merge_group_sha = Some(sha);
            plan.status.merge_group_check_run_id = Some(id);
        }
    }
    Ok(())
}

fn unchanged_output(before: &gate_report::CheckOutput, after: &gate_report::CheckOutput) -> bool {
    before == after
}

/// Logins and team slugs bound to `roles`, without the author and the bot (GitHub refuses
/// to ask an author to review their own pull request).
pub(super) fn reviewers_for(
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
pub(super) fn notice_text(
    project: &Project,
    notice: &Notice,
    status: &ApprovalGateStatus,
) -> String {
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
        TimeoutAction::Escalate
            if notice.mode == Some(countersign_crds::risk_policy::EscalationMode::StandIn) =>
        {
            let stands_in_for: Vec<String> = notice
                .stands_in_for
                .iter()
                .map(|r| format!("`{r}`"))
                .collect();
            format!(
                "⏫ **Escalated:** the approvals were not all in before the deadline, so {} is \
                 now asked and can approve in place of {}. Still needed: {missing}, or one \
                 approval from `{}`. Next deadline: {deadline}.",
                notice.to_role.as_ref().map(mentions).unwrap_or_default(),
                stands_in_for.join(", "),
                notice
                    .to_role
                    .as_ref()
                    .map(|r| r.as_str())
                    .unwrap_or_default()
            )
        }
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

pub(super) enum MergeStep {
    Merged,
    Waiting,
    Refused(String),
}

/// Merges when every other check run and commit status on the head succeeded; never waits
/// on our own check (it is the one saying "approved").
#[allow(clippy::too_many_arguments)]
pub(super) async fn try_merge(
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
