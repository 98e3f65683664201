//! The test kit's local kubelet runs pods as processes and reports what a real kubelet would,
//! against both backends: the fake apiserver and the real control plane (when it is built;
//! see `countersign_testkit::cluster`). Every test runs once per backend.

use std::time::Duration;

use countersign_testkit::cluster::TestCluster;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// Upper bound for every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

struct Harness {
    pods: Api<Pod>,
    secrets: Api<Secret>,
    events: Api<Event>,
    namespace: String,
    kubelet: tokio::task::JoinHandle<anyhow::Result<()>>,
    dir: tempfile::TempDir,
    /// Keeps the fake apiserver serving.
    _cluster: TestCluster,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kubelet.abort();
    }
}

/// Which apiserver a test runs against.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Fake,
    Real,
}

/// A namespace with its own kubelet on `backend`; `None` when the real control plane is not
/// built (outside CI: the test returns after a loud note).
async fn harness(backend: Backend) -> Option<Harness> {
    let cluster = match backend {
        Backend::Fake => TestCluster::fake().await.expect("fake apiserver"),
        Backend::Real => tokio::time::timeout(
            Duration::from_secs(120),
            TestCluster::real_or_skip("kubelet tests on the real control plane"),
        )
        .await
        .expect("the control plane starts in time")
        .expect("real control plane")?,
    };
    let namespace = tokio::time::timeout(WAIT, cluster.create_namespace("kubelet"))
        .await
        .expect("in time")
        .expect("namespace");
    let dir = tempfile::tempdir().expect("temp dir");
    let kubelet = tokio::spawn(cluster.kubelet(&namespace, dir.path()).run());
    let client = cluster.client();
    Some(Harness {
        pods: Api::namespaced(client.clone(), &namespace),
        secrets: Api::namespaced(client.clone(), &namespace),
        events: Api::namespaced(client, &namespace),
        namespace,
        kubelet,
        dir,
        _cluster: cluster,
    })
}

/// Runs each named test body (an `async fn(Harness)`) once on the fake and once on the real
/// control plane, as `<name>::fake` and `<name>::real`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn fake() {
                if let Some(h) = super::harness(super::Backend::Fake).await {
                    super::$name(h).await;
                }
            }

            #[tokio::test]
            async fn real() {
                if let Some(h) = super::harness(super::Backend::Real).await {
                    super::$name(h).await;
                }
            }
        }
    )*};
}

on_both_backends!(
    a_pod_that_writes_its_termination_message_succeeds_with_it,
    a_failing_pod_reports_its_exit_code_and_falls_back_to_its_logs,
    secret_environment_is_resolved_and_a_missing_secret_fails_the_pod,
    active_deadline_kills_the_process,
    volumes_become_directories_and_paths_in_them_are_rewritten,
    a_missing_secret_volume_keeps_the_pod_creating_until_the_secret_exists,
    a_volume_the_local_kubelet_cannot_provide_fails_the_pod,
    init_containers_run_in_order_before_the_containers,
    a_failing_init_container_fails_the_pod_and_the_containers_never_start,
    a_secret_volume_is_on_disk_only_for_the_containers_that_mount_it,
);

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
    for field in ["activeDeadlineSeconds", "volumes", "initContainers"] {
        if let Some(value) = extra.get(field) {
            spec[field] = value.clone();
        }
    }
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}),
    )
    .expect("pod")
}

async fn finished(pods: &Api<Pod>, name: &str) -> Pod {
    wait_for(pods, name, "finished", |pod| {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        matches!(phase, Some("Succeeded" | "Failed"))
    })
    .await
}

