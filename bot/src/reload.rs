//! Files the bot re-reads while it runs: the webhook secrets and the TLS certificate and key.
//! Kubernetes updates a mounted Secret in place (an atomic symlink swap, never a half-written
//! file), and cert-manager renews certificates weeks before they expire, so the bot checks
//! the files every `--reload-interval` and applies a changed set once it loads completely.
//! A set that does not load (an empty secret, a key that does not match its certificate) is
//! logged and ignored: the bot keeps serving with what it had. Polling, not inotify: symlink
//! swaps in Secret volumes are not reliably seen by file watches.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// What [`watch`] compares to notice a change: every file's bytes (files are small).
fn snapshot(paths: &[PathBuf]) -> Option<Vec<Vec<u8>>> {
    paths.iter().map(|p| std::fs::read(p).ok()).collect()
}

/// Checks `paths` every `interval`; when their contents differ from the last applied ones,
/// calls `load` (which reads and validates them) and, when it succeeds, `apply`. Runs until
/// dropped. `what` names the files in logs.
pub fn watch<T, L, A>(
    what: &'static str,
    paths: Vec<PathBuf>,
    interval: Duration,
    load: L,
    apply: A,
) -> impl Future<Output = ()> + Send + 'static
where
    T: Send + 'static,
    L: Fn(&[PathBuf]) -> anyhow::Result<T> + Send + 'static,
    A: Fn(T) + Send + 'static,
{
    // The caller loaded the current files already: compare against them from now on, not
    // from whenever the task first runs.
    let mut applied = snapshot(&paths);
    async move {
        let mut tick = tokio::time::interval(interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let current = snapshot(&paths);
            if current.is_none() || current == applied {
                continue;
            }
            match load(&paths) {
                Ok(value) => {
                    apply(value);
                    applied = current;
                    tracing::info!(what, "reloaded changed files");
                }
                Err(error) => {
                    tracing::warn!(what, error = %format!("{error:#}"), "changed files do not load; keeping the previous ones");
                    // Try again only after the next change.
                    applied = current;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn a_changed_file_is_loaded_and_a_bad_one_is_ignored() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secret");
        std::fs::write(&path, "one").expect("write");
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        let task = tokio::spawn(watch(
            "test",
            vec![path.clone()],
            Duration::from_millis(20),
            |paths| {
                let text = std::fs::read_to_string(&paths[0])?;
                anyhow::ensure!(!text.is_empty(), "empty");
                Ok(text)
            },
            move |text| sink.lock().expect("lock").push(text),
        ));
        let wait_for = |want: Vec<&'static str>| {
            let seen = seen.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        if *seen.lock().expect("lock") == want {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                })
                .await
                .unwrap_or_else(|_| panic!("never saw {want:?}: {:?}", seen.lock().expect("lock")));
            }
        };
        std::fs::write(&path, "two").expect("write");
        wait_for(vec!["two"]).await;
        std::fs::write(&path, "").expect("write");
        std::fs::write(&path, "three").expect("write");
        wait_for(vec!["two", "three"]).await;
        task.abort();
    }
}
