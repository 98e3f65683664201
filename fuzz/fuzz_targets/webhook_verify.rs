//! `Verifier::verify` with untrusted headers and bodies. Input: a secret, a newline, a
//! candidate `X-Hub-Signature-256` header, a newline, then the body. The true signature is
//! accepted, the candidate only if it is the true signature, and a body with one byte
//! changed is refused.
#![no_main]

use countersign_webhooks::github::signature::{SignatureError, Verifier, sign};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let secret = parts.next().unwrap_or_default();
    let header = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let verifier = Verifier::new([b"other-secret".as_slice(), secret]);
    let good = sign(secret, body);
    let expected = if secret == b"other-secret" { 0 } else { 1 };
    assert_eq!(
        verifier.verify(Some(good.as_bytes()), false, body),
        Ok(expected)
    );
    match verifier.verify(Some(header), false, body) {
        Ok(_) => assert!(
            header == good.as_bytes() || header == sign(b"other-secret", body).as_bytes(),
            "a forged signature was accepted"
        ),
        Err(SignatureError::Missing | SignatureError::Sha1Only) => {
            panic!("a present header is never reported missing")
        }
        Err(_) => {}
    }
    if !body.is_empty() {
        let mut changed = body.to_vec();
        let at = usize::from(header.first().copied().unwrap_or(0)) % changed.len();
        changed[at] ^= 1;
        assert_eq!(
            verifier.verify(Some(good.as_bytes()), false, &changed),
            Err(SignatureError::Mismatch),
            "a changed body keeps its signature"
        );
    }
});
