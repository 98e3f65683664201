//! The usage ledgers the gateway keeps, one ConfigMap per Project
//! (`countersign-usage-<project>`, owned by the Project; the format is
//! [`countersign_crds::usage`]). Spend is recorded in memory at once (the next budget check
//! sees it) and written through to the ConfigMap before the answer that caused it completes,
//! so it survives restarts of the gateway and deleted runs. Writes are read-modify-write with
//! the ConfigMap's `resourceVersion` (several gateway replicas may write one ledger), retried
//! on conflicts, and concurrent requests of one Project share a write. If the apiserver
//! cannot be reached, the answer completes after [`Ledgers::new`]'s timeout and the spend
//! stays pending in memory, written with the next request or at shutdown.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use countersign_crds::usage::{LEDGER_KEY, LEDGER_LABEL, Spend, UsageLedger, ledger_name};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::Api;

use crate::config_map::{self, UpdateError};

/// Tries of one read-modify-write before it counts as failed.
const WRITE_TRIES: u32 = 8;
/// Wait before writing again after a failed write.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Field manager of the gateway's writes.
pub const MANAGER: &str = "countersign-gateway";

/// A Project, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectKey {
    /// Namespace.
    pub namespace: String,
    /// Project name.
    pub name: String,
}

/// One request's spend for the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `<namespace>/<run>/<attempt>`.
    pub attempt: String,
    /// The run's uid.
    pub run_uid: String,
    /// The Agent.
    pub agent: String,
    /// UTC day.
    pub day: String,
    /// What it spent.
    pub spend: Spend,
}

#[derive(Default)]
struct State {
    /// The ledger as last read from or written to the apiserver.
    known: Option<UsageLedger>,
    /// Records not written yet, with their generation.
    pending: Vec<(u64, Record)>,
    next_generation: u64,
    writing: bool,
    owner_uid: Option<String>,
}

struct Entry {
    state: Mutex<State>,
    /// The highest generation written.
    written: tokio::sync::watch::Sender<u64>,
}

/// The ledgers of every Project this gateway served.
pub struct Ledgers {
    client: kube::Client,
    entries: Mutex<HashMap<ProjectKey, Arc<Entry>>>,
    write_timeout: Duration,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Ledgers {
    /// Ledgers read and written through `client`; an answer waits at most `write_timeout`
    /// for its spend to be written.
    pub fn new(client: kube::Client, write_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            client,
            entries: Mutex::new(HashMap::new()),
            write_timeout,
        })
    }

    fn entry(&self, key: &ProjectKey) -> Arc<Entry> {
        lock(&self.entries)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Entry {
                    state: Mutex::new(State::default()),
                    written: tokio::sync::watch::channel(0).0,
                })
            })
            .clone()
    }

    /// The Project's ledger as this gateway knows it: the last version seen on the apiserver
    /// (read now if never read) plus what is not written yet.
    pub async fn view(&self, key: &ProjectKey) -> Result<UsageLedger, kube::Error> {
        let entry = self.entry(key);
        let loaded = lock(&entry.state).known.is_some();
        if !loaded {
            let fetched = read(&self.client, key).await?;
            let mut state = lock(&entry.state);
            if state.known.is_none() {
                state.known = Some(fetched.unwrap_or_else(UsageLedger::new));
            }
        }
        let state = lock(&entry.state);
        let mut ledger = state.known.clone().unwrap_or_default();
        for (_, r) in &state.pending {
            ledger.record(&r.attempt, &r.run_uid, &r.agent, &r.day, &r.spend);
        }
        Ok(ledger)
    }

    /// Records `record` for Project `key` (whose uid owns the ConfigMap) and resolves once it
    /// is written (or after the write timeout; it is then written later).
    pub async fn record(self: &Arc<Self>, key: &ProjectKey, owner_uid: &str, record: Record) {
        let entry = self.entry(key);
        let (generation, start) = {
            let mut state = lock(&entry.state);
            state.next_generation += 1;
            let generation = state.next_generation;
            state.pending.push((generation, record));
            state.owner_uid = Some(owner_uid.to_owned());
            let start = !state.writing;
            state.writing = true;
            (generation, start)
        };
        if start {
            tokio::spawn(write_loop(self.clone(), key.clone(), entry.clone()));
        }
        let mut written = entry.written.subscribe();
        let waited =
            tokio::time::timeout(self.write_timeout, written.wait_for(|w| *w >= generation)).await;
        if waited.is_err() {
            tracing::warn!(project = %key.name, namespace = %key.namespace, "usage not written in time; it stays pending");
        }
    }

    /// Waits (at most `timeout`) until everything recorded so far is written.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let entries: Vec<Arc<Entry>> = lock(&self.entries).values().cloned().collect();
        let all = async {
            for entry in entries {
                let target = lock(&entry.state).next_generation;
                let mut written = entry.written.subscribe();
                let _ = written.wait_for(|w| *w >= target).await;
            }
        };
        tokio::time::timeout(timeout, all).await.is_ok()
    }
}

