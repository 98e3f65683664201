use std::time::Duration;

use super::*;

fn sh(script: &str) -> Spec {
    Spec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        dir: std::env::temp_dir(),
        env: inherit(["PATH"]),
        stdin: None,
        timeout: Duration::from_secs(30),
    }
}

/// Waits (at most 10 s) until `pid` has exited: gone, or a zombie nobody reaped yet.
/// Returns false if it is still running then.
fn exits_soon(pid: libc::pid_t) -> bool {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let mut poll = libc::pollfd {
        fd: fd as libc::c_int,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; the fd is ours and closed right after.
    let ready = unsafe { libc::poll(&mut poll, 1, 10_000) };
    // SAFETY: closing the pidfd opened above.
    unsafe { libc::close(fd as libc::c_int) };
    ready == 1
}

#[test]
fn exit_codes_are_reported() {
    let ok = run(&sh("echo hello")).expect("sh runs");
    assert_eq!(ok.status, Status::Exited(0));
    assert!(ok.status.success());
    assert_eq!(ok.output_tail, "hello\n");
    assert_eq!(ok.output_bytes, 6);

    let failed = run(&sh("echo out; echo err >&2; exit 3")).expect("sh runs");
    assert_eq!(failed.status, Status::Exited(3));
    assert_eq!(
        failed.output_tail, "out\nerr\n",
        "stdout and stderr interleaved"
    );
    assert_eq!(failed.status.to_string(), "exit code 3");

    let killed = run(&sh("kill -TERM $$")).expect("sh runs");
    assert_eq!(killed.status, Status::Signalled(libc::SIGTERM));
}

#[test]
fn a_missing_program_is_an_error() {
    let mut spec = sh("");
    spec.program = "countersign-no-such-program".into();
    let err = run(&spec).expect_err("no such program");
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let mut spec = sh("sleep 100 & echo $!; sleep 100");
    spec.timeout = Duration::from_secs(2);
    let outcome = run(&spec).expect("sh runs");
    assert_eq!(outcome.status, Status::TimedOut);
    assert!(
        outcome.elapsed < Duration::from_secs(2) + PIPE_GRACE,
        "returned after {:?}",
        outcome.elapsed
    );
    let grandchild: libc::pid_t = outcome
        .output_tail
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the script printed its background pid: {outcome:?}"));
    assert!(exits_soon(grandchild), "the background sleep was killed");
}

#[test]
fn background_processes_die_with_a_finished_command() {
    // The background sleep holds the output pipe; the runner must not wait 100 s for it.
    let outcome = run(&sh("sleep 100 & echo $!")).expect("sh runs");
    assert_eq!(outcome.status, Status::Exited(0));
    assert!(outcome.elapsed < PIPE_GRACE, "took {:?}", outcome.elapsed);
    let pid: libc::pid_t = outcome.output_tail.trim().parse().expect("a pid");
    assert!(exits_soon(pid));
}

#[test]
fn big_output_stays_bounded() {
    let outcome = run(&sh(
        "yes 0123456789abcdef | head -c 5000000; echo; echo the end",
    ))
    .expect("sh runs");
    assert_eq!(outcome.status, Status::Exited(0));
    assert_eq!(outcome.output_bytes, 5_000_000 + "\nthe end\n".len() as u64);
    assert_eq!(outcome.output_tail.len(), TAIL_BYTES);
    assert!(outcome.truncated());
    assert!(outcome.output_tail.ends_with("\nthe end\n"));
}

#[test]
fn stdin_is_delivered_and_closed() {
    let mut spec = sh("cat; echo; echo done");
    spec.stdin = Some("the task".into());
    let outcome = run(&spec).expect("sh runs");
    assert_eq!(outcome.output_tail, "the task\ndone\n");
}

#[test]
fn big_stdin_and_stdout_at_once_do_not_deadlock() {
    let mut spec = sh("cat");
    spec.stdin = Some("x".repeat(4 << 20));
    let outcome = run(&spec).expect("sh runs");
    assert_eq!(outcome.status, Status::Exited(0));
    assert_eq!(outcome.output_bytes, 4 << 20);
}

#[test]
fn a_child_that_ignores_its_stdin_is_fine() {
    let mut spec = sh("exit 0");
    spec.stdin = Some("y".repeat(4 << 20));
    assert_eq!(run(&spec).expect("sh runs").status, Status::Exited(0));
}

#[test]
fn the_environment_is_only_what_is_given() {
    let mut spec = sh("echo \"[$HOME][$GIVEN]\"");
    spec.env.push(("GIVEN".into(), "yes".into()));
    let outcome = run(&spec).expect("sh runs");
    assert_eq!(outcome.output_tail, "[][yes]\n");
}

#[test]
fn a_cut_tail_does_not_start_inside_a_character() {
    let mut tail = Tail::default();
    tail.push("é".repeat(TAIL_BYTES).as_bytes());
    tail.push(b"x");
    let text = tail.text();
    assert!(
        text.starts_with('é') && text.ends_with('x'),
        "{:?}",
        &text[..8]
    );
    assert!(!text.contains('\u{FFFD}'));
}

#[test]
fn last_lines_takes_the_end() {
    assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
    assert_eq!(last_lines("a\nb", 5), "a\nb");
    assert_eq!(last_lines("a\nb", 0), "");
}
