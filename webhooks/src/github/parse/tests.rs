//! Table tests of [`super::parse`] with small literal payloads.

use super::*;

const REPO: &str = r#""repository":{"id":7,"name":"api","owner":{"login":"acme"}}"#;
const SENDER: &str = r#""sender":{"id":1,"login":"alice","type":"User"}"#;
const ISSUE: &str = r#""issue":{"number":42,"title":"T","body":"b","user":{"id":2,"login":"bob","type":"User"},"labels":[{"name":"ai:backend"}],"state":"open"}"#;
const PR: &str = r#""pull_request":{"number":5,"title":"P","user":{"id":3,"login":"cs[bot]","type":"Bot"},"head":{"ref":"feat","sha":"abc","repo":{"full_name":"acme/api"}},"base":{"ref":"main","sha":"def","repo":null},"state":"open","draft":true,"merged":false,"labels":[]}"#;

fn event(name: &str, json: &str) -> Event {
    match parse(name, json.as_bytes()) {
        Ok(Parsed::Event(e)) => *e,
        other => panic!("{name}: expected an event, got {other:?}"),
    }
}

#[test]
fn issues_labeled_names_the_label_and_issue() {
    let json = format!(
        r#"{{"action":"labeled","label":{{"name":"ai:backend"}},{ISSUE},{REPO},{SENDER},"installation":{{"id":9}}}}"#
    );
    let Event::Issues(e) = event("issues", &json) else {
        panic!("not issues")
    };
    assert_eq!(e.action, IssuesAction::Labeled("ai:backend".into()));
    assert_eq!(e.issue.number, 42);
    assert!(!e.issue.is_pull_request);
    assert_eq!(e.repository.full_name(), "acme/api");
    assert_eq!(e.installation_id, Some(9));
}

#[test]
fn comment_edit_keeps_previous_body_and_pr_marker() {
    let issue = ISSUE.replace(
        r#""state":"open""#,
        r#""state":"open","pull_request":{"url":"x"}"#,
    );
    let json = format!(
        r#"{{"action":"edited","changes":{{"body":{{"from":"old \"q\""}}}},{issue},"comment":{{"id":11,"body":"/approve","user":{{"id":2,"login":"bob"}}}},{REPO},{SENDER}}}"#
    );
    let Event::IssueComment(e) = event("issue_comment", &json) else {
        panic!("not a comment")
    };
    assert_eq!(
        e.action,
        CommentAction::Edited {
            previous_body: Some("old \"q\"".into())
        }
    );
    assert!(e.issue.is_pull_request);
    assert_eq!(e.comment.body, "/approve");
}

