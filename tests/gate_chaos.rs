//! The approval gates' chaos test (#17): pull requests of every risk level go through the
//! real bot and controller while GitHub fails between the gate's side effects (5xx answers,
//! answers lost after GitHub acted, dropped connections, secondary rate limits), the
//! controller is killed at random
//! points and restarted, the bot is killed with deliveries in its queue, and deliveries are
//! lost. Then the faults stop, the bot's resync and the controller's own passes catch up,
//! and the invariants listed in docs/testkit.md are checked.
//!
//! The seed is printed; `COUNTERSIGN_CHAOS_SEED=<n>` replays one (the order of faults, kills
//! and losses follows it; the moment a kill lands in a reconcile still depends on timing).

#[path = "support/gate_world.rs"]
mod gate_world;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use countersign_crds::risk_policy::TimeoutAction;
use countersign_crds::{ApprovalGate, GatePhase};
use countersign_testkit::github::{ChangedFile, Fault, User};
use serde_json::json;

use gate_world::*;

/// Pull requests per run: enough for every kind of fault to land several times, bounded for CI.
const PULLS: usize = 12;

/// splitmix64: small, seedable, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// True `percent` times in a hundred.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn seed() -> u64 {
    std::env::var("COUNTERSIGN_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// The GitHub faults the gate meets between its side effects: 5xx answers, answers lost after
/// GitHub acted, connections dropped mid-answer, rate limits. `times` covers the client's own
/// retries where a call is retried (reads, updates, review requests).
fn fault(rng: &mut Rng) -> (&'static str, &'static str, Fault, usize) {
    match rng.below(13) {
        10 => ("POST", "/check-runs", Fault::Dropped, 1),
        11 => ("POST", "/comments", Fault::Dropped, 1),
        12 => ("GET", "/commits", Fault::Dropped, 4),
        0 => ("POST", "/check-runs", Fault::Applied(502), 1),
        1 => ("POST", "/check-runs", Fault::Status(502), 1),
        2 => ("PATCH", "/check-runs/", Fault::Status(503), 4),
        3 => ("PATCH", "/check-runs/", Fault::Applied(502), 4),
        4 => ("POST", "/requested_reviewers", Fault::Status(502), 4),
        5 => ("POST", "/comments", Fault::Applied(502), 1),
        6 => ("POST", "/comments", Fault::Status(500), 1),
        7 => (
            "GET",
            "/reviews",
            Fault::SecondaryRateLimit {
                retry_after_secs: 1,
            },
            1,
        ),
        8 => ("GET", "/files", Fault::Status(500), 4),
        _ => ("GET", "/check-runs", Fault::Status(502), 4),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Docs only: approves itself.
    Docs,
    /// A feature: a developer and a tech lead (4 h, then reminders).
    Feature,
    /// An auth change: a tech lead and a manager (24 h, then an escalation).
    Auth,
}

struct Pull {
    number: u64,
    kind: Kind,
    /// Who approved (their reviews exist on GitHub, delivered or not).
    approvers: BTreeSet<String>,
    /// Whether everyone the level needs approved.
    approved: bool,
}

#[derive(Default)]
struct Tally {
    faults: usize,
    controller_kills: usize,
    bot_kills: usize,
    lost_deliveries: usize,
}

struct Chaos<'a> {
    w: &'a World,
    rng: Rng,
    tally: Tally,
}

impl Chaos<'_> {
    /// Before each step: maybe faults, maybe a controller or bot kill.
    async fn disturb(&mut self) {
        for _ in 0..self.rng.below(3) {
            let (method, path, fault, times) = fault(&mut self.rng);
            self.w.github.fail_next_call(method, path, fault, times);
            self.tally.faults += 1;
        }
        if self.rng.chance(15) {
            self.w.restart_controller().await;
            self.tally.controller_kills += 1;
        }
        if self.rng.chance(8) {
            self.w.restart_bot().await;
            self.tally.bot_kills += 1;
        }
        // Let the system work a little between steps.
        tokio::time::sleep(Duration::from_millis(self.rng.below(400) as u64)).await;
    }

    /// Delivers `payload`, or loses it one time in six.
    async fn deliver(&mut self, event: &str, payload: &serde_json::Value) {
        if self.rng.chance(16) {
            self.tally.lost_deliveries += 1;
        } else {
            self.w.deliver(event, payload).await;
        }
    }

    async fn open(&mut self, i: usize, kind: Kind) -> u64 {
        let files: &[&str] = match kind {
            Kind::Docs => &["docs/guide.md"],
            Kind::Feature => &["src/orders/checkout.rs"],
            Kind::Auth => &["src/auth/session.rs"],
        };
        let files = files
            .iter()
            .map(|f| ChangedFile::modified(f, 10, 2))
            .collect();
        let erin = self.w.p.erin.clone();
        let payload = self.w.github.world().open_pull_request(
            REPO,
            "A change",
            &format!("change-{i}"),
            files,
            &erin,
        );
        self.deliver("pull_request", &payload).await;
        payload["number"].as_u64().expect("number")
    }

    async fn review(&mut self, number: u64, who: &User) {
        let payload = self
            .w
            .github
            .world()
            .submit_review(REPO, number, who, "APPROVED", "");
        self.deliver("pull_request_review", &payload).await;
    }
}

