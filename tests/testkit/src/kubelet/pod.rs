//! Running one pod bound to the kubelet's node: volumes first (retried while a Secret or
//! ConfigMap is missing), then each init container in order (each must exit 0), then all
//! containers at once, with the status written through the API at every step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Container, Event, Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::status::{self, Exit, PodProgress, State};
use super::volumes::{self, MountMap, VolumeError, Volumes};
use super::{FIELD_MANAGER, TERMINATION_LOG_ENV, now};

/// Kubernetes caps termination messages at 4096 bytes.
const MAX_TERMINATION_MESSAGE: usize = 4096;
/// Bytes of output kept for `FallbackToLogsOnError`.
const FALLBACK_LOG_BYTES: usize = 2048;
/// First wait before setting up volumes again after a missing Secret or ConfigMap.
const MOUNT_RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between volume set-up attempts (a real kubelet backs off to about two
/// minutes; tests would rather not wait that long).
const MOUNT_RETRY_MAX: Duration = Duration::from_secs(2);
/// Exit code reported for a container that could not be started.
const NOT_STARTED: i32 = 128;
/// Exit code reported for a killed container (SIGKILL).
const KILLED: i32 = 137;

/// What a pod run needs from the kubelet.
pub(super) struct RunContext {
    pub(super) client: kube::Client,
    pub(super) work_dir: PathBuf,
}

/// How waiting for running containers ended.
enum Ending {
    Exited(Vec<Exit>),
    DeadlineExceeded,
    Stopped,
}

/// A started container process.
struct Started {
    child: Child,
    output: JoinHandle<String>,
    termination_log: PathBuf,
    fallback_to_logs: bool,
    started_at: String,
}

/// One pod being run: where its files are and what it has reported.
struct Run<'a> {
    ctx: &'a RunContext,
    pod: &'a Pod,
    pods: Api<Pod>,
    name: String,
    namespace: String,
    dir: PathBuf,
    deadline: Option<Instant>,
    progress: PodProgress,
}

impl RunContext {
    /// Runs `pod` until it ends, `stop` fires (the pod was deleted) or its deadline passes.
    pub(super) async fn run_pod(
        &self,
        pod: &Pod,
        mut stop: oneshot::Receiver<()>,
    ) -> anyhow::Result<()> {
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref().context("pod has no spec")?;
        let dir = self.work_dir.join(&namespace).join(&name);
        tokio::fs::create_dir_all(&dir)
            .await
            .with_context(|| format!("Cannot create {}", dir.display()))?;
        let waiting = |containers: &[Container], reason| {
            containers
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        c.image.clone().unwrap_or_default(),
                        State::Waiting(reason),
                    )
                })
                .collect()
        };
        let init_containers = spec.init_containers.clone().unwrap_or_default();
        let mut run = Run {
            ctx: self,
            pod,
            pods: Api::namespaced(self.client.clone(), &namespace),
            name,
            namespace,
            dir,
            // `activeDeadlineSeconds` counts from the pod's start, volume set-up included.
            deadline: spec
                .active_deadline_seconds
                .map(|s| Instant::now() + Duration::from_secs(s.max(0) as u64)),
            progress: PodProgress {
                init: waiting(&init_containers, "PodInitializing"),
                main: waiting(&spec.containers, "PodInitializing"),
                start_time: now(),
                ended: None,
            },
        };
        let Some(volumes) = run.set_up_volumes(&mut stop).await? else {
            return Ok(());
        };
        for (i, container) in init_containers.iter().enumerate() {
            let started = match run.start(container, &volumes).await {
                Ok(started) => started,
                Err(exit) => {
                    volumes.release(&container.name).await;
                    run.progress.init[i].2 = State::Terminated(exit);
                    return run.report().await;
                }
            };
            run.progress.init[i].2 = State::Running {
                started_at: started.started_at.clone(),
            };
            run.report().await?;
            let ending = run.wait(vec![started], &mut stop).await;
            volumes.release(&container.name).await;
            match ending {
                Ending::Exited(mut exits) => {
                    let exit = exits.pop().context("one container was waited for")?;
                    let failed = exit.code != 0;
                    run.progress.init[i].2 = State::Terminated(exit);
                    if failed {
                        return run.report().await;
                    }
                }
                Ending::DeadlineExceeded => return run.report_deadline_exceeded().await,
                Ending::Stopped => return Ok(()),
            }
        }
        let mut started = Vec::new();
        let mut which = Vec::new();
        for (i, container) in spec.containers.iter().enumerate() {
            match run.start(container, &volumes).await {
                Ok(s) => {
                    run.progress.main[i].2 = State::Running {
                        started_at: s.started_at.clone(),
                    };
                    started.push(s);
                    which.push(i);
                }
                Err(exit) => run.progress.main[i].2 = State::Terminated(exit),
            }
        }
        run.report().await?;
        if started.is_empty() {
            for container in &spec.containers {
                volumes.release(&container.name).await;
            }
            return Ok(());
        }
        let ending = run.wait(started, &mut stop).await;
        for container in &spec.containers {
            volumes.release(&container.name).await;
        }
        match ending {
            Ending::Exited(exits) => {
                for (i, exit) in which.into_iter().zip(exits) {
                    run.progress.main[i].2 = State::Terminated(exit);
                }
                run.report().await
            }
            Ending::DeadlineExceeded => run.report_deadline_exceeded().await,
            Ending::Stopped => Ok(()),
        }
    }
}

