//! `app.yml`, the GitHub App manifest: its events are exactly the ones the webhook parser
//! handles (installation events are sent to every App and cannot be subscribed to), and its
//! permissions are GitHub's names and levels. That the permissions are exactly what the code
//! needs is proved by the end-to-end run in `tests/chart_rbac.rs`, which maps every GitHub call
//! it made to GitHub's documented permission.

mod support;

use std::collections::BTreeSet;

use support::github_permissions::{Level, manifest, required};

#[test]
fn the_manifest_subscribes_to_exactly_the_events_the_parser_handles() {
    let parser = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/webhooks/src/github/parse.rs"
    ))
    .expect("parse.rs");
    // The dispatch table: `"issues" => parse_issues(…)`.
    let handled: BTreeSet<String> = parser
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix('"')?;
            let (event, tail) = rest.split_once('"')?;
            tail.trim_start()
                .strip_prefix("=> parse_")
                .map(|_| event.to_owned())
        })
        .filter(|e| !matches!(e.as_str(), "installation" | "installation_repositories"))
        .collect();
    assert!(
        handled.contains("issues") && handled.contains("merge_group"),
        "{handled:?}"
    );
    let (_, events) = manifest();
    let subscribed: BTreeSet<String> = events.into_iter().collect();
    assert_eq!(subscribed, handled);
}

#[test]
fn the_manifest_uses_githubs_permission_names_and_levels() {
    let (permissions, _) = manifest();
    let known = [
        "checks",
        "contents",
        "issues",
        "members",
        "metadata",
        "pull_requests",
        "statuses",
    ];
    for (name, level) in &permissions {
        assert!(known.contains(&name.as_str()), "unknown permission {name}");
        assert!(
            matches!(level.as_str(), "read" | "write"),
            "{name}: {level}"
        );
    }
    assert_eq!(
        permissions.get("statuses").map(String::as_str),
        Some("read"),
        "auto-merge reads commit statuses"
    );
}

#[test]
fn endpoints_map_to_githubs_documented_permissions() {
    for (method, path, expected) in [
        ("POST", "/app/installations/31/access_tokens", None),
        ("GET", "/repos/acme/api/installation", None),
        (
            "GET",
            "/repos/acme/api/pulls/7/files?per_page=100",
            Some(("pull_requests", Level::Read)),
        ),
        (
            "POST",
            "/repos/acme/api/pulls",
            Some(("pull_requests", Level::Write)),
        ),
        (
            "PUT",
            "/repos/acme/api/pulls/7/merge",
            Some(("contents", Level::Write)),
        ),
        (
            "PATCH",
            "/repos/acme/api/issues/comments/9",
            Some(("issues", Level::Write)),
        ),
        (
            "POST",
            "/repos/acme/api/check-runs",
            Some(("checks", Level::Write)),
        ),
        (
            "GET",
            "/repos/acme/api/commits/abc/status",
            Some(("statuses", Level::Read)),
        ),
        (
            "GET",
            "/orgs/acme/teams/leads/memberships/lead",
            Some(("members", Level::Read)),
        ),
        (
            "GET",
            "/acme/api.git/info/refs?service=git-upload-pack",
            Some(("contents", Level::Read)),
        ),
        (
            "POST",
            "/acme/api.git/git-receive-pack",
            Some(("contents", Level::Write)),
        ),
    ] {
        assert_eq!(required(method, path), Ok(expected), "{method} {path}");
    }
    assert!(
        required("DELETE", "/repos/acme/api").is_err(),
        "unknown endpoints fail"
    );
}
