//! Pod status written through the API, as a kubelet would, for tests that script what a pod
//! does instead of running it ([`crate::kubelet`] runs it). Works on any apiserver, the real
//! one included: everything goes through the `pods/status` subresource with a merge patch.
//!
//! Init containers are reported completed (exit 0) before the containers, whose exit code and
//! termination message are the scripted ones.

use anyhow::Context as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// Marks pod `ns/name` Running: every container started, the pod Ready.
pub async fn set_running(client: kube::Client, ns: &str, name: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("Cannot read pod {ns}/{name}"))?;
    let now = Timestamp::now().to_string();
    let init: Vec<Value> = names(&pod, true)
        .into_iter()
        .map(|(n, image)| terminated(&n, &image, 0, "", &now))
        .collect();
    let containers: Vec<Value> = names(&pod, false)
        .into_iter()
        .map(|(n, image)| {
            json!({"name": n, "image": image, "imageID": "", "ready": true, "started": true,
                   "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    let status = json!({"status": {
        "phase": "Running",
        "startTime": now,
        "initContainerStatuses": init,
        "containerStatuses": containers,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ],
    }});
    patch_status(&pods, name, &status).await
}

/// Marks pod `ns/name` as not starting: its first init container (its first container when
/// it has none) waiting with `reason` and `message` (e.g. `ErrImagePull`), the others waiting
/// to initialise, the pod Pending, as a kubelet reports a pod whose image cannot be pulled.
pub async fn set_waiting(
    client: kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    message: &str,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("Cannot read pod {ns}/{name}"))?;
    let waiting = |(n, image): (String, String), first: bool| {
        let state = if first {
            json!({"waiting": {"reason": reason, "message": message}})
        } else {
            json!({"waiting": {"reason": "PodInitializing"}})
        };
        json!({"name": n, "image": image, "imageID": "", "ready": false, "started": false,
               "restartCount": 0, "state": state})
    };
    let init = names(&pod, true);
    let has_init = !init.is_empty();
    let init: Vec<Value> = init
        .into_iter()
        .enumerate()
        .map(|(i, c)| waiting(c, i == 0))
        .collect();
    let containers: Vec<Value> = names(&pod, false)
        .into_iter()
        .enumerate()
        .map(|(i, c)| waiting(c, !has_init && i == 0))
        .collect();
    let status = json!({"status": {
        "phase": "Pending",
        "initContainerStatuses": init,
        "containerStatuses": containers,
    }});
    patch_status(&pods, name, &status).await
}

/// Ends pod `ns/name`: its containers terminated with `exit_code` and the termination
/// `message`; the pod Succeeded (exit 0) or Failed.
pub async fn finish(
    client: kube::Client,
    ns: &str,
    name: &str,
    exit_code: i32,
    message: &str,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let pod = pods
        .get(name)
        .await
        .with_context(|| format!("Cannot read pod {ns}/{name}"))?;
    let now = Timestamp::now().to_string();
    let init: Vec<Value> = names(&pod, true)
        .into_iter()
        .map(|(n, image)| terminated(&n, &image, 0, "", &now))
        .collect();
    let containers: Vec<Value> = names(&pod, false)
        .into_iter()
        .map(|(n, image)| terminated(&n, &image, exit_code, message, &now))
        .collect();
    let status = json!({"status": {
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "startTime": now,
        "initContainerStatuses": init,
        "containerStatuses": containers,
        "conditions": [
            {"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now},
        ],
    }});
    patch_status(&pods, name, &status).await
}

async fn patch_status(pods: &Api<Pod>, name: &str, status: &Value) -> anyhow::Result<()> {
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .with_context(|| format!("Cannot write the status of pod {name}"))?;
    Ok(())
}

fn terminated(name: &str, image: &str, exit_code: i32, message: &str, now: &str) -> Value {
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let id = format!("containerd://{name}");
    json!({"name": name, "image": image, "imageID": "", "ready": false, "started": false,
           "restartCount": 0, "containerID": id,
           "state": {"terminated": {"exitCode": exit_code, "message": message, "reason": reason,
                                    "startedAt": now, "finishedAt": now, "containerID": id}}})
}

/// (name, image) of the pod's init containers (`init`) or containers.
fn names(pod: &Pod, init: bool) -> Vec<(String, String)> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let containers = if init {
        spec.init_containers.as_deref().unwrap_or_default()
    } else {
        &spec.containers
    };
    containers
        .iter()
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}
