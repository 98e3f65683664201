//! GitHub webhook deliveries: signature verification against several live secrets and
//! duplicate-delivery detection. Everything here runs before a byte of the body is parsed.

pub mod deliveries;
pub mod signature;
