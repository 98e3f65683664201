//! Fake apiserver: CRUD, error bodies, status subresource, generation, finalizers, cascade,
//! selectors, pagination, events mapping and patches, all through a real `kube::Client`.

use std::future::Future;
use std::time::Duration;

use countersign_testkit::apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq, Default)]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    conditions: Vec<Cond>,
}

#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
pub struct Cond {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// Every await in these tests is bounded.
async fn t<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .expect("step timed out")
}

async fn server_with_widgets() -> (FakeApiServer, Api<Widget>) {
    let server = t(FakeApiServer::start()).await.unwrap();
    server.install_crd(&Widget::crd()).unwrap();
    let api = Api::<Widget>::default_namespaced(server.client());
    (server, api)
}

fn widget(name: &str, size: i32) -> Widget {
    Widget::new(name, WidgetSpec { size, color: None })
}

fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some([("k".to_string(), "v".to_string())].into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn crud_and_error_bodies() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let cms = Api::<ConfigMap>::default_namespaced(server.client());
    let created = t(cms.create(&PostParams::default(), &cm("a", &[])))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some()
    );
    assert_eq!(meta.namespace.as_deref(), Some("default"));

    let e = api_err(
        t(cms.create(&PostParams::default(), &cm("a", &[])))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists"));

    let e = api_err(t(cms.get("missing")).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (404, "NotFound"));
    assert_eq!(e.message, "configmaps \"missing\" not found");
    let d = e.details.unwrap();
    assert_eq!(
        (d.name.as_str(), d.kind.as_str()),
        ("missing", "configmaps")
    );

    // Optimistic concurrency: a replace with a stale resourceVersion is a Conflict.
    let mut fresh = created.clone();
    fresh.data = Some([("k".to_string(), "v2".to_string())].into());
    let replaced = t(cms.replace("a", &PostParams::default(), &fresh))
        .await
        .unwrap();
    assert_ne!(replaced.resource_version(), created.resource_version());
    let e = api_err(
        t(cms.replace("a", &PostParams::default(), &fresh))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));

    // Namespaces must exist.
    let other = Api::<ConfigMap>::namespaced(server.client(), "nope");
    let e = api_err(
        t(other.create(&PostParams::default(), &cm("a", &[])))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "namespaces \"nope\" not found")
    );
    server.create_namespace("nope").unwrap();
    t(other.create(&PostParams::default(), &cm("a", &[])))
        .await
        .unwrap();

    // generateName
    let mut g = cm("", &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = t(cms.create(&PostParams::default(), &g)).await.unwrap();
    assert!(made.name_any().starts_with("gen-") && made.name_any().len() == 9);

    // Invalid names are 422.
    let e = api_err(
        t(cms.create(&PostParams::default(), &cm("Bad_Name", &[])))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));

    // Delete with a wrong uid precondition fails, the right one succeeds.
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("wrong".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let e = api_err(t(cms.delete("a", &dp)).await.unwrap_err());
    assert_eq!(e.code, 409);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: created.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    t(cms.delete("a", &dp)).await.unwrap();
    assert!(t(cms.get_opt("a")).await.unwrap().is_none());
    assert!(
        server
            .get_raw("", "v1", "namespaces", "", "kube-system")
            .is_some()
    );
}

