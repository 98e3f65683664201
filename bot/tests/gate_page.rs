//! `GET /gates/{namespace}/{name}` through the real router over HTTP: the page of a stored
//! ApprovalGate, 404s, 503 when the apiserver fails, and the page as headless Chromium
//! renders it.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use countersign_bot::server::HttpOptions;
use support::{GATE, NS, full_status, get, serve_bot, serve_bot_on_fake, store_gate};

/// Longest a headless Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_page_shows_the_gate() {
    let served = serve_bot(HttpOptions::default()).await;
    store_gate(served.api.client(), full_status()).await;
    let page = get(served.addr, &format!("/gates/{NS}/{GATE}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.content_type, "text/html; charset=utf-8");
    let body = &page.body;
    for needle in [
        "<h1>Pull request #42: Pending</h1>",
        "may not merge yet: it needs 1 more approval from tech_lead",
        "id=\"risk\"",
        "id=\"requirements\"",
        "id=\"approvals\"",
        "id=\"deadline\"",
        "data-role=\"developer\" data-met=\"true\"",
        "data-role=\"tech_lead\" data-met=\"false\"",
        "data-user=\"dave\" data-valid=\"true\"",
        "data-user=\"rita\" data-valid=\"false\"",
        "data-reason=\"requester\"",
        "data-reason=\"not-in-role\"",
        "src/api/handler.rs matched rule features (src/**)",
        "2026-12-04 18:00 UTC",
    ] {
        assert!(body.contains(needle), "page lacks {needle:?}:\n{body}");
    }
    assert!(!body.contains("<script"));
}

#[tokio::test]
async fn missing_gates_and_bad_names_are_404() {
    let served = serve_bot(HttpOptions::default()).await;
    let page = get(served.addr, &format!("/gates/{NS}/nope")).await;
    assert_eq!(page.status, 404);
    assert!(page.content_type.starts_with("text/html"));
    assert!(page.body.contains("Gate not found"), "{}", page.body);
    let page = get(served.addr, "/gates/team-a/..%2Fsecrets").await;
    assert_eq!(page.status, 404);
}

#[tokio::test]
async fn pages_can_be_turned_off() {
    let served = serve_bot(HttpOptions {
        gate_pages: false,
        ..HttpOptions::default()
    })
    .await;
    store_gate(served.api.client(), full_status()).await;
    let page = get(served.addr, &format!("/gates/{NS}/{GATE}")).await;
    assert_eq!(page.status, 404);
    assert!(!page.body.contains("data-role"), "{}", page.body);
}

#[tokio::test]
async fn an_unreachable_apiserver_is_503() {
    let served = serve_bot_on_fake(HttpOptions::default()).await;
    store_gate(served.api.client(), full_status()).await;
    let faults = served.api.as_fake().expect("the fake apiserver").faults();
    faults.set_error_codes(&[500]);
    faults.set_error_rate_for(1.0, 7, &["GET"], &["approvalgates"]);
    let page = get(served.addr, &format!("/gates/{NS}/{GATE}")).await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert!(page.body.contains("Try again later"));
}

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on `PATH`.
fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

#[tokio::test]
async fn chromium_renders_the_facts() {
    let Some(chromium) = find_chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "Chromium is not installed, but CI is set: .ci/run should have installed the \
                 Debian package `chromium` (or set $CHROMIUM)"
            );
        }
        println!("skipped: chromium not installed (apt-get install chromium, or set $CHROMIUM)");
        return;
    };
    let served = serve_bot(HttpOptions::default()).await;
    store_gate(served.api.client(), full_status()).await;
    let url = format!("http://{}/gates/{NS}/{GATE}", served.addr);
    let profile = tempfile::tempdir().expect("profile dir");
    let child = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            // The machine has no network: without these Chromium keeps dialling Google's hosts.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-quic",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
    // On timeout the future (and with it the child, kill_on_drop) is dropped: Chromium is killed.
    let output = tokio::time::timeout(CHROMIUM_TIMEOUT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("Chromium did not finish within {CHROMIUM_TIMEOUT:?}"))
        .expect("Chromium runs");
    let dom = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && dom.contains("</html>"),
        "Chromium failed ({}):\nstdout: {dom}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // The serialised DOM: what the browser parsed, not the bytes we sent.
    assert!(
        dom.contains("<h1>Pull request #42: Pending</h1>"),
        "no h1 in the DOM:\n{dom}"
    );
    for role in ["developer", "tech_lead"] {
        let row = format!("<tr data-role=\"{role}\"");
        assert_eq!(
            dom.matches(&row).count(),
            1,
            "requirement row {role}:\n{dom}"
        );
    }
    assert!(dom.contains("<tr data-user=\"rita\" data-valid=\"false\">"));
    assert!(dom.contains("<tr data-user=\"dave\" data-valid=\"true\">"));
    let rita = dom
        .split("<tr data-user=\"rita\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .expect("rita's row");
    assert!(
        rita.contains("requester</span>: the person who asked for the AI run cannot approve"),
        "rita's row lacks the reason: {rita}"
    );
    assert!(!dom.contains("<script"), "{dom}");
}
