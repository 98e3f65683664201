//! Which Project manages a repository: an in-memory index of every Project the bot may see,
//! kept current by a Kubernetes watch (a reflector), so handling a webhook costs no list call.
//! Exactly one Project manages a repository (`countersign_policies::ownership`): the oldest
//! one in a namespace the operator allowed; every other Project naming it gets nothing.

use std::future::Future;
use std::sync::Arc;

use countersign_crds::Project;
use countersign_policies::ownership::{self, RepositoryAllowList};
use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

/// The Projects the bot knows about.
#[derive(Clone)]
pub struct Projects {
    store: Store<Project>,
    allowed: Arc<RepositoryAllowList>,
}

impl Projects {
    /// An index over Projects in `namespace` (all namespaces when `None`), and the future that
    /// keeps it current. The future runs until dropped; watch errors are retried with backoff.
    pub fn watch(
        client: kube::Client,
        namespace: Option<&str>,
        allowed: RepositoryAllowList,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let api: Api<Project> = match namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        };
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .touched_objects();
        let driver = async move {
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                if let Err(error) = item {
                    tracing::warn!(%error, "watching Projects failed; retrying");
                }
            }
        };
        (
            Self {
                store,
                allowed: Arc::new(allowed),
            },
            driver,
        )
    }

    /// Completes once the first full list of Projects has arrived.
    pub async fn ready(&self) -> bool {
        self.store.wait_until_ready().await.is_ok()
    }

    /// Whether the first full list of Projects has arrived.
    pub fn is_ready(&self) -> bool {
        // A store that has seen its initial list answers `wait_until_ready` at once.
        futures::FutureExt::now_or_never(self.store.wait_until_ready()).is_some_and(|r| r.is_ok())
    }

    /// The one Project managing `owner/name` (GitHub compares names case-insensitively):
    /// the oldest live Project naming it in a namespace allowed to manage it. Every other
    /// Project naming the repository is ignored.
    pub fn for_repository(&self, owner: &str, name: &str) -> Option<Arc<Project>> {
        let candidates = self.store.state_filter(|p| {
            p.spec.repository.owner.eq_ignore_ascii_case(owner)
                && p.spec.repository.name.eq_ignore_ascii_case(name)
        });
        let found =
            ownership::owner_of(candidates.iter().map(|p| &**p), owner, name, &self.allowed)
                .map(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
        let (ns, n) = found?;
        candidates
            .into_iter()
            .find(|p| p.metadata.namespace == ns && p.metadata.name == n)
    }

    /// Every Project that manages its repository (the one [`Self::for_repository`] answers
    /// for it), ordered by namespace and name: for work that starts from the Projects rather
    /// than from a delivery, such as the resync.
    pub fn managed(&self) -> Vec<Arc<Project>> {
        let mut managed: Vec<Arc<Project>> = self
            .store
            .state()
            .into_iter()
            .filter(|p| {
                let repo = &p.spec.repository;
                self.for_repository(&repo.owner, &repo.name)
                    .is_some_and(|owner| {
                        owner.metadata.namespace == p.metadata.namespace
                            && owner.metadata.name == p.metadata.name
                    })
            })
            .collect();
        managed.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        managed
    }

    /// Every Project whose repository is one of `full_names` (`owner/name`), or, when
    /// `account` is given, every Project whose repository belongs to that account.
    pub fn for_installation(
        &self,
        full_names: &[String],
        account: Option<&str>,
    ) -> Vec<Arc<Project>> {
        // Installation changes only nudge Projects so the controller re-checks them; losers
        // of a claim are nudged too, so their status shows the change.
        self.store.state_filter(|p| {
            let repo = &p.spec.repository;
            let full = format!("{}/{}", repo.owner, repo.name);
            full_names.iter().any(|n| n.eq_ignore_ascii_case(&full))
                || account.is_some_and(|a| a.eq_ignore_ascii_case(&repo.owner))
        })
    }
}
