//! GitHub's documented permission for each REST endpoint (and git smart-HTTP path) Countersign
//! calls, and the manifest in `app.yml` to compare with. The endpoint table follows GitHub's
//! "Permissions required for GitHub Apps" reference; an endpoint missing here fails the test
//! that maps a call log, so a new call cannot slip past the manifest.

use std::collections::BTreeMap;
use std::path::Path;

/// `read` < `write`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Read access.
    Read,
    /// Read and write access.
    Write,
}

impl Level {
    /// GitHub's name of the level.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Read => "read",
            Level::Write => "write",
        }
    }
}

/// What a call needs: `None` for calls made as the App itself (JWT) or public ones.
pub fn required(method: &str, path: &str) -> Result<Option<(&'static str, Level)>, String> {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    use Level::{Read, Write};
    let write_if = |m: &str| if m == "GET" { Read } else { Write };
    let need = match (method, segments.as_slice()) {
        // The App itself (JWT): no repository permission.
        (_, ["app"]) | (_, ["app", "installations", ..]) => None,
        ("GET", ["repos", _, _, "installation"]) => None,
        ("GET", ["users", _]) => None,
        // Revoking an installation token: the token itself is the credential.
        ("DELETE", ["installation", "token"]) => None,
        // git smart-HTTP.
        // `info/refs?service=git-receive-pack` is a push: see `needed`.
        (_, [_, repo, "info", "refs"]) if repo.ends_with(".git") => Some(("contents", Read)),
        (_, [_, repo, "git-upload-pack"]) if repo.ends_with(".git") => Some(("contents", Read)),
        (_, [_, repo, "git-receive-pack"]) if repo.ends_with(".git") => Some(("contents", Write)),
        ("GET", ["repos", _, _]) => Some(("metadata", Read)),
        ("GET", ["repos", _, _, "collaborators", _, "permission"]) => Some(("metadata", Read)),
        ("GET", ["orgs", _, "teams", _, "memberships", _]) => Some(("members", Read)),
        ("GET", ["orgs", _, "teams", _, "members"]) => Some(("members", Read)),
        ("PUT", ["repos", _, _, "pulls", _, "merge"]) => Some(("contents", Write)),
        (m, ["repos", _, _, "pulls", ..]) => Some(("pull_requests", write_if(m))),
        (m, ["repos", _, _, "issues", ..]) => Some(("issues", write_if(m))),
        (m, ["repos", _, _, "check-runs", ..]) => Some(("checks", write_if(m))),
        ("GET", ["repos", _, _, "commits", _, "check-runs"]) => Some(("checks", Read)),
        ("GET", ["repos", _, _, "commits", _, "check-suites"]) => Some(("checks", Read)),
        ("GET", ["repos", _, _, "commits", _, "status"]) => Some(("statuses", Read)),
        ("GET", ["repos", _, _, "commits", _, "statuses"]) => Some(("statuses", Read)),
        ("GET", ["repos", _, _, "commits", ..]) => Some(("contents", Read)),
        ("GET", ["repos", _, _, "git", ..]) => Some(("contents", Read)),
        ("GET", ["repos", _, _, "compare", ..]) => Some(("contents", Read)),
        _ => {
            return Err(format!(
                "{method} {path}: no documented permission in the table"
            ));
        }
    };
    Ok(need)
}

/// The highest level each permission is needed at, over `calls` (method, path with query).
pub fn needed<'a>(
    calls: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<BTreeMap<&'static str, Level>, String> {
    let mut needed = BTreeMap::new();
    for (method, path) in calls {
        // Keep the query for git's info/refs?service=…
        let need = match path.split_once('?') {
            Some((p, q)) if q.contains("service=git-receive-pack") && p.ends_with("/info/refs") => {
                Some(("contents", Level::Write))
            }
            _ => required(method, path)?,
        };
        if let Some((permission, level)) = need {
            let entry = needed.entry(permission).or_insert(level);
            *entry = (*entry).max(level);
        }
    }
    Ok(needed)
}

/// `default_permissions` and `default_events` of `app.yml`.
pub fn manifest() -> (BTreeMap<String, String>, Vec<String>) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("app.yml"))
        .expect("app.yml");
    let yaml: serde_json::Value = serde_yaml::from_str(&text).expect("app.yml is YAML");
    let permissions = yaml["default_permissions"]
        .as_object()
        .expect("default_permissions")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("level").to_owned()))
        .collect();
    let events = yaml["default_events"]
        .as_array()
        .expect("default_events")
        .iter()
        .map(|e| e.as_str().expect("event").to_owned())
        .collect();
    (permissions, events)
}
