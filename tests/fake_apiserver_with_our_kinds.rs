//! Countersign's own kinds on the fake kube-apiserver, driven by unmodified kube-rs code:
//! a kube-runtime `Controller` reconciling AgentRuns through injected faults, schema and CEL
//! rejections through the API, and finalizer + owner-reference cascade semantics.

use std::sync::Arc;
use std::time::Duration;

use countersign_crds::conditions::{self, READY};
use countersign_crds::{AgentRun, RunPhase};
use countersign_testkit::apiserver::FakeApiServer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

/// Upper bound for every wait in these tests.
const WAIT: Duration = Duration::from_secs(30);
/// Set by the test to let the reconciler finish a run; proves the controller sees changes
/// made after its watch was dropped.
const ADVANCE: &str = "test.countersign.dev/advance";

async fn server() -> FakeApiServer {
    let server = tokio::time::timeout(WAIT, FakeApiServer::start())
        .await
        .expect("start in time")
        .expect("server starts");
    for crd in countersign_crds::all() {
        server.install_crd(&crd).expect("CRD installs");
    }
    server
}

fn example_run(name: &str) -> AgentRun {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/agentrun.yaml"
    ))
    .expect("example");
    let mut run: AgentRun = serde_yaml::from_str(&text).expect("example parses");
    run.metadata.name = Some(name.to_owned());
    run
}

