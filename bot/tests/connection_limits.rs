//! The bot's front door under slow, idle and oversized clients (issue #17 items 10 and 12),
//! over real TCP against the listeners `countersign bot` serves: connections that send nothing
//! or trickle their head are closed, slowly sent bodies are cut off with 408, announced bodies
//! over the cap are refused before they are sent, unverified bodies share one memory budget,
//! and every refusal shows in `/metrics`.

mod front_door;

use std::time::{Duration, Instant};

use countersign_bot::listener::ListenerOptions;
use countersign_bot::server::DeliveryLimits;
use countersign_testkit::github::Delivery;
use countersign_webhooks::github::ingress::MAX_BODY_BYTES;
use front_door::{
    Door, SECRET, Setup, WAIT, deliveries, exchange, get, ping, read_to_close, short_limits,
    unsigned_headers, webhook_head,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn timeouts(listener: &str, timeout: &str) -> String {
    format!("countersign_bot_http_timeouts_total{{listener=\"{listener}\",timeout=\"{timeout}\"}}")
}

#[tokio::test]
async fn idle_connections_and_trickled_heads_are_closed() {
    let door = Door::start(Setup::default()).await;
    let started = Instant::now();

    // Connections that never send a byte, on both listeners.
    let mut idle = Vec::new();
    for addr in [door.public, door.internal].into_iter().cycle().take(20) {
        idle.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // A head sent one byte at a time, never finished.
    let mut slow = TcpStream::connect(door.public).await.expect("connect");
    slow.write_all(b"POST /webhook HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .expect("write");
    let (mut reader, mut writer) = slow.into_split();
    let trickle = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });

    let closed = async {
        for mut stream in idle {
            read_to_close(&mut stream).await;
        }
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut rest).await;
    };
    tokio::time::timeout(WAIT, closed)
        .await
        .expect("every connection is closed by the header-read limit");
    assert!(
        started.elapsed() >= short_limits().header_read,
        "not before the limit"
    );
    trickle.abort();
    assert_eq!(door.metric(&timeouts("public", "header_read")).await, 11.0);
    assert_eq!(
        door.metric(&timeouts("internal", "header_read")).await,
        10.0
    );

    // A keep-alive connection that asked once and then went quiet is closed too.
    let mut kept = TcpStream::connect(door.internal).await.expect("connect");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let answered = tokio::time::timeout(WAIT, read_to_close(&mut kept))
        .await
        .expect("the quiet keep-alive connection is closed");
    assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_answered_408() {
    let door = Door::start(Setup::default()).await;
    let mut stream = TcpStream::connect(door.public).await.expect("connect");
    stream
        .write_all(&webhook_head(&unsigned_headers(), 1000))
        .await
        .expect("write head");
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 50 ms: 20 bytes a second, steadily, would take 50 s.
    let trickle = tokio::spawn(async move {
        loop {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut answer),
    )
    .await
    .expect("cut off in time")
    .expect("read");
    trickle.abort();
    let reply = front_door::parse_reply(&answer);
    assert_eq!(reply.status, 408, "{reply:?}");
    assert_eq!(
        door.metric(&deliveries("unverified", "body_timeout")).await,
        1.0
    );
    assert_eq!(door.metric(&timeouts("public", "body_read")).await, 1.0);
    door.wait_metric("countersign_bot_webhook_unverified_body_bytes", 0.0)
        .await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_file, certified.key_pair.serialize_pem()).expect("write key");
    let (config, _) = countersign_bot::tls::load(&cert_file, &key_file).expect("TLS files");
    let metrics = countersign_bot::listener::ConnectionMetrics::default();
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let addr = front_door::serve(
        app,
        ListenerOptions {
            name: "internal",
            tls: Some(config),
            limits: short_limits(),
            metrics: metrics.clone(),
        },
    )
    .await;

    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(certified.cert.der().to_vec()))
        .expect("root");
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut client = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = tokio::time::timeout(
        WAIT,
        connector.connect(ServerName::try_from("localhost").expect("name"), tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get("https://localhost/healthz")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(response.status(), 200);
    drop(response);
    let quiet = Instant::now();
    tokio::time::timeout(WAIT, conn)
        .await
        .expect("the idle HTTP/2 connection is closed")
        .expect("connection task")
        .expect("closed cleanly (GOAWAY)");
    assert!(quiet.elapsed() >= short_limits().idle / 2);
    assert_eq!(
        metrics.count("internal", countersign_bot::listener::Timeout::Idle),
        1
    );
}

#[tokio::test]
async fn an_announced_body_over_the_cap_is_refused_before_it_is_sent() {
    let door = Door::start(Setup::default()).await;
    // Only the head: a 413 (not the 408 of a body waited for) proves the body was never read.
    let reply = exchange(
        door.public,
        &webhook_head(&unsigned_headers(), MAX_BODY_BYTES + 1),
    )
    .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(
        door.metric(&deliveries("unverified", "too_large")).await,
        1.0
    );
}

#[tokio::test]
async fn unverified_bodies_share_one_memory_budget() {
    const KIB: usize = 1024;
    let door = Door::start(Setup {
        delivery: DeliveryLimits {
            unverified_body_budget: 1024 * KIB,
            ..DeliveryLimits::default()
        },
        connection: countersign_bot::listener::ConnectionLimits {
            body_read: WAIT * 2,
            ..short_limits()
        },
        ..Setup::default()
    })
    .await;
    let held = "countersign_bot_webhook_unverified_body_bytes";

    // An attacker's body of 900 KiB, 800 KiB of it sent, the rest never.
    let mut first = TcpStream::connect(door.public).await.expect("connect");
    first
        .write_all(&webhook_head(&unsigned_headers(), 900 * KIB))
        .await
        .expect("write head");
    first
        .write_all(&vec![b' '; 800 * KIB])
        .await
        .expect("write body");
    // Its buffer (known length: 900 KiB at most) is held against the budget.
    door.wait_metric(held, (900 * KIB) as f64).await;

    // A second unsigned body does not fit: refused at once, not buffered.
    let mut second = webhook_head(&unsigned_headers(), 400 * KIB);
    second.extend_from_slice(&vec![b' '; 400 * KIB]);
    let reply = exchange(door.public, &second).await;
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert_eq!(door.metric(&deliveries("unverified", "busy")).await, 1.0);
    assert!(door.ingress.unverified_bytes() <= 1024 * KIB);

    // A genuine small delivery still fits in what is left.
    let reply = door.deliver(&ping()).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "pong"));

    // When the attacker goes away, its share comes back.
    drop(first);
    door.wait_metric(held, 0.0).await;
    assert_eq!(door.ingress.unverified_bytes(), 0);
}

