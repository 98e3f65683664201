//! The usage ledger: what agents spent through the provider gateway, per Project, kept in a
//! ConfigMap `countersign-usage-<project>` next to the Project (owned by it, so it goes with
//! it). The gateway is its only writer — it counts every request from the provider's own
//! usage fields, and it enforces `Project.spec.limits.maxSpendPerDay` and the Agents' limits
//! from it — so spend survives deleted runs and restarts of the gateway and the controller.
//! The controller only reads it: it folds each attempt's usage into the run's status and the
//! day's spend into the Project's status, and holds new runs while the day's budget is spent.
//!
//! Days are UTC calendar days (`2025-06-01`). Money is kept in micro-cents (a millionth of a
//! US cent), so that per-token prices add up without rounding; it is shown in whole cents,
//! rounded up.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Usd;
use crate::agent_run::Usage;

/// Label on ledger ConfigMaps (value `true`); the gateway and controller watch these.
pub const LEDGER_LABEL: &str = "countersign.dev/usage-ledger";
/// Key of the ledger document in the ConfigMap.
pub const LEDGER_KEY: &str = "ledger.json";
/// Format version of the ledger.
pub const LEDGER_VERSION: u32 = 1;
/// Days of spend kept (today and the days before), for people looking at the ConfigMap.
pub const KEEP_DAYS: usize = 8;
/// Attempts are kept this many days after their last request; the controller has folded
/// their usage into the run's status long before.
pub const KEEP_ATTEMPT_DAYS: usize = 2;
/// Micro-cents in a cent.
pub const MICRO_CENTS_PER_CENT: u64 = 1_000_000;

/// The name of a Project's ledger ConfigMap.
pub fn ledger_name(project: &str) -> String {
    crate::names::with_suffix(&format!("countersign-usage-{project}"), "")
}

/// Tokens, money and requests, in the ledger's units.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Spend {
    /// Prompt tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Completion tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Cost in micro-cents.
    #[serde(default)]
    pub cost_micro_cents: u64,
    /// Requests answered by a provider.
    #[serde(default)]
    pub requests: u64,
}

impl Spend {
    /// Adds `other`.
    pub fn add(&mut self, other: &Spend) {
        self.input_tokens = self.input_tokens.saturating_add(other.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(other.output_tokens);
        self.cost_micro_cents = self.cost_micro_cents.saturating_add(other.cost_micro_cents);
        self.requests = self.requests.saturating_add(other.requests);
    }

    /// Input plus output tokens.
    pub fn tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// The cost in whole cents, rounded up.
    pub fn cost(&self) -> Usd {
        Usd {
            cents: self.cost_micro_cents.div_ceil(MICRO_CENTS_PER_CENT),
        }
    }

    /// In the run status' form.
    pub fn usage(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost: self.cost(),
        }
    }
}

/// One attempt's spend.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AttemptSpend {
    /// The AgentRun's uid (a run deleted and re-created under its name is another run).
    #[serde(default)]
    pub run_uid: String,
    /// The Agent the attempt ran.
    #[serde(default)]
    pub agent: String,
    /// The UTC day of its last request.
    #[serde(default)]
    pub day: String,
    /// What it spent.
    #[serde(flatten)]
    pub spend: Spend,
}

/// A Project's ledger.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct UsageLedger {
    /// See [`LEDGER_VERSION`].
    #[serde(default)]
    pub version: u32,
    /// Spend per UTC day (`YYYY-MM-DD`), the last [`KEEP_DAYS`] days.
    #[serde(default)]
    pub days: BTreeMap<String, Spend>,
    /// Spend per attempt, by `<namespace>/<run>/<n>` (see
    /// [`crate::attempt::attempt_key`]).
    #[serde(default)]
    pub attempts: BTreeMap<String, AttemptSpend>,
}

/// Why a ConfigMap's ledger could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerError {
    /// Not JSON of the ledger's shape.
    Malformed(String),
    /// Written by a newer version.
    UnsupportedVersion(u32),
}

impl std::fmt::Display for LedgerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(e) => write!(f, "the usage ledger is not valid: {e}"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "the usage ledger has version {v}; this build reads version {LEDGER_VERSION}"
            ),
        }
    }
}

impl std::error::Error for LedgerError {}

impl UsageLedger {
    /// Parses the ledger document (an empty document is an empty ledger).
    pub fn parse(text: &str) -> Result<Self, LedgerError> {
        if text.trim().is_empty() {
            return Ok(Self::new());
        }
        let ledger: UsageLedger =
            serde_json::from_str(text).map_err(|e| LedgerError::Malformed(e.to_string()))?;
        if ledger.version > LEDGER_VERSION {
            return Err(LedgerError::UnsupportedVersion(ledger.version));
        }
        Ok(ledger)
    }

    /// An empty ledger of the current version.
    pub fn new() -> Self {
        Self {
            version: LEDGER_VERSION,
            ..Self::default()
        }
    }

