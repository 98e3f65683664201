//! The Kubernetes every test stands on, real or fake, chosen in one place.
//!
//! [`TestCluster::start`] reads `COUNTERSIGN_TEST_CONTROL_PLANE`:
//! - `real`: the real control plane ([`RealControlPlane::shared`]: one per test process, with
//!   the Countersign CRDs installed), built with `scripts/controlplane` if needed;
//! - `fake`: a new [`FakeApiServer`] for the test;
//! - unset: real when its binaries are built (`COUNTERSIGN_CONTROLPLANE_BIN`, or
//!   `scripts/controlplane`'s cache), else the fake with a loud note — except under
//!   `CI=true`, where a missing real control plane is an error, never a silent fallback.
//!
//! The real control plane is shared by the tests of a binary, so every test works in its own
//! namespace ([`TestCluster::create_namespace`]) and runs its own kubelet there
//! ([`TestCluster::kubelet`]). Clients are made per call, on the caller's runtime: a client
//! kept in a `static` would die with the `#[tokio::test]` runtime that made it.

use std::path::PathBuf;
use std::sync::Once;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use rand::Rng as _;
use serde_json::json;

use crate::apiserver::FakeApiServer;
use crate::controlplane::{Binaries, RealControlPlane, countersign_crds};
use crate::kubelet::Kubelet;

/// Environment variable choosing the backend: `real`, `fake`, or unset (see the module docs).
pub const BACKEND_ENV: &str = "COUNTERSIGN_TEST_CONTROL_PLANE";

/// Longest wait for a new namespace's `default` ServiceAccount (made by the controller
/// manager; the real apiserver refuses pods until it exists).
const NAMESPACE_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Which apiserver a [`TestCluster`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterKind {
    /// kube-apiserver, etcd and kube-controller-manager built from Kubernetes' Go modules.
    Real,
    /// The test kit's [`FakeApiServer`].
    Fake,
}

/// What [`BACKEND_ENV`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    Real,
    Fake,
    /// Real when built, else fake (an error under `CI=true`).
    Auto,
}

/// A Kubernetes API for one test.
#[derive(Clone, Debug)]
pub struct TestCluster {
    backend: Backend,
}

#[derive(Clone, Debug)]
enum Backend {
    Real(&'static RealControlPlane),
    /// A control plane of this test alone, stopped when the last clone is dropped.
    Dedicated(std::sync::Arc<RealControlPlane>),
    Fake(FakeApiServer),
}

impl TestCluster {
    /// The backend [`BACKEND_ENV`] chooses (see the module docs).
    pub async fn start() -> anyhow::Result<TestCluster> {
        match choice()? {
            Choice::Fake => TestCluster::fake().await,
            Choice::Real => TestCluster::shared_real().await,
            Choice::Auto => match Binaries::find().await? {
                Some(_) => TestCluster::shared_real().await,
                None if is_ci() => Err(missing_under_ci()),
                None => {
                    static NOTE: Once = Once::new();
                    NOTE.call_once(|| {
                        loud_note(&format!(
                            "the real Kubernetes control plane is not built, so these tests use the \
                             FAKE apiserver. Build it with ./scripts/controlplane (needs Go), or set \
                             {BACKEND_ENV}=fake to silence this."
                        ));
                    });
                    TestCluster::fake().await
                }
            },
        }
    }

    /// Like [`TestCluster::start`], but a real control plane is this test's alone (started
    /// for it, with the Countersign CRDs, and stopped when the cluster is dropped) instead of
    /// the process-wide shared one. For harnesses that run cluster-wide controllers or fixed
    /// namespace names, which tests sharing one apiserver would see from each other. (Under
    /// cargo-nextest every test is its own process, so the shared one is per test anyway.)
    pub async fn start_dedicated() -> anyhow::Result<TestCluster> {
        if !TestCluster::real_chosen().await? {
            return TestCluster::start().await;
        }
        TestCluster::dedicated_real(None).await
    }

    /// Whether [`BACKEND_ENV`] (and what is built) chooses the real control plane: `real`,
    /// or unset with the binaries built. Unset and not built is an error under `CI=true`.
    pub async fn real_chosen() -> anyhow::Result<bool> {
        Ok(match choice()? {
            Choice::Fake => false,
            Choice::Real => true,
            Choice::Auto => match Binaries::find().await? {
                Some(_) => true,
                None if is_ci() => return Err(missing_under_ci()),
                None => false,
            },
        })
    }

