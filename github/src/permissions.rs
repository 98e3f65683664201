//! Repository permissions: what a collaborator may do on a repository.

use http::Method;

use crate::GitHubError;
use crate::installation::{InstallationClient, seg};

/// A repository permission level as GitHub reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    /// No access.
    None,
    /// Read.
    Read,
    /// Triage.
    Triage,
    /// Write.
    Write,
    /// Maintain.
    Maintain,
    /// Admin.
    Admin,
}

impl InstallationClient {
    /// `login`'s permission on `owner/repo`
    /// (`GET /repos/{owner}/{repo}/collaborators/{login}/permission`; 404 → `None`).
    pub async fn repo_permission(
        &self,
        owner: &str,
        repo: &str,
        login: &str,
    ) -> Result<Permission, GitHubError> {
        let path = format!(
            "/repos/{}/{}/collaborators/{}/permission",
            seg(owner),
            seg(repo),
            seg(login)
        );
        match self.send(Method::GET, &path, None).await {
            Ok(answer) => Ok(crate::parse::parse_permission(&answer.json("permission")?)),
            Err(GitHubError::NotFound(_)) => Ok(Permission::None),
            Err(e) => Err(e),
        }
    }
}
