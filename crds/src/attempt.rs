//! What identifies an attempt's pod to the controller and to the provider gateway: the
//! labels the controller puts on it, and the annotation that registers the attempt's gateway
//! token. The gateway trusts a token only through a pod owned by an AgentRun that carries
//! these; the controller is the only writer of such pods.

/// Label naming the run a child (Pod, Secret, NetworkPolicy) belongs to.
pub const RUN_LABEL: &str = "countersign.dev/run";
/// Label with the attempt number of a child.
pub const ATTEMPT_LABEL: &str = "countersign.dev/attempt";
/// Label with the provider entry (`Agent.spec.providers[].name`) an attempt starts on.
pub const PROVIDER_LABEL: &str = "countersign.dev/provider";
/// `app.kubernetes.io/name` of agent pods; the gateway watches pods with it.
pub const AGENT_POD_APP: &str = "countersign-agent";
/// Annotation on an attempt's pod: the SHA-256 (lower-case hex) of the attempt's gateway
/// token. The gateway accepts a token whose hash a live attempt pod carries; the token itself
/// is only in the attempt's Secret, mounted into the `work` step.
pub const GATEWAY_TOKEN_HASH_ANNOTATION: &str = "countersign.dev/gateway-token-sha256";
/// Prefix of gateway tokens, so secret scanners and people recognise them.
pub const GATEWAY_TOKEN_PREFIX: &str = "csgw_";
/// Header an agent may send to say which attempt it works for (`<namespace>/<run>/<n>`);
/// the gateway refuses a token presented for another attempt.
pub const ATTEMPT_HEADER: &str = "x-countersign-attempt";

/// `<namespace>/<run>/<attempt>`: how an attempt is named in the gateway's header, its
/// logs and the usage ledger.
pub fn attempt_key(namespace: &str, run: &str, attempt: u32) -> String {
    format!("{namespace}/{run}/{attempt}")
}

/// A gateway token from 32 random bytes: [`GATEWAY_TOKEN_PREFIX`] and their base64url
/// encoding without padding (43 characters).
pub fn gateway_token_from(random: &[u8; 32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(GATEWAY_TOKEN_PREFIX.len() + 43);
    out.push_str(GATEWAY_TOKEN_PREFIX);
    for chunk in random.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = 1 + chunk.len();
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Whether `token` has the shape of a gateway token (prefix and 43 base64url characters).
pub fn is_gateway_token(token: &str) -> bool {
    token
        .strip_prefix(GATEWAY_TOKEN_PREFIX)
        .is_some_and(|rest| {
            rest.len() == 43
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_tokens_have_one_shape() {
        assert!(is_gateway_token(&format!("csgw_{}", "a".repeat(43))));
        assert!(!is_gateway_token(&format!("csgw_{}", "a".repeat(42))));
        assert!(!is_gateway_token(&format!("ghs_{}", "a".repeat(43))));
        assert!(!is_gateway_token(&format!("csgw_{}", "=".repeat(43))));
        assert_eq!(attempt_key("team", "fix-1", 2), "team/fix-1/2");
        let token = gateway_token_from(&[0xff; 32]);
        assert!(is_gateway_token(&token), "{token}");
        assert!(token.ends_with("__8"), "{token}");
        assert_ne!(gateway_token_from(&[0; 32]), gateway_token_from(&[1; 32]));
    }
}
