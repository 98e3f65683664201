//! Model providers behind one trait: the attempt's provider does the job in the workspace.
//!
//! Two kinds of provider exist. Chat models (`openai`, `anthropic`) are driven through the
//! built-in, bounded tool loop ([`crate::session`]): the model sees the task and a small set
//! of workspace tools and calls `finish` when done. A `command` provider runs a command-line
//! coding agent in the workspace and is trusted to make the change itself.
//!
//! Every provider spends from one [`Budget`] (turns, tokens, cost, wall time) so the limits of
//! the Agent hold whatever the provider, and the usage is reported even when it fails.

use std::path::Path;
use std::time::{Duration, Instant};

use countersign_crds::agent::{AgentLimits, Provider as ProviderSpec};

pub mod anthropic;
pub mod chat;
pub mod command;
pub mod openai;

/// What the provider is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// Change the code in the workspace.
    Change,
    /// Read the code and write a plan; change nothing (control mode before approval).
    Plan,
    /// Read the code and write an analysis; change nothing (observation mode).
    Analyse,
    /// Read the code and propose a work breakdown for other agents; change nothing (an
    /// architect's run before its breakdown is approved).
    Breakdown,
}

/// One job for a provider.
#[derive(Clone, Debug)]
pub struct Job {
    /// What kind of job it is.
    pub kind: JobKind,
    /// The full task prompt: the task title and body (untrusted, already sanitised by the
    /// bot), the requester's instructions, an approved plan if any, and the rules.
    pub prompt: String,
    /// Guidance mode: the model may ask the people steering the run (`ask_human`).
    pub may_ask: bool,
    /// Observation mode: where the model's progress notes go (`report_progress`).
    pub milestones: Option<crate::milestones::Milestones>,
}

/// What a provider reports when it finishes a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// A short summary of what was done (the `finish` tool's summary, or the tail of a
    /// command's output).
    pub summary: String,
    /// The plan ([`JobKind::Plan`]) or the analysis ([`JobKind::Analyse`]), in Markdown.
    pub report: Option<String>,
    /// Guidance mode: the question asked instead of finishing (JSON).
    pub question: Option<String>,
}

/// Why a provider could not finish its job.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider kept answering 429 (after this provider's retries).
    #[error("the provider rate-limited the agent: {0}")]
    RateLimited(String),
    /// The provider was unreachable, timed out or answered 5xx (after retries).
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (401, 403, 404, 400 …): a configuration problem.
    #[error("the provider refused the request: {0}")]
    Refused(String),
    /// The provider answered something that is not a valid response.
    #[error("the provider answered an invalid response: {0}")]
    BadResponse(String),
    /// A limit of the Agent ran out before the job was done.
    #[error("the agent ran out of {0}")]
    OutOfBudget(Limit),
    /// A `command` provider failed (non-zero exit, could not start, timed out).
    #[error("the coding agent command failed: {0}")]
    Command(String),
    /// The provider gateway refused the attempt: its token ended with the attempt, or a
    /// budget (the attempt's tokens or cost, the Project's spend per day) is spent.
    #[error("the provider gateway refused the attempt: {0}")]
    Denied(String),
}

/// A limit of [`AgentLimits`] (or the attempt's wall time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `limits.maxTurns`.
    Turns,
    /// `limits.maxTokens`.
    Tokens,
    /// `limits.maxCost`.
    Cost,
    /// The attempt's timeout.
    Time,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Limit::Turns => "turns (limits.maxTurns)",
            Limit::Tokens => "tokens (limits.maxTokens)",
            Limit::Cost => "money (limits.maxCost)",
            Limit::Time => "time (limits.timeout)",
        })
    }
}

/// What an attempt has used so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spent {
    /// Model turns (request/response rounds).
    pub turns: u32,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Estimated cost in US cents (fractional; rounded up when reported).
    pub cost_cents: f64,
}

/// The limits of one attempt and what it has spent against them.
#[derive(Clone, Debug)]
pub struct Budget {
    /// The Agent's limits.
    pub limits: AgentLimits,
    /// When the attempt must be done (its timeout, minus a margin to push and report).
    pub deadline: Instant,
    /// Spent so far.
    pub spent: Spent,
    /// US cents per million input tokens of the attempt's provider.
    pub input_cents_per_million: f64,
    /// US cents per million output tokens of the attempt's provider.
    pub output_cents_per_million: f64,
}

impl Budget {
    /// A fresh budget for `provider` under `limits`, ending at `deadline`.
    pub fn new(limits: AgentLimits, provider: &ProviderSpec, deadline: Instant) -> Self {
        let cents = |p: &Option<countersign_crds::Usd>| p.map_or(0.0, |u| u.cents as f64);
        Self {
            limits,
            deadline,
            spent: Spent::default(),
            input_cents_per_million: cents(&provider.input_price_per_million),
            output_cents_per_million: cents(&provider.output_price_per_million),
        }
    }

    /// Time left before the deadline.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Records one model turn's tokens (and their cost).
    pub fn record_turn(&mut self, input_tokens: u64, output_tokens: u64) {
        self.spent.turns += 1;
        self.spent.input_tokens += input_tokens;
        self.spent.output_tokens += output_tokens;
        self.spent.cost_cents += input_tokens as f64 * self.input_cents_per_million / 1e6
            + output_tokens as f64 * self.output_cents_per_million / 1e6;
    }