#[test]
fn pull_request_and_review_states_in_any_case() {
    let json = format!(r#"{{"action":"opened",{PR},{REPO},{SENDER}}}"#);
    let Event::PullRequest(e) = event("pull_request", &json) else {
        panic!("not a pr")
    };
    assert_eq!(e.action, PullRequestAction::Opened);
    assert_eq!(e.pull_request.user.kind, AccountKind::Bot);
    assert!(e.pull_request.draft);
    assert_eq!(e.pull_request.base.repo_full_name, None);
    for (state, want) in [
        ("approved", ReviewState::Approved),
        ("CHANGES_REQUESTED", ReviewState::ChangesRequested),
        ("commented", ReviewState::Commented),
        ("dismissed", ReviewState::Dismissed),
        ("pending", ReviewState::Pending),
    ] {
        let json = format!(
            r#"{{"action":"submitted","review":{{"id":1,"user":{{"id":4,"login":"r"}},"state":"{state}","commit_id":"abc"}},{PR},{REPO},{SENDER}}}"#
        );
        let Event::PullRequestReview(e) = event("pull_request_review", &json) else {
            panic!("not a review")
        };
        assert_eq!(e.review.state, want, "{state}");
    }
}

#[test]
fn merge_group_refs() {
    assert_eq!(
        merge_group_pull_requests("refs/heads/gh-readonly-queue/main/pr-42-abc123"),
        vec![42]
    );
    assert_eq!(
        merge_group_pull_requests("refs/heads/gh-readonly-queue/release/1.x/pr-7-ff"),
        vec![7]
    );
    for odd in [
        "",
        "refs/heads/main",
        "refs/heads/gh-readonly-queue/main/pr-x-1",
        "refs/heads/gh-readonly-queue/pr-",
    ] {
        assert!(merge_group_pull_requests(odd).is_empty(), "{odd}");
    }
    let json = format!(
        r#"{{"action":"checks_requested","merge_group":{{"head_sha":"s","head_ref":"refs/heads/gh-readonly-queue/main/pr-3-s","base_ref":"refs/heads/main"}},{REPO}}}"#
    );
    let Event::MergeGroup(e) = event("merge_group", &json) else {
        panic!("not a merge group")
    };
    assert_eq!(e.pull_requests, vec![3]);
    assert!(e.sender.is_none());
}

#[test]
fn check_run_installation_and_ping() {
    let json = format!(
        r#"{{"action":"requested_action","requested_action":{{"identifier":"retry"}},"check_run":{{"id":8,"name":"countersign/approval","head_sha":"h","app":{{"id":99}},"pull_requests":[{{"number":5}}]}},{REPO},{SENDER}}}"#
    );
    let Event::CheckRun(e) = event("check_run", &json) else {
        panic!("not a check run")
    };
    assert_eq!(e.action, CheckRunAction::RequestedAction("retry".into()));
    assert_eq!(e.pull_requests, vec![5]);
    let json = format!(
        r#"{{"action":"added","installation":{{"id":9,"account":{{"login":"acme"}}}},"repositories_added":[{{"id":7,"full_name":"acme/api"}}],"repositories_removed":[],{SENDER}}}"#
    );
    let Event::InstallationRepositories(e) = event("installation_repositories", &json) else {
        panic!("not installation_repositories")
    };
    assert_eq!(e.added[0].full_name, "acme/api");
    let Event::Ping(p) = event("ping", r#"{"zen":"z","hook_id":3}"#) else {
        panic!("not ping")
    };
    assert_eq!(p.hook_id, Some(3));
}

#[test]
fn unsupported_and_errors() {
    for (ev, body, action) in [
        ("issues", r#"{"action":"opened"}"#, Some("opened")),
        ("check_run", r#"{"action":"completed"}"#, Some("completed")),
        ("star", r#"{"action":"created"}"#, Some("created")),
        ("push", r#"{"ref":"x"}"#, None),
    ] {
        match parse(ev, body.as_bytes()) {
            Ok(Parsed::Unsupported { event, action: a }) => {
                assert_eq!(event, ev);
                assert_eq!(a.as_deref(), action);
            }
            other => panic!("{ev}: {other:?}"),
        }
    }
    for (ev, body) in [
        ("issues", "not json"),
        ("issues", r#"{"action":"labeled"}"#),
        ("pull_request", r#"{"action":"opened","pull_request":{}}"#),
        ("ping", ""),
    ] {
        assert!(parse(ev, body.as_bytes()).is_err(), "{ev}: {body}");
    }
}

#[test]
fn inline_review_comment_edits_name_the_editor_and_the_old_body() {
    let json = format!(
        r#"{{"action":"edited","changes":{{"body":{{"from":"/reject"}}}},"comment":{{"id":77,"body":"/approve","user":{{"id":2,"login":"bob"}},"commit_id":"new","original_commit_id":"abc"}},{PR},{REPO},{SENDER}}}"#
    );
    let Event::PullRequestReviewComment(e) = event("pull_request_review_comment", &json) else {
        panic!("not a review comment")
    };
    assert_eq!(
        e.action,
        CommentAction::Edited {
            previous_body: Some("/reject".into())
        }
    );
    assert_eq!(e.comment.id, 77);
    assert_eq!(e.comment.user.login, "bob");
    assert_eq!(e.sender.login, "alice");
    assert_eq!(e.comment.commit_id.as_deref(), Some("abc"));
    assert_eq!(e.pull_request.number, 5);
    let deleted = json.replace(r#""action":"edited""#, r#""action":"deleted""#);
    let Event::PullRequestReviewComment(e) = event("pull_request_review_comment", &deleted) else {
        panic!("not a review comment")
    };
    assert_eq!(e.action, CommentAction::Deleted);
}

#[test]
fn review_edits_carry_the_body_before_and_after() {
    let json = format!(
        r#"{{"action":"edited","changes":{{"body":{{"from":"fine"}}}},"review":{{"id":8,"state":"commented","body":"/approve","user":{{"id":2,"login":"bob"}}}},{PR},{REPO},{SENDER}}}"#
    );
    let Event::PullRequestReview(e) = event("pull_request_review", &json) else {
        panic!("not a review")
    };
    assert_eq!(e.action, ReviewAction::Edited);
    assert_eq!(e.review.body.as_deref(), Some("/approve"));
    assert_eq!(e.previous_body.as_deref(), Some("fine"));
}

#[test]
fn item_numbers_no_object_could_hold_are_refused_when_parsed() {
    let labeled = |number: &str| {
        format!(
            r#"{{"action":"labeled","label":{{"name":"ai:backend"}},{},{REPO},{SENDER}}}"#,
            ISSUE.replace("\"number\":42", &format!("\"number\":{number}"))
        )
    };
    let opened = |number: &str| {
        format!(
            r#"{{"action":"opened",{},{REPO},{SENDER}}}"#,
            PR.replace("\"number\":5", &format!("\"number\":{number}"))
        )
    };
    assert!(parse("issues", labeled("-1").as_bytes()).is_err());
    for number in ["0", "9223372036854775808", "18446744073709551615"] {
        let err = parse("issues", labeled(number).as_bytes()).expect_err(number);
        assert!(
            err.source
                .to_string()
                .contains("is not an issue or pull request number"),
            "{number}: {err}"
        );
        assert!(
            parse("pull_request", opened(number).as_bytes()).is_err(),
            "{number}"
        );
    }
    // The bounds themselves are fine.
    for number in ["1", "9223372036854775807"] {
        let Event::Issues(e) = event("issues", &labeled(number)) else {
            panic!("not issues")
        };
        assert_eq!(e.issue.number.to_string(), number);
        assert!(matches!(
            event("pull_request", &opened(number)),
            Event::PullRequest(_)
        ));
    }
}
