//! The gate's side effects on GitHub: the `countersign/approval` check runs, review requests,
//! notices (reminders, escalations, expiry) and the merge. What to do is decided before;
//! these only do it.

use std::collections::HashMap;

use countersign_crds::approval_gate::Escalation;
use countersign_crds::keys::MERGE_GROUP_SHA_ANNOTATION;
use countersign_crds::{ApprovalGate, ApprovalGateStatus, Project, RoleName};
use countersign_github::CHECK_NAME;
use countersign_github::gate_report;
use countersign_github::{
    CheckRunRequest, CheckStatus, GitHubApp, GitHubError, InstallationClient, MergeMethod,
    MergeOutcome,
};
use kube::ResourceExt;

use super::decide::Notice;
use crate::context::Context;
use crate::error::Result;

use super::Failure;

/// The check runs a status needs: the one on the head and, while the pull request is in the
/// merge queue, the one on the newest merge-queue commit. Built before anything is sent, so
/// the evaluation knows whether GitHub will be written to.
pub(super) struct Checks {
    owner: String,
    name: String,
    details: Option<String>,
    external_id: String,
    out: gate_report::CheckOutput,
    /// `out` as recorded in `status.checkRunOutput`.
    shows: String,
    /// What the head's and the merge-queue commit's runs show now, as recorded.
    head_shows: Option<String>,
    group_shows: Option<String>,
    head: String,
    group_sha: Option<String>,
    prev: ApprovalGateStatus,
    app_id: u64,
}

/// What one check run needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CheckStep {
    Nothing,
    Update(u64),
    Create,
}

impl Checks {
    pub(super) fn new(
        ctx: &Context,
        gate: &ApprovalGate,
        project: &Project,
        status: &ApprovalGateStatus,
        app_id: u64,
    ) -> Self {
        let repo = &project.spec.repository;
        let ns = gate.namespace().unwrap_or_default();
        let details = ctx
            .settings
            .gates_url
            .as_deref()
            .map(|base| gate_report::gate_page_url(base, &ns, &gate.name_any()));
        let mut next = gate.clone();
        next.status = Some(status.clone());
        let out = gate_report::check_output(&next, details.as_deref());
        let prev = gate.status.clone().unwrap_or_default();
        // Gates written before `checkRunOutput` existed saved their status after the check,
        // so the check showed what their status says.
        let legacy = || {
            Some(fingerprint(&gate_report::check_output(
                gate,
                details.as_deref(),
            )))
        };
        let head_shows = match &prev.check_run_output {
            Some(shows) => Some(shows.clone()),
            None if prev.check_run_id.is_some() => legacy(),
            None => None,
        };
        let group_shows = match &prev.merge_group_check_run_output {
            Some(shows) => Some(shows.clone()),
            None if prev.merge_group_check_run_id.is_some() => legacy(),
            None => None,
        };
        Self {
            owner: repo.owner.clone(),
            name: repo.name.clone(),
            shows: fingerprint(&out),
            out,
            head_shows,
            group_shows,
            details,
            external_id: format!("{ns}/{}", gate.name_any()),
            head: status.head_sha.clone().unwrap_or_default(),
            group_sha: gate.annotations().get(MERGE_GROUP_SHA_ANNOTATION).cloned(),
            prev,
            app_id,
        }
    }

    fn request<'a>(&'a self, sha: &'a str) -> CheckRunRequest<'a> {
        CheckRunRequest {
            name: CHECK_NAME,
            head_sha: sha,
            status: self.out.status,
            conclusion: self.out.conclusion,
            title: &self.out.title,
            summary: &self.out.summary,
            details_url: self.details.as_deref(),
            external_id: Some(&self.external_id),
        }
    }

    /// GitHub never moves a completed check run back to in progress: a gate that was
    /// decided and is pending again (a hold, an unhold racing a push) gets a new run, which
    /// GitHub and branch protection then treat as the check's state.
    fn reopens(&self, shows: Option<&str>) -> bool {
        shows.is_some_and(|s| s.starts_with("completed/"))
            && self.out.status != CheckStatus::Completed
    }

    fn head_step(&self) -> CheckStep {
        let same_head = self.prev.check_run_sha.as_deref() == Some(self.head.as_str());
        let shows = self.head_shows.as_deref();
        match self.prev.check_run_id.filter(|_| same_head) {
            Some(_) if shows == Some(self.shows.as_str()) => CheckStep::Nothing,
            Some(id) if !self.reopens(shows) => CheckStep::Update(id),
            _ => CheckStep::Create,
        }
    }

    fn group_step(&self) -> CheckStep {
        let Some(sha) = &self.group_sha else {
            return CheckStep::Nothing;
        };
        let same_group = self.prev.merge_group_sha.as_deref() == Some(sha.as_str());
        let shows = self.group_shows.as_deref();
        match self.prev.merge_group_check_run_id.filter(|_| same_group) {
            Some(_) if shows == Some(self.shows.as_str()) => CheckStep::Nothing,
            Some(id) if !self.reopens(shows) => CheckStep::Update(id),
            _ => CheckStep::Create,
        }
    }

