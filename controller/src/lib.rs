//! Countersign's controller: the only writer of Countersign status and of the side effects
//! (pods, Secrets, NetworkPolicies) that agent runs need.
//!
//! It reconciles Projects, Agents, AgentRuns and ApprovalGates. Each
//! kind's module splits pure "decide" code (tested without a cluster) from the thin async code
//! that applies the decision. Only the holder of the coordination Lease reconciles.

pub mod agent;
pub mod agent_run;
pub mod backoff;
pub mod cache;
pub mod claims;
pub mod clock;
pub mod config;
pub mod context;
pub mod error;
pub mod events;
pub mod gate;
pub mod leader;
pub mod metrics;
pub mod process;
pub mod project;
pub mod risk_policy;
pub mod server;
pub mod settings;

use std::sync::Arc;

pub use context::Context;
pub use settings::Settings;

/// Runs the Project, Agent, AgentRun, ApprovalGate and RiskPolicy controllers until they stop (they run until the
/// process ends or the returned future is dropped, e.g. when leadership is lost).
pub async fn run_controllers(ctx: Arc<Context>) {
    tokio::join!(
        claims::Claims::run(&ctx),
        cache::Caches::run(&ctx),
        agent_run::run(ctx.clone()),
        agent::run(ctx.clone()),
        gate::run(ctx.clone()),
        risk_policy::run(ctx.clone()),
        project::run(ctx.clone()),
    );
}
