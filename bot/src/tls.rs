//! HTTPS for `countersign bot` (`--tls-cert-file`, `--tls-key-file`): Kubernetes calls
//! admission webhooks over HTTPS only. rustls with the ring provider (the workspace's one
//! crypto backend), HTTP/1.1 and HTTP/2 through hyper-util, the same axum router as plain
//! HTTP, and the same graceful shutdown: stop accepting, let open requests finish.
//!
//! The certificate is served through a resolver whose key pair is replaced when the files
//! change ([`crate::reload`]): a certificate renewed by cert-manager (or rotated in the
//! chart's Secret) is used for new connections without a restart.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Longest a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections may take to finish after shutdown starts.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// Pause after a failed `accept` (e.g. too many open files) before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The certificate new handshakes get; [`Certificates::replace`] swaps it.
#[derive(Debug)]
pub struct Certificates {
    current: std::sync::RwLock<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Uses `key` from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = key;
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// Reads the certificate chain and key (PEM) and checks that they belong together.
pub fn load_key(cert_file: &Path, key_file: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .with_context(|| format!("Cannot read the TLS certificate {}", cert_file.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("Cannot parse the TLS certificate {}", cert_file.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "The TLS certificate file {} holds no CERTIFICATE block",
        cert_file.display()
    );
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("Cannot read the TLS private key {}", key_file.display()))?;
    let provider = tokio_rustls::rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(certs, key, &provider)
        .context("The TLS certificate and private key do not form a usable pair")?;
    Ok(Arc::new(certified))
}

/// Reads the certificate chain and key (PEM) into a rustls server config (TLS 1.2 and 1.3,
/// ALPN `h2` and `http/1.1`) whose certificate can be replaced later through the returned
/// [`Certificates`].
pub fn load(
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<(Arc<ServerConfig>, Arc<Certificates>)> {
    let certificates = Arc::new(Certificates {
        current: std::sync::RwLock::new(load_key(cert_file, key_file)?),
    });
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("Cannot set up TLS with the ring provider")?
        .with_no_client_auth()
        .with_cert_resolver(certificates.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((Arc::new(config), certificates))
}

/// Re-reads `cert_file` and `key_file` every `interval` and serves a changed, valid pair to
/// new connections (see [`crate::reload`]). Runs until dropped.
pub fn watch_files(
    cert_file: &Path,
    key_file: &Path,
    certificates: Arc<Certificates>,
    interval: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    crate::reload::watch(
        "TLS certificate",
        vec![cert_file.to_path_buf(), key_file.to_path_buf()],
        interval,
        |paths| load_key(&paths[0], &paths[1]),
        move |key| certificates.replace(key),
    )
}

/// Serves `app` over HTTPS on `listener` until `shutdown` completes, then waits up to
/// [`SHUTDOWN_GRACE`] for open connections.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(error) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%error, %peer, "HTTPS connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("open HTTPS connections did not finish in time; closing them");
        }
    }
    Ok(())
}
