//! The Helm chart, proved rather than just rendered: its CRDs are byte-identical to `crds/`;
//! `helm lint` and `helm template` pass with the default values and every `ci/*-values.yaml`;
//! the schema refuses unknown values; every rendered object is accepted by the real
//! kube-apiserver (`kubectl apply --dry-run=server`); and every rendered workload's pod is
//! admitted by real Pod Security admission in a namespace that enforces `restricted`; and the
//! controller is pointed at the provider gateway the chart runs, with the Service, pod labels
//! and NetworkPolicies of both sides agreeing. (The chart's RBAC is proved by running the
//! controller, the bot and the gateway with it: `tests/chart_rbac.rs`.)

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use support::chart::{self, Rendered};

use countersign_testkit::cluster::TestCluster;
use countersign_testkit::tools::Tool;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the rendered chart runs the provider gateway itself.
fn gateway_enabled(rendered: &Rendered) -> bool {
    rendered
        .named("Deployment", "countersign-gateway")
        .is_some()
}

#[test]
fn chart_crds_are_byte_identical_to_the_generated_crds() {
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        names.sort();
        names
    };
    let (ours, charts) = (repo().join("crds"), repo().join("charts/countersign/crds"));
    assert_eq!(
        names(&ours),
        names(&charts),
        "the chart has other CRD files"
    );
    for name in names(&ours) {
        let a = std::fs::read(ours.join(&name)).expect("crd");
        let b = std::fs::read(charts.join(&name)).expect("chart crd");
        assert!(
            a == b,
            "charts/countersign/crds/{name} differs from crds/{name}: cp crds/*.yaml charts/countersign/crds/"
        );
    }
}

