//! Fake apiserver: server-side Table printing and the real kubectl binary driving it
//! (apply with server-side strict validation, get with printer columns, -o yaml, describe with
//! events, get -w, delete).

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use countersign_testkit::apiserver::FakeApiServer;
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as RecordedEvent, EventType, Recorder, Reporter};
use kube::{CustomResource, CustomResourceExt, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, JsonSchema, PartialEq)]
#[kube(
    group = "test.countersign.dev",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus",
    shortname = "wdg",
    category = "countersign",
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct WidgetSpec {
    size: i32,
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
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("step timed out")
}

const TABLE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

async fn get_table(server: &FakeApiServer, path: &str) -> Value {
    let req = http::Request::get(path)
        .header("accept", TABLE)
        .body(Vec::new())
        .unwrap();
    t(server.client().request::<Value>(req)).await.unwrap()
}

fn set_ready(status: &str) -> Patch<Value> {
    Patch::Apply(json!({
        "apiVersion": "test.countersign.dev/v1", "kind": "Widget",
        "status": {"conditions": [{"type": "Ready", "status": status}]}
    }))
}

#[tokio::test]
async fn table_output_for_custom_and_builtin_kinds() {
    let server = t(FakeApiServer::start()).await.unwrap();
    server.install_crd(&Widget::crd()).unwrap();
    let api = Api::<Widget>::default_namespaced(server.client());
    t(api.create(
        &PostParams::default(),
        &Widget::new("w", WidgetSpec { size: 3 }),
    ))
    .await
    .unwrap();
    t(api.patch_status("w", &PatchParams::apply("test"), &set_ready("True")))
        .await
        .unwrap();

    let table = get_table(
        &server,
        "/apis/test.countersign.dev/v1/namespaces/default/widgets",
    )
    .await;
    assert_eq!(table["kind"], "Table");
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Size", "Ready", "Age"]);
    let row = &table["rows"][0];
    assert_eq!(
        row["cells"].as_array().unwrap()[0..3],
        [json!("w"), json!(3), json!("True")]
    );
    assert!(
        row["cells"][3].as_str().unwrap().ends_with('s'),
        "age is human readable: {}",
        row["cells"][3]
    );
    assert_eq!(row["object"]["kind"], "PartialObjectMetadata");
    assert!(table["metadata"]["resourceVersion"].is_string());

    let one = get_table(
        &server,
        "/apis/test.countersign.dev/v1/namespaces/default/widgets/w?includeObject=Object",
    )
    .await;
    assert_eq!(one["rows"][0]["object"]["spec"]["size"], 3);

    let pods = Api::<Pod>::default_namespaced(server.client());
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    t(pods.create(&PostParams::default(), &pod)).await.unwrap();
    server
        .set_pod_phase("default", "p", "Running")
        .await
        .unwrap();
    let table = get_table(&server, "/api/v1/namespaces/default/pods").await;
    let cols: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols[..5], ["Name", "Ready", "Status", "Restarts", "Age"]);
    assert_eq!(
        table["rows"][0]["cells"].as_array().unwrap()[0..4],
        [json!("p"), json!("1/1"), json!("Running"), json!(0)]
    );

    // A Table watch streams Table-wrapped events.
    let rv = table["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let req = http::Request::get(format!(
        "/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}"
    ))
    .header("accept", TABLE)
    .body(Vec::new())
    .unwrap();
    let mut lines = t(server.client().request_stream(req))
        .await
        .unwrap()
        .lines();
    server
        .terminate_pod("default", "p", 0, "done")
        .await
        .unwrap();
    let line = t(lines.try_next()).await.unwrap().unwrap();
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["kind"], "Table");
    assert_eq!(ev["object"]["rows"][0]["cells"][2], "Completed");
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bin);
        c.env("KUBECONFIG", &self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        c.stdin(Stdio::null()).kill_on_drop(true);
        c
    }

    /// Runs kubectl to completion; panics with its output if it fails.
    async fn run(&self, args: &[&str]) -> String {
        let out = t(self.command(args).output()).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
        );
        if !stderr.is_empty() {
            eprintln!("kubectl {args:?} stderr: {stderr}");
        }
        stdout
    }
}

