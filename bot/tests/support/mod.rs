//! What the gate-page and `/api/v1` tests share: a bot on the fake apiserver served over real
//! HTTP on 127.0.0.1:0, a small HTTP/1.1 client, and an ApprovalGate with a full status.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use countersign_bot::server::{Bot, BotSettings, HttpOptions};
use countersign_crds::ApprovalGate;
use countersign_github::{AppConfig, GitHubApp};
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::FakeGitHub;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// Every wait of these tests.
pub const WAIT: Duration = Duration::from_secs(20);
/// The namespace the gates live in.
pub const NS: &str = "team-a";
/// The stored gate's name.
pub const GATE: &str = "widgets-pr-42";
/// A head commit.
pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// The App installation on `octo-org/widgets` in the fake GitHub.
pub const INSTALLATION: u64 = 77;

/// A bot served over HTTP, with the fake apiserver it reads.
pub struct Served {
    /// Where it listens (every route).
    pub addr: SocketAddr,
    /// Where its public routes listen.
    pub public: SocketAddr,
    /// Where its internal routes listen.
    pub internal: SocketAddr,
    /// The apiserver.
    pub api: TestCluster,
    /// The fake GitHub (the App is installed on `octo-org/widgets`, a public repository).
    pub github: FakeGitHub,
    _workers: tokio::task::JoinHandle<()>,
}

async fn serve_router(
    router: axum::Router,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        match tls {
            Some(config) => {
                countersign_bot::tls::serve(listener, config, router, std::future::pending())
                    .await
                    .expect("serve HTTPS")
            }
            None => axum::serve(listener, router).await.expect("serve"),
        }
    });
    addr
}

/// Starts a Kubernetes for this test (CRDs and namespace installed) and a bot with `options`,
/// serving its whole router on 127.0.0.1:0.
pub async fn serve_bot(options: HttpOptions) -> Served {
    serve_bot_with(options, None).await
}

/// Like [`serve_bot`], over HTTPS with `tls` when given.
pub async fn serve_bot_with(
    options: HttpOptions,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> Served {
    // A Kubernetes of this test alone (real when built): the bot watches every namespace.
    let api = TestCluster::start_dedicated().await.expect("test cluster");
    serve_bot_on(api, options, tls).await
}

/// Like [`serve_bot`], on the fake apiserver, for tests that inject API faults
/// (`served.api.as_fake()`).
pub async fn serve_bot_on_fake(options: HttpOptions) -> Served {
    let api = TestCluster::fake().await.expect("fake apiserver");
    serve_bot_on(api, options, None).await
}

async fn serve_bot_on(
    api: TestCluster,
    options: HttpOptions,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> Served {
    api.install_crds().await.expect("CRDs");
    api.create_named_namespace(NS, &[])
        .await
        .expect("namespace");
    let github = FakeGitHub::start().await.expect("fake GitHub");
    github
        .world()
        .install(INSTALLATION, "octo-org", &["widgets"]);
    let app = GitHubApp::new(AppConfig {
        max_retries: 0,
        max_retry_wait: Duration::from_secs(1),
        ..github.app_config()
    })
    .expect("App client");
    let bot = Bot::new(
        api.client(),
        app,
        BotSettings {
            secrets: vec![b"secret".to_vec()],
            namespace: None,
            queue: 16,
            delivery_memory: 100,
            delivery_ttl: Duration::from_secs(60),
            bot_login: "countersign[bot]".to_owned(),
            allowed_repositories: Some(
                countersign_policies::ownership::RepositoryAllowList::everything(),
            ),
        },
    );
    let router = bot.router_with(&options);
    let public = bot.public_router(&options);
    let internal = bot.internal_router(&options);
    let workers = tokio::spawn(bot.run(1));
    let addr = serve_router(router, tls.clone()).await;
    let public = serve_router(public, tls.clone()).await;
    let internal = serve_router(internal, tls).await;
    Served {
        addr,
        public,
        internal,
        api,
        github,
        _workers: workers,
    }
}

/// An HTTP answer.
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: String,
    /// Body as text.
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Answer {
    let stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    exchange(stream, method, path, content_type, body.into()).await
}

/// One HTTPS request (HTTP/1.1) to `localhost` on `addr`, trusting only `root` (DER).
pub async fn https_request(
    addr: SocketAddr,
    root: &[u8],
    method: &str,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Answer {
    try_https_request(addr, root, method, path, content_type, body)
        .await
        .expect("TLS handshake with a certificate signed by `root`")
}

/// [`https_request`], `None` when the server's certificate is not the one `root` trusts.
pub async fn try_https_request(
    addr: SocketAddr,
    root: &[u8],
    method: &str,
    path: &str,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Option<Answer> {
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(root.to_vec()))
        .expect("root certificate");
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("localhost").expect("server name");
        connector.connect(name, tcp).await.ok()
    };
    let stream = tokio::time::timeout(WAIT, connect)
        .await
        .expect("TLS connect in time")?;
    Some(exchange(stream, method, path, content_type, body.into()).await)
}

async fn exchange<S>(stream: S, method: &str, path: &str, content_type: &str, body: Bytes) -> Answer
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            content_type,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the bot answers in time")
}

/// `GET path`.
pub async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(addr, "GET", path, "text/plain", Bytes::new()).await
}

