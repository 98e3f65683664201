//! Per-object exponential backoff with jitter for failed reconciliations.
//!
//! `error_policy` used to requeue every failed object after the error's fixed wait, so one
//! cause (a missing RBAC rule answering 403, an unreachable API server) retried every object
//! every second for as long as it lasted. Now each object has its own count of consecutive
//! failures: the wait starts at the error's own floor ([`Error::backoff`]: 200 ms for a
//! conflict, 1 s for an API error, GitHub's `Retry-After` for a rate limit), doubles per
//! failure up to [`ERROR_BACKOFF_MAX`], and gets up to 25% random jitter on top so objects
//! that failed together do not retry together. A successful reconcile resets the count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::error::Error;

/// Longest wait after repeated failures of one object (a floor longer than this, such as a
/// long `Retry-After`, is kept as is).
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Largest share of the wait added as random jitter.
pub const JITTER: f64 = 0.25;

/// The wait before retry number `failures` (1 for the first failure): `floor * 2^(failures-1)`
/// capped at `max` (but never below `floor`), plus `jitter` (a share in `0.0..=1.0`) of it.
pub fn delay(floor: Duration, failures: u32, max: Duration, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(30);
    let grown = floor.saturating_mul(1u32 << doublings);
    let capped = grown.min(max.max(floor));
    capped + capped.mul_f64(jitter.clamp(0.0, 1.0) * JITTER)
}

/// Consecutive failures per object, shared by the reconcilers of one controller process.
#[derive(Debug, Default)]
pub struct ErrorBackoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl ErrorBackoff {
    /// Records one more failure of `key` and returns how long to wait before retrying it.
    pub fn next(&self, key: &str, err: &Error) -> Duration {
        let failures = {
            let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let count = map.entry(key.to_owned()).or_insert(0);
            *count = count.saturating_add(1);
            *count
        };
        delay(
            err.backoff(),
            failures,
            ERROR_BACKOFF_MAX,
            rand::random::<f64>(),
        )
    }

    /// Forgets the failures of `key` (it reconciled successfully).
    pub fn reset(&self, key: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(key);
    }

    /// Consecutive failures recorded for `key`.
    pub fn failures(&self, key: &str) -> u32 {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).copied().unwrap_or(0)
    }
}

/// The key of an object in [`ErrorBackoff`]: kind, namespace and name.
pub fn key<K: kube::Resource<DynamicType = ()>>(obj: &K) -> String {
    kube::runtime::reflector::ObjectRef::from_obj(obj).to_string()
}

/// Resets the backoff of every object the controller stream reports as reconciled; used as
/// the `for_each` of each controller's result stream.
pub fn reset_on_success<K, E>(
    backoff: &ErrorBackoff,
    result: &Result<
        (
            kube::runtime::reflector::ObjectRef<K>,
            kube::runtime::controller::Action,
        ),
        E,
    >,
) where
    K: kube::Resource<DynamicType = ()>,
{
    if let Ok((object, _)) = result {
        backoff.reset(&object.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn waits_double_per_failure_up_to_the_maximum() {
        let waits: Vec<u64> = (1..=12)
            .map(|n| delay(S, n, ERROR_BACKOFF_MAX, 0.0).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(
            delay(S, u32::MAX, ERROR_BACKOFF_MAX, 0.0),
            ERROR_BACKOFF_MAX
        );
    }

    #[test]
    fn jitter_adds_at_most_a_quarter() {
        assert_eq!(delay(S * 8, 1, ERROR_BACKOFF_MAX, 1.0), S * 10);
        assert_eq!(delay(S * 8, 1, ERROR_BACKOFF_MAX, 0.5), S * 9);
        for _ in 0..100 {
            let d = delay(S, 3, ERROR_BACKOFF_MAX, rand::random::<f64>());
            assert!(d >= S * 4 && d <= S * 5, "{d:?}");
        }
    }

    #[test]
    fn a_floor_above_the_maximum_is_kept() {
        let retry_after = Duration::from_secs(3600);
        assert_eq!(delay(retry_after, 3, ERROR_BACKOFF_MAX, 0.0), retry_after);
    }

    #[test]
    fn failures_count_per_object_and_reset_on_success() {
        let backoff = ErrorBackoff::default();
        let forbidden = Error::Kube(kube::Error::Api(
            kube::core::Status::failure("secrets is forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        ));
        let first = backoff.next("Agent/a", &forbidden);
        let second = backoff.next("Agent/a", &forbidden);
        let third = backoff.next("Agent/a", &forbidden);
        assert!(first >= S && first <= S.mul_f64(1.25), "{first:?}");
        assert!(second >= S * 2 && second <= S.mul_f64(2.5), "{second:?}");
        assert!(third >= S * 4 && third <= S * 5, "{third:?}");
        assert_eq!(
            backoff.failures("Agent/b"),
            0,
            "other objects are not slowed"
        );
        let other = backoff.next("Agent/b", &forbidden);
        assert!(other <= S.mul_f64(1.25), "{other:?}");
        backoff.reset("Agent/a");
        assert_eq!(backoff.failures("Agent/a"), 0);
        assert!(backoff.next("Agent/a", &forbidden) <= S.mul_f64(1.25));
    }
}
