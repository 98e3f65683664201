use std::collections::VecDeque;

use super::*;

fn rate_limited(retry_after: Option<u64>) -> Failure {
    Failure::RateLimited {
        message: "HTTP 429: slow down".into(),
        retry_after: retry_after.map(Duration::from_secs),
    }
}

fn unavailable() -> Failure {
    Failure::Unavailable {
        message: "HTTP 503: busy".into(),
        retry_after: None,
        timed_out: false,
    }
}

/// Runs `with_retries` over scripted attempt results; returns the result, the number of
/// attempts and the recorded sleeps.
fn run(
    retries: u32,
    deadline: Instant,
    script: Vec<Result<&'static str, Failure>>,
) -> (Result<&'static str, ProviderError>, usize, Vec<Duration>) {
    let mut script: VecDeque<_> = script.into();
    let mut sleeps = Vec::new();
    let mut attempts = 0;
    let result = with_retries(retries, deadline, &mut |d| sleeps.push(d), |_timeout| {
        attempts += 1;
        script.pop_front().expect("the script covers every attempt")
    });
    (result, attempts, sleeps)
}

fn in_an_hour() -> Instant {
    Instant::now() + Duration::from_secs(3600)
}

#[test]
fn statuses_map_to_provider_errors() {
    let body = r#"{"error": {"message": "Invalid model: gpt-9", "type": "invalid_request_error"}}"#;
    assert_eq!(
        classify_status(400, None, body),
        Failure::Refused("HTTP 400: Invalid model: gpt-9".into())
    );
    for status in [401, 403, 404, 422] {
        assert!(
            matches!(classify_status(status, None, "{}"), Failure::Refused(_)),
            "{status}"
        );
    }
    assert_eq!(
        classify_status(429, Some(Duration::from_secs(3)), "Too Many Requests"),
        Failure::RateLimited {
            message: "HTTP 429: Too Many Requests".into(),
            retry_after: Some(Duration::from_secs(3))
        }
    );
    let overloaded =
        r#"{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}"#;
    assert_eq!(
        classify_status(529, None, overloaded),
        Failure::Unavailable {
            message: "HTTP 529: Overloaded".into(),
            retry_after: None,
            timed_out: false
        }
    );
    for status in [408, 500, 502, 503, 504] {
        assert!(
            matches!(
                classify_status(status, None, ""),
                Failure::Unavailable { .. }
            ),
            "{status}"
        );
    }
    let long = "x".repeat(5000);
    let Failure::Refused(message) = classify_status(400, None, &long) else {
        panic!("refused")
    };
    assert!(message.len() < 600);
}

#[test]
fn retries_honour_retry_after_including_zero() {
    let (result, attempts, sleeps) = run(
        2,
        in_an_hour(),
        vec![
            Err(rate_limited(Some(0))),
            Err(rate_limited(Some(7))),
            Ok("answer"),
        ],
    );
    assert_eq!(result.expect("succeeds"), "answer");
    assert_eq!(attempts, 3);
    assert_eq!(sleeps, [Duration::ZERO, Duration::from_secs(7)]);
}

#[test]
fn retries_back_off_exponentially_and_give_up() {
    let (result, attempts, sleeps) = run(3, in_an_hour(), vec![Err(unavailable()); 4]);
    assert!(matches!(result, Err(ProviderError::Unavailable(m)) if m == "HTTP 503: busy"));
    assert_eq!(attempts, 4);
    assert_eq!(sleeps, [1, 2, 4].map(Duration::from_secs));
    assert_eq!(backoff(4), Duration::from_secs(16));
    assert_eq!(backoff(5), BACKOFF_CAP);
    assert_eq!(backoff(40), BACKOFF_CAP);
}

#[test]
fn zero_retries_means_one_attempt() {
    let (result, attempts, sleeps) = run(0, in_an_hour(), vec![Err(rate_limited(Some(0)))]);
    assert!(matches!(result, Err(ProviderError::RateLimited(m)) if m == "HTTP 429: slow down"));
    assert_eq!((attempts, sleeps.len()), (1, 0));
}

#[test]
fn refusals_and_bad_answers_are_not_retried() {
    let (result, attempts, _) = run(
        5,
        in_an_hour(),
        vec![Err(Failure::Refused("HTTP 401: no".into()))],
    );
    assert!(matches!(result, Err(ProviderError::Refused(_))));
    assert_eq!(attempts, 1);
    let (result, attempts, _) = run(
        5,
        in_an_hour(),
        vec![Err(Failure::BadResponse("garbage".into()))],
    );
    assert!(matches!(result, Err(ProviderError::BadResponse(_))));
    assert_eq!(attempts, 1);
}

