//! Helpers shared by the root package's end-to-end tests.
// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

pub mod chart;
pub mod github_permissions;
pub mod kubectl;
