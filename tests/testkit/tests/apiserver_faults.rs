//! Fake apiserver: fault injection (seeded error rate, latency, forced conflicts, dropped
//! watches), the request log, and a real `kube::runtime::Controller` converging through faults.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use countersign_testkit::apiserver::FakeApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::wait::await_condition;
use kube::runtime::watcher;
use kube::{CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "test.countersign.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    size: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    conditions: Vec<Cond>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
pub struct Cond {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

async fn t<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("step timed out")
}

fn cm(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn statuses_with_seed(seed: u64) -> Vec<u16> {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    server.faults().set_error_rate(0.5, seed);
    for _ in 0..30 {
        let _ = t(api.list(&ListParams::default())).await;
    }
    server.requests().iter().map(|r| r.status).collect()
}

#[tokio::test]
async fn error_rate_is_deterministic_for_a_seed() {
    let a = statuses_with_seed(7).await;
    let b = statuses_with_seed(7).await;
    assert_eq!(a, b);
    assert!(
        a.contains(&200) && (a.contains(&500) || a.contains(&429)),
        "{a:?}"
    );
    assert_ne!(a, statuses_with_seed(8).await);

    // Filtered by method and kind: only POSTs of configmaps fail.
    let server = t(FakeApiServer::start()).await.unwrap();
    server
        .faults()
        .set_error_rate_for(1.0, 1, &["POST"], &["ConfigMap"]);
    // kube's client retries 429s itself; 500s reach the caller.
    server.faults().set_error_codes(&[500]);
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    assert!(t(api.list(&ListParams::default())).await.is_ok());
    match t(api.create(&PostParams::default(), &cm("x")))
        .await
        .unwrap_err()
    {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (500, "InternalError")),
        other => panic!("{other:?}"),
    }
    assert!(
        server
            .get_raw("", "v1", "configmaps", "default", "x")
            .is_none()
    );
    server.faults().clear_error_rate();
    t(api.create(&PostParams::default(), &cm("x")))
        .await
        .unwrap();
    assert_eq!(server.faults().injected(), 1);
}

#[tokio::test]
async fn latency_conflicts_and_request_log() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    t(api.create(&PostParams::default(), &cm("c")))
        .await
        .unwrap();

    server.faults().set_latency(Duration::from_millis(200));
    let started = Instant::now();
    t(api.get("c")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    server.faults().set_latency(Duration::ZERO);

    server.faults().force_conflicts("configmaps", 2);
    let patch = Patch::Merge(json!({"data": {"a": "b"}}));
    for _ in 0..2 {
        match t(api.patch("c", &PatchParams::default(), &patch))
            .await
            .unwrap_err()
        {
            kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (409, "Conflict")),
            other => panic!("{other:?}"),
        }
    }
    t(api.patch("c", &PatchParams::default(), &patch))
        .await
        .unwrap();

    let log = server.requests();
    let last = log.last().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.status),
        ("PATCH", "/api/v1/namespaces/default/configmaps/c", 200)
    );
    assert_eq!(last.content_type, "application/merge-patch+json");
    assert!(!last.watch);
    assert_eq!(log.iter().filter(|r| r.status == 409).count(), 2);
}

const MANAGER: &str = "widget-controller";

async fn reconcile(w: Arc<Widget>, api: Arc<Api<Widget>>) -> Result<Action, kube::Error> {
    let status = json!({
        "apiVersion": "test.countersign.dev/v1",
        "kind": "Widget",
        "status": {
            "observedGeneration": w.metadata.generation,
            "conditions": [{"type": "Ready", "status": "True"}],
        }
    });
    api.patch_status(
        &w.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(status),
    )
    .await?;
    Ok(Action::await_change())
}

fn error_policy(_w: Arc<Widget>, _e: &kube::Error, _api: Arc<Api<Widget>>) -> Action {
    Action::requeue(Duration::from_millis(50))
}

fn ready_at(generation: i64) -> impl Fn(Option<&Widget>) -> bool {
    move |w: Option<&Widget>| {
        w.and_then(|w| w.status.as_ref()).is_some_and(|s| {
            s.observed_generation == Some(generation)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    }
}

#[tokio::test]
async fn controller_converges_through_dropped_watches_and_conflicts() {
    let server = t(FakeApiServer::start()).await.unwrap();
    server.install_crd(&Widget::crd()).unwrap();
    let api = Api::<Widget>::default_namespaced(server.client());
    server.faults().force_conflicts("widgets", 1);

    let ctx = Arc::new(api.clone());
    let controller = tokio::spawn(
        Controller::new(api.clone(), watcher::Config::default())
            .run(reconcile, error_policy, ctx)
            .for_each(|_| async {}),
    );

    t(api.create(
        &PostParams::default(),
        &Widget::new("w", WidgetSpec { size: 1 }),
    ))
    .await
    .unwrap();
    t(await_condition(api.clone(), "w", ready_at(1)))
        .await
        .unwrap();
    assert_eq!(
        server.faults().injected(),
        1,
        "the forced conflict was hit and retried"
    );

    server.faults().drop_watches();
    server.faults().force_conflicts("widgets/status", 1);
    t(api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    ))
    .await
    .unwrap();
    let done = t(await_condition(api.clone(), "w", ready_at(2)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(server.faults().injected(), 2);
    assert_eq!(done.spec.size, 2);
    assert_eq!(done.metadata.generation, Some(2));
    let mf = done.metadata.managed_fields.unwrap();
    assert!(mf.iter().any(
        |m| m.manager.as_deref() == Some(MANAGER) && m.subresource.as_deref() == Some("status")
    ));
    controller.abort();
}