#[tokio::test]
async fn status_subresource_and_generation() {
    let (server, api) = server_with_widgets().await;
    let mut w = widget("w", 1);
    w.status = Some(WidgetStatus {
        phase: Some("ignored".into()),
        conditions: vec![],
    });
    let created = t(api.create(&PostParams::default(), &w)).await.unwrap();
    assert_eq!(created.status, None, "status is dropped on create");
    assert_eq!(created.metadata.generation, Some(1));

    // Status writes change only status and keep generation.
    let mut s = created.clone();
    s.status = Some(WidgetStatus {
        phase: Some("Ready".into()),
        conditions: vec![],
    });
    s.spec.size = 99;
    let after = t(api.replace_status("w", &PostParams::default(), &s))
        .await
        .unwrap();
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Ready")
    );
    assert_eq!(after.spec.size, 1);
    assert_eq!(after.metadata.generation, Some(1));

    // Main writes ignore status; spec changes bump generation, metadata changes do not.
    let p = json!({"spec": {"size": 2}, "status": {"phase": "Hacked"}});
    let after = t(api.patch("w", &PatchParams::default(), &Patch::Merge(&p)))
        .await
        .unwrap();
    assert_eq!(after.spec.size, 2);
    assert_eq!(after.status.unwrap().phase.as_deref(), Some("Ready"));
    assert_eq!(after.metadata.generation, Some(2));
    let p = json!({"metadata": {"labels": {"x": "y"}}});
    let after = t(api.patch("w", &PatchParams::default(), &Patch::Merge(&p)))
        .await
        .unwrap();
    assert_eq!(after.metadata.generation, Some(2));

    // All patch types work on /status.
    let p = json!([{"op": "replace", "path": "/status/phase", "value": "Done"}]);
    let jp: json_patch::Patch = serde_json::from_value(p).unwrap();
    let after = t(api.patch_status("w", &PatchParams::default(), &Patch::<()>::Json(jp)))
        .await
        .unwrap();
    assert_eq!(
        after.status.as_ref().unwrap().phase.as_deref(),
        Some("Done")
    );

    // A no-op write does not change the resourceVersion.
    let same = t(api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    ))
    .await
    .unwrap();
    assert_eq!(same.resource_version(), after.resource_version());

    let raw = server
        .get_raw("test.countersign.dev", "v1", "widgets", "default", "w")
        .unwrap();
    assert_eq!(raw["kind"], "Widget");
}

