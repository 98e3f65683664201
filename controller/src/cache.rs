//! The objects the reconcilers read, from watch caches instead of a GET or LIST per
//! reconcile (issue 20): Agents, RiskPolicies, the agent pods and the provider gateway's
//! usage ledgers (both selected by label), each one watch for the whole controller, and the AgentRuns and ApprovalGates their own
//! controllers watch (those controllers fill these caches, so each is watched and cached
//! once); all trimmed of `managedFields` and the `last-applied-configuration` annotation
//! before they are stored. Projects come from the repository-claims index
//! ([`crate::claims`]), which already watches them.
//!
//! A cache can lag behind a write the controller just made; readers that would act on an
//! object's absence (a pod that seems to have vanished) confirm it with the API first.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_crds::usage::{LEDGER_KEY, LEDGER_LABEL, UsageLedger, ledger_name};
use countersign_crds::{Agent, AgentRun, ApprovalGate, RiskPolicy};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
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
        self.run_trimmed(api, config, |_| {}).await;
    }

    /// [`Cache::run`], with `more` dropping from each object what no reader needs.
    pub async fn run_trimmed(&self, api: Api<K>, config: watcher::Config, more: fn(&mut K)) {
        let Some(writer) = self.take_writer() else {
            return;
        };
        let stream = watcher(api, config)
            .default_backoff()
            .modify(move |object| {
                trim(object);
                more(object);
            })
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

/// What the reconcilers read of an agent pod is its labels, owner, deletion and status
/// ([`crate::agent_run::decide::PodView`]); its spec (containers, volumes, environment) and
/// annotations are most of its size, so they are not kept: a thousand finished pods
/// otherwise hold tens of MiB.
pub fn trim_pod(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.annotations = None;
    if let Some(status) = pod.status.as_mut() {
        status.pod_ips = None;
        status.host_ips = None;
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
/// Agents need (a watch of every Secret would hold every Secret's data in memory). A change
/// is seen within the TTL.
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

/// Objects as this process's own last status write left them, until the watch cache shows
/// that write. A reconcile triggered before then (a pod's event racing the run's own) works
/// on what the controller last wrote instead of the older cached copy, so it neither decides
/// again from a status it already replaced nor writes that older status back.
pub struct OwnWrites<K> {
    latest: Mutex<HashMap<String, Written<K>>>,
}

/// By uid: the resourceVersions our writes replaced since the cache last caught up, and the
/// object as the last write returned it.
type Written<K> = (HashSet<String>, Arc<K>);

impl<K> Default for OwnWrites<K> {
    fn default() -> Self {
        Self {
            latest: Mutex::new(HashMap::new()),
        }
    }
}

impl<K> std::fmt::Debug for OwnWrites<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnWrites").finish_non_exhaustive()
    }
}

impl<K: Resource> OwnWrites<K> {
    /// `cached`, or the newer copy our own write left when the cache still shows a version
    /// that write replaced. Once the cache shows anything else (our write, or someone
    /// else's), the cached copy is used and the entry forgotten.
    pub fn newest(&self, cached: Arc<K>) -> Arc<K> {
        let (Some(uid), Some(version)) = (
            cached.meta().uid.clone(),
            cached.meta().resource_version.clone(),
        ) else {
            return cached;
        };
        let mut latest = self.lock();
        match latest.get(&uid) {
            Some((replaced, newer)) if replaced.contains(&version) => newer.clone(),
            Some(_) => {
                latest.remove(&uid);
                cached
            }
            None => cached,
        }
    }

    /// Records that a write replaced `from` with `written` (what the apiserver answered).
    pub fn wrote(&self, from: &K, written: K) {
        let (Some(uid), Some(version)) = (
            from.meta().uid.clone(),
            from.meta().resource_version.clone(),
        ) else {
            return;
        };
        let mut latest = self.lock();
        let mut replaced = latest.remove(&uid).map(|(r, _)| r).unwrap_or_default();
        replaced.insert(version);
        let mut written = written;
        trim(&mut written);
        latest.insert(uid, (replaced, Arc::new(written)));
    }

    /// Forgets the object `uid` (deleted).
    pub fn forget(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Written<K>>> {
        self.latest
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
    /// The provider gateway's usage ledgers (ConfigMaps labelled
    /// `countersign.dev/usage-ledger`), one per Project.
    pub ledgers: Cache<ConfigMap>,
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
    /// AgentRuns as the AgentRun reconciler's last status write left them.
    pub own_runs: OwnWrites<AgentRun>,
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
            caches.pods.run_trimmed(
                scoped::<Pod>(ctx),
                watcher::Config::default().labels(RUN_LABEL),
                trim_pod
            ),
            caches.ledgers.run(
                scoped::<ConfigMap>(ctx),
                watcher::Config::default().labels(LEDGER_LABEL)
            ),
        );
    }

    /// Project `project`'s usage ledger in `namespace` as last seen, when it exists and
    /// reads (an unreadable one is logged and counts as none).
    pub fn ledger(&self, namespace: &str, project: &str) -> Option<UsageLedger> {
        let map = self.ledgers.get(namespace, &ledger_name(project))?;
        let text = map.data.as_ref()?.get(LEDGER_KEY)?;
        UsageLedger::parse(text)
            .map_err(|error| tracing::warn!(%error, %namespace, %project, "the usage ledger is unreadable"))
            .ok()
    }

    /// Waits until every cache has its first list.
    pub async fn ready(&self) -> Result<(), NotListed> {
        self.agents.ready().await?;
        self.policies.ready().await?;
        self.gates.ready().await?;
        self.runs.ready().await?;
        self.pods.ready().await?;
        self.ledgers.ready().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;

    fn run(version: &str, message: &str) -> AgentRun {
        let mut run: AgentRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"projectRef": {"name": "p"}, "agentRef": {"name": "a"}, "task": {"title": "t"}}
        }))
        .expect("valid run");
        run.metadata.uid = Some("u1".into());
        run.metadata.resource_version = Some(version.into());
        run.status = Some(countersign_crds::agent_run::AgentRunStatus {
            message: Some(message.into()),
            ..Default::default()
        });
        run
    }

    #[test]
    fn a_cached_copy_our_writes_replaced_gives_way_to_what_we_wrote() {
        let own = OwnWrites::<AgentRun>::default();
        let v1 = Arc::new(run("1", "first"));
        assert_eq!(
            own.newest(v1.clone()).resource_version().as_deref(),
            Some("1")
        );
        own.wrote(&v1, run("2", "second"));
        let v2 = own.newest(v1.clone());
        assert_eq!(
            v2.resource_version().as_deref(),
            Some("2"),
            "the cache lags: ours"
        );
        own.wrote(&v2, run("3", "third"));
        assert_eq!(
            own.newest(v1.clone()).resource_version().as_deref(),
            Some("3"),
            "still lagging two writes behind"
        );
        // The cache shows something we did not write (or our own write): it wins from now on.
        let other = Arc::new(run("7", "someone else"));
        assert_eq!(own.newest(other).resource_version().as_deref(), Some("7"));
        assert_eq!(
            own.newest(v1).resource_version().as_deref(),
            Some("1"),
            "forgotten once the cache moved on"
        );
    }
}
