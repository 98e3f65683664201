//! The resync sweep of agent-run children: Pods, Secrets and NetworkPolicies labelled as a
//! run's children whose run no longer exists (garbage collection missed them, or they were
//! copied without an owner reference) are deleted, so nothing a lost event left behind lingers.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::resources::RUN_LABEL;
use super::{ignore_not_found, scoped};
use crate::context::Context;
use crate::error::Result;
use countersign_crds::AgentRun;

/// Whether a child labelled as an agent-run child has no live owning run: its run is gone
/// (and garbage collection did not catch it) or it was copied without an owner reference.
pub fn is_orphan(
    owners: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    live: &std::collections::HashSet<String>,
) -> bool {
    !owners
        .iter()
        .any(|o| o.kind == "AgentRun" && live.contains(&o.uid))
}

/// On every resync, deletes Pods, Secrets and NetworkPolicies labelled as agent-run children
/// whose run no longer exists, so nothing a lost event or a hand edit left behind lingers.
pub(super) async fn sweep_orphans(ctx: Arc<Context>, runs: Store<AgentRun>) {
    let mut tick = tokio::time::interval(ctx.settings.resync_interval.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        if runs.wait_until_ready().await.is_err() {
            return;
        }
        let live: std::collections::HashSet<String> =
            runs.state().iter().filter_map(|r| r.uid()).collect();
        // Secrets are listed per namespace, never cluster-wide (the chart grants them only in
        // the namespaces it lists): the watched namespace, else those with runs or Agents.
        let namespaces = secret_namespaces(&ctx, &runs).await;
        let secrets = async {
            for ns in &namespaces {
                sweep_in::<Secret>(&ctx, Api::namespaced(ctx.client.clone(), ns), &live).await?;
            }
            Ok::<(), crate::error::Error>(())
        };
        let swept = tokio::join!(
            sweep_kind::<Pod>(&ctx, &live),
            secrets,
            sweep_kind::<NetworkPolicy>(&ctx, &live),
        );
        for result in [swept.0, swept.1, swept.2] {
            if let Err(err) = result {
                tracing::warn!(error = %err, "orphan sweep failed; will retry at the next resync");
            }
        }
    }
}

/// Where agent-run Secrets can be: the controller's namespace, or every namespace holding a
/// run or an Agent.
async fn secret_namespaces(
    ctx: &Context,
    runs: &Store<AgentRun>,
) -> std::collections::BTreeSet<String> {
    if let Some(ns) = &ctx.settings.namespace {
        return [ns.clone()].into();
    }
    let mut namespaces: std::collections::BTreeSet<String> =
        runs.state().iter().filter_map(|r| r.namespace()).collect();
    match scoped::<countersign_crds::Agent>(ctx)
        .list(&ListParams::default())
        .await
    {
        Ok(agents) => namespaces.extend(agents.items.iter().filter_map(|a| a.namespace())),
        Err(err) => tracing::warn!(error = %err, "cannot list Agents for the orphan sweep"),
    }
    namespaces
}

async fn sweep_kind<K>(ctx: &Context, live: &std::collections::HashSet<String>) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    sweep_in(ctx, scoped::<K>(ctx), live).await
}

async fn sweep_in<K>(
    ctx: &Context,
    api: Api<K>,
    live: &std::collections::HashSet<String>,
) -> Result<()>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    // Metadata only (owners are all it needs), a page at a time: with thousands of finished
    // runs' pods a full listing would hold every pod spec in memory at once.
    let mut params = ListParams::default().labels(RUN_LABEL).limit(SWEEP_PAGE);
    loop {
        let page = api.list_metadata(&params).await?;
        for child in &page.items {
            if child.metadata.deletion_timestamp.is_some()
                || !is_orphan(child.owner_references(), live)
            {
                continue;
            }
            let ns = child.namespace().unwrap_or_default();
            let name = child.name_any();
            let namespaced: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
            ignore_not_found(
                namespaced
                    .delete(&name, &DeleteParams::background())
                    .await
                    .map(drop),
            )?;
            tracing::info!(kind = %K::kind(&()), namespace = %ns, name = %name, "deleted orphaned agent-run child");
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(()),
        }
    }
}

/// Children listed per request by the orphan sweep.
const SWEEP_PAGE: u32 = 500;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::is_orphan;

    fn owner(kind: &str, uid: &str) -> OwnerReference {
        OwnerReference {
            kind: kind.into(),
            uid: uid.into(),
            api_version: "v".into(),
            name: "n".into(),
            ..Default::default()
        }
    }

    #[test]
    fn children_without_a_live_run_owner_are_orphans() {
        let live: HashSet<String> = ["alive".to_owned()].into();
        assert!(!is_orphan(&[owner("AgentRun", "alive")], &live));
        assert!(is_orphan(&[owner("AgentRun", "dead")], &live));
        assert!(is_orphan(&[], &live), "a copy without an owner reference");
        assert!(
            is_orphan(&[owner("Job", "alive")], &live),
            "only AgentRun owners count"
        );
    }
}