#[tokio::test]
async fn finalizers_cascade_and_orphan() {
    let (server, api) = server_with_widgets().await;
    let cms = Api::<ConfigMap>::default_namespaced(server.client());
    let mut w = widget("owner", 1);
    w.metadata.finalizers = Some(vec!["test/cleanup".into()]);
    let owner = t(api.create(&PostParams::default(), &w)).await.unwrap();
    let oref = owner.controller_owner_ref(&()).unwrap();
    for (name, finalizer) in [("dep", None), ("dep-fin", Some("test/keep"))] {
        let mut c = cm(name, &[]);
        c.metadata.owner_references = Some(vec![oref.clone()]);
        c.metadata.finalizers = finalizer.map(|f: &str| vec![f.to_string()]);
        t(cms.create(&PostParams::default(), &c)).await.unwrap();
    }

    // Deleting an object with finalizers only marks it.
    let res = t(api.delete("owner", &DeleteParams::default()))
        .await
        .unwrap();
    let marked = res.left().expect("object with finalizers is returned");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.deletion_grace_period_seconds, Some(0));
    assert!(
        t(cms.get("dep")).await.is_ok(),
        "dependents stay until the owner is gone"
    );

    // No new finalizers on a deleting object.
    let p = json!({"metadata": {"finalizers": ["test/cleanup", "test/other"]}});
    let e = api_err(
        t(api.patch("owner", &PatchParams::default(), &Patch::Merge(&p)))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));

    // Removing the last finalizer removes it and cascades to dependents.
    let p = json!({"metadata": {"finalizers": null}});
    t(api.patch("owner", &PatchParams::default(), &Patch::Merge(&p)))
        .await
        .unwrap();
    assert!(t(api.get_opt("owner")).await.unwrap().is_none());
    assert!(t(cms.get_opt("dep")).await.unwrap().is_none());
    let kept = t(cms.get("dep-fin")).await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_some(),
        "dependents with finalizers are marked"
    );

    // Orphan propagation keeps dependents and drops the owner reference.
    let owner = t(api.create(&PostParams::default(), &widget("owner2", 1)))
        .await
        .unwrap();
    let mut c = cm("child", &[]);
    c.metadata.owner_references = Some(vec![OwnerReference {
        ..owner.controller_owner_ref(&()).unwrap()
    }]);
    t(cms.create(&PostParams::default(), &c)).await.unwrap();
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    t(api.delete("owner2", &dp)).await.unwrap();
    let child = t(cms.get("child")).await.unwrap();
    assert!(
        child
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

#[tokio::test]
async fn namespace_deletion_removes_contents() {
    let server = t(FakeApiServer::start()).await.unwrap();
    server.create_namespace("tmp").unwrap();
    let cms = Api::<ConfigMap>::namespaced(server.client(), "tmp");
    t(cms.create(&PostParams::default(), &cm("a", &[])))
        .await
        .unwrap();
    let nss = Api::<k8s_openapi::api::core::v1::Namespace>::all(server.client());
    t(nss.delete("tmp", &DeleteParams::default()))
        .await
        .unwrap();
    assert!(t(nss.get_opt("tmp")).await.unwrap().is_none());
    assert!(server.get_raw("", "v1", "configmaps", "tmp", "a").is_none());
}

#[tokio::test]
async fn list_selectors_and_pagination() {
    let server = t(FakeApiServer::start()).await.unwrap();
    server.create_namespace("other").unwrap();
    let cms = Api::<ConfigMap>::default_namespaced(server.client());
    for (i, tier) in ["a", "b", "c", "a", "b"].iter().enumerate() {
        let name = format!("cm-{i}");
        let mut labels = vec![("tier", *tier)];
        if i % 2 == 0 {
            labels.push(("even", "yes"));
        }
        t(cms.create(&PostParams::default(), &cm(&name, &labels)))
            .await
            .unwrap();
    }
    let other = Api::<ConfigMap>::namespaced(server.client(), "other");
    t(other.create(&PostParams::default(), &cm("elsewhere", &[("tier", "a")])))
        .await
        .unwrap();

    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items.iter().map(|c| c.name_any()).collect::<Vec<_>>()
    };
    let sel = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(t(cms.list(&sel("tier=a"))).await.unwrap()),
        ["cm-0", "cm-3"]
    );
    assert_eq!(
        names(t(cms.list(&sel("tier!=a"))).await.unwrap()),
        ["cm-1", "cm-2", "cm-4"]
    );
    assert_eq!(
        names(t(cms.list(&sel("tier in (b,c)"))).await.unwrap()),
        ["cm-1", "cm-2", "cm-4"]
    );
    assert_eq!(
        names(t(cms.list(&sel("tier notin (b,c),even"))).await.unwrap()),
        ["cm-0"]
    );
    assert_eq!(
        names(t(cms.list(&sel("!even"))).await.unwrap()),
        ["cm-1", "cm-3"]
    );
    let by_name = ListParams::default().fields("metadata.name=cm-2");
    assert_eq!(names(t(cms.list(&by_name)).await.unwrap()), ["cm-2"]);

    // Fields the real server does not index are refused, not silently matched.
    let unsupported = ListParams::default().fields("data.k=v");
    let e = api_err(t(cms.list(&unsupported)).await.unwrap_err());
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: data.k")
    );

    let all = Api::<ConfigMap>::all(server.client());
    assert_eq!(t(all.list(&sel("tier=a"))).await.unwrap().items.len(), 3);
    let ns_field = ListParams::default().fields("metadata.namespace=other");
    assert_eq!(names(t(all.list(&ns_field)).await.unwrap()), ["elsewhere"]);

    // Pagination: pages of 2 at the first page's resourceVersion, even when things change.
    let first = t(cms.list(&ListParams::default().limit(2))).await.unwrap();
    assert_eq!(names(first.clone()), ["cm-0", "cm-1"]);
    let token = first.metadata.continue_.clone().expect("more pages");
    t(cms.delete("cm-3", &DeleteParams::default()))
        .await
        .unwrap();
    let second = t(cms.list(&ListParams::default().limit(2).continue_token(&token)))
        .await
        .unwrap();
    assert_eq!(
        names(second.clone()),
        ["cm-2", "cm-3"],
        "continue serves the original snapshot"
    );
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    let last = t(cms.list(
        &ListParams::default()
            .limit(2)
            .continue_token(second.metadata.continue_.as_deref().unwrap()),
    ))
    .await
    .unwrap();
    assert_eq!(names(last.clone()), ["cm-4"]);
    assert!(last.metadata.continue_.is_none());

    // After compaction a continue token is 410 Expired.
    let page = t(cms.list(&ListParams::default().limit(1))).await.unwrap();
    t(cms.create(&PostParams::default(), &cm("late", &[])))
        .await
        .unwrap();
    server.compact();
    let e = api_err(
        t(cms.list(
            &ListParams::default()
                .limit(1)
                .continue_token(page.metadata.continue_.as_deref().unwrap()),
        ))
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn events_are_served_in_both_versions() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let pods = Api::<Pod>::default_namespaced(server.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}})).unwrap();
    let pod = t(pods.create(&PostParams::default(), &pod)).await.unwrap();
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Pending")
    );

    let v1 = Api::<EventV1>::default_namespaced(server.client());
    let ev = EventV1 {
        metadata: ObjectMeta {
            name: Some("p.1".into()),
            ..Default::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        regarding: Some(pod.object_ref(&())),
        reason: Some("Started".into()),
        note: Some("the pod started".into()),
        type_: Some("Normal".into()),
        action: Some("Start".into()),
        reporting_controller: Some("countersign.dev/test".into()),
        reporting_instance: Some("test-0".into()),
        ..Default::default()
    };
    t(v1.create(&PostParams::default(), &ev)).await.unwrap();

    let core = Api::<CoreEvent>::default_namespaced(server.client());
    let lp = ListParams::default().fields(&format!(
        "involvedObject.name=p,involvedObject.uid={}",
        pod.uid().unwrap()
    ));
    let listed = t(core.list(&lp)).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let e = &listed.items[0];
    assert_eq!(e.message.as_deref(), Some("the pod started"));
    assert_eq!(e.involved_object.kind.as_deref(), Some("Pod"));
    assert_eq!(
        e.reporting_component.as_deref(),
        Some("countersign.dev/test")
    );
    let miss = ListParams::default().fields("involvedObject.name=other");
    assert!(t(core.list(&miss)).await.unwrap().items.is_empty());
    let back = t(v1.get("p.1")).await.unwrap();
    assert_eq!(back.note.as_deref(), Some("the pod started"));

    server
        .set_pod_phase("default", "p", "Running")
        .await
        .unwrap();
    server
        .terminate_pod("default", "p", 3, "boom")
        .await
        .unwrap();
    let done = t(pods.get("p")).await.unwrap();
    let st = done.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Failed"));
    let term = st.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (
            term.exit_code,
            term.message.as_deref(),
            term.reason.as_deref()
        ),
        (3, Some("boom"), Some("Error"))
    );
}

