//! Every manifest we ship (examples/, policies/manifests/, policies/examples/) must be
//! accepted by the generated CRDs — on the real kube-apiserver (CI always runs it) and on the
//! test kit's fake — with no unknown fields, no schema violations and no failing CEL rule, and
//! must deserialise into the Rust types. Broken manifests must be refused with the server's
//! message naming the field, and every CEL rule in the CRDs is exercised by an object that
//! violates it.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use countersign_testkit::cluster::TestCluster;
use serde_json::{Value, json};

/// Longest wait for one API call.
const WAIT: Duration = Duration::from_secs(30);

fn manifest_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["examples", "policies/manifests", "policies/examples"] {
        for entry in fs::read_dir(root.join(dir)).expect("manifest dir exists") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn load(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).expect("readable manifest");
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).expect("valid YAML");
            serde_json::to_value(value).expect("YAML maps to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    load(&path).remove(0)
}

/// Where the manifests are sent: one backend and a namespace of this test's own.
struct Server {
    cluster: TestCluster,
    ns: String,
}

/// Every backend, each with a fresh namespace.
async fn servers() -> Vec<Server> {
    let mut servers = Vec::new();
    for cluster in TestCluster::every_backend().await.expect("test clusters") {
        tokio::time::timeout(WAIT, cluster.install_crds())
            .await
            .expect("in time")
            .expect("CRDs installed");
        let ns = tokio::time::timeout(WAIT, cluster.create_namespace("manifests"))
            .await
            .expect("in time")
            .expect("namespace");
        servers.push(Server { cluster, ns });
    }
    servers
}

fn plural(kind: &str) -> &'static str {
    match kind {
        "Project" => "projects",
        "Agent" => "agents",
        "AgentRun" => "agentruns",
        "ApprovalGate" => "approvalgates",
        "RiskPolicy" => "riskpolicies",
        other => panic!("unexpected kind {other}"),
    }
}

impl Server {
    /// Sends one raw request; `Ok(body)` or `Err(the server's Status message)`.
    async fn send(&self, request: http::Request<Vec<u8>>) -> Result<Value, String> {
        match tokio::time::timeout(WAIT, self.cluster.client().request::<Value>(request))
            .await
            .expect("the apiserver answers in time")
        {
            Ok(body) => Ok(body),
            Err(kube::Error::Api(status)) => Err(status.message),
            Err(other) => panic!("not an API answer: {other}"),
        }
    }

    fn collection(&self, kind: &str) -> String {
        format!(
            "/apis/countersign.dev/v1alpha1/namespaces/{}/{}",
            self.ns,
            plural(kind)
        )
    }

    /// What `kubectl create` does: a POST with strict field validation. With `old`, `old`
    /// is created first and `obj` replaces it (PUT), so update-only rules (immutability)
    /// run. Objects get a fresh name so one namespace holds every case.
    async fn admit(&self, obj: &Value, old: Option<&Value>) -> Result<Value, String> {
        let kind = obj["kind"].as_str().expect("kind");
        let name = format!("m{}", rand_suffix());
        let named = |o: &Value| {
            let mut o = o.clone();
            o["metadata"]["name"] = json!(name);
            o["metadata"]["namespace"] = json!(self.ns);
            o
        };
        let post = |body: Value| {
            http::Request::post(format!("{}?fieldValidation=Strict", self.collection(kind)))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).expect("JSON"))
                .expect("request")
        };
        let Some(old) = old else {
            return self.send(post(named(obj))).await;
        };
        let stored = self
            .send(post(named(old)))
            .await
            .expect("the original object is valid");
        let mut replacement = named(obj);
        replacement["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"].clone();
        let put = http::Request::put(format!(
            "{}/{name}?fieldValidation=Strict",
            self.collection(kind)
        ))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&replacement).expect("JSON"))
        .expect("request");
        self.send(put).await
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}

fn deserialise_typed(obj: &Value) {
    let kind = obj["kind"].as_str().unwrap();
    let result = match kind {
        "Project" => serde_json::from_value::<countersign_crds::Project>(obj.clone()).map(drop),
        "Agent" => serde_json::from_value::<countersign_crds::Agent>(obj.clone()).map(drop),
        "AgentRun" => serde_json::from_value::<countersign_crds::AgentRun>(obj.clone()).map(drop),
        "ApprovalGate" => {
            serde_json::from_value::<countersign_crds::ApprovalGate>(obj.clone()).map(drop)
        }
        "RiskPolicy" => {
            serde_json::from_value::<countersign_crds::RiskPolicy>(obj.clone()).map(drop)
        }
        other => panic!("unexpected kind {other}"),
    };
    result.unwrap_or_else(|e| panic!("{kind} does not deserialise: {e}"));
}