    /// The document to store.
    pub fn render(&self) -> String {
        serde_json::to_string(self).expect("a ledger always serialises")
    }

    /// Spend on `day`.
    pub fn spend_on(&self, day: &str) -> Spend {
        self.days.get(day).copied().unwrap_or_default()
    }

    /// The spend of attempt `key`.
    pub fn attempt(&self, key: &str) -> Option<&AttemptSpend> {
        self.attempts.get(key)
    }

    /// Records `spend` for attempt `key` (of run `run_uid`, Agent `agent`) on `day`, and
    /// drops days and attempts older than what is kept.
    pub fn record(&mut self, key: &str, run_uid: &str, agent: &str, day: &str, spend: &Spend) {
        self.version = LEDGER_VERSION;
        self.days.entry(day.to_owned()).or_default().add(spend);
        let entry = self.attempts.entry(key.to_owned()).or_default();
        if entry.run_uid != run_uid {
            // Another run of the same name: start over.
            *entry = AttemptSpend::default();
        }
        entry.run_uid = run_uid.to_owned();
        entry.agent = agent.to_owned();
        entry.day = day.to_owned();
        entry.spend.add(spend);
        self.prune(day);
    }

    /// Drops days and attempts older than what is kept, relative to `today`. Days sort as
    /// text, so the newest are the last.
    pub fn prune(&mut self, today: &str) {
        while self.days.len() > KEEP_DAYS {
            let Some(oldest) = self.days.keys().next().cloned() else {
                break;
            };
            self.days.remove(&oldest);
        }
        let recent: Vec<&String> = self
            .days
            .keys()
            .filter(|d| d.as_str() <= today)
            .rev()
            .take(KEEP_ATTEMPT_DAYS)
            .collect();
        let oldest_kept = recent
            .last()
            .map(|d| d.as_str())
            .unwrap_or(today)
            .to_owned();
        self.attempts.retain(|_, a| a.day >= oldest_kept);
    }
}

/// The UTC day of `time` as `YYYY-MM-DD`.
pub fn day_of(time: &k8s_openapi::jiff::Timestamp) -> String {
    time.strftime("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(cost_micro_cents: u64) -> Spend {
        Spend {
            input_tokens: 1000,
            output_tokens: 100,
            cost_micro_cents,
            requests: 1,
        }
    }

    #[test]
    fn records_add_up_per_day_and_attempt() {
        let mut ledger = UsageLedger::new();
        ledger.record(
            "ns/a/1",
            "uid-a",
            "backend",
            "2025-06-01",
            &spend(1_500_000),
        );
        ledger.record("ns/a/1", "uid-a", "backend", "2025-06-01", &spend(600_000));
        ledger.record("ns/b/1", "uid-b", "backend", "2025-06-01", &spend(1));
        let day = ledger.spend_on("2025-06-01");
        assert_eq!(day.requests, 3);
        assert_eq!(day.cost(), Usd { cents: 3 });
        let a = ledger.attempt("ns/a/1").expect("attempt");
        assert_eq!(a.spend.tokens(), 2200);
        assert_eq!(a.spend.usage().cost, Usd { cents: 3 });
        let parsed = UsageLedger::parse(&ledger.render()).expect("round trip");
        assert_eq!(parsed, ledger);
    }

    #[test]
    fn a_new_run_under_an_old_name_starts_from_zero() {
        let mut ledger = UsageLedger::new();
        ledger.record("ns/a/1", "uid-1", "backend", "2025-06-01", &spend(5));
        ledger.record("ns/a/1", "uid-2", "backend", "2025-06-01", &spend(7));
        assert_eq!(
            ledger.attempt("ns/a/1").map(|a| a.spend.cost_micro_cents),
            Some(7)
        );
        assert_eq!(ledger.spend_on("2025-06-01").cost_micro_cents, 12);
    }

    #[test]
    fn old_days_and_attempts_are_dropped() {
        let mut ledger = UsageLedger::new();
        for d in 1..=12 {
            let day = format!("2025-06-{d:02}");
            ledger.record(&format!("ns/r{d}/1"), "u", "a", &day, &spend(1));
        }
        assert_eq!(ledger.days.len(), KEEP_DAYS);
        assert!(ledger.days.contains_key("2025-06-12") && !ledger.days.contains_key("2025-06-04"));
        let kept: Vec<&String> = ledger.attempts.keys().collect();
        assert_eq!(kept, ["ns/r11/1", "ns/r12/1"]);
    }

    #[test]
    fn bad_documents_are_errors_not_panics() {
        assert!(matches!(
            UsageLedger::parse("{not json"),
            Err(LedgerError::Malformed(_))
        ));
        assert!(matches!(
            UsageLedger::parse(r#"{"version": 9}"#),
            Err(LedgerError::UnsupportedVersion(9))
        ));
        assert_eq!(UsageLedger::parse("").expect("empty"), UsageLedger::new());
        let day = day_of(&"2025-06-01T23:59:59Z".parse().expect("time"));
        assert_eq!(day, "2025-06-01");
    }
}
