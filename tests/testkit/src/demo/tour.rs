//! The tour itself, once the stage is set. First scenario: label issue #1, follow the run,
//! show the gate, approve as the required roles and wait for the green check. Then the second
//! scenario, [`super::breakdown`], on the same stage. The waits and narration helpers both
//! scenarios use live here.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context as _, bail};
use countersign_crds::{AgentRun, ApprovalGate, ApprovalGateStatus, GatePhase, RunPhase};
use kube::Api;
use kube::api::ListParams;
use serde_json::Value;

use super::{
    CHECK, DemoOptions, DemoReport, NAMESPACE, Narrator, POLL, REPOSITORY, Stage, WEBHOOK_SECRET,
    cast, processes, script,
};
use crate::github::{Delivery, TEST_APP_SLUG, User};

pub(super) async fn tour(
    options: &DemoOptions,
    stage: &Stage,
    n: &mut Narrator,
) -> anyhow::Result<DemoReport> {
    let cast = cast();
    let timeout = options.step_timeout;
    let runs: Api<AgentRun> = Api::namespaced(stage.api.client(), NAMESPACE);
    let gates: Api<ApprovalGate> = Api::namespaced(stage.api.client(), NAMESPACE);

    n.plain("1. One issue, one Agent, one pull request:");
    let payload = stage
        .github
        .world()
        .label_issue(REPOSITORY, 1, "ai:backend", &cast.rita);
    n.line(&format!(
        "→ rita labels issue #1 \"{}\" with ai:backend (GitHub sends the webhook to the bot)",
        script::ISSUE_TITLE
    ));
    deliver(stage, "issues", &payload).await?;

    let run = until(timeout, "the bot to create the AgentRun", || async {
        Ok(runs
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .next())
    })
    .await?;
    let name = run.metadata.name.clone().unwrap_or_default();
    n.line(&format!("✔ the bot created AgentRun {NAMESPACE}/{name}"));

    let run = follow(
        &runs,
        std::slice::from_ref(&name),
        RunPhase::PullRequestOpen,
        n,
        run_timeout(timeout),
    )
    .await?
    .remove(0);
    let status = run.status.clone().unwrap_or_default();
    if let Some(attempt) = status.attempts.last() {
        n.line(&format!(
            "✔ pod {} ran `countersign agent clone`, `work` and `push` on provider {}",
            attempt.pod, attempt.provider
        ));
        let requests = stage.models.backend.requests();
        let with_key = requests.iter().filter(|r| r.auth_ok).count();
        n.line(&format!(
            "✔ the work step reached the model only through the provider gateway at {}: \
             {} requests, {with_key} with the key only the gateway holds; {} tokens in, {} out \
             counted by the gateway",
            stage.gateway.addr,
            requests.len(),
            status.usage.input_tokens,
            status.usage.output_tokens
        ));
        if !attempt.revoked_tokens.is_empty() {
            n.line("✔ the attempt's GitHub tokens were revoked when it ended");
        }
    }
    let branch = status.branch.clone().unwrap_or_default();
    let pr = status
        .pull_request
        .as_ref()
        .map(|p| p.number)
        .context("the run has no pull request")?;
    let (head, draft, labels) = {
        let w = stage.github.world();
        let pull = w
            .pulls
            .get(&(REPOSITORY.to_owned(), pr))
            .context("the pull request is not on the fake GitHub")?;
        let labels = w
            .issues
            .get(&(REPOSITORY.to_owned(), pr))
            .map(|i| i.labels.join(", "))
            .unwrap_or_default();
        (pull.head_sha.clone(), pull.draft, labels)
    };
    n.line(&format!(
        "✔ branch {branch} pushed over git smart-HTTP at {}",
        &head[..head.len().min(12)]
    ));
    n.line(&format!(
        "✔ pull request #{pr} opened{} by {TEST_APP_SLUG}[bot], labels: {labels}",
        if draft { " as a draft" } else { "" }
    ));

    let (gate_name, gate_status) = evaluated_gate(stage, &gates, pr, timeout).await?;
    let level = say_risk(n, &gate_name, &gate_status)?;
    check_conclusion(stage, &head, None, timeout).await?;

    n.line("→ rita (who asked for the run) approves: it must not count (separation of duties)");
    review(stage, pr, &cast.rita).await?;
    let mut approved_roles = Vec::new();
    for requirement in &gate_status.requirements {
        let who = match requirement.role.as_str() {
            "developer" => &cast.dev,
            "tech_lead" => &cast.lead,
            other => bail!("the demo has nobody in role {other}"),
        };
        n.line(&format!("→ {} approves as {}", who.login, requirement.role));
        review(stage, pr, who).await?;
        approved_roles.push(requirement.role.to_string());
        let role = requirement.role.clone();
        let gate = until(timeout, &format!("the gate to count {role}"), || async {
            Ok(gates.get(&gate_name).await?.status.filter(|s| {
                s.requirements
                    .iter()
                    .any(|r| r.role == role && r.satisfied >= r.count)
            }))
        })
        .await?;
        let missing: Vec<String> = gate
            .requirements
            .iter()
            .filter(|r| r.satisfied < r.count)
            .map(|r| r.role.to_string())
            .collect();
        if missing.is_empty() {
            n.line(&format!(
                "✔ {role} approved: every required role has approved"
            ));
        } else {
            check_conclusion(stage, &head, None, timeout).await?;
            n.line(&format!(
                "✔ {role} approved; check {CHECK} stays pending: still needs {}",
                missing.join(", ")
            ));
        }
    }
    let gate = until(timeout, "the gate to approve", || async {
        let gate = gates.get(&gate_name).await?;
        let phase = gate.status.as_ref().map(|s| s.phase);
        match phase {
            Some(GatePhase::Approved) => Ok(Some(gate)),
            Some(GatePhase::Rejected | GatePhase::Expired) => {
                bail!("the gate ended {phase:?}")
            }
            _ => Ok(None),
        }
    })
    .await?;
    for record in gate.status.iter().flat_map(|s| &s.approvals) {
        n.plain(&format!(
            "          {} {}: {}",
            if record.valid { "counts  " } else { "ignored " },
            record.user.login,
            record.invalid_reason.map_or_else(
                || record
                    .roles
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                |r| format!("{r:?}")
            )
        ));
    }
    let conclusion = check_conclusion(stage, &head, Some("success"), timeout).await?;
    n.line(&format!(
        "✔ check {CHECK} on {}: {conclusion}",
        &head[..head.len().min(12)]
    ));

    n.plain("");
    n.plain(
        "2. An architect breaks an issue into backend and frontend runs, each gated by its own \
         risk:",
    );
    let breakdown = super::breakdown::breakdown(options, stage, n).await?;
    Ok(DemoReport {
        run: name,
        pull_request: pr,
        risk: level,
        approved_roles,
        conclusion,
        breakdown,
        bot: stage.bot.addr,
        kubeconfig: stage.kubeconfig.clone(),
    })
}

