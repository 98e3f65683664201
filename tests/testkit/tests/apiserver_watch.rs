//! Fake apiserver: watches from a resourceVersion, bookmarks, selectors, timeouts, 410 after
//! compaction and kube's watcher recovering from it and from dropped connections.

use std::future::Future;
use std::time::Duration;

use countersign_testkit::apiserver::FakeApiServer;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher;
use serde_json::json;

async fn t<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(15), f)
        .await
        .expect("step timed out")
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
        ..Default::default()
    }
}

/// (event type, object name), bookmarks as ("BOOKMARK", rv).
fn summary(e: &WatchEvent<ConfigMap>) -> (String, String) {
    match e {
        WatchEvent::Added(o) => ("ADDED".into(), o.name_any()),
        WatchEvent::Modified(o) => ("MODIFIED".into(), o.name_any()),
        WatchEvent::Deleted(o) => ("DELETED".into(), o.name_any()),
        WatchEvent::Bookmark(b) => ("BOOKMARK".into(), b.metadata.resource_version.clone()),
        WatchEvent::Error(s) => ("ERROR".into(), s.code.to_string()),
    }
}

async fn next_n<S>(s: &mut S, n: usize) -> Vec<(String, String)>
where
    S: Stream<Item = kube::Result<WatchEvent<ConfigMap>>> + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        let e = t(s.next())
            .await
            .expect("stream ended")
            .expect("watch error");
        out.push(summary(&e));
    }
    out
}

fn s(a: &str, b: &str) -> (String, String) {
    (a.to_string(), b.to_string())
}

#[tokio::test]
async fn watch_replays_from_resource_version_then_streams() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    let a = t(api.create(&PostParams::default(), &cm("a", &[])))
        .await
        .unwrap();
    t(api.create(&PostParams::default(), &cm("b", &[])))
        .await
        .unwrap();
    let mut w = t(api.watch(&WatchParams::default(), &a.resource_version().unwrap()))
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_n(&mut w, 1).await, [s("ADDED", "b")]);
    t(api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "1"}})),
    ))
    .await
    .unwrap();
    t(api.delete("b", &DeleteParams::default())).await.unwrap();
    assert_eq!(
        next_n(&mut w, 2).await,
        [s("MODIFIED", "a"), s("DELETED", "b")]
    );

    // resourceVersion "0": a synthetic ADDED for every existing object first.
    let mut w0 = t(api.watch(&WatchParams::default(), "0"))
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_n(&mut w0, 1).await, [s("ADDED", "a")]);
}

#[tokio::test]
async fn bookmarks_and_timeout() {
    let server = t(FakeApiServer::start()).await.unwrap();
    server.set_bookmark_interval(Duration::from_millis(50));
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    let c = t(api.create(&PostParams::default(), &cm("a", &[])))
        .await
        .unwrap();
    let rv = c.resource_version().unwrap();
    let wp = WatchParams {
        bookmarks: true,
        ..Default::default()
    };
    let mut w = t(api.watch(&wp, &rv)).await.unwrap().boxed();
    assert_eq!(next_n(&mut w, 1).await, [s("BOOKMARK", &rv)]);

    // timeoutSeconds ends the stream.
    let wp = WatchParams {
        bookmarks: false,
        ..Default::default()
    }
    .timeout(1);
    let mut short = t(api.watch(&wp, &rv)).await.unwrap().boxed();
    assert!(
        tokio::time::timeout(Duration::from_secs(5), short.next())
            .await
            .expect("timeoutSeconds honoured")
            .is_none()
    );
    let bookmark_less = server
        .requests()
        .into_iter()
        .find(|r| r.watch && r.query.contains("timeoutSeconds=1"))
        .unwrap();
    assert!(!bookmark_less.query.contains("allowWatchBookmarks"));
}

#[tokio::test]
async fn selectors_apply_to_watches() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    let first = t(api.create(&PostParams::default(), &cm("in", &[("tier", "a")])))
        .await
        .unwrap();
    let wp = WatchParams::default().labels("tier=a");
    let mut w = t(api.watch(&wp, &first.resource_version().unwrap()))
        .await
        .unwrap()
        .boxed();
    t(api.create(&PostParams::default(), &cm("out", &[("tier", "b")])))
        .await
        .unwrap();
    t(api.patch(
        "in",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "b"}}})),
    ))
    .await
    .unwrap();
    t(api.patch(
        "out",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "a"}}})),
    ))
    .await
    .unwrap();
    assert_eq!(
        next_n(&mut w, 2).await,
        [s("DELETED", "in"), s("ADDED", "out")]
    );
}

