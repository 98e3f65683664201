//! `POST /countersign/v1/milestones`: an observation-mode agent's progress notes (see
//! [`countersign_crds::progress`]).
//!
//! The request carries the attempt's gateway token like a model request and a JSON body
//! `{"text": "…"}`. The gateway accepts it only from a live attempt of a run in observation
//! mode, makes the note one bounded line, and appends it to the run's progress ConfigMap
//! (read-modify-write with the resourceVersion, so concurrent notes neither get lost nor
//! exceed the attempt's allowance). Answers: `204` when recorded; `400` for a bad body or
//! note (the model may shorten it); `401`/`403` for a token that is unknown, ended, of
//! another attempt or of a run not in observation mode; `429` once the attempt posted
//! [`MAX_MILESTONES_PER_ATTEMPT`]; `503` when the ConfigMap cannot be written.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use countersign_crds::RunMode;
use countersign_crds::progress::{
    MAX_MILESTONES_PER_ATTEMPT, Milestone, MilestoneLog, PROGRESS_KEY, PROGRESS_LABEL,
    clean_milestone, progress_name,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};

use crate::error::Denial;
use crate::ledger::MANAGER;
use crate::plan::Protocol;
use crate::proxy::{Caller, Gateway, identify};

/// The path agents post milestones to.
pub const PATH: &str = "/countersign/v1/milestones";
/// Largest milestone request body.
pub const MAX_BODY_BYTES: usize = 4 * 1024;
/// Tries of one read-modify-write before it counts as failed.
const WRITE_TRIES: u32 = 8;

/// `POST /countersign/v1/milestones`.
pub async fn post(State(gw): State<Arc<Gateway>>, headers: HeaderMap, body: Bytes) -> Response {
    let started = Instant::now();
    let outcome = record(&gw, &headers, &body).await;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(()) => {
            gw.metrics.request("milestone", "ok", seconds);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(denial) => {
            tracing::info!(reason = denial.label(), "refused a milestone");
            gw.metrics.refused(denial.label());
            gw.metrics.request("milestone", "refused", seconds);
            denial.respond(Protocol::OpenAi)
        }
    }
}

async fn record(gw: &Gateway, headers: &HeaderMap, body: &[u8]) -> Result<(), Denial> {
    let caller = identify(&gw.catalog, headers)?;
    let mode = caller
        .run
        .spec
        .mode
        .unwrap_or(caller.agent.spec.default_mode);
    if mode != RunMode::Observation {
        return Err(Denial::NotServed(
            "milestones are for runs in observation mode".into(),
        ));
    }
    if body.len() > MAX_BODY_BYTES {
        return Err(Denial::BadRequest(format!(
            "the body is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_owned))
        .ok_or_else(|| Denial::BadRequest("expected a JSON body {\"text\": \"…\"}".into()))?;
    let text = clean_milestone(&text).map_err(Denial::BadRequest)?;
    let milestone = Milestone {
        attempt: caller.attempt.attempt,
        time: (gw.clock)().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        text,
    };
    let _one_at_a_time = gw.milestone_writes.lock().await;
    append(&gw.client, &caller, milestone).await
}

/// Appends `milestone` to the run's progress ConfigMap, within the attempt's allowance.
async fn append(
    client: &kube::Client,
    caller: &Caller,
    milestone: Milestone,
) -> Result<(), Denial> {
    let attempt = &caller.attempt;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &attempt.namespace);
    let name = progress_name(&attempt.run);
    let params = PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    };
    let unavailable = |e: kube::Error| {
        tracing::warn!(error = %e, run = %attempt.run, "cannot write the run's milestones");
        Denial::Unavailable("the milestone cannot be recorded now".into())
    };
    for _ in 0..WRITE_TRIES {
        let current = api.get_opt(&name).await.map_err(unavailable)?;
        let (mut log, version) = match &current {
            Some(map) => {
                let text = map.data.as_ref().and_then(|d| d.get(PROGRESS_KEY));
                // Unreadable (someone else wrote it): start it again rather than refuse.
                let log = text
                    .and_then(|t| MilestoneLog::parse(t).ok())
                    .unwrap_or_default();
                (log, map.metadata.resource_version.clone())
            }
            None => (MilestoneLog::default(), None),
        };
        if log.count(milestone.attempt) >= MAX_MILESTONES_PER_ATTEMPT {
            return Err(Denial::Limit(format!(
                "this attempt already posted {MAX_MILESTONES_PER_ATTEMPT} milestones"
            )));
        }
        log.push(milestone.clone());
        let map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(attempt.namespace.clone()),
                resource_version: version.clone(),
                labels: Some(BTreeMap::from([
                    (PROGRESS_LABEL.to_owned(), "true".to_owned()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "countersign".to_owned(),
                    ),
                ])),
                // Owned by the run: it goes with it, and its changes reach the run's
                // reconcile through the owner reference.
                owner_references: Some(vec![OwnerReference {
                    api_version: "countersign.dev/v1alpha1".into(),
                    kind: "AgentRun".into(),
                    name: attempt.run.clone(),
                    uid: attempt.run_uid.clone(),
                    controller: Some(false),
                    block_owner_deletion: Some(false),
                }]),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(PROGRESS_KEY.to_owned(), log.render())])),
            ..ConfigMap::default()
        };
        let written = match version {
            Some(_) => api.replace(&name, &params, &map).await,
            None => api.create(&params, &map).await,
        };
        match written {
            Ok(_) => return Ok(()),
            // Another note was written since the read (409), or created first (409 too).
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(unavailable(e)),
        }
    }
    Err(Denial::Unavailable(
        "the milestone cannot be recorded now (too many concurrent writes)".into(),
    ))
}
