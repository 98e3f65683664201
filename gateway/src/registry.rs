//! Which attempt a gateway token belongs to, and whether that attempt is still running.
//!
//! The controller puts the SHA-256 of each attempt's gateway token on the attempt's pod
//! ([`GATEWAY_TOKEN_HASH_ANNOTATION`]); the token itself is only in the attempt's Secret,
//! mounted into the pod's `work` step. The gateway never stores tokens: it hashes what a
//! request presents and looks for a pod with that hash that the controller made (labelled as
//! an agent pod, controlled by an AgentRun). A token is live while its pod exists, is not
//! being deleted, has not finished, and its `work` step has not ended — the only step that
//! needs the model. Pure functions over pods; the caller owns the pod cache.

use std::sync::Arc;

use countersign_crds::attempt::{
    AGENT_POD_APP, ATTEMPT_LABEL, GATEWAY_TOKEN_HASH_ANNOTATION, PROVIDER_LABEL,
};
use countersign_crds::task_file::Step;
use k8s_openapi::api::core::v1::Pod;

/// The attempt a live or ended token belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptRef {
    /// Namespace of the pod and its run.
    pub namespace: String,
    /// The attempt's pod.
    pub pod: String,
    /// The AgentRun's name (from the pod's controller reference).
    pub run: String,
    /// The AgentRun's uid.
    pub run_uid: String,
    /// Attempt number.
    pub attempt: u32,
    /// The provider entry the attempt starts on (`Agent.spec.providers[].name`).
    pub provider: String,
    /// The Agent the controller started the pod for (its `countersign.dev/agent` label): what
    /// a routed run's attempt runs as until the gateway's cache shows the run's routing.
    pub agent_label: Option<String>,
}

impl AttemptRef {
    /// `<namespace>/<run>/<attempt>`.
    pub fn key(&self) -> String {
        countersign_crds::attempt::attempt_key(&self.namespace, &self.run, self.attempt)
    }
}

/// Whether an attempt's token may still be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// The work step may still be running.
    Live,
    /// The attempt (or at least its work step) ended; the reason for people.
    Ended(&'static str),
}

/// The lower-case hex SHA-256 of `token`.
pub fn token_hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The attempt of `pod` and its token hash, when the pod is an agent attempt pod controlled
/// by an AgentRun and registers a token.
pub fn attempt_of(pod: &Pod) -> Option<(&str, AttemptRef)> {
    let meta = &pod.metadata;
    let labels = meta.labels.as_ref()?;
    if labels.get("app.kubernetes.io/name").map(String::as_str) != Some(AGENT_POD_APP) {
        return None;
    }
    let hash = meta
        .annotations
        .as_ref()?
        .get(GATEWAY_TOKEN_HASH_ANNOTATION)?
        .as_str();
    let owner = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "AgentRun")?;
    let attempt = labels.get(ATTEMPT_LABEL)?.parse().ok()?;
    Some((
        hash,
        AttemptRef {
            namespace: meta.namespace.clone().unwrap_or_default(),
            pod: meta.name.clone().unwrap_or_default(),
            run: owner.name.clone(),
            run_uid: owner.uid.clone(),
            attempt,
            provider: labels.get(PROVIDER_LABEL).cloned().unwrap_or_default(),
            agent_label: labels.get(countersign_crds::keys::AGENT_LABEL).cloned(),
        },
    ))
}

/// Whether `pod`'s token may still be used.
pub fn liveness(pod: &Pod) -> Liveness {
    if pod.metadata.deletion_timestamp.is_some() {
        return Liveness::Ended("the attempt's pod is being deleted");
    }
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Liveness::Ended("the attempt ended");
    }
    let work_ended = status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.name == Step::Work.as_str())
        .any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
    if work_ended {
        return Liveness::Ended("the attempt's work step ended");
    }
    Liveness::Live
}

/// The attempt whose pod registers `hash`, with its liveness. When pods of several
/// attempts carry the same hash (only a forged pod could), none is trusted.
pub fn find(pods: &[Arc<Pod>], hash: &str) -> Option<(AttemptRef, Liveness)> {
    let mut found = pods.iter().filter_map(|pod| {
        let (h, attempt) = attempt_of(pod)?;
        constant_time_eq(h.as_bytes(), hash.as_bytes()).then(|| (attempt, liveness(pod)))
    });
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// Compares two byte strings without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(annotations: serde_json::Value, status: serde_json::Value) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "fix-1-2", "namespace": "team",
                    "labels": {"app.kubernetes.io/name": "countersign-agent",
                        "countersign.dev/attempt": "2", "countersign.dev/provider": "primary"},
                    "annotations": annotations,
                    "ownerReferences": [{"apiVersion": "countersign.dev/v1alpha1", "kind": "AgentRun",
                        "name": "fix-1", "uid": "uid-1", "controller": true}]
                },
                "status": status
            }))
            .expect("pod"),
        )
    }

    #[test]
    fn a_registered_hash_finds_its_attempt_while_the_work_step_runs() {
        let hash = token_hash("csgw_secret");
        assert_eq!(hash.len(), 64);
        let running = pod(
            json!({GATEWAY_TOKEN_HASH_ANNOTATION: hash}),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "clone", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"terminated": {"exitCode": 0}}},
                {"name": "work", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"running": {}}}]}),
        );
        let (attempt, live) = find(std::slice::from_ref(&running), &hash).expect("found");
        assert_eq!(live, Liveness::Live);
        assert_eq!(attempt.key(), "team/fix-1/2");
        assert_eq!(attempt.provider, "primary");
        assert_eq!(find(&[running], &token_hash("csgw_other")), None);
    }

    #[test]
    fn tokens_end_with_the_work_step_or_the_pod() {
        let hash = token_hash("t");
        let ann = json!({GATEWAY_TOKEN_HASH_ANNOTATION: hash});
        let pushing = pod(
            ann.clone(),
            json!({"phase": "Running", "initContainerStatuses": [
                {"name": "work", "ready": false, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"terminated": {"exitCode": 0}}}]}),
        );
        assert_eq!(
            liveness(&pushing),
            Liveness::Ended("the attempt's work step ended")
        );
        let done = pod(ann.clone(), json!({"phase": "Succeeded"}));
        assert_eq!(liveness(&done), Liveness::Ended("the attempt ended"));
        // Two pods claiming one hash: neither is trusted.
        assert_eq!(
            find(&[pod(ann.clone(), json!({})), pod(ann, json!({}))], &hash),
            None
        );
    }

    #[test]
    fn pods_not_made_by_the_controller_register_nothing() {
        let hash = token_hash("t");
        let mut stray = (*pod(json!({GATEWAY_TOKEN_HASH_ANNOTATION: hash}), json!({}))).clone();
        stray.metadata.owner_references = None;
        assert!(attempt_of(&stray).is_none());
        let mut other_app = (*pod(json!({GATEWAY_TOKEN_HASH_ANNOTATION: hash}), json!({}))).clone();
        other_app
            .metadata
            .labels
            .as_mut()
            .expect("labels")
            .insert("app.kubernetes.io/name".into(), "web".into());
        assert!(attempt_of(&other_app).is_none());
    }
}
