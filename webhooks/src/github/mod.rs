//! GitHub webhook deliveries: signature verification against several live secrets,
//! duplicate-delivery detection, parsing into typed events and the `POST /webhook` endpoint
//! that puts them on the bot's queue. Verification runs before a byte of the body is parsed.

pub mod deliveries;
pub mod event;
pub mod ingress;
pub mod parse;
pub mod signature;