impl Run<'_> {
    /// Sets up the pod's volumes. While a Secret or ConfigMap is missing the pod stays
    /// Pending in `ContainerCreating` with a `FailedMount` event and set-up is retried with a
    /// backoff, as a real kubelet does, until it succeeds, the deadline passes or the pod is
    /// deleted. `None` when the run is over (reported, or the pod is gone).
    async fn set_up_volumes(
        &mut self,
        stop: &mut oneshot::Receiver<()>,
    ) -> anyhow::Result<Option<Volumes>> {
        let mut backoff = MOUNT_RETRY_FIRST;
        let mut reported = false;
        loop {
            let error = match volumes::set_up(&self.ctx.client, self.pod, &self.dir).await {
                Ok(volumes) => return Ok(Some(volumes)),
                Err(VolumeError::Unsupported(message)) => {
                    self.fail_all_containers("CreateContainerConfigError", &message);
                    self.report().await?;
                    return Ok(None);
                }
                Err(error) => error,
            };
            if !reported {
                reported = true;
                let message = format!("{:#}", anyhow::Error::new(error));
                for (_, _, state) in self.containers_mut() {
                    *state = State::Waiting("ContainerCreating");
                }
                if let Err(err) = self.report().await {
                    tracing::warn!(pod = %self.name, error = %format!("{err:#}"), "kubelet could not report ContainerCreating");
                }
                self.record_event("FailedMount", &message).await;
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = sleep_until(self.deadline) => {
                    self.report_deadline_exceeded().await?;
                    return Ok(None);
                }
                _ = &mut *stop => return Ok(None),
            }
            backoff = (backoff * 2).min(MOUNT_RETRY_MAX);
        }
    }

    fn containers_mut(&mut self) -> impl Iterator<Item = &mut (String, String, State)> {
        self.progress
            .init
            .iter_mut()
            .chain(self.progress.main.iter_mut())
    }

    /// No container can be created: each ends as never started, so the pod fails.
    fn fail_all_containers(&mut self, reason: &'static str, message: &str) {
        let at = now();
        for (_, _, state) in self.containers_mut() {
            *state = State::Terminated(Exit {
                code: NOT_STARTED,
                reason,
                message: message.to_owned(),
                started_at: at.clone(),
                finished_at: at.clone(),
            });
        }
    }

    /// Starts `container`'s process; the exit to report when it cannot be started.
    async fn start(&self, container: &Container, volumes: &Volumes) -> Result<Started, Exit> {
        let not_started = |reason: &'static str, message: String| {
            let at = now();
            Exit {
                code: NOT_STARTED,
                reason,
                message,
                started_at: at.clone(),
                finished_at: at,
            }
        };
        let config_error =
            |err: anyhow::Error| not_started("CreateContainerConfigError", format!("{err:#}"));
        let mounts = volumes
            .mounts(container)
            .await
            .map_err(|e| config_error(e.into()))?;
        let work_dir = match container
            .working_dir
            .as_deref()
            .and_then(|wd| mounts.resolve(wd))
        {
            Some(local) => {
                // The runtime creates a missing working directory.
                tokio::fs::create_dir_all(&local)
                    .await
                    .with_context(|| format!("Cannot create {}", local.display()))
                    .map_err(config_error)?;
                local
            }
            None => self.dir.clone(),
        };
        let env = self
            .environment(container, &mounts)
            .await
            .map_err(config_error)?;
        let termination_log = self.dir.join(format!("{}.termination-log", container.name));
        tokio::fs::write(&termination_log, b"")
            .await
            .context("Cannot create the termination log")
            .map_err(config_error)?;
        let argv: Vec<String> = container
            .command
            .iter()
            .flatten()
            .chain(container.args.iter().flatten())
            .cloned()
            .collect();
        let Some((program, args)) = argv.split_first() else {
            return Err(not_started(
                "StartError",
                "container has no command (images are not run here)".into(),
            ));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(&work_dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
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
        let mut child = command
            .spawn()
            .map_err(|err| not_started("StartError", format!("cannot start {program}: {err}")))?;
        // Drain the pipes concurrently so a chatty process never blocks on a full pipe.
        let output = tokio::spawn(collect_output(
            child.stdout.take(),
            child.stderr.take(),
            self.dir.join(format!("{}.log", container.name)),
        ));
        Ok(Started {
            child,
            output,
            termination_log,
            fallback_to_logs: container.termination_message_policy.as_deref()
                == Some("FallbackToLogsOnError"),
            started_at: now(),
        })
    }

    /// Waits until every started process exited, the deadline passed (all are killed) or
    /// the pod was deleted (all are killed).
    async fn wait(&self, started: Vec<Started>, stop: &mut oneshot::Receiver<()>) -> Ending {
        let (mut children, rest): (Vec<Child>, Vec<_>) = started
            .into_iter()
            .map(|s| {
                (
                    s.child,
                    (
                        s.output,
                        s.termination_log,
                        s.fallback_to_logs,
                        s.started_at,
                    ),
                )
            })
            .unzip();
        let statuses = tokio::select! {
            statuses = futures::future::join_all(children.iter_mut().map(Child::wait)) => Some(statuses),
            () = sleep_until(self.deadline) => None,
            _ = &mut *stop => {
                for child in &mut children {
                    let _ = child.kill().await;
                }
                return Ending::Stopped; // the pod is being deleted; nobody reads its status
            }
        };
        let Some(statuses) = statuses else {
            for child in &mut children {
                let _ = child.kill().await;
            }
            return Ending::DeadlineExceeded;
        };
        let mut exits = Vec::new();
        for (status, (output, termination_log, fallback, started_at)) in
            statuses.into_iter().zip(rest)
        {
            let code = status.ok().and_then(|s| s.code()).unwrap_or(KILLED);
            let tail = output.await.unwrap_or_default();
            let mut message = read_capped(&termination_log).await;
            if message.is_empty() && fallback && code != 0 {
                message = tail;
            }
            exits.push(Exit {
                code,
                reason: if code == 0 { "Completed" } else { "Error" },
                message,
                started_at,
                finished_at: now(),
            });
        }
        Ending::Exited(exits)
    }

    /// The container's environment: literal values (paths under a mount rewritten to the
    /// local volume directory) and values from Secrets.
    async fn environment(
        &self,
        container: &Container,
        mounts: &MountMap,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let ns = &self.namespace;
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), ns);
        let mut env = BTreeMap::new();
        for var in container.env.iter().flatten() {
            let secret_ref = var
                .value_from
                .as_ref()
                .and_then(|f| f.secret_key_ref.as_ref());
            let value = match (&var.value, secret_ref) {
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

    /// Writes the whole status (one server-side apply, so no watcher sees half of it).
    async fn report(&self) -> anyhow::Result<()> {
        let patch = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "status": status::pod_status(&self.progress, &now()),
        });
        self.pods
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .with_context(|| format!("Cannot update the status of pod {}", self.name))?;
        Ok(())
    }

    async fn report_deadline_exceeded(&mut self) -> anyhow::Result<()> {
        let at = now();
        for (_, _, state) in self.containers_mut() {
            if let State::Running { started_at } = state {
                *state = State::Terminated(Exit {
                    code: KILLED,
                    reason: "Error",
                    message: String::new(),
                    started_at: started_at.clone(),
                    finished_at: at.clone(),
                });
            }
        }
        self.progress.ended = Some((
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        ));
        self.report().await
    }

    /// A Warning event about the pod from the kubelet, as `kubectl describe` shows it.
    async fn record_event(&self, reason: &str, message: &str) {
        let (ns, name) = (&self.namespace, &self.name);
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
                "uid": self.pod.metadata.uid,
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
            Ok(event) => Api::<Event>::namespaced(self.ctx.client.clone(), ns)
                .create(&PostParams::default(), &event)
                .await
                .map(drop)
                .map_err(anyhow::Error::from),
            Err(err) => Err(err.into()),
        };
        if let Err(err) = created {
            tracing::warn!(pod = %name, error = %format!("{err:#}"), "kubelet could not record an event");
        }
    }
}

/// Sleeps until `deadline`, forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
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
