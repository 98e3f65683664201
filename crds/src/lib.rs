//! The `countersign.dev/v1alpha1` API: Project, Agent, AgentRun, ApprovalGate and RiskPolicy.
//!
//! These Rust types are the single source of the CRDs: `countersign crds` renders them (see
//! [`generate`]) into the committed `crds/*.yaml`, and a test fails when the two drift. Every
//! `///` doc on a field becomes the text `kubectl explain` shows, so it is written for the
//! people applying these objects. Shared kstatus condition helpers live in [`conditions`].
//!
//! This crate depends only on kube's derive, k8s-openapi, serde and schemars; everything
//! else in Countersign depends on it.

pub mod agent;
pub mod agent_run;
pub mod approval_gate;
pub mod attempt;
pub mod breakdown;
pub mod common;
pub mod conditions;
pub mod generate;
pub mod guidance;
pub mod keys;
pub mod names;
pub mod progress;
pub mod project;
pub mod result;
pub mod risk_policy;
pub mod task_file;
pub mod usage;

pub use agent::{Agent, AgentPhase, AgentRole, AgentSpec, AgentStatus, Provider, ProviderKind};
pub use agent_run::{AgentRun, AgentRunSpec, AgentRunStatus, RunPhase, Task, TaskSource};
pub use approval_gate::{ApprovalGate, ApprovalGateSpec, ApprovalGateStatus, GatePhase};
pub use common::{
    GitHubTeam, GitHubUser, GoDuration, LocalRef, RoleName, RunMode, SecretKeyRef, Usd,
};
pub use generate::{all, to_yaml};
pub use project::{MergeMethod, Project, ProjectSpec, ProjectStatus, PullRequestSettings};
pub use risk_policy::{RiskFactor, RiskLevel, RiskPolicy, RiskPolicySpec, RiskPolicyStatus};

/// The API group of every Countersign kind.
pub const GROUP: &str = "countersign.dev";
/// The API version served today.
pub const VERSION: &str = "v1alpha1";
/// The `kubectl get countersign` category every kind belongs to.
pub const CATEGORY: &str = "countersign";
