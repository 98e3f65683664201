//! Budgets, decided before a request is forwarded: the attempt's tokens and cost against the
//! Agent's `limits.maxTokens` and `limits.maxCost` (per attempt, as the CRD defines them), and
//! the Project's spend today against `limits.maxSpendPerDay`. Pure; the spend comes from the
//! usage ledger (what every gateway replica recorded, plus what this one has not written yet).

use countersign_crds::Usd;
use countersign_crds::usage::{MICRO_CENTS_PER_CENT, Spend};

/// The limits that apply to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `Agent.spec.limits.maxTokens`: input plus output tokens of one attempt.
    pub attempt_tokens: u64,
    /// `Agent.spec.limits.maxCost` in cents (0: no cost limit).
    pub attempt_cost_cents: u64,
    /// `Project.spec.limits.maxSpendPerDay` in cents, if set.
    pub project_day_cents: Option<u64>,
}

/// Why a request may not go out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// The attempt used its tokens.
    AttemptTokens {
        /// Tokens used.
        used: u64,
        /// The limit.
        max: u64,
    },
    /// The attempt spent its money.
    AttemptCost {
        /// Spent.
        spent: Usd,
        /// The limit.
        max: Usd,
    },
    /// The Project spent its money for today (UTC).
    ProjectDay {
        /// Spent today.
        spent: Usd,
        /// The limit.
        max: Usd,
    },
}

impl Exhausted {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Exhausted::AttemptTokens { .. } => "attempt_tokens",
            Exhausted::AttemptCost { .. } => "attempt_cost",
            Exhausted::ProjectDay { .. } => "project_day",
        }
    }
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exhausted::AttemptTokens { used, max } => write!(
                f,
                "the attempt used {used} tokens of its {max} (Agent limits.maxTokens)"
            ),
            Exhausted::AttemptCost { spent, max } => write!(
                f,
                "the attempt spent ${spent} of its ${max} (Agent limits.maxCost)"
            ),
            Exhausted::ProjectDay { spent, max } => write!(
                f,
                "the Project spent ${spent} of its ${max} for today, UTC (Project limits.maxSpendPerDay)"
            ),
        }
    }
}

/// Whether another request may go out, given what the attempt and the Project spent today.
pub fn check(attempt: &Spend, project_today: &Spend, limits: &Limits) -> Result<(), Exhausted> {
    if attempt.tokens() >= limits.attempt_tokens {
        return Err(Exhausted::AttemptTokens {
            used: attempt.tokens(),
            max: limits.attempt_tokens,
        });
    }
    let micro = |cents: u64| cents.saturating_mul(MICRO_CENTS_PER_CENT);
    if limits.attempt_cost_cents > 0 && attempt.cost_micro_cents >= micro(limits.attempt_cost_cents)
    {
        return Err(Exhausted::AttemptCost {
            spent: attempt.cost(),
            max: Usd {
                cents: limits.attempt_cost_cents,
            },
        });
    }
    if let Some(day) = limits.project_day_cents
        && project_today.cost_micro_cents >= micro(day)
    {
        return Err(Exhausted::ProjectDay {
            spent: project_today.cost(),
            max: Usd { cents: day },
        });
    }
    Ok(())
}

/// What `input` and `output` tokens cost at the given prices (US cents per million tokens),
/// in micro-cents: a token at $3 per million is 300 micro-cents.
pub fn cost_micro_cents(input: u64, output: u64, input_price: u64, output_price: u64) -> u64 {
    input
        .saturating_mul(input_price)
        .saturating_add(output.saturating_mul(output_price))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spend(tokens: u64, cost_micro_cents: u64) -> Spend {
        Spend {
            input_tokens: tokens,
            output_tokens: 0,
            cost_micro_cents,
            requests: 1,
        }
    }

    const LIMITS: Limits = Limits {
        attempt_tokens: 10_000,
        attempt_cost_cents: 100,
        project_day_cents: Some(500),
    };

    #[test]
    fn each_budget_stops_requests_once_spent() {
        assert_eq!(check(&spend(9_999, 0), &spend(0, 0), &LIMITS), Ok(()));
        assert!(matches!(
            check(&spend(10_000, 0), &spend(0, 0), &LIMITS),
            Err(Exhausted::AttemptTokens { used: 10_000, .. })
        ));
        let cost = check(&spend(1, 100 * MICRO_CENTS_PER_CENT), &spend(0, 0), &LIMITS)
            .expect_err("cost spent");
        assert_eq!(
            cost.to_string(),
            "the attempt spent $1.00 of its $1.00 (Agent limits.maxCost)"
        );
        let day = check(&spend(1, 0), &spend(0, 500 * MICRO_CENTS_PER_CENT), &LIMITS)
            .expect_err("day spent");
        assert_eq!(day.label(), "project_day");
        assert!(day.to_string().contains("maxSpendPerDay"), "{day}");
        let unlimited = Limits {
            attempt_cost_cents: 0,
            project_day_cents: None,
            ..LIMITS
        };
        assert_eq!(
            check(&spend(1, u64::MAX), &spend(0, u64::MAX), &unlimited),
            Ok(())
        );
    }

    #[test]
    fn prices_are_per_million_tokens() {
        // 4000 tokens in at $3/M and 400 out at $15/M: 1.2 + 0.6 cents.
        let micro = cost_micro_cents(4000, 400, 300, 1500);
        assert_eq!(micro, 1_800_000);
        assert_eq!(spend(0, micro).cost(), Usd { cents: 2 });
    }
}