#[tokio::test]
async fn too_old_resource_version_is_410_and_watcher_relists() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    let old = t(api.create(&PostParams::default(), &cm("old", &[])))
        .await
        .unwrap();
    t(api.create(&PostParams::default(), &cm("newer", &[])))
        .await
        .unwrap();
    server.compact();
    let mut w = t(api.watch(&WatchParams::default(), &old.resource_version().unwrap()))
        .await
        .unwrap()
        .boxed();
    match t(w.next())
        .await
        .expect("an event")
        .expect("a decoded event")
    {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }

    // kube's watcher: its watch falls behind the compaction, gets 410, relists and goes on.
    let cfg = watcher::Config::default()
        .labels("app=x")
        .disable_bookmarks();
    let mut events = watcher(api.clone(), cfg).boxed();
    let mut seen = Vec::new();
    loop {
        if let Ok(watcher::Event::InitDone) = t(events.next()).await.expect("watcher runs") {
            break;
        }
    }
    // The watcher's last rv now predates these changes it does not see.
    t(api.create(&PostParams::default(), &cm("unrelated", &[])))
        .await
        .unwrap();
    server.compact();
    server.faults().drop_watches();
    t(api.create(&PostParams::default(), &cm("wanted", &[("app", "x")])))
        .await
        .unwrap();
    let mut inits = 0;
    while !seen.contains(&"wanted".to_string()) {
        match t(events.next()).await.expect("watcher runs") {
            Ok(watcher::Event::Init) => inits += 1,
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => seen.push(o.name_any()),
            Ok(_) | Err(_) => {}
        }
    }
    assert_eq!(inits, 1, "the 410 made the watcher relist");
    let lists = server
        .requests()
        .iter()
        .filter(|r| {
            r.method == "GET" && r.path == "/api/v1/namespaces/default/configmaps" && !r.watch
        })
        .count();
    assert_eq!(lists, 2);
}

#[tokio::test]
async fn watcher_survives_dropped_watches() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    loop {
        if let watcher::Event::InitDone = t(events.try_next()).await.unwrap().unwrap() {
            break;
        }
    }
    // Seeing an event proves the watch is open before each drop.
    for i in 0..4 {
        if i > 0 {
            server.faults().drop_watches();
        }
        let name = format!("after-drop-{i}");
        t(api.create(&PostParams::default(), &cm(&name, &[])))
            .await
            .unwrap();
        loop {
            match t(events.try_next()).await.unwrap().unwrap() {
                watcher::Event::Apply(o) if o.name_any() == name => break,
                _ => {}
            }
        }
    }
    let watches = server.requests().iter().filter(|r| r.watch).count();
    assert_eq!(watches, 4, "the watcher re-watched after each drop");
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_events_end_bookmark() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    t(api.create(&PostParams::default(), &cm("pre", &[])))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut initial = Vec::new();
    loop {
        match t(events.try_next()).await.unwrap().unwrap() {
            watcher::Event::InitApply(o) => initial.push(o.name_any()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert_eq!(initial, ["pre"]);
    t(api.create(&PostParams::default(), &cm("post", &[])))
        .await
        .unwrap();
    loop {
        if let watcher::Event::Apply(o) = t(events.try_next()).await.unwrap().unwrap() {
            assert_eq!(o.name_any(), "post");
            break;
        }
    }
    let w = server.requests().into_iter().find(|r| r.watch).unwrap();
    assert!(w.query.contains("sendInitialEvents=true"), "{w:?}");
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.method == "GET" && !r.watch && r.path.ends_with("/configmaps"))
    );
}

#[tokio::test]
async fn metadata_apis_get_partial_object_metadata() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    t(api.create(&PostParams::default(), &cm("m", &[("a", "b")])))
        .await
        .unwrap();
    let meta = t(api.get_metadata("m")).await.unwrap();
    assert_eq!(meta.types.unwrap().kind, "PartialObjectMetadata");
    assert_eq!(meta.metadata.labels.unwrap()["a"], "b");
    let list = t(api.list_metadata(&Default::default())).await.unwrap();
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    let meta_api = Api::<PartialObjectMeta<ConfigMap>>::default_namespaced(server.client());
    let mut events = watcher(meta_api, watcher::Config::default()).boxed();
    loop {
        if let watcher::Event::InitApply(o) = t(events.try_next()).await.unwrap().unwrap() {
            assert_eq!(o.types.unwrap().kind, "PartialObjectMetadata");
            break;
        }
    }
}

#[tokio::test]
async fn shutdown_stops_serving_and_ends_watches() {
    let server = t(FakeApiServer::start()).await.unwrap();
    let api = Api::<ConfigMap>::default_namespaced(server.client());
    let c = t(api.create(&PostParams::default(), &cm("a", &[])))
        .await
        .unwrap();
    let wp = WatchParams {
        bookmarks: false,
        ..Default::default()
    };
    let mut w = t(api.watch(&wp, &c.resource_version().unwrap()))
        .await
        .unwrap()
        .boxed();
    let clone = server.clone();
    drop(server);
    assert!(
        t(api.get("a")).await.is_ok(),
        "a remaining clone keeps serving"
    );
    clone.shutdown();
    assert!(t(w.next()).await.is_none(), "open watches end");
    let fresh = Api::<ConfigMap>::default_namespaced(clone.client());
    assert!(
        t(fresh.get("a")).await.is_err(),
        "new connections are refused"
    );
}