#[tokio::test]
async fn delete_collection_preconditions_and_unconditional_updates() {
    let (server, api) = server_with_widgets().await;
    let cms = Api::<ConfigMap>::default_namespaced(server.client());
    for (name, tier) in [("x1", "x"), ("x2", "x"), ("y1", "y")] {
        t(cms.create(&PostParams::default(), &cm(name, &[("tier", tier)])))
            .await
            .unwrap();
    }
    t(cms.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("tier=x"),
    ))
    .await
    .unwrap();
    let left: Vec<String> = t(cms.list(&ListParams::default()))
        .await
        .unwrap()
        .items
        .iter()
        .map(|c| c.name_any())
        .collect();
    assert_eq!(left, ["y1"]);

    // A resourceVersion precondition on delete.
    let y1 = t(cms.get("y1")).await.unwrap();
    let stale = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: Some("1".into()),
        }),
        ..Default::default()
    };
    assert_eq!(
        api_err(t(cms.delete("y1", &stale)).await.unwrap_err()).code,
        409
    );
    let fresh = DeleteParams {
        preconditions: Some(Preconditions {
            uid: None,
            resource_version: y1.resource_version(),
        }),
        ..Default::default()
    };
    t(cms.delete("y1", &fresh)).await.unwrap();

    // Custom resources need a resourceVersion on PUT; built-ins allow unconditional updates.
    let w = t(api.create(&PostParams::default(), &widget("w", 1)))
        .await
        .unwrap();
    let mut unconditional = w.clone();
    unconditional.metadata.resource_version = None;
    let e = api_err(
        t(api.replace("w", &PostParams::default(), &unconditional))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));
    t(api.replace("w", &PostParams::default(), &w))
        .await
        .unwrap();
    let mut c = cm("free", &[]);
    t(cms.create(&PostParams::default(), &c)).await.unwrap();
    c.data = Some([("k".to_string(), "changed".to_string())].into());
    t(cms.replace("free", &PostParams::default(), &c))
        .await
        .unwrap();
}
