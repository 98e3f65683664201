//! Issues: the open issues carrying a label, and an issue's events (who added or removed which
//! label, and when). The bot's resync reads them to find trigger labels whose delivery never
//! arrived and who applied them, so the labeler is authorised as the delivery would have been.
//!
//! Both are listings read with conditional requests ([`Listing::not_modified`]): an unchanged
//! repository costs one `304` per page, which GitHub does not count against the rate limit.

use jiff::Timestamp;
use serde::Deserialize;

use crate::GitHubError;
use crate::installation::{InstallationClient, Listing, repo_path, seg};
use crate::users::{Account, WireUser, account, ghost};

/// An issue as GitHub's issue listing shows it. The listing includes pull requests (their
/// issue side); [`IssueInfo::is_pull_request`] tells them apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueInfo {
    /// The issue number.
    pub number: u64,
    /// Title as written (untrusted).
    pub title: String,
    /// Body as written (untrusted; sanitise before use).
    pub body: Option<String>,
    /// Who opened it (GitHub's `ghost` account when that account was deleted).
    pub author: Account,
    /// The labels it carries now.
    pub labels: Vec<String>,
    /// Whether it is open.
    pub open: bool,
    /// Whether this is the issue side of a pull request.
    pub is_pull_request: bool,
}

/// What one issue event records (only the kinds Countersign reads are told apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssueEventKind {
    /// A label was added; it names the label.
    Labeled(String),
    /// A label was removed; it names the label.
    Unlabeled(String),
    /// Anything else (closed, assigned, renamed, …).
    Other,
}

/// One event of an issue (`GET /repos/{o}/{r}/issues/{n}/events`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssueEvent {
    /// GitHub's event id (unique across GitHub, never reused).
    pub id: u64,
    /// What happened.
    pub kind: IssueEventKind,
    /// Who did it (`None` for a deleted account).
    pub actor: Option<Account>,
    /// When.
    pub created_at: Timestamp,
}

/// The event that put `label` on the issue as it is now: the latest `labeled` event for it
/// (names compared case-insensitively, as GitHub does), unless a later `unlabeled` event took
/// it off again. `events` in any order; ties in time are broken by id.
pub fn current_labeling<'a>(events: &'a [IssueEvent], label: &str) -> Option<&'a IssueEvent> {
    let mut ordered: Vec<&IssueEvent> = events.iter().collect();
    ordered.sort_by_key(|e| (e.created_at, e.id));
    ordered
        .into_iter()
        .rev()
        .find_map(|e| match &e.kind {
            IssueEventKind::Labeled(l) if l.eq_ignore_ascii_case(label) => Some(Some(e)),
            IssueEventKind::Unlabeled(l) if l.eq_ignore_ascii_case(label) => Some(None),
            _ => None,
        })
        .flatten()
}

#[derive(Deserialize)]
struct WireLabel {
    name: String,
}

#[derive(Deserialize)]
struct WireIssue {
    number: u64,
    #[serde(default)]
    title: String,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    user: Option<WireUser>,
    #[serde(default)]
    labels: Vec<WireLabel>,
    state: String,
    #[serde(default)]
    pull_request: Option<serde::de::IgnoredAny>,
}

impl From<WireIssue> for IssueInfo {
    fn from(w: WireIssue) -> Self {
        Self {
            number: w.number,
            title: w.title,
            body: w.body,
            author: account(w.user).unwrap_or_else(ghost),
            labels: w.labels.into_iter().map(|l| l.name).collect(),
            open: w.state == "open",
            is_pull_request: w.pull_request.is_some(),
        }
    }
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(default)]
    id: Option<u64>,
    event: String,
    #[serde(default)]
    actor: Option<WireUser>,
    created_at: Timestamp,
    #[serde(default)]
    label: Option<WireLabel>,
}

impl From<WireEvent> for IssueEvent {
    fn from(w: WireEvent) -> Self {
        let kind = match (w.event.as_str(), w.label) {
            ("labeled", Some(l)) => IssueEventKind::Labeled(l.name),
            ("unlabeled", Some(l)) => IssueEventKind::Unlabeled(l.name),
            _ => IssueEventKind::Other,
        };
        Self {
            id: w.id.unwrap_or_default(),
            kind,
            actor: account(w.actor),
            created_at: w.created_at,
        }
    }
}