    /// The first limit that is used up, if any: checked before every model turn.
    pub fn exhausted(&self) -> Option<Limit> {
        let spent = &self.spent;
        if spent.turns >= self.limits.max_turns {
            Some(Limit::Turns)
        } else if spent.input_tokens + spent.output_tokens >= self.limits.max_tokens {
            Some(Limit::Tokens)
        } else if spent.cost_cents >= self.limits.max_cost.cents as f64
            && self.limits.max_cost.cents > 0
        {
            Some(Limit::Cost)
        } else if self.remaining().is_zero() {
            Some(Limit::Time)
        } else {
            None
        }
    }

    /// The usage in the result contract's form (cost rounded up to whole cents).
    pub fn usage(&self) -> countersign_crds::agent_run::Usage {
        countersign_crds::agent_run::Usage {
            input_tokens: self.spent.input_tokens,
            output_tokens: self.spent.output_tokens,
            cost: countersign_crds::Usd {
                cents: self.spent.cost_cents.ceil() as u64,
            },
        }
    }
}

/// A provider doing one attempt's job. `start` does the job; `follow_up` continues it after
/// the agent found a problem (a failed verify command, a guardrail the change broke), with
/// the feedback as the next instruction. Both spend from `budget`, also when they fail.
pub trait Provider {
    /// Does `job` in the workspace.
    fn start(&mut self, job: &Job, budget: &mut Budget) -> Result<Work, ProviderError>;
    /// Continues the job with `feedback` (e.g. the failing test output).
    fn follow_up(&mut self, feedback: &str, budget: &mut Budget) -> Result<Work, ProviderError>;
}

/// The provider for `spec`, working in `workspace`, talking to `spec.baseUrl` with
/// `api_key` (when it has one) and `headers`.
pub fn provider_for(
    spec: &ProviderSpec,
    api_key: Option<secrecy::SecretString>,
    headers: &[(String, String)],
    workspace: &Path,
) -> Result<Box<dyn Provider>, ProviderError> {
    use countersign_crds::ProviderKind;
    match spec.kind {
        ProviderKind::Openai => Ok(Box::new(openai::chat_provider(
            spec, api_key, headers, workspace,
        )?)),
        ProviderKind::Anthropic => Ok(Box::new(anthropic::chat_provider(
            spec, api_key, headers, workspace,
        )?)),
        ProviderKind::Command => Ok(Box::new(command::CommandAgent::new(spec, workspace)?)),
    }
}

/// Where the `work` step reaches its model: the provider gateway, with the attempt's token.
#[derive(Clone)]
pub struct Gateway {
    /// The gateway's base URL, e.g. `http://countersign-gateway.countersign-system:8080`.
    pub url: String,
    /// The attempt's gateway token.
    pub token: secrecy::SecretString,
    /// `<namespace>/<run>/<attempt>`, sent as [`countersign_crds::attempt::ATTEMPT_HEADER`].
    pub attempt: String,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.url)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// The gateway's OpenAI-compatible base URL (`<url>/v1`).
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url.trim_end_matches('/'))
    }

    /// The gateway's Anthropic base URL (`<url>`; clients add `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        self.url.trim_end_matches('/').to_owned()
    }

    /// Where observation-mode progress notes go.
    pub fn milestones_url(&self) -> String {
        format!(
            "{}{}",
            self.url.trim_end_matches('/'),
            crate::milestones::PATH
        )
    }
}

/// The provider for `spec` through `gateway`: chat providers talk to the gateway's endpoint
/// of their protocol with the attempt's token as their key; a `command` provider gets the
/// gateway as `OPENAI_BASE_URL`/`ANTHROPIC_BASE_URL` and the token as
/// `OPENAI_API_KEY`/`ANTHROPIC_API_KEY`, and where observation-mode progress notes go as
/// `COUNTERSIGN_MILESTONES_URL`. No real key is ever in this process.
pub fn provider_via_gateway(
    spec: &ProviderSpec,
    gateway: &Gateway,
    workspace: &Path,
) -> Result<Box<dyn Provider>, ProviderError> {
    use countersign_crds::ProviderKind;
    use secrecy::ExposeSecret as _;
    let mut spec = spec.clone();
    spec.api_key_secret_ref = None;
    let headers = vec![(
        countersign_crds::attempt::ATTEMPT_HEADER.to_owned(),
        gateway.attempt.clone(),
    )];
    match spec.kind {
        ProviderKind::Openai => {
            spec.base_url = Some(gateway.openai_base_url());
            provider_for(&spec, Some(gateway.token.clone()), &headers, workspace)
        }
        ProviderKind::Anthropic => {
            spec.base_url = Some(gateway.anthropic_base_url());
            provider_for(&spec, Some(gateway.token.clone()), &headers, workspace)
        }
        ProviderKind::Command => {
            let token = gateway.token.expose_secret().to_owned();
            let env = vec![
                ("OPENAI_BASE_URL".to_owned(), gateway.openai_base_url()),
                ("OPENAI_API_KEY".to_owned(), token.clone()),
                (
                    "ANTHROPIC_BASE_URL".to_owned(),
                    gateway.anthropic_base_url(),
                ),
                ("ANTHROPIC_API_KEY".to_owned(), token),
                (
                    "COUNTERSIGN_MILESTONES_URL".to_owned(),
                    gateway.milestones_url(),
                ),
            ];
            Ok(Box::new(command::CommandAgent::with_gateway_env(
                &spec, workspace, env,
            )?))
        }
    }
}
