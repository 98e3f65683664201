//! The Helm chart, proved rather than just rendered: its CRDs are byte-identical to `crds/`;
//! `helm lint` and `helm template` pass with the default values and every `ci/*-values.yaml`;
//! the schema refuses unknown values; every rendered object is accepted by the real
//! kube-apiserver (`kubectl apply --dry-run=server`); and every rendered workload's pod is
//! admitted by real Pod Security admission in a namespace that enforces `restricted`.
//! (The chart's RBAC is proved by running the controller and bot with it:
//! `tests/chart_rbac.rs`.)

mod support;

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
        assert!(deployments.len() >= 2, "controller and bot");
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
                    matches!(args.first(), Some(&"controller" | &"bot")),
                    "{args:?}"
                );
            }
        }
        if values.is_none() {
            assert_eq!(
                rendered.of_kind("PodDisruptionBudget").len(),
                2,
                "a PDB per component by default"
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

    let mut checked = 0;
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
        }
    }
    assert!(
        checked >= 6,
        "controller and bot of every values file: {checked}"
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
