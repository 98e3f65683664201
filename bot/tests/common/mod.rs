//! Shared setup of the bot's integration tests: the App client pointed at the fake GitHub,
//! an assembled bot, and reading its metrics.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use countersign_bot::metrics::Metrics;
use countersign_bot::server::{Bot, BotSettings};
use countersign_github::GitHubApp;
use countersign_testkit::github::{FakeGitHub, TEST_APP_SLUG};

/// The test App's bot login.
pub fn bot_login() -> String {
    format!("{TEST_APP_SLUG}[bot]")
}

/// The App client for `github`, with short retry limits.
pub fn app(github: &FakeGitHub) -> GitHubApp {
    github.app_client()
}

/// A running bot: its router, metrics and workers.
pub struct RunningBot {
    /// The HTTP surface.
    pub router: Router,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// The workers' task (dropping it does not stop them; the test runtime does).
    pub workers: tokio::task::JoinHandle<()>,
}

/// Assembles and starts a bot accepting `secrets`.
pub fn start_bot(client: kube::Client, github: &FakeGitHub, secrets: &[&str]) -> RunningBot {
    let bot = Bot::new(
        client,
        app(github),
        BotSettings {
            secrets: secrets.iter().map(|s| s.as_bytes().to_vec()).collect(),
            namespace: None,
            queue: 4096,
            delivery_memory: 10_000,
            delivery_ttl: Duration::from_secs(3600),
            bot_login: bot_login(),
            allowed_repositories: Some(
                countersign_policies::ownership::RepositoryAllowList::everything(),
            ),
        },
    );
    let router = bot.router();
    let metrics = bot.probes.metrics.clone();
    let workers = tokio::spawn(bot.run(4));
    RunningBot {
        router,
        metrics,
        workers,
    }
}

/// How many deliveries of `event` the workers finished (all events when `None`).
pub fn handled(metrics: &Metrics, event: Option<&str>) -> u64 {
    let prefix = "countersign_bot_delivery_handling_seconds_count{event=\"";
    metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| rest.split_once("\"} "))
        .filter(|(e, _)| event.is_none_or(|want| *e == want))
        .filter_map(|(_, n)| n.trim().parse::<u64>().ok())
        .sum()
}
