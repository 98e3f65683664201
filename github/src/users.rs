//! Accounts: who did something on GitHub ([`Actor`], from the user objects GitHub embeds in
//! pull requests, commits, reviews and comments) and the App's own bot account ([`BotAccount`],
//! the identity agent commits are made as).

use http::Method;
use serde::Deserialize;

use crate::GitHubError;
use crate::installation::{InstallationClient, seg};

/// What kind of GitHub account acted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountKind {
    /// A person.
    User,
    /// A bot account or GitHub App (`type: "Bot"`).
    Bot,
    /// An organisation.
    Organization,
}

/// A GitHub account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Account {
    /// Immutable numeric id: what authorisation matches on.
    pub id: u64,
    /// Login, e.g. `octocat` or `countersign[bot]`.
    pub login: String,
    /// Person, bot or organisation.
    pub kind: AccountKind,
}

/// A GitHub account as the gate needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    /// Numeric user id (what approvals are bound to; logins can be renamed).
    pub id: u64,
    /// Login at the time of the call.
    pub login: String,
    /// Whether GitHub reports the account's `type` as `Bot`.
    pub is_bot: bool,
}

/// The App's bot account, e.g. `countersign[bot]` with its user id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BotAccount {
    /// Login, `<slug>[bot]`.
    pub login: String,
    /// User id, when GitHub has one for it.
    pub id: Option<u64>,
}

impl BotAccount {
    /// The git email GitHub attributes to this account:
    /// `<id>+<login>@users.noreply.github.com` (or without the id when unknown).
    pub fn noreply_email(&self) -> String {
        match self.id {
            Some(id) => format!("{id}+{}@users.noreply.github.com", self.login),
            None => format!("{}@users.noreply.github.com", self.login),
        }
    }
}

/// The account GitHub shows for deleted users.
pub(crate) const GHOST_ID: u64 = 10_137;

// ---- wire structs: only the fields used ----

/// A user object, lenient: GitHub sends `null`, and for unmatched commit identities
/// sometimes `{}`.
#[derive(Deserialize)]
pub(crate) struct WireUser {
    id: Option<u64>,
    login: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

pub(crate) fn actor(user: Option<WireUser>) -> Option<Actor> {
    let user = user?;
    Some(Actor {
        id: user.id?,
        login: user.login?,
        is_bot: user.kind.as_deref() == Some("Bot"),
    })
}

/// The account a user object names, with its kind (`None` for a deleted account's `null`).
pub(crate) fn account(user: Option<WireUser>) -> Option<Account> {
    let user = user?;
    let kind = match user.kind.as_deref() {
        Some("Bot") => AccountKind::Bot,
        Some("Organization") => AccountKind::Organization,
        _ => AccountKind::User,
    };
    Some(Account {
        id: user.id?,
        login: user.login?,
        kind,
    })
}

/// GitHub's `ghost` account, which REST shows in place of deleted ones.
pub(crate) fn ghost() -> Account {
    Account {
        id: GHOST_ID,
        login: "ghost".to_owned(),
        kind: AccountKind::User,
    }
}

impl InstallationClient {
    /// The App's bot account (`GET /users/<slug>[bot]`, asked as the installation: an App
    /// JWT may only call `/app` endpoints). A missing user id is not an error: commits then
    /// carry an email GitHub may not link to the account.
    pub async fn bot_account(&self) -> Result<BotAccount, GitHubError> {
        #[derive(Deserialize)]
        struct User {
            id: u64,
        }
        let login = format!("{}[bot]", self.app.slug().await?);
        let path = format!("/users/{}", seg(&login));
        let id = match self.send(Method::GET, &path, None).await {
            Ok(answer) => Some(answer.json::<User>("bot user")?.id),
            Err(GitHubError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        Ok(BotAccount { login, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bot_emails_are_the_noreply_form_github_links() {
        let bot = BotAccount {
            login: "countersign[bot]".into(),
            id: Some(41),
        };
        assert_eq!(
            bot.noreply_email(),
            "41+countersign[bot]@users.noreply.github.com"
        );
        let unknown = BotAccount { id: None, ..bot };
        assert_eq!(
            unknown.noreply_email(),
            "countersign[bot]@users.noreply.github.com"
        );
    }
}