/// Writes pending records until none are left; on failure waits and tries again.
async fn write_loop(ledgers: Arc<Ledgers>, key: ProjectKey, entry: Arc<Entry>) {
    loop {
        let (batch, owner) = {
            let mut state = lock(&entry.state);
            if state.pending.is_empty() {
                state.writing = false;
                return;
            }
            (std::mem::take(&mut state.pending), state.owner_uid.clone())
        };
        let last = batch.last().map_or(0, |(g, _)| *g);
        let records: Vec<&Record> = batch.iter().map(|(_, r)| r).collect();
        match write(&ledgers.client, &key, owner.as_deref(), &records).await {
            Ok(ledger) => {
                lock(&entry.state).known = Some(ledger);
                entry.written.send_replace(last);
            }
            Err(error) => {
                tracing::warn!(project = %key.name, namespace = %key.namespace, %error, "cannot write the usage ledger; retrying");
                {
                    let mut state = lock(&entry.state);
                    let newer = std::mem::take(&mut state.pending);
                    state.pending = batch;
                    state.pending.extend(newer);
                }
                tokio::time::sleep(RETRY_AFTER_FAILURE).await;
            }
        }
    }
}

/// The Project's ledger, `None` when there is none.
async fn read(client: &kube::Client, key: &ProjectKey) -> Result<Option<UsageLedger>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &key.namespace);
    let map = api.get_opt(&ledger_name(&key.name)).await?;
    Ok(map.map(|m| stored(&m, key)))
}

/// The ledger a ConfigMap holds; an unreadable one (someone else wrote it) starts again:
/// counting from zero beats refusing every request.
fn stored(map: &ConfigMap, key: &ProjectKey) -> UsageLedger {
    let text = map
        .data
        .as_ref()
        .and_then(|d| d.get(LEDGER_KEY))
        .map(String::as_str)
        .unwrap_or_default();
    UsageLedger::parse(text).unwrap_or_else(|error| {
        tracing::warn!(project = %key.name, %error, "the usage ledger is unreadable; starting it again");
        UsageLedger::new()
    })
}

/// Adds `records` to the stored ledger (read-modify-write with the resourceVersion).
async fn write(
    client: &kube::Client,
    key: &ProjectKey,
    owner_uid: Option<&str>,
    records: &[&Record],
) -> Result<UsageLedger, UpdateError<Infallible>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &key.namespace);
    let metadata = ObjectMeta {
        name: Some(ledger_name(&key.name)),
        namespace: Some(key.namespace.clone()),
        labels: Some(BTreeMap::from([
            (LEDGER_LABEL.to_owned(), "true".to_owned()),
            (
                countersign_crds::keys::PROJECT_LABEL.to_owned(),
                countersign_crds::names::label_value(&key.name),
            ),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "countersign".to_owned(),
            ),
        ])),
        owner_references: owner_uid.map(|uid| {
            vec![OwnerReference {
                api_version: "countersign.dev/v1alpha1".into(),
                kind: "Project".into(),
                name: key.name.clone(),
                uid: uid.to_owned(),
                controller: Some(false),
                block_owner_deletion: Some(false),
            }]
        }),
        ..ObjectMeta::default()
    };
    config_map::update(&api, &metadata, LEDGER_KEY, WRITE_TRIES, |current| {
        let mut ledger = current.map_or_else(UsageLedger::new, |m| stored(m, key));
        for r in records {
            ledger.record(&r.attempt, &r.run_uid, &r.agent, &r.day, &r.spend);
        }
        Ok((ledger.render(), ledger))
    })
    .await
}
