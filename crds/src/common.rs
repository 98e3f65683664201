//! Types shared by several kinds: references, GitHub identities, roles, durations and money.
//!
//! Every closed value set is an enum and every identifier a newtype, so a typo in a manifest is
//! rejected by the apiserver's schema instead of surfacing later as a silent mismatch.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A reference to another object of the given kind in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalRef {
    /// Name of the referenced object, in this object's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

impl LocalRef {
    /// A reference to `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }
}

/// A key inside a Kubernetes Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as the object that refers to it.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's `data` whose value is used.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A GitHub user (or bot account). The numeric id is immutable on GitHub and is what
/// Countersign matches on; the login is kept for display and may change.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitHubUser {
    /// GitHub login, e.g. `octocat`. Shown to people; never used alone for authorisation
    /// when the id is known.
    #[schemars(length(min = 1, max = 39))]
    pub login: String,
    /// Immutable numeric GitHub user id. When set, it is what permission and role checks
    /// match on, so a renamed account keeps (or loses) exactly its own rights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub id: Option<u64>,
}

/// A GitHub team in the repository's organisation.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitHubTeam {
    /// Team slug, e.g. `platform-leads` (the part after `org/` in `@org/platform-leads`).
    #[schemars(length(min = 1, max = 100))]
    pub slug: String,
    /// Immutable numeric team id; preferred over the slug for membership checks when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub id: Option<u64>,
}

/// The name of an approver role such as `developer`, `tech_lead`, `manager`, `security_team`
/// or `cto`. Roles are extensible: any lower-case identifier a Project binds to people can be
/// required by a RiskPolicy workflow.
#[derive(
    Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(transparent)]
pub struct RoleName(#[schemars(pattern(r"^[a-z][a-z0-9_]{0,62}$"))] pub String);

impl RoleName {
    /// Writes and reviews everyday changes.
    pub const DEVELOPER: &'static str = "developer";
    /// Owns the technical direction of the repository.
    pub const TECH_LEAD: &'static str = "tech_lead";
    /// Accountable for delivery and business impact.
    pub const MANAGER: &'static str = "manager";
    /// Reviews security-relevant changes.
    pub const SECURITY_TEAM: &'static str = "security_team";
    /// Signs off critical changes.
    pub const CTO: &'static str = "cto";

    /// The role as written in manifests.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for RoleName {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an agent run is steered by humans.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RunMode {
    /// The agent plans and codes on its own and opens a pull request for review.
    #[default]
    Autonomous,
    /// The agent first posts a plan; coding starts only after a human `/approve`s it.
    Control,
    /// The agent codes, pausing for human guidance comments between steps.
    Guidance,
    /// The agent only analyses and posts a comment; it never pushes a branch or opens a PR.
    Observation,
}

/// A duration written the Go way (`90s`, `30m`, `4h`, `1h30m`, `1.5h`, `500ms`, `300us`), as in
/// the rest of Kubernetes. Parsed by a port of Go's `time.ParseDuration`
/// ([`go_parse_duration`]), so everything `kubectl` and Go controllers accept is accepted here:
/// decimal fractions on any unit and the units `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`. Negative
/// durations are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GoDuration(pub Duration);

/// Why a duration string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurationParseError(pub String);

impl fmt::Display for DurationParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid duration {:?}: expected e.g. 90s, 30m, 4h, 1h30m, 1.5h or 500ms",
            self.0
        )
    }
}

impl std::error::Error for DurationParseError {}

impl FromStr for GoDuration {
    type Err = DurationParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationParseError(s.to_owned());
        // Go accepts a bare "0"; a sign is meaningless for a wait or a timeout.
        if s.starts_with(['-', '+']) {
            return Err(err());
        }
        // Go's micro sign spellings, then ASCII only: go-parse-duration 0.1 mixes byte and
        // char indices and would panic on other non-ASCII input.
        let ascii = s.replace(['µ', 'μ'], "u");
        if !ascii.is_ascii() {
            return Err(err());
        }
        let nanos = parse_go_nanos(&ascii).ok_or_else(err)?;
        let nanos = u64::try_from(nanos).map_err(|_| err())?;
        Ok(GoDuration(Duration::from_nanos(nanos)))
    }
}

/// Go keeps no more fraction digits than this: past them a fraction adds less than a
/// nanosecond even to an hour.
const MAX_FRACTION_DIGITS: usize = 18;

/// The longest duration accepted, in nanoseconds (about 146 years): go-parse-duration's
/// limit for one segment (it reads Go's `1<<63 - 1` as `1 << 62`), applied to the sum too
/// so that every accepted duration prints ([`fmt::Display`]) in a form that parses back.
const MAX_NANOS: i64 = 1 << 62;

