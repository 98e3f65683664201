//! Countersign's one home for GitHub: the App ([`GitHubApp`]: JWT, cached installation tokens,
//! repository-scoped tokens for agent runs and their revocation), the REST client (retries,
//! rate limits, conditional requests, pagination that keeps credentials on GitHub Enterprise
//! hosts), one module per GitHub resource Countersign touches, and the two domain rules that
//! need GitHub's answers: who may do what ([`authz`]) and what a gate's check run and details
//! page say ([`gate_report`]).
//!
//! Used by the bot, the controller and the test kit. Each resource module keeps GitHub's wire
//! JSON in private structs holding only the fields used and exposes domain types; the calls
//! are methods of [`InstallationClient`] (acting as one installation) or [`GitHubApp`] (acting
//! as the App).
//!
//! Where the types live: accounts ([`users`]) are shared with the webhook parser, which
//! re-exports them; webhook payload models stay in `countersign-webhooks`, the only reader.

pub mod app;
pub mod args;
pub mod authz;
pub mod change;
pub mod checks;
pub mod comments;
pub mod commits;
pub mod compare;
pub mod error;
pub mod gate_report;
pub mod git_read;
pub mod installation;
pub mod issues;
pub mod jwt;
pub mod labels;
pub mod metrics;
pub mod oauth;
pub mod parse;
pub mod permissions;
pub mod pulls;
pub mod reactions;
pub mod repos;
pub mod reviews;
pub mod statuses;
pub mod teams;
pub mod tokens;
pub mod transport;
pub mod users;

pub use app::{AppConfig, GitHubApp, TOKEN_REFRESH_MARGIN, USER_AGENT};
pub use change::{body_digest, change_id};
pub use checks::{
    CHECK_NAME, CHECK_SUMMARY_LIMIT, CheckRunInfo, CheckRunRequest, CheckStatus, TRUNCATION_MARKER,
};
pub use comments::CommentInfo;
pub use commits::PullCommit;
pub use compare::Comparison;
pub use error::GitHubError;
pub use installation::{InstallationClient, Listing};
pub use issues::{IssueEvent, IssueEventKind, IssueInfo};
pub use permissions::Permission;
pub use pulls::{
    MergeMethod, MergeOutcome, NewPullRequest, OpenedPullRequest, PullFile, PullInfo, PullState,
};
pub use reactions::Reaction;
pub use reviews::{ReviewInfo, ReviewState};
pub use statuses::CommitStatusInfo;
pub use transport::{ETAG_BUDGET_BYTES, FIRST_BACKOFF, SECONDARY_LIMIT_WAIT, rate_limit_wait};
pub use users::{Account, AccountKind, Actor, BotAccount};

#[cfg(test)]
mod fixtures;