#[tokio::test]
async fn real_kubectl_drives_the_fake() {
    // The kubectl built with the real control plane; under CI=true a missing one fails.
    let Some(bin) = t(countersign_testkit::controlplane::kubectl())
        .await
        .unwrap()
    else {
        eprintln!(
            "\n*** NOTE: SKIPPED real_kubectl_drives_the_fake: no kubectl (./scripts/controlplane \
             builds one) ***\n"
        );
        return;
    };
    let server = t(FakeApiServer::start()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig_yaml()).unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    let crd_file = manifests.join("crd.yaml");
    std::fs::write(&crd_file, serde_yaml::to_string(&Widget::crd()).unwrap()).unwrap();
    let cr = |size: i32| {
        format!(
            "apiVersion: test.countersign.dev/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: {size}\n"
        )
    };
    std::fs::write(manifests.join("widget.yaml"), cr(3)).unwrap();
    let k = Kubectl {
        bin,
        kubeconfig,
        cache: dir.path().join("cache"),
    };

    // A CRD and its CRs in one apply only work once the CRD is known, as with a real cluster.
    let out = k.run(&["apply", "-f", crd_file.to_str().unwrap()]).await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/widgets.test.countersign.dev created"
        ),
        "{out}"
    );
    let out = k.run(&["apply", "-f", manifests.to_str().unwrap()]).await;
    assert!(
        out.contains("widget.test.countersign.dev/w1 created"),
        "{out}"
    );
    let create = server
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/widgets"))
        .unwrap();
    assert!(
        create.query.contains("fieldValidation=Strict"),
        "kubectl relies on server-side validation: {create:?}"
    );
    std::fs::write(manifests.join("widget.yaml"), cr(4)).unwrap();
    let out = k.run(&["apply", "-f", manifests.to_str().unwrap()]).await;
    assert!(
        out.contains("widget.test.countersign.dev/w1 configured"),
        "{out}"
    );

    // Built-ins go through kubectl's strategic merge patch on re-apply.
    let cm_file = dir.path().join("cm.yaml");
    let cm = |v: &str| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  labels:\n    app: x\ndata:\n  key: {v}\n"
        )
    };
    std::fs::write(&cm_file, cm("one")).unwrap();
    k.run(&["apply", "-f", cm_file.to_str().unwrap()]).await;
    std::fs::write(&cm_file, cm("two")).unwrap();
    let out = k.run(&["apply", "-f", cm_file.to_str().unwrap()]).await;
    assert!(out.contains("configmap/settings configured"), "{out}");
    assert_eq!(
        server
            .get_raw("", "v1", "configmaps", "default", "settings")
            .unwrap()["data"]["key"],
        "two"
    );

    let out = k.run(&["get", "widgets"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "READY", "AGE"], "{out}");
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..2], ["w1", "4"], "{out}");
    // Categories and server-side apply (as `kubectl apply --server-side -f crds/` does).
    let out = k.run(&["get", "countersign"]).await;
    assert!(out.lines().any(|l| l.starts_with("w1 ")), "{out}");
    let out = k
        .run(&["apply", "--server-side", "-f", crd_file.to_str().unwrap()])
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    let out = k.run(&["get", "wdg", "w1", "-o", "yaml"]).await;
    assert!(
        out.contains("kind: Widget") && out.contains("size: 4") && out.contains("uid:"),
        "{out}"
    );

    let widgets = Api::<Widget>::default_namespaced(server.client());
    let w = t(widgets.get("w1")).await.unwrap();
    // kube's Recorder writes events.k8s.io/v1 Events; kubectl describe reads core/v1 ones.
    let reporter = Reporter {
        controller: "countersign.dev/test".into(),
        instance: Some("test-0".into()),
    };
    let recorder = Recorder::new(server.client(), reporter);
    let ev = RecordedEvent {
        type_: EventType::Normal,
        reason: "Provisioned".into(),
        note: Some("widget is being built".into()),
        action: "Provision".into(),
        secondary: None,
    };
    for _ in 0..2 {
        t(recorder.publish(&ev, &w.object_ref(&()))).await.unwrap();
    }
    let stored = server.list_raw("events.k8s.io", "v1", "events", Some("default"));
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["series"]["count"], 2);
    let out = k.run(&["describe", "widget", "w1"]).await;
    assert!(
        out.contains("Events:")
            && out.contains("Provisioned")
            && out.contains("widget is being built"),
        "{out}"
    );

    // kubectl get -w prints the change.
    let mut child = k
        .command(&["get", "widgets", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first_row = loop {
        let line = t(lines.next_line())
            .await
            .unwrap()
            .expect("kubectl get -w output");
        if line.starts_with("w1") {
            break line;
        }
    };
    assert!(!first_row.contains("True"), "{first_row}");
    t(widgets.patch_status("w1", &PatchParams::apply("test"), &set_ready("True")))
        .await
        .unwrap();
    let changed = t(lines.next_line())
        .await
        .unwrap()
        .expect("a row for the change");
    let cells: Vec<&str> = changed.split_whitespace().collect();
    assert_eq!(cells[..3], ["w1", "4", "True"], "{changed}");
    child.kill().await.unwrap();

    let out = k.run(&["delete", "widget", "w1"]).await;
    assert!(
        out.contains("widget.test.countersign.dev \"w1\" deleted"),
        "{out}"
    );
    assert!(t(widgets.get_opt("w1")).await.unwrap().is_none());
}
