//! Sanitising untrusted text before it becomes an agent's task: the one implementation is
//! [`countersign_policies::visible`] (also used by the controller for control-mode plans), so
//! what reaches an agent is what a reviewer sees on GitHub. These are its names as the bot
//! has always used them.

pub use countersign_policies::visible::{
    MAX_TITLE_BYTES, RemovedCounts, Sanitized, TRUNCATION_MARKER, UNTITLED,
    visible_markdown as sanitize_body, visible_title as sanitize_title,
};
