//! Starting the control plane: ports, credentials, the three processes with their flags, and
//! the readiness waits between them (etcd healthy → apiserver `/readyz` → CRDs Established →
//! controller manager has made the `default` ServiceAccount).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::config::AuthInfo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::Instant;
use tracing::instrument::WithSubscriber as _;
use tracing::subscriber::NoSubscriber;

use super::certs::{self, Credentials, Pem};
use super::process::Process;
use super::{
    Binaries, CONTROLLERS, RealControlPlane, SERVICE_ACCOUNT_ISSUER, StartOptions, base64, crds,
};

/// Longest wait for etcd to report healthy.
const ETCD_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for the apiserver's `/readyz` (its post-start hooks create the RBAC
/// bootstrap policy, priority levels and more).
const APISERVER_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest wait for the controller manager's first `default` ServiceAccount.
const CONTROLLER_MANAGER_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between readiness probes.
const PROBE_EVERY: Duration = Duration::from_millis(100);
/// Starts tried when a port picked as free was taken before a process bound it.
const ATTEMPTS: usize = 3;
/// The Service IP range (no Service gets traffic here; the apiserver requires one).
const SERVICE_CIDR: &str = "10.96.0.0/16";
/// Prefix of the temporary directories; stale ones (their owner process gone) are removed.
const DIR_PREFIX: &str = "countersign-cp-";

/// Why one start attempt failed.
enum Failure {
    /// A port was taken between picking it and binding it: try again with new ports.
    PortRace(anyhow::Error),
    Fatal(anyhow::Error),
}

pub(super) async fn start(options: StartOptions) -> anyhow::Result<RealControlPlane> {
    let binaries = match options.binaries.clone() {
        Some(binaries) => binaries,
        None => Binaries::find_or_build().await?,
    };
    remove_stale_dirs();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        match attempt(&binaries, &options).await {
            Ok(cp) => return Ok(cp),
            Err(Failure::Fatal(err)) => return Err(err),
            Err(Failure::PortRace(err)) => {
                tracing::warn!(error = %format!("{err:#}"), "control plane port taken; retrying");
                last = Some(err);
            }
        }
    }
    Err(last
        .unwrap_or_else(|| anyhow::anyhow!("no attempt made"))
        .context(format!(
            "Cannot start the control plane in {ATTEMPTS} attempts"
        )))
}

