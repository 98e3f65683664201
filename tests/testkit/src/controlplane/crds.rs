//! Installing CustomResourceDefinitions on any apiserver as `kubectl apply --server-side`
//! would, and waiting until the apiserver reports them Established (serving their kinds).

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

/// Field manager of the CRDs the test kit installs.
const FIELD_MANAGER: &str = "countersign-testkit";

/// Longest wait for one CRD to become Established.
pub const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Applies each CRD (server-side apply, forced) and waits until all are Established.
pub async fn install_crds(
    client: &kube::Client,
    crds: &[CustomResourceDefinition],
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds {
        let name = crd.metadata.name.as_deref().unwrap_or_default();
        let mut body = crd.clone();
        // Applying a stored object's bookkeeping would be refused.
        body.metadata.resource_version = None;
        body.metadata.managed_fields = None;
        body.status = None;
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("Cannot install CRD {name}"))?;
    }
    for crd in crds {
        wait_established(client, crd.metadata.name.as_deref().unwrap_or_default()).await?;
    }
    Ok(())
}

/// Waits up to [`ESTABLISH_TIMEOUT`] until CRD `name` is Established.
pub async fn wait_established(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    tokio::time::timeout(
        ESTABLISH_TIMEOUT,
        await_condition(api, name, conditions::is_crd_established()),
    )
    .await
    .with_context(|| format!("CRD {name} not Established within {ESTABLISH_TIMEOUT:?}"))?
    .with_context(|| format!("Cannot watch CRD {name}"))?;
    Ok(())
}

/// The Countersign CRDs as users install them: every `crds/*.yaml` of the repository, in
/// name order.
pub fn countersign_crds() -> anyhow::Result<Vec<CustomResourceDefinition>> {
    let dir = super::workspace_root().join("crds");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("Cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("Cannot read {}", path.display()))?;
            serde_yaml::from_str(&text).with_context(|| format!("Cannot parse {}", path.display()))
        })
        .collect()
}
