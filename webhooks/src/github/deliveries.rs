//! What the endpoint keeps about deliveries: the `X-GitHub-Delivery` ids it has seen (so a
//! redelivered webhook is answered and dropped), and the [`Backlog`] of deliveries it accepted
//! and the bot has not finished handling.
//!
//! The ids are bounded in count and age: the oldest are forgotten first. This is the fast path;
//! the durable guarantee is that every Kubernetes write a delivery causes uses a deterministic
//! name, so a delivery that slips past a restarted process is still idempotent.
//!
//! The backlog is bounded twice: in total (`--queue`), so an overloaded bot holds bounded
//! memory, and per [`Subject`] (`--queue-per-issue`), so one busy issue or pull request can
//! never fill it and make deliveries about the others fail. GitHub does not redeliver a
//! delivery it got a 503 for, so that refusal is kept for a bot that is really overloaded.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use super::event::{Delivery, Event};

/// A bounded, time-limited set of delivery ids.
///
/// Each id is kept as a 16-byte key (the first half of its SHA-256), once in a hash set and once
/// in arrival order with its time: about 50 bytes an id at capacity, where the id strings
/// themselves, kept twice, took about 180 (`--delivery-memory 100000` held about 17 MiB). Two
/// different ids share a key with probability 2^-128, and nobody can aim for it without a
/// SHA-256 preimage; the same id always has the same key, so every redelivery is still caught.
#[derive(Debug)]
pub struct Deliveries {
    capacity: usize,
    ttl: Duration,
    seen: Mutex<Seen>,
}

/// What is remembered of one delivery id.
type Key = [u8; 16];

/// The ids, and the same ids oldest first with when they were seen.
#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<Key>,
    order: VecDeque<(Key, Instant)>,
}

/// Ids the set makes room for at once: it grows by doubling past this, so a large
/// `--delivery-memory` costs memory only as ids arrive, and a full set of up to this many is
/// never copied into a larger table (the copy would briefly hold both).
const PREALLOCATED: usize = 1 << 17;

impl Deliveries {
    /// Remembers up to `capacity` ids for at most `ttl` each.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let capacity = capacity.max(1);
        let room = capacity.min(PREALLOCATED);
        Self {
            capacity,
            ttl,
            seen: Mutex::new(Seen {
                ids: HashSet::with_capacity(room),
                order: VecDeque::with_capacity(room),
            }),
        }
    }

    /// Records `id` at `now`; returns `false` when it was already seen (a redelivery).
    pub fn first_time(&self, id: &str, now: Instant) -> bool {
        let key = key(id);
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
        if ids.contains(&key) {
            return false;
        }
        if ids.len() >= self.capacity
            && let Some((old, _)) = order.pop_front()
        {
            ids.remove(&old);
        }
        ids.insert(key);
        order.push_back((key, now));
        true
    }

    /// Forgets `id` so a later redelivery of it is accepted (used when a delivery could not be
    /// enqueued). Returns whether it was remembered.
    pub fn forget(&self, id: &str) -> bool {
        let key = key(id);
        let mut guard = self.seen.lock().expect("delivery set lock poisoned");
        let Seen { ids, order } = &mut *guard;
        if !ids.remove(&key) {
            return false;
        }
        order.retain(|(seen, _)| *seen != key);
        true
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.seen
            .lock()
            .expect("delivery set lock poisoned")
            .ids
            .len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The key `id` is remembered by.
fn key(id: &str) -> Key {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    let mut key = [0; 16];
    key.copy_from_slice(&digest.as_ref()[..16]);
    key
}

/// What a delivery is about; deliveries about one subject are handled one at a time, in the
/// order they were accepted (a label added then removed must cancel, not race).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// An issue or pull request: the repository id and its number. Merge-queue and check-run
    /// events are about their first pull request (0 when they name none).
    Item {
        /// GitHub's repository id.
        repository: u64,
        /// The issue or pull request number.
        number: u64,
    },
    /// An App installation (`installation`, `installation_repositories`).
    Installation(u64),
    /// `ping` (answered at once, never queued).
    Ping,
}

impl Subject {
    /// What `event` is about.
    pub fn of(event: &Event) -> Self {
        let item = |repository: u64, number: u64| Self::Item { repository, number };
        match event {
            Event::Ping(_) => Self::Ping,
            Event::Issues(e) => item(e.repository.id, e.issue.number),
            Event::IssueComment(e) => item(e.repository.id, e.issue.number),
            Event::PullRequest(e) => item(e.repository.id, e.pull_request.number),
            Event::PullRequestReview(e) => item(e.repository.id, e.pull_request.number),
            Event::PullRequestReviewComment(e) => item(e.repository.id, e.pull_request.number),
            Event::MergeGroup(e) => item(
                e.repository.id,
                e.pull_requests.first().copied().unwrap_or(0),
            ),
            Event::CheckRun(e) => item(
                e.repository.id,
                e.pull_requests.first().copied().unwrap_or(0),
            ),
            Event::Installation(e) => Self::Installation(e.installation_id),
            Event::InstallationRepositories(e) => Self::Installation(e.installation_id),
        }
    }
}

/// Why the backlog has no room for a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// The whole backlog (`--queue`) is taken: the bot is overloaded.
    Everything,
    /// This delivery's subject holds its whole share (`--queue-per-issue`).
    Subject,
}

/// Deliveries accepted and not yet handled, counted in total and per [`Subject`].
#[derive(Debug)]
pub struct Backlog {
    capacity: usize,
    per_subject: usize,
    taken: Mutex<Taken>,
    freed: Notify,
    gauge: Gauge,
}

