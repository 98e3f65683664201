//! `issues.labeled` with a Project's trigger label starts an AgentRun; `issues.unlabeled`
//! cancels it. Labels are authorised like comments (the OpenHands hole in PEERS.md: a label by
//! someone without the required permission starts nothing).

use countersign_crds::TaskSource;
use countersign_webhooks::github::event::{DeliveryId, IssuesAction, IssuesEvent};

use super::runs::Asker;
use super::{Handled, Handler, Ignored, Outcome};
use crate::objects::RunRequest;

impl Handler {
    /// Handles `issues`.
    pub(crate) async fn on_issues(&self, delivery: &DeliveryId, e: &IssuesEvent) -> Handled {
        if e.issue.is_pull_request {
            return Ok(vec![Outcome::Ignored(Ignored::PullRequestLabel)]);
        }
        let Some(project) = self.owner_of(&e.repository) else {
            return Ok(vec![Outcome::Ignored(Ignored::NoProject)]);
        };
        let projects = [project];
        let (label, adding) = match &e.action {
            IssuesAction::Labeled(label) => (label, true),
            IssuesAction::Unlabeled(label) => (label, false),
        };
        let mut outcomes = Vec::new();
        for project in &projects {
            let Some(trigger) = project
                .spec
                .triggers
                .labels
                .iter()
                .find(|t| t.label.eq_ignore_ascii_case(label))
            else {
                continue;
            };
            if !adding {
                // Removing the label cancels; anyone who can remove labels can stop a run
                // (stopping is always the safe direction). Our own label changes never count.
                if countersign_github::authz::is_own_bot(&e.sender, &self.bot_login) {
                    outcomes.push(Outcome::Ignored(Ignored::OwnBot));
                    continue;
                }
                outcomes.push(
                    self.cancel_runs(project, e.issue.number, Some(&trigger.assignee().key()))
                        .await?,
                );
                continue;
            }
            let Some(github) = self.installation(e.installation_id, project).await? else {
                outcomes.push(Outcome::Ignored(Ignored::NoInstallation));
                continue;
            };
            let asker = Asker {
                github: &github,
                repository: &e.repository,
                number: e.issue.number,
                account: &e.sender,
                comment: None,
            };
            if let Err(denial) = self.authorize_trigger(project, &asker).await? {
                outcomes.push(Outcome::Denied(denial));
                continue;
            }
            let request = RunRequest {
                project,
                assignee: trigger.assignee(),
                issue: &e.issue,
                requested_by: &e.sender,
                source: TaskSource::IssueLabel,
                mode: trigger.mode,
                breakdown: trigger.breakdown,
                instructions: None,
                delivery,
                comment_id: None,
            };
            outcomes.push(self.create_run(&request).await?);
        }
        if outcomes.is_empty() {
            outcomes.push(Outcome::Ignored(Ignored::NotATriggerLabel));
        }
        Ok(outcomes)
    }
}
