//! Placeholder: owned by the workspace helper (B).
