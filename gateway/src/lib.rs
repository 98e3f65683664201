//! The provider gateway (`countersign gateway`): the only place that holds AI providers' API
//! keys. Agent pods' `work` steps call it with a per-attempt token instead of a key; it maps
//! the token to its attempt (run, Agent, Project) through the attempt's pod, enforces the
//! budgets with authority (the attempt's tokens and cost, the Project's spend per day, the
//! Agent's concurrency), forwards to the Agent's providers in priority order with failover
//! (429, 5xx, timeouts; `Retry-After` honoured), passes streams through, counts usage from
//! the providers' own usage fields into a ledger per Project (which the controller folds into
//! the runs' status), and exports metrics. Speaks the OpenAI-compatible chat completions API
//! and the Anthropic Messages API. It also records observation-mode agents' progress notes
//! ([`milestones`]). See `docs/gateway.md`.

pub mod budget;
pub mod catalog;
pub mod config;
pub mod config_map;
pub mod error;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod milestones;
pub mod plan;
pub mod proxy;
pub mod registry;
pub mod server;
pub mod upstream;
pub mod usage;