/// The first version of pod `name` that satisfies `done`, watched.
async fn wait_for(pods: &Api<Pod>, name: &str, what: &str, done: impl Fn(&Pod) -> bool) -> Pod {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(pods.clone(), config).applied_objects().boxed();
    tokio::time::timeout(WAIT, async {
        while let Some(Ok(pod)) = stream.next().await {
            if done(&pod) {
                return pod;
            }
        }
        panic!("watch ended before pod {name} {what}");
    })
    .await
    .unwrap_or_else(|_| panic!("pod {name} not {what} in time"))
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

async fn a_pod_that_writes_its_termination_message_succeeds_with_it(h: Harness) {
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

async fn a_failing_pod_reports_its_exit_code_and_falls_back_to_its_logs(h: Harness) {
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

async fn secret_environment_is_resolved_and_a_missing_secret_fails_the_pod(h: Harness) {
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

async fn active_deadline_kills_the_process(h: Harness) {
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

/// The agent pod's layout (see `AttemptSpec::pod()` in the controller): the attempt Secret
/// at /var/run/countersign (mode 0440), emptyDirs at /workspace and /tmp, `workingDir` and
/// `HOME` on /workspace, and the task file named by an absolute path in the environment.
fn agent_like_pod(name: &str, secret: &str, script: &str) -> Pod {
    let extra = json!({
        "container": {
            "workingDir": "/workspace",
            "env": [
                {"name": "COUNTERSIGN_TASK_FILE", "value": "/var/run/countersign/task.json"},
                {"name": "COUNTERSIGN_TOKEN_FILE", "value": "/var/run/countersign/token"},
                {"name": "HOME", "value": "/workspace"},
                {"name": "UNRELATED", "value": "/workspaces-are-not-/workspace"},
            ],
            "volumeMounts": [
                {"name": "workspace", "mountPath": "/workspace"},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "task", "mountPath": "/var/run/countersign", "readOnly": true},
            ],
        },
        "volumes": [
            {"name": "workspace", "emptyDir": {"sizeLimit": "4Gi"}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "task", "secret": {"secretName": secret, "defaultMode": 0o440}},
        ],
    });
    pod(name, script, extra)
}

fn attempt_secret(name: &str) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": {"task.json": "{\"run\":\"fix-1\"}", "token": "ghs_secret"}
    }))
    .expect("secret")
}

async fn volumes_become_directories_and_paths_in_them_are_rewritten(h: Harness) {
    h.secrets
        .create(&PostParams::default(), &attempt_secret("attempt-1"))
        .await
        .expect("create secret");
    let script = r#"{ cat "$COUNTERSIGN_TASK_FILE"; printf '|%s|%s|%s|%s|%s|%s' "$(pwd)" "$HOME" "$TMPDIR" "$(cat "$COUNTERSIGN_TOKEN_FILE")" "$(stat -c %a "$COUNTERSIGN_TOKEN_FILE")" "$UNRELATED"; } > "$COUNTERSIGN_TERMINATION_LOG""#;
    h.pods
        .create(
            &PostParams::default(),
            &agent_like_pod("agent", "attempt-1", script),
        )
        .await
        .expect("create");
    let done = finished(&h.pods, "agent").await;
    let t = terminated(&done);
    assert_eq!(t.exit_code, 0, "{:?}", t.message);
    let volumes = h.dir.path().join(&h.namespace).join("agent/volumes");
    let workspace = volumes.join("workspace").display().to_string();
    let expected = format!(
        "{{\"run\":\"fix-1\"}}|{workspace}|{workspace}|{}|ghs_secret|440|/workspaces-are-not-/workspace",
        volumes.join("tmp").display()
    );
    assert_eq!(t.message.as_deref(), Some(expected.as_str()));
    let state = done
        .status
        .and_then(|s| s.container_statuses)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.state)
        .expect("state");
    assert!(
        state.waiting.is_none() && state.running.is_none(),
        "{state:?}"
    );
}

