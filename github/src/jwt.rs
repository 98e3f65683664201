//! The App's own identity: RS256 JWTs signed with the App's private key, as GitHub requires
//! for `/app/...` endpoints. Pure apart from the signing; "now" is passed in.

use octocrab::jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde::{Deserialize, Serialize};

use super::GitHubError;

/// How far back `iat` is set, to absorb clock skew between us and GitHub.
pub const JWT_CLOCK_SKEW_SECS: i64 = 60;
/// How long a JWT is valid after "now" (GitHub refuses more than 10 minutes).
pub const JWT_LIFETIME_SECS: i64 = 9 * 60;
/// How long before expiry a cached JWT is re-minted.
pub const JWT_REFRESH_MARGIN_SECS: i64 = 60;

/// The claims GitHub reads from an App JWT.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppClaims {
    /// The App id, as a string (GitHub accepts both; the string form is documented).
    pub iss: String,
    /// Issued at, seconds since the epoch (backdated by the clock skew).
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
}

impl AppClaims {
    /// The claims for a JWT minted at `now_secs`.
    pub fn at(app_id: u64, now_secs: i64) -> Self {
        Self {
            iss: app_id.to_string(),
            iat: now_secs - JWT_CLOCK_SKEW_SECS,
            exp: now_secs + JWT_LIFETIME_SECS,
        }
    }

    /// Whether a JWT with these claims should be replaced at `now_secs`.
    pub fn needs_refresh(&self, now_secs: i64) -> bool {
        now_secs >= self.exp - JWT_REFRESH_MARGIN_SECS
    }
}

/// Parses the App's private key (PEM, PKCS#1 or PKCS#8).
pub fn parse_key(pem: &str) -> Result<EncodingKey, GitHubError> {
    EncodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|e| GitHubError::Config(format!("the App private key is not an RSA PEM key: {e}")))
}

/// Signs `claims` with `key` (RS256).
pub fn sign(claims: &AppClaims, key: &EncodingKey) -> Result<String, GitHubError> {
    encode(&Header::new(Algorithm::RS256), claims, key)
        .map_err(|e| GitHubError::Config(format!("cannot sign the App JWT: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use octocrab::jsonwebtoken::{DecodingKey, Validation, decode};

    const PRIVATE: &str = include_str!("../../tests/testkit/data/test-app-private-key.pem");
    const PUBLIC: &str = include_str!("../../tests/testkit/data/test-app-public-key.pem");

    #[test]
    fn jwt_carries_iss_iat_exp_and_verifies_with_the_public_key() {
        let now = 1_800_000_000;
        let key = parse_key(PRIVATE).expect("test key parses");
        let jwt = sign(&AppClaims::at(4242, now), &key).expect("signs");
        let decoding = DecodingKey::from_rsa_pem(PUBLIC.as_bytes()).expect("public key parses");
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let decoded = decode::<AppClaims>(&jwt, &decoding, &validation).expect("verifies");
        assert_eq!(decoded.claims.iss, "4242");
        assert_eq!(decoded.claims.iat, now - 60);
        assert_eq!(decoded.claims.exp, now + 540);
        assert_eq!(decoded.header.alg, Algorithm::RS256);
    }

    #[test]
    fn refresh_a_minute_before_expiry() {
        let claims = AppClaims::at(1, 1000);
        assert!(!claims.needs_refresh(1000 + 479));
        assert!(claims.needs_refresh(1000 + 480));
    }

    #[test]
    fn garbage_key_is_a_config_error() {
        assert!(matches!(
            parse_key("not a key"),
            Err(GitHubError::Config(_))
        ));
    }
}
