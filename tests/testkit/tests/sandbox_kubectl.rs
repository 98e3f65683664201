//! The real `kubectl` (an independent client nobody here wrote) against `countersign-sandbox
//! serve`, on the real control plane and on the fake: apply the CRDs and examples, re-apply
//! (`unchanged`), list with our printer columns, read YAML, describe with events, explain
//! fields, watch, delete, and see a schema violation rejected.
//!
//! The kubectl is the one `scripts/controlplane` builds (the server's release). Outside CI a
//! missing one falls back to `kubectl` on the PATH, or skips loudly; under `CI=true` it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Upper bound for any single wait in this test.
const WAIT: Duration = Duration::from_secs(60);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The kubectl to drive, `None` (after a loud note) when there is none outside CI.
fn kubectl_binary() -> Option<PathBuf> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let found = runtime
        .block_on(countersign_testkit::controlplane::kubectl())
        .expect("kubectl (CI needs the one scripts/controlplane builds)");
    if found.is_none() {
        eprintln!(
            "\n*** NOTE: SKIPPED: no kubectl (build it with ./scripts/controlplane, or put kubectl \
             1.32+ on the PATH) ***\n"
        );
    }
    found
}

/// Whether the real control plane is built; under `CI=true` it must be.
fn real_control_plane_built() -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let built = runtime
        .block_on(countersign_testkit::controlplane::Binaries::find())
        .expect("looking for the control plane")
        .is_some();
    if !built {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and the real control plane is not built (./scripts/controlplane)"
        );
        eprintln!(
            "\n*** NOTE: SKIPPED: the real control plane is not built (./scripts/controlplane) ***\n"
        );
    }
    built
}

/// Kills the child process when dropped, so a failing assertion never leaks a server.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads `child`'s stdout on a thread and returns a receiver of its lines.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(rx: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if pred(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("timed out waiting for {what}; output so far: {seen:#?}"),
        }
    }
}

struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.cache.parent().expect("cache has a parent"))
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--request-timeout=30s")
            .args(args)
            .current_dir(repo_root());
        cmd
    }

    /// Runs kubectl and returns (success, stdout, stderr).
    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.run(args);
        assert!(
            ok,
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        stdout
    }
}

#[test]
fn kubectl_works_against_the_fake_sandbox() {
    kubectl_works_against_the_sandbox("fake");
}

#[test]
fn kubectl_works_against_the_real_sandbox() {
    if real_control_plane_built() {
        kubectl_works_against_the_sandbox("real");
    }
}