async fn a_missing_secret_volume_keeps_the_pod_creating_until_the_secret_exists(h: Harness) {
    let script = r#"cat "$COUNTERSIGN_TASK_FILE" > "$COUNTERSIGN_TERMINATION_LOG""#;
    h.pods
        .create(
            &PostParams::default(),
            &agent_like_pod("early", "attempt-2", script),
        )
        .await
        .expect("create");
    let creating = wait_for(&h.pods, "early", "ContainerCreating", |pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref())
            .is_some_and(|w| w.reason.as_deref() == Some("ContainerCreating"))
    })
    .await;
    assert_eq!(
        creating.status.and_then(|s| s.phase).as_deref(),
        Some("Pending")
    );
    let events = h.events.list(&ListParams::default()).await.expect("events");
    let failed_mount = events
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedMount"))
        .expect("a FailedMount event");
    assert_eq!(failed_mount.involved_object.name.as_deref(), Some("early"));
    assert!(
        failed_mount
            .message
            .as_deref()
            .is_some_and(|m| m.contains(r#"secret "attempt-2" not found"#)),
        "{:?}",
        failed_mount.message
    );

    h.secrets
        .create(&PostParams::default(), &attempt_secret("attempt-2"))
        .await
        .expect("create secret");
    let done = finished(&h.pods, "early").await;
    assert_eq!(
        terminated(&done).message.as_deref(),
        Some(r#"{"run":"fix-1"}"#)
    );
}

async fn a_volume_the_local_kubelet_cannot_provide_fails_the_pod(h: Harness) {
    let extra = json!({
        "container": {"volumeMounts": [{"name": "host", "mountPath": "/host"}]},
        "volumes": [{"name": "host", "hostPath": {"path": "/etc"}}],
    });
    h.pods
        .create(&PostParams::default(), &pod("host", "true", extra))
        .await
        .expect("create");
    let t = terminated(&finished(&h.pods, "host").await);
    assert_eq!(t.reason.as_deref(), Some("CreateContainerConfigError"));
    assert!(
        t.message
            .unwrap_or_default()
            .contains("only sets up emptyDir, secret, configMap")
    );
}

/// An init container appending `step` to `$WORK/order` and reporting it as its message.
fn init_step(name: &str, step: &str, exit: i32) -> serde_json::Value {
    let script = format!(
        r#"printf {step} >> "$WORK/order"; printf 'init {step}' > "$COUNTERSIGN_TERMINATION_LOG"; exit {exit}"#
    );
    json!({
        "name": name, "image": "ignored", "command": ["sh", "-c", script],
        "env": [{"name": "WORK", "value": "/work"}],
        "volumeMounts": [{"name": "work", "mountPath": "/work"}],
    })
}

fn with_init_containers(init: Vec<serde_json::Value>) -> serde_json::Value {
    json!({
        "initContainers": init,
        "container": {
            "env": [{"name": "WORK", "value": "/work"}],
            "volumeMounts": [{"name": "work", "mountPath": "/work"}],
        },
        "volumes": [{"name": "work", "emptyDir": {}}],
    })
}

fn init_statuses(pod: &Pod) -> Vec<k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.init_container_statuses.clone())
        .unwrap_or_default()
}

async fn init_containers_run_in_order_before_the_containers(h: Harness) {
    let extra = with_init_containers(vec![
        init_step("first", "1", 0),
        init_step("second", "2", 0),
    ]);
    let script = r#"printf 3 >> "$WORK/order"; cat "$WORK/order" > "$COUNTERSIGN_TERMINATION_LOG""#;
    h.pods
        .create(&PostParams::default(), &pod("ordered", script, extra))
        .await
        .expect("create");
    let done = finished(&h.pods, "ordered").await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded")
    );
    assert_eq!(terminated(&done).message.as_deref(), Some("123"));
    let inits = init_statuses(&done);
    let messages: Vec<_> = inits
        .iter()
        .map(|s| {
            let t = s
                .state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .expect("terminated");
            (
                s.name.as_str(),
                t.exit_code,
                t.message.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            ("first", 0, "init 1".to_owned()),
            ("second", 0, "init 2".to_owned())
        ]
    );
    let initialized = done
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Initialized"))
        .map(|c| c.status.clone());
    assert_eq!(initialized.as_deref(), Some("True"));
}

