//! A local "kubelet" for the sandbox: runs each pod's containers as ordinary processes.
//!
//! It is just another API client: it watches pods on the (fake) apiserver, starts the first
//! container's `command` + `args` with the pod's literal and Secret-sourced environment in a
//! per-pod work directory `<work dir>/<namespace>/<pod>/`, and reports through the pod's
//! status subresource what a real kubelet would: Pending → Running → Succeeded/Failed with
//! the container's exit code and termination message. The image is ignored (there is no
//! container runtime here), so pods must run a program that exists on this machine, such as
//! the `countersign` binary.
//!
//! Volumes are directories, not mounts: every pod volume becomes
//! `<pod dir>/volumes/<volume name>/` (emptyDir empty; Secret and ConfigMap volumes one file
//! per key, or per `items` entry, with its decoded bytes and `mode`/`defaultMode`), and the
//! container's `volumeMounts` map each `mountPath` (or its `subPath`) to that directory.
//! There is no mount namespace, so the kubelet rewrites paths where it hands them over: the
//! `workingDir` (the process runs in the mapped directory; outside any mount, in the pod
//! directory) and every literal environment value that equals a mount path or starts with
//! `<mountPath>/` (`HOME=/workspace` becomes `HOME=<pod dir>/volumes/workspace`). `TMPDIR`
//! points at a volume mounted on `/tmp`. Arguments, values from Secrets and paths a program
//! builds from constants are not rewritten, and a Secret volume's files can be written (the
//! real mount is read-only). A missing Secret or ConfigMap keeps the pod Pending in
//! `ContainerCreating` with a `FailedMount` event while set-up is retried, as on a real
//! node; volume types other than emptyDir, secret and configMap fail the pod with
//! `CreateContainerConfigError`.
//!
//! The termination message is read from the file named by `COUNTERSIGN_TERMINATION_LOG` (a
//! per-pod file, since `/dev/termination-log` cannot be private to a process here), falling
//! back to the tail of the output when the container's `terminationMessagePolicy` is
//! `FallbackToLogsOnError` and the file is empty, as Kubernetes does.

mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Container, Event, Pod, PodSpec, Secret};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::oneshot;
use tokio::time::Instant;

use self::volumes::{MountMap, VolumeError};

/// Environment variable naming the file a container writes its termination message to.
pub const TERMINATION_LOG_ENV: &str = "COUNTERSIGN_TERMINATION_LOG";
/// Kubernetes caps termination messages at 4096 bytes.
const MAX_TERMINATION_MESSAGE: usize = 4096;
/// Bytes of output kept for `FallbackToLogsOnError`.
const FALLBACK_LOG_BYTES: usize = 2048;

