//! Fake apiserver fidelity: merge, JSON, strategic and server-side apply patches,
//! managedFields semantics, and the schema (prune/validate) plumbing for custom resources.
//!
//! Every test runs against the fake and the real kube-apiserver
//! ([`TestCluster::every_backend`]), so the fake cannot drift from what the real server does.

use std::future::Future;
use std::time::Duration;

use countersign_testkit::cluster::TestCluster;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "test.countersign.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    #[schemars(range(max = 10))]
    size: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    color: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct WidgetStatus {
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
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .expect("step timed out")
}

/// The Widget CRD installed on `cluster` and a fresh namespace for one test.
async fn setup(cluster: &TestCluster) -> (String, Api<Widget>) {
    t(cluster.install_crd(&Widget::crd())).await.unwrap();
    let ns = t(cluster.create_namespace("patch")).await.unwrap();
    let api = Api::<Widget>::namespaced(cluster.client(), &ns);
    (ns, api)
}

/// Runs `test` on every backend, naming the backend when it fails.
async fn on_every_backend<F, Fut>(test: F)
where
    F: Fn(TestCluster) -> Fut,
    Fut: Future<Output = ()>,
{
    for cluster in t(TestCluster::every_backend()).await.unwrap() {
        eprintln!("-- on the {:?} apiserver", cluster.kind());
        test(cluster).await;
    }
}

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn apply(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
}

fn cfg(spec: Value) -> Value {
    json!({"apiVersion": "test.countersign.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec})
}

fn status_cfg(conds: Value) -> Value {
    json!({"apiVersion": "test.countersign.dev/v1", "kind": "Widget", "metadata": {"name": "w"}, "status": {"conditions": conds}})
}

fn cond_types(w: &Widget) -> Vec<(String, String)> {
    w.status
        .as_ref()
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn merge_and_json_patches() {
    on_every_backend(merge_and_json_patches_on).await;
}

async fn merge_and_json_patches_on(cluster: TestCluster) {
    let (_ns, api) = setup(&cluster).await;
    t(api.patch(
        "w",
        &apply("a"),
        &Patch::Apply(cfg(json!({"size": 1, "color": "red"}))),
    ))
    .await
    .unwrap();
    let w = t(api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"color": null, "size": 3}})),
    ))
    .await
    .unwrap();
    assert_eq!((w.spec.size, w.spec.color), (3, None));

    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/size", "value": 3},
        {"op": "add", "path": "/spec/tags", "value": ["x"]}
    ]))
    .unwrap();
    let w = t(api.patch("w", &PatchParams::default(), &Patch::<()>::Json(ops)))
        .await
        .unwrap();
    assert_eq!(w.spec.tags, ["x"]);
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/spec/size", "value": 4}])).unwrap();
    let e = api_err(
        t(api.patch("w", &PatchParams::default(), &Patch::<()>::Json(failing)))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);

    let e = api_err(
        t(api.patch("missing", &PatchParams::default(), &Patch::Merge(json!({}))))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));

    // Strategic merge patch is refused for custom resources, like the real server.
    let e = api_err(
        t(api.patch(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 1}})),
        ))
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 415);
}

#[tokio::test]
async fn strategic_merge_on_builtins_merges_containers_by_name() {
    on_every_backend(strategic_merge_on_builtins_merges_containers_by_name_on).await;
}

async fn strategic_merge_on_builtins_merges_containers_by_name_on(cluster: TestCluster) {
    let ns = t(cluster.create_namespace("patch")).await.unwrap();
    let pods = Api::<Pod>::namespaced(cluster.client(), &ns);
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}
        ]}}))
        .unwrap();
    t(pods.create(&PostParams::default(), &pod)).await.unwrap();
    let p = json!({"spec": {"containers": [{"name": "b", "image": "b:2"}]}});
    let pod = t(pods.patch("p", &PatchParams::default(), &Patch::Strategic(p)))
        .await
        .unwrap();
    let images: Vec<_> = pod
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.image.unwrap())
        .collect();
    assert_eq!(images, ["a:1", "b:2"]);
}

#[tokio::test]
async fn server_side_apply_merges_lists_and_removes_dropped_fields() {
    on_every_backend(server_side_apply_merges_lists_and_removes_dropped_fields_on).await;
}

