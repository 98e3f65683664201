//! Where the real control plane's binaries are: the directory named by
//! `COUNTERSIGN_CONTROLPLANE_BIN`, else the cache `scripts/controlplane` builds into (the script
//! knows its key: a hash of `tests/controlplane`'s pinned modules and sources).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Environment variable naming the directory that holds `etcd`, `kube-apiserver` and
/// `kube-controller-manager` (what `scripts/controlplane` prints).
pub const BIN_ENV: &str = "COUNTERSIGN_CONTROLPLANE_BIN";

/// Exit code of `scripts/controlplane --check` when the binaries are not built yet.
const NOT_BUILT: i32 = 3;

/// The directory holding the control plane's binaries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// The binaries in `dir`, checked to be there.
    pub fn in_dir(dir: impl Into<PathBuf>) -> anyhow::Result<Binaries> {
        let binaries = Binaries { dir: dir.into() };
        for path in [
            binaries.etcd(),
            binaries.kube_apiserver(),
            binaries.kube_controller_manager(),
            binaries.kubectl(),
        ] {
            anyhow::ensure!(
                path.is_file(),
                "{} is missing (build the control plane with ./scripts/controlplane)",
                path.display()
            );
        }
        Ok(binaries)
    }

    /// The binaries if they are available without building: from [`BIN_ENV`] when set (an
    /// error if that directory lacks them), else from `scripts/controlplane`'s cache when it
    /// has been built. `Ok(None)` when they are not built (or `go` is missing to tell).
    pub async fn find() -> anyhow::Result<Option<Binaries>> {
        if let Some(dir) = std::env::var_os(BIN_ENV).filter(|d| !d.is_empty()) {
            return Binaries::in_dir(PathBuf::from(dir))
                .with_context(|| format!("{BIN_ENV} names no built control plane"))
                .map(Some);
        }
        let output = script()
            .arg("--check")
            .output()
            .await
            .context("Cannot run scripts/controlplane --check")?;
        if output.status.code() == Some(NOT_BUILT) || !output.status.success() {
            return Ok(None);
        }
        Binaries::in_dir(last_line(&output.stdout)?).map(Some)
    }

    /// [`Binaries::find`], building them with `scripts/controlplane` when they are not built
    /// (several minutes the first time; needs `go`).
    pub async fn find_or_build() -> anyhow::Result<Binaries> {
        if let Some(found) = Binaries::find().await? {
            return Ok(found);
        }
        let output = script()
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .context("Cannot run scripts/controlplane")?;
        anyhow::ensure!(
            output.status.success(),
            "scripts/controlplane failed ({}); see its output above",
            output.status
        );
        Binaries::in_dir(last_line(&output.stdout)?)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `etcd` binary.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }

    /// The `kube-apiserver` binary.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }

    /// The `kube-controller-manager` binary.
    pub fn kube_controller_manager(&self) -> PathBuf {
        self.dir.join("kube-controller-manager")
    }

    /// The `kubectl` of the same Kubernetes release.
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("kubectl")
    }
}

/// The `kubectl` the tests drive: the one built with the control plane (same release as the
/// server); outside CI, else any `kubectl` on the `PATH`. `Ok(None)` only outside CI when
/// neither exists (the caller says loudly that it skipped); under `CI=true` a missing kubectl
/// is an error, never a skip.
pub async fn kubectl() -> anyhow::Result<Option<PathBuf>> {
    if let Some(binaries) = Binaries::find().await? {
        return Ok(Some(binaries.kubectl()));
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        anyhow::bail!(
            "CI=true and no kubectl was built with the control plane: run ./scripts/controlplane \
             (scripts/test does) or set {BIN_ENV}"
        );
    }
    Ok(std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("kubectl"))
            .find(|p| p.is_file())
    }))
}

/// The repository's root (this crate lives in `tests/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn script() -> tokio::process::Command {
    let mut command = tokio::process::Command::new("bash");
    command
        .arg(workspace_root().join("scripts/controlplane"))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    command
}

fn last_line(stdout: &[u8]) -> anyhow::Result<PathBuf> {
    String::from_utf8_lossy(stdout)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| PathBuf::from(l.trim()))
        .context("scripts/controlplane printed no directory")
}
