//! The real control plane's credentials, generated at every start with `rcgen`: one CA that
//! signs the apiserver's serving certificate (for `127.0.0.1` and `localhost`) and the client
//! certificates (the admin in `system:masters`, the controller manager as
//! `system:kube-controller-manager`), plus the key that signs ServiceAccount tokens.
//!
//! Nothing is reused between starts, so a test never depends on a file from an earlier run.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, PEM-encoded.
#[derive(Clone, Debug)]
pub(crate) struct Pem {
    /// The certificate.
    pub(crate) cert: String,
    /// The private key (PKCS#8).
    pub(crate) key: String,
}

/// Every credential of one control plane, with the files the processes read.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    /// The CA certificate (PEM) that clients trust and the apiserver checks clients against.
    pub(crate) ca_cert: String,
    /// The same certificate, DER-encoded (what `kube::Config::root_cert` takes).
    pub(crate) ca_der: Vec<u8>,
    /// `CN=countersign-admin, O=system:masters`: may do anything.
    pub(crate) admin: Pem,
    /// Files written under the control plane's directory.
    pub(crate) files: CredentialFiles,
}

/// Paths of the credential files, as the processes' flags name them.
#[derive(Clone, Debug)]
pub(crate) struct CredentialFiles {
    pub(crate) ca_cert: PathBuf,
    pub(crate) serving_cert: PathBuf,
    pub(crate) serving_key: PathBuf,
    pub(crate) controller_manager_cert: PathBuf,
    pub(crate) controller_manager_key: PathBuf,
    /// The ServiceAccount token signing key (ECDSA P-256, PKCS#8).
    pub(crate) service_account_key: PathBuf,
    /// Its public half, with which the apiserver verifies tokens.
    pub(crate) service_account_public_key: PathBuf,
}

/// Generates the credentials and writes them under `dir`.
pub(crate) fn generate(dir: &Path) -> anyhow::Result<Credentials> {
    std::fs::create_dir_all(dir).with_context(|| format!("Cannot create {}", dir.display()))?;
    let ca_key = KeyPair::generate().context("Cannot generate the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = name("countersign-test-ca", None);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params
        .self_signed(&ca_key)
        .context("Cannot sign the CA certificate")?;

    let leaf = |sans: Vec<String>,
                cn: &str,
                org: Option<&str>,
                usage: ExtendedKeyUsagePurpose|
     -> anyhow::Result<Pem> {
        let key = KeyPair::generate().context("Cannot generate a key")?;
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name = name(cn, org);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        let cert = params
            .signed_by(&key, &ca, &ca_key)
            .with_context(|| format!("Cannot sign the certificate of {cn}"))?;
        Ok(Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        })
    };
    // `kubernetes.default.svc` too, so a process given the in-cluster name would verify.
    let serving_names = [
        "127.0.0.1",
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .map(String::from)
    .to_vec();
    let serving = leaf(
        serving_names,
        "kube-apiserver",
        None,
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    let admin = leaf(
        Vec::new(),
        "countersign-admin",
        Some("system:masters"),
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let controller_manager = leaf(
        Vec::new(),
        "system:kube-controller-manager",
        None,
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let service_account =
        KeyPair::generate().context("Cannot generate the ServiceAccount signing key")?;

    let files = CredentialFiles {
        ca_cert: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        controller_manager_cert: dir.join("controller-manager.crt"),
        controller_manager_key: dir.join("controller-manager.key"),
        service_account_key: dir.join("service-account.key"),
        service_account_public_key: dir.join("service-account.pub"),
    };
    let ca_cert = ca.pem();
    for (path, contents) in [
        (&files.ca_cert, ca_cert.as_str()),
        (&files.serving_cert, serving.cert.as_str()),
        (&files.serving_key, serving.key.as_str()),
        (
            &files.controller_manager_cert,
            controller_manager.cert.as_str(),
        ),
        (
            &files.controller_manager_key,
            controller_manager.key.as_str(),
        ),
        (
            &files.service_account_key,
            service_account.serialize_pem().as_str(),
        ),
        (
            &files.service_account_public_key,
            service_account.public_key_pem().as_str(),
        ),
    ] {
        write_private(path, contents)?;
    }
    Ok(Credentials {
        ca_cert,
        ca_der: ca.der().to_vec(),
        admin,
        files,
    })
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    dn
}

/// Writes `contents` readable by the owner only (the files hold private keys).
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("Cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("Cannot write {}", path.display()))
}