#[test]
fn helm_lint_and_template_pass_with_default_and_every_ci_values_file() {
    let Some(helm) = Tool::Helm.for_test("helm lint").expect("helm") else {
        return;
    };
    for values in chart::values_files() {
        let mut lint = std::process::Command::new(&helm);
        lint.args(["lint", "--strict"]).arg(chart::dir());
        if let Some(values) = &values {
            lint.arg("-f").arg(values);
        }
        let out = lint.output().expect("helm lint runs");
        assert!(
            out.status.success(),
            "helm lint {values:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered = chart::render(&helm, "countersign-system", values.as_deref(), &[])
            .expect("helm template");
        assert!(!rendered.objects.is_empty());
    }
}

#[test]
fn the_values_schema_refuses_unknown_and_invalid_values() {
    let Some(helm) = Tool::Helm.for_test("values schema").expect("helm") else {
        return;
    };
    for (set, why) in [
        ("controller.replica=2", "a misspelt key"),
        ("logFormat=xml", "an unknown log format"),
        (
            "admissionWebhook.certificate.source=vault",
            "an unknown certificate source",
        ),
        (
            "controller.agentNamespaces[0]=Team_A",
            "an invalid namespace",
        ),
        ("publicUrl=countersign.example.com", "a URL without scheme"),
        ("gateway.replica=2", "a misspelt gateway key"),
        ("gateway.port=0", "a port out of range"),
        (
            "gateway.egress[0].cidrs[0]=everywhere",
            "a provider egress block that is not a CIDR",
        ),
        (
            "gateway.egress[0].hosts[0]=api.openai.com",
            "egress by host name, which NetworkPolicies cannot express",
        ),
    ] {
        let err = chart::render(&helm, "countersign-system", None, &[set]).expect_err(why);
        assert!(
            err.to_string()
                .contains("values don't meet the specifications")
                || err.to_string().contains("schema"),
            "{why}: {err:#}"
        );
    }
}

#[test]
fn every_rendered_workload_is_locked_down() {
    let Some(helm) = Tool::Helm.for_test("workload security").expect("helm") else {
        return;
    };
    for values in chart::values_files() {
        let rendered = chart::render(&helm, "countersign-system", values.as_deref(), &[])
            .expect("helm template");
        let deployments = rendered.of_kind("Deployment");
        let gateway = gateway_enabled(&rendered);
        assert_eq!(
            deployments.len(),
            if gateway { 3 } else { 2 },
            "controller, bot and (unless gateway.enabled is false) the gateway: {values:?}"
        );
        for deployment in deployments {
            let name = deployment["metadata"]["name"].as_str().unwrap_or_default();
            let pod = &deployment["spec"]["template"]["spec"];
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            assert_eq!(
                pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
                "{name}"
            );
            assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
            for volume in pod["volumes"].as_array().expect("volumes") {
                assert!(volume.get("hostPath").is_none(), "{name}: {volume}");
            }
            for container in pod["containers"].as_array().expect("containers") {
                let sc = &container["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{name}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{name}");
                assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{name}");
                assert!(container["resources"]["requests"].is_object(), "{name}");
                assert!(
                    container["resources"]["limits"]["memory"].is_string(),
                    "{name}"
                );
                assert!(container["livenessProbe"].is_object(), "{name}");
                assert!(container["readinessProbe"].is_object(), "{name}");
                // A read-only root needs a writable /tmp.
                let mounts = container["volumeMounts"].as_array().expect("mounts");
                assert!(mounts.iter().any(|m| m["mountPath"] == "/tmp"), "{name}");
                // Secrets come from files in mounted Secrets (reloadable), never subPath.
                assert!(mounts.iter().all(|m| m.get("subPath").is_none()), "{name}");
                let args: Vec<&str> = container["args"]
                    .as_array()
                    .expect("args")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(
                    matches!(args.first(), Some(&"controller" | &"bot" | &"gateway")),
                    "{args:?}"
                );
            }
        }
        if values.is_none() {
            assert_eq!(
                rendered.of_kind("PodDisruptionBudget").len(),
                3,
                "a PDB per component by default"
            );
            assert_eq!(
                rendered.of_kind("NetworkPolicy").len(),
                3,
                "a NetworkPolicy per component by default"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_pod_security_admission_admits_every_rendered_pod_in_a_restricted_namespace() {
    let Some(helm) = Tool::Helm.for_test("pod security").expect("helm") else {
        return;
    };
    let Some(cluster) = TestCluster::real_or_skip("pod security of the chart")
        .await
        .expect("cluster")
    else {
        return;
    };
    let ns = cluster
        .create_namespace_with_labels(
            "cs-restricted",
            &[
                ("pod-security.kubernetes.io/enforce", "restricted"),
                ("pod-security.kubernetes.io/enforce-version", "latest"),
            ],
        )
        .await
        .expect("namespace");
    let pods: Api<Pod> = Api::namespaced(cluster.client(), &ns);
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    // The checker checks: a pod that breaks the profile is refused here.
    let privileged: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "c", "image": "x",
            "securityContext": {"privileged": true}}]}
    }))
    .expect("pod");
    let refused = pods
        .create(&dry_run, &privileged)
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("restricted"), "{refused}");

    let (mut checked, mut gateways) = (0, 0);
    for values in chart::values_files() {
        let rendered = chart::render(&helm, &ns, values.as_deref(), &[]).expect("template");
        // The ServiceAccount admission plugin wants the pods' accounts to exist.
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(cluster.client(), &ns);
        for account in rendered.of_kind("ServiceAccount") {
            let account = serde_json::from_value(account.clone()).expect("ServiceAccount");
            match accounts.create(&PostParams::default(), &account).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(err) => panic!("cannot create the ServiceAccount: {err}"),
            }
        }
        for deployment in rendered.of_kind("Deployment") {
            let name = deployment["metadata"]["name"].as_str().expect("name");
            let pod: Pod = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns,
                             "labels": deployment["spec"]["template"]["metadata"]["labels"]},
                "spec": deployment["spec"]["template"]["spec"],
            }))
            .expect("the pod template is a pod spec");
            pods.create(&dry_run, &pod).await.unwrap_or_else(|err| {
                panic!("restricted Pod Security refused {name} ({values:?}): {err}")
            });
            checked += 1;
            gateways += usize::from(name.ends_with("-gateway"));
        }
    }
    assert!(
        checked >= 6,
        "controller and bot of every values file: {checked}"
    );
    assert!(
        gateways >= 3,
        "the gateway of every values file that runs it: {gateways}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_apiserver_accepts_every_rendered_object_in_a_server_side_dry_run() {
    let Some(helm) = Tool::Helm.for_test("server-side dry-run").expect("helm") else {
        return;
    };
    let Some(kubectl) = Tool::Kubectl
        .for_test("server-side dry-run")
        .expect("kubectl")
    else {
        return;
    };
    let Some(cluster) = TestCluster::real_or_skip("server-side dry-run of the chart")
        .await
        .expect("cluster")
    else {
        return;
    };
    chart::install_optional_crds(&cluster).await;
    let release_ns = cluster.create_namespace("cs-release").await.expect("ns");
    let team_a = cluster.create_namespace("cs-team-a").await.expect("ns");
    let team_b = cluster.create_namespace("cs-team-b").await.expect("ns");
    let dir = tempfile::tempdir().expect("dir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml()).expect("kubeconfig");
    for values in chart::values_files() {
        // The namespaces the values name exist under other names here.
        let sets = [
            format!("controller.agentNamespaces={{{team_a},{team_b}}}"),
            if values
                .as_deref()
                .is_some_and(|v| v.ends_with("namespaced-values.yaml"))
            {
                format!("controller.watchNamespace={team_a},bot.watchNamespace={team_a}")
            } else {
                String::new()
            },
        ];
        let sets: Vec<&str> = sets
            .iter()
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .collect();
        let rendered =
            chart::render(&helm, &release_ns, values.as_deref(), &sets).expect("template");
        let file = dir.path().join("rendered.yaml");
        std::fs::write(&file, &rendered.text).expect("write");
        let out = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["apply", "--dry-run=server", "--validate=strict", "-f"])
            .arg(&file)
            .output()
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kubectl apply --dry-run=server ({values:?}) failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let applied = stdout
            .lines()
            .filter(|l| l.contains("(server dry run)"))
            .count();
        assert_eq!(
            applied,
            rendered.objects.len(),
            "every object was checked ({values:?}):\n{stdout}"
        );
    }
}

