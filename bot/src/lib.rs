//! Countersign's GitHub App bot: the webhook receiver and its handlers (triggers, comment
//! commands, gate nudges), the gate pages, the simulate/validate API and RiskPolicy admission.
//! The GitHub client, authorisation and the gate report live in `countersign-github`; command
//! parsing in `countersign-policies`.

pub mod api;
pub mod config;
pub mod handlers;
pub mod listener;
pub mod login;
pub mod metrics;
pub mod objects;
pub mod pages;
pub mod projects;
pub mod reload;
pub mod render;
pub mod replay;
pub mod replies;
pub mod resync;
pub mod sanitize;
pub mod server;
pub mod tls;
pub mod worker;
