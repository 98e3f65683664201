//! The tour's second scenario, on the stage the first one used: rita labels issue #2 `ai:plan`,
//! which maps to the `architect` Agent. Its run proposes a breakdown instead of a change (two
//! sub-tasks, for the `backend` and `frontend` Agents) and waits in `AwaitingPlanApproval`
//! with the plan on the issue. The tech lead's `/approve` comment moves it to
//! `Coordinating`: it creates one child run per sub-task, both run at once (each Agent on its
//! own scripted model), and each opens its own pull request. Each pull request gets its own
//! ApprovalGate, scored on its own change: the migration critical, the page medium. The tour
//! shows both gates with their pending checks and the parent's `status.children`; it approves
//! neither, so the parent stays `Coordinating` (it succeeds once both pull requests merge).

use anyhow::{Context as _, bail};
use countersign_crds::{AgentRun, ApprovalGate, RunPhase};
use kube::Api;

use super::tour::{
    check_conclusion, deliver, evaluated_gate, follow, run_timeout, say_risk, until,
};
use super::{
    BreakdownReport, ChildReport, DemoOptions, NAMESPACE, Narrator, REPOSITORY, Stage, cast, script,
};
use crate::model::FakeModel;

/// The issue the scenario breaks down (the stage opens it second).
const ISSUE: u64 = 2;
/// The label that starts the architect.
const LABEL: &str = "ai:plan";