    /// Whether publishing will call GitHub.
    pub(super) fn due(&self) -> bool {
        self.head_step() != CheckStep::Nothing || self.group_step() != CheckStep::Nothing
    }

    /// Brings the head's check run in step with the status and records it in `status`;
    /// says whether a new run was created (the caller saves that before going on: an
    /// update repeated after a failure is harmless, a second run is not).
    pub(super) async fn publish_head(
        &self,
        github: &InstallationClient,
        status: &mut ApprovalGateStatus,
    ) -> Result<bool, Failure> {
        let id = match self.head_step() {
            CheckStep::Nothing => return Ok(false),
            CheckStep::Update(id) => self.update(github, &self.head, id).await?,
            CheckStep::Create => {
                let known = self
                    .prev
                    .check_run_id
                    .filter(|_| self.prev.check_run_sha.as_deref() == Some(self.head.as_str()));
                self.create(github, &self.head, known).await?
            }
        };
        let new_run = status.check_run_id != Some(id)
            || status.check_run_sha.as_deref() != Some(self.head.as_str());
        status.check_run_id = Some(id);
        status.check_run_sha = Some(self.head.clone());
        status.check_run_output = Some(self.shows.clone());
        Ok(new_run)
    }

    /// Keeps the merge-queue commit's check with the gate for as long as the pull request is
    /// queued: a hold or a rejection after it entered the queue takes the queue's green
    /// away. Records a new run like [`Self::publish_head`].
    pub(super) async fn publish_merge_group(
        &self,
        github: &InstallationClient,
        status: &mut ApprovalGateStatus,
    ) -> Result<bool, Failure> {
        let Some(sha) = &self.group_sha else {
            return Ok(false);
        };
        let id = match self.group_step() {
            CheckStep::Nothing => return Ok(false),
            CheckStep::Update(id) => self.update(github, sha, id).await?,
            CheckStep::Create => {
                let known = self
                    .prev
                    .merge_group_check_run_id
                    .filter(|_| self.prev.merge_group_sha.as_deref() == Some(sha.as_str()));
                self.create(github, sha, known).await?
            }
        };
        let new_run = status.merge_group_check_run_id != Some(id)
            || status.merge_group_sha.as_deref() != Some(sha.as_str());
        status.merge_group_sha = Some(sha.clone());
        status.merge_group_check_run_id = Some(id);
        status.merge_group_check_run_output = Some(self.shows.clone());
        Ok(new_run)
    }

    /// Updates run `id`; one that disappeared is replaced. Returns the run's id.
    async fn update(
        &self,
        github: &InstallationClient,
        sha: &str,
        id: u64,
    ) -> Result<u64, Failure> {
        match github
            .update_check_run(&self.owner, &self.name, id, &self.request(sha))
            .await
        {
            Ok(()) => Ok(id),
            Err(GitHubError::NotFound(_)) => self.create(github, sha, Some(id)).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Creates the run on `sha`, unless an earlier pass created one it could not record (its
    /// answer was lost, or the status write after it failed): GitHub keeps our
    /// `external_id`, so our newest run on the commit other than `known` (the run the status
    /// already names, which a reopened gate replaces) is that one, and it is updated instead.
    async fn create(
        &self,
        github: &InstallationClient,
        sha: &str,
        known: Option<u64>,
    ) -> Result<u64, Failure> {
        let request = self.request(sha);
        let runs = github
            .check_runs_for_ref(&self.owner, &self.name, sha)
            .await?;
        let unrecorded = runs
            .iter()
            .filter(|r| {
                r.name == CHECK_NAME
                    && r.app_id == Some(self.app_id)
                    && r.external_id.as_deref() == Some(self.external_id.as_str())
            })
            .map(|r| r.id)
            .max()
            .filter(|id| Some(*id) != known && known.is_none_or(|k| *id > k));
        if let Some(id) = unrecorded {
            tracing::info!(
                check_run = id,
                "adopting a check run an earlier pass created but did not record"
            );
            github
                .update_check_run(&self.owner, &self.name, id, &request)
                .await?;
            return Ok(id);
        }
        Ok(github
            .create_check_run(&self.owner, &self.name, &request)
            .await?)
    }
}

/// What a check run shows, as `status.checkRunOutput` records it:
/// `<status>/<conclusion>/<first 16 hex digits of SHA-256 over title and summary>`.
fn fingerprint(out: &gate_report::CheckOutput) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(out.title.as_bytes());
    ctx.update(b"\0");
    ctx.update(out.summary.as_bytes());
    let digest = ctx.finish();
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let status = match out.status {
        CheckStatus::Queued => "queued",
        CheckStatus::InProgress => "in_progress",
        CheckStatus::Completed => "completed",
    };
    format!("{status}/{}/{hex}", out.conclusion.unwrap_or(""))
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

/// The hidden line a notice comment ends with: the gate and the escalation it announces,
/// so a pass that finds it on the pull request knows the comment is already there.
pub(super) fn notice_marker(gate: &ApprovalGate, escalation: &Escalation) -> String {
    format!(
        "<!-- countersign-notice: {}/{} {} -->",
        gate.namespace().unwrap_or_default(),
        gate.name_any(),
        // Whole seconds: the status stores times to the second.
        escalation.time.0.as_second()
    )
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
