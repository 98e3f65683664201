//! A real Kubernetes control plane for tests: `etcd`, `kube-apiserver` and
//! `kube-controller-manager` built from Go modules by `scripts/controlplane` (see
//! `tests/controlplane`), started on loopback ports in a fresh temporary directory.
//!
//! The apiserver runs as a cluster's would: TLS with a CA generated at start, client
//! certificates, `--authorization-mode=Node,RBAC`, the default admission plugins (Pod Security
//! admission among them), and ServiceAccount token issuing, so `TokenRequest` works and a
//! token's client is limited by RBAC. The controller manager runs only the controllers tests
//! need (see [`CONTROLLERS`]): owner-reference garbage collection, namespace deletion, default
//! ServiceAccounts, the `kube-root-ca.crt` ConfigMap and ClusterRole aggregation. There is no
//! scheduler and no kubelet: [`crate::kubelet::Kubelet`] binds pods and runs them as local
//! processes.
//!
//! Processes are killed when the [`RealControlPlane`] is dropped and, for one kept in a
//! `static` ([`RealControlPlane::shared`]), when the test process exits. Their logs are
//! `etcd.log`, `kube-apiserver.log` and `kube-controller-manager.log` in [`RealControlPlane::dir`];
//! a start that fails names the process and shows the end of its log.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use countersign_testkit::controlplane::RealControlPlane;
//! let cp = RealControlPlane::start().await?;
//! let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::default_namespaced(cp.client());
//! println!("ready in {:?}", cp.startup_time());
//! # Ok(()) }
//! ```

mod binaries;
mod certs;
mod crds;
mod process;
mod start;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::AuthInfo;
use secrecy::SecretString;

pub use binaries::{BIN_ENV, Binaries, kubectl, workspace_root};
pub use crds::{countersign_crds, install_crds, wait_established};

use certs::Credentials;
use process::Process;

/// The controllers `kube-controller-manager` runs (`--controllers`): what tests of
/// Countersign's objects need and a cluster always has. Owner-reference garbage collection
/// above all; namespace deletion; the `default` ServiceAccount and its tokens in every
/// namespace (pods are refused without it); the `kube-root-ca.crt` ConfigMap that
/// ServiceAccount token volumes project; and the aggregation that fills the `admin`, `edit`
/// and `view` ClusterRoles.
pub const CONTROLLERS: &[&str] = &[
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
];

/// The issuer of ServiceAccount tokens and the audience the apiserver accepts.
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Lifetime asked for in [`RealControlPlane::service_account_client`]'s TokenRequest.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// How to start a [`RealControlPlane`].
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// The binaries; found with [`Binaries::find_or_build`] when `None`.
    pub binaries: Option<Binaries>,
    /// CRDs installed (and waited for until Established) before the controller manager
    /// starts, so its garbage collector watches their kinds from the start instead of after
    /// its next discovery pass (every 30 s).
    pub crds: Vec<CustomResourceDefinition>,
    /// Do not start `kube-controller-manager` (no garbage collection, no default
    /// ServiceAccounts: pods are refused until one is created).
    pub without_controller_manager: bool,
}

/// A running control plane. Clients made from it are bound to the tokio runtime that makes
/// them; the control plane itself belongs to none, so one may be shared by every test of a
/// test binary ([`RealControlPlane::shared`]) while each test makes its own clients.
#[derive(Debug)]
pub struct RealControlPlane {
    // Fields drop in order: the processes die before their directory is removed.
    processes: Mutex<Vec<Process>>,
    url: String,
    credentials: Credentials,
    kubeconfig_path: PathBuf,
    dir: PathBuf,
    startup: Duration,
    _temp: tempfile::TempDir,
}

impl RealControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits until the apiserver
    /// is ready and the controller manager has made the `default` ServiceAccount.
    pub async fn start() -> anyhow::Result<RealControlPlane> {
        Self::start_with(StartOptions::default()).await
    }

    /// [`RealControlPlane::start`] with options.
    pub async fn start_with(options: StartOptions) -> anyhow::Result<RealControlPlane> {
        start::start(options).await
    }

    /// One control plane for the whole test process, started by the first caller with the
    /// Countersign CRDs installed ([`countersign_crds`]); later callers wait for it. A
    /// failed start is retried by the next caller. Give every test its own namespace.
    pub async fn shared() -> anyhow::Result<&'static RealControlPlane> {
        static SHARED: tokio::sync::OnceCell<RealControlPlane> = tokio::sync::OnceCell::const_new();
        SHARED
            .get_or_try_init(|| async {
                let options = StartOptions {
                    crds: countersign_crds()?,
                    ..StartOptions::default()
                };
                RealControlPlane::start_with(options).await
            })
            .await
    }

    /// `https://127.0.0.1:PORT`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How long [`RealControlPlane::start`] took until everything was ready.
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The directory holding data, credentials, the kubeconfig and the processes' logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM) the apiserver's serving certificate chains to.
    pub fn ca_cert_pem(&self) -> &str {
        &self.credentials.ca_cert
    }

    /// A client with the admin certificate (`system:masters`), default namespace `default`.
    /// Call it on the runtime that uses the client.
    pub fn client(&self) -> kube::Client {
        let auth = start::admin_auth(&self.credentials.admin);
        // The same configuration made the client that waited for readiness at start.
        kube::Client::try_from(self.config(auth))
            .expect("the admin client config was checked at start")
    }

    /// A client that authenticates as ServiceAccount `namespace/name` with a token from the
    /// TokenRequest API (valid for an hour), so RBAC applies to it as to a pod's identity.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<kube::Client> {
        let token = self.service_account_token(namespace, name).await?;
        let auth = AuthInfo {
            token: Some(SecretString::from(token)),
            ..AuthInfo::default()
        };
        kube::Client::try_from(self.config(auth)).context("Cannot build a ServiceAccount client")
    }

    /// A token for ServiceAccount `namespace/name` from the TokenRequest API.
    pub async fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<String> {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![SERVICE_ACCOUNT_ISSUER.to_owned()]),
                expiration_seconds: Some(TOKEN_LIFETIME.as_secs() as i64),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let answer = accounts
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| {
                format!("Cannot request a token for ServiceAccount {namespace}/{name}")
            })?;
        answer
            .status
            .and_then(|s| s.token)
            .filter(|t| !t.is_empty())
            .context("The TokenRequest answer holds no token")
    }

    /// A kubeconfig for the admin (context `countersign-real`, namespace `default`) with the
    /// certificates inline, for `kubectl` and other processes.
    pub fn kubeconfig_yaml(&self) -> String {
        start::kubeconfig(
            &self.url,
            &self.credentials.ca_cert,
            &self.credentials.admin,
        )
    }

    /// The file holding [`RealControlPlane::kubeconfig_yaml`].
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The end of each process's log.
    pub fn log_tails(&self) -> String {
        let processes = self.processes.lock().unwrap_or_else(|p| p.into_inner());
        processes
            .iter()
            .map(|p| format!("--- {} ---\n{}", p.name(), p.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Installs CRDs (created, or replaced when they exist) and waits until each is
    /// Established.
    pub async fn install_crds(&self, crds: &[CustomResourceDefinition]) -> anyhow::Result<()> {
        crds::install_crds(&self.client(), crds).await
    }

    fn config(&self, auth_info: AuthInfo) -> kube::Config {
        start::client_config(&self.url, &self.credentials, auth_info)
    }
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}
