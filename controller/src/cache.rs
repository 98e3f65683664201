//! The objects the reconcilers read, from watch caches instead of a GET or LIST per
//! reconcile (issue 20): Agents, RiskPolicies and the agent pods (selected by label), each
//! one watch for the whole controller, and the AgentRuns and ApprovalGates their own
//! controllers watch (those controllers fill these caches, so each is watched and cached
//! once); all trimmed of `managedFields` and the `last-applied-configuration` annotation
//! before they are stored. Projects come from the repository-claims index
//! ([`crate::claims`]), which already watches them.
//!
//! A cache can lag behind a write the controller just made; readers that would act on an
//! object's absence (a pod that seems to have vanished) confirm it with the API first.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_crds::{Agent, AgentRun, ApprovalGate, RiskPolicy};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use crate::agent_run::resources::RUN_LABEL;
use crate::agent_run::scoped;
use crate::claims::{FIRST_LIST_WAIT, NotListed};
use crate::context::Context;

/// One watch cache of `K`, filled by [`Cache::run`].
pub struct Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store: Store<K>,
    writer: Mutex<Option<Writer<K>>>,
}

impl<K> Default for Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn default() -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer: Mutex::new(Some(writer)),
        }
    }
}

impl<K> std::fmt::Debug for Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("kind", &K::kind(&()))
            .field("objects", &self.store.len())
            .finish()
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// Keeps the cache current from a watch of `api` until dropped (once per cache; later
    /// calls return at once).
    pub async fn run(&self, api: Api<K>, config: watcher::Config) {
        let Some(writer) = self.take_writer() else {
            return;
        };
        let stream = watcher(api, config)
            .default_backoff()
            .modify(trim)
            .reflect(writer)
            .touched_objects();
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(error) = item {
                tracing::warn!(%error, kind = %K::kind(&()), "watching for the cache failed; retrying");
            }
        }
    }

    /// The writer, for a controller whose own watch fills this cache (its reflector), so the
    /// objects it reconciles are cached once; `None` after the first call.
    pub fn take_writer(&self) -> Option<Writer<K>> {
        self.writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    /// The store, for a controller filling it with [`Cache::take_writer`].
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Waits for the first list (at most [`FIRST_LIST_WAIT`]).
    pub async fn ready(&self) -> Result<(), NotListed> {
        let not_listed = || NotListed(K::plural(&()).into_owned());
        tokio::time::timeout(FIRST_LIST_WAIT, self.store.wait_until_ready())
            .await
            .map_err(|_| not_listed())?
            .map_err(|_| not_listed())
    }

    /// The object `name` in `namespace`, as last seen.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Every object seen.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }
}

/// Drops what no reconciler reads and what makes cached objects large.
pub fn trim<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// How long what [`Recent`] holds is used before it is read again.
pub const RECENT_TTL: Duration = Duration::from_secs(5);

/// Values read from the API by (namespace, name), used for [`RECENT_TTL`] instead of a read
/// per reconcile where a watch does not fit: the key names (never the values) of the Secrets
/// Agents need (a watch of every Secret would hold every Secret's data in memory), and the
/// usage ledgers queued runs check their Project's spend against. A change is seen within
/// the TTL.
#[derive(Debug)]
pub struct Recent<V> {
    seen: Mutex<HashMap<(String, String), (tokio::time::Instant, V)>>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Self {
            seen: Mutex::new(HashMap::new()),
        }
    }
}

impl<V: Clone> Recent<V> {
    /// What was read for `name` in `namespace` less than [`RECENT_TTL`] ago.
    pub fn get(&self, namespace: &str, name: &str) -> Option<V> {
        let seen = self.lock();
        let (at, value) = seen.get(&(namespace.to_owned(), name.to_owned()))?;
        (at.elapsed() < RECENT_TTL).then(|| value.clone())
    }

    /// Remembers what a read found.
    pub fn remember(&self, namespace: &str, name: &str, value: V) {
        let mut seen = self.lock();
        seen.retain(|_, (at, _)| at.elapsed() < RECENT_TTL);
        seen.insert(
            (namespace.to_owned(), name.to_owned()),
            (tokio::time::Instant::now(), value),
        );
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(String, String), (tokio::time::Instant, V)>> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The key names of `secret` (`data` and `stringData`).
pub fn secret_keys(secret: &Secret) -> BTreeSet<String> {
    let data = secret.data.iter().flat_map(|d| d.keys());
    let string_data = secret.string_data.iter().flat_map(|d| d.keys());
    data.chain(string_data).cloned().collect()
}

/// The watch caches the reconcilers share.
#[derive(Debug, Default)]
pub struct Caches {
    /// Key names of the Secrets Agents need (`None`: the Secret does not exist), for a few
    /// seconds.
    pub secret_keys: Recent<Option<BTreeSet<String>>>,
    /// Projects' usage ledgers as queued runs last read them, for a few seconds.
    pub ledgers: Recent<Option<countersign_crds::usage::UsageLedger>>,
    /// Agents.
    pub agents: Cache<Agent>,
    /// RiskPolicies.
    pub policies: Cache<RiskPolicy>,
    /// ApprovalGates, filled by the ApprovalGate controller's watch (the AgentRun reconciler
    /// follows its gate's phase, the Project reconciler counts them).
    pub gates: Cache<ApprovalGate>,
    /// AgentRuns, filled by the AgentRun controller's watch (the Agent and Project
    /// reconcilers count them).
    pub runs: Cache<AgentRun>,
    /// Agent pods (labelled with their run).
    pub pods: Cache<Pod>,
}

impl Caches {
    /// Runs every cache's watch until dropped.
    pub async fn run(ctx: &Context) {
        let caches = &ctx.caches;
        tokio::join!(
            caches
                .agents
                .run(scoped::<Agent>(ctx), watcher::Config::default()),
            caches
                .policies
                .run(scoped::<RiskPolicy>(ctx), watcher::Config::default()),
            caches.pods.run(
                scoped::<Pod>(ctx),
                watcher::Config::default().labels(RUN_LABEL)
            ),
        );
    }

    /// Waits until every cache has its first list.
    pub async fn ready(&self) -> Result<(), NotListed> {
        self.agents.ready().await?;
        self.policies.ready().await?;
        self.gates.ready().await?;
        self.runs.ready().await?;
        self.pods.ready().await
    }
}