async fn server_side_apply_merges_lists_and_removes_dropped_fields_on(cluster: TestCluster) {
    let (_ns, api) = setup(&cluster).await;
    // Apply creates when absent.
    let w = t(api.patch(
        "w",
        &apply("a"),
        &Patch::Apply(cfg(json!({"size": 1, "color": "red"}))),
    ))
    .await
    .unwrap();
    assert_eq!(w.spec.color.as_deref(), Some("red"));
    let mf = w.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("a"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // A manager re-applying without a field it set removes it.
    let w = t(api.patch("w", &apply("a"), &Patch::Apply(cfg(json!({"size": 1})))))
        .await
        .unwrap();
    assert_eq!(w.spec.color, None);

    // Conditions are a map-list keyed by type: two managers own one entry each.
    let ready = json!([{"type": "Ready", "status": "True"}]);
    t(api.patch_status("w", &apply("a").force(), &Patch::Apply(status_cfg(ready))))
        .await
        .unwrap();
    let synced = json!([{"type": "Synced", "status": "False"}]);
    let w = t(api.patch_status("w", &apply("b").force(), &Patch::Apply(status_cfg(synced))))
        .await
        .unwrap();
    assert_eq!(
        cond_types(&w),
        [
            ("Ready".into(), "True".into()),
            ("Synced".into(), "False".into())
        ]
    );

    // Manager a stops applying Ready: its entry goes, b's stays.
    let w = t(api.patch_status(
        "w",
        &apply("a").force(),
        &Patch::Apply(status_cfg(json!([]))),
    ))
    .await
    .unwrap();
    assert_eq!(
        cond_types(&w),
        [("Synced".to_string(), "False".to_string())]
    );
    let entry = w
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("b"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));

    // Applying status through the main resource is ignored.
    let mut with_status = cfg(json!({"size": 1}));
    with_status["status"] = json!({"conditions": [{"type": "X", "status": "True"}]});
    let w = t(api.patch("w", &apply("a"), &Patch::Apply(with_status)))
        .await
        .unwrap();
    assert_eq!(cond_types(&w).len(), 1);

    // Re-applying the same configuration is a no-op: same resourceVersion.
    let again = t(api.patch("w", &apply("a"), &Patch::Apply(cfg(json!({"size": 1})))))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, w.metadata.resource_version);
}

#[tokio::test]
async fn server_side_apply_conflicts_and_force() {
    on_every_backend(server_side_apply_conflicts_and_force_on).await;
}

