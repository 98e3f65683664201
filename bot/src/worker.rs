//! Takes accepted deliveries off the webhook queue and handles them, after the HTTP request
//! that carried them has been answered (GitHub gives up on a delivery after about 10 s).
//!
//! Deliveries about the same issue or pull request (their [`Subject`]) are handled one at a
//! time, in the order they were accepted (a label added then removed must cancel, not race);
//! different subjects in parallel, up to `--workers` at once. The dispatcher never waits on a
//! busy subject: each subject's deliveries wait in their own line ([`Lines`]), and a free
//! worker takes the next subject whose turn it is, so a backlog on one issue delays only that
//! issue. Memory stays bounded because every delivery holds its place in the endpoint's
//! backlog (`--queue`, `--queue-per-issue`) until it is handled.
//!
//! A transient failure (GitHub 5xx or rate limit after the client's own retries, an apiserver
//! error) is retried with backoff; every delivery ends logged with its outcomes (at `debug`
//! when it needed nothing) or the reason it failed, and counted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use countersign_webhooks::github::deliveries::{Queued, Subject};
use countersign_webhooks::github::event::Delivery;
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::handlers::{Handler, Outcome};
use crate::metrics::Metrics;

/// Handling attempts of one delivery, the first included.
pub const HANDLE_ATTEMPTS: u32 = 4;
/// Wait before the second attempt; quadruples per attempt (1 s, 4 s, 16 s).
pub const HANDLE_BACKOFF: Duration = Duration::from_secs(1);

/// Handles deliveries from `queue` with up to `workers` at once until the queue closes and
/// every accepted delivery is finished.
pub async fn run(
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    mut queue: mpsc::Receiver<Queued>,
    workers: usize,
) {
    let workers = workers.max(1);
    let mut lines: Lines<Subject, Queued> = Lines::default();
    let mut running = tokio::task::JoinSet::new();
    let mut subjects = HashMap::new();
    let mut open = true;
    loop {
        while running.len() < workers
            && let Some((subject, queued)) = lines.take()
        {
            let handler = handler.clone();
            let metrics = metrics.clone();
            let Queued { delivery, slot } = queued;
            let task = running.spawn(async move {
                handle_one(&handler, &metrics, &delivery).await;
                // Handled: its place in the backlog is given back.
                drop(slot);
            });
            subjects.insert(task.id(), subject);
        }
        if !open && running.is_empty() && lines.is_empty() {
            break;
        }
        tokio::select! {
            received = queue.recv(), if open => match received {
                Some(queued) => lines.push(queued.subject(), queued),
                None => open = false,
            },
            Some(done) = running.join_next_with_id() => {
                let id = match done {
                    Ok((id, ())) => id,
                    Err(error) => {
                        tracing::error!(%error, "handling a delivery panicked");
                        error.id()
                    }
                };
                if let Some(subject) = subjects.remove(&id) {
                    lines.finished(&subject);
                }
            }
            else => break,
        }
    }
}

/// Items waiting in one line per key, handed out so that no two items of one key are out at
/// once and keys take turns (round robin among the keys that have something waiting).
#[derive(Debug)]
pub struct Lines<K, T> {
    waiting: HashMap<K, VecDeque<T>>,
    /// Keys with something waiting and nothing out, in the order they became ready.
    ready: VecDeque<K>,
    /// Keys with an item out.
    out: HashSet<K>,
}

impl<K, T> Default for Lines<K, T> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            out: HashSet::new(),
        }
    }
}

impl<K: Clone + Eq + Hash, T> Lines<K, T> {
    /// Puts `item` at the end of `key`'s line.
    pub fn push(&mut self, key: K, item: T) {
        let line = self.waiting.entry(key.clone()).or_default();
        line.push_back(item);
        if line.len() == 1 && !self.out.contains(&key) {
            self.ready.push_back(key);
        }
    }

    /// The first item of the next key whose turn it is; that key has it out until
    /// [`Lines::finished`].
    pub fn take(&mut self) -> Option<(K, T)> {
        let key = self.ready.pop_front()?;
        let line = self.waiting.get_mut(&key)?;
        let item = line.pop_front()?;
        if line.is_empty() {
            self.waiting.remove(&key);
        }
        self.out.insert(key.clone());
        Some((key, item))
    }

    /// `key`'s item is done; its next item (if any) may go out, after the keys already ready.
    pub fn finished(&mut self, key: &K) {
        self.out.remove(key);
        if self.waiting.contains_key(key) {
            self.ready.push_back(key.clone());
        }
    }

    /// Whether nothing is waiting (items out are not counted).
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Handles one delivery with retries, logging and counting what it did.
pub async fn handle_one(handler: &Handler, metrics: &Metrics, delivery: &Delivery) {
    let event = delivery.event.name();
    let repo = delivery
        .event
        .repository()
        .map(|r| r.full_name())
        .unwrap_or_default();
    let span = tracing::info_span!("delivery", delivery = %delivery.id, event, repo);
    async {
        let started = Instant::now();
        let mut wait = HANDLE_BACKOFF;
        for attempt in 1..=HANDLE_ATTEMPTS {
            match handler.handle(delivery).await {
                Ok(outcomes) => {
                    for outcome in &outcomes {
                        metrics.outcome(event, outcome.label());
                        // A delivery that changed something is a state transition; one that
                        // needed nothing (most of them: repositories no Project manages,
                        // unrelated labels, comments without commands) is a decision, and
                        // its line cost about a tenth of the ingest's CPU per delivery.
                        if matches!(outcome, Outcome::Ignored(_)) {
                            tracing::debug!(%outcome, "handled");
                        } else {
                            tracing::info!(%outcome, "handled");
                        }
                    }
                    break;
                }
                Err(error) if error.is_transient() && attempt < HANDLE_ATTEMPTS => {
                    metrics.retry(event);
                    tracing::warn!(%error, attempt, retry_in = ?wait, "handling failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
                Err(error) => {
                    metrics.failure(event, error.label());
                    tracing::error!(
                        %error,
                        attempt,
                        "handling failed; giving up (the bot's resync recovers a lost trigger \
                         label or pull request within --resync-interval; a lost comment command \
                         needs the command again)"
                    );
                    break;
                }
            }
        }
        metrics.handled(event, started.elapsed().as_secs_f64());
    }
    .instrument(span)
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_at_a_time_in_order_and_keys_take_turns() {
        let mut lines = Lines::default();
        for item in ["a1", "a2", "a3"] {
            lines.push('a', item);
        }
        lines.push('b', "b1");
        assert_eq!(lines.take(), Some(('a', "a1")));
        assert_eq!(
            lines.take(),
            Some(('b', "b1")),
            "b is not held up by a's line"
        );
        assert_eq!(lines.take(), None, "a2 waits for a1; b has nothing left");
        lines.push('c', "c1");
        lines.finished(&'a');
        assert_eq!(
            lines.take(),
            Some(('c', "c1")),
            "c became ready before a again"
        );
        assert_eq!(lines.take(), Some(('a', "a2")));
        lines.finished(&'b');
        lines.finished(&'c');
        assert!(!lines.is_empty());
        lines.finished(&'a');
        assert_eq!(lines.take(), Some(('a', "a3")));
        assert!(lines.is_empty());
        lines.finished(&'a');
        assert_eq!(lines.take(), None);
    }
}
