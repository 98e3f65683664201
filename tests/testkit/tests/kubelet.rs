//! The sandbox's local kubelet runs pods as processes and reports what a real kubelet would.

use std::time::Duration;

use countersign_testkit::apiserver::FakeApiServer;
use countersign_testkit::kubelet::Kubelet;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// Upper bound for every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    _server: FakeApiServer,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    kubelet: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kubelet.abort();
    }
}

async fn harness() -> Harness {
    let server = tokio::time::timeout(WAIT, FakeApiServer::start())
        .await
        .expect("in time")
        .expect("server");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubelet = tokio::spawn(Kubelet::new(server.client(), dir.path()).run());
    Harness {
        pods: Api::default_namespaced(server.client()),
        secrets: Api::default_namespaced(server.client()),
        _server: server,
        kubelet,
        _dir: dir,
    }
}

fn pod(name: &str, script: &str, extra: serde_json::Value) -> Pod {
    let mut container =
        json!({"name": "agent", "image": "ignored", "command": ["sh", "-c", script]});
    if let Some(obj) = extra.get("container").and_then(|c| c.as_object()) {
        container
            .as_object_mut()
            .expect("object")
            .extend(obj.clone());
    }
    let mut spec = json!({"restartPolicy": "Never", "containers": [container]});
    if let Some(deadline) = extra.get("activeDeadlineSeconds") {
        spec["activeDeadlineSeconds"] = deadline.clone();
    }
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
    )
    .expect("pod")
}

async fn finished(pods: &Api<Pod>, name: &str) -> Pod {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(pods.clone(), config).applied_objects().boxed();
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(pod)) = stream.next().await {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                return pod;
            }
        }
        panic!("watch ended before pod {name} finished");
    })
    .await
    .unwrap_or_else(|_| panic!("pod {name} did not finish in time"))
}

fn terminated(pod: &Pod) -> k8s_openapi::api::core::v1::ContainerStateTerminated {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .expect("a terminated container state")
}

#[tokio::test]
async fn a_pod_that_writes_its_termination_message_succeeds_with_it() {
    let h = harness().await;
    let script = r#"printf '{"outcome":"Succeeded","greeting":"%s"}' "$GREETING" > "$COUNTERSIGN_TERMINATION_LOG""#;
    let extra = json!({"container": {"env": [{"name": "GREETING", "value": "hello"}]}});
    h.pods
        .create(&PostParams::default(), &pod("ok", script, extra))
        .await
        .expect("create");
    let done = finished(&h.pods, "ok").await;
    assert_eq!(
        done.status.as_ref().unwrap().phase.as_deref(),
        Some("Succeeded")
    );
    let t = terminated(&done);
    assert_eq!(t.exit_code, 0);
    assert_eq!(t.reason.as_deref(), Some("Completed"));
    assert_eq!(
        t.message.as_deref(),
        Some(r#"{"outcome":"Succeeded","greeting":"hello"}"#)
    );
}

#[tokio::test]
async fn a_failing_pod_reports_its_exit_code_and_falls_back_to_its_logs() {
    let h = harness().await;
    let extra = json!({"container": {"terminationMessagePolicy": "FallbackToLogsOnError"}});
    h.pods
        .create(
            &PostParams::default(),
            &pod("bad", "echo provider exploded >&2; exit 3", extra),
        )
        .await
        .expect("create");
    let done = finished(&h.pods, "bad").await;
    assert_eq!(
        done.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let t = terminated(&done);
    assert_eq!(t.exit_code, 3);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert!(t.message.unwrap_or_default().contains("provider exploded"));
}

#[tokio::test]
async fn secret_environment_is_resolved_and_a_missing_secret_fails_the_pod() {
    let h = harness().await;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "token"},
        "stringData": {"value": "s3cret"}
    }))
    .expect("secret");
    h.secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let from_secret = |name: &str| json!({"container": {"env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": "value"}}}]}});
    let script = r#"printf '%s' "$TOKEN" > "$COUNTERSIGN_TERMINATION_LOG""#;
    h.pods
        .create(
            &PostParams::default(),
            &pod("with-secret", script, from_secret("token")),
        )
        .await
        .expect("create");
    assert_eq!(
        terminated(&finished(&h.pods, "with-secret").await)
            .message
            .as_deref(),
        Some("s3cret")
    );

    h.pods
        .create(
            &PostParams::default(),
            &pod("no-secret", script, from_secret("missing")),
        )
        .await
        .expect("create");
    let done = finished(&h.pods, "no-secret").await;
    assert_eq!(
        done.status.as_ref().unwrap().phase.as_deref(),
        Some("Failed")
    );
    let t = terminated(&done);
    assert_eq!(t.reason.as_deref(), Some("CreateContainerConfigError"));
    assert!(t.message.unwrap_or_default().contains("missing"));
}

#[tokio::test]
async fn active_deadline_kills_the_process() {
    let h = harness().await;
    h.pods
        .create(
            &PostParams::default(),
            &pod("slow", "sleep 30", json!({"activeDeadlineSeconds": 1})),
        )
        .await
        .expect("create");
    let done = finished(&h.pods, "slow").await;
    let status = done.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
}
