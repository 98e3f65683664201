//! The bot's HTTP surface (docs/security.md item 12), over real HTTP: what the public listener
//! carries, who may see a private repository's gate page (GitHub sign-in through the fake
//! GitHub's OAuth endpoints), and webhook deliveries staying fast while the policy API is
//! flooded with slow Rego.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use countersign_bot::api::{Isolation, PolicyLimits};
use countersign_bot::server::HttpOptions;
use countersign_github::oauth::OAuthClient;
use countersign_testkit::github::User;
use countersign_testkit::github::oauth::SIGNED_IN_HEADER;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::{GATE, NS, WAIT, full_status, serve_bot, store_gate};

/// An answer with its headers.
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

/// One HTTP/1.1 request to `addr` with extra headers.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = sender
            .send_request(request.body(Full::new(body)).expect("request"))
            .await
            .expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("an answer in time")
}

/// A signed `ping` delivery.
async fn ping(addr: SocketAddr) -> u16 {
    let payload = json!({"zen": "Keep it logically awesome.", "hook_id": 1});
    let delivery = countersign_testkit::github::Delivery::from_payload("ping", &payload, "secret")
        .expect("delivery");
    let signature = delivery.signature.clone();
    send(
        addr,
        "POST",
        "/webhook",
        &[
            ("x-github-event", "ping"),
            ("x-github-delivery", delivery.id.as_str()),
            ("x-hub-signature-256", signature.as_str()),
            ("content-type", "application/json"),
        ],
        Bytes::from(delivery.body.clone()),
    )
    .await
    .status
}

