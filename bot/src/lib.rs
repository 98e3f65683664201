//! Countersign's GitHub App: authentication, the API client, webhook event handlers, comment
//! commands, approvals and check runs.

pub mod api;
pub mod authz;
pub mod commands;
pub mod config;
pub mod gate_report;
pub mod github;
pub mod handlers;
pub mod metrics;
pub mod objects;
pub mod pages;
pub mod projects;
pub mod render;
pub mod replay;
pub mod replies;
pub mod sanitize;
pub mod server;
pub mod tls;
pub mod tokens;
pub mod worker;
