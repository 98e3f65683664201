//! What the front-door tests share: a bot on the fake apiserver whose two listeners are served
//! by `countersign_bot::listener::serve` (what `countersign bot` serves them with) on
//! 127.0.0.1:0 with short time limits, raw HTTP/1.1 over TCP, signed deliveries, and reading
//! `/metrics`. Optionally the bot's GitHub calls go through a proxy that holds some of them
//! forever, so a test can keep one issue's handling busy.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use countersign_bot::listener::{ConnectionLimits, ListenerOptions};
use countersign_bot::metrics::Metrics;
use countersign_bot::server::{Bot, BotSettings, DeliveryLimits, HttpOptions};
use countersign_github::GitHubApp;
use countersign_testkit::cluster::TestCluster;
use countersign_testkit::github::{Delivery, FakeGitHub, User};
use countersign_webhooks::github::ingress::Ingress;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Every wait of these tests.
pub const WAIT: Duration = Duration::from_secs(10);
/// The webhook secret.
pub const SECRET: &str = "front-door-secret";
/// The Projects' namespace.
pub const NS: &str = "team-a";
/// The managed repository.
pub const REPO: &str = "octo-org/widgets";
/// The App installation on it.
pub const INSTALLATION: u64 = 77;

/// Short limits, so the tests take well under a second each.
pub fn short_limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read: Duration::from_millis(300),
        body_read: Duration::from_millis(600),
        idle: Duration::from_millis(600),
    }
}

/// How to start the bot.
pub struct Setup {
    /// `--queue`.
    pub queue: usize,
    /// The rest of the endpoint's limits.
    pub delivery: DeliveryLimits,
    /// The listeners' limits.
    pub connection: ConnectionLimits,
    /// GitHub requests (method, path) the proxy holds forever; `None`: no proxy.
    pub hold: Option<fn(&str, &str) -> bool>,
    /// Deliveries handled at once.
    pub workers: usize,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            queue: 64,
            delivery: DeliveryLimits::default(),
            connection: short_limits(),
            hold: None,
            workers: 2,
        }
    }
}

/// A bot served on two real listeners.
pub struct Door {
    /// The public listener.
    pub public: SocketAddr,
    /// The internal listener.
    pub internal: SocketAddr,
    /// The webhook endpoint's state.
    pub ingress: Arc<Ingress>,
    /// The bot's metrics.
    pub metrics: Arc<Metrics>,
    /// The fake GitHub behind the proxy.
    pub github: FakeGitHub,
    /// The paths of GitHub requests the proxy is holding, as they arrive.
    pub held: mpsc::UnboundedReceiver<String>,
    /// The apiserver.
    pub api: TestCluster,
    _workers: tokio::task::JoinHandle<()>,
}

impl Door {
    /// Starts the bot with `setup`; waits until it has read its Projects.
    pub async fn start(setup: Setup) -> Door {
        let api = TestCluster::fake().await.expect("fake apiserver");
        api.install_crds().await.expect("CRDs");
        api.create_named_namespace(NS, &[])
            .await
            .expect("namespace");
        let project: countersign_crds::Project = serde_json::from_value(json!({
            "apiVersion": "countersign.dev/v1alpha1",
            "kind": "Project",
            "metadata": {"name": "widgets", "namespace": NS},
            "spec": {"repository": {"owner": "octo-org", "name": "widgets"}}
        }))
        .expect("project");
        Api::<countersign_crds::Project>::namespaced(api.client(), NS)
            .create(&PostParams::default(), &project)
            .await
            .expect("create project");
        let github = FakeGitHub::start().await.expect("fake GitHub");
        github
            .world()
            .install(INSTALLATION, "octo-org", &["widgets"]);
        let (held_tx, held) = mpsc::unbounded_channel();
        let base_url = match setup.hold {
            Some(hold) => start_proxy(github.url(), hold, held_tx).await,
            None => github.url(),
        };
        let app = GitHubApp::new(countersign_github::AppConfig {
            base_url,
            // Held requests must stay held for the whole test.
            request_timeout: Duration::from_secs(120),
            max_retries: 0,
            ..github.app_config()
        })
        .expect("App client");
        let bot = Bot::with_limits(
            api.client(),
            app,
            BotSettings {
                secrets: vec![SECRET.as_bytes().to_vec()],
                namespace: None,
                queue: setup.queue,
                delivery_memory: 10_000,
                delivery_ttl: Duration::from_secs(3600),
                bot_login: "countersign[bot]".to_owned(),
                allowed_repositories: Some(
                    countersign_policies::ownership::RepositoryAllowList::everything(),
                ),
            },
            setup.delivery,
        );
        let options = HttpOptions::default();
        let ingress = bot.ingress.clone();
        let metrics = bot.probes.metrics.clone();
        let public_app = bot.public_router(&options);
        let internal_app = bot.internal_router(&options);
        let workers = tokio::spawn(bot.run(setup.workers));
        let listen = |name, app| {
            let options = ListenerOptions {
                name,
                tls: None,
                limits: setup.connection,
                metrics: metrics.connections.clone(),
            };
            serve(app, options)
        };
        let public = listen("public", public_app).await;
        let internal = listen("internal", internal_app).await;
        let door = Door {
            public,
            internal,
            ingress,
            metrics,
            github,
            held,
            api,
            _workers: workers,
        };
        tokio::time::timeout(WAIT, async {
            while get(door.internal, "/readyz").await.status != 200 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("the bot reads its Projects in time");
        door
    }

    /// The value of the metric line starting with `series` (name and labels), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&get(self.internal, "/metrics").await.body, series)
    }

    /// Waits until `series` reads `want`.
    pub async fn wait_metric(&self, series: &str, want: f64) {
        let reached = tokio::time::timeout(WAIT, async {
            loop {
                if self.metric(series).await == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            reached.is_ok(),
            "{series} is {} after {WAIT:?}, not {want}",
            self.metric(series).await
        );
    }

    /// Sends `delivery` to the public listener.
    pub async fn deliver(&self, delivery: &Delivery) -> Reply {
        exchange(self.public, &delivery_request(delivery)).await
    }
}

/// Serves `app` on 127.0.0.1:0 as `countersign bot` serves its listeners.
pub async fn serve(app: Router, options: ListenerOptions) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(countersign_bot::listener::serve(
        listener,
        app,
        options,
        std::future::pending(),
    ));
    addr
}

/// `value` of the line `series <value>` in an OpenMetrics text, 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|line| line.strip_prefix(series))
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .sum()
}

/// `countersign_bot_webhook_deliveries_total` for `event` and `outcome`.
pub fn deliveries(event: &str, outcome: &str) -> String {
    format!("countersign_bot_webhook_deliveries_total{{event=\"{event}\",outcome=\"{outcome}\"}}")
}

/// An HTTP answer read off the wire.
#[derive(Debug)]
pub struct Reply {
    /// Status code (0 when the connection closed without an answer).
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

impl Reply {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a whole HTTP/1.1 answer.
pub fn parse_reply(bytes: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

/// Writes `request` on a fresh connection and reads until the server closes it.
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // A refusal may close the connection before the whole request is written.
        let _ = stream.write_all(request).await;
        read_to_close(&mut stream).await
    };
    parse_reply(
        &tokio::time::timeout(WAIT, exchange)
            .await
            .expect("an answer in time"),
    )
}

/// Reads until the peer closes (or resets) the connection.
pub async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut chunk = [0_u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return bytes,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
        }
    }
}

