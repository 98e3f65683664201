//! The program inside agent pods (`countersign agent clone|work|push`).
//!
//! An attempt's pod runs three steps in order, each its own container from the same image
//! (see [`steps`]): `clone` clones the repository with a read-only token; `work` lets the
//! attempt's provider do the job through the provider gateway, checks the change against the
//! guardrails and verify commands and commits it locally, holding no GitHub token and no
//! provider key; `push` re-checks that commit in a repository of its own, pushes the
//! `countersign/<run>` branch and writes the result (the crds contract) to the termination
//! message. See `docs/agent.md`.

pub mod config;
pub mod diff;
pub mod guardrails;
pub mod milestones;
pub mod process;
pub mod prompt;
pub mod provider;
pub mod publish;
pub mod report;
pub mod secret_scan;
pub mod session;
pub mod steps;
pub mod tools;
pub mod verify;
pub mod workspace;
