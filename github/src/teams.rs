//! Teams: members by immutable user id, for approver roles bound to teams.

use crate::GitHubError;
use crate::installation::{Id, InstallationClient, seg};

impl InstallationClient {
    /// User ids of every member of team `org/slug` (`GET /orgs/{org}/teams/{slug}/members`,
    /// all pages).
    pub async fn team_member_ids(&self, org: &str, slug: &str) -> Result<Vec<u64>, GitHubError> {
        let path = format!("/orgs/{}/teams/{}/members", seg(org), seg(slug));
        self.get_all_pages(&path, "team members", |page: Vec<Id>| {
            page.into_iter().map(|m| m.id).collect()
        })
        .await
    }
}