/// How long a run may take to open its pull request: its clone, work and push are three
/// steps, each a process of its own.
pub(super) fn run_timeout(step_timeout: Duration) -> Duration {
    step_timeout * 3
}

/// Follows the runs `names` until every one is in phase `target`, narrating each phase of each
/// run when first seen; fails as soon as one ends. Returns the runs in the order of `names`.
pub(super) async fn follow(
    runs: &Api<AgentRun>,
    names: &[String],
    target: RunPhase,
    n: &mut Narrator,
    timeout: Duration,
) -> anyhow::Result<Vec<AgentRun>> {
    // The probe narrates while it polls; it is called again only after its last call ended.
    let n = Mutex::new(n);
    let seen = Mutex::new(Vec::<(String, RunPhase)>::new());
    let what = format!("{} to reach {target:?}", names.join(" and "));
    until(timeout, &what, || async {
        let mut found = Vec::new();
        for name in names {
            let Some(run) = runs.get_opt(name).await? else {
                continue;
            };
            let status = run.status.clone().unwrap_or_default();
            let first_seen = {
                let mut seen = unpoisoned(&seen);
                let new = !seen.contains(&(name.clone(), status.phase));
                if new {
                    seen.push((name.clone(), status.phase));
                }
                new
            };
            if first_seen {
                let who = if names.len() == 1 { "run" } else { name };
                unpoisoned(&n).line(&format!(
                    "  {who} phase {:?}{}",
                    status.phase,
                    status
                        .message
                        .as_deref()
                        .map_or(String::new(), |m| format!(": {m}"))
                ));
            }
            if status.phase == target {
                found.push(run);
            } else if status.phase.is_finished() {
                bail!(
                    "run {name} ended {:?}: {}",
                    status.phase,
                    status.message.unwrap_or_default()
                );
            }
        }
        Ok((found.len() == names.len()).then_some(found))
    })
    .await
}

