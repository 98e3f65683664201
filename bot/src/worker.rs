//! Takes accepted deliveries off the webhook queue and handles them, after the HTTP request
//! that carried them has been answered (GitHub gives up on a delivery after about 10 s).
//!
//! Deliveries about the same issue or pull request are handled in order by one worker (a
//! label added then removed must cancel, not race); different ones in parallel. A transient
//! failure (GitHub 5xx or rate limit after the client's own retries, an apiserver error) is
//! retried with backoff; every delivery ends logged with its outcomes or the reason it failed.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use countersign_webhooks::github::event::{Delivery, Event};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::handlers::Handler;
use crate::metrics::Metrics;

/// Handling attempts of one delivery, the first included.
pub const HANDLE_ATTEMPTS: u32 = 4;
/// Wait before the second attempt; quadruples per attempt (1 s, 4 s, 16 s).
pub const HANDLE_BACKOFF: Duration = Duration::from_secs(1);
/// Deliveries waiting per worker.
const WORKER_QUEUE: usize = 64;

/// Handles deliveries from `queue` with `workers` workers until the queue closes and every
/// accepted delivery is finished.
pub async fn run(
    handler: Arc<Handler>,
    metrics: Arc<Metrics>,
    mut queue: mpsc::Receiver<Delivery>,
    workers: usize,
) {
    let workers = workers.max(1);
    let mut senders = Vec::with_capacity(workers);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let (tx, mut rx) = mpsc::channel::<Delivery>(WORKER_QUEUE);
        senders.push(tx);
        let handler = handler.clone();
        let metrics = metrics.clone();
        tasks.spawn(async move {
            while let Some(delivery) = rx.recv().await {
                metrics.queued(-1);
                handle_one(&handler, &metrics, &delivery).await;
            }
        });
    }
    while let Some(delivery) = queue.recv().await {
        metrics.queued(1);
        let shard = shard(&delivery.event, workers);
        if senders[shard].send(delivery).await.is_err() {
            tracing::error!("a delivery worker stopped; the bot cannot handle deliveries");
            break;
        }
    }
    drop(senders);
    while tasks.join_next().await.is_some() {}
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
                        tracing::info!(%outcome, "handled");
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
                        "handling failed; giving up (the controller's periodic resync repairs \
                         gates; a lost trigger needs the label or command again)"
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

/// Which worker handles deliveries about the same thing: the repository plus the issue or
/// pull request number (or the installation).
fn shard(event: &Event, workers: usize) -> usize {
    let subject: (u64, u64) = match event {
        Event::Ping(_) => (0, 0),
        Event::Issues(e) => (e.repository.id, e.issue.number),
        Event::IssueComment(e) => (e.repository.id, e.issue.number),
        Event::PullRequest(e) => (e.repository.id, e.pull_request.number),
        Event::PullRequestReview(e) => (e.repository.id, e.pull_request.number),
        Event::PullRequestReviewComment(e) => (e.repository.id, e.pull_request.number),
        Event::MergeGroup(e) => (
            e.repository.id,
            e.pull_requests.first().copied().unwrap_or(0),
        ),
        Event::CheckRun(e) => (
            e.repository.id,
            e.pull_requests.first().copied().unwrap_or(0),
        ),
        Event::Installation(e) => (e.installation_id, 0),
        Event::InstallationRepositories(e) => (e.installation_id, 0),
    };
    let mut hasher = DefaultHasher::new();
    subject.hash(&mut hasher);
    usize::try_from(hasher.finish() % workers as u64).unwrap_or(0)
}
