//! `countersign agent clone|work|push`: runs one step of an agent attempt and maps its
//! outcome to the exit code Kubernetes sees (a non-zero exit fails the pod, so the later
//! steps do not run).

use countersign_agent::config::AgentCommand;
use countersign_agent::steps;

/// Runs `step`.
pub fn run(step: AgentCommand) -> anyhow::Result<()> {
    match step {
        AgentCommand::Clone(args) => match steps::clone::run(&args)? {
            Ok(_) => Ok(()),
            Err(result) => anyhow::bail!(
                "the clone step failed: {}",
                result.reason.as_deref().unwrap_or("see the result")
            ),
        },
        // The work step ends 0 whenever it wrote its report, whatever the outcome: the push
        // step turns the report into the attempt's result.
        AgentCommand::Work(args) => steps::work::run(&args).map(drop),
        AgentCommand::Push(args) => {
            let result = steps::push::run(&args)?;
            if steps::is_success(result.outcome) {
                Ok(())
            } else {
                // The result (already written) says why; the exit code marks the pod Failed.
                anyhow::bail!(
                    "the attempt ended {:?}: {}",
                    result.outcome,
                    result.reason.as_deref().unwrap_or("see the result")
                )
            }
        }
    }
}
