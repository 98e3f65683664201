//! The kubectl that `scripts/controlplane` builds, run against a real control plane with a home
//! and cache of its own, each call bounded in time.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::time::Duration;

/// kubectl for one test.
pub struct Kubectl {
    binary: PathBuf,
    kubeconfig: PathBuf,
    home: PathBuf,
    namespace: Option<String>,
    wait: Duration,
}

impl Kubectl {
    /// The built kubectl with `kubeconfig`, keeping its state under `home` (created), each call
    /// bounded by `wait`; `namespace` is passed as `-n` to every call when given.
    pub async fn new(
        kubeconfig: PathBuf,
        home: PathBuf,
        namespace: Option<String>,
        wait: Duration,
    ) -> Kubectl {
        let binary = countersign_testkit::controlplane::kubectl()
            .await
            .expect("kubectl")
            .expect("the real control plane is built, so is its kubectl");
        std::fs::create_dir_all(&home).expect("kubectl home");
        Kubectl {
            binary,
            kubeconfig,
            home,
            namespace,
            wait,
        }
    }

    /// `kubectl [-n <namespace>] <args>`.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .arg("--cache-dir")
            .arg(self.home.join("cache"));
        if let Some(ns) = &self.namespace {
            command.args(["-n", ns]);
        }
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        tokio::time::timeout(self.wait, output)
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in time"))
            .expect("kubectl runs")
    }
}

/// Command output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