    /// A real control plane of the caller's alone, with the Countersign CRDs, from `binaries`
    /// (found, or built, with [`Binaries::find_or_build`] when `None`); stopped when the last
    /// clone of the cluster is dropped.
    pub async fn dedicated_real(binaries: Option<Binaries>) -> anyhow::Result<TestCluster> {
        let options = crate::controlplane::StartOptions {
            binaries,
            crds: countersign_crds()?,
            ..crate::controlplane::StartOptions::default()
        };
        let plane = RealControlPlane::start_with(options)
            .await
            .context("Cannot start a real control plane")?;
        Ok(TestCluster {
            backend: Backend::Dedicated(std::sync::Arc::new(plane)),
        })
    }

    /// The real control plane for a test that only makes sense against it. `Ok(None)`, with
    /// a loud note, when it is not built or [`BACKEND_ENV`] is `fake` (the test should
    /// return); an error under `CI=true` instead, so CI never passes such a test unrun.
    pub async fn real_or_skip(test: &str) -> anyhow::Result<Option<TestCluster>> {
        let choice = choice()?;
        let available = match choice {
            Choice::Real => true,
            Choice::Fake => false,
            Choice::Auto => Binaries::find().await?.is_some(),
        };
        if available {
            return TestCluster::shared_real().await.map(Some);
        }
        if is_ci() {
            return Err(missing_under_ci());
        }
        loud_note(&format!(
            "SKIPPED {test}: it needs the real Kubernetes control plane, which is {}. Build it \
             with ./scripts/controlplane (needs Go).",
            if choice == Choice::Fake {
                format!("switched off by {BACKEND_ENV}=fake")
            } else {
                "not built".to_owned()
            }
        ));
        Ok(None)
    }

    /// Every backend a fidelity test should run on: the fake always, and the real control
    /// plane too when it is available (under `CI=true` it must be). [`BACKEND_ENV`] set to
    /// `fake` or `real` keeps only that one. Tests of the fake's behaviour run against both so
    /// that a difference from the real server fails them.
    pub async fn every_backend() -> anyhow::Result<Vec<TestCluster>> {
        let mut clusters = Vec::new();
        let choice = choice()?;
        if choice != Choice::Real {
            clusters.push(TestCluster::fake().await?);
        }
        let real_available = match choice {
            Choice::Real => true,
            Choice::Fake => false,
            Choice::Auto => Binaries::find().await?.is_some(),
        };
        if real_available {
            clusters.push(TestCluster::shared_real().await?);
        } else if choice == Choice::Auto {
            if is_ci() {
                return Err(missing_under_ci());
            }
            static NOTE: Once = Once::new();
            NOTE.call_once(|| {
                loud_note(
                    "the real Kubernetes control plane is not built, so fidelity tests check the \
                     fake alone. Build it with ./scripts/controlplane (needs Go).",
                );
            });
        }
        Ok(clusters)
    }

