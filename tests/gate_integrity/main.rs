//! Gate integrity (issue 13, docs/security.md): every way around the countersignature that
//! was demonstrated against the real bot, controller and fake GitHub, performed again here
//! through the real entry points, and shown to fail; plus the honest paths next to them.
//!
//! One module per numbered item of the threat model.

mod harness;

mod completeness;
mod content;
mod duties;
mod holds;
mod merge_queue;
mod ownership;
mod policy;
mod policy_api;
mod receipt;
mod runs;
mod tampering;
