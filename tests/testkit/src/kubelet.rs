//! A local "kubelet" for the sandbox: runs each pod's containers as ordinary processes.
//!
//! It is just another API client: it watches pods on the (fake) apiserver, starts the first
//! container's `command` + `args` with the pod's literal and Secret-sourced environment in a
//! per-pod work directory, and reports through the pod's status subresource what a real
//! kubelet would: Pending → Running → Succeeded/Failed with the container's exit code and
//! termination message. The image is ignored (there is no container runtime here), so pods
//! must run a program that exists on this machine, such as the `countersign` binary.
//!
//! The termination message is read from the file named by `COUNTERSIGN_TERMINATION_LOG` (a
//! per-pod file, since `/dev/termination-log` cannot be private to a process here), falling
//! back to the tail of the output when the container's `terminationMessagePolicy` is
//! `FallbackToLogsOnError` and the file is empty, as Kubernetes does.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::oneshot;

/// Environment variable naming the file a container writes its termination message to.
pub const TERMINATION_LOG_ENV: &str = "COUNTERSIGN_TERMINATION_LOG";
/// Kubernetes caps termination messages at 4096 bytes.
const MAX_TERMINATION_MESSAGE: usize = 4096;
/// Bytes of output kept for `FallbackToLogsOnError`.
const FALLBACK_LOG_BYTES: usize = 2048;

/// Field manager for status written by this kubelet.
const FIELD_MANAGER: &str = "countersign-sandbox-kubelet";

/// Runs pods as local processes until the returned handle is dropped or the task is aborted.
pub struct Kubelet {
    client: kube::Client,
    work_dir: PathBuf,
    running: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

impl Kubelet {
    /// A kubelet that keeps each pod's files under `work_dir/<namespace>/<pod>/`.
    pub fn new(client: kube::Client, work_dir: impl Into<PathBuf>) -> Self {
        Self {
            client,
            work_dir: work_dir.into(),
            running: Arc::default(),
        }
    }

    /// Watches pods in every namespace and runs the new ones. Returns only on a watch error
    /// that cannot be retried (the watcher itself retries transient ones).
    pub async fn run(self) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let mut events = watcher(pods, watcher::Config::default()).boxed();
        let backoff = Duration::from_millis(500);
        loop {
            match events.try_next().await {
                Ok(Some(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                    self.observe(pod)
                }
                Ok(Some(watcher::Event::Delete(pod))) => self.stop(&pod),
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(err) => {
                    tracing::warn!(error = %err, "pod watch failed; retrying");
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }

    fn key(pod: &Pod) -> String {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or_default()
        )
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

    fn observe(&self, pod: Pod) {
        if pod.metadata.deletion_timestamp.is_some() {
            return self.stop(&pod);
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending");
        if phase != "Pending" {
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
            running: self.running.clone(),
        };
        tokio::spawn(async move {
            if let Err(err) = ctx.run_pod(&pod, stop_rx).await {
                tracing::warn!(pod = %key, error = %format!("{err:#}"), "kubelet could not run pod");
            }
            ctx.running
                .lock()
                .expect("kubelet lock poisoned")
                .remove(&key);
        });
    }
}

struct RunContext {
    client: kube::Client,
    work_dir: PathBuf,
    running: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>,
}

/// How a container process ended.
struct Exit {
    code: i32,
    reason: &'static str,
    message: String,
}

impl RunContext {
    async fn run_pod(&self, pod: &Pod, stop: oneshot::Receiver<()>) -> anyhow::Result<()> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let spec = pod.spec.as_ref().context("pod has no spec")?;
        let container = spec.containers.first().context("pod has no containers")?;
        let dir = self.work_dir.join(&ns).join(&name);
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("Cannot create {}", dir.display()))?;
        let termination_log = dir.join("termination-log");
        tokio::fs::write(&termination_log, b"")
            .await
            .context("Cannot create the termination log")?;

        let env = match self.environment(&ns, container).await {
            Ok(env) => env,
            Err(err) => {
                let exit = Exit {
                    code: 128,
                    reason: "CreateContainerConfigError",
                    message: format!("{err:#}"),
                };
                return self.report_terminated(&pods, &name, container, &exit).await;
            }
        };
        let argv: Vec<String> = container
            .command
            .iter()
            .flatten()
            .chain(container.args.iter().flatten())
            .cloned()
            .collect();
        let Some((program, args)) = argv.split_first() else {
            let exit = Exit {
                code: 128,
                reason: "StartError",
                message: "container has no command (images are not run here)".into(),
            };
            return self.report_terminated(&pods, &name, container, &exit).await;
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .env(TERMINATION_LOG_ENV, &termination_log)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(err) => {
                let exit = Exit {
                    code: 128,
                    reason: "StartError",
                    message: format!("cannot start {program}: {err}"),
                };
                return self.report_terminated(&pods, &name, container, &exit).await;
            }
        };
        self.report_running(&pods, &name, container).await?;

        // Drain the pipes concurrently so a chatty process never blocks on a full pipe.
        let output = tokio::spawn(collect_output(
            child.stdout.take(),
            child.stderr.take(),
            dir.join("output.log"),
        ));
        let deadline = spec
            .active_deadline_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64));
        let deadline_sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let exit = tokio::select! {
            status = child.wait() => {
                let status = status.context("Cannot wait for the container process")?;
                let code = status.code().unwrap_or(137);
                let tail = output.await.unwrap_or_default();
                let mut message = read_capped(&termination_log).await;
                let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
                if message.is_empty() && fallback && code != 0 {
                    message = tail;
                }
                Exit { code, reason: if code == 0 { "Completed" } else { "Error" }, message }
            }
            _ = deadline_sleep => {
                let _ = child.kill().await;
                return self.report_deadline_exceeded(&pods, &name, container).await;
            }
            _ = stop => {
                let _ = child.kill().await;
                return Ok(()); // the pod is being deleted; nobody reads its status any more
            }
        };
        self.report_terminated(&pods, &name, container, &exit).await
    }

