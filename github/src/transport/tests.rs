use super::*;
use crate::installation::seg;
use crate::{AppConfig, GitHubApp};
use http::HeaderValue;
use secrecy::SecretString;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, HeaderValue::from_str(v).expect("ascii"));
    }
    h
}

#[test]
fn retry_after_wins() {
    let wait = rate_limit_wait(
        StatusCode::FORBIDDEN,
        &headers(&[("retry-after", "7")]),
        "You have exceeded a secondary rate limit",
        Timestamp::now(),
    );
    assert_eq!(wait, Some(Duration::from_secs(7)));
}

#[test]
fn primary_limit_waits_for_the_reset() {
    let now = Timestamp::from_second(1_800_000_000).expect("valid");
    let h = headers(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1800000042"),
    ]);
    assert_eq!(
        rate_limit_wait(StatusCode::FORBIDDEN, &h, "API rate limit exceeded", now),
        Some(Duration::from_secs(42))
    );
    // A reset in the past still waits a second rather than spinning.
    let past = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1")]);
    assert_eq!(
        rate_limit_wait(StatusCode::FORBIDDEN, &past, "", now),
        Some(Duration::from_secs(1))
    );
}

#[test]
fn secondary_limit_without_retry_after_waits_a_minute() {
    let wait = rate_limit_wait(
        StatusCode::FORBIDDEN,
        &HeaderMap::new(),
        "You have exceeded a secondary rate limit. Please wait.",
        Timestamp::now(),
    );
    assert_eq!(wait, Some(SECONDARY_LIMIT_WAIT));
    assert_eq!(
        rate_limit_wait(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            "",
            Timestamp::now()
        ),
        Some(SECONDARY_LIMIT_WAIT)
    );
}

#[test]
fn a_plain_forbidden_is_not_a_rate_limit() {
    let wait = rate_limit_wait(
        StatusCode::FORBIDDEN,
        &headers(&[("x-ratelimit-remaining", "4999")]),
        "Resource not accessible by integration",
        Timestamp::now(),
    );
    assert_eq!(wait, None);
    assert_eq!(
        rate_limit_wait(
            StatusCode::BAD_GATEWAY,
            &headers(&[("retry-after", "1")]),
            "",
            Timestamp::now()
        ),
        None
    );
}

#[test]
fn path_segments_are_escaped() {
    assert_eq!(seg("octo-org"), "octo-org");
    assert_eq!(seg("a/b"), "a%2Fb");
    assert_eq!(seg("a b"), "a%20b");
    assert_eq!(seg("bot[bot]"), "bot%5Bbot%5D");
}

#[test]
fn backoff_doubles() {
    assert_eq!(backoff(0), FIRST_BACKOFF);
    assert_eq!(backoff(1), FIRST_BACKOFF * 2);
    assert_eq!(backoff(3), FIRST_BACKOFF * 8);
}

#[tokio::test]
async fn unusable_configuration_is_refused() {
    let config = |pem: &str, url: &str| AppConfig {
        app_id: 1,
        private_key_pem: SecretString::from(pem.to_owned()),
        base_url: url.to_owned(),
        request_timeout: Duration::from_secs(1),
        max_retries: 0,
        max_retry_wait: Duration::from_secs(1),
    };
    let key = include_str!("../../../tests/testkit/data/test-app-private-key.pem");
    assert!(matches!(
        GitHubApp::new(config("not a key", "https://api.github.com")),
        Err(GitHubError::Config(_))
    ));
    assert!(matches!(
        GitHubApp::new(config(key, "ftp://example")),
        Err(GitHubError::Config(_))
    ));
    assert!(matches!(
        GitHubApp::new(config(key, "not a url")),
        Err(GitHubError::Config(_))
    ));
    assert!(GitHubApp::new(config(key, "https://ghe.example/api/v3/")).is_ok());
}

#[test]
fn validation_errors_carry_their_own_messages() {
    // GitHub's answer to opening a second pull request for the same head.
    let body = br#"{"message":"Validation Failed","errors":[{"resource":"PullRequest","code":"custom","message":"A pull request already exists for acme:countersign/run-1."}],"documentation_url":"https://docs.github.com/rest/pulls/pulls#create-a-pull-request","status":"422"}"#;
    let failure = classify(
        StatusCode::UNPROCESSABLE_ENTITY,
        &HeaderMap::new(),
        body,
        &Method::POST,
        "https://api.github.com/repos/acme/api/pulls",
    );
    let Failure::Final(GitHubError::Status { status, message }) = failure else {
        panic!("a 422 is final");
    };
    assert_eq!(status, 422);
    assert!(
        message.ends_with(
            "Validation Failed (A pull request already exists for acme:countersign/run-1.)"
        ),
        "{message}"
    );
    let coded = br#"{"message":"Validation Failed","errors":[{"resource":"Label","code":"invalid","field":"name"}]}"#;
    let Failure::Final(GitHubError::Status { message, .. }) = classify(
        StatusCode::UNPROCESSABLE_ENTITY,
        &HeaderMap::new(),
        coded,
        &Method::POST,
        "u",
    ) else {
        panic!("final");
    };
    assert!(
        message.ends_with("Validation Failed (invalid)"),
        "{message}"
    );
}

