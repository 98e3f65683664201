//! Progress notes of an observation-mode attempt, posted to the provider gateway with the
//! attempt's gateway token as the model calls its `report_progress` tool (see
//! [`countersign_crds::progress`]); the controller shows them in the run's progress comment
//! while the run goes on. A note the gateway refuses (too long, too many) is an error the
//! model reads; the attempt carries on either way.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

use crate::provider::Gateway;

/// The gateway's milestones path.
pub const PATH: &str = "/countersign/v1/milestones";
/// Longest wait for the gateway to record a note.
const TIMEOUT: Duration = Duration::from_secs(15);

/// Where and how this attempt posts its notes.
#[derive(Clone)]
pub struct Milestones {
    url: String,
    token: SecretString,
    attempt: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Milestones {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Milestones")
            .field("url", &self.url)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Milestones {
    /// Notes posted to `gateway`.
    pub fn new(gateway: &Gateway) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .user_agent(concat!("countersign-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Self {
            url: gateway.milestones_url(),
            token: gateway.token.clone(),
            attempt: gateway.attempt.clone(),
            agent,
        }
    }

    /// Posts `text`; the error is the gateway's reason, for the model.
    pub fn post(&self, text: &str) -> Result<(), String> {
        let response = self
            .agent
            .post(&self.url)
            .header(
                "authorization",
                format!("Bearer {}", self.token.expose_secret()),
            )
            .header(countersign_crds::attempt::ATTEMPT_HEADER, &self.attempt)
            .send_json(serde_json::json!({ "text": text }));
        let mut response = match response {
            Ok(response) => response,
            Err(e) => return Err(format!("the progress note could not be sent: {e}")),
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let body = response.body_mut().read_to_string().unwrap_or_default();
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("the gateway answered {status}"));
        Err(crate::provider::chat::redact(
            &reason,
            Some(self.token.expose_secret()),
        ))
    }
}
