//! Turns parsed deliveries into Kubernetes writes and GitHub answers.
//!
//! One file per concern: [`issues`] (trigger labels), [`comments`] (comment commands),
//! [`gates`] (pull requests, reviews, merge queue, check re-runs → ApprovalGates),
//! [`installations`] (App installs → Project nudges). Shared run operations live in [`runs`].
//! Every write uses a deterministic name or carries the delivery id, so handling the same
//! delivery twice changes nothing the second time.

pub mod comments;
pub mod gates;
pub mod installations;
pub mod issues;
pub mod runs;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use countersign_crds::Project;
use countersign_crds::keys::{BOT_FIELD_MANAGER, LAST_DELIVERY_ANNOTATION};
use countersign_webhooks::github::event::{Delivery, DeliveryId, Event, Repository};
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::projects::Projects;
use crate::replies::{ReplyKey, ReplyLimiter};
use countersign_github::authz::{Authorizer, Denial};
use countersign_github::tokens::MintError;
use countersign_github::{GitHubApp, GitHubError, InstallationClient, Reaction};

/// Everything handlers need. Shared by all workers.
pub struct Handler {
    /// Kubernetes.
    pub client: kube::Client,
    /// GitHub, as the App.
    pub github: GitHubApp,
    /// Projects by repository.
    pub projects: Projects,
    /// Permission and role checks.
    pub authorizer: Authorizer,
    /// Rate limit of visible answers.
    pub replies: ReplyLimiter,
    /// The App's bot account, `<slug>[bot]`: its own events are never acted on.
    pub bot_login: String,
}

/// What handling a delivery did. A delivery may do several things (one per Project or per
/// command); each is logged with the delivery id and counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An AgentRun was created.
    RunCreated {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The AgentRun this delivery asks for exists already (a redelivery or a race).
    RunExists {
        /// Name.
        name: String,
    },
    /// Runs were asked to stop (`spec.cancelRequested`).
    RunsCancelled {
        /// Their names.
        names: Vec<String>,
    },
    /// An ApprovalGate was created or updated from the pull request.
    GateApplied {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// An existing object was annotated so the controller looks at it again.
    Nudged {
        /// `ApprovalGate`, `AgentRun` or `Project`.
        kind: &'static str,
        /// Name.
        name: String,
    },
    /// A help or information answer was posted.
    Answered(&'static str),
    /// Refused, with the reason shown to the person.
    Denied(Denial),
    /// Nothing to do, for this reason.
    Ignored(Ignored),
}

/// Why a delivery (or part of it) needed no action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ignored {
    /// `ping`.
    Ping,
    /// No Project manages the repository.
    NoProject,
    /// The label is not a trigger label of any Project.
    NotATriggerLabel,
    /// Labels on pull requests do not start runs.
    PullRequestLabel,
    /// The comment holds no Countersign command.
    NoCommands,
    /// An edit by someone other than the comment's author never runs commands (the gate
    /// records it as tampering).
    EditedBySomeoneElse,
    /// Countersign's own comment or action.
    OwnBot,
    /// Another bot, and the Project does not allow bots.
    Bot,
    /// A run of this Agent is already working on the issue.
    AlreadyRunning(String),
    /// Nothing to cancel, retry or approve here.
    NothingToDo(&'static str),
    /// The pull request has no gate yet; the next pull-request event creates it.
    NoGate,
    /// A check run that is not Countersign's.
    OtherCheck,
    /// The delivery names no installation and the Project none either.
    NoInstallation,
    /// The Agent a command names does not exist in the Project's namespace.
    UnknownAgent(String),
    /// The Agent a command names is not one the Project maps (trigger labels or
    /// `triggers.agents`).
    UnmappedAgent(String),
}

impl Outcome {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::RunCreated { .. } => "run_created",
            Self::RunExists { .. } => "run_exists",
            Self::RunsCancelled { .. } => "runs_cancelled",
            Self::GateApplied { .. } => "gate_applied",
            Self::Nudged { .. } => "nudged",
            Self::Answered(_) => "answered",
            Self::Denied(_) => "denied",
            Self::Ignored(_) => "ignored",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RunCreated { namespace, name } => {
                write!(f, "created AgentRun {namespace}/{name}")
            }
            Self::RunExists { name } => write!(f, "AgentRun {name} already exists"),
            Self::RunsCancelled { names } => write!(f, "cancelled {}", names.join(", ")),
            Self::GateApplied { namespace, name } => {
                write!(f, "applied ApprovalGate {namespace}/{name}")
            }
            Self::Nudged { kind, name } => write!(f, "nudged {kind} {name}"),
            Self::Answered(topic) => write!(f, "answered ({topic})"),
            Self::Denied(denial) => write!(f, "denied ({})", denial.label()),
            Self::Ignored(why) => write!(f, "ignored: {why:?}"),
        }
    }
}

/// A failure handling a delivery. Transient ones are retried by the worker.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The Kubernetes API failed.
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    /// GitHub failed.
    #[error("GitHub API error: {0}")]
    GitHub(#[from] GitHubError),
    /// Every candidate run name for the issue was taken by concurrent creates.
    #[error("no free AgentRun name for issue #{issue} after several attempts")]
    NoFreeName {
        /// The issue.
        issue: u64,
    },
    /// Concurrent writers kept changing an ApprovalGate's annotations.
    #[error("ApprovalGate {name} kept changing while its annotations were written")]
    Conflict {
        /// The gate.
        name: String,
    },
}

