//! A local "kubelet" for tests and the sandbox: a client of any apiserver (the fake or the
//! real one) that acts as one node and runs its pods' containers as ordinary processes.
//!
//! It registers a Node (Ready, with capacity, named [`Kubelet::node_name`]), binds pods that
//! have no node and ask for the default scheduler to itself through the `pods/binding`
//! subresource (as the scheduler would; there is no other), and runs the pods bound to it:
//! volumes first, then each init container in order (each must exit 0, else the pod fails),
//! then all containers at once, each `command` + `args` with the pod's literal and
//! Secret-sourced environment in a per-pod work directory `<work dir>/<namespace>/<pod>/`.
//! It reports through the pod's status subresource what a real kubelet would: Pending →
//! Running → Succeeded/Failed with every container's exit code and termination message in
//! `initContainerStatuses`/`containerStatuses`. The image is ignored (there is no container
//! runtime here), so pods must run a program that exists on this machine, such as the
//! `countersign` binary. When a pod bound to it is deleted it kills the processes and
//! finishes the deletion (grace period 0), as a real apiserver waits for the kubelet to.
//!
//! Volumes are directories, not mounts: every pod volume becomes
//! `<pod dir>/volumes/<volume name>/` (emptyDir empty; Secret and ConfigMap volumes one file
//! per key, or per `items` entry, with its decoded bytes and `mode`/`defaultMode`; downward
//! API and projected volumes, ServiceAccount tokens from the TokenRequest API included), and
//! the container's `volumeMounts` map each `mountPath` (or its `subPath`) to that directory.
//! There is no mount namespace, so the kubelet rewrites paths where it hands them over: the
//! `workingDir` (the process runs in the mapped directory; outside any mount, in the pod
//! directory) and every literal environment value that equals a mount path or starts with
//! `<mountPath>/` (`HOME=/workspace` becomes `HOME=<pod dir>/volumes/workspace`). `TMPDIR`
//! points at a volume mounted on `/tmp`. Arguments, values from Secrets and paths a program
//! builds from constants are not rewritten, and a Secret volume's files can be written (the
//! real mount is read-only). A missing Secret or ConfigMap keeps the pod Pending in
//! `ContainerCreating` with a `FailedMount` event while set-up is retried, as on a real
//! node; volume types the kubelet cannot provide fail the pod with
//! `CreateContainerConfigError`.
//!
//! The termination message is read from the file named by `COUNTERSIGN_TERMINATION_LOG` (a
//! per-container file `<pod dir>/<container>.termination-log`, since `/dev/termination-log`
//! cannot be private to a process here), falling back to the tail of the output
//! (`<pod dir>/<container>.log`) when the container's `terminationMessagePolicy` is
//! `FallbackToLogsOnError` and the file is empty, as Kubernetes does.

mod node;
mod pod;
mod status;
mod volumes;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::oneshot;

use self::pod::RunContext;

/// Environment variable naming the file a container writes its termination message to.
pub const TERMINATION_LOG_ENV: &str = "COUNTERSIGN_TERMINATION_LOG";
/// The Node name of a kubelet for all namespaces, unless [`Kubelet::with_node_name`] says
/// otherwise.
pub const DEFAULT_NODE_NAME: &str = "countersign-kubelet";

/// Field manager for status written by this kubelet.
const FIELD_MANAGER: &str = "countersign-sandbox-kubelet";
/// Pause before watching again after a watch error.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// Runs pods as local processes until the returned future is dropped or its task aborted.
pub struct Kubelet {
    client: kube::Client,
    work_dir: PathBuf,
    node_name: String,
    namespace: Option<String>,
    running: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

impl Kubelet {
    /// A kubelet for every namespace, as Node [`DEFAULT_NODE_NAME`], that keeps each pod's
    /// files under `work_dir/<namespace>/<pod>/`.
    pub fn new(client: kube::Client, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            client,
            work_dir: work_dir.into(),
            node_name: DEFAULT_NODE_NAME.to_owned(),
            namespace: None,
            running: Arc::default(),
        }
    }

    /// Only binds and runs pods in `namespace`, as Node `countersign-kubelet-<namespace>`
    /// (unless named otherwise), so tests sharing one apiserver each have their own kubelet.
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        if self.node_name == DEFAULT_NODE_NAME {
            self.node_name = format!("{DEFAULT_NODE_NAME}-{namespace}");
        }
        self.namespace = Some(namespace.to_owned());
        self
    }

    /// Registers as Node `name`.
    pub fn with_node_name(mut self, name: &str) -> Self {
        self.node_name = name.to_owned();
        self
    }

    /// The Node this kubelet registers and binds pods to.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// Registers the Node, then watches pods and binds and runs them. Returns only on an
    /// error it cannot retry (the watch itself is retried).
    pub async fn run(self) -> anyhow::Result<()> {
        node::register(&self.client, &self.node_name).await?;
        let pods: Api<Pod> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let mut events = watcher(pods, watcher::Config::default()).boxed();
        loop {
            match events.try_next().await {
                Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    self.observe(pod).await
                }
                Ok(Some(watcher::Event::Delete(pod))) => self.stop(&pod),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(err) => {
                    tracing::warn!(error = %err, "pod watch failed; retrying");
                    tokio::time::sleep(WATCH_RETRY).await;
                }
            }
        }
    }

    fn key(pod: &Pod) -> String {
        pod.metadata.uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                pod.metadata.namespace.as_deref().unwrap_or("default"),
                pod.metadata.name.as_deref().unwrap_or_default()
            )
        })
    }

    fn stop(&self, pod: &Pod) {
        let stopper = self
            .running
            .lock()
            .expect("kubelet lock poisoned")
            .remove(&Self::key(pod));
        if let Some(stop) = stopper {
            let _ = stop.send(());
        }
    }

    async fn observe(&self, pod: Pod) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        let mine = node == Some(self.node_name.as_str());
        if pod.metadata.deletion_timestamp.is_some() {
            if mine {
                self.stop(&pod);
                if let Err(err) = node::finish_deletion(&self.client, &pod).await {
                    tracing::warn!(error = %format!("{err:#}"), "kubelet could not delete a pod");
                }
            }
            return;
        }
        if node::wants_scheduling(&pod) {
            // The bound pod comes back through the watch with its node set.
            if let Err(err) = node::bind(&self.client, &pod, &self.node_name).await {
                tracing::warn!(error = %format!("{err:#}"), "kubelet could not bind a pod");
            }
            return;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if !mine || phase != "Pending" {
            return;
        }
        let key = Self::key(&pod);
        let (stop_tx, stop_rx) = oneshot::channel();
        {
            let mut running = self.running.lock().expect("kubelet lock poisoned");
            if running.contains_key(&key) {
                return;
            }
            running.insert(key.clone(), stop_tx);
        }
        let ctx = RunContext {
            client: self.client.clone(),
            work_dir: self.work_dir.clone(),
        };
        let running = self.running.clone();
        tokio::spawn(async move {
            let name = pod.metadata.name.clone().unwrap_or_default();
            if let Err(err) = ctx.run_pod(&pod, stop_rx).await {
                tracing::warn!(pod = %name, error = %format!("{err:#}"), "kubelet could not run pod");
            }
            running.lock().expect("kubelet lock poisoned").remove(&key);
        });
    }
}

/// Now, as the API's timestamps (whole seconds, RFC 3339).
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
        .to_string()
}
