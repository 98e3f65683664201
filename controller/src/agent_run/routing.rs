//! Capability routing: a run that names capabilities instead of an Agent goes to one of the
//! namespace's Agents that has them all, chosen when the run is admitted.
//!
//! The rule, in order:
//! 1. Only Agents that are not suspended, not being deleted and not known to be broken
//!    (`Ready=False`, e.g. a missing Secret) and whose `capabilities` include every one asked
//!    for are candidates. None at all: the run is blocked (`NoCapableAgent`).
//! 2. A candidate is free when its running and queued runs are fewer than its
//!    `maxConcurrentRuns`. None free: the run waits in the queue, unrouted, and is looked at
//!    again like every waiting run.
//! 3. Among the free ones the least loaded wins: (running + queued) / `maxConcurrentRuns`.
//! 4. Equal load: the cheapest wins, by its first provider's prices (input + output per
//!    million tokens); an Agent without prices counts as dearer than any with them.
//! 5. Still equal: the name, so the choice is the same on every controller.
//!
//! The choice and why land in `status.routing` and a `Routed` Event, once the run starts.

use std::cmp::Ordering;

use countersign_crds::{Agent, Usd};
use kube::ResourceExt;

/// One Agent a run could go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The Agent's name.
    pub name: String,
    /// Its `maxConcurrentRuns`.
    pub max: u32,
    /// Its first provider's input plus output price per million tokens, when it has both.
    pub price: Option<Usd>,
}

impl Candidate {
    /// The Agent as routing sees it.
    pub fn of(agent: &Agent) -> Self {
        let price = agent.spec.providers.first().and_then(|p| {
            Some(Usd {
                cents: p
                    .input_price_per_million?
                    .cents
                    .saturating_add(p.output_price_per_million?.cents),
            })
        });
        Self {
            name: agent.name_any(),
            max: agent.spec.max_concurrent_runs,
            price,
        }
    }
}

/// The Agents of `agents` a run needing `capabilities` may go to (rule 1), by name.
pub fn candidates<'a>(
    agents: impl IntoIterator<Item = &'a Agent>,
    capabilities: &[String],
) -> Vec<Candidate> {
    let mut found: Vec<Candidate> = agents
        .into_iter()
        .filter(|a| !a.spec.suspend && a.metadata.deletion_timestamp.is_none())
        .filter(|a| !known_broken(a))
        .filter(|a| capabilities.iter().all(|c| a.spec.capabilities.contains(c)))
        .map(Candidate::of)
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// Whether the Agent controller found the Agent unable to run (`Ready=False`).
fn known_broken(agent: &Agent) -> bool {
    agent.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "False")
    })
}

/// A candidate's current runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Runs holding one of its slots (running, planning, or admitted).
    pub running: u32,
    /// Runs routed to it (or naming it) that wait for a slot.
    pub queued: u32,
}

impl Load {
    fn used(self) -> u32 {
        self.running + self.queued
    }
}

/// Where a run given capabilities goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// To this Agent; the reason is for people.
    To {
        /// The chosen Agent.
        agent: String,
        /// Why: each candidate's load and price, and what decided.
        reason: String,
    },
    /// Every candidate is busy: wait in the queue.
    Wait(String),
    /// No Agent of the namespace can do the work.
    NoCandidate(String),
}

/// The longest routing reason kept (the status field's limit).
const MAX_REASON: usize = 1024;

/// Applies rules 2 to 5 to `candidates` (by name) with their `loads` (same order).
pub fn choose(capabilities: &[String], candidates: &[Candidate], loads: &[Load]) -> Route {
    let wanted = capabilities.join(", ");
    if candidates.is_empty() {
        return Route::NoCandidate(format!(
            "no Agent in this namespace that is ready has all of the capabilities {wanted}"
        ));
    }
    let described: Vec<String> = candidates
        .iter()
        .zip(loads)
        .map(|(c, l)| {
            let price = c.price.map_or("no price".to_owned(), |p| {
                format!("${p} per 1M tokens in+out")
            });
            format!(
                "{} {} of {} in use ({} queued), {price}",
                c.name,
                l.used(),
                c.max,
                l.queued
            )
        })
        .collect();
    let free: Vec<(&Candidate, Load)> = candidates
        .iter()
        .zip(loads.iter().copied())
        .filter(|(c, l)| l.used() < c.max)
        .collect();
    let Some(&(best, best_load)) = free.iter().min_by(|a, b| rank(a, b)) else {
        return Route::Wait(cap(format!(
            "waiting for a free Agent with capabilities {wanted}: {}",
            described.join("; ")
        )));
    };
    let why = if free.len() == 1 {
        "the only one with a free slot"
    } else if free
        .iter()
        .filter(|(c, _)| c.name != best.name)
        .all(|(c, l)| by_load((best, best_load), (c, *l)) == Ordering::Less)
    {
        "least loaded"
    } else {
        "least loaded, then cheapest"
    };
    Route::To {
        agent: best.name.clone(),
        reason: cap(format!(
            "capabilities {wanted}: chose {} ({why}); {}",
            best.name,
            described.join("; ")
        )),
    }
}