/// The chart keeps working as the component list grows: one Deployment per component.
#[test]
fn rendered_objects_carry_the_standard_labels() {
    let Some(helm) = Tool::Helm.for_test("labels").expect("helm") else {
        return;
    };
    let rendered: Rendered =
        chart::render(&helm, "countersign-system", None, &[]).expect("template");
    for object in &rendered.objects {
        let labels = &object["metadata"]["labels"];
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
        ] {
            assert!(
                labels.get(key).is_some(),
                "{} {} lacks {key}",
                object["kind"],
                object["metadata"]["name"]
            );
        }
    }
}

#[derive(clap::Parser)]
#[command(args_override_self = true)]
struct ControllerCli {
    #[command(flatten)]
    args: countersign_controller::config::ControllerArgs,
}

/// Label selector `matchLabels` as a map.
fn match_labels(selector: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(selector["matchLabels"].clone()).unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What the controller is told about the gateway (parsed by the controller's own flag
/// parsing) is what the chart runs: its URL is the gateway Service in the release namespace
/// on the container's port (agent pods' NetworkPolicies allow that port at the gateway's
/// pods, so Service and container ports must be the same), the pod labels select the
/// gateway's pods (and only them), and the gateway's NetworkPolicy admits agent pods (the
/// label the controller gives them) from the namespaces where agents run.
#[test]
fn the_controller_is_pointed_at_the_gateway_the_chart_runs() {
    use clap::Parser as _;
    let Some(helm) = Tool::Helm.for_test("gateway wiring").expect("helm") else {
        return;
    };
    let release_ns = "cs-release";
    let mut wired = 0;
    for values in chart::values_files() {
        let rendered = chart::render(&helm, release_ns, values.as_deref(), &[]).expect("template");
        let mut argv = vec!["countersign-controller".to_owned()];
        argv.extend(rendered.args("countersign-controller").into_iter().skip(1));
        let settings = ControllerCli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("the controller's flags parse ({values:?}): {e}"))
            .args
            .settings()
            .unwrap_or_else(|e| panic!("the controller's flags are valid ({values:?}): {e}"));
        let gateway = settings
            .gateway
            .unwrap_or_else(|| panic!("the controller is given a gateway ({values:?})"));
        if !gateway_enabled(&rendered) {
            // Run elsewhere: only the controller's extraArgs name it.
            assert!(rendered.named("Service", "countersign-gateway").is_none());
            continue;
        }
        wired += 1;
        let service = rendered
            .named("Service", "countersign-gateway")
            .expect("gateway Service");
        let port = &service["spec"]["ports"][0];
        assert_eq!(
            gateway.url,
            format!(
                "http://countersign-gateway.{release_ns}.svc:{}",
                port["port"]
            ),
            "{values:?}"
        );
        assert_eq!(gateway.namespace, release_ns);
        assert_eq!(port["targetPort"], "http");
        let deployment = rendered
            .named("Deployment", "countersign-gateway")
            .expect("gateway Deployment");
        let template = &deployment["spec"]["template"];
        let container = &template["spec"]["containers"][0];
        let http = container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == "http")
            .expect("the http port");
        assert_eq!(
            http["containerPort"].as_u64(),
            Some(u64::from(gateway.port)),
            "Service port and container port differ ({values:?})"
        );
        assert!(
            container["args"]
                .as_array()
                .expect("args")
                .iter()
                .any(|a| a == &json!(format!("--listen=0.0.0.0:{}", gateway.port))),
            "{values:?}"
        );
        let pod_labels: BTreeMap<String, String> =
            serde_json::from_value(template["metadata"]["labels"].clone()).expect("labels");
        assert!(
            selects(&gateway.pod_labels, &pod_labels),
            "--gateway-pod-labels {:?} do not select the gateway's pods {pod_labels:?}",
            gateway.pod_labels
        );
        let service_selector: BTreeMap<String, String> =
            serde_json::from_value(service["spec"]["selector"].clone()).expect("selector");
        assert!(selects(&service_selector, &pod_labels));
        // Only the gateway's pods: not the controller's or the bot's.
        for other in ["countersign-controller", "countersign-bot"] {
            let labels: BTreeMap<String, String> = serde_json::from_value(
                rendered.named("Deployment", other).expect("Deployment")["spec"]["template"]
                    ["metadata"]["labels"]
                    .clone(),
            )
            .expect("labels");
            assert!(!selects(&gateway.pod_labels, &labels), "{other}");
        }

        // The gateway's NetworkPolicy: it applies to these pods and admits agent pods.
        let policy = rendered
            .named("NetworkPolicy", "countersign-gateway")
            .expect("the gateway's NetworkPolicy");
        assert!(selects(
            &match_labels(&policy["spec"]["podSelector"]),
            &pod_labels
        ));
        let agent_label = BTreeMap::from([(
            "app.kubernetes.io/name".to_owned(),
            countersign_crds::attempt::AGENT_POD_APP.to_owned(),
        )]);
        let agent_peer = policy["spec"]["ingress"]
            .as_array()
            .expect("ingress")
            .iter()
            .filter(|rule| rule["ports"][0]["port"] == "http")
            .flat_map(|rule| rule["from"].as_array().cloned().unwrap_or_default())
            .find(|peer| selects(&match_labels(&peer["podSelector"]), &agent_label))
            .unwrap_or_else(|| panic!("no ingress from agent pods ({values:?}): {policy:#}"));
        // From where the controller runs agents: the namespaces it may create their Secrets
        // in (its Roles), or any namespace when it has Secrets cluster-wide or none yet.
        let mut agent_namespaces: Vec<&str> = rendered
            .of_kind("Role")
            .into_iter()
            .filter(|r| {
                let name = &r["metadata"]["name"];
                name == "countersign-controller-secrets" || name == "countersign-controller"
            })
            .filter_map(|r| r["metadata"]["namespace"].as_str())
            .collect();
        agent_namespaces.sort_unstable();
        let namespaces = &agent_peer["namespaceSelector"];
        match namespaces["matchExpressions"].as_array() {
            Some(expressions) => {
                assert_eq!(expressions.len(), 1);
                assert_eq!(expressions[0]["key"], "kubernetes.io/metadata.name");
                assert_eq!(expressions[0]["operator"], "In");
                let mut listed: Vec<&str> = expressions[0]["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                listed.sort_unstable();
                assert_eq!(listed, agent_namespaces, "{values:?}");
            }
            None => {
                assert_eq!(namespaces, &json!({}), "{values:?}");
                assert!(agent_namespaces.is_empty(), "{values:?}");
            }
        }
        if let Some(ns) = &settings.namespace {
            assert!(
                rendered
                    .args("countersign-gateway")
                    .contains(&format!("--namespace={ns}")),
                "the gateway serves the namespace the controller watches"
            );
        }
    }
    assert!(wired >= 3, "the gateway is wired in {wired} values files");
}

/// A default install with `controller.agentNamespaces`: the gateway's NetworkPolicy admits
/// agent pods of exactly those namespaces, and egress is DNS, the API server and TCP 443.
#[test]
fn the_gateways_network_policy_by_default() {
    let Some(helm) = Tool::Helm.for_test("gateway NetworkPolicy").expect("helm") else {
        return;
    };
    let rendered = chart::render(
        &helm,
        "countersign-system",
        None,
        &["controller.agentNamespaces={team-a,team-b}"],
    )
    .expect("template");
    let policy = rendered
        .named("NetworkPolicy", "countersign-gateway")
        .expect("policy");
    assert_eq!(
        policy["spec"]["ingress"],
        json!([{"ports": [{"port": "http", "protocol": "TCP"}], "from": [{
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "countersign-agent"}},
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                "operator": "In", "values": ["team-a", "team-b"]}]}}]}])
    );
    assert_eq!(
        policy["spec"]["egress"],
        json!([
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]},
            {"ports": [{"port": 443, "protocol": "TCP"}]}
        ])
    );
    // Turned off: no gateway objects at all, and the controller is told about none.
    let off = chart::render(
        &helm,
        "countersign-system",
        None,
        &["gateway.enabled=false"],
    )
    .expect("template");
    assert!(
        off.objects
            .iter()
            .all(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] != "gateway"),
        "gateway objects rendered while gateway.enabled=false"
    );
    assert!(
        !off.args("countersign-controller")
            .iter()
            .any(|a| a.starts_with("--gateway-")),
    );
}