impl InstallationClient {
    /// The open issues (and pull requests) of `owner/repo` carrying `label`
    /// (`GET …/issues?state=open&labels=…`), all pages, newest first. GitHub's `labels`
    /// filter separates names with commas, so a label containing one is matched here instead.
    pub async fn open_issues_with_label(
        &self,
        owner: &str,
        repo: &str,
        label: &str,
    ) -> Result<Listing<IssueInfo>, GitHubError> {
        let mut path = format!("{}/issues?state=open", repo_path(owner, repo));
        if !label.contains(',') {
            path.push_str("&labels=");
            path.push_str(&seg(label));
        }
        let listing = self
            .list_all_pages(&path, "issues", |page: Vec<WireIssue>| {
                page.into_iter().map(IssueInfo::from).collect()
            })
            .await?;
        Ok(Listing {
            items: listing
                .items
                .into_iter()
                .filter(|i| i.labels.iter().any(|l| l.eq_ignore_ascii_case(label)))
                .collect(),
            not_modified: listing.not_modified,
        })
    }

    /// Every event of issue or pull request `number` (`GET …/issues/{n}/events`), all
    /// pages, oldest first.
    pub async fn issue_events(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
    ) -> Result<Listing<IssueEvent>, GitHubError> {
        let path = format!("{}/issues/{number}/events", repo_path(owner, repo));
        self.list_all_pages(&path, "issue events", |page: Vec<WireEvent>| {
            page.into_iter().map(IssueEvent::from).collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountKind;
    use crate::fixtures::{parse, user};
    use serde_json::json;

    #[test]
    fn issues_and_pull_requests_of_the_listing_parse() {
        // Shape of GitHub's "List repository issues" example, trimmed.
        let body = json!([
            {"id": 1, "number": 1347, "state": "open", "title": "Found a bug",
             "body": "I'm having a problem with this.", "user": user("octocat", 1, "User"),
             "labels": [{"id": 208045946, "name": "bug", "color": "f29513", "default": true}],
             "created_at": "2011-04-22T13:33:48Z", "updated_at": "2011-04-22T13:33:48Z"},
            {"id": 2, "number": 1348, "state": "open", "title": "A pull request",
             "body": null, "user": null, "labels": [],
             "pull_request": {"url": "https://api.github.com/repos/o/r/pulls/1348"}}
        ]);
        let issues: Vec<IssueInfo> = parse::<Vec<WireIssue>>(body)
            .into_iter()
            .map(IssueInfo::from)
            .collect();
        assert_eq!(issues[0].number, 1347);
        assert_eq!(issues[0].labels, ["bug"]);
        assert_eq!(issues[0].author.login, "octocat");
        assert_eq!(issues[0].author.kind, AccountKind::User);
        assert!(issues[0].open && !issues[0].is_pull_request);
        assert!(issues[1].is_pull_request);
        assert_eq!(issues[1].author.login, "ghost", "a deleted author");
        assert_eq!(issues[1].body, None);
    }

    fn event(id: u64, kind: &str, label: &str, at: &str) -> IssueEvent {
        parse::<WireEvent>(json!({
            "id": id, "event": kind, "actor": user("octocat", 1, "User"),
            "created_at": at, "label": {"name": label, "color": "ededed"},
            "commit_id": null, "commit_url": null, "performed_via_github_app": null
        }))
        .into()
    }

    #[test]
    fn events_parse_into_label_changes() {
        let labeled = event(7, "labeled", "ai:backend", "2026-01-01T00:00:00Z");
        assert_eq!(labeled.kind, IssueEventKind::Labeled("ai:backend".into()));
        assert_eq!(labeled.actor.as_ref().map(|a| a.id), Some(1));
        let closed: IssueEvent = parse::<WireEvent>(json!({
            "id": 8, "event": "closed", "actor": null, "created_at": "2026-01-01T00:00:00Z"
        }))
        .into();
        assert_eq!(closed.kind, IssueEventKind::Other);
        assert_eq!(closed.actor, None);
    }

    #[test]
    fn the_current_labeling_is_the_last_one_not_undone() {
        let events = [
            event(1, "labeled", "ai:backend", "2026-01-01T00:00:01Z"),
            event(2, "labeled", "bug", "2026-01-01T00:00:02Z"),
            event(3, "unlabeled", "ai:backend", "2026-01-01T00:00:03Z"),
            event(4, "labeled", "AI:Backend", "2026-01-01T00:00:04Z"),
        ];
        assert_eq!(
            current_labeling(&events, "ai:backend").map(|e| e.id),
            Some(4),
            "the re-labeling, whatever the case"
        );
        assert_eq!(current_labeling(&events[..3], "ai:backend"), None);
        assert_eq!(current_labeling(&events, "bug").map(|e| e.id), Some(2));
        assert_eq!(current_labeling(&events, "docs"), None);
        let mut shuffled = events.clone();
        shuffled.reverse();
        assert_eq!(
            current_labeling(&shuffled, "ai:backend").map(|e| e.id),
            Some(4),
            "ordered by time, not by position"
        );
    }
}