fn by_load(a: (&Candidate, Load), b: (&Candidate, Load)) -> Ordering {
    // used/max compared without division.
    (u64::from(a.1.used()) * u64::from(b.0.max)).cmp(&(u64::from(b.1.used()) * u64::from(a.0.max)))
}

fn rank(a: &(&Candidate, Load), b: &(&Candidate, Load)) -> Ordering {
    by_load(*a, *b)
        .then_with(|| match (a.0.price, b.0.price) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
        .then_with(|| a.0.name.cmp(&b.0.name))
}

fn cap(text: String) -> String {
    super::decide::truncate(&text, MAX_REASON)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(name: &str, max: u32, price: Option<u64>) -> Candidate {
        Candidate {
            name: name.into(),
            max,
            price: price.map(|cents| Usd { cents }),
        }
    }

    fn load(running: u32, queued: u32) -> Load {
        Load { running, queued }
    }

    fn caps() -> Vec<String> {
        vec!["rust".into()]
    }

    fn chosen(route: &Route) -> &str {
        match route {
            Route::To { agent, .. } => agent,
            other => panic!("expected a choice, got {other:?}"),
        }
    }

    #[test]
    fn the_least_loaded_agent_wins_even_when_dearer() {
        let c = [
            candidate("cheap", 2, Some(400)),
            candidate("dear", 1, Some(4000)),
        ];
        let route = choose(&caps(), &c, &[load(1, 0), load(0, 0)]);
        assert_eq!(chosen(&route), "dear");
        let Route::To { reason, .. } = route else {
            unreachable!()
        };
        assert!(reason.contains("least loaded)"), "{reason}");
        assert!(reason.contains("cheap 1 of 2 in use"), "{reason}");
    }

    #[test]
    fn equal_load_goes_to_the_cheapest_then_by_name() {
        let c = [
            candidate("a-unpriced", 2, None),
            candidate("b-dear", 2, Some(4000)),
            candidate("c-cheap", 4, Some(400)),
        ];
        let route = choose(&caps(), &c, &[load(1, 0), load(0, 1), load(2, 0)]);
        assert_eq!(chosen(&route), "c-cheap");
        let Route::To { reason, .. } = route else {
            unreachable!()
        };
        assert!(reason.contains("least loaded, then cheapest"), "{reason}");
        // Unpriced loses to priced; same price and load falls to the name.
        let c = [candidate("b", 1, Some(5)), candidate("a", 1, Some(5))];
        assert_eq!(chosen(&choose(&caps(), &c, &[load(0, 0), load(0, 0)])), "a");
        let c = [candidate("a", 1, None), candidate("b", 1, Some(9000))];
        assert_eq!(chosen(&choose(&caps(), &c, &[load(0, 0), load(0, 0)])), "b");
    }

    #[test]
    fn queued_runs_count_as_load_and_a_full_house_waits() {
        let c = [candidate("a", 1, Some(1)), candidate("b", 2, Some(9))];
        // a is idle but has one queued: it is full.
        assert_eq!(chosen(&choose(&caps(), &c, &[load(0, 1), load(1, 0)])), "b");
        match choose(&caps(), &c, &[load(1, 0), load(1, 1)]) {
            Route::Wait(why) => {
                assert!(
                    why.contains("waiting for a free Agent with capabilities rust"),
                    "{why}"
                );
                assert!(why.contains("b 2 of 2 in use (1 queued)"), "{why}");
            }
            other => panic!("expected to wait, got {other:?}"),
        }
        assert!(matches!(
            choose(&caps(), &[], &[]),
            Route::NoCandidate(why) if why.contains("capabilities rust")
        ));
    }

    #[test]
    fn candidates_need_every_capability_and_a_runnable_agent() {
        let agent = |name: &str, caps: &[&str], suspend: bool| -> Agent {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "countersign.dev/v1alpha1", "kind": "Agent",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"role": "backend", "capabilities": caps, "suspend": suspend,
                         "providers": [{"name": "p", "kind": "openai", "model": "m",
                                        "inputPricePerMillion": "3", "outputPricePerMillion": "15"}]}
            }))
            .expect("valid agent")
        };
        let mut broken = agent("broken", &["rust", "backend"], false);
        broken.status = Some(serde_json::from_value(serde_json::json!({
            "conditions": [{"type": "Ready", "status": "False", "reason": "AgentNotReady",
                            "message": "Secret missing", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
        })).expect("status"));
        let agents = [
            agent("zeta", &["rust", "backend", "sql"], false),
            agent("alpha", &["backend", "rust"], false),
            agent("rust-only", &["rust"], false),
            agent("paused", &["rust", "backend"], true),
            broken,
        ];
        let found = candidates(&agents, &["rust".into(), "backend".into()]);
        let names: Vec<&str> = found.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["alpha", "zeta"]);
        assert_eq!(found[0].price, Some(Usd { cents: 1800 }));
    }
}
