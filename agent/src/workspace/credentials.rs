//! Handing the repository token to libgit2: only through the credentials callback, only
//! for the clone URL's own host, at most [`MAX_CREDENTIAL_TRIES`] times; and keeping it out
//! of every error message.

use std::cell::Cell;

use git2::{Cred, CredentialType, ErrorClass, ErrorCode, RemoteCallbacks};
use secrecy::{ExposeSecret, SecretString};

use super::{GitError, WorkspaceError};

/// The user name GitHub expects with an installation token over HTTPS.
const TOKEN_USER: &str = "x-access-token";

/// How often libgit2 may ask for credentials in one operation. It asks again after every
/// 401 and would loop forever on a token the server refuses.
const MAX_CREDENTIAL_TRIES: u32 = 2;

/// Hands libgit2 the token for the clone URL's host only, at most
/// [`MAX_CREDENTIAL_TRIES`] times, and turns its errors into [`WorkspaceError`]s.
pub(super) struct Credentials<'a> {
    token: &'a SecretString,
    origin: String,
    url: String,
    tries: Cell<u32>,
    refused: Cell<bool>,
    foreign_host: Cell<bool>,
}

impl<'a> Credentials<'a> {
    pub(super) fn new(clone_url: &str, token: &'a SecretString) -> Self {
        Self {
            token,
            origin: origin(clone_url),
            url: redact_url(clone_url),
            tries: Cell::new(0),
            refused: Cell::new(false),
            foreign_host: Cell::new(false),
        }
    }

    pub(super) fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(|url, _username, allowed| {
            if origin(url) != self.origin {
                self.foreign_host.set(true);
                return Err(git2::Error::from_str(&format!(
                    "refusing to send the repository token to {}",
                    redact_url(url)
                )));
            }
            if !allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                return Err(git2::Error::from_str(
                    "the server asks for credentials other than a token",
                ));
            }
            let tries = self.tries.get() + 1;
            self.tries.set(tries);
            if tries > MAX_CREDENTIAL_TRIES {
                self.refused.set(true);
                return Err(git2::Error::from_str(&format!(
                    "authentication failed: the token was refused {MAX_CREDENTIAL_TRIES} times"
                )));
            }
            Cred::userpass_plaintext(TOKEN_USER, self.token.expose_secret())
        });
        callbacks
    }

    /// The error for `e`, which happened during `action` on `what`.
    pub(super) fn classify(&self, e: &git2::Error, action: &str, what: String) -> WorkspaceError {
        let source = GitError::scrubbed(e, Some(self.token));
        let status = |code: &str| e.class() == ErrorClass::Http && e.message().contains(code);
        if self.foreign_host.get() {
            WorkspaceError::Unsafe(format!(
                "refusing to send the repository token for {} to another host: {source}",
                self.url
            ))
        } else if self.refused.get()
            || e.code() == ErrorCode::Auth
            || status("401")
            || status("403")
        {
            WorkspaceError::Auth {
                url: self.url.clone(),
                source,
            }
        } else if e.code() == ErrorCode::NotFound
            || status("404")
            // libgit2's local transport, for a file:// URL with nothing there.
            || (e.class() == ErrorClass::Os && e.message().starts_with("failed to resolve path"))
        {
            WorkspaceError::NotFound { what, source }
        } else if matches!(
            e.class(),
            ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssl | ErrorClass::Ssh
        ) {
            WorkspaceError::Network {
                url: self.url.clone(),
                source,
            }
        } else {
            WorkspaceError::Git {
                action: format!("{action} {}", self.url),
                source,
            }
        }
    }
}

pub(super) fn scrub(text: &str, token: &SecretString) -> String {
    let token = token.expose_secret();
    if token.is_empty() {
        text.to_owned()
    } else {
        text.replace(token, "***")
    }
}

/// `scheme://host[:port]` of a URL, lower-cased and without user information; empty for
/// a plain path.
fn origin(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return String::new();
    };
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    format!("{scheme}://{host}").to_ascii_lowercase()
}

/// `url` with any user information (`user:password@`) replaced by `***@`, for messages.
pub(super) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[authority_end..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port_only() {
        assert_eq!(
            origin("https://x-access-token:abc@GitHub.com/acme/api.git"),
            "https://github.com"
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/acme/api.git/info/refs?service=git-upload-pack"),
            "http://127.0.0.1:8080"
        );
        assert_ne!(
            origin("https://github.com.attacker.example/acme/api.git"),
            origin("https://github.com/acme/api.git")
        );
        assert_eq!(origin("/srv/git/api.git"), "");
    }

    #[test]
    fn urls_in_messages_carry_no_credentials() {
        assert_eq!(
            redact_url("https://user:secret@github.com/acme/api.git"),
            "https://***@github.com/acme/api.git"
        );
        assert_eq!(
            redact_url("https://github.com/acme/api.git"),
            "https://github.com/acme/api.git"
        );
        let token = SecretString::from("ghs_abc");
        assert_eq!(
            scrub("bad token ghs_abc here", &token),
            "bad token *** here"
        );
    }
}