async fn a_failing_init_container_fails_the_pod_and_the_containers_never_start(h: Harness) {
    let extra = with_init_containers(vec![
        init_step("first", "1", 0),
        init_step("broken", "2", 4),
        init_step("never", "x", 0),
    ]);
    let script = r#"printf main >> "$WORK/order""#;
    h.pods
        .create(&PostParams::default(), &pod("blocked", script, extra))
        .await
        .expect("create");
    let done = finished(&h.pods, "blocked").await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed")
    );
    let inits = init_statuses(&done);
    let broken = inits[1]
        .state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("the failed init container terminated");
    assert_eq!(
        (broken.exit_code, broken.message.as_deref()),
        (4, Some("init 2"))
    );
    assert!(
        inits[2]
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .is_some(),
        "{:?}",
        inits[2]
    );
    let main = done
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .expect("container state");
    assert!(main.waiting.is_some(), "{main:?}");
    let order = h
        .dir
        .path()
        .join(&h.namespace)
        .join("blocked/volumes/work/order");
    assert_eq!(std::fs::read_to_string(order).expect("order file"), "12");
}

/// The agent pod's three steps: `clone` and `push` mount the token Secret, `work` does not
/// (a real pod's mount namespace lacks it). Here, where containers are processes of one user,
/// the token must not be anywhere on disk while `work` runs: each container gets its own copy
/// of the Secret volumes it mounts, removed when it ends.
async fn a_secret_volume_is_on_disk_only_for_the_containers_that_mount_it(h: Harness) {
    h.secrets
        .create(&PostParams::default(), &attempt_secret("steps"))
        .await
        .expect("create secret");
    let token_mount = json!([
        {"name": "work", "mountPath": "/work"},
        {"name": "token", "mountPath": "/var/run/token", "readOnly": true},
    ]);
    let step = |name: &str, script: &str, mounts: serde_json::Value| {
        json!({"name": name, "image": "ignored", "command": ["sh", "-c", script],
            "env": [{"name": "WORK", "value": "/work"}, {"name": "TOKEN", "value": "/var/run/token/token"}],
            "volumeMounts": mounts})
    };
    // `work` searches the whole pod directory (its working directory's parents) for the token.
    let work = r#"cd "$WORK/../.." && if grep -rq ghs_secret . ; then echo found > "$WORK/seen"; else echo none > "$WORK/seen"; fi"#;
    let extra = json!({
        "initContainers": [
            step("clone", r#"grep -q ghs_secret "$TOKEN" && echo read > "$WORK/clone-saw""#, token_mount.clone()),
            step("work", work, json!([{"name": "work", "mountPath": "/work"}])),
        ],
        "container": {
            "env": [{"name": "WORK", "value": "/work"}, {"name": "TOKEN", "value": "/var/run/token/token"}],
            "volumeMounts": token_mount,
        },
        "volumes": [
            {"name": "work", "emptyDir": {}},
            {"name": "token", "secret": {"secretName": "steps", "items": [{"key": "token", "path": "token"}]}},
        ],
    });
    let script = r#"printf '%s|%s|%s' "$(cat "$WORK/clone-saw")" "$(cat "$WORK/seen")" "$(cat "$TOKEN")" > "$COUNTERSIGN_TERMINATION_LOG""#;
    h.pods
        .create(&PostParams::default(), &pod("steps", script, extra))
        .await
        .expect("create");
    let done = finished(&h.pods, "steps").await;
    let t = terminated(&done);
    assert_eq!(t.exit_code, 0, "{:?}", t.message);
    assert_eq!(t.message.as_deref(), Some("read|none|ghs_secret"));
    let containers = h.dir.path().join(&h.namespace).join("steps/containers");
    assert!(
        !containers.join("agent").exists() && !containers.join("clone").exists(),
        "copies are removed when their container ends"
    );
}
