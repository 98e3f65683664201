//! Remembers `X-GitHub-Delivery` ids so a redelivered webhook is answered and dropped.
//!
//! Bounded in count and age: the oldest ids are forgotten first. This is the fast path; the
//! durable guarantee is that every Kubernetes write a delivery causes uses a deterministic name,
//! so a delivery that slips past a restarted process is still idempotent.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A bounded, time-limited set of delivery ids.
#[derive(Debug)]
pub struct Deliveries {
    capacity: usize,
    ttl: Duration,
    seen: Mutex<Seen>,
}

/// The ids, and the same ids oldest first with when they were seen.
#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<(String, Instant)>,
}

impl Deliveries {
    /// Remembers up to `capacity` ids for at most `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity: capacity.max(1),
            ttl,
            seen: Mutex::default(),
        }
    }

    /// Records `id` at `now`; returns `false` when it was already seen (a redelivery).
    pub fn first_time(&self, id: &str, now: Instant) -> bool {
        let mut guard = self.seen.lock().expect("delivery set lock poisoned");
        let Seen { ids, order } = &mut *guard;
        // Forget expired ids, then check, then make room only for a new id.
        while order
            .front()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) > self.ttl)
        {
            if let Some((old, _)) = order.pop_front() {
                ids.remove(&old);
            }
        }
        if ids.contains(id) {
            return false;
        }
        if ids.len() >= self.capacity
            && let Some((old, _)) = order.pop_front()
        {
            ids.remove(&old);
        }
        ids.insert(id.to_owned());
        order.push_back((id.to_owned(), now));
        true
    }

    /// Forgets `id` so a later redelivery of it is accepted (used when a delivery could not be
    /// enqueued). Returns whether it was remembered.
    pub fn forget(&self, id: &str) -> bool {
        let mut guard = self.seen.lock().expect("delivery set lock poisoned");
        let Seen { ids, order } = &mut *guard;
        if !ids.remove(id) {
            return false;
        }
        order.retain(|(seen, _)| seen != id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redeliveries_are_detected_within_bounds() {
        let start = Instant::now();
        let set = Deliveries::new(2, Duration::from_secs(60));
        assert!(set.first_time("a", start));
        assert!(!set.first_time("a", start), "a redelivery");
        assert!(set.first_time("b", start));
        assert!(
            set.first_time("c", start),
            "over capacity, the oldest is forgotten"
        );
        assert!(set.first_time("a", start));
        assert!(!set.first_time("c", start));
        let later = start + Duration::from_secs(61);
        assert!(set.first_time("c", later), "expired ids are forgotten");
    }

    #[test]
    fn a_thousand_duplicates_pass_once() {
        let set = Deliveries::new(10_000, Duration::from_secs(3600));
        let now = Instant::now();
        let passed = (0..1000)
            .filter(|_| set.first_time("72d3162e-cc78-11e3-81ab-4c9367dc0958", now))
            .count();
        assert_eq!(passed, 1);
    }

    #[test]
    fn a_forgotten_id_is_accepted_again() {
        let set = Deliveries::new(10, Duration::from_secs(60));
        let now = Instant::now();
        assert!(set.first_time("a", now));
        assert!(set.forget("a"));
        assert!(!set.forget("a"), "already forgotten");
        assert!(set.first_time("a", now), "accepted again after forget");
        assert!(!set.first_time("a", now));
    }
}
