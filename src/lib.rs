//! The `countersign` command: one binary for every Countersign process.
//!
//! `main.rs` only parses arguments, initialises logging and maps errors to the exit code;
//! each subcommand's work lives in a module here (or in the crate that owns it) so tests can
//! call it directly.

pub mod agent_cmd;
pub mod crds_cmd;
pub mod policy_cmd;
