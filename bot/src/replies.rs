//! Visible answers on GitHub, rate-limited so a person (or a loop) repeating a refused
//! command gets one explanation and then only a 😕 reaction, never a wall of bot comments
//! (the comment-noise complaint of Prow and bors in PEERS.md).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// One reply per person, issue and kind of answer within this window.
pub const REPLY_WINDOW: Duration = Duration::from_secs(10 * 60);

/// Entries remembered at most; the oldest are forgotten first.
const CAPACITY: usize = 10_000;

/// Who is answered where about what.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    /// GitHub's repository id.
    pub repository: u64,
    /// Issue or pull request number.
    pub number: u64,
    /// The user answered.
    pub user: u64,
    /// What the answer is about (a bounded label such as `permission` or `help`).
    pub topic: &'static str,
}

/// Remembers recent replies.
#[derive(Debug, Default)]
pub struct ReplyLimiter {
    sent: Mutex<HashMap<ReplyKey, Instant>>,
}

impl ReplyLimiter {
    /// Whether a reply for `key` may be posted now; records it when so.
    pub fn allow(&self, key: ReplyKey) -> bool {
        let now = Instant::now();
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = sent.get(&key)
            && now.saturating_duration_since(*at) < REPLY_WINDOW
        {
            return false;
        }
        if sent.len() >= CAPACITY {
            sent.retain(|_, at| now.saturating_duration_since(*at) < REPLY_WINDOW);
            if sent.len() >= CAPACITY
                && let Some(oldest) = sent
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(k, _)| k.clone())
            {
                sent.remove(&oldest);
            }
        }
        sent.insert(key, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: u64) -> ReplyKey {
        ReplyKey {
            repository: 1,
            number: 42,
            user,
            topic: "permission",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_reply_per_window() {
        let limiter = ReplyLimiter::default();
        assert!(limiter.allow(key(7)));
        assert!(
            !limiter.allow(key(7)),
            "a repeat within the window is refused"
        );
        assert!(limiter.allow(key(8)), "someone else is answered");
        tokio::time::advance(REPLY_WINDOW + Duration::from_secs(1)).await;
        assert!(limiter.allow(key(7)), "answered again after the window");
    }
}