impl HandleError {
    /// Whether the same delivery may succeed if handled again later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::GitHub(e) => e.is_transient(),
            Self::Kube(kube::Error::Api(status)) => status.code >= 500 || status.code == 429,
            Self::Kube(_) | Self::NoFreeName { .. } | Self::Conflict { .. } => true,
        }
    }

    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::GitHub(_) => "github",
            Self::NoFreeName { .. } | Self::Conflict { .. } => "name_conflict",
        }
    }
}

/// The result of handling one delivery.
pub type Handled = Result<Vec<Outcome>, HandleError>;

impl Handler {
    /// Handles one delivery.
    pub async fn handle(&self, delivery: &Delivery) -> Handled {
        let id = &delivery.id;
        match &delivery.event {
            Event::Ping(_) => Ok(vec![Outcome::Ignored(Ignored::Ping)]),
            Event::Issues(e) => self.on_issues(id, e).await,
            Event::IssueComment(e) => self.on_comment(id, e).await,
            Event::PullRequest(e) => self.on_pull_request(id, e).await,
            Event::PullRequestReview(e) => self.on_review(id, e).await,
            Event::PullRequestReviewComment(e) => self.on_review_comment(id, e).await,
            Event::MergeGroup(e) => self.on_merge_group(id, e).await,
            Event::CheckRun(e) => self.on_check_run(id, e).await,
            Event::Installation(e) => self.on_installation(id, e).await,
            Event::InstallationRepositories(e) => self.on_installation_repositories(id, e).await,
        }
    }

    /// The client for the installation GitHub reports for the Project's repository (cached
    /// by the App client). A number in the Project's spec is only checked against it: a
    /// Project naming another installation gets nothing done (`None`), like a repository
    /// the App is not installed on. The installation a delivery names is not needed: the
    /// repository decides.
    pub(crate) async fn installation(
        &self,
        _delivered: Option<u64>,
        project: &Project,
    ) -> Result<Option<InstallationClient>, HandleError> {
        let repo = &project.spec.repository;
        let expected = project.spec.installation.as_ref().map(|i| i.id);
        match self
            .github
            .verified_installation(&repo.owner, &repo.name, expected)
            .await
        {
            Ok(id) => Ok(Some(self.github.installation(id))),
            Err(
                MintError::InstallationNotFound { .. } | MintError::InstallationMismatch { .. },
            ) => Ok(None),
            Err(MintError::RateLimited { retry_after_secs }) => {
                Err(HandleError::GitHub(GitHubError::RateLimited {
                    retry_after: std::time::Duration::from_secs(retry_after_secs),
                }))
            }
            Err(e) => Err(HandleError::GitHub(GitHubError::Transport(e.to_string()))),
        }
    }

    /// Posts `text` on issue or pull request `number` unless this person was answered about
    /// `topic` there recently; then it only reacts to `comment` (if any) with 😕. Failures to
    /// answer are logged, not retried: the decision itself is already made.
    pub(crate) async fn reply(&self, asker: &runs::Asker<'_>, topic: &'static str, text: &str) {
        let runs::Asker {
            github,
            repository,
            number,
            account,
            comment,
        } = *asker;
        let key = ReplyKey {
            repository: repository.id,
            number,
            user: account.id,
            topic,
        };
        let result = if self.replies.allow(key) {
            github
                .create_issue_comment(&repository.owner, &repository.name, number, text)
                .await
                .map(drop)
        } else if let Some(comment) = comment {
            github
                .add_comment_reaction(
                    &repository.owner,
                    &repository.name,
                    comment,
                    Reaction::Confused,
                )
                .await
        } else {
            Ok(())
        };
        if let Err(error) = result {
            tracing::warn!(%error, number, topic, "cannot answer on GitHub");
        }
    }

    /// Reacts to `comment`; a failure is logged only (feedback, not state).
    pub(crate) async fn react(
        &self,
        github: &InstallationClient,
        repository: &Repository,
        comment: u64,
        reaction: Reaction,
    ) {
        if let Err(error) = github
            .add_comment_reaction(&repository.owner, &repository.name, comment, reaction)
            .await
        {
            tracing::warn!(%error, comment, "cannot react to the comment");
        }
    }

    /// An API for `K` in the Project's namespace.
    pub(crate) fn api<K>(&self, project: &Project) -> Api<K>
    where
        K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        let ns = project.namespace().unwrap_or_else(|| "default".to_owned());
        Api::namespaced(self.client.clone(), &ns)
    }
}

/// Annotates `name` with the delivery (and `extra` annotations) so its controller looks at
/// it again. `Ok(false)` when the object does not exist.
pub(crate) async fn nudge<K>(
    api: &Api<K>,
    name: &str,
    delivery: &DeliveryId,
    extra: &[(&str, &str)],
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + fmt::Debug,
{
    let mut annotations = BTreeMap::new();
    annotations.insert(LAST_DELIVERY_ANNOTATION, delivery.as_str());
    for (k, v) in extra {
        annotations.insert(k, v);
    }
    let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
    let params = PatchParams {
        field_manager: Some(BOT_FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    };
    match api.patch(name, &params, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Shorthand used by the handlers.
pub(crate) type ProjectRef = Arc<Project>;