#[tokio::test]
async fn every_refusal_is_counted() {
    let door = Door::start(Setup::default()).await;
    let good = ping();

    // 400: no event header (nothing read of the body).
    let headers: Vec<_> = unsigned_headers()
        .into_iter()
        .filter(|(n, _)| *n != "X-GitHub-Event")
        .collect();
    let mut request = webhook_head(&headers, 2);
    request.extend_from_slice(b"{}");
    assert_eq!(exchange(door.public, &request).await.status, 400);

    // 401: no signature, and a wrong one.
    let headers: Vec<_> = unsigned_headers()
        .into_iter()
        .filter(|(n, _)| *n != "X-Hub-Signature-256")
        .collect();
    let mut request = webhook_head(&headers, 2);
    request.extend_from_slice(b"{}");
    assert_eq!(exchange(door.public, &request).await.status, 401);
    let mut request = webhook_head(&unsigned_headers(), 2);
    request.extend_from_slice(b"{}");
    assert_eq!(exchange(door.public, &request).await.status, 401);

    // 413: a chunked body that turns out over the cap (no length announced).
    let mut request = String::from(
        "POST /webhook HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Transfer-Encoding: chunked\r\n",
    );
    for (name, value) in unsigned_headers() {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(door.public).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("head");
    let chunk = vec![b' '; 1024 * 1024];
    let mut answer = Vec::new();
    let sent = async {
        for _ in 0..=MAX_BODY_BYTES / chunk.len() {
            let size = format!("{:x}\r\n", chunk.len());
            let ok = stream.write_all(size.as_bytes()).await.is_ok()
                && stream.write_all(&chunk).await.is_ok()
                && stream.write_all(b"\r\n").await.is_ok();
            if !ok {
                break; // refused and closed before the end
            }
        }
        answer = read_to_close(&mut stream).await;
    };
    tokio::time::timeout(WAIT, sent)
        .await
        .expect("answered in time");
    assert_eq!(front_door::parse_reply(&answer).status, 413);

    // 202: signed but unparseable.
    let broken = Delivery::from_body("issues", b"not json".to_vec(), SECRET);
    assert_eq!(door.deliver(&broken).await.status, 202);
    // 200, then 200 again as a duplicate.
    assert_eq!(door.deliver(&good).await.status, 200);
    assert_eq!(door.deliver(&good).await.status, 200);

    let metrics = get(door.internal, "/metrics").await.body;
    for (event, outcome, want) in [
        ("unverified", "bad_request", 1.0),
        ("unverified", "unauthorized", 2.0),
        ("unverified", "too_large", 1.0),
        ("issues", "unparseable", 1.0),
        ("ping", "ping", 1.0),
        ("ping", "duplicate", 1.0),
    ] {
        assert_eq!(
            front_door::metric_value(&metrics, &deliveries(event, outcome)),
            want,
            "{event} {outcome}:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_connection_buffers_at_most_16_kib_while_bodies_stream_through() {
    use countersign_bot::listener::READ_BUFFER_MAX;
    let door = Door::start(Setup::default()).await;
    // A request head larger than the read buffer cannot be read: 431, not a buffer grown to
    // fit it (hyper's default would have taken up to about 400 KiB).
    let pad = "x".repeat(READ_BUFFER_MAX + 1024);
    let mut headers: Vec<(&str, &str)> = unsigned_headers();
    headers.push(("X-Padding", pad.as_str()));
    let reply = exchange(door.public, &webhook_head(&headers, 0)).await;
    assert_eq!(reply.status, 431, "{reply:?}");

    // A signed body 40 times the buffer still streams through it whole and verifies.
    let big = Delivery::from_payload(
        "ping",
        &serde_json::json!({"zen": "z".repeat(40 * READ_BUFFER_MAX), "hook_id": 1}),
        SECRET,
    )
    .expect("delivery");
    let reply = door.deliver(&big).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "pong"));
}