async fn server_side_apply_conflicts_and_force_on(cluster: TestCluster) {
    let (ns, api) = setup(&cluster).await;
    t(api.patch("w", &apply("a"), &Patch::Apply(cfg(json!({"size": 1})))))
        .await
        .unwrap();
    let e = api_err(
        t(api.patch("w", &apply("b"), &Patch::Apply(cfg(json!({"size": 2})))))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert!(
        e.message.contains("conflict with \"a\"") && e.message.contains(".spec.size"),
        "{}",
        e.message
    );
    // Same value: shared ownership, no conflict.
    t(api.patch("w", &apply("b"), &Patch::Apply(cfg(json!({"size": 1})))))
        .await
        .unwrap();
    // Force takes the field over; then a is the one that conflicts.
    let w = t(api.patch(
        "w",
        &apply("c").force(),
        &Patch::Apply(cfg(json!({"size": 5}))),
    ))
    .await
    .unwrap();
    assert_eq!(w.spec.size, 5);
    let e = api_err(
        t(api.patch("w", &apply("a"), &Patch::Apply(cfg(json!({"size": 1})))))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 409);
    // An Update (merge patch) by another manager takes ownership without conflict.
    let mp = PatchParams {
        field_manager: Some("editor".into()),
        ..Default::default()
    };
    t(api.patch("w", &mp, &Patch::Merge(json!({"spec": {"size": 6}}))))
        .await
        .unwrap();
    let e = api_err(
        t(api.patch("w", &apply("c"), &Patch::Apply(cfg(json!({"size": 5})))))
            .await
            .unwrap_err(),
    );
    assert!(e.message.contains("\"editor\""), "{}", e.message);

    // fieldManager is required for apply (kube always sends it, so use a raw request).
    let req = http::Request::patch(format!(
        "/apis/test.countersign.dev/v1/namespaces/{ns}/widgets/w"
    ))
    .header("content-type", "application/apply-patch+yaml")
    .body(serde_json::to_vec(&cfg(json!({"size": 1}))).unwrap())
    .unwrap();
    let e = api_err(t(cluster.client().request::<Value>(req)).await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str()),
        (422, "Invalid"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("fieldManager: Required value"),
        "{}",
        e.message
    );

    // Apply to /status of a missing object is 404.
    let missing = Api::<Widget>::namespaced(cluster.client(), &ns);
    let mut c = status_cfg(json!([]));
    c["metadata"]["name"] = json!("nope");
    let e = api_err(
        t(missing.patch_status("nope", &apply("a"), &Patch::Apply(c)))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 404);
}

/// Out-of-range values are a 422 Invalid naming the field, and unknown fields under
/// `fieldValidation=Strict` a 400 naming the field, in the real server's words.
#[tokio::test]
async fn schema_validation_errors_are_422_invalid() {
    on_every_backend(schema_validation_errors_are_422_invalid_on).await;
}

async fn schema_validation_errors_are_422_invalid_on(cluster: TestCluster) {
    let (ns, api) = setup(&cluster).await;
    let e = api_err(
        t(api.patch("w", &apply("a"), &Patch::Apply(cfg(json!({"size": 11})))))
            .await
            .expect_err("size 11 is over the schema's maximum of 10"),
    );
    assert_eq!(
        (e.code, e.reason.as_str()),
        (422, "Invalid"),
        "{}",
        e.message
    );
    assert!(
        e.message
            .starts_with("Widget.test.countersign.dev \"w\" is invalid: "),
        "{}",
        e.message
    );
    assert!(e.message.contains("spec.size"), "{}", e.message);
    let causes = e.details.expect("an Invalid status has details").causes;
    assert!(
        causes
            .iter()
            .any(|c| c.field.contains("spec.size") && c.reason == "FieldValueInvalid"),
        "{causes:?}"
    );

    // A field the schema does not declare: create and update prune it (a 400 under
    // `fieldValidation=Strict`); server-side apply cannot type the object and answers 500,
    // whatever the validation directive.
    let strict_create = http::Request::post(format!(
        "/apis/test.countersign.dev/v1/namespaces/{ns}/widgets?fieldValidation=Strict"
    ))
    .header("content-type", "application/json")
    .body(
        serde_json::to_vec(&json!({
            "apiVersion": "test.countersign.dev/v1", "kind": "Widget", "metadata": {"name": "w2"},
            "spec": {"size": 1, "bogus": true}
        }))
        .unwrap(),
    )
    .unwrap();
    let e = api_err(
        t(cluster.client().request::<Value>(strict_create))
            .await
            .expect_err("an unknown field under Strict validation is refused"),
    );
    assert_eq!(
        (e.code, e.reason.as_str()),
        (400, "BadRequest"),
        "{}",
        e.message
    );
    assert!(
        e.message
            .contains("strict decoding error: unknown field \"spec.bogus\""),
        "{}",
        e.message
    );
    for params in [
        PatchParams::apply("a"),
        PatchParams::apply("a").validation_strict(),
        PatchParams::apply("a").validation_ignore(),
    ] {
        let e = api_err(
            t(api.patch(
                "w3",
                &params,
                &Patch::Apply(json!({
                    "apiVersion": "test.countersign.dev/v1", "kind": "Widget",
                    "metadata": {"name": "w3"}, "spec": {"size": 1, "bogus": true}
                })),
            ))
            .await
            .expect_err("apply cannot type a field the schema lacks"),
        );
        assert_eq!(e.code, 500, "{}", e.message);
        assert!(
            e.message
                .ends_with(".spec.bogus: field not declared in schema"),
            "{}",
            e.message
        );
    }
}

#[tokio::test]
async fn an_apply_with_a_stale_resource_version_is_refused() {
    on_every_backend(an_apply_with_a_stale_resource_version_is_refused_on).await;
}

/// The controller's status writes carry the resourceVersion of the copy they were decided
/// from; a server must refuse one decided from an older copy, forced or not.
async fn an_apply_with_a_stale_resource_version_is_refused_on(cluster: TestCluster) {
    let (_ns, api) = setup(&cluster).await;
    let first = t(api.patch("w", &apply("a"), &Patch::Apply(cfg(json!({"size": 1})))))
        .await
        .unwrap();
    let old_rv = first.metadata.resource_version.clone().expect("rv");
    let second = t(api.patch("w", &apply("a"), &Patch::Apply(cfg(json!({"size": 2})))))
        .await
        .unwrap();
    let new_rv = second.metadata.resource_version.clone().expect("rv");
    assert_ne!(old_rv, new_rv);
    let with_rv = |rv: &str| {
        json!({"apiVersion": "test.countersign.dev/v1", "kind": "Widget",
               "metadata": {"name": "w", "resourceVersion": rv},
               "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    };
    let e = api_err(
        t(api.patch_status("w", &apply("a").force(), &Patch::Apply(with_rv(&old_rv))))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.reason.as_str()),
        (409, "Conflict"),
        "{}",
        e.message
    );
    let unchanged = t(api.get("w")).await.unwrap();
    assert_eq!(cond_types(&unchanged), Vec::<(String, String)>::new());
    // The current one is accepted.
    let w = t(api.patch_status("w", &apply("a").force(), &Patch::Apply(with_rv(&new_rv))))
        .await
        .unwrap();
    assert_eq!(cond_types(&w), [("Ready".to_owned(), "True".to_owned())]);
}
