//! One busy issue must not block everyone (issue #17 item 11): signed deliveries through the
//! bot's public listener, handled by its real workers, while the bot's GitHub calls about
//! some issues hang. Deliveries about the other issues are still accepted and handled; a
//! busy issue is refused only beyond its own share of the backlog, and the bot as a whole
//! only when the whole backlog is taken. `/metrics` reports the whole backlog.

mod front_door;

use std::time::Duration;

use countersign_bot::server::DeliveryLimits;
use countersign_testkit::github::User;
use front_door::{Door, REPO, Setup, WAIT, comment, deliveries};

/// The bot's answers on issue 1 and issues 10 and above hang forever.
fn hold(method: &str, path: &str) -> bool {
    let Some(number) = path
        .strip_prefix("/repos/octo-org/widgets/issues/")
        .and_then(|rest| rest.strip_suffix("/comments"))
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return false;
    };
    method == "POST" && (number == 1 || number >= 10)
}

const BACKLOG: &str = "countersign_bot_deliveries_queued";

#[tokio::test]
async fn a_busy_issue_does_not_hold_up_deliveries_about_other_issues() {
    let mut door = Door::start(Setup {
        queue: 8,
        delivery: DeliveryLimits {
            per_issue: 3,
            enqueue_timeout: Duration::from_millis(100),
            ..DeliveryLimits::default()
        },
        hold: Some(hold),
        workers: 2,
        ..Setup::default()
    })
    .await;
    let alice = User::new(1, "alice");
    let issues: Vec<u64> = {
        let mut world = door.github.world();
        (1..=15)
            .map(|n| world.open_issue(REPO, &format!("Issue {n}"), "", &alice))
            .collect()
    };
    assert_eq!(issues.first(), Some(&1));
    assert_eq!(issues.last(), Some(&15));

    // Issue 1's first delivery is being handled, and hangs on GitHub.
    let first = comment(&door.github, 1, "/help", &alice);
    assert_eq!(door.deliver(&first).await.status, 202);
    let held = tokio::time::timeout(WAIT, door.held.recv())
        .await
        .expect("issue 1 reaches GitHub in time");
    assert_eq!(
        held.as_deref(),
        Some("/repos/octo-org/widgets/issues/1/comments")
    );
    // Two more wait behind it; a fourth is over issue 1's share and refused.
    for _ in 0..2 {
        let next = comment(&door.github, 1, "/help", &alice);
        assert_eq!(door.deliver(&next).await.status, 202);
    }
    let over = door
        .deliver(&comment(&door.github, 1, "/help", &alice))
        .await;
    assert_eq!(over.status, 503, "{over:?}");
    assert!(over.header("retry-after").is_some());

    // Issue 2 is accepted and handled while issue 1 is still stuck.
    let other = comment(&door.github, 2, "/help", &alice);
    assert_eq!(door.deliver(&other).await.status, 202);
    tokio::time::timeout(WAIT, async {
        while door.github.world().comments_on(REPO, 2).len() < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("issue 2 answered while issue 1 hangs");
    // The gauge is everything accepted and not handled: issue 1's three.
    door.wait_metric(BACKLOG, 3.0).await;

    // Issues 10 to 14 take the other worker and the rest of the backlog (8 in all)...
    for number in 10..=14 {
        let delivery = comment(&door.github, number, "/help", &alice);
        assert_eq!(door.deliver(&delivery).await.status, 202, "issue {number}");
    }
    door.wait_metric(BACKLOG, 8.0).await;
    // ...so the bot is overloaded: only now does another issue get 503.
    let refused = door
        .deliver(&comment(&door.github, 15, "/help", &alice))
        .await;
    assert_eq!(refused.status, 503, "{refused:?}");

    assert_eq!(
        door.metric(&deliveries("issue_comment", "subject_overloaded"))
            .await,
        1.0
    );
    assert_eq!(
        door.metric(&deliveries("issue_comment", "overloaded"))
            .await,
        1.0
    );
    assert_eq!(
        door.metric(&deliveries("issue_comment", "queued")).await,
        9.0
    );
}
