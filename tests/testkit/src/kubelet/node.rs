//! The kubelet's dealings with the API as a node: registering its Node object (Ready, with
//! capacity), binding unscheduled pods to itself as a scheduler would (`pods/binding`), and
//! finishing the graceful deletion of its pods (a real apiserver keeps a deleted pod that is
//! bound to a node until that node's kubelet deletes it again with a grace period of 0).

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use super::FIELD_MANAGER;

/// The scheduler name the kubelet acts for: pods naming another scheduler are left alone.
pub(super) const DEFAULT_SCHEDULER: &str = "default-scheduler";

/// Creates Node `name` (no error if it exists) and reports it Ready with its capacity.
pub(super) async fn register(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": std::env::consts::OS,
                "kubernetes.io/arch": arch(),
                "countersign.dev/local-kubelet": "true",
            },
        },
    }))
    .context("Cannot build the Node object")?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => return Err(err).with_context(|| format!("Cannot register Node {name}")),
    }
    let now = super::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let resources = json!({"cpu": cpus.to_string(), "memory": "8Gi", "pods": "110"});
    let status = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "countersign test kit kubelet: pods run as local processes",
                "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": name},
            ],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "",
                "osImage": "local processes", "containerRuntimeVersion": "none://",
                "kubeletVersion": "countersign-testkit", "kubeProxyVersion": "",
                "operatingSystem": std::env::consts::OS, "architecture": arch(),
            },
        },
    });
    nodes
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .with_context(|| format!("Cannot report Node {name} Ready"))?;
    Ok(())
}

/// Whether the default scheduler would place `pod` (no node yet, default scheduler).
pub(super) fn wants_scheduling(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    let unassigned = spec
        .and_then(|s| s.node_name.as_deref())
        .is_none_or(str::is_empty);
    let scheduler = spec
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or(DEFAULT_SCHEDULER);
    unassigned && scheduler == DEFAULT_SCHEDULER && pod.metadata.deletion_timestamp.is_none()
}

/// Binds `pod` to node `node`. `Ok(false)` when another binder was first (409).
pub(super) async fn bind(client: &kube::Client, pod: &Pod, node: &str) -> anyhow::Result<bool> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    match pods
        .create_subresource::<_, serde_json::Value>(
            "binding",
            name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => Ok(false),
        Err(err) => Err(err).with_context(|| format!("Cannot bind pod {ns}/{name} to {node}")),
    }
}

/// Deletes `pod` for good (grace period 0, only this incarnation), as a kubelet does once
/// the containers of a deleted pod have stopped.
pub(super) async fn finish_deletion(client: &kube::Client, pod: &Pod) -> anyhow::Result<()> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("Cannot finish deleting pod {ns}/{name}")),
    }
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}