async fn attempt(binaries: &Binaries, options: &StartOptions) -> Result<RealControlPlane, Failure> {
    let began = Instant::now();
    let temp = tempfile::Builder::new()
        .prefix(DIR_PREFIX)
        .tempdir()
        .context("Cannot create the control plane's directory")
        .map_err(Failure::Fatal)?;
    let dir = temp.path().to_path_buf();
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string())
        .context("Cannot write owner.pid")
        .map_err(Failure::Fatal)?;
    let credentials = certs::generate(&dir.join("pki")).map_err(Failure::Fatal)?;
    let [etcd_port, peer_port, api_port, kcm_port] = free_ports().map_err(Failure::Fatal)?;
    let url = format!("https://127.0.0.1:{api_port}");
    let processes = Mutex::new(Vec::new());
    let fail = |name: &str, err: anyhow::Error, processes: &Mutex<Vec<Process>>| {
        let mut procs = processes.lock().unwrap_or_else(|p| p.into_inner());
        let tail = procs
            .iter_mut()
            .find(|p| p.name() == name)
            .map(|p| p.log_tail())
            .unwrap_or_default();
        let err = err.context(format!(
            "{name} did not start; the end of its log ({}):\n{tail}",
            dir.join(format!("{name}.log")).display()
        ));
        if tail.contains("address already in use") {
            Failure::PortRace(err)
        } else {
            Failure::Fatal(err)
        }
    };

    let etcd = Process::start(
        "etcd",
        &binaries.etcd(),
        &etcd_args(&dir, etcd_port, peer_port),
        dir.join("etcd.log"),
    )
    .map_err(Failure::Fatal)?;
    push(&processes, etcd);
    wait_until(ETCD_TIMEOUT, "etcd to be healthy", &processes, || async {
        etcd_healthy(etcd_port).await
    })
    .await
    .map_err(|e| fail("etcd", e, &processes))?;

    let apiserver = Process::start(
        "kube-apiserver",
        &binaries.kube_apiserver(),
        &apiserver_args(&dir, &credentials, etcd_port, api_port),
        dir.join("kube-apiserver.log"),
    )
    .map_err(Failure::Fatal)?;
    push(&processes, apiserver);
    let admin = kube::Client::try_from(client_config(
        &url,
        &credentials,
        admin_auth(&credentials.admin),
    ))
    .context("Cannot build the admin client")
    .map_err(Failure::Fatal)?;
    wait_until(APISERVER_TIMEOUT, "/readyz", &processes, || async {
        let request = http::Request::get("/readyz").body(Vec::new()).ok()?;
        // kube's client logs every refused connection and 500 at ERROR; expected here.
        let answer = admin.request_text(request);
        let answer = answer.with_subscriber(NoSubscriber::default()).await;
        answer.ok().filter(|body| body.trim() == "ok")
    })
    .await
    .map_err(|e| fail("kube-apiserver", e, &processes))?;

    let kubeconfig_path = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig_path,
        kubeconfig(&url, &credentials.ca_cert, &credentials.admin),
    )
    .context("Cannot write the kubeconfig")
    .map_err(Failure::Fatal)?;
    crds::install_crds(&admin, &options.crds)
        .await
        .map_err(Failure::Fatal)?;

    if !options.without_controller_manager {
        let kcm_kubeconfig = dir.join("controller-manager.kubeconfig");
        std::fs::write(
            &kcm_kubeconfig,
            controller_manager_kubeconfig(&url, &credentials),
        )
        .context("Cannot write the controller manager's kubeconfig")
        .map_err(Failure::Fatal)?;
        let kcm = Process::start(
            "kube-controller-manager",
            &binaries.kube_controller_manager(),
            &controller_manager_args(&dir, &credentials, &kcm_kubeconfig, kcm_port),
            dir.join("kube-controller-manager.log"),
        )
        .map_err(Failure::Fatal)?;
        push(&processes, kcm);
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        wait_until(
            CONTROLLER_MANAGER_TIMEOUT,
            "the default ServiceAccount",
            &processes,
            || async {
                let account = accounts.get_opt("default");
                account
                    .with_subscriber(NoSubscriber::default())
                    .await
                    .ok()
                    .flatten()
            },
        )
        .await
        .map_err(|e| fail("kube-controller-manager", e, &processes))?;
    }
    let startup = began.elapsed();
    tracing::info!(?startup, %url, "real control plane ready");
    Ok(RealControlPlane {
        processes,
        url,
        credentials,
        kubeconfig_path,
        dir,
        startup,
        _temp: temp,
    })
}

fn push(processes: &Mutex<Vec<Process>>, process: Process) {
    processes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(process);
}

/// Polls `probe` until it yields something, a process exits, or `timeout` passes.
async fn wait_until<T, F, Fut>(
    timeout: Duration,
    what: &str,
    processes: &Mutex<Vec<Process>>,
    probe: F,
) -> anyhow::Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        {
            let mut procs = processes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((name, status)) = procs
                .iter_mut()
                .find_map(|p| p.exited().map(|status| (p.name(), status)))
            {
                anyhow::bail!("{name} exited ({status}) while waiting for {what}");
            }
        }
        if Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Distinct free ports on 127.0.0.1, all bound at once so none repeats. Another process may
/// still take one before ours binds it; the start is then retried.
fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))))
        .collect::<std::io::Result<Vec<_>>>()
        .context("Cannot find free ports")?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().context("Cannot read a port")?.port();
    }
    Ok(ports)
}

/// `GET /health` on etcd's client port over plain HTTP.
async fn etcd_healthy(port: u16) -> Option<()> {
    let mut stream = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .ok()?;
    stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), stream.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    answer.contains("\"health\":\"true\"").then_some(())
}

