//! The credentials a request presents in `Authorization`, parsed once for the REST API and
//! git smart-HTTP alike.
//!
//! GitHub takes an installation token after `token` or `Bearer`, or as the password of HTTP
//! Basic (any user name; git clients send `x-access-token`); App JWTs only after `Bearer`.

use axum::http::{HeaderMap, header};

/// What an `Authorization` header carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Credential {
    /// `Bearer <jwt-or-token>`.
    Bearer(String),
    /// `token <token>`.
    Token(String),
    /// `Basic base64(user:password)`.
    Basic {
        /// The user name (ignored by GitHub for installation tokens).
        user: String,
        /// The password: an installation token.
        password: String,
    },
}

impl Credential {
    /// The token this credential presents (a JWT for `Bearer` until proven otherwise).
    pub(super) fn token(&self) -> &str {
        match self {
            Self::Bearer(t) | Self::Token(t) => t,
            Self::Basic { password, .. } => password,
        }
    }
}

/// The request's credential: `None` without an `Authorization` header, `Err` with a reason
/// when the header cannot be read.
pub(super) fn presented(headers: &HeaderMap) -> Option<Result<Credential, String>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let Ok(value) = value.to_str() else {
        return Some(Err("Authorization is not ASCII".into()));
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    let parsed = if scheme.eq_ignore_ascii_case("bearer") {
        Ok(Credential::Bearer(rest.to_owned()))
    } else if scheme.eq_ignore_ascii_case("token") {
        Ok(Credential::Token(rest.to_owned()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        decode_base64(rest)
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(user, password)| Credential::Basic {
                        user: user.to_owned(),
                        password: password.to_owned(),
                    })
            })
            .ok_or_else(|| "malformed Basic credentials".to_owned())
    } else {
        Err("unknown Authorization scheme".to_owned())
    };
    Some(parsed)
}

/// Standard base64 (with or without padding); `None` for anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn sextet(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let data = text.trim_end_matches('=').as_bytes();
    if data.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut n = 0_u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= sextet(*c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        headers
    }

    #[test]
    fn basic_credentials_decode_with_and_without_padding() {
        // base64("x-access-token:ghs_abc") and base64("a:b") (unpadded "YTpi").
        assert_eq!(
            presented(&with("Basic eC1hY2Nlc3MtdG9rZW46Z2hzX2FiYw==")),
            Some(Ok(Credential::Basic {
                user: "x-access-token".into(),
                password: "ghs_abc".into()
            }))
        );
        assert_eq!(
            presented(&with("basic YTpi"))
                .and_then(Result::ok)
                .map(|c| c.token().to_owned()),
            Some("b".to_owned())
        );
        assert!(matches!(presented(&with("Basic !!!")), Some(Err(_))));
        assert!(
            matches!(presented(&with("Basic YWJj")), Some(Err(_))),
            "no colon"
        );
    }

    #[test]
    fn token_and_bearer_schemes_are_told_apart() {
        assert_eq!(
            presented(&with("token ghs_1")),
            Some(Ok(Credential::Token("ghs_1".into())))
        );
        assert_eq!(
            presented(&with("Bearer eyJ")),
            Some(Ok(Credential::Bearer("eyJ".into())))
        );
        assert!(matches!(presented(&with("Digest x")), Some(Err(_))));
        assert_eq!(presented(&HeaderMap::new()), None);
    }
}
