//! RiskPolicy reconciliation: compiles every policy (globs, rules, thresholds, the Rego
//! module) with the same engine gates use and reports the result where GitOps tools look:
//! `Ready=True` with `status.ruleCount`, or `Ready=False` plus `Stalled=True` naming every
//! compile error (reason `Invalid`), always at the observed generation. A change of
//! readiness is an Event (a Warning when the policy is invalid), so
//! `kubectl wait --for=condition=Ready riskpolicy/default` and Argo CD's health agree.

use std::sync::Arc;

use countersign_crds::conditions::{self, Readiness};
use countersign_crds::{RiskPolicy, RiskPolicyStatus};
use countersign_policies::CompiledPolicy;
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::agent_run::scoped;
use crate::backoff;
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};

/// Longest condition message (the whole list of compile errors, truncated).
const MAX_MESSAGE: usize = 4096;

type PolicyContext = (Arc<Context>, Recorder);

/// Runs the RiskPolicy controller until the future is dropped.
pub async fn run(ctx: Arc<Context>) {
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    Controller::new(scoped::<RiskPolicy>(&ctx), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new((ctx.clone(), recorder)))
        .for_each(|result| {
            backoff::reset_on_success(&ctx.error_backoff, &result);
            async {}
        })
        .await;
}

fn error_policy(policy: Arc<RiskPolicy>, err: &Error, pc: Arc<PolicyContext>) -> Action {
    let ctx = &pc.0;
    ctx.metrics
        .reconcile_failed("RiskPolicy", err.metric_label());
    let wait = ctx.error_backoff.next(&backoff::key(policy.as_ref()), err);
    tracing::warn!(policy = %policy.name_any(), error = %err, retry_in = ?wait, "risk policy reconcile failed");
    Action::requeue(wait)
}

#[tracing::instrument(skip_all, fields(kind = "RiskPolicy", namespace = policy.namespace().unwrap_or_default(), name = policy.name_any()))]
async fn reconcile(policy: Arc<RiskPolicy>, pc: Arc<PolicyContext>) -> Result<Action> {
    let (ctx, recorder) = (&pc.0, &pc.1);
    let _timer = ctx.metrics.reconcile("RiskPolicy");
    let compiled = CompiledPolicy::compile(&policy.spec)
        .map(|c| c.rule_count())
        .map_err(|errors| {
            errors
                .errors()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        });
    let status = desired_status(&policy, compiled, Timestamp::now());
    let old = policy.status.clone().unwrap_or_default();
    if without_times(&old) != without_times(&status) {
        let patch = json!({
            "apiVersion": RiskPolicy::api_version(&()),
            "kind": RiskPolicy::kind(&()),
            "status": status,
        });
        Api::<RiskPolicy>::namespaced(ctx.client.clone(), &policy.namespace().unwrap_or_default())
            .patch_status(
                &policy.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        if let Some(event) =
            crate::events::readiness_event(&old.conditions, &status.conditions, "Compile")
        {
            crate::events::publish(recorder, &policy.object_ref(&()), event).await;
        }
    }
    Ok(Action::await_change())
}

/// The status of `policy` given its compilation: the rule count, or every error.
pub fn desired_status(
    policy: &RiskPolicy,
    compiled: std::result::Result<usize, Vec<String>>,
    now: Timestamp,
) -> RiskPolicyStatus {
    let mut status = policy.status.clone().unwrap_or_default();
    status.observed_generation = policy.metadata.generation;
    status.rule_count = u32::try_from(policy.spec.rules.len()).unwrap_or(u32::MAX);
    let readiness = match compiled {
        Ok(rules) => Readiness::Ready {
            reason: "Compiled".into(),
            message: format!("{rules} rules compiled"),
        },
        Err(errors) => Readiness::Stalled {
            reason: "Invalid".into(),
            message: countersign_policies::truncate(
                &format!("the policy does not compile: {}", errors.join("; ")),
                MAX_MESSAGE,
            ),
        },
    };
    conditions::apply_readiness(
        &mut status.conditions,
        &readiness,
        policy.metadata.generation,
        now,
    );
    status
}

/// The status without condition times, to skip writes that would change nothing else.
fn without_times(status: &RiskPolicyStatus) -> RiskPolicyStatus {
    let mut status = status.clone();
    for condition in &mut status.conditions {
        condition.last_transition_time =
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH);
    }
    status
}

#[cfg(test)]
mod tests {
    use countersign_crds::conditions::{READY, STALLED, find, is_true};

    use super::*;

    fn policy(generation: i64) -> RiskPolicy {
        let mut policy = countersign_policies::default_policy();
        policy.metadata.generation = Some(generation);
        policy
    }

    #[test]
    fn a_compiling_policy_is_ready_with_its_rule_count() {
        let policy = policy(3);
        let rules = policy.spec.rules.len();
        let status = desired_status(&policy, Ok(rules), Timestamp::UNIX_EPOCH);
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.rule_count as usize, rules);
        let ready = find(&status.conditions, READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Compiled")
        );
        assert_eq!(ready.observed_generation, Some(3));
        assert!(find(&status.conditions, STALLED).is_none());
    }

    #[test]
    fn an_invalid_policy_is_stalled_with_every_error() {
        let status = desired_status(
            &policy(4),
            Err(vec![
                "spec.rules[1].match.paths[0]: invalid glob".into(),
                "spec.rego: parse error".into(),
            ]),
            Timestamp::UNIX_EPOCH,
        );
        let ready = find(&status.conditions, READY).expect("Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Invalid")
        );
        assert!(ready.message.contains("invalid glob"), "{}", ready.message);
        assert!(ready.message.contains("spec.rego"), "{}", ready.message);
        assert!(is_true(&status.conditions, STALLED));
    }

    #[test]
    fn fixing_a_policy_clears_stalled() {
        let mut policy = policy(5);
        policy.status = Some(desired_status(
            &policy,
            Err(vec!["bad".into()]),
            Timestamp::UNIX_EPOCH,
        ));
        let status = desired_status(&policy, Ok(2), Timestamp::UNIX_EPOCH);
        assert!(find(&status.conditions, STALLED).is_none());
        assert!(is_true(&status.conditions, READY));
    }
}