fn etcd_args(dir: &Path, client_port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    vec![
        "--name=countersign".into(),
        format!("--data-dir={}", dir.join("etcd").display()),
        format!("--listen-client-urls={client}"),
        format!("--advertise-client-urls={client}"),
        format!("--listen-peer-urls={peer}"),
        format!("--initial-advertise-peer-urls={peer}"),
        format!("--initial-cluster=countersign={peer}"),
        // Test data dies with the test; fsync only costs time.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ]
}

fn apiserver_args(dir: &Path, creds: &Credentials, etcd_port: u16, port: u16) -> Vec<String> {
    let f = &creds.files;
    vec![
        format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        // The endpoints of Service `kubernetes` may not be loopback addresses; nothing here
        // routes Service IPs anyway.
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={port}"),
        format!("--cert-dir={}", dir.join("apiserver-certs").display()),
        format!("--tls-cert-file={}", f.serving_cert.display()),
        format!("--tls-private-key-file={}", f.serving_key.display()),
        format!("--client-ca-file={}", f.ca_cert.display()),
        "--authorization-mode=Node,RBAC".into(),
        format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
        format!(
            "--service-account-key-file={}",
            f.service_account_public_key.display()
        ),
        format!(
            "--service-account-signing-key-file={}",
            f.service_account_key.display()
        ),
        format!("--api-audiences={SERVICE_ACCOUNT_ISSUER}"),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        // As kubeadm sets it: Pod Security admission, not this flag, decides what runs.
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ]
}

fn controller_manager_args(
    dir: &Path,
    creds: &Credentials,
    kubeconfig: &Path,
    port: u16,
) -> Vec<String> {
    let f = &creds.files;
    vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--bind-address=127.0.0.1".into(),
        format!("--secure-port={port}"),
        format!(
            "--cert-dir={}",
            dir.join("controller-manager-certs").display()
        ),
        format!("--controllers={}", CONTROLLERS.join(",")),
        "--leader-elect=false".into(),
        // Each controller acts as its own ServiceAccount, as in a kubeadm cluster.
        "--use-service-account-credentials=true".into(),
        format!(
            "--service-account-private-key-file={}",
            f.service_account_key.display()
        ),
        format!("--root-ca-file={}", f.ca_cert.display()),
        "--v=1".into(),
    ]
}

/// The client configuration for `url` trusting the control plane's CA.
pub(super) fn client_config(url: &str, creds: &Credentials, auth_info: AuthInfo) -> kube::Config {
    let uri = url
        .parse::<http::Uri>()
        .expect("the control plane URL is https://127.0.0.1:PORT");
    let mut config = kube::Config::new(uri);
    config.root_cert = Some(vec![creds.ca_der.clone()]);
    config.auth_info = auth_info;
    config
}

pub(super) fn admin_auth(admin: &Pem) -> AuthInfo {
    AuthInfo {
        client_certificate_data: Some(base64(&admin.cert)),
        client_key_data: Some(secrecy::SecretString::from(base64(&admin.key))),
        ..AuthInfo::default()
    }
}

/// A kubeconfig for `user`'s certificate, everything inline.
pub(super) fn kubeconfig(url: &str, ca_cert: &str, user: &Pem) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: countersign-real\n  cluster:\n    server: {url}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: countersign-real\n  context:\n    cluster: countersign-real\n    user: admin\n    namespace: default\ncurrent-context: countersign-real\n",
        base64(ca_cert),
        base64(&user.cert),
        base64(&user.key),
    )
}

fn controller_manager_kubeconfig(url: &str, creds: &Credentials) -> String {
    let f = &creds.files;
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {url}\n    certificate-authority: {}\nusers:\n- name: kube-controller-manager\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: kube-controller-manager\ncurrent-context: local\n",
        f.ca_cert.display(),
        f.controller_manager_cert.display(),
        f.controller_manager_key.display(),
    )
}

/// Removes control plane directories left by test processes that have exited (a control
/// plane in a `static` is never dropped, so its directory outlives the process).
fn remove_stale_dirs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(DIR_PREFIX));
            let owner = std::fs::read_to_string(path.join("owner.pid"))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok());
            if let (true, Some(pid)) = (ours, owner)
                && !process_alive(pid)
            {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    });
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let answer = unsafe { libc::kill(pid, 0) };
    answer == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