/// `GET path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    exchange(addr, request.as_bytes()).await
}

/// The head of a `POST /webhook` with `headers` and `Content-Length: length`.
pub fn webhook_head(headers: &[(&str, &str)], length: usize) -> Vec<u8> {
    let mut head =
        String::from("POST /webhook HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {length}\r\n\r\n"));
    head.into_bytes()
}

/// The whole request GitHub would send for `delivery`.
pub fn delivery_request(delivery: &Delivery) -> Vec<u8> {
    let headers = delivery.headers().expect("headers");
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().expect("ascii header")))
        .collect();
    let mut request = webhook_head(&pairs, delivery.body.len());
    request.extend_from_slice(&delivery.body);
    request
}

/// Delivery headers with a well-formed signature that matches no secret (an attacker's).
pub fn unsigned_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-GitHub-Event", "issues"),
        ("X-GitHub-Delivery", "00000000-0000-4000-a000-000000000000"),
        (
            "X-Hub-Signature-256",
            "sha256=0000000000000000000000000000000000000000000000000000000000000000",
        ),
        ("Content-Type", "application/json"),
    ]
}

/// A signed `ping`.
pub fn ping() -> Delivery {
    Delivery::from_payload(
        "ping",
        &json!({"zen": "Keep it logically awesome.", "hook_id": 1}),
        SECRET,
    )
    .expect("delivery")
}

/// A signed `issue_comment.created` delivery: `sender` writes `body` on issue `number`.
pub fn comment(github: &FakeGitHub, number: u64, body: &str, sender: &User) -> Delivery {
    let payload = github.world().comment(REPO, number, body, sender);
    Delivery::from_payload("issue_comment", &payload, SECRET).expect("delivery")
}

struct Proxy {
    upstream: String,
    hold: fn(&str, &str) -> bool,
    held: mpsc::UnboundedSender<String>,
}

/// Starts a proxy to `upstream` that never answers requests `hold` picks (and reports their
/// paths on `held`); returns its URL.
async fn start_proxy(
    upstream: String,
    hold: fn(&str, &str) -> bool,
    held: mpsc::UnboundedSender<String>,
) -> String {
    let proxy = Arc::new(Proxy {
        upstream,
        hold,
        held,
    });
    let app = Router::new().fallback(forward).with_state(proxy);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let addr = listener.local_addr().expect("proxy addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    if (proxy.hold)(parts.method.as_str(), &path) {
        let _ = proxy.held.send(path);
        return std::future::pending().await;
    }
    let body = body.collect().await.expect("request body").to_bytes();
    let authority = proxy.upstream.trim_start_matches("http://").to_owned();
    let stream = TcpStream::connect(&authority)
        .await
        .expect("connect upstream");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("upstream handshake");
    tokio::spawn(conn);
    parts
        .headers
        .insert(hyper::header::HOST, authority.parse().expect("host header"));
    let request = hyper::Request::from_parts(parts, Full::new(body));
    let response = sender.send_request(request).await.expect("upstream answer");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("upstream body").to_bytes();
    Response::from_parts(parts, Body::from(body)).into_response()
}