#[test]
fn never_sleeps_past_the_deadline() {
    let deadline = Instant::now() + Duration::from_secs(5);
    let (result, attempts, sleeps) = run(3, deadline, vec![Err(rate_limited(Some(60)))]);
    assert!(matches!(result, Err(ProviderError::RateLimited(_))));
    assert_eq!((attempts, sleeps.len()), (1, 0));
    // A deadline already passed: no attempt at all.
    let (result, attempts, _) = run(3, Instant::now(), vec![]);
    assert!(matches!(
        result,
        Err(ProviderError::OutOfBudget(Limit::Time))
    ));
    assert_eq!(attempts, 0);
}

#[test]
fn a_timeout_at_the_deadline_is_out_of_time() {
    let deadline = Instant::now() + Duration::from_millis(20);
    let mut timeouts = Vec::new();
    let result: Result<(), _> = with_retries(3, deadline, &mut |_| {}, |timeout| {
        timeouts.push(timeout);
        std::thread::sleep(timeout);
        Err(Failure::Unavailable {
            message: "timed out".into(),
            retry_after: None,
            timed_out: true,
        })
    });
    assert!(matches!(
        result,
        Err(ProviderError::OutOfBudget(Limit::Time))
    ));
    assert_eq!(timeouts.len(), 1);
    assert!(timeouts[0] <= Duration::from_millis(20));
}

#[test]
fn retry_after_headers_are_read() {
    let headers = |pairs: &[(&'static str, &'static str)]| {
        let mut map = ureq::http::HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, ureq::http::HeaderValue::from_static(value));
        }
        map
    };
    assert_eq!(
        retry_after(&headers(&[("retry-after", "0")])),
        Some(Duration::ZERO)
    );
    assert_eq!(
        retry_after(&headers(&[("retry-after", "12")])),
        Some(Duration::from_secs(12))
    );
    assert_eq!(
        retry_after(&headers(&[
            ("retry-after", "12"),
            ("retry-after-ms", "1500")
        ])),
        Some(Duration::from_millis(1500))
    );
    assert_eq!(
        retry_after(&headers(&[(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT"
        )])),
        None
    );
    assert_eq!(retry_after(&headers(&[("retry-after", "-3")])), None);
    assert_eq!(retry_after(&headers(&[])), None);
}

#[test]
fn errors_never_carry_the_api_key() {
    assert_eq!(
        redact(
            "Incorrect API key provided: sk-live-123456. See docs.",
            Some("sk-live-123456")
        ),
        "Incorrect API key provided: [redacted]. See docs."
    );
    assert_eq!(
        redact(
            "Incorrect API key provided: sk-proj-********************abcd.",
            None
        ),
        "Incorrect API key provided: [redacted]."
    );
    assert_eq!(
        redact("key \"ant-secret-key\" rejected", Some("ant-secret-key")),
        "key \"[redacted]\" rejected"
    );
    assert_eq!(redact("plain message", Some("")), "plain message");
    let client = HttpClient::new(
        Auth::Header("x-api-key", SecretString::from("ant-secret-key")),
        0,
    );
    let scrubbed = client.scrub(Failure::Refused("HTTP 401: bad key ant-secret-key".into()));
    assert_eq!(
        scrubbed,
        Failure::Refused("HTTP 401: bad key [redacted]".into())
    );
}

#[test]
fn tool_arguments_parse_or_explain() {
    let call = |arguments: &str| ToolCall {
        id: "call_1".into(),
        name: "read_file".into(),
        arguments: arguments.into(),
    };
    assert_eq!(
        call(r#"{"path": "a.rs"}"#).parsed_arguments(),
        Ok(serde_json::json!({"path": "a.rs"}))
    );
    assert_eq!(call("  ").parsed_arguments(), Ok(serde_json::json!({})));
    let invalid = call(r#"{"path": "a.rs""#)
        .parsed_arguments()
        .expect_err("invalid");
    assert!(
        invalid.starts_with("the tool arguments are not valid JSON"),
        "{invalid}"
    );
    assert_eq!(
        call("[1]").parsed_arguments(),
        Err("the tool arguments must be a JSON object".to_owned())
    );
}

#[test]
fn missing_usage_is_estimated() {
    let mut reply = Reply {
        text: "abcdefgh".into(),
        ..Reply::default()
    };
    estimate_missing_usage(
        &mut reply,
        &serde_json::json!({"messages": "x".repeat(398)}),
    );
    assert_eq!((reply.input_tokens, reply.output_tokens), (104, 2));
    let mut counted = Reply {
        input_tokens: 5,
        ..Reply::default()
    };
    estimate_missing_usage(&mut counted, &serde_json::json!({}));
    assert_eq!((counted.input_tokens, counted.output_tokens), (5, 0));
}