    /// Installs one CustomResourceDefinition and waits until it is Established.
    pub async fn install_crd(&self, crd: &CustomResourceDefinition) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Real(real) => real.install_crds(std::slice::from_ref(crd)).await,
            Backend::Dedicated(real) => real.install_crds(std::slice::from_ref(crd)).await,
            Backend::Fake(fake) => fake.install_crd(crd),
        }
    }

    /// A new fake apiserver for this test.
    pub async fn fake() -> anyhow::Result<TestCluster> {
        let server = FakeApiServer::start().await?;
        Ok(TestCluster {
            backend: Backend::Fake(server),
        })
    }

    async fn shared_real() -> anyhow::Result<TestCluster> {
        let real = RealControlPlane::shared()
            .await
            .context("Cannot start the real control plane")?;
        Ok(TestCluster {
            backend: Backend::Real(real),
        })
    }

    /// Which apiserver this is.
    pub fn kind(&self) -> ClusterKind {
        match self.backend {
            Backend::Real(_) | Backend::Dedicated(_) => ClusterKind::Real,
            Backend::Fake(_) => ClusterKind::Fake,
        }
    }

    /// An admin client, default namespace `default`, bound to the calling runtime.
    pub fn client(&self) -> kube::Client {
        match &self.backend {
            Backend::Real(real) => real.client(),
            Backend::Dedicated(real) => real.client(),
            Backend::Fake(fake) => fake.client(),
        }
    }

    /// A kubeconfig for other processes and `kubectl`.
    pub fn kubeconfig_yaml(&self) -> String {
        match &self.backend {
            Backend::Real(real) => real.kubeconfig_yaml(),
            Backend::Dedicated(real) => real.kubeconfig_yaml(),
            Backend::Fake(fake) => fake.kubeconfig_yaml(),
        }
    }

    /// The apiserver's URL.
    pub fn url(&self) -> String {
        match &self.backend {
            Backend::Real(real) => real.url().to_owned(),
            Backend::Dedicated(real) => real.url().to_owned(),
            Backend::Fake(fake) => fake.url(),
        }
    }

    /// The fake apiserver, for fault injection and direct state access.
    pub fn as_fake(&self) -> Option<&FakeApiServer> {
        match &self.backend {
            Backend::Fake(fake) => Some(fake),
            Backend::Real(_) | Backend::Dedicated(_) => None,
        }
    }

    /// The real control plane.
    pub fn as_real(&self) -> Option<&RealControlPlane> {
        match &self.backend {
            Backend::Real(real) => Some(real),
            Backend::Dedicated(real) => Some(real),
            Backend::Fake(_) => None,
        }
    }

    /// Installs the Countersign CRDs (`crds/*.yaml`) and waits until they are Established.
    /// The shared real control plane has them already; applying again changes nothing.
    pub async fn install_crds(&self) -> anyhow::Result<()> {
        let crds = countersign_crds()?;
        match &self.backend {
            Backend::Real(real) => real.install_crds(&crds).await,
            Backend::Dedicated(real) => real.install_crds(&crds).await,
            Backend::Fake(fake) => crds.iter().try_for_each(|crd| fake.install_crd(crd)),
        }
    }

    /// Creates a namespace named `<prefix>-<random suffix>` with `labels` and, on the real
    /// control plane, waits for its `default` ServiceAccount (pods are refused before it).
    pub async fn create_namespace_with_labels(
        &self,
        prefix: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let suffix: String = (0..6)
            .map(|_| {
                let i = rand::rng().random_range(0..36u8);
                char::from(if i < 10 { b'0' + i } else { b'a' + i - 10 })
            })
            .collect();
        self.create_named_namespace(&format!("{prefix}-{suffix}"), labels)
            .await
    }

    /// Creates namespace `name` (exactly; on a dedicated or fake apiserver fixed names are
    /// safe) with `labels` and, on the real control plane, waits for its `default`
    /// ServiceAccount. Returns the name.
    pub async fn create_named_namespace(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<String> {
        let name = name.to_owned();
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect();
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .context("Cannot build the Namespace")?;
        let client = self.client();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("Cannot create namespace {name}"))?;
        if self.kind() == ClusterKind::Real {
            let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
            tokio::time::timeout(NAMESPACE_READY_TIMEOUT, async {
                while accounts.get_opt("default").await.ok().flatten().is_none() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await
            .with_context(|| {
                format!("No default ServiceAccount in {name} after {NAMESPACE_READY_TIMEOUT:?}")
            })?;
        }
        Ok(name)
    }

    /// [`TestCluster::create_namespace_with_labels`] without labels.
    pub async fn create_namespace(&self, prefix: &str) -> anyhow::Result<String> {
        self.create_namespace_with_labels(prefix, &[]).await
    }

    /// A kubelet for `namespace` only (its own Node), keeping pod files under `work_dir`;
    /// run it with `tokio::spawn(kubelet.run())`.
    pub fn kubelet(&self, namespace: &str, work_dir: impl Into<PathBuf>) -> Kubelet {
        Kubelet::new(self.client(), work_dir).in_namespace(namespace)
    }

    /// A client acting as ServiceAccount `namespace/name` with a TokenRequest token (real
    /// control plane only: the fake has neither tokens nor RBAC).
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<kube::Client> {
        match &self.backend {
            Backend::Real(real) => real.service_account_client(namespace, name).await,
            Backend::Dedicated(real) => real.service_account_client(namespace, name).await,
            Backend::Fake(_) => anyhow::bail!(
                "the fake apiserver has no TokenRequest or RBAC; use the real control plane"
            ),
        }
    }
}

fn choice() -> anyhow::Result<Choice> {
    match std::env::var(BACKEND_ENV).unwrap_or_default().as_str() {
        "" => Ok(Choice::Auto),
        "real" => Ok(Choice::Real),
        "fake" => Ok(Choice::Fake),
        other => anyhow::bail!("{BACKEND_ENV}={other:?}: expected `real` or `fake`"),
    }
}

/// Writes `text` to stderr past the test harness's output capture (which only catches the
/// `print!` family), so a passing test's skip is seen.
fn loud_note(text: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n*** NOTE: {text} ***\n");
}

fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn missing_under_ci() -> anyhow::Error {
    anyhow::anyhow!(
        "CI=true and the real control plane is not built: CI runs every Kubernetes test \
         against it. Run ./scripts/controlplane (scripts/test does) or set \
         COUNTERSIGN_CONTROLPLANE_BIN; {BACKEND_ENV}=fake chooses the fake on purpose."
    )
}
