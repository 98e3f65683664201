//! Fake GitHub: the test GitHub App's key pair and signed webhook deliveries.
//!
//! This module owns everything a test needs to impersonate GitHub towards Countersign code:
//! the test App key pair ([`TEST_APP_PRIVATE_KEY_PEM`], [`TEST_APP_PUBLIC_KEY_PEM`]), the
//! signed-webhook builder ([`Delivery`]), the stateful REST fake ([`FakeGitHub`]) and its git
//! hosting: bare repositories served over real smart-HTTP by `git http-backend` ([`git`]).

pub mod compare;
mod credentials;
pub mod delivery;
pub mod git;
pub mod history;
pub mod issues;
pub mod oauth;
pub mod pulls;
mod pulls_api;
mod rewrite;
pub mod server;
mod smart_http;

pub use delivery::{Delivery, DeliveryError, HOOK_ID, USER_AGENT, deliver_to, wait_until_ready};
pub use git::Push;
pub use history::CommitAs;
pub use issues::IssueEvent;
pub use pulls::{ChangedFile, CheckRun, GitIdentity, PullRequest, Review};
pub use server::{
    Call, CallAuth, FakeGitHub, Fault, TEST_APP_BOT_USER_ID, TEST_APP_ID, TEST_APP_SLUG, User,
    World,
};

/// PKCS#1 PEM private key of the test GitHub App (never used outside tests).
pub const TEST_APP_PRIVATE_KEY_PEM: &str = include_str!("../../data/test-app-private-key.pem");

/// PEM public key matching [`TEST_APP_PRIVATE_KEY_PEM`], used to verify App JWTs.
pub const TEST_APP_PUBLIC_KEY_PEM: &str = include_str!("../../data/test-app-public-key.pem");
