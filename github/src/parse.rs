//! Turning GitHub's strings and headers into types: permission levels, reaction contents and
//! `Link` pagination headers.

use serde::Deserialize;

use crate::{Permission, Reaction};

impl Permission {
    /// GitHub's role name for this level (`admin`, `maintain`, `write`, `triage`, `read`, `none`).
    pub fn role_name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Read => "read",
            Self::Triage => "triage",
            Self::Write => "write",
            Self::Maintain => "maintain",
            Self::Admin => "admin",
        }
    }

    /// Parses a role name or legacy permission string; unknown strings are `None`.
    pub fn from_role_name(name: &str) -> Option<Self> {
        Some(match name {
            "admin" => Self::Admin,
            "maintain" => Self::Maintain,
            "write" => Self::Write,
            "triage" => Self::Triage,
            "read" => Self::Read,
            "none" => Self::None,
            _ => return None,
        })
    }
}

/// The body of `GET /repos/{o}/{r}/collaborators/{login}/permission`.
#[derive(Debug, Deserialize)]
pub struct PermissionBody {
    /// Legacy permission (`admin`, `write`, `read`, `none`).
    #[serde(default)]
    pub permission: Option<String>,
    /// Fine-grained role (`admin`, `maintain`, `write`, `triage`, `read`, or a custom role).
    #[serde(default)]
    pub role_name: Option<String>,
}

/// The permission a collaborator-permission body grants: `role_name` when GitHub knows it,
/// else `permission`, else `None`.
pub fn parse_permission(body: &PermissionBody) -> Permission {
    body.role_name
        .as_deref()
        .and_then(Permission::from_role_name)
        .or_else(|| {
            body.permission
                .as_deref()
                .and_then(Permission::from_role_name)
        })
        .unwrap_or(Permission::None)
}

impl Reaction {
    /// GitHub's `content` string for this reaction.
    pub fn content(self) -> &'static str {
        match self {
            Self::PlusOne => "+1",
            Self::MinusOne => "-1",
            Self::Eyes => "eyes",
            Self::Rocket => "rocket",
            Self::Confused => "confused",
        }
    }
}

/// The `rel="next"` URL of a `Link` header, if any.
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim();
        let url = url.strip_prefix('<')?.strip_suffix('>')?;
        pieces
            .any(|p| {
                let p = p.trim();
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then_some(url)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(permission: Option<&str>, role: Option<&str>) -> PermissionBody {
        PermissionBody {
            permission: permission.map(str::to_owned),
            role_name: role.map(str::to_owned),
        }
    }

    #[test]
    fn role_name_wins_over_permission() {
        assert_eq!(
            parse_permission(&body(Some("write"), Some("maintain"))),
            Permission::Maintain
        );
        assert_eq!(
            parse_permission(&body(Some("read"), Some("triage"))),
            Permission::Triage
        );
    }

    #[test]
    fn custom_role_falls_back_to_permission() {
        assert_eq!(
            parse_permission(&body(Some("write"), Some("custom-x"))),
            Permission::Write
        );
        assert_eq!(parse_permission(&body(None, None)), Permission::None);
        assert_eq!(
            parse_permission(&body(Some("bogus"), None)),
            Permission::None
        );
    }

    #[test]
    fn role_names_round_trip() {
        for p in [
            Permission::None,
            Permission::Read,
            Permission::Triage,
            Permission::Write,
            Permission::Maintain,
            Permission::Admin,
        ] {
            assert_eq!(Permission::from_role_name(p.role_name()), Some(p));
        }
    }

    #[test]
    fn reaction_contents() {
        assert_eq!(Reaction::PlusOne.content(), "+1");
        assert_eq!(Reaction::MinusOne.content(), "-1");
        assert_eq!(Reaction::Eyes.content(), "eyes");
        assert_eq!(Reaction::Rocket.content(), "rocket");
        assert_eq!(Reaction::Confused.content(), "confused");
    }

    #[test]
    fn link_header_next() {
        let h = r#"<https://api.github.com/x?page=2&per_page=100>; rel="next", <https://api.github.com/x?page=5>; rel="last""#;
        assert_eq!(
            next_link(h),
            Some("https://api.github.com/x?page=2&per_page=100")
        );
        let last = r#"<https://api.github.com/x?page=1>; rel="prev", <https://api.github.com/x?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
        assert_eq!(next_link(""), None);
    }
}