/// Field manager for status written by this kubelet.
const FIELD_MANAGER: &str = "countersign-sandbox-kubelet";
/// First wait before setting up volumes again after a missing Secret or ConfigMap.
const MOUNT_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between volume set-up attempts (a real kubelet backs off to about two
/// minutes; tests would rather not wait that long).
const MOUNT_RETRY_MAX: Duration = Duration::from_secs(2);

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

/// How setting up a pod's volumes ended.
enum VolumeSetUp {
    /// Ready: the container's mounts.
    Ready(MountMap),
    /// Impossible here: the container fails with this.
    Failed(Exit),
    /// The pod's `activeDeadlineSeconds` passed while a Secret or ConfigMap was missing.
    DeadlineExceeded,
    /// The pod was deleted while waiting.
    Stopped,
}

impl RunContext {
    async fn run_pod(&self, pod: &Pod, mut stop: oneshot::Receiver<()>) -> anyhow::Result<()> {
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
        // `activeDeadlineSeconds` counts from the pod's start, volume set-up included.
        let deadline = spec
            .active_deadline_seconds
            .map(|s| Instant::now() + Duration::from_secs(s.max(0) as u64));

        let setup = self
            .set_up_volumes(pod, spec, container, &dir, deadline, &mut stop)
            .await;
        let mounts = match setup {
            VolumeSetUp::Ready(mounts) => mounts,
            VolumeSetUp::Failed(exit) => {
                return self.report_terminated(&pods, &name, container, &exit).await;
            }
            VolumeSetUp::DeadlineExceeded => {
                return self.report_deadline_exceeded(&pods, &name, container).await;
            }
            VolumeSetUp::Stopped => return Ok(()),
        };
        let work_dir = match container
            .working_dir
            .as_deref()
            .and_then(|wd| mounts.resolve(wd))
        {
            Some(local) => {
                // The runtime creates a missing working directory.
                tokio::fs::create_dir_all(&local)
                    .await
                    .with_context(|| format!("Cannot create {}", local.display()))?;
                local
            }
            None => dir.clone(),
        };

        let env = match self.environment(&ns, container, &mounts).await {
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
            .current_dir(&work_dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &dir)
            .env(TERMINATION_LOG_ENV, &termination_log);
        if let Some(tmp) = mounts.resolve("/tmp") {
            // Temporary files go to the pod's /tmp volume, as they would in the container.
            command.env("TMPDIR", tmp);
        }
        command
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
        let deadline_sleep = sleep_until(deadline);
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
            _ = &mut stop => {
                let _ = child.kill().await;
                return Ok(()); // the pod is being deleted; nobody reads its status any more
            }
        };
        self.report_terminated(&pods, &name, container, &exit).await
    }

    /// Sets up the pod's volumes under `dir`. While a Secret or ConfigMap is missing the pod
    /// stays Pending in `ContainerCreating` with a `FailedMount` event and set-up is retried
    /// with a backoff, as a real kubelet does, until it succeeds, the deadline passes or the
    /// pod is deleted.
    async fn set_up_volumes(
        &self,
        pod: &Pod,
        spec: &PodSpec,
        container: &Container,
        dir: &Path,
        deadline: Option<Instant>,
        stop: &mut oneshot::Receiver<()>,
    ) -> VolumeSetUp {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let mut backoff = MOUNT_RETRY_FIRST;
        let mut reported = false;
        loop {
            let error = match volumes::set_up(&self.client, ns, spec, container, dir).await {
                Ok(mounts) => return VolumeSetUp::Ready(mounts),
                Err(VolumeError::Unsupported(message)) => {
                    return VolumeSetUp::Failed(Exit {
                        code: 128,
                        reason: "CreateContainerConfigError",
                        message,
                    });
                }
                Err(error) => error,
            };
            if !reported {
                reported = true;
                let message = format!("{:#}", anyhow::Error::new(error));
                if let Err(err) = self.report_container_creating(&pods, name, container).await {
                    tracing::warn!(pod = %name, error = %format!("{err:#}"), "kubelet could not report ContainerCreating");
                }
                self.record_event(pod, "FailedMount", &message).await;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = sleep_until(deadline) => return VolumeSetUp::DeadlineExceeded,
                _ = &mut *stop => return VolumeSetUp::Stopped,
            }
            backoff = (backoff * 2).min(MOUNT_RETRY_MAX);
        }
    }

    /// A Warning event about `pod` from the kubelet, as `kubectl describe` shows it.
    async fn record_event(&self, pod: &Pod, reason: &str, message: &str) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let now = now();
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": format!("{name}.{unique:x}"), "namespace": ns},
            "involvedObject": {
                "apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": name,
                "uid": pod.metadata.uid,
            },
            "reason": reason,
            "message": message,
            "type": "Warning",
            "source": {"component": "kubelet"},
            "reportingComponent": "kubelet",
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let created = match serde_json::from_value::<Event>(event) {
            Ok(event) => Api::<Event>::namespaced(self.client.clone(), ns)
                .create(&kube::api::PostParams::default(), &event)
                .await
                .map(drop)
                .map_err(anyhow::Error::from),
            Err(err) => Err(err.into()),
        };
        if let Err(err) = created {
            tracing::warn!(pod = %name, error = %format!("{err:#}"), "kubelet could not record an event");
        }
    }

    /// The container's environment: literal values (paths under a mount rewritten to the
    /// local volume directory) and values from Secrets.
    async fn environment(
        &self,
        ns: &str,
        container: &Container,
        mounts: &MountMap,
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
                (Some(value), _) => mounts.rewrite(value),
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

    async fn report_container_creating(
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
                "phase": "Pending",
                "startTime": now,
                "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastTransitionTime": now}],
                "containerStatuses": [{
                    "name": container.name, "image": container.image.clone().unwrap_or_default(), "imageID": "",
                    "ready": false, "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "ContainerCreating"}}
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

/// Sleeps until `deadline`, forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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
