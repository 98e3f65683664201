//! Rendering `charts/countersign` with the real `helm` and reading the result.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use serde_json::Value;

use countersign_testkit::cluster::TestCluster;

/// The chart's directory.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/countersign")
}

/// `None` (the defaults) and every `ci/*-values.yaml` of the chart.
pub fn values_files() -> Vec<Option<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir().join("ci"))
        .expect("charts/countersign/ci")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    std::iter::once(None)
        .chain(files.into_iter().map(Some))
        .collect()
}

/// `helm template`'s output: the text and its objects.
#[derive(Debug)]
pub struct Rendered {
    /// The YAML stream as helm printed it.
    pub text: String,
    /// Every non-empty document, as JSON.
    pub objects: Vec<Value>,
}

impl Rendered {
    /// The objects of `kind`.
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    /// The object of `kind` named `name`.
    pub fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// The args of Deployment `name`'s first container (its subcommand first).
    pub fn args(&self, deployment: &str) -> Vec<String> {
        let deployment = self
            .named("Deployment", deployment)
            .unwrap_or_else(|| panic!("Deployment {deployment}"));
        deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(|a| a.as_str().expect("string arg").to_owned())
            .collect()
    }
}

/// `helm template countersign charts/countersign -n NAMESPACE [-f VALUES] [--set SET]...`.
pub fn render(
    helm: &Path,
    namespace: &str,
    values: Option<&Path>,
    sets: &[&str],
) -> anyhow::Result<Rendered> {
    let mut command = Command::new(helm);
    command
        .args(["template", "countersign"])
        .arg(dir())
        .args(["--namespace", namespace]);
    if let Some(values) = values {
        command.arg("-f").arg(values);
    }
    for set in sets {
        command.args(["--set", set]);
    }
    let out = command.output().context("Cannot run helm template")?;
    anyhow::ensure!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).context("helm printed non-UTF-8")?;
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: Value = serde::Deserialize::deserialize(document)
            .context("helm printed a document that is not YAML")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(Rendered { text, objects })
}

/// CRDs of the optional integrations the full values use (cert-manager's Issuer and
/// Certificate, the Prometheus Operator's ServiceMonitor), schemaless, so a server-side
/// dry-run can check everything else about those objects.
pub async fn install_optional_crds(cluster: &TestCluster) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let api: Api<CustomResourceDefinition> = Api::all(cluster.client());
    for (group, kind, plural) in [
        ("cert-manager.io", "Issuer", "issuers"),
        ("cert-manager.io", "Certificate", "certificates"),
        ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
    ] {
        let name = format!("{plural}.{group}");
        let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": group, "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(),
                          "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .expect("crd");
        api.patch(
            &name,
            &PatchParams::apply("countersign-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("install CRD");
        countersign_testkit::controlplane::wait_established(&cluster.client(), &name)
            .await
            .expect("established");
    }
}
