//! Where a request goes: the Agent's providers that speak the request's protocol, in
//! priority order starting at the attempt's provider (the controller moves later attempts
//! down the list, so entries before it already failed this run), each with its endpoint, its
//! model, its key reference, its retries and its prices. Pure.

use countersign_crds::agent::{AgentSpec, Provider, ProviderApi};
use countersign_crds::{ProviderKind, SecretKeyRef};

/// The wire protocol of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OpenAI-compatible chat completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
}

impl Protocol {
    /// A bounded label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::OpenAi => "openai",
            Protocol::Anthropic => "anthropic",
        }
    }
}

/// The default OpenAI-compatible base URL.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The default Anthropic base URL.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` sent when the client sent none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// One provider a request may be forwarded to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The provider entry's name.
    pub provider: String,
    /// Its protocol.
    pub protocol: Protocol,
    /// The full endpoint URL, e.g. `https://openrouter.ai/api/v1/chat/completions`.
    pub url: String,
    /// The model to ask for (`None`: keep the client's, for command providers without one).
    pub model: Option<String>,
    /// The Secret key holding its API key (`None`: no key, e.g. a local vLLM).
    pub key: Option<SecretKeyRef>,
    /// Retries of 429/5xx/timeouts on this provider before failing over.
    pub retries: u32,
    /// US cents per million input tokens.
    pub input_cents_per_million: u64,
    /// US cents per million output tokens.
    pub output_cents_per_million: u64,
}

/// Why no provider can take a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoute {
    /// The attempt's provider is not (or no longer) in the Agent.
    UnknownProvider(String),
    /// No provider from the attempt's on speaks the protocol.
    NoProviderSpeaks(Protocol),
}

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRoute::UnknownProvider(name) => {
                write!(f, "the Agent has no provider {name:?} any more")
            }
            NoRoute::NoProviderSpeaks(p) => write!(
                f,
                "no provider of the Agent from the attempt's on speaks the {} API",
                p.label()
            ),
        }
    }
}

/// The protocol `provider` is reached with, when the gateway can forward to it.
fn protocol_of(provider: &Provider) -> Option<Protocol> {
    match provider.kind {
        ProviderKind::Openai => Some(Protocol::OpenAi),
        ProviderKind::Anthropic => Some(Protocol::Anthropic),
        // A command-line agent's upstream is described by its `baseUrl` and `command.api`.
        ProviderKind::Command => match provider.command.as_ref()?.api? {
            ProviderApi::Openai => Some(Protocol::OpenAi),
            ProviderApi::Anthropic => Some(Protocol::Anthropic),
        },
    }
}

/// The endpoint of `provider` for `protocol`.
fn endpoint(provider: &Provider, protocol: Protocol) -> String {
    match protocol {
        Protocol::OpenAi => format!(
            "{}/chat/completions",
            provider
                .base_url
                .as_deref()
                .unwrap_or(OPENAI_BASE_URL)
                .trim_end_matches('/')
        ),
        Protocol::Anthropic => format!(
            "{}/v1/messages",
            provider
                .base_url
                .as_deref()
                .unwrap_or(ANTHROPIC_BASE_URL)
                .trim_end_matches('/')
        ),
    }
}

/// The providers a `protocol` request of an attempt that started on `attempt_provider` may
/// go to, in the order to try them.
pub fn upstreams(
    agent: &AgentSpec,
    attempt_provider: &str,
    protocol: Protocol,
) -> Result<Vec<Upstream>, NoRoute> {
    let start = agent
        .providers
        .iter()
        .position(|p| p.name == attempt_provider)
        .ok_or_else(|| NoRoute::UnknownProvider(attempt_provider.to_owned()))?;
    let cents = |p: &Option<countersign_crds::Usd>| p.map_or(0, |u| u.cents);
    let found: Vec<Upstream> = agent.providers[start..]
        .iter()
        .filter(|p| protocol_of(p) == Some(protocol))
        // A command provider without its own upstream has nothing to forward to.
        .filter(|p| p.kind != ProviderKind::Command || p.base_url.is_some())
        .map(|p| Upstream {
            provider: p.name.clone(),
            protocol,
            url: endpoint(p, protocol),
            model: p.model.clone(),
            key: p.api_key_secret_ref.clone(),
            retries: p.retries(),
            input_cents_per_million: cents(&p.input_price_per_million),
            output_cents_per_million: cents(&p.output_price_per_million),
        })
        .collect();
    if found.is_empty() {
        Err(NoRoute::NoProviderSpeaks(protocol))
    } else {
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn agent() -> AgentSpec {
        serde_json::from_value(json!({"role": "backend", "providers": [
            {"name": "first", "kind": "openai", "model": "a", "baseUrl": "http://one/v1/"},
            {"name": "claude", "kind": "anthropic", "model": "c"},
            {"name": "second", "kind": "openai", "model": "b", "retries": 0,
             "apiKeySecretRef": {"name": "k", "key": "second"},
             "inputPricePerMillion": "3", "outputPricePerMillion": "15"},
            {"name": "cli", "kind": "command", "baseUrl": "https://api.anthropic.com",
             "command": {"command": ["claude", "-p"], "api": "anthropic"}},
            {"name": "bare-cli", "kind": "command", "command": {"command": ["aider"], "api": "openai"}}
        ]}))
        .expect("agent")
    }

    #[test]
    fn requests_fail_over_in_priority_order_within_their_protocol() {
        let plan = upstreams(&agent(), "first", Protocol::OpenAi).expect("routes");
        let names: Vec<&str> = plan.iter().map(|u| u.provider.as_str()).collect();
        assert_eq!(
            names,
            ["first", "second"],
            "the CLI without a base URL is not a route"
        );
        assert_eq!(plan[0].url, "http://one/v1/chat/completions");
        assert_eq!(plan[0].retries, 2);
        assert_eq!(
            (
                plan[1].retries,
                plan[1].input_cents_per_million,
                plan[1].output_cents_per_million
            ),
            (0, 300, 1500)
        );
        let later = upstreams(&agent(), "second", Protocol::OpenAi).expect("routes");
        assert_eq!(
            later.len(),
            1,
            "providers before the attempt's are not tried again"
        );
        let anthropic = upstreams(&agent(), "cli", Protocol::Anthropic).expect("routes");
        assert_eq!(anthropic[0].url, "https://api.anthropic.com/v1/messages");
        assert_eq!(anthropic[0].model, None, "the CLI names its own model");
        let from_first = upstreams(&agent(), "first", Protocol::Anthropic).expect("routes");
        assert_eq!(from_first.len(), 2);
    }

    #[test]
    fn unknown_providers_and_protocols_are_no_route() {
        assert_eq!(
            upstreams(&agent(), "gone", Protocol::OpenAi),
            Err(NoRoute::UnknownProvider("gone".into()))
        );
        assert_eq!(
            upstreams(&agent(), "bare-cli", Protocol::OpenAi),
            Err(NoRoute::NoProviderSpeaks(Protocol::OpenAi))
        );
    }
}
