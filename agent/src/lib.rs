//! The program inside agent pods (`countersign agent`).
//!
//! It reads the attempt's task file and repository token from the mounted Secret, clones the
//! repository, lets the attempt's provider do the job, checks the change against the
//! guardrails and verify commands, commits as the GitHub App's bot account, pushes the
//! `countersign/<run>` branch and writes the result (the crds contract) to the termination
//! message. See `docs/agent.md`.

pub mod config;
pub mod diff;
pub mod guardrails;
pub mod process;
pub mod prompt;
pub mod provider;
pub mod run;
pub mod secret_scan;
pub mod session;
pub mod tools;
pub mod verify;
pub mod workspace;
