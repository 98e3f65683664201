//! Which Project manages each repository, for every reconciler (docs/security.md item 1):
//! one index of the Projects this controller sees (a reflector store, filled by a watch for
//! the term of leadership) and the operator's allow-list, answering with
//! [`countersign_policies::ownership::claim`]. The bot applies the same rule to the same
//! Projects, so both agree on the owner.
//!
//! A Project that does not own its repository gets a `Ready=False` condition naming the
//! owner (the Project reconciler writes it) and nothing else: no gates evaluated, no agent
//! runs started, no check runs, no tokens.

use std::sync::Arc;
use std::time::Duration;

use countersign_crds::Project;
use countersign_policies::ownership::{self, Claim, RepositoryAllowList};
use kube::runtime::watcher;

use crate::agent_run::scoped;
use crate::cache::Cache;
use crate::context::Context;

/// The longest a reconcile waits for the first list of Projects before it gives up and
/// retries (nothing is decided without it).
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(30);

/// The Projects this controller sees and who may manage what.
pub struct Claims {
    projects: Cache<Project>,
    allowed: RepositoryAllowList,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("allowed", &self.allowed.to_string())
            .finish_non_exhaustive()
    }
}

/// A cache's first list did not arrive in time.
#[derive(Debug, thiserror::Error)]
#[error("the {0} have not been listed yet, so nothing about them is decided")]
pub struct NotListed(pub String);

impl Claims {
    /// An empty index enforcing `allowed`; [`Claims::run`] fills it.
    pub fn new(allowed: RepositoryAllowList) -> Self {
        Self {
            projects: Cache::default(),
            allowed,
        }
    }

    /// The operator's allow-list in force.
    pub fn allowed(&self) -> &RepositoryAllowList {
        &self.allowed
    }

    /// Keeps the index current until dropped (once per context; later calls return at once).
    pub async fn run(ctx: &Context) {
        ctx.claims
            .projects
            .run(scoped::<Project>(ctx), watcher::Config::default())
            .await;
    }

    /// Waits for the first list of Projects (at most [`FIRST_LIST_WAIT`]).
    pub async fn ready(&self) -> Result<(), NotListed> {
        self.projects.ready().await
    }

    /// Project `name` in `namespace`, as the index last saw it (the reconcilers read
    /// Projects from here, not with a GET).
    pub fn project(&self, namespace: &str, name: &str) -> Option<Arc<Project>> {
        self.projects.get(namespace, name)
    }

    /// Where `project` stands with its repository.
    pub async fn claim_of(&self, project: &Project) -> Result<Claim, NotListed> {
        self.ready().await?;
        let all = self.projects.state();
        Ok(ownership::claim(
            project,
            all.iter().map(|p| &**p),
            &self.allowed,
        ))
    }
}
