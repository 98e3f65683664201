//! `X-Hub-Signature-256` verification.
//!
//! GitHub signs the raw body with HMAC-SHA256 and sends `sha256=<64 lower-case hex>`. Several
//! secrets may be live at once so they can be rotated without losing deliveries; each is tried
//! with a constant-time comparison (ring's `hmac::verify`). The legacy SHA-1 header is never
//! accepted, and a malformed header is rejected with a short reason, never a panic.

use ring::hmac;

/// The header GitHub puts the signature in.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Why a delivery's signature was refused. Safe to show the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header.
    #[error("missing X-Hub-Signature-256 header")]
    Missing,
    /// The header is not `sha256=` followed by 64 lower-case hex digits.
    #[error("malformed X-Hub-Signature-256 header")]
    Malformed,
    /// Only a SHA-1 signature was sent; it is too weak to accept.
    #[error("sha1 signatures are not accepted; configure the webhook to send X-Hub-Signature-256")]
    Sha1Only,
    /// No configured secret produces this signature.
    #[error("signature does not match")]
    Mismatch,
}

/// The configured webhook secrets, ready for verification.
pub struct Verifier {
    /// Replaced whole when the secret files change ([`Verifier::replace`]); a request works
    /// on the set it read, without holding the lock while it computes.
    keys: std::sync::RwLock<std::sync::Arc<Vec<hmac::Key>>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("secrets", &self.current().len())
            .finish()
    }
}

impl Verifier {
    /// A verifier accepting signatures made with any of `secrets` (current and previous).
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Self {
        Self {
            keys: std::sync::RwLock::new(std::sync::Arc::new(keys(secrets))),
        }
    }

    /// Accepts `secrets` from now on instead of the previous set (secret files reloaded).
    pub fn replace<S: AsRef<[u8]>>(&self, secrets: impl IntoIterator<Item = S>) {
        let keys = std::sync::Arc::new(keys(secrets));
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    fn current(&self) -> std::sync::Arc<Vec<hmac::Key>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Checks `header` (the `X-Hub-Signature-256` value, if any) against `body`. `sha1` says
    /// whether the legacy `X-Hub-Signature` header was present, for a clearer refusal.
    /// Returns the index of the secret that matched.
    pub fn verify(
        &self,
        header: Option<&[u8]>,
        sha1: bool,
        body: &[u8],
    ) -> Result<usize, SignatureError> {
        let header = match header {
            Some(h) => h,
            None if sha1 => return Err(SignatureError::Sha1Only),
            None => return Err(SignatureError::Missing),
        };
        let hex = header
            .strip_prefix(b"sha256=")
            .ok_or(SignatureError::Malformed)?;
        let tag = decode_hex(hex).ok_or(SignatureError::Malformed)?;
        self.current()
            .iter()
            .position(|key| hmac::verify(key, body, &tag).is_ok())
            .ok_or(SignatureError::Mismatch)
    }
}

fn keys<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Vec<hmac::Key> {
    secrets
        .into_iter()
        .map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_ref()))
        .collect()
}

/// Decodes exactly 64 lower-case hex digits (GitHub never sends upper case).
fn decode_hex(hex: &[u8]) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// Signs `body` with `secret` the way GitHub does (for tests and `countersign replay`).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), body);
    let mut out = String::with_capacity(71);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"action":"labeled","issue":{"number":42}}"#;

    #[test]
    fn a_known_vector_matches() {
        // From GitHub's documentation on validating deliveries.
        let sig = sign(b"It's a Secret to Everybody", b"Hello, World!");
        assert_eq!(
            sig,
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }

    #[test]
    fn any_live_secret_is_accepted() {
        let verifier = Verifier::new(["new-secret", "old-secret"]);
        let old = sign(b"old-secret", BODY);
        assert_eq!(verifier.verify(Some(old.as_bytes()), false, BODY), Ok(1));
        let new = sign(b"new-secret", BODY);
        assert_eq!(verifier.verify(Some(new.as_bytes()), false, BODY), Ok(0));
    }

    #[test]
    fn attacks_are_refused_with_a_reason() {
        let verifier = Verifier::new(["s3cret"]);
        let rotated = Verifier::new(["old"]);
        rotated.replace(["new"]);
        assert_eq!(
            rotated.verify(Some(sign(b"new", BODY).as_bytes()), false, BODY),
            Ok(0)
        );
        assert_eq!(
            rotated.verify(Some(sign(b"old", BODY).as_bytes()), false, BODY),
            Err(SignatureError::Mismatch),
            "a replaced secret is no longer accepted"
        );
        let good = sign(b"s3cret", BODY);
        let mut flipped = BODY.to_vec();
        flipped[5] ^= 1;
        assert_eq!(
            verifier.verify(Some(good.as_bytes()), false, &flipped),
            Err(SignatureError::Mismatch)
        );
        let wrong = sign(b"guess", BODY);
        assert_eq!(
            verifier.verify(Some(wrong.as_bytes()), false, BODY),
            Err(SignatureError::Mismatch)
        );
        for bad in [
            &good[..good.len() - 2],
            "",
            "sha256=",
            &good.to_uppercase(),
            &good.replace("sha256=", "sha1="),
        ] {
            assert_eq!(
                verifier.verify(Some(bad.as_bytes()), false, BODY),
                Err(SignatureError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            verifier.verify(None, false, BODY),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verifier.verify(None, true, BODY),
            Err(SignatureError::Sha1Only)
        );
        assert_eq!(
            Verifier::new(Vec::<String>::new()).verify(Some(good.as_bytes()), false, BODY),
            Err(SignatureError::Mismatch)
        );
    }
}