#[test]
fn links_are_followed_only_under_the_api_root() {
    let ghes = "https://ghe.example.com/api/v3";
    assert_eq!(
        resolve(ghes, "/repos/o/r/pulls").expect("path"),
        "https://ghe.example.com/api/v3/repos/o/r/pulls"
    );
    let next = "https://ghe.example.com/api/v3/repositories/1/pulls?page=2";
    assert_eq!(resolve(ghes, next).expect("same root"), next);
    for elsewhere in [
        "https://evil.example.com/api/v3/x",
        "https://ghe.example.com.evil.example/api/v3/x",
        "https://ghe.example.com/api/v3evil/x",
        "http://ghe.example.com/api/v3/x",
    ] {
        assert!(
            matches!(resolve(ghes, elsewhere), Err(GitHubError::Decode(_))),
            "{elsewhere} must not get the App's credentials"
        );
    }
}

#[test]
fn a_304_keeps_the_remembered_link_unless_it_sends_its_own() {
    let next = r#"<https://api.github.com/repos/o/r/issues?page=2>; rel="next""#;
    let cached = Cached {
        etag: HeaderValue::from_static("\"abc\""),
        body: Bytes::from_static(b"[]"),
        link: Some(HeaderValue::from_static(next)),
    };
    let bare = not_modified_headers(headers(&[("etag", "\"abc\"")]), &cached);
    assert_eq!(
        bare.get(http::header::LINK).and_then(|v| v.to_str().ok()),
        Some(next)
    );
    let own = r#"<https://api.github.com/repos/o/r/issues?page=3>; rel="next""#;
    let fresh = not_modified_headers(headers(&[("link", own)]), &cached);
    assert_eq!(
        fresh.get(http::header::LINK).and_then(|v| v.to_str().ok()),
        Some(own)
    );
    let none = Cached {
        link: None,
        ..cached
    };
    assert!(
        not_modified_headers(HeaderMap::new(), &none)
            .get(http::header::LINK)
            .is_none()
    );
}

fn cached(body: &str) -> Cached {
    Cached {
        etag: HeaderValue::from_static("\"e\""),
        body: Bytes::copy_from_slice(body.as_bytes()),
        link: None,
    }
}

#[test]
fn remembered_answers_stay_within_their_budget_and_overflow_forgets_only_some() {
    let mut etags = Etags::default();
    let body = "x".repeat(1000);
    let one = Etags::size(
        "https://api.github.test/repos/a/b/pulls/0000",
        &cached(&body),
    );
    let budget = one * 100;
    for i in 0..100 {
        etags.insert_within(
            &format!("https://api.github.test/repos/a/b/pulls/{i:04}"),
            cached(&body),
            budget,
        );
    }
    assert_eq!(etags.len(), 100, "exactly the budget: all kept");
    assert!(etags.bytes <= budget);
    etags.insert_within(
        "https://api.github.test/repos/a/b/pulls/0100",
        cached(&body),
        budget,
    );
    assert!(etags.bytes <= budget / 10 * 9, "{} bytes", etags.bytes);
    assert!(
        (85..=91).contains(&etags.len()),
        "about a tenth forgotten, not everything: {} left",
        etags.len()
    );
    assert!(
        etags
            .get("https://api.github.test/repos/a/b/pulls/0100")
            .is_some(),
        "the answer just read is kept"
    );
    // Replacing an answer counts its size once.
    let before = etags.bytes;
    etags.insert_within(
        "https://api.github.test/repos/a/b/pulls/0100",
        cached(&body),
        budget,
    );
    assert_eq!(etags.bytes, before);
}

/// A one-file HTTP/1.1 server on 127.0.0.1:0: `/moved` redirects to `/big`, which answers a
/// JSON string of `size` bytes, both with `Connection: keep-alive`.
async fn big_answer_server(size: usize) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let body = format!("\"{}\"", "x".repeat(size - 2));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    head.clear();
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head);
                    let answer = if head.starts_with("GET /moved ") {
                        format!(
                            "HTTP/1.1 301 Moved Permanently\r\nLocation: http://{addr}/big\r\nContent-Length: 0\r\n\r\n"
                        )
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"v1\"\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn large_answers_arrive_whole_and_redirects_are_followed() {
    let size = 1024 * 1024;
    let addr = big_answer_server(size).await;
    let app = GitHubApp::new(AppConfig {
        app_id: 1,
        private_key_pem: SecretString::from(
            include_str!("../../../tests/testkit/data/test-app-private-key.pem").to_owned(),
        ),
        base_url: format!("http://{addr}"),
        request_timeout: Duration::from_secs(10),
        max_retries: 0,
        max_retry_wait: Duration::from_secs(1),
    })
    .expect("client");
    for _ in 0..2 {
        let answer = tokio::time::timeout(
            Duration::from_secs(30),
            app.send(Method::GET, "/moved", Auth::App, None),
        )
        .await
        .expect("answered in time")
        .expect("answered");
        assert_eq!(
            answer.body.len(),
            size,
            "the whole body, through the redirect"
        );
        assert!(
            answer
                .body
                .iter()
                .skip(1)
                .take(size - 2)
                .all(|b| *b == b'x')
        );
    }
}

#[test]
fn remembered_header_values_do_not_share_the_buffer_they_were_parsed_from() {
    // hyper hands out header values that are views into its read buffer; one kept in the
    // cache would keep that whole buffer alive.
    let buffer = Bytes::from(vec![b'"'; 64 * 1024]);
    let view = HeaderValue::from_maybe_shared(buffer.slice(0..8)).expect("a valid value");
    assert_eq!(
        view.as_bytes().as_ptr(),
        buffer.as_ptr(),
        "the test's premise: a view"
    );
    let kept = owned(&view);
    assert_eq!(kept, view);
    assert_ne!(
        kept.as_bytes().as_ptr(),
        buffer.as_ptr(),
        "a copy of its own"
    );
    let mut secret = HeaderValue::from_static("token");
    secret.set_sensitive(true);
    assert!(owned(&secret).is_sensitive());
}
