//! Check runs: publishing ours (`countersign/approval`) and reading every app's runs on a
//! commit (the other checks auto-merge waits for).

use http::Method;
use jiff::Timestamp;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::GitHubError;
use crate::installation::{InstallationClient, repo_path, seg};

/// The one check run Countersign publishes; branch protection requires it.
pub const CHECK_NAME: &str = "countersign/approval";

/// A check run's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// Queued.
    Queued,
    /// Running.
    InProgress,
    /// Done; a conclusion is required.
    Completed,
}

impl CheckStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
        }
    }
}

/// A check run to create or update.
#[derive(Clone, Debug)]
pub struct CheckRunRequest<'a> {
    /// Check name, e.g. `countersign/approval`.
    pub name: &'a str,
    /// The commit it reports on (ignored by updates: a run stays on its commit).
    pub head_sha: &'a str,
    /// Status.
    pub status: CheckStatus,
    /// `success`, `failure`, `neutral`, `action_required`, …; sent only when completed.
    pub conclusion: Option<&'a str>,
    /// `output.title`.
    pub title: &'a str,
    /// `output.summary` (Markdown); cut to [`CHECK_SUMMARY_LIMIT`] with a marker.
    pub summary: &'a str,
    /// The "Details" link.
    pub details_url: Option<&'a str>,
    /// Our own reference (e.g. the gate's namespace/name).
    pub external_id: Option<&'a str>,
}

/// A check run on a commit, ours or another app's.
#[derive(Clone, Debug)]
pub struct CheckRunInfo {
    /// Check run id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// The app that created it (compare with our App id to skip our own check).
    pub app_id: Option<u64>,
    /// The commit.
    pub head_sha: String,
    /// `queued`, `in_progress`, `completed`, … (GitHub adds more for Actions).
    pub status: String,
    /// Conclusion once completed.
    pub conclusion: Option<String>,
    /// The creator's own reference (ours: the gate's `namespace/name`).
    pub external_id: Option<String>,
}

/// GitHub's limit on `output.summary`, in characters.
pub const CHECK_SUMMARY_LIMIT: usize = 65_535;
/// Appended to a summary cut to [`CHECK_SUMMARY_LIMIT`].
pub const TRUNCATION_MARKER: &str = "\n\n… (truncated)";

#[derive(Deserialize)]
struct WireApp {
    id: u64,
}

#[derive(Deserialize)]
struct WireCheckRun {
    id: u64,
    name: String,
    #[serde(default)]
    app: Option<WireApp>,
    head_sha: String,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    external_id: Option<String>,
}

impl From<WireCheckRun> for CheckRunInfo {
    fn from(c: WireCheckRun) -> Self {
        Self {
            id: c.id,
            name: c.name,
            app_id: c.app.map(|a| a.id),
            head_sha: c.head_sha,
            status: c.status,
            conclusion: c.conclusion,
            external_id: c.external_id.filter(|id| !id.is_empty()),
        }
    }
}

/// `GET /repos/{o}/{r}/commits/{ref}/check-runs`.
#[derive(Deserialize)]
struct WireCheckRuns {
    #[serde(default)]
    check_runs: Vec<WireCheckRun>,
}

/// `summary` cut on a char boundary to at most [`CHECK_SUMMARY_LIMIT`] bytes, marker
/// included. Bytes bound characters, so this holds whichever GitHub counts.
fn truncate_summary(summary: &str) -> std::borrow::Cow<'_, str> {
    if summary.len() <= CHECK_SUMMARY_LIMIT {
        return summary.into();
    }
    let mut end = CHECK_SUMMARY_LIMIT - TRUNCATION_MARKER.len();
    while !summary.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{TRUNCATION_MARKER}", &summary[..end]).into()
}

/// The JSON body of a check-run create (`create`) or update. Only a completed run carries a
/// conclusion (with `completed_at = now`): GitHub completes a run as soon as it sees one.
fn check_run_body(run: &CheckRunRequest<'_>, create: bool, now: Timestamp) -> Value {
    let mut body = json!({
        "name": run.name,
        "status": run.status.as_str(),
        "output": {"title": run.title, "summary": truncate_summary(run.summary)},
    });
    if create {
        body["head_sha"] = json!(run.head_sha);
    }
    if run.status == CheckStatus::Completed {
        if let Some(conclusion) = run.conclusion {
            body["conclusion"] = json!(conclusion);
        }
        body["completed_at"] = json!(now.to_string());
    }
    if let Some(url) = run.details_url {
        body["details_url"] = json!(url);
    }
    if let Some(id) = run.external_id {
        body["external_id"] = json!(id);
    }
    body
}

impl InstallationClient {
    /// Creates check run `run` on `run.head_sha`; returns its id. Not sent twice: after an
    /// answer that leaves open whether the run was created (a 5xx, a timeout), look for it
    /// by its `external_id` ([`Self::check_runs_for_ref`]) before creating another.
    pub async fn create_check_run(
        &self,
        owner: &str,
        repo: &str,
        run: &CheckRunRequest<'_>,
    ) -> Result<u64, GitHubError> {
        let path = format!("{}/check-runs", repo_path(owner, repo));
        let body = check_run_body(run, true, Timestamp::now());
        let answer = self
            .send_once_only(Method::POST, &path, Some(&body))
            .await?;
        Ok(answer.json::<crate::installation::Id>("check run")?.id)
    }

