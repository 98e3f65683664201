//! The gateway's `/metrics`, scraped over HTTP from a running gateway (against the fake
//! apiserver): besides its own `countersign_gateway_*` series it exports what every
//! Countersign server does, `countersign_build_info` naming the component and the process
//! metrics from `countersign_telemetry`, in one OpenMetrics document.

use std::time::Duration;

use bytes::Bytes;
use countersign_gateway::proxy::Settings;
use countersign_gateway::server;
use countersign_testkit::apiserver::FakeApiServer;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};

const WAIT: Duration = Duration::from_secs(30);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_carry_build_info_and_process_metrics_like_every_server() {
    let api = FakeApiServer::start().await.expect("apiserver");
    for crd in countersign_crds::all() {
        api.install_crd(&crd).expect("crd");
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let running = within(server::start(
        api.client(),
        None,
        listener,
        Settings::default(),
    ))
    .await
    .expect("gateway");

    let request = Request::get(format!("{}/metrics", running.url()))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = within(countersign_gateway::upstream::client().request(request))
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let body = within(response.into_body().collect())
        .await
        .expect("body")
        .to_bytes();
    let text = String::from_utf8(body.to_vec()).expect("utf-8");

    let build_info = text
        .lines()
        .find(|l| l.starts_with("countersign_build_info{"))
        .unwrap_or_else(|| panic!("no countersign_build_info:\n{text}"));
    assert!(
        build_info.contains("component=\"gateway\"")
            && build_info.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")))
            && build_info.ends_with(" 1"),
        "{build_info}"
    );
    if cfg!(target_os = "linux") {
        for series in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(series)),
                "no {series}in:\n{text}"
            );
        }
    }
    // The gateway's own series keep their prefix, all in one document.
    assert!(
        text.contains("# TYPE countersign_gateway_in_flight_requests gauge"),
        "{text}"
    );
    assert_eq!(text.matches("# EOF").count(), 1, "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    within(running.stop()).await;
}
