//! Parsing a verified body into an [`Event`](super::event::Event).
//!
//! CONTRACT STUB (skeleton): the ingress helper replaces the body of this module.

use super::event::Event;

/// What a verified delivery turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// An event Countersign acts on.
    Event(Box<Event>),
    /// A well-formed event (or action) Countersign does not act on: answered 202, counted.
    Unsupported {
        /// The `X-GitHub-Event` name.
        event: String,
        /// The payload's `action`, when it has one.
        action: Option<String>,
    },
}

/// A body that is not the JSON GitHub sends for its event.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse the {event} payload: {source}")]
pub struct ParseError {
    /// The `X-GitHub-Event` name.
    pub event: String,
    /// Where serde stopped.
    #[source]
    pub source: serde_json::Error,
}

/// Parses `body` of an `X-GitHub-Event: event` delivery.
pub fn parse(event: &str, body: &[u8]) -> Result<Parsed, ParseError> {
    let _ = (event, body);
    todo!("implemented by the ingress work")
}