#[derive(Debug, Default)]
struct Taken {
    total: usize,
    by_subject: HashMap<Subject, usize>,
}

impl Backlog {
    /// Room for `capacity` deliveries in all, `per_subject` of them about one subject (both at
    /// least 1, `per_subject` at most `capacity`). `gauge` follows the number taken.
    pub fn new(capacity: usize, per_subject: usize, gauge: Gauge) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(Self {
            capacity,
            per_subject: per_subject.clamp(1, capacity),
            taken: Mutex::default(),
            freed: Notify::new(),
            gauge,
        })
    }

    /// The most deliveries it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Deliveries accepted and not yet handled.
    pub fn len(&self) -> usize {
        self.lock().total
    }

    /// Whether nothing is waiting or being handled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Taken> {
        self.taken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a delivery about `subject`, if there is room now.
    pub fn try_admit(self: &Arc<Self>, subject: Subject) -> Result<Slot, Full> {
        let mut taken = self.lock();
        if taken.total >= self.capacity {
            return Err(Full::Everything);
        }
        let mine = taken.by_subject.entry(subject).or_default();
        if *mine >= self.per_subject {
            return Err(Full::Subject);
        }
        *mine += 1;
        taken.total += 1;
        self.gauge.inc();
        Ok(Slot {
            backlog: self.clone(),
            subject,
        })
    }

    /// A place for a delivery about `subject`, waiting up to `wait` for one to be freed.
    pub async fn admit(self: &Arc<Self>, subject: Subject, wait: Duration) -> Result<Slot, Full> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before trying, so a place freed in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let full = match self.try_admit(subject) {
                Ok(slot) => return Ok(slot),
                Err(full) => full,
            };
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(full);
            }
        }
    }

    fn release(&self, subject: Subject) {
        {
            let mut taken = self.lock();
            taken.total = taken.total.saturating_sub(1);
            if let Some(mine) = taken.by_subject.get_mut(&subject) {
                *mine = mine.saturating_sub(1);
                if *mine == 0 {
                    taken.by_subject.remove(&subject);
                }
            }
        }
        self.gauge.dec();
        self.freed.notify_waiters();
    }
}

/// One delivery's place in the [`Backlog`]; given back when dropped (the delivery handled).
#[derive(Debug)]
pub struct Slot {
    backlog: Arc<Backlog>,
    subject: Subject,
}

impl Slot {
    /// What the delivery holding this place is about.
    pub fn subject(&self) -> Subject {
        self.subject
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.backlog.release(self.subject);
    }
}

/// An accepted delivery on its way to the bot's workers, holding its place in the backlog
/// until it is dropped.
#[derive(Debug)]
pub struct Queued {
    /// The delivery.
    pub delivery: Delivery,
    /// Its place in the backlog.
    pub slot: Slot,
}

impl Queued {
    /// What the delivery is about.
    pub fn subject(&self) -> Subject {
        self.slot.subject()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(number: u64) -> Subject {
        Subject::Item {
            repository: 7,
            number,
        }
    }

    #[test]
    fn one_subject_cannot_take_the_whole_backlog() {
        let backlog = Backlog::new(4, 2, Gauge::default());
        let a1 = backlog.try_admit(item(1)).expect("first of 1");
        let _a2 = backlog.try_admit(item(1)).expect("second of 1");
        assert_eq!(backlog.try_admit(item(1)).err(), Some(Full::Subject));
        let _b1 = backlog
            .try_admit(item(2))
            .expect("another issue still fits");
        let _b2 = backlog.try_admit(item(2)).expect("its share too");
        assert_eq!(backlog.try_admit(item(3)).err(), Some(Full::Everything));
        assert_eq!(backlog.len(), 4);
        drop(a1);
        assert_eq!(backlog.len(), 3);
        assert!(
            backlog.try_admit(item(1)).is_ok(),
            "a place given back is reused"
        );
    }

    #[tokio::test]
    async fn a_waiting_delivery_gets_the_next_free_place() {
        let gauge = Gauge::default();
        let backlog = Backlog::new(1, 1, gauge.clone());
        let first = backlog.try_admit(item(1)).expect("room");
        assert_eq!(gauge.get(), 1);
        let waiting = {
            let backlog = backlog.clone();
            tokio::spawn(async move { backlog.admit(item(2), Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("admitted in time")
            .expect("task")
            .expect("a place");
        assert_eq!(second.subject(), item(2));
        assert_eq!(
            backlog
                .admit(item(3), Duration::from_millis(10))
                .await
                .err(),
            Some(Full::Everything)
        );
        drop(second);
        assert_eq!(gauge.get(), 0);
        assert!(backlog.is_empty());
    }

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
    fn ids_stay_apart_and_the_count_stays_bounded() {
        let now = Instant::now();
        let set = Deliveries::new(1_000, Duration::from_secs(3600));
        assert!(set.is_empty());
        for n in 0..5_000u32 {
            let id = format!("72d3162e-cc78-11e3-81ab-{n:012x}");
            assert!(
                set.first_time(&id, now),
                "{id} differs from every earlier id"
            );
        }
        assert_eq!(set.len(), 1_000, "only the newest ids are kept");
        assert!(!set.first_time("72d3162e-cc78-11e3-81ab-000000001387", now));
        assert!(
            set.first_time("72d3162e-cc78-11e3-81ab-000000000000", now),
            "the oldest were forgotten"
        );
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
