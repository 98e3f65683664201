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
use kube::api::Api;

use crate::config_map::{self, UpdateError};
use crate::error::Denial;
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
    let metadata = ObjectMeta {
        name: Some(progress_name(&attempt.run)),
        namespace: Some(attempt.namespace.clone()),
        labels: Some(BTreeMap::from([
            (PROGRESS_LABEL.to_owned(), "true".to_owned()),
            (
                "app.kubernetes.io/managed-by".to_owned(),
                "countersign".to_owned(),
            ),
        ])),
        // Owned by the run: it goes with it, and its changes reach the run's reconcile
        // through the owner reference.
        owner_references: Some(vec![OwnerReference {
            api_version: "countersign.dev/v1alpha1".into(),
            kind: "AgentRun".into(),
            name: attempt.run.clone(),
            uid: attempt.run_uid.clone(),
            controller: Some(false),
            block_owner_deletion: Some(false),
        }]),
        ..ObjectMeta::default()
    };
    let appended = config_map::update(&api, &metadata, PROGRESS_KEY, WRITE_TRIES, |current| {
        // Unreadable (someone else wrote it): start it again rather than refuse.
        let mut log = current
            .and_then(|map| map.data.as_ref()?.get(PROGRESS_KEY))
            .and_then(|text| MilestoneLog::parse(text).ok())
            .unwrap_or_default();
        if log.count(milestone.attempt) >= MAX_MILESTONES_PER_ATTEMPT {
            return Err(Denial::Limit(format!(
                "this attempt already posted {MAX_MILESTONES_PER_ATTEMPT} milestones"
            )));
        }
        log.push(milestone.clone());
        Ok((log.render(), ()))
    })
    .await;
    appended.map_err(|error| match error {
        UpdateError::Refused(denial) => denial,
        UpdateError::Api(error) => {
            tracing::warn!(%error, run = %attempt.run, "cannot write the run's milestones");
            Denial::Unavailable("the milestone cannot be recorded now".into())
        }
        UpdateError::Contended(tries) => {
            tracing::warn!(tries, run = %attempt.run, "the run's milestones kept changing under the write");
            Denial::Unavailable(
                "the milestone cannot be recorded now (too many concurrent writes)".into(),
            )
        }
    })
}
