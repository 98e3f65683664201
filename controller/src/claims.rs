//! Which Project manages each repository, for every reconciler (docs/security.md item 1):
//! one index of the Projects this controller sees (a reflector store, filled by a watch for
//! the term of leadership) and the operator's allow-list, answering with
//! [`countersign_policies::ownership::claim`]. The bot applies the same rule to the same
//! Projects, so both agree on the owner.
//!
//! A Project that does not own its repository gets a `Ready=False` condition naming the
//! owner (the Project reconciler writes it) and nothing else: no gates evaluated, no agent
//! runs started, no check runs, no tokens.

use std::sync::Mutex;
use std::time::Duration;

use countersign_crds::Project;
use countersign_policies::ownership::{self, Claim, RepositoryAllowList};
use futures::StreamExt;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};

use crate::agent_run::scoped;
use crate::context::Context;

/// The longest a reconcile waits for the first list of Projects before it gives up and
/// retries (nothing is decided without it).
pub const FIRST_LIST_WAIT: Duration = Duration::from_secs(30);

/// The Projects this controller sees and who may manage what.
pub struct Claims {
    store: Store<Project>,
    writer: Mutex<Option<Writer<Project>>>,
    allowed: RepositoryAllowList,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("allowed", &self.allowed.to_string())
            .finish_non_exhaustive()
    }
}

/// The Projects could not be listed in time.
#[derive(Debug, thiserror::Error)]
#[error("the Projects have not been listed yet, so who manages the repository is unknown")]
pub struct NotListed;

impl Claims {
    /// An empty index enforcing `allowed`; [`Claims::run`] fills it.
    pub fn new(allowed: RepositoryAllowList) -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer: Mutex::new(Some(writer)),
            allowed,
        }
    }

    /// The operator's allow-list in force.
    pub fn allowed(&self) -> &RepositoryAllowList {
        &self.allowed
    }

    /// Keeps the index current until dropped (once per context; later calls return at once).
    pub async fn run(ctx: &Context) {
        let writer = ctx
            .claims
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(writer) = writer else { return };
        let stream = reflector::reflector(
            writer,
            watcher(scoped::<Project>(ctx), watcher::Config::default()),
        )
        .default_backoff()
        .touched_objects();
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(error) = item {
                tracing::warn!(%error, "watching Projects for repository claims failed; retrying");
            }
        }
    }

    /// Waits for the first list of Projects (at most [`FIRST_LIST_WAIT`]).
    pub async fn ready(&self) -> Result<(), NotListed> {
        tokio::time::timeout(FIRST_LIST_WAIT, self.store.wait_until_ready())
            .await
            .map_err(|_| NotListed)?
            .map_err(|_| NotListed)
    }

    /// Project `name` in `namespace`, as the index last saw it (the reconcilers read
    /// Projects from here, not with a GET).
    pub fn project(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<Project>> {
        self.store
            .get(&kube::runtime::reflector::ObjectRef::new(name).within(namespace))
    }

    /// Where `project` stands with its repository.
    pub async fn claim_of(&self, project: &Project) -> Result<Claim, NotListed> {
        self.ready().await?;
        let all = self.store.state();
        Ok(ownership::claim(
            project,
            all.iter().map(|p| &**p),
            &self.allowed,
        ))
    }
}