#[tokio::test]
async fn every_shipped_manifest_is_accepted_and_deserialises() {
    for server in servers().await {
        let files = manifest_files();
        let mut kinds = Vec::new();
        for file in &files {
            for obj in load(file) {
                let admitted = server.admit(&obj, None).await.unwrap_or_else(|e| {
                    panic!(
                        "{:?}: {} rejected: {e}",
                        server.cluster.kind(),
                        file.display()
                    )
                });
                deserialise_typed(&admitted);
                kinds.push(admitted["kind"].as_str().unwrap().to_owned());
            }
        }
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "Agent",
                "Agent",
                "Agent",
                "AgentRun",
                "AgentRun",
                "AgentRun",
                "AgentRun",
                "Project",
                "RiskPolicy",
                "RiskPolicy"
            ],
            "{files:?}"
        );
    }
}

#[test]
fn the_example_agents_cover_the_three_provider_kinds_with_a_fallback() {
    let backend = example("examples/agent-backend.yaml");
    let kinds: Vec<&str> = backend["spec"]["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["openai", "openai"],
        "backend has a fallback provider"
    );
    assert_eq!(
        example("examples/agent-frontend.yaml")["spec"]["providers"][0]["kind"],
        "anthropic"
    );
    assert_eq!(
        example("examples/agent-qa.yaml")["spec"]["providers"][0]["kind"],
        "command"
    );
}

/// One broken manifest: `edit` applied to a shipped `file` (an update of the unedited object
/// when `update`), refused with a message naming `field` and containing `words`.
struct Broken {
    file: &'static str,
    update: bool,
    edit: fn(&mut Value),
    field: &'static str,
    words: &'static str,
}

/// Sends every case to every backend and checks the refusal.
async fn assert_rejected(cases: &[Broken]) {
    for server in servers().await {
        for case in cases {
            let original = example(case.file);
            let mut obj = original.clone();
            (case.edit)(&mut obj);
            let old = case.update.then_some(&original);
            let message = server.admit(&obj, old).await.err().unwrap_or_else(|| {
                panic!(
                    "{:?}: {} with {} broken was accepted",
                    server.cluster.kind(),
                    case.file,
                    case.field
                )
            });
            assert!(
                message.contains(case.field) && message.contains(case.words),
                "{:?}: expected an error naming {:?} with {:?}, got {message}",
                server.cluster.kind(),
                case.field,
                case.words
            );
        }
    }
}

fn broken(
    file: &'static str,
    edit: fn(&mut Value),
    field: &'static str,
    words: &'static str,
) -> Broken {
    Broken {
        file,
        update: false,
        edit,
        field,
        words,
    }
}

#[tokio::test]
async fn schema_violations_are_refused_naming_the_field() {
    assert_rejected(&[
        broken(
            "policies/manifests/default-riskpolicy.yaml",
            |p| p["spec"]["rules"][0]["set"]["impact"] = json!(11),
            "spec.rules[0].set.impact",
            "should be less than or equal to 10",
        ),
        broken(
            "examples/agent-backend.yaml",
            |a| a["spec"]["role"] = json!("wizard"),
            "spec.role",
            "Unsupported value: \"wizard\"",
        ),
        broken(
            "policies/manifests/default-riskpolicy.yaml",
            |p| p["spec"]["workflows"]["medium"]["approvers"][0]["role"] = json!("Tech Lead"),
            "spec.workflows.medium.approvers[0].role",
            "should match",
        ),
        broken(
            "examples/project.yaml",
            |p| {
                p["spec"].as_object_mut().unwrap().remove("repository");
            },
            "spec.repository",
            "Required value",
        ),
        broken(
            "examples/agent-backend.yaml",
            |a| a["spec"]["limits"]["timeout"] = json!("thirty minutes"),
            "spec.limits.timeout",
            "should match",
        ),
        broken(
            "examples/agent-backend.yaml",
            |a| a["spec"]["maxConcurrentRun"] = json!(3),
            "spec.maxConcurrentRun",
            "unknown field",
        ),
    ])
    .await;
}

