//! Countersign's GitHub App: authentication, the API client, webhook event handlers, comment
//! commands, approvals and check runs.

pub mod commands;
pub mod github;
pub mod sanitize;
pub mod tokens;
