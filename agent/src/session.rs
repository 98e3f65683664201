//! Placeholder: owned by the providers helper (A).
