//! smoke
use countersign_testkit::controlplane::RealControlPlane;

#[tokio::test]
async fn starts() {
    let cp = RealControlPlane::start()
        .await
        .map_err(|e| format!("{e:#}"))
        .unwrap();
    eprintln!("ready in {:?} at {}", cp.startup_time(), cp.url());
    let v = cp.client().apiserver_version().await.unwrap();
    eprintln!("{v:?}");
    std::fs::copy(cp.kubeconfig_path(), "/tmp/cpsmoke/kubeconfig").unwrap();
    eprintln!("{}", cp.log_tails().len());
}
