//! Placeholder: owned by the providers helper (A).
use std::path::Path;
/// Placeholder.
pub fn chat_provider(
    _spec: &countersign_crds::agent::Provider,
    _api_key: Option<secrecy::SecretString>,
    _workspace: &Path,
) -> Result<super::command::CommandAgent, super::ProviderError> {
    Err(super::ProviderError::Refused("not built yet".into()))
}