#[tokio::test]
async fn only_the_webhook_and_gate_pages_are_on_the_public_listener() {
    let served = serve_bot(HttpOptions::default()).await;
    store_gate(served.api.client(), full_status()).await;
    for (method, path) in [
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("POST", "/api/v1/simulate"),
        ("POST", "/api/v1/validate"),
        ("POST", "/admission/riskpolicies"),
        ("POST", "/admission/v1/riskpolicies"),
    ] {
        let reply = send(served.public, method, path, &[], Bytes::from("{}")).await;
        assert_eq!(
            reply.status, 404,
            "{method} {path} is public: {}",
            reply.body
        );
        let internal = send(served.internal, method, path, &[], Bytes::from("{}")).await;
        assert_ne!(
            internal.status, 404,
            "{method} {path} is not on the internal listener"
        );
    }
    assert_eq!(ping(served.public).await, 200);
    let page = send(
        served.public,
        "GET",
        &format!("/gates/{NS}/{GATE}"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        page.status, 200,
        "a public repository's page is public: {}",
        page.body
    );
    assert_eq!(
        ping(served.internal).await,
        404,
        "no webhook on the internal listener"
    );
}

const CLIENT_ID: &str = "Iv1.countersign-test";
const CLIENT_SECRET: &str = "oauth-secret";
const PUBLIC_URL: &str = "http://countersign.test";

/// Signs `who` in through the bot and the fake GitHub; returns the session cookie and where
/// the bot sent the browser afterwards.
async fn sign_in(
    public: SocketAddr,
    github: &countersign_testkit::github::FakeGitHub,
    who: &str,
    next: &str,
) -> (String, String) {
    let login = send(public, "GET", next, &[], Bytes::new()).await;
    assert_eq!(login.status, 302, "{}", login.body);
    let to_login = login.header("location").expect("to /login");
    assert!(to_login.starts_with("/login?next="), "{to_login}");
    let authorize = send(public, "GET", &to_login, &[], Bytes::new()).await;
    assert_eq!(authorize.status, 302);
    let github_url = authorize.header("location").expect("to GitHub");
    let path = github_url
        .strip_prefix(&github.url())
        .unwrap_or_else(|| panic!("not the fake GitHub: {github_url}"));
    let github_addr: SocketAddr = github
        .url()
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let back = send(
        github_addr,
        "GET",
        path,
        &[(SIGNED_IN_HEADER, who)],
        Bytes::new(),
    )
    .await;
    assert_eq!(back.status, 302, "{}", back.body);
    let callback = back.header("location").expect("back to the bot");
    let callback = callback
        .strip_prefix(PUBLIC_URL)
        .unwrap_or_else(|| panic!("not the bot's callback: {callback}"));
    let done = send(public, "GET", callback, &[], Bytes::new()).await;
    assert_eq!(done.status, 302, "{}", done.body);
    let cookie = done.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap_or_default().to_owned();
    (cookie, done.header("location").unwrap_or_default())
}

#[tokio::test]
async fn private_gate_pages_need_a_github_sign_in_by_someone_who_can_read_the_repository() {
    let served = serve_bot(HttpOptions {
        public_url: Some(PUBLIC_URL.to_owned()),
        oauth: Some(OAuthClient {
            client_id: CLIENT_ID.to_owned(),
            client_secret: secrecy::SecretString::from(CLIENT_SECRET.to_owned()),
        }),
        ..HttpOptions::default()
    })
    .await;
    {
        let mut w = served.github.world();
        w.register_oauth_client(CLIENT_ID, CLIENT_SECRET);
        w.make_private("octo-org/widgets");
        w.set_permission("octo-org/widgets", "lead", "write");
        w.add_user(&User::new(1010, "lead"));
        w.add_user(&User::new(666, "outsider"));
    }
    store_gate(served.api.client(), full_status()).await;
    let page = format!("/gates/{NS}/{GATE}");

    // Nobody signed in: sent to sign in, nothing of the gate shown.
    let anonymous = send(served.public, "GET", &page, &[], Bytes::new()).await;
    assert_eq!(
        anonymous.status, 302,
        "a private gate was shown to anyone: {}",
        anonymous.body
    );
    assert!(!anonymous.body.contains("data-role"));

    // Signed in without access: as if there were no such gate.
    let (cookie, next) = sign_in(served.public, &served.github, "outsider", &page).await;
    assert_eq!(next, page);
    let denied = send(
        served.public,
        "GET",
        &page,
        &[("cookie", cookie.as_str())],
        Bytes::new(),
    )
    .await;
    assert_eq!(denied.status, 404, "{}", denied.body);
    assert!(!denied.body.contains("data-role"));

    // Someone who can read the repository sees it.
    let (cookie, _) = sign_in(served.public, &served.github, "lead", &page).await;
    let shown = send(
        served.public,
        "GET",
        &page,
        &[("cookie", cookie.as_str())],
        Bytes::new(),
    )
    .await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert!(
        shown.body.contains("data-role=\"tech_lead\""),
        "{}",
        shown.body
    );

    // A forged or unknown session is no session.
    let forged = format!("countersign_session={}", "f".repeat(64));
    let forged = send(
        served.public,
        "GET",
        &page,
        &[("cookie", forged.as_str())],
        Bytes::new(),
    )
    .await;
    assert_eq!(forged.status, 302);
    // The sign-in cannot be bounced elsewhere.
    let open_redirect = send(
        served.public,
        "GET",
        "/login?next=https://evil.example/",
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(open_redirect.status, 302);
    assert!(
        !open_redirect
            .header("location")
            .unwrap_or_default()
            .contains("evil.example%2F&")
    );
}

/// A Rego module that spins until the engine's time limit (about 2 s of CPU per
/// evaluation, and a compile probe of the same length), using little memory.
const SLOW_POLICY_REGO: &str = "package countersign.risk\n\nr := numbers.range(1, 4000)\n\nfactors[\"impact\"] := 1 if {\n  every i in r {\n    every j in r {\n      i + j > 0\n    }\n  }\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_stay_fast_while_the_policy_api_is_flooded() {
    const FLOOD: usize = 6;
    const DELIVERIES: usize = 40;
    let served = serve_bot(HttpOptions {
        policy: PolicyLimits {
            concurrency: 1,
            timeout: Duration::from_secs(60),
            isolation: Isolation::Threads,
        },
        ..HttpOptions::default()
    })
    .await;
    let mut policy: serde_json::Value =
        serde_json::to_value(countersign_policies::default_policy().spec).expect("spec");
    policy["rego"] = json!({"package": "countersign.risk", "module": SLOW_POLICY_REGO});
    let body = Bytes::from(
        json!({"policy": policy, "change": {"files": [{"path": "src/a.rs", "additions": 1}]}})
            .to_string(),
    );
    let answered = Arc::new(AtomicUsize::new(0));
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel::<()>(FLOOD);
    let mut flood = Vec::new();
    for _ in 0..FLOOD {
        let (answered, body, addr, sent) = (
            answered.clone(),
            body.clone(),
            served.internal,
            sent_tx.clone(),
        );
        flood.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "POST /api/v1/simulate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.expect("write");
            stream.write_all(&body).await.expect("write");
            let _ = sent.send(()).await;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            answered.fetch_add(1, Ordering::SeqCst);
        }));
    }
    drop(sent_tx);
    // Every simulate request is on the wire before the first delivery.
    for _ in 0..FLOOD {
        tokio::time::timeout(WAIT, sent_rx.recv())
            .await
            .expect("the flood is sent in time");
    }

    let started = Instant::now();
    for _ in 0..DELIVERIES {
        assert_eq!(ping(served.public).await, 200);
    }
    let took = started.elapsed();
    let flood_done = answered.load(Ordering::SeqCst);
    // Measured by what finished, not by a sleep: every delivery was answered while (nearly)
    // the whole flood was still waiting or running.
    assert!(
        flood_done < FLOOD / 2,
        "{DELIVERIES} deliveries waited behind {flood_done} of {FLOOD} simulate requests ({took:?})"
    );
    for task in flood {
        task.abort();
    }
}
