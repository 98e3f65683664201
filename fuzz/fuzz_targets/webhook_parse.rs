//! `parse(event, body)` on untrusted delivery bodies. Input: the `X-GitHub-Event` name, a
//! newline, then the body (the seeds are `@octokit/webhooks-examples` payloads in that form).
//! Never panics; an accepted event survives a second parse of the same bytes unchanged.
#![no_main]

use countersign_webhooks::github::parse::{Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (event, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"issues"[..], data),
    };
    let Ok(event) = std::str::from_utf8(event) else {
        return;
    };
    let first = parse(event, body);
    if let Ok(parsed) = &first {
        assert_eq!(
            parse(event, body).ok().as_ref(),
            Some(parsed),
            "parsing is deterministic"
        );
        if let Parsed::Unsupported { event: name, .. } = parsed {
            assert_eq!(name, event);
        }
    }
});
