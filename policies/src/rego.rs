//! The optional Rego module of a RiskPolicy, evaluated with regorus.
//!
//! The module reads the change (its JSON form, see [`Change`](crate::Change)) as `input` and
//! may define `factors` (an object of factor name → score 0..10) and `reasons` (a list of
//! strings). It can only raise factors: the engine keeps the native score when Rego says less.
//! Compile errors name the line; runtime failures are turned into a fail-closed assessment by
//! the caller, never into an `Err`.

use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use countersign_crds::risk_policy::{RegoModule, RiskFactor};
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};

use crate::change::Change;
use crate::error::{FieldPath, PolicyError, SpecProblem};

/// The name regorus gives the module in its messages.
const SOURCE_NAME: &str = "policy.rego";

/// Wall-clock budget for one evaluation of a Rego module, so a runaway policy cannot stall
/// the controller; going over it fails closed.
pub const REGO_TIME_LIMIT: Duration = Duration::from_secs(2);

/// How many units of interpreter work run between two looks at the clock.
const REGO_TIME_CHECK_INTERVAL: NonZeroU32 = NonZeroU32::new(1000).expect("1000 is not zero");

/// A parsed and prepared Rego module; evaluation clones the prepared engine.
#[derive(Clone)]
pub(crate) struct RegoPolicy {
    engine: Engine,
    factors_query: String,
    reasons_query: String,
}

impl fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("factors_query", &self.factors_query)
            .finish_non_exhaustive()
    }
}

/// What the module said about one change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RegoOutcome {
    pub factors: Vec<(RiskFactor, u8)>,
    pub reasons: Vec<String>,
}

fn module_field() -> FieldPath {
    FieldPath::from("spec.rego.module")
}

fn valid_package(p: &str) -> bool {
    !p.is_empty()
        && p.split('.').all(|seg| {
            let mut chars = seg.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Splits a regorus error (`--> policy.rego:3:9`, an excerpt, then `error: …`) into line,
/// column and the message alone.
pub(crate) fn rego_error(err: &impl fmt::Display) -> PolicyError {
    let text = err.to_string();
    let location = text
        .split("--> ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .and_then(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let col = parts.next()?.trim().parse::<u32>().ok()?;
            let line = parts.next()?.trim().parse::<u32>().ok()?;
            Some((line, col))
        });
    let message = match location {
        Some(_) => text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .trim()
            .trim_start_matches("error: ")
            .to_owned(),
        None => text.trim().to_owned(),
    };
    PolicyError::Rego {
        field: module_field(),
        line: location.map(|(l, _)| l),
        column: location.map(|(_, c)| c),
        message,
    }
}

impl RegoPolicy {
    /// Parses the module, checks its package and evaluates it once against an empty change
    /// so that errors regorus only finds when preparing (unsafe variables, unknown
    /// functions) are compile errors too.
    pub(crate) fn compile(module: &RegoModule) -> Result<Self, PolicyError> {
        if !valid_package(&module.package) {
            return Err(PolicyError::spec(
                "spec.rego.package",
                SpecProblem::BadRegoPackage(module.package.clone()),
            ));
        }
        let mut engine = Engine::new();
        engine.set_execution_timer_config(ExecutionTimerConfig {
            limit: REGO_TIME_LIMIT,
            check_interval: REGO_TIME_CHECK_INTERVAL,
        });
        let declared = engine
            .add_policy(SOURCE_NAME.to_owned(), module.module.clone())
            .map_err(|e| rego_error(&e))?;
        let expected = format!("data.{}", module.package);
        if declared != expected {
            return Err(PolicyError::spec(
                "spec.rego.package",
                SpecProblem::RegoPackageMismatch {
                    expected: module.package.clone(),
                    declared: declared.trim_start_matches("data.").to_owned(),
                },
            ));
        }
        let mut policy = Self {
            engine,
            factors_query: format!("{expected}.factors"),
            reasons_query: format!("{expected}.reasons"),
        };
        let probe = serde_json::to_string(&Change::default()).unwrap_or_default();
        let mut engine = policy.engine.clone();
        engine.set_input_json(&probe).map_err(|e| rego_error(&e))?;
        for query in [&policy.factors_query, &policy.reasons_query] {
            engine
                .eval_query(query.clone(), false)
                .map_err(|e| rego_error(&e))?;
        }
        // Keep the prepared engine so each evaluation skips preparation.
        engine.set_input(Value::new_object());
        policy.engine = engine;
        Ok(policy)
    }

    /// Evaluates the module against one change. `Err` carries a readable message; the
    /// caller fails closed with it.
    pub(crate) fn evaluate(&self, input_json: &str) -> Result<RegoOutcome, String> {
        let mut engine = self.engine.clone();
        engine
            .set_input_json(input_json)
            .map_err(|e| format!("cannot pass the change to Rego: {e}"))?;
        let factors = query_json(&mut engine, &self.factors_query)?;
        let reasons = query_json(&mut engine, &self.reasons_query)?;
        Ok(RegoOutcome {
            factors: parse_factors(factors.as_ref())?,
            reasons: parse_reasons(reasons.as_ref())?,
        })
    }
}

/// Runs one query; `None` when the rule is undefined for this input.
fn query_json(engine: &mut Engine, query: &str) -> Result<Option<serde_json::Value>, String> {
    let results = engine
        .eval_query(query.to_owned(), false)
        .map_err(|e| rego_error(&e).to_string())?;
    let Some(value) = results
        .result
        .first()
        .and_then(|r| r.expressions.first())
        .map(|e| &e.value)
    else {
        return Ok(None);
    };
    if *value == Value::Undefined {
        return Ok(None);
    }
    let json = value
        .to_json_str()
        .map_err(|e| format!("{query} is not JSON: {e}"))?;
    serde_json::from_str(&json)
        .map(Some)
        .map_err(|e| format!("{query} is not JSON: {e}"))
}

fn parse_factors(value: Option<&serde_json::Value>) -> Result<Vec<(RiskFactor, u8)>, String> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let object = value
        .as_object()
        .ok_or_else(|| format!("factors must be an object of factor → score, got {value}"))?;
    let mut out = Vec::with_capacity(object.len());
    for (key, score) in object {
        let factor = match key.as_str() {
            "impact" => RiskFactor::Impact,
            "complexity" => RiskFactor::Complexity,
            "businessImpact" => RiskFactor::BusinessImpact,
            other => {
                return Err(format!(
                    "factors.{other}: unknown factor (impact, complexity, businessImpact)"
                ));
            }
        };
        let score = score
            .as_u64()
            .or_else(|| {
                score
                    .as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                    .map(|f| f as u64)
            })
            .filter(|s| *s <= u64::from(crate::MAX_SCORE))
            .ok_or_else(|| format!("factors.{key}: {score} is not a whole number 0..10"))?;
        out.push((factor, u8::try_from(score).unwrap_or(crate::MAX_SCORE)));
    }
    Ok(out)
}

fn parse_reasons(value: Option<&serde_json::Value>) -> Result<Vec<String>, String> {
    match value {
        None => Ok(Vec::new()),
        Some(serde_json::Value::String(s)) => Ok(vec![s.clone()]),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("reasons must be strings, got {i}"))
            })
            .collect(),
        Some(other) => Err(format!("reasons must be a list of strings, got {other}")),
    }
}
