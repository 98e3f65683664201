//! A time-boxed subprocess runner for the programs the agent starts in the workspace: the
//! `command` provider's coding agent and the Agent's verify commands.
//!
//! Both run code from the repository (tests, build scripts, the agent's own changes), so the
//! runner assumes nothing about them: the child gets only the environment it is given, runs
//! in its own process group so a timeout kills everything it started, and its output is kept
//! in a bounded tail however much it prints.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

/// How much of a child's output is kept: the last 16 KiB of stdout and stderr, interleaved.
pub const TAIL_BYTES: usize = 16 * 1024;

/// How long the runner waits for the output pipe to close after the child's process group
/// was killed. Only a process that left the group (`setsid`) can keep the pipe open that
/// long; the runner then returns with the output it has instead of waiting for it.
pub const PIPE_GRACE: Duration = Duration::from_secs(2);

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The program, looked up on the `PATH` given in `env` when it has no `/`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The working directory.
    pub dir: PathBuf,
    /// The child's whole environment: nothing is inherited from the agent. Build it with
    /// [`inherit`] for variables the agent itself has.
    pub env: Vec<(String, String)>,
    /// Written to the child's standard input, which is then closed. `None` gives it
    /// `/dev/null`.
    pub stdin: Option<String>,
    /// How long the child may run before its process group is killed.
    pub timeout: Duration,
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// It exited with this code.
    Exited(i32),
    /// A signal it did not ask for ended it (e.g. the OOM killer's SIGKILL).
    Signalled(i32),
    /// It ran out of time and the runner killed its process group.
    TimedOut,
}

impl Status {
    /// Whether the child exited with code 0.
    pub fn success(self) -> bool {
        self == Status::Exited(0)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Exited(code) => write!(f, "exit code {code}"),
            Status::Signalled(signal) => write!(f, "killed by signal {signal}"),
            Status::TimedOut => f.write_str("timed out"),
        }
    }
}

/// What happened to a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// The last [`TAIL_BYTES`] of its stdout and stderr, interleaved as written, decoded
    /// as UTF-8 with invalid bytes replaced.
    pub output_tail: String,
    /// How many bytes of output it wrote in all.
    pub output_bytes: u64,
    /// How long it ran.
    pub elapsed: Duration,
}

impl Outcome {
    /// Whether more output was written than [`Outcome::output_tail`] holds.
    pub fn truncated(&self) -> bool {
        self.output_bytes > self.output_tail.len() as u64
    }
}

/// `(name, value)` for each of `names` that the agent's own environment has, in order:
/// the way to hand a child selected variables of the pod.
pub fn inherit<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<(String, String)> {
    names
        .into_iter()
        .filter_map(|name| {
            std::env::var(name)
                .ok()
                .map(|value| (name.to_owned(), value))
        })
        .collect()
}

/// The last `n` lines of `text` (without a trailing newline).
pub fn last_lines(text: &str, n: usize) -> &str {
    let text = text.trim_end();
    if n == 0 {
        return "";
    }
    match text.rmatch_indices('\n').nth(n - 1) {
        Some((at, _)) => &text[at + 1..],
        None => text,
    }
}

/// Runs `spec` to completion or its timeout. An `Err` means the child could not be started
/// (no such program, not executable, bad working directory); anything the child does is
/// an [`Outcome`].
pub fn run(spec: &Spec) -> io::Result<Outcome> {
    let started = Instant::now();
    // One pipe for stdout and stderr: the tail shows them in the order they were written,
    // as a terminal would.
    let (reader, writer) = io::pipe()?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .current_dir(&spec.dir)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(writer.try_clone()?)
        .stderr(writer)
        // Its own process group, so a timeout can kill the grandchildren too (a test
        // runner's workers, a dev server started in the background).
        .process_group(0);
    let spawned = command.spawn();
    // The command holds our copies of the pipe's write end; the reader sees end-of-file
    // only once every writer is gone, so drop them now.
    drop(command);
    let mut child = spawned?;
    let pgid = child.id() as libc::pid_t;

    if let (Some(input), Some(mut stdin)) = (spec.stdin.clone(), child.stdin.take()) {
        // On its own thread, so a child that prints a lot before reading cannot deadlock
        // against us. A child that exits without reading all of it closes the pipe: EPIPE
        // is expected then and ignored.
        thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }

    let tail = Arc::new(Mutex::new(Tail::default()));
    let (drained_tx, drained_rx) = mpsc::channel::<()>();
    {
        let tail = Arc::clone(&tail);
        thread::spawn(move || {
            drain(reader, &tail);
            let _ = drained_tx.send(());
        });
    }

    // The leader is waited for without being reaped (WNOWAIT): while it is a zombie its
    // pid, which is the group id, cannot be reused, so killing the group afterwards
    // cannot hit anyone else's processes.
    let pid = child.id();
    let (exited_tx, exited_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        wait_without_reaping(pid);
        let _ = exited_tx.send(());
    });
    let timed_out = exited_rx.recv_timeout(spec.timeout).is_err();
    // On a timeout, everything in the group; after an exit, whatever the child left
    // running in it (`cmd &`), which would otherwise hold the output pipe open and
    // outlive the step.
    kill_group(pgid);
    let exit = child.wait()?;
    let status = if timed_out {
        Status::TimedOut
    } else {
        status_of(exit)
    };

    // Only a process that left the group can still hold the pipe now; don't wait for it
    // longer than the grace period (its reader thread ends when that process does).
    let _ = drained_rx.recv_timeout(PIPE_GRACE);
    let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(Outcome {
        status,
        output_tail: tail.text(),
        output_bytes: tail.total,
        elapsed: started.elapsed(),
    })
}

fn status_of(exit: ExitStatus) -> Status {
    match (exit.code(), exit.signal()) {
        (Some(code), _) => Status::Exited(code),
        (None, Some(signal)) => Status::Signalled(signal),
        // An exit status has a code or a signal; stopped/continued are not reported by wait.
        (None, None) => Status::Signalled(0),
    }
}

/// Blocks until process `pid` (our child) has exited, leaving it for `wait` to reap.
fn wait_without_reaping(pid: u32) {
    loop {
        // SAFETY: siginfo_t is plain data, valid when zeroed; waitid writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: a valid pointer to the siginfo_t above; P_PID with our child's pid.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if result == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill(2) has no memory-safety preconditions. A negative pid addresses the
    // process group the child leads (process_group(0) made its pid the group id); ESRCH
    // when the group is already gone is fine.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// The last [`TAIL_BYTES`] bytes written, and how many were written in all.
#[derive(Default)]
struct Tail {
    bytes: VecDeque<u8>,
    total: u64,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let chunk = &chunk[chunk.len().saturating_sub(TAIL_BYTES)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(TAIL_BYTES);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    fn text(&self) -> String {
        let (front, back) = self.bytes.as_slices();
        let mut bytes = Vec::with_capacity(self.bytes.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        // A cut tail may start inside a UTF-8 sequence; skip its continuation bytes
        // rather than show a replacement character.
        let start = if (self.total as usize) > bytes.len() {
            bytes
                .iter()
                .take(3)
                .take_while(|b| (0x80..0xC0).contains(*b))
                .count()
        } else {
            0
        };
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

fn drain(mut reader: io::PipeReader, tail: &Mutex<Tail>) {
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => tail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests;