    async fn environment(
        &self,
        ns: &str,
        container: &Container,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut env = BTreeMap::new();
        for var in container.env.iter().flatten() {
            let value = match (
                &var.value,
                var.value_from
                    .as_ref()
                    .and_then(|f| f.secret_key_ref.as_ref()),
            ) {
                (Some(value), _) => value.clone(),
                (None, Some(sel)) => {
                    let secret = secrets
                        .get(&sel.name)
                        .await
                        .with_context(|| format!("secret {:?} not found", sel.name))?;
                    let bytes = secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&sel.key))
                        .map(|b| b.0.clone())
                        .or_else(|| {
                            secret
                                .string_data
                                .as_ref()
                                .and_then(|d| d.get(&sel.key))
                                .map(|s| s.clone().into_bytes())
                        })
                        .with_context(|| {
                            format!("couldn't find key {} in Secret {ns}/{}", sel.key, sel.name)
                        })?;
                    String::from_utf8(bytes).with_context(|| {
                        format!("key {} of Secret {} is not UTF-8", sel.key, sel.name)
                    })?
                }
                (None, None) => String::new(),
            };
            env.insert(var.name.clone(), value);
        }
        Ok(env)
    }

    async fn patch_status(
        &self,
        pods: &Api<Pod>,
        name: &str,
        status: serde_json::Value,
    ) -> anyhow::Result<()> {
        let patch = json!({"apiVersion": "v1", "kind": "Pod", "status": status});
        pods.patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .with_context(|| format!("Cannot update the status of pod {name}"))?;
        Ok(())
    }

    async fn report_running(
        &self,
        pods: &Api<Pod>,
        name: &str,
        container: &Container,
    ) -> anyhow::Result<()> {
        let now = now();
        self.patch_status(
            pods,
            name,
            json!({
                "phase": "Running",
                "startTime": now,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
                "containerStatuses": [{
                    "name": container.name, "image": container.image.clone().unwrap_or_default(), "imageID": "",
                    "ready": true, "restartCount": 0, "started": true,
                    "state": {"running": {"startedAt": now}}
                }]
            }),
        )
        .await
    }

    async fn report_terminated(
        &self,
        pods: &Api<Pod>,
        name: &str,
        container: &Container,
        exit: &Exit,
    ) -> anyhow::Result<()> {
        self.report_finished(pods, name, container, exit, None)
            .await
    }

    /// Writes the final pod status in one patch, so no watcher sees a half-written ending.
    async fn report_finished(
        &self,
        pods: &Api<Pod>,
        name: &str,
        container: &Container,
        exit: &Exit,
        pod_reason: Option<(&str, &str)>,
    ) -> anyhow::Result<()> {
        let now = now();
        let phase = if exit.code == 0 {
            "Succeeded"
        } else {
            "Failed"
        };
        let mut status = json!({
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted", "lastTransitionTime": now}],
            "containerStatuses": [{
                "name": container.name, "image": container.image.clone().unwrap_or_default(), "imageID": "",
                "ready": false, "restartCount": 0, "started": false,
                "state": {"terminated": {
                    "exitCode": exit.code, "reason": exit.reason, "message": exit.message,
                    "finishedAt": now, "startedAt": now
                }}
            }]
        });
        if let Some((reason, message)) = pod_reason {
            status["reason"] = json!(reason);
            status["message"] = json!(message);
        }
        self.patch_status(pods, name, status).await
    }

    async fn report_deadline_exceeded(
        &self,
        pods: &Api<Pod>,
        name: &str,
        container: &Container,
    ) -> anyhow::Result<()> {
        let exit = Exit {
            code: 137,
            reason: "Error",
            message: String::new(),
        };
        let why = (
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        );
        self.report_finished(pods, name, container, &exit, Some(why))
            .await
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now())
        .to_string()
}

async fn read_capped(path: &Path) -> String {
    let bytes = tokio::fs::read(path).await.unwrap_or_default();
    let capped = &bytes[..bytes.len().min(MAX_TERMINATION_MESSAGE)];
    String::from_utf8_lossy(capped).into_owned()
}

/// Copies stdout and stderr into `log` and resolves to the output's last bytes.
async fn collect_output(
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    log: PathBuf,
) -> String {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let read_out = async {
        if let Some(mut s) = stdout {
            let _ = s.read_to_end(&mut out).await;
        }
    };
    let read_err = async {
        if let Some(mut s) = stderr {
            let _ = s.read_to_end(&mut err).await;
        }
    };
    tokio::join!(read_out, read_err);
    out.extend_from_slice(&err);
    let _ = tokio::fs::write(&log, &out).await;
    let start = out.len().saturating_sub(FALLBACK_LOG_BYTES);
    String::from_utf8_lossy(&out[start..]).into_owned()
}
