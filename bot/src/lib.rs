//! Countersign's GitHub App: authentication, the API client, webhook event handlers, comment
//! commands, approvals and check runs.
//!
//! Today it holds the contract the controller uses to obtain GitHub credentials for agent
//! runs ([`tokens`]); the App client that implements it arrives with the bot itself.

pub mod tokens;