/// The conclusion a check run must show for a gate in `phase`.
fn agrees(phase: GatePhase, status: &str, conclusion: Option<&str>) -> bool {
    match phase {
        GatePhase::Approved | GatePhase::Merged => {
            status == "completed" && conclusion == Some("success")
        }
        GatePhase::Pending | GatePhase::Held => status != "completed",
        GatePhase::Rejected | GatePhase::Expired => {
            status == "completed" && conclusion == Some("failure")
        }
        GatePhase::Closed => true,
    }
}

/// Settled: evaluated on its head with the check published, nothing failing, nothing
/// waiting to be announced.
fn settled(g: &ApprovalGate, head: &str) -> bool {
    evaluated_at(g, head)
        && g.status.as_ref().is_some_and(|s| {
            s.last_error.is_none() && s.escalations.iter().all(|e| !e.notice_pending)
        })
}

#[tokio::test]
async fn gates_keep_their_invariants_through_github_faults_kills_and_lost_deliveries() {
    let seed = seed();
    println!("chaos seed: {seed} (COUNTERSIGN_CHAOS_SEED={seed} replays it)");
    let w = World::start(json!({})).await;
    let mut chaos = Chaos {
        w: &w,
        rng: Rng(seed),
        tally: Tally::default(),
    };

    // Open pull requests of every level, in a random order.
    let mut pulls = Vec::new();
    for i in 0..PULLS {
        chaos.disturb().await;
        let kind = match chaos.rng.below(3) {
            0 => Kind::Docs,
            1 => Kind::Feature,
            _ => Kind::Auth,
        };
        let number = chaos.open(i, kind).await;
        pulls.push(Pull {
            number,
            kind,
            approvers: BTreeSet::new(),
            approved: kind == Kind::Docs,
        });
    }
    // Reviews: most pull requests get every approval their level needs, some only part.
    let (alice, lead, mgr) = (w.p.alice.clone(), w.p.lead.clone(), w.p.mgr.clone());
    for pull in &mut pulls {
        let needed: Vec<&User> = match pull.kind {
            Kind::Docs => continue,
            Kind::Feature => vec![&alice, &lead],
            Kind::Auth => vec![&lead, &mgr],
        };
        let all = chaos.rng.chance(65);
        let count = if all {
            needed.len()
        } else {
            chaos.rng.below(needed.len())
        };
        for who in needed.into_iter().take(count) {
            chaos.disturb().await;
            chaos.review(pull.number, who).await;
            pull.approvers.insert(who.login.clone());
        }
        pull.approved = all;
    }
    // A deadline passes for the waiting features (a reminder each), under more faults.
    for _ in 0..3 {
        chaos.disturb().await;
    }
    advance(Duration::from_secs(4 * 3600 + 5)).await;
    for _ in 0..3 {
        chaos.disturb().await;
    }

    // The faults stop. The resync finds the pull requests whose deliveries were lost; the
    // controller's periodic pass reads reviews whose deliveries were lost; backoffs run out.
    let unused = w.github.clear_faults();
    let pass = w.resync().await;
    println!(
        "resync recovered {:?}",
        pass.recovered.iter().map(|r| &r.name).collect::<Vec<_>>()
    );
    let heads: BTreeMap<u64, String> = pulls.iter().map(|p| (p.number, w.head(p.number))).collect();
    let all_settled = async {
        loop {
            advance(Duration::from_secs(16)).await;
            let mut done = true;
            for (n, head) in &heads {
                done &= w.gate(*n).await.is_some_and(|g| settled(&g, head));
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    // The controller's own resync (600 s) covers reviews whose delivery was lost.
    advance(Duration::from_secs(601)).await;
    if tokio::time::timeout(Duration::from_secs(90), all_settled)
        .await
        .is_err()
    {
        let mut left = Vec::new();
        for (n, head) in &heads {
            let g = w.gate(*n).await;
            if !g.as_ref().is_some_and(|g| settled(g, head)) {
                left.push((n, g.and_then(|g| g.status)));
            }
        }
        panic!("seed {seed}: gates not settled: {left:#?}");
    }

    // The invariants.
    let mut checked = 0;
    let mut violations: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        checked += 1;
        if !ok {
            violations.push(what);
        }
    };
    for pull in &pulls {
        let n = pull.number;
        let head = &heads[&n];
        let gate = w.gate(n).await.expect("settled gates exist");
        let status = gate.status.expect("status");
        // One check run per head, the one the status names, saying what the gate says.
        let runs = our_checks(&w, head);
        check(
            runs.len() == 1,
            format!("#{n}: {} check runs on its head", runs.len()),
        );
        if let Some(run) = runs.last() {
            check(
                status.check_run_id == Some(run.id),
                format!(
                    "#{n}: status names run {:?}, GitHub has {}",
                    status.check_run_id, run.id
                ),
            );
            check(
                agrees(status.phase, &run.status, run.conclusion.as_deref()),
                format!(
                    "#{n}: gate {:?} but check {} {:?}",
                    status.phase, run.status, run.conclusion
                ),
            );
        }
        // Every approval given is counted once, none invented.
        let valid: Vec<&str> = status
            .approvals
            .iter()
            .filter(|a| a.valid)
            .map(|a| a.user.login.as_str())
            .collect();
        let distinct: BTreeSet<&str> = valid.iter().copied().collect();
        check(
            valid.len() == distinct.len(),
            format!("#{n}: an approval counted twice: {valid:?}"),
        );
        let given: BTreeSet<&str> = pull.approvers.iter().map(String::as_str).collect();
        check(
            distinct == given,
            format!("#{n}: approvals {distinct:?}, given {given:?}"),
        );
        let expected = if pull.approved {
            GatePhase::Approved
        } else {
            GatePhase::Pending
        };
        check(
            status.phase == expected,
            format!(
                "#{n} ({:?}): {:?}, expected {expected:?}",
                pull.kind, status.phase
            ),
        );
        // One comment per recorded notice, none repeated.
        let notices: Vec<String> = w
            .github
            .world()
            .comments_on(REPO, n)
            .iter()
            .filter(|c| c.body.contains("countersign-notice"))
            .map(|c| c.body.clone())
            .collect();
        let distinct_notices: BTreeSet<&String> = notices.iter().collect();
        check(
            notices.len() == status.escalations.len() && distinct_notices.len() == notices.len(),
            format!(
                "#{n}: {} notice comments for {} escalations",
                notices.len(),
                status.escalations.len()
            ),
        );
        let reminder_due = status.waiting_since.as_ref().is_some_and(|t| {
            t.0.saturating_add(k8s_openapi::jiff::SignedDuration::from_hours(4))
                .is_ok_and(|due| due <= w.now())
        });
        if pull.kind == Kind::Feature && !pull.approved && reminder_due {
            check(
                status
                    .escalations
                    .iter()
                    .any(|e| e.action == TimeoutAction::Remind),
                format!(
                    "#{n}: a waiting feature past its deadline was not reminded (waiting since \
                     {:?}, deadline {:?}, now {}, phase {:?}, escalations {:?})",
                    status.waiting_since,
                    status.deadline,
                    w.now(),
                    status.phase,
                    status.escalations
                ),
            );
        }
    }
    println!(
        "seed {seed}: {PULLS} pull requests, {} faults injected ({unused} calls left unfailed), \
         {} controller kills, {} bot kills, {} lost deliveries, {checked} invariants checked, \
         {} violations",
        chaos.tally.faults,
        chaos.tally.controller_kills,
        chaos.tally.bot_kills,
        chaos.tally.lost_deliveries,
        violations.len()
    );
    assert!(violations.is_empty(), "seed {seed}: {violations:#?}");
}
