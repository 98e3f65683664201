//! Shared helpers for the wire-format tests of the resource modules.

use serde_json::{Value, json};

/// A user object as GitHub embeds it.
pub(crate) fn user(login: &str, id: u64, kind: &str) -> Value {
    json!({
        "login": login, "id": id, "node_id": "MDQ6VXNlcjE=", "type": kind,
        "avatar_url": "https://github.com/images/error/octocat_happy.gif",
        "url": format!("https://api.github.com/users/{login}"), "site_admin": false
    })
}

/// Parses GitHub's documented JSON into a wire struct.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("GitHub's documented shape parses")
}
