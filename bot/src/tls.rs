//! HTTPS for `countersign bot` (`--tls-cert-file`, `--tls-key-file`): Kubernetes calls
//! admission webhooks over HTTPS only. rustls with the ring provider (the workspace's one
//! crypto backend), HTTP/1.1 and HTTP/2 (by ALPN), served by [`crate::listener`] like plain
//! HTTP: the same router, time limits and graceful shutdown.
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
use tokio::net::TcpListener;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

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

/// Serves `app` over HTTPS on `listener` with the default time limits until `shutdown`
/// completes (see [`crate::listener::serve`]).
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let options = crate::listener::ListenerOptions {
        tls: Some(config),
        ..crate::listener::ListenerOptions::new("https")
    };
    crate::listener::serve(listener, app, options, shutdown).await
}
