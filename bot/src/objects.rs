//! The Kubernetes objects the bot writes, built purely from an event and a Project: AgentRuns
//! for triggers, ApprovalGates for pull requests, and their deterministic names.
//!
//! Names are derived from what the event is about (Project, issue, Agent; Project, pull
//! request), never from time or randomness, so a redelivered webhook maps to the object it
//! already created.

use std::collections::BTreeMap;

use countersign_crds::agent_run::{DEFAULT_RETRIES, MAX_TASK_BODY_BYTES};
use countersign_crds::approval_gate::ApprovalGateSpec;
use countersign_crds::keys::{
    AGENT_LABEL, CREATED_BY_DELIVERY_ANNOTATION, ISSUE_LABEL, LAST_DELIVERY_ANNOTATION,
    PROJECT_LABEL, PULL_REQUEST_LABEL, SOURCE_COMMENT_ANNOTATION,
};
use countersign_crds::names::{gate_name, label_value, with_suffix};
use countersign_crds::{
    AgentRun, AgentRunSpec, ApprovalGate, GitHubUser, LocalRef, Project, RunMode, Task, TaskSource,
};
use countersign_webhooks::github::event::{Account, DeliveryId, Issue, PullRequest};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use countersign_policies::visible::{visible_markdown, visible_title};

/// Prefix of branches agents push (`countersign/<run>`); pull requests from such a branch of
/// the same repository are AI-generated.
pub const AGENT_BRANCH_PREFIX: &str = "countersign/";

/// Longest `task.instructions` the CRD accepts.
pub const MAX_INSTRUCTIONS_BYTES: usize = 8 * 1024;

/// The name of the `ordinal`-th run (from 1) of `agent` on `issue` in `project`:
/// `<project>-issue-<n>-<agent>`, then `…-2`, `…-3` for later runs of the same triple.
pub fn run_name(project: &str, issue: u64, agent: &str, ordinal: u32) -> String {
    let base = format!("{project}-issue-{issue}-{agent}");
    if ordinal <= 1 {
        with_suffix(&base, "")
    } else {
        with_suffix(&base, &format!("-{ordinal}"))
    }
}

/// What a trigger asks for, before it becomes an AgentRun.
#[derive(Clone, Debug)]
pub struct RunRequest<'a> {
    /// The Project whose repository the run works on.
    pub project: &'a Project,
    /// Who works on it: an Agent (in the Project's namespace), or any Agent with some
    /// capabilities (the controller routes the run).
    pub assignee: countersign_crds::project::Assignee<'a>,
    /// The issue to work on.
    pub issue: &'a Issue,
    /// Who asked (cannot approve the result).
    pub requested_by: &'a Account,
    /// Label or comment.
    pub source: TaskSource,
    /// The trigger's mode, when it overrides the Agent's.
    pub mode: Option<RunMode>,
    /// Whether the trigger asks the Agent for a work breakdown first.
    pub breakdown: bool,
    /// Extra instructions (comment commands).
    pub instructions: Option<&'a str>,
    /// The delivery that asked.
    pub delivery: &'a DeliveryId,
    /// The comment that asked, for comment commands.
    pub comment_id: Option<u64>,
}

/// The AgentRun a trigger creates, named `name`. Untrusted issue text is sanitised and capped
/// here, so nothing hidden from human readers reaches the agent.
pub fn desired_run(request: &RunRequest<'_>, name: &str) -> AgentRun {
    let project = request.project;
    let issue = request.issue;
    let body = issue
        .body
        .as_deref()
        .map(|b| visible_markdown(b, MAX_TASK_BODY_BYTES).text)
        .filter(|b| !b.trim().is_empty());
    let instructions = request
        .instructions
        .map(|i| visible_markdown(i, MAX_INSTRUCTIONS_BYTES).text)
        .filter(|i| !i.trim().is_empty());
    let mut labels = BTreeMap::new();
    labels.insert(PROJECT_LABEL.to_owned(), label_value(&project.name_any()));
    labels.insert(ISSUE_LABEL.to_owned(), issue.number.to_string());
    labels.insert(AGENT_LABEL.to_owned(), label_value(&request.assignee.key()));
    let mut annotations = BTreeMap::new();
    annotations.insert(
        CREATED_BY_DELIVERY_ANNOTATION.to_owned(),
        request.delivery.to_string(),
    );
    if let Some(id) = request.comment_id {
        annotations.insert(SOURCE_COMMENT_ANNOTATION.to_owned(), id.to_string());
    }
    let mut run = AgentRun::new(
        name,
        AgentRunSpec {
            project_ref: LocalRef::new(project.name_any()),
            agent_ref: match &request.assignee {
                countersign_crds::project::Assignee::Agent(name) => Some(LocalRef::new(*name)),
                countersign_crds::project::Assignee::Capabilities(_) => None,
            },
            capabilities: request.assignee.capability_list(),
            task: Task {
                issue_number: Some(issue.number),
                title: visible_title(&issue.title),
                body,
                instructions,
                requested_by: Some(github_user(request.requested_by)),
                requesters: Vec::new(),
                source: request.source,
            },
            parent_ref: None,
            follow_up_of: None,
            breakdown: request.breakdown,
            mode: request.mode,
            cancel_requested: false,
            retries: DEFAULT_RETRIES,
            timeout: None,
            ttl_seconds_after_finished: None,
        },
    );
    run.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: project.namespace(),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: owner_reference(project).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    run
}