pub(super) async fn breakdown(
    options: &DemoOptions,
    stage: &Stage,
    n: &mut Narrator,
) -> anyhow::Result<BreakdownReport> {
    let cast = cast();
    let timeout = options.step_timeout;
    let runs: Api<AgentRun> = Api::namespaced(stage.api.client(), NAMESPACE);
    let gates: Api<ApprovalGate> = Api::namespaced(stage.api.client(), NAMESPACE);
    stage.models.architect.script(script::breakdown());
    stage.models.backend.script(script::backend_subtask());
    stage.models.frontend.script(script::frontend_subtask());
    let backend_requests = stage.models.backend.requests().len();

    let payload = stage
        .github
        .world()
        .label_issue(REPOSITORY, ISSUE, LABEL, &cast.rita);
    n.line(&format!(
        "→ rita labels issue #{ISSUE} \"{}\" with {LABEL}, which starts the architect Agent",
        script::BREAKDOWN_ISSUE_TITLE
    ));
    deliver(stage, "issues", &payload).await?;
    let parent = format!("shop-issue-{ISSUE}-architect");
    until(
        timeout,
        "the bot to create the architect's AgentRun",
        || async { Ok(runs.get_opt(&parent).await?) },
    )
    .await?;
    n.line(&format!("✔ the bot created AgentRun {NAMESPACE}/{parent}"));
    let proposed = follow(
        &runs,
        std::slice::from_ref(&parent),
        RunPhase::AwaitingPlanApproval,
        n,
        run_timeout(timeout),
    )
    .await?
    .remove(0);
    let status = proposed.status.clone().unwrap_or_default();
    let pod = status
        .attempts
        .last()
        .map(|a| a.pod.clone())
        .unwrap_or_default();
    let breakdown = status
        .breakdown
        .clone()
        .context("the architect's run has no status.breakdown")?;
    let plan = status
        .plan
        .clone()
        .context("the architect's run has no status.plan")?;
    let pushed = stage
        .github
        .world()
        .branches(REPOSITORY)
        .into_iter()
        .any(|b| b.contains(&parent));
    if pushed {
        bail!("the architect's run pushed a branch; a breakdown changes nothing");
    }
    n.line(&format!(
        "✔ pod {pod} had read-only tools: the architect proposed a breakdown, not a change \
         (status.breakdown, {} sub-tasks; no branch pushed)",
        breakdown.tasks.len()
    ));
    // The plan as posted, without its Markdown: exactly what the children will be given.
    for line in plan.text.lines().skip_while(|l| !l.trim().is_empty()) {
        if !line.trim().is_empty() {
            n.plain(&format!(
                "          {}",
                line.replace("**", "").replace('`', "")
            ));
        }
    }
    until(timeout, "the plan to be posted on the issue", || async {
        let w = stage.github.world();
        Ok(w.comments_on(REPOSITORY, ISSUE)
            .iter()
            .any(|c| c.author.ends_with("[bot]") && c.body.contains("Proposed breakdown"))
            .then_some(()))
    })
    .await?;
    n.line(&format!(
        "✔ the plan is on issue #{ISSUE}; the run waits in AwaitingPlanApproval for someone with \
         an approver role"
    ));

    n.line(&format!(
        "→ lead (tech_lead) comments /approve on issue #{ISSUE}"
    ));
    let comment = stage
        .github
        .world()
        .comment(REPOSITORY, ISSUE, "/approve", &cast.lead);
    deliver(stage, "issue_comment", &comment).await?;
    let coordinating = until(timeout, "the breakdown to start its sub-tasks", || async {
        let run = runs.get(&parent).await?;
        let status = run.status.clone().unwrap_or_default();
        match status.phase {
            RunPhase::Coordinating
                if status.children.len() == breakdown.tasks.len()
                    && status.children.iter().all(|c| c.phase.is_some()) =>
            {
                Ok(Some(run))
            }
            phase if phase.is_finished() => bail!(
                "the architect's run ended {phase:?}: {}",
                status.message.unwrap_or_default()
            ),
            _ => Ok(None),
        }
    })
    .await?;
    let children = coordinating.status.clone().unwrap_or_default().children;
    n.line(&format!(
        "✔ {parent} is Coordinating: it created {} child runs, owned by it, which run at once:",
        children.len()
    ));
    for (child, task) in children.iter().zip(&breakdown.tasks) {
        n.plain(&format!(
            "          {} (Agent {}): {}",
            child.name,
            task.agent.as_deref().unwrap_or("routed by capability"),
            task.title
        ));
    }

    let names: Vec<String> = children.iter().map(|c| c.name.clone()).collect();
    let opened = follow(
        &runs,
        &names,
        RunPhase::PullRequestOpen,
        n,
        run_timeout(timeout),
    )
    .await?;
    let mut reports = Vec::new();
    for (run, task) in opened.iter().zip(&breakdown.tasks) {
        let name = run.metadata.name.clone().unwrap_or_default();
        let status = run.status.clone().unwrap_or_default();
        let pr = status
            .pull_request
            .as_ref()
            .map(|p| p.number)
            .with_context(|| format!("run {name} has no pull request"))?;
        let agent = run
            .spec
            .agent_ref
            .as_ref()
            .map(|a| a.name.clone())
            .unwrap_or_default();
        let files: Vec<String> = stage
            .github
            .world()
            .pulls
            .get(&(REPOSITORY.to_owned(), pr))
            .with_context(|| format!("pull request #{pr} is not on the fake GitHub"))?
            .files
            .iter()
            .map(|f| f.filename.clone())
            .collect();
        n.line(&format!(
            "✔ {name} (Agent {agent}) pushed {} and opened pull request #{pr}: {}",
            status.branch.unwrap_or_default(),
            files.join(", ")
        ));
        reports.push(ChildReport {
            task: task.id.clone(),
            run: name,
            agent,
            pull_request: pr,
            gate: String::new(),
            risk: String::new(),
            score: 0,
            required_roles: Vec::new(),
            check: String::new(),
        });
    }
    // Only the gateway holds the models' key: a request with it came through the gateway.
    let through_gateway = |model: &FakeModel, skip: usize| {
        let requests = model.requests();
        let with_key = requests[skip..].iter().filter(|r| r.auth_ok).count();
        (requests.len() - skip, with_key)
    };
    let counts = [
        ("architect", through_gateway(&stage.models.architect, 0)),
        (
            "backend",
            through_gateway(&stage.models.backend, backend_requests),
        ),
        ("frontend", through_gateway(&stage.models.frontend, 0)),
    ];
    if let Some((agent, (all, with_key))) = counts.iter().find(|(_, (all, k))| all != k) {
        bail!("{agent}: {with_key} of {all} model requests came through the gateway");
    }
    n.line(&format!(
        "✔ each Agent worked with its own provider, through the gateway; model requests: {}",
        counts
            .iter()
            .map(|(agent, (all, _))| format!("{agent} {all}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    for child in &mut reports {
        let (gate, gate_status) =
            evaluated_gate(stage, &gates, child.pull_request, timeout).await?;
        child.risk = say_risk(n, &gate, &gate_status)?;
        child.score = gate_status.risk.as_ref().map_or(0, |r| r.score);
        child.required_roles = gate_status
            .requirements
            .iter()
            .map(|r| r.role.to_string())
            .collect();
        let head = gate_status
            .head_sha
            .clone()
            .context("the gate has no head")?;
        child.check = check_conclusion(stage, &head, None, timeout).await?;
        child.gate = gate;
    }
    if reports.iter().all(|c| c.risk == reports[0].risk) {
        bail!(
            "the sub-tasks' pull requests were expected to differ in risk, but all are {}",
            reports[0].risk
        );
    }
    n.line(&format!(
        "✔ one breakdown, {} pull requests, each gated by its own risk: {}",
        reports.len(),
        reports
            .iter()
            .map(|c| format!("#{} {} (score {})", c.pull_request, c.risk, c.score))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // The parent mirrors each child's phase, pull request and gate.
    let parent_run = until(
        timeout,
        "the parent to list its children's gates",
        || async {
            let run = runs.get(&parent).await?;
            let listed = run.status.as_ref().is_some_and(|s| {
                s.children.len() == reports.len()
                    && s.children
                        .iter()
                        .all(|c| c.pull_request.is_some() && c.gate_ref.is_some())
            });
            Ok(listed.then_some(run))
        },
    )
    .await?;
    let status = parent_run.status.clone().unwrap_or_default();
    n.line(&format!(
        "✔ {parent} status.children ({:?}: {}):",
        status.phase,
        status.message.as_deref().unwrap_or_default()
    ));
    for child in &status.children {
        n.plain(&format!(
            "          {:<5} {} {}, pull request #{}, gate {}",
            child.task,
            child.name,
            child
                .phase
                .map_or_else(|| "not started".to_owned(), |p| format!("{p:?}")),
            child.pull_request.as_ref().map_or(0, |p| p.number),
            child.gate_ref.as_ref().map_or("", |g| g.name.as_str())
        ));
    }
    n.plain(
        "          (the parent succeeds once both pull requests have been approved and merged)",
    );
    Ok(BreakdownReport {
        run: parent,
        issue: ISSUE,
        approved_by: cast.lead.login.clone(),
        phase: status.phase,
        children: reports,
    })
}
