//! The control plane's processes: started with their output in a log file, killed when their
//! handle is dropped (a test's panic unwinds through that drop), and killed by the kernel
//! when the test process exits without dropping them (a control plane kept in a `static`).
//!
//! The last part uses Linux's `PR_SET_PDEATHSIG`, which fires when the *thread* that started
//! the child ends, not the process. Tests run on short-lived threads, so every child is
//! started from one spawner thread that lives as long as the test process.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use anyhow::Context as _;

/// Bytes of a log shown when a process fails to start.
const LOG_TAIL_BYTES: u64 = 4096;

/// A running control-plane process. Dropping it kills the process.
#[derive(Debug)]
pub(crate) struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program` with `args`, stdout and stderr appended to `log`.
    pub(crate) fn start(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
    ) -> anyhow::Result<Process> {
        let out = File::create(&log).with_context(|| format!("Cannot create {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("Cannot open {} twice", log.display()))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .current_dir(log.parent().unwrap_or(Path::new("/")))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
            unsafe {
                command.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = spawn_from_kept_thread(command)
            .with_context(|| format!("Cannot start {}", program.display()))?;
        Ok(Process { name, child, log })
    }

    /// The process's name (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// `Some(description)` once the process has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(format!("cannot be waited for: {err}")),
        }
    }

    /// The end of the process's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last [`LOG_TAIL_BYTES`] of `log`.
pub(crate) fn log_tail(log: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(log)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|err| format!("(cannot read {}: {err})", log.display()))
}

type SpawnJob = (Command, mpsc::SyncSender<std::io::Result<Child>>);

/// Starts `command` from the spawner thread, which never ends (see the module docs).
fn spawn_from_kept_thread(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (jobs, receive) = mpsc::channel::<SpawnJob>();
        let started = std::thread::Builder::new()
            .name("countersign-controlplane-spawner".into())
            .spawn(move || {
                for (mut command, reply) in receive {
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(err) = started {
            tracing::warn!(error = %err, "cannot start the control plane's spawner thread");
        }
        Mutex::new(jobs)
    });
    let (reply, answer) = mpsc::sync_channel(1);
    let sent = spawner
        .lock()
        .map_err(|_| std::io::Error::other("the spawner lock is poisoned"))?
        .send((command, reply));
    sent.map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread did not answer"))?
}