/// One case per `x-kubernetes-validations` rule of the CRDs: (CRD file, rule message, the
/// case that breaks it). [`every_cel_rule_has_a_case`] keeps this table complete.
fn cel_cases() -> Vec<(&'static str, &'static str, Broken)> {
    let immutable = |file, edit, field, words| Broken {
        file,
        update: true,
        edit,
        field,
        words,
    };
    vec![
        (
            "agentruns.countersign.dev.yaml",
            "projectRef is immutable",
            immutable(
                "examples/agentrun.yaml",
                |r| r["spec"]["projectRef"]["name"] = json!("other"),
                "spec.projectRef",
                "projectRef is immutable",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "agentRef is immutable",
            immutable(
                "examples/agentrun.yaml",
                |r| r["spec"]["agentRef"]["name"] = json!("frontend"),
                "spec.agentRef",
                "agentRef is immutable",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "task is immutable",
            immutable(
                "examples/agentrun.yaml",
                |r| r["spec"]["task"]["title"] = json!("Something else entirely"),
                "spec.task",
                "task is immutable",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "a run names either `agentRef` or `capabilities`, not both and not neither",
            broken(
                "examples/agentrun.yaml",
                |r| r["spec"]["capabilities"] = json!(["rust"]),
                "spec",
                "names either `agentRef` or `capabilities`",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "agentRef and capabilities are immutable",
            immutable(
                "examples/agentrun-routed.yaml",
                |r| {
                    r["spec"].as_object_mut().unwrap().remove("capabilities");
                    r["spec"]["agentRef"] = json!({"name": "backend"});
                },
                "spec",
                "agentRef and capabilities are immutable",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "capabilities are immutable",
            immutable(
                "examples/agentrun-routed.yaml",
                |r| r["spec"]["capabilities"] = json!(["rust"]),
                "spec.capabilities",
                "capabilities are immutable",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "parentRef is set only at creation",
            immutable(
                "examples/agentrun.yaml",
                |r| r["spec"]["parentRef"] = json!({"name": "adopted-by-someone"}),
                "spec",
                "parentRef is set only at creation",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "parentRef is immutable",
            immutable(
                "examples/agentrun-child.yaml",
                |r| r["spec"]["parentRef"]["name"] = json!("another-parent"),
                "spec.parentRef",
                "parentRef is immutable",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "breakdown is set only at creation",
            immutable(
                "examples/agentrun.yaml",
                |r| r["spec"]["breakdown"] = json!(true),
                "spec",
                "breakdown is set only at creation",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "followUpOf is set only at creation",
            immutable(
                "examples/agentrun.yaml",
                |r| r["spec"]["followUpOf"] = json!({"name": "someone-elses-run"}),
                "spec",
                "followUpOf is set only at creation",
            ),
        ),
        (
            "agentruns.countersign.dev.yaml",
            "followUpOf is immutable",
            immutable(
                "examples/agentrun-followup.yaml",
                |r| r["spec"]["followUpOf"]["name"] = json!("another-run"),
                "spec.followUpOf",
                "followUpOf is immutable",
            ),
        ),
        (
            "projects.countersign.dev.yaml",
            "a trigger names either `agent` or `capabilities`, not both and not neither",
            broken(
                "examples/project.yaml",
                |p| p["spec"]["triggers"]["labels"][0]["capabilities"] = json!(["rust"]),
                "spec.triggers.labels[0]",
                "names either `agent` or `capabilities`",
            ),
        ),
        (
            "agents.countersign.dev.yaml",
            "a provider of kind command needs `command`",
            broken(
                "examples/agent-qa.yaml",
                |a| {
                    a["spec"]["providers"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("command");
                },
                "spec.providers[0]",
                "needs `command`",
            ),
        ),
        (
            "agents.countersign.dev.yaml",
            "openai and anthropic providers need `model`",
            broken(
                "examples/agent-backend.yaml",
                |a| {
                    a["spec"]["providers"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("model");
                },
                "spec.providers[0]",
                "need `model`",
            ),
        ),
        (
            "approvalgates.countersign.dev.yaml",
            "projectRef is immutable",
            immutable(
                "tests/fixtures/approvalgate.yaml",
                |g| g["spec"]["projectRef"]["name"] = json!("other"),
                "spec.projectRef",
                "projectRef is immutable",
            ),
        ),
        (
            "approvalgates.countersign.dev.yaml",
            "pullRequestNumber is immutable",
            immutable(
                "tests/fixtures/approvalgate.yaml",
                |g| g["spec"]["pullRequestNumber"] = json!(8),
                "spec.pullRequestNumber",
                "pullRequestNumber is immutable",
            ),
        ),
        (
            "riskpolicies.countersign.dev.yaml",
            "weights must add up to 100",
            broken(
                "policies/manifests/default-riskpolicy.yaml",
                |p| {
                    p["spec"]["combine"] = json!({"method": "weighted",
                        "weights": {"impact": 50, "complexity": 30, "businessImpact": 30}})
                },
                "spec.combine.weights",
                "weights must add up to 100",
            ),
        ),
        (
            "riskpolicies.countersign.dev.yaml",
            "method weighted needs weights",
            broken(
                "policies/manifests/default-riskpolicy.yaml",
                |p| p["spec"]["combine"] = json!({"method": "weighted"}),
                "spec.combine",
                "method weighted needs weights",
            ),
        ),
        (
            "riskpolicies.countersign.dev.yaml",
            "set at least one of impact, complexity, businessImpact",
            broken(
                "policies/manifests/default-riskpolicy.yaml",
                |p| p["spec"]["rules"][0]["set"] = json!({}),
                "spec.rules[0].set",
                "set at least one of impact, complexity, businessImpact",
            ),
        ),
        (
            "riskpolicies.countersign.dev.yaml",
            "thresholds must rise: medium < high < critical",
            broken(
                "policies/manifests/default-riskpolicy.yaml",
                |p| p["spec"]["thresholds"] = json!({"medium": 8, "high": 5, "critical": 9}),
                "spec.thresholds",
                "thresholds must rise",
            ),
        ),
        (
            "riskpolicies.countersign.dev.yaml",
            "a workflow without autoApprove needs approvers",
            broken(
                "policies/manifests/default-riskpolicy.yaml",
                |p| p["spec"]["workflows"]["medium"]["approvers"] = json!([]),
                "spec.workflows.medium",
                "a workflow without autoApprove needs approvers",
            ),
        ),
        (
            "riskpolicies.countersign.dev.yaml",
            "onTimeout escalate needs escalateTo",
            broken(
                "policies/manifests/default-riskpolicy.yaml",
                |p| {
                    p["spec"]["workflows"]["high"]
                        .as_object_mut()
                        .unwrap()
                        .remove("escalateTo");
                },
                "spec.workflows.high",
                "onTimeout escalate needs escalateTo",
            ),
        ),
        (
            "riskpolicies.countersign.dev.yaml",
            "escalationMode applies only to onTimeout escalate",
            broken(
                "policies/manifests/default-riskpolicy.yaml",
                |p| p["spec"]["workflows"]["medium"]["escalationMode"] = json!("additional"),
                "spec.workflows.medium",
                "escalationMode applies only to onTimeout escalate",
            ),
        ),
    ]
}

#[tokio::test]
async fn every_cel_rule_refuses_an_object_that_breaks_it() {
    let cases: Vec<Broken> = cel_cases().into_iter().map(|(_, _, case)| case).collect();
    assert_rejected(&cases).await;
}

#[test]
fn every_cel_rule_has_a_case() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut rules = BTreeSet::new();
    for entry in fs::read_dir(&root).expect("crds/") {
        let path = entry.expect("entry").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if !file.ends_with(".countersign.dev.yaml") {
            continue;
        }
        for doc in load(&path) {
            collect_rule_messages(&doc, &file, &mut rules);
        }
    }
    let covered: BTreeSet<(String, String)> = cel_cases()
        .into_iter()
        .map(|(file, message, _)| (file.to_owned(), message.to_owned()))
        .collect();
    assert!(!rules.is_empty(), "the CRDs have CEL rules");
    let missing: Vec<_> = rules.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "CEL rules without a breaking case: {missing:#?}"
    );
}

fn collect_rule_messages(value: &Value, file: &str, out: &mut BTreeSet<(String, String)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                for rule in rules {
                    let message = rule["message"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{file}: every CEL rule has a message: {rule}"));
                    out.insert((file.to_owned(), message.to_owned()));
                }
            }
            map.values()
                .for_each(|v| collect_rule_messages(v, file, out));
        }
        Value::Array(items) => items
            .iter()
            .for_each(|v| collect_rule_messages(v, file, out)),
        _ => {}
    }
}

#[tokio::test]
async fn mutable_fields_of_a_run_can_change() {
    for server in servers().await {
        let original = example("examples/agentrun.yaml");
        let mut cancelled = original.clone();
        cancelled["spec"]["cancelRequested"] = json!(true);
        server
            .admit(&cancelled, Some(&original))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{:?}: cancelRequested is mutable: {e}",
                    server.cluster.kind()
                )
            });
    }
}

/// Objects a real apiserver must accept although a naive schema would not: an explicit `null`
/// for an optional enum (kubectl and GitOps tools send them), a workflow that auto-approves
/// without an `approvers` list, and a refusal with our own message (not a CEL evaluation
/// error) for a workflow that neither auto-approves nor lists approvers.
#[tokio::test]
async fn optional_fields_may_be_null_or_absent() {
    for server in servers().await {
        let kind = server.cluster.kind();
        let mut run = example("examples/agentrun.yaml");
        run["spec"]["mode"] = Value::Null;
        server
            .admit(&run, None)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: spec.mode: null is refused: {e}"));
        let mut project = example("examples/project.yaml");
        project["spec"]["triggers"]["labels"][0]["mode"] = Value::Null;
        server
            .admit(&project, None)
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: a trigger's mode: null is refused: {e}"));
        let mut policy = example("policies/manifests/default-riskpolicy.yaml");
        policy["spec"]["workflows"]["medium"]
            .as_object_mut()
            .unwrap()
            .remove("approvers");
        let message = server
            .admit(&policy, None)
            .await
            .expect_err("a workflow without autoApprove or approvers is refused");
        assert!(
            message.contains("a workflow without autoApprove needs approvers"),
            "{kind:?}: {message}"
        );
    }
}