    /// Updates check run `id` to `run` (its commit stays).
    pub async fn update_check_run(
        &self,
        owner: &str,
        repo: &str,
        id: u64,
        run: &CheckRunRequest<'_>,
    ) -> Result<(), GitHubError> {
        let path = format!("{}/check-runs/{id}", repo_path(owner, repo));
        let body = check_run_body(run, false, Timestamp::now());
        self.send(Method::PATCH, &path, Some(&body)).await.map(drop)
    }

    /// Every check run on commit `sha`, of every app (`GET …/commits/{sha}/check-runs`), all
    /// pages.
    pub async fn check_runs_for_ref(
        &self,
        owner: &str,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<CheckRunInfo>, GitHubError> {
        let path = format!("{}/commits/{}/check-runs", repo_path(owner, repo), seg(sha));
        self.get_all_pages(&path, "check runs", |page: WireCheckRuns| {
            page.check_runs
                .into_iter()
                .map(CheckRunInfo::from)
                .collect()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::parse;
    use serde_json::json;

    #[test]
    fn check_runs_parse() {
        let runs = json!({"total_count": 2, "check_runs": [
            {"id": 4, "head_sha": "ce587453ced02b1526dfb4cb910479d431683101",
             "node_id": "MDg6Q2hlY2tSdW40", "external_id": "", "status": "completed",
             "conclusion": "neutral", "name": "mighty_readme",
             "started_at": "2018-05-04T01:14:52Z", "completed_at": "2018-05-04T01:14:52Z",
             "output": {"title": "Mighty Readme report", "summary": "There are 0 failures"},
             "app": {"id": 1, "slug": "octoapp", "name": "Octocat App"},
             "pull_requests": []},
            {"id": 5, "head_sha": "ce587453ced02b1526dfb4cb910479d431683101",
             "status": "in_progress", "conclusion": null, "name": "build", "app": null}
        ]});
        let runs: Vec<CheckRunInfo> = parse::<WireCheckRuns>(runs)
            .check_runs
            .into_iter()
            .map(CheckRunInfo::from)
            .collect();
        assert_eq!(runs[0].app_id, Some(1));
        assert_eq!(runs[0].conclusion.as_deref(), Some("neutral"));
        assert_eq!(runs[1].app_id, None);
        assert_eq!(runs[1].status, "in_progress");
        assert_eq!(runs[1].conclusion, None);
        assert_eq!(runs[0].external_id, None, "GitHub sends \"\" for none");
    }

    fn request(status: CheckStatus, conclusion: Option<&'static str>) -> CheckRunRequest<'static> {
        CheckRunRequest {
            name: "countersign/approval",
            head_sha: "abc",
            status,
            conclusion,
            title: "Waiting",
            summary: "| role | needed |",
            details_url: Some("https://countersign.example/g/1"),
            external_id: Some("team-a/gate-1"),
        }
    }

    #[test]
    fn check_run_bodies_send_a_conclusion_only_when_completed() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().expect("ts");
        let running = check_run_body(
            &request(CheckStatus::InProgress, Some("success")),
            true,
            now,
        );
        assert_eq!(running["status"], "in_progress");
        assert_eq!(running["head_sha"], "abc");
        assert!(running.get("conclusion").is_none());
        assert!(running.get("completed_at").is_none());
        assert_eq!(running["output"]["title"], "Waiting");
        assert_eq!(running["details_url"], "https://countersign.example/g/1");
        assert_eq!(running["external_id"], "team-a/gate-1");

        let done = check_run_body(
            &request(CheckStatus::Completed, Some("failure")),
            false,
            now,
        );
        assert_eq!(done["conclusion"], "failure");
        assert_eq!(done["completed_at"], "2026-12-04T10:00:00Z");
        assert!(done.get("head_sha").is_none(), "updates keep the commit");

        let queued = check_run_body(
            &CheckRunRequest {
                details_url: None,
                external_id: None,
                ..request(CheckStatus::Queued, None)
            },
            true,
            now,
        );
        assert_eq!(queued["status"], "queued");
        assert!(queued.get("details_url").is_none() && queued.get("external_id").is_none());
    }

    #[test]
    fn long_summaries_are_cut_on_a_char_boundary() {
        assert_eq!(truncate_summary("short"), "short");
        let exact = "x".repeat(CHECK_SUMMARY_LIMIT);
        assert_eq!(truncate_summary(&exact).len(), CHECK_SUMMARY_LIMIT);
        // Three-byte characters, so the cut falls inside one unless it backs off.
        let long = "€".repeat(CHECK_SUMMARY_LIMIT);
        let cut = truncate_summary(&long);
        assert!(cut.len() <= CHECK_SUMMARY_LIMIT);
        assert!(cut.ends_with(TRUNCATION_MARKER));
        assert!(
            cut.trim_end_matches(TRUNCATION_MARKER)
                .chars()
                .all(|c| c == '€')
        );
    }
}