fn kubectl_works_against_the_sandbox(control_plane: &str) {
    let Some(binary) = kubectl_binary() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sandbox = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_countersign-sandbox"))
            .args(["serve", "--control-plane", control_plane, "--dir"])
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sandbox starts"),
    );
    let sandbox_out = lines_of(&mut sandbox.0);
    let ready = wait_for_line(&sandbox_out, "the sandbox's ready line", |l| {
        l.contains("ready")
    });
    assert!(ready.contains("127.0.0.1:"), "{ready}");

    let kubectl = Kubectl {
        binary,
        kubeconfig: dir.path().join("kubeconfig"),
        cache: dir.path().join("kube-cache"),
    };

    // Apply: the CRDs again (an update of installed CRDs), the default policy and the examples.
    let applied = kubectl.ok(&[
        "apply",
        "-f",
        "crds/",
        "-f",
        "policies/manifests/",
        "-f",
        "examples/",
    ]);
    for expected in [
        "customresourcedefinition.apiextensions.k8s.io/agentruns.countersign.dev",
        "riskpolicy.countersign.dev/default created",
        "project.countersign.dev/payments-api created",
        "agent.countersign.dev/backend created",
        "agentrun.countersign.dev/payments-api-issue-42-backend created",
    ] {
        assert!(
            applied.contains(expected),
            "apply output lacks {expected:?}:\n{applied}"
        );
    }
    let reapplied = kubectl.ok(&["apply", "-f", "examples/"]);
    assert!(
        reapplied.contains("agent.countersign.dev/backend unchanged"),
        "{reapplied}"
    );

    // Get with our printer columns (server-side Table output).
    let listing = kubectl.ok(&["get", "agents,agentruns"]);
    let header = listing.lines().next().unwrap_or_default();
    for column in ["NAME", "READY", "PHASE", "ROLE", "RUNNING", "QUEUED", "AGE"] {
        assert!(
            header.contains(column),
            "agents header lacks {column}: {listing}"
        );
    }
    assert!(
        listing.contains("agent.countersign.dev/backend"),
        "{listing}"
    );
    let runs_header = listing
        .lines()
        .find(|l| l.contains("ISSUE"))
        .unwrap_or_else(|| panic!("no AgentRun table: {listing}"));
    for column in ["AGENT", "ISSUE", "PR"] {
        assert!(runs_header.contains(column), "{runs_header}");
    }
    let run_row = listing
        .lines()
        .find(|l| l.contains("payments-api-issue-42-backend"))
        .expect("run row");
    assert!(
        run_row.contains("backend") && run_row.contains("42"),
        "{run_row}"
    );

    // Categories and short names from discovery.
    let everything = kubectl.ok(&["get", "countersign"]);
    for kind in [
        "project.countersign.dev/payments-api",
        "riskpolicy.countersign.dev/default",
        "agent.countersign.dev/qa",
    ] {
        assert!(
            everything.contains(kind),
            "`kubectl get countersign` lacks {kind}:\n{everything}"
        );
    }
    assert!(
        kubectl
            .ok(&["get", "csrun"])
            .contains("payments-api-issue-42-backend")
    );

    // YAML round trip shows defaults the apiserver applied.
    let yaml = kubectl.ok(&["get", "agent", "qa", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Agent") && yaml.contains("maxConcurrentRuns: 1"),
        "{yaml}"
    );
    assert!(
        yaml.contains("uid:") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );

    // Field documentation from the CRDs reaches `kubectl explain`.
    let explained = kubectl.ok(&["explain", "agentrun.spec.task"]);
    assert!(
        explained.contains("requestedBy") && explained.contains("cannot approve"),
        "{explained}"
    );

    // Describe shows events about the object.
    let uid = kubectl.ok(&[
        "get",
        "agentrun",
        "payments-api-issue-42-backend",
        "-o",
        "jsonpath={.metadata.uid}",
    ]);
    assert!(!uid.is_empty());
    let event = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: run-queued\ninvolvedObject:\n  apiVersion: countersign.dev/v1alpha1\n  kind: AgentRun\n  name: payments-api-issue-42-backend\n  namespace: default\n  uid: {uid}\nreason: Queued\nmessage: waiting for agent capacity\ntype: Normal\nsource:\n  component: countersign-controller\n"
    );
    let event_file = dir.path().join("event.yaml");
    std::fs::write(&event_file, event).expect("write event");
    kubectl.ok(&["create", "-f", event_file.to_str().expect("utf-8 path")]);
    let described = kubectl.ok(&["describe", "agentrun", "payments-api-issue-42-backend"]);
    assert!(described.contains("Events:"), "{described}");
    assert!(
        described.contains("Queued") && described.contains("waiting for agent capacity"),
        "{described}"
    );

    // A schema violation is rejected with the field named.
    let bad = dir.path().join("bad-policy.yaml");
    let policy =
        std::fs::read_to_string(repo_root().join("policies/manifests/default-riskpolicy.yaml"))
            .expect("policy");
    std::fs::write(
        &bad,
        policy
            .replace("name: default", "name: broken")
            .replace("set: { impact: 1,", "set: { impact: 11,"),
    )
    .expect("write");
    let (ok, _, stderr) = kubectl.run(&["apply", "-f", bad.to_str().expect("utf-8 path")]);
    assert!(!ok, "an impact of 11 must be rejected");
    assert!(
        stderr.contains("spec.rules[0].set.impact") && stderr.contains("less than or equal to 10"),
        "{stderr}"
    );

    // Watch: a new run shows up on a running `kubectl get --watch`.
    let mut watch = KillOnDrop(
        kubectl
            .command(&["get", "agentruns", "--watch"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("watch starts"),
    );
    let watch_out = lines_of(&mut watch.0);
    wait_for_line(&watch_out, "the existing run in the watch", |l| {
        l.contains("payments-api-issue-42-backend")
    });
    let second = dir.path().join("second-run.yaml");
    let run = std::fs::read_to_string(repo_root().join("examples/agentrun.yaml")).expect("run");
    std::fs::write(
        &second,
        run.replace("name: payments-api-issue-42-backend", "name: second-run"),
    )
    .expect("write");
    kubectl.ok(&["apply", "-f", second.to_str().expect("utf-8 path")]);
    wait_for_line(&watch_out, "the new run in the watch", |l| {
        l.contains("second-run")
    });
    drop(watch);

    // Delete, then it is gone.
    let deleted = kubectl.ok(&["delete", "agentrun", "second-run"]);
    assert!(deleted.contains("deleted"), "{deleted}");
    let (ok, _, stderr) = kubectl.run(&["get", "agentrun", "second-run"]);
    assert!(!ok && stderr.contains("NotFound"), "{stderr}");
}

/// The demo's exit code says whether the tour reached the green check.
#[test]
fn the_demo_exits_non_zero_when_a_step_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_countersign-sandbox"))
        .args(["demo", "--countersign"])
        .arg(dir.path().join("missing-countersign"))
        .arg("--dir")
        .arg(dir.path())
        .output()
        .expect("run the sandbox");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("does not exist") && stderr.contains("cargo build --release --bins"),
        "{stderr}"
    );
}
