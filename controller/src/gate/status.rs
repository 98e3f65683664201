//! Writing what a gate evaluation found: the status (server-side apply on the status
//! subresource, skipped when unchanged), a problem that stopped the evaluation, and Events.

use countersign_crds::conditions::{self, Readiness};
use countersign_crds::{ApprovalGate, ApprovalGateStatus};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::context::{Context, MANAGER};

use super::{Failure, Problem};

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

/// Writes `status` unless `gate` already has it (or `confirm` asks to prove `gate` current
/// anyway), with `gate`'s resourceVersion as a precondition: a decision made from a copy the
/// watch cache had not brought up to date (our own last write not in it yet) is refused with
/// [`Failure::Stale`] before any side effect follows it. On success `gate` becomes the
/// written object, so the next save's precondition is the new version.
pub(super) async fn save(
    gate: &mut ApprovalGate,
    ctx: &Context,
    status: &ApprovalGateStatus,
    confirm: bool,
) -> Result<(), Failure> {
    if gate.status.as_ref() == Some(status) && !confirm {
        return Ok(());
    }
    let ns = gate.namespace().unwrap_or_default();
    let patch = json!({
        "apiVersion": ApprovalGate::api_version(&()),
        "kind": ApprovalGate::kind(&()),
        "metadata": {
            "name": gate.name_any(),
            "resourceVersion": gate.resource_version(),
        },
        "status": status,
    });
    match Api::<ApprovalGate>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &gate.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(written) => {
            *gate = written;
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Failure::Stale),
        Err(e) => Err(Failure::Kube(e)),
    }
}

/// Records why the gate could not be evaluated. The check run is left as it is: pending
/// stays pending (nothing merges unevaluated); an earlier conclusion is re-evaluated when
/// the problem is fixed.
pub(super) async fn write_problem(
    gate: &mut ApprovalGate,
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
    match save(gate, ctx, &status, false).await {
        // Recorded from an old copy would undo newer decisions: the next pass records it.
        Ok(()) | Err(Failure::Stale) => Ok(()),
        Err(Failure::Kube(e)) => Err(e),
        Err(Failure::Problem(_) | Failure::GitHub(_)) => Ok(()),
    }
}