/// A copy of `previous`'s spec for `/retry`: same Agent, task and mode, a new name and the
/// retrying delivery. Whoever asked for the retry becomes a requester too (they cannot
/// approve the result, like whoever asked first).
pub fn retried_run(
    previous: &AgentRun,
    project: &Project,
    name: &str,
    delivery: &DeliveryId,
    comment_id: u64,
    asked_by: &Account,
) -> AgentRun {
    let mut run = AgentRun::new(name, previous.spec.clone());
    run.spec.cancel_requested = false;
    run.spec.task.source = TaskSource::Comment;
    // A retried sub-task is a run of its own: its parent already counted the one that ended.
    run.spec.parent_ref = None;
    let retrier = github_user(asked_by);
    let task = &mut run.spec.task;
    let known = task
        .requested_by
        .iter()
        .chain(&task.requesters)
        .any(|u| countersign_policies::approvals::same_person(u, &retrier));
    if !known && task.requesters.len() < countersign_crds::agent_run::MAX_REQUESTERS {
        task.requesters.push(retrier);
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(
        CREATED_BY_DELIVERY_ANNOTATION.to_owned(),
        delivery.to_string(),
    );
    annotations.insert(SOURCE_COMMENT_ANNOTATION.to_owned(), comment_id.to_string());
    run.metadata = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: project.namespace(),
        labels: previous.metadata.labels.clone(),
        annotations: Some(annotations),
        owner_references: owner_reference(project).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    run
}

/// Where an AI pull request came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A person (or another bot) wrote it.
    Human,
    /// An agent wrote it; the AgentRun's name when the branch names one that exists.
    Agent {
        /// The run that pushed the branch.
        run: Option<String>,
    },
}

/// Decides whether `pr` is AI-generated: its head is a `countersign/<run>` branch of the
/// same repository (a fork can name its branch anything) and either the run exists or our own
/// bot opened it.
pub fn origin(
    pr: &PullRequest,
    base_full_name: &str,
    bot_login: &str,
    run_exists: impl Fn(&str) -> bool,
) -> Origin {
    let same_repo = pr
        .head
        .repo_full_name
        .as_deref()
        .is_some_and(|r| r.eq_ignore_ascii_case(base_full_name));
    let Some(run) = pr.head.branch.strip_prefix(AGENT_BRANCH_PREFIX) else {
        return Origin::Human;
    };
    if !same_repo || run.is_empty() {
        return Origin::Human;
    }
    if run_exists(run) {
        Origin::Agent {
            run: Some(run.to_owned()),
        }
    } else if pr.user.login.eq_ignore_ascii_case(bot_login) {
        Origin::Agent { run: None }
    } else {
        Origin::Human
    }
}

/// The ApprovalGate of `pr` in `project`, carrying `delivery` as the nudge annotation. Applied
/// with server-side apply by the bot's field manager on every pull-request event.
pub fn desired_gate(
    project: &Project,
    pr: &PullRequest,
    origin: &Origin,
    delivery: &DeliveryId,
) -> ApprovalGate {
    let name = gate_name(&project.name_any(), pr.number);
    let (ai_generated, agent_run_ref) = match origin {
        Origin::Human => (false, None),
        Origin::Agent { run } => (true, run.as_deref().map(LocalRef::new)),
    };
    let mut gate = ApprovalGate::new(
        &name,
        ApprovalGateSpec {
            project_ref: LocalRef::new(project.name_any()),
            pull_request_number: pr.number,
            base_branch: pr.base.branch.clone(),
            author: github_user(&pr.user),
            ai_generated,
            agent_run_ref,
            requesters: Vec::new(),
        },
    );
    let mut labels = BTreeMap::new();
    labels.insert(PROJECT_LABEL.to_owned(), label_value(&project.name_any()));
    labels.insert(PULL_REQUEST_LABEL.to_owned(), pr.number.to_string());
    let mut annotations = BTreeMap::new();
    annotations.insert(LAST_DELIVERY_ANNOTATION.to_owned(), delivery.to_string());
    gate.metadata = ObjectMeta {
        name: Some(name),
        namespace: project.namespace(),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: owner_reference(project).map(|r| vec![r]),
        ..ObjectMeta::default()
    };
    gate
}

/// The GitHub identity as the CRDs record it (id included: it is what checks match on).
pub fn github_user(account: &Account) -> GitHubUser {
    GitHubUser {
        login: account.login.clone(),
        id: Some(account.id).filter(|id| *id > 0),
    }
}

/// Makes the Project own what the bot creates for it, so deleting a Project cleans up its
/// runs and gates. Not a controller reference: the controller of a run is Countersign's
/// controller, not the Project.
fn owner_reference(project: &Project) -> Option<OwnerReference> {
    let uid = project.uid()?;
    Some(OwnerReference {
        api_version: Project::api_version(&()).into_owned(),
        kind: Project::kind(&()).into_owned(),
        name: project.name_any(),
        uid,
        controller: None,
        block_owner_deletion: None,
    })
}

#[cfg(test)]
mod tests;
