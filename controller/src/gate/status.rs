//! Writing what a gate evaluation found: the status (server-side apply on the status
//! subresource, skipped when unchanged), a problem that stopped the evaluation, and Events.

use countersign_crds::conditions::{self, Readiness};
use countersign_crds::{ApprovalGate, ApprovalGateStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{Context, MANAGER};
use crate::error::Result;

use super::Problem;

pub(super) async fn publish(
    recorder: &Recorder,
    gate: &ApprovalGate,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.to_owned()),
        action: "Evaluate".into(),
        secondary: None,
    };
    crate::events::publish(recorder, &gate.object_ref(&()), event).await;
}

pub(super) async fn write_status(
    gate: &ApprovalGate,
    ctx: &Context,
    status: &ApprovalGateStatus,
) -> Result<(), kube::Error> {
    if gate.status.as_ref() == Some(status) {
        return Ok(());
    }
    let ns = gate.namespace().unwrap_or_default();
    let patch = json!({
        "apiVersion": ApprovalGate::api_version(&()),
        "kind": ApprovalGate::kind(&()),
        "status": status,
    });
    Api::<ApprovalGate>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &gate.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(drop)
}

/// Records why the gate could not be evaluated. The check run is left as it is: pending
/// stays pending (nothing merges unevaluated); an earlier conclusion is re-evaluated when
/// the problem is fixed.
pub(super) async fn write_problem(
    gate: &ApprovalGate,
    ctx: &Context,
    problem: &Problem,
) -> Result<(), kube::Error> {
    let mut status = gate.status.clone().unwrap_or_default();
    status.last_error = Some(countersign_policies::truncate(&problem.message, 1024));
    status.observed_generation = gate.metadata.generation;
    let (reason, message) = (problem.reason.to_owned(), problem.message.clone());
    let readiness = if problem.transient {
        Readiness::Progressing { reason, message }
    } else {
        Readiness::Stalled { reason, message }
    };
    conditions::apply_readiness(
        &mut status.conditions,
        &readiness,
        gate.metadata.generation,
        ctx.clock.now(),
    );
    write_status(gate, ctx, &status).await
}
