//! What the gateway knows about the cluster, from watches (reflector stores, no reads per
//! request): agent pods (which register gateway tokens), AgentRuns, Agents and Projects. A
//! watch that fails backs off and starts again; objects that cannot be deserialised are
//! skipped by the watcher.

use std::sync::Arc;

use countersign_crds::attempt::AGENT_POD_APP;
use countersign_crds::{Agent, AgentRun, Project};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;

use crate::registry::{self, AttemptRef, Liveness};

/// The gateway's caches.
#[derive(Clone)]
pub struct Catalog {
    pods: Store<Pod>,
    runs: Store<AgentRun>,
    agents: Store<Agent>,
    projects: Store<Project>,
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A reflector for `K` and the future that keeps it filled.
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .applied_objects();
    let run = async move {
        stream
            .for_each(|event| async move {
                if let Err(error) = event {
                    tracing::debug!(%error, kind = %K::kind(&()), "gateway watch error; retrying");
                }
            })
            .await;
    };
    (reader, run)
}

impl Catalog {
    /// Caches of `namespace` (all namespaces when `None`) and the future that fills them.
    pub fn start(
        client: &kube::Client,
        namespace: Option<&str>,
    ) -> (
        Catalog,
        impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let pod_config =
            watcher::Config::default().labels(&format!("app.kubernetes.io/name={AGENT_POD_APP}"));
        let (pods, watch_pods) = reflect(api::<Pod>(client, namespace), pod_config);
        let (runs, watch_runs) = reflect(
            api::<AgentRun>(client, namespace),
            watcher::Config::default(),
        );
        let (agents, watch_agents) =
            reflect(api::<Agent>(client, namespace), watcher::Config::default());
        let (projects, watch_projects) = reflect(
            api::<Project>(client, namespace),
            watcher::Config::default(),
        );
        let run = async move {
            tokio::join!(watch_pods, watch_runs, watch_agents, watch_projects);
        };
        (
            Catalog {
                pods,
                runs,
                agents,
                projects,
            },
            run,
        )
    }

    /// Waits until every cache has its first complete list.
    pub async fn ready(&self) {
        let _ = tokio::join!(
            self.pods.wait_until_ready(),
            self.runs.wait_until_ready(),
            self.agents.wait_until_ready(),
            self.projects.wait_until_ready(),
        );
    }

    /// The attempt whose pod registers `hash`.
    pub fn attempt(&self, hash: &str) -> Option<(AttemptRef, Liveness)> {
        registry::find(&self.pods.state(), hash)
    }

    /// The live attempts of Agent `agent` in `namespace` (pods whose token is live).
    pub fn live_attempts_of(&self, namespace: &str, agent: &str) -> usize {
        let label = countersign_crds::names::label_value(agent);
        self.pods
            .state()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(countersign_crds::keys::AGENT_LABEL))
                    == Some(&label)
            })
            .filter(|p| registry::liveness(p) == Liveness::Live)
            .count()
    }

    /// The run of `attempt`, when it still exists with the uid the pod names.
    pub fn run(&self, attempt: &AttemptRef) -> Option<Arc<AgentRun>> {
        self.runs.state().into_iter().find(|r| {
            r.metadata.namespace.as_deref() == Some(attempt.namespace.as_str())
                && r.metadata.name.as_deref() == Some(attempt.run.as_str())
                && r.metadata.uid.as_deref() == Some(attempt.run_uid.as_str())
        })
    }

    /// Agent `name` in `namespace`.
    pub fn agent(&self, namespace: &str, name: &str) -> Option<Arc<Agent>> {
        self.agents.state().into_iter().find(|a| {
            a.metadata.namespace.as_deref() == Some(namespace)
                && a.metadata.name.as_deref() == Some(name)
        })
    }

    /// Project `name` in `namespace`.
    pub fn project(&self, namespace: &str, name: &str) -> Option<Arc<Project>> {
        self.projects.state().into_iter().find(|p| {
            p.metadata.namespace.as_deref() == Some(namespace)
                && p.metadata.name.as_deref() == Some(name)
        })
    }
}