/// `POST path` with a JSON body.
pub async fn post_json(addr: SocketAddr, path: &str, body: &Value) -> Answer {
    request(addr, "POST", path, "application/json", body.to_string()).await
}

/// One approval record.
pub fn record(login: &str, id: u64, roles: &[&str], valid: bool, reason: Option<&str>) -> Value {
    let mut r = json!({
        "user": {"login": login, "id": id},
        "roles": roles,
        "decision": "approve",
        "sha": SHA,
        "time": "2026-12-04T10:30:00Z",
        "via": "review",
        "valid": valid
    });
    if let Some(reason) = reason {
        r["invalidReason"] = json!(reason);
    }
    r
}

/// A pending medium-risk gate: developer approved by dave; tech_lead still missing, since
/// rita asked for the AI run and `<script>` is not in the role.
pub fn full_status() -> Value {
    json!({
        "phase": "Pending",
        "headSha": SHA,
        "risk": {
            "score": 6, "level": "medium", "workflow": "supervised",
            "factors": [
                {"factor": "impact", "score": 6, "rule": "features",
                 "reason": "src/api/handler.rs matched rule features (src/**)"},
                {"factor": "complexity", "score": 2, "reason": "baseline"}
            ]
        },
        "requirements": [
            {"role": "developer", "count": 1, "satisfied": 1, "approvedBy": ["dave"]},
            {"role": "tech_lead", "count": 1, "satisfied": 0}
        ],
        "approvals": [
            record("dave", 11, &["developer"], true, None),
            record("rita", 12, &["tech_lead"], false, Some("requester")),
            record("mallory", 13, &[], false, Some("notInRole")),
        ],
        "deadline": "2026-12-04T18:00:00Z",
        "escalations": [{"time": "2026-12-04T14:00:00Z", "action": "remind"}]
    })
}

/// Stores Project `widgets` (managing `octo-org/widgets`) in `NS`, unless it exists.
pub async fn store_project(client: kube::Client) {
    let project: countersign_crds::Project = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "Project",
        "metadata": {"name": "widgets", "namespace": NS},
        "spec": {"repository": {"owner": "octo-org", "name": "widgets"}}
    }))
    .expect("project");
    let projects: Api<countersign_crds::Project> = Api::namespaced(client, NS);
    if projects
        .get_opt("widgets")
        .await
        .expect("get project")
        .is_none()
    {
        projects
            .create(&PostParams::default(), &project)
            .await
            .expect("create project");
    }
}

/// Stores gate `GATE` (of Project `widgets`, which is stored too) with `status` in `NS`.
pub async fn store_gate(client: kube::Client, status: Value) -> ApprovalGate {
    store_project(client.clone()).await;
    let gate: ApprovalGate = serde_json::from_value(json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "ApprovalGate",
        "metadata": {"name": GATE, "namespace": NS},
        "spec": {
            "projectRef": {"name": "widgets"},
            "pullRequestNumber": 42,
            "baseBranch": "main",
            "author": {"login": "countersign[bot]", "id": 9},
            "aiGenerated": true
        }
    }))
    .expect("gate");
    let gates: Api<ApprovalGate> = Api::namespaced(client, NS);
    gates
        .create(&PostParams::default(), &gate)
        .await
        .expect("create gate");
    gates
        .patch_status(
            GATE,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .expect("write gate status")
}