/// Go's `time.ParseDuration` of unsigned ASCII text, through go-parse-duration 0.1 one
/// `<number><unit>` segment at a time. That crate loops forever on a fraction longer than
/// an i64 holds and adds segments without an overflow check (a panic in debug builds), so
/// fractions are cut to [`MAX_FRACTION_DIGITS`] and the segments summed here, checked (the
/// hang was found by the `go_duration` fuzz target, docs/fuzzing.md).
fn parse_go_nanos(text: &str) -> Option<i64> {
    if text == "0" {
        return Some(0);
    }
    if text.is_empty() {
        return None;
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    let mut total = 0i64;
    let mut rest = text;
    while !rest.is_empty() {
        let unit_start = rest.find(|c| !is_number(c)).unwrap_or(rest.len());
        let end = rest[unit_start..]
            .find(is_number)
            .map_or(rest.len(), |i| unit_start + i);
        let (number, unit) = (&rest[..unit_start], &rest[unit_start..end]);
        if unit.is_empty() {
            return None; // "1h0": Go wants a unit on every number.
        }
        let number = match number.split_once('.') {
            Some((int, frac)) => {
                let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
                let kept = digits.min(MAX_FRACTION_DIGITS);
                format!("{int}.{}{}", &frac[..kept], &frac[digits..])
            }
            None => number.to_owned(),
        };
        let nanos = go_parse_duration::parse_duration(&format!("{number}{unit}")).ok()?;
        total = total.checked_add(nanos).filter(|t| *t <= MAX_NANOS)?;
        rest = &rest[end..];
    }
    Some(total)
}

impl fmt::Display for GoDuration {
    /// The shortest Go form: `1h30m`, `1s500ms`, `300us`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.as_nanos();
        if total == 0 {
            return f.write_str("0s");
        }
        let mut rest = total;
        for (unit, size) in [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ] {
            let count = rest / size;
            rest %= size;
            if count > 0 {
                write!(f, "{count}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for GoDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            // Go's time.ParseDuration grammar, unsigned.
            "pattern": r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|ms|s|m|h))+)$",
        })
    }
}

/// An amount of US dollars written as a decimal string with at most two decimals (`"12.50"`).
/// Stored as whole cents so sums never drift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Usd {
    /// The amount in cents.
    pub cents: u64,
}

impl FromStr for Usd {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid amount {s:?}: expected dollars like \"25\" or \"12.50\"");
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 2 {
            return Err(bad());
        }
        if !frac.bytes().all(|b| b.is_ascii_digit()) || (s.contains('.') && frac.is_empty()) {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let frac: u64 = format!("{frac:0<2}").parse().map_err(|_| bad())?;
        whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac))
            .map(|cents| Usd { cents })
            .ok_or_else(bad)
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Usd {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Usd".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^[0-9]{1,9}(\.[0-9]{1,2})?$",
        })
    }
}

/// A reference to a pull request on the Project's repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestRef {
    /// Pull request number.
    #[schemars(range(min = 1))]
    pub number: u64,
    /// Web address of the pull request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_round_trip() {
        for (text, secs) in [("90s", 90), ("30m", 1800), ("4h", 14400), ("1h30m", 5400)] {
            let d: GoDuration = text.parse().expect("valid duration");
            assert_eq!(d.0, Duration::from_secs(secs));
        }
        assert_eq!(GoDuration(Duration::from_secs(5400)).to_string(), "1h30m");
        assert_eq!(
            GoDuration(Duration::from_millis(1500)).to_string(),
            "1s500ms"
        );
    }

    #[test]
    fn go_durations_are_accepted_in_full() {
        for (text, nanos) in [
            ("1.5h", 5_400_000_000_000u64),
            ("500ms", 500_000_000),
            ("300us", 300_000),
            ("300µs", 300_000),
            ("300μs", 300_000),
            ("2h45m0.5s", 9_900_500_000_000),
            ("1.5m30s", 120_000_000_000),
            ("10ns", 10),
            ("0", 0),
        ] {
            let d: GoDuration = text.parse().expect(text);
            assert_eq!(d.0, Duration::from_nanos(nanos), "{text}");
            let again: GoDuration = d.to_string().parse().expect("display parses");
            assert_eq!(again, d, "{text} round-trips through {d}");
        }
        assert_eq!(GoDuration(Duration::from_micros(300)).to_string(), "300us");
    }

    #[test]
    fn bad_durations_are_rejected() {
        for text in [
            "",
            "h",
            "5",
            "5d",
            "-3s",
            "+3s",
            "99999999999h",
            "1.",
            ".",
            "µ",
            "1 h",
            "1h ",
            "1é",
            "1sé",
            "ü1s",
        ] {
            assert!(
                text.parse::<GoDuration>().is_err(),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn usd_amounts_parse_to_cents() {
        assert_eq!("25".parse::<Usd>().unwrap().cents, 2500);
        assert_eq!("12.5".parse::<Usd>().unwrap().cents, 1250);
        assert_eq!("0.07".parse::<Usd>().unwrap().to_string(), "0.07");
        for bad in ["", ".5", "1.", "1.234", "-1", "1e3", "abc"] {
            assert!(bad.parse::<Usd>().is_err(), "{bad:?} should be rejected");
        }
    }
}
