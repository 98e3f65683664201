//! Placeholder: owned by the workspace helper (B).
use std::path::Path;
/// Placeholder.
pub struct CommandAgent;
impl CommandAgent {
    /// Placeholder.
    pub fn new(
        _spec: &countersign_crds::agent::Provider,
        _workspace: &Path,
    ) -> Result<Self, super::ProviderError> {
        Err(super::ProviderError::Refused("not built yet".into()))
    }
}
impl super::Provider for CommandAgent {
    fn start(
        &mut self,
        _job: &super::Job,
        _budget: &mut super::Budget,
    ) -> Result<super::Work, super::ProviderError> {
        Err(super::ProviderError::Refused("not built yet".into()))
    }
    fn follow_up(
        &mut self,
        _feedback: &str,
        _budget: &mut super::Budget,
    ) -> Result<super::Work, super::ProviderError> {
        Err(super::ProviderError::Refused("not built yet".into()))
    }
}
