//! Fake GitHub: the test GitHub App's key pair and signed webhook deliveries.
//!
//! This module owns everything a test needs to impersonate GitHub towards Countersign code.
//! Today that is the test App key pair ([`TEST_APP_PRIVATE_KEY_PEM`],
//! [`TEST_APP_PUBLIC_KEY_PEM`]) and the signed-webhook builder ([`Delivery`]); the stateful
//! REST fake builds on these.

pub mod delivery;

pub use delivery::{Delivery, DeliveryError, HOOK_ID, USER_AGENT};

/// PKCS#1 PEM private key of the test GitHub App (never used outside tests).
pub const TEST_APP_PRIVATE_KEY_PEM: &str = include_str!("../../data/test-app-private-key.pem");

/// PEM public key matching [`TEST_APP_PRIVATE_KEY_PEM`], used to verify App JWTs.
pub const TEST_APP_PUBLIC_KEY_PEM: &str = include_str!("../../data/test-app-public-key.pem");