/// Waits until `pred` holds for the named AgentRun, as seen by a fresh watcher.
async fn wait_for_run(
    client: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&AgentRun) -> bool,
) -> AgentRun {
    let api: Api<AgentRun> = Api::default_namespaced(client.clone());
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).applied_objects().boxed();
    tokio::time::timeout(WAIT, async {
        while let Some(event) = stream.next().await {
            if let Ok(run) = event
                && pred(&run)
            {
                return run;
            }
        }
        panic!("watch ended before {what}");
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

struct Ctx {
    client: Client,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct ReconcileError(#[from] kube::Error);

/// Pending → Running at once; Running → Succeeded once the test sets the ADVANCE annotation.
async fn reconcile(run: Arc<AgentRun>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let phase = run.status.as_ref().map(|s| s.phase).unwrap_or_default();
    let next = match phase {
        RunPhase::Pending => RunPhase::Running,
        RunPhase::Running if run.annotations().contains_key(ADVANCE) => RunPhase::Succeeded,
        _ => return Ok(Action::await_change()),
    };
    let mut conds = run
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    conditions::apply_readiness(
        &mut conds,
        &next.readiness("reconciled by the test"),
        run.metadata.generation,
        now,
    );
    let status = json!({
        "apiVersion": "countersign.dev/v1alpha1",
        "kind": "AgentRun",
        "status": {"phase": next, "observedGeneration": run.metadata.generation, "conditions": conds}
    });
    let api: Api<AgentRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    api.patch_status(
        &run.name_any(),
        &PatchParams::apply("countersign-test").force(),
        &Patch::Apply(&status),
    )
    .await?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<AgentRun>, err: &ReconcileError, _: Arc<Ctx>) -> Action {
    eprintln!("reconcile failed (requeued): {err}");
    Action::requeue(Duration::from_millis(50))
}

#[tokio::test]
async fn a_controller_reconciles_an_agent_run_through_a_conflict_and_a_dropped_watch() {
    let server = server().await;
    let client = server.client();
    // The controller's first status write answers 409 Conflict.
    server.faults().force_conflicts("agentruns", 1);

    let controller = Controller::new(
        Api::<AgentRun>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(
        reconcile,
        error_policy,
        Arc::new(Ctx {
            client: client.clone(),
        }),
    )
    .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let api: Api<AgentRun> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &example_run("run-a"))
        .await
        .expect("create");

    let running = wait_for_run(&client, "run-a", "phase Running", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == RunPhase::Running)
    })
    .await;
    let status = running.status.expect("status");
    assert_eq!(
        conditions::find(&status.conditions, READY)
            .expect("Ready")
            .status,
        "Unknown"
    );
    assert!(conditions::is_true(
        &status.conditions,
        conditions::RECONCILING
    ));

    // Cut every open watch, then change the object: the controller must re-watch to see it.
    let watches_before = server
        .requests()
        .iter()
        .filter(|r| r.watch && r.path.ends_with("/agentruns"))
        .count();
    server.faults().drop_watches();
    let annotate = json!({"metadata": {"annotations": {ADVANCE: "true"}}});
    api.patch("run-a", &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .expect("annotate");

    let done = wait_for_run(&client, "run-a", "phase Succeeded", |r| {
        r.status
            .as_ref()
            .is_some_and(|s| s.phase == RunPhase::Succeeded)
    })
    .await;
    let status = done.status.expect("status");
    assert!(
        conditions::is_true(&status.conditions, READY),
        "{:?}",
        status.conditions
    );
    assert!(
        conditions::find(&status.conditions, conditions::RECONCILING).is_none(),
        "SSA removed Reconciling: {:?}",
        status.conditions
    );
    assert_eq!(status.observed_generation, done.metadata.generation);

    let log = server.requests();
    assert!(
        log.iter()
            .any(|r| r.method == "PATCH" && r.path.ends_with("/status") && r.status == 409),
        "the injected conflict was answered"
    );
    let watches_after = log
        .iter()
        .filter(|r| r.watch && r.path.ends_with("/agentruns"))
        .count();
    assert!(
        watches_after > watches_before,
        "the controller re-established its watch"
    );
    controller.abort();
}

#[tokio::test]
async fn schema_and_cel_violations_are_rejected_by_the_api_with_the_field_named() {
    let server = server().await;
    let api: Api<AgentRun> = Api::default_namespaced(server.client());

    let mut too_many_retries = example_run("bad-retries");
    too_many_retries.spec.retries = 11;
    let err = api
        .create(&PostParams::default(), &too_many_retries)
        .await
        .expect_err("retries 11 rejected");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("spec.retries")
            && status.message.contains("less than or equal to 10"),
        "{}",
        status.message
    );

    api.create(&PostParams::default(), &example_run("good"))
        .await
        .expect("valid run");
    let change_agent = json!({"spec": {"agentRef": {"name": "frontend"}}});
    let err = api
        .patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(&change_agent),
        )
        .await
        .expect_err("immutable");
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("spec.agentRef")
            && status.message.contains("agentRef is immutable"),
        "{}",
        status.message
    );

    let cancel = json!({"spec": {"cancelRequested": true}});
    let updated = api
        .patch("good", &PatchParams::default(), &Patch::Merge(&cancel))
        .await
        .expect("mutable field");
    assert!(updated.spec.cancel_requested);
    assert_eq!(
        updated.metadata.generation,
        Some(2),
        "a spec change bumps the generation"
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_and_owned_children_are_collected_with_the_run() {
    let server = server().await;
    let client = server.client();
    let runs: Api<AgentRun> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());

    let mut run = example_run("owner");
    run.metadata.finalizers = Some(vec!["countersign.dev/cleanup".to_owned()]);
    let run = runs
        .create(&PostParams::default(), &run)
        .await
        .expect("create run");
    let owner = OwnerReference {
        api_version: AgentRun::api_version(&()).into_owned(),
        kind: AgentRun::kind(&()).into_owned(),
        name: run.name_any(),
        uid: run.uid().expect("uid"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let mut secret = Secret::default();
    secret.metadata.name = Some("owner-attempt-1".into());
    secret.metadata.owner_references = Some(vec![owner.clone()]);
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create secret");
    let mut unrelated = ConfigMap::default();
    unrelated.metadata.name = Some("unrelated".into());
    config_maps
        .create(&PostParams::default(), &unrelated)
        .await
        .expect("create configmap");

    runs.delete("owner", &DeleteParams::default())
        .await
        .expect("delete");
    let held = runs
        .get("owner")
        .await
        .expect("still there while the finalizer is set");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert!(
        secrets
            .get_opt("owner-attempt-1")
            .await
            .expect("get")
            .is_some(),
        "children stay while the owner exists"
    );

    let release = json!({"metadata": {"finalizers": null}});
    runs.patch("owner", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .expect("remove finalizer");
    assert!(
        runs.get_opt("owner").await.expect("get").is_none(),
        "gone once the last finalizer is removed"
    );

    let gone = tokio::time::timeout(WAIT, async {
        let mut events = watcher(secrets.clone(), watcher::Config::default()).boxed();
        loop {
            if secrets
                .get_opt("owner-attempt-1")
                .await
                .expect("get")
                .is_none()
            {
                return;
            }
            // Wake on the next change to Secrets instead of sleeping.
            let _ = events.next().await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the owned Secret was garbage-collected");
    assert!(
        config_maps
            .get_opt("unrelated")
            .await
            .expect("get")
            .is_some(),
        "unowned objects stay"
    );
}