fn unpoisoned<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Delivers the `pull_request.opened` webhook GitHub sends for the bot's pull request `pr` and
/// waits for its gate to score the risk; returns the gate's name and status.
pub(super) async fn evaluated_gate(
    stage: &Stage,
    gates: &Api<ApprovalGate>,
    pr: u64,
    timeout: Duration,
) -> anyhow::Result<(String, ApprovalGateStatus)> {
    let opened =
        stage
            .github
            .world()
            .pull_request_payload(REPOSITORY, pr, "opened", &User::test_app_bot());
    deliver(stage, "pull_request", &opened).await?;
    let gate_name = format!("shop-pr-{pr}");
    let gate = until(
        timeout,
        &format!("gate {gate_name} to be evaluated"),
        || async {
            Ok(gates
                .get_opt(&gate_name)
                .await?
                .filter(|g| g.status.as_ref().is_some_and(|s| s.risk.is_some())))
        },
    )
    .await?;
    Ok((gate_name, gate.status.unwrap_or_default()))
}

/// Narrates a gate's risk: level, score, workflow, each factor's reason and the roles it
/// needs. Returns the level, e.g. `medium`.
pub(super) fn say_risk(
    n: &mut Narrator,
    gate_name: &str,
    status: &ApprovalGateStatus,
) -> anyhow::Result<String> {
    let risk = status.risk.as_ref().context("the gate has no risk")?;
    let level = format!("{:?}", risk.level).to_ascii_lowercase();
    n.line(&format!(
        "✔ ApprovalGate {gate_name}: {level} risk (score {}/10, workflow {})",
        risk.score, risk.workflow
    ));
    for factor in &risk.factors {
        n.plain(&format!("          {}", factor.reason));
    }
    let required: Vec<String> = status
        .requirements
        .iter()
        .map(|r| format!("{} ×{}", r.role, r.count))
        .collect();
    n.plain(&format!(
        "          needs: {} — check {CHECK} is pending",
        required.join(", ")
    ));
    Ok(level)
}

/// `reviewer` approves pull request `pr` on the fake GitHub, which sends the webhook.
async fn review(stage: &Stage, pr: u64, reviewer: &User) -> anyhow::Result<()> {
    let payload =
        stage
            .github
            .world()
            .submit_review(REPOSITORY, pr, reviewer, "APPROVED", "Looks good");
    deliver(stage, "pull_request_review", &payload).await
}

/// Waits for our check on `sha` to be completed with `expected` (or, with `None`, to exist
/// and still be pending); returns its conclusion.
pub(super) async fn check_conclusion(
    stage: &Stage,
    sha: &str,
    expected: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let what = format!("check {CHECK} to be {}", expected.unwrap_or("pending"));
    until(timeout, &what, || async {
        let w = stage.github.world();
        let latest = w
            .check_runs_on(REPOSITORY, sha)
            .into_iter()
            .rev()
            .find(|c| c.name == CHECK)
            .map(|c| (c.status.clone(), c.conclusion.clone()));
        Ok(match (latest, expected) {
            (Some((status, None)), None) if status != "completed" => Some("pending".to_owned()),
            (Some((_, Some(conclusion))), Some(want)) if conclusion == want => Some(conclusion),
            _ => None,
        })
    })
    .await
}

/// Signs `payload` and posts it to the bot's `/webhook`, as GitHub does.
pub(super) async fn deliver(stage: &Stage, event: &str, payload: &Value) -> anyhow::Result<()> {
    let delivery = Delivery::from_payload(event, payload, WEBHOOK_SECRET)?;
    let status = processes::post_delivery(stage.bot.addr, &delivery).await?;
    if !(200..300).contains(&status) {
        bail!("the bot answered {status} to the {event} webhook");
    }
    Ok(())
}

/// Polls `probe` until it yields a value, fails, or `timeout` passes.
pub(super) async fn until<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut probe: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}
