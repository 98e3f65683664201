//! `installation` and `installation_repositories`: the App was installed, removed, suspended
//! or given other repositories. The Projects of the affected repositories are nudged so the
//! controller re-checks their installation and shows it in their status.

use countersign_crds::Project;
use countersign_webhooks::github::event::{
    DeliveryId, InstallationEvent, InstallationRepositoriesEvent,
};
use kube::{Api, ResourceExt};

use super::{Handled, Handler, Ignored, Outcome, nudge};

impl Handler {
    /// Handles `installation`. Without a repository list (installed on all repositories)
    /// every Project of the account is nudged.
    pub(crate) async fn on_installation(
        &self,
        delivery: &DeliveryId,
        e: &InstallationEvent,
    ) -> Handled {
        let names: Vec<String> = e.repositories.iter().map(|r| r.full_name.clone()).collect();
        let account = names.is_empty().then_some(e.account.as_str());
        self.nudge_projects(delivery, &names, account).await
    }

    /// Handles `installation_repositories`.
    pub(crate) async fn on_installation_repositories(
        &self,
        delivery: &DeliveryId,
        e: &InstallationRepositoriesEvent,
    ) -> Handled {
        let names: Vec<String> = e
            .added
            .iter()
            .chain(&e.removed)
            .map(|r| r.full_name.clone())
            .collect();
        self.nudge_projects(delivery, &names, None).await
    }

    async fn nudge_projects(
        &self,
        delivery: &DeliveryId,
        full_names: &[String],
        account: Option<&str>,
    ) -> Handled {
        let projects = self.projects.for_installation(full_names, account);
        if projects.is_empty() {
            return Ok(vec![Outcome::Ignored(Ignored::NoProject)]);
        }
        let mut outcomes = Vec::new();
        for project in projects {
            let api: Api<Project> = self.api(&project);
            let name = project.name_any();
            if nudge(&api, &name, delivery, &[]).await? {
                outcomes.push(Outcome::Nudged {
                    kind: "Project",
                    name,
                });
            }
        }
        Ok(outcomes)
    }
}
