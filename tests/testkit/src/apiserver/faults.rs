//! Fault injection: seeded random 500/429 answers on non-watch requests (optionally only for
//! some methods and resources), added latency, dropping every open watch, and forcing the next
//! writes of a resource to answer 409 Conflict. Deterministic for a given seed and request order.

use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

#[derive(Debug)]
struct ErrorRate {
    rate: f64,
    rng: StdRng,
    methods: Vec<String>,
    resources: Vec<String>,
}

#[derive(Debug, Default)]
struct FaultState {
    errors: Option<ErrorRate>,
    latency: Duration,
    /// (resource plural or kind, optionally with "/status"; remaining forced conflicts)
    conflicts: Vec<(String, u32)>,
    /// Codes injected errors draw from; empty means [500, 429].
    codes: Vec<u16>,
    /// Send `Retry-After: N` with injected 429s (kube's client then sleeps N seconds).
    retry_after: Option<u32>,
    injected: u64,
}

/// The fault switches of one [`super::FakeApiServer`].
#[derive(Debug)]
pub struct Faults {
    state: Mutex<FaultState>,
    drops: watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            state: Mutex::new(FaultState::default()),
            drops: watch::channel(0).0,
        }
    }
}

fn matches_resource(filter: &[String], plural: &str, kind: &str) -> bool {
    filter.is_empty()
        || filter
            .iter()
            .any(|f| f.eq_ignore_ascii_case(plural) || f.eq_ignore_ascii_case(kind))
}

impl Faults {
    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().expect("faults mutex poisoned")
    }

    /// Fails a fraction `rate` (0.0..=1.0) of non-watch requests with 500 or 429, drawn from a
    /// generator seeded with `seed`.
    pub fn set_error_rate(&self, rate: f64, seed: u64) {
        self.set_error_rate_for(rate, seed, &[], &[]);
    }

    /// Like [`Faults::set_error_rate`], only for the given HTTP methods (e.g. `"PATCH"`) and
    /// resources (plural or kind, e.g. `"agentruns"` or `"AgentRun"`); empty means all.
    pub fn set_error_rate_for(&self, rate: f64, seed: u64, methods: &[&str], resources: &[&str]) {
        self.lock().errors = Some(ErrorRate {
            rate,
            rng: StdRng::seed_from_u64(seed),
            methods: methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
            resources: resources.iter().map(|r| r.to_string()).collect(),
        });
    }

    pub fn clear_error_rate(&self) {
        self.lock().errors = None;
    }

    /// Adds `latency` before every request is answered.
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Ends every open watch stream now; clients see the stream close and re-watch.
    pub fn drop_watches(&self) {
        self.drops.send_modify(|n| *n += 1);
    }

    /// The next `n` writes (PUT, PATCH) of `resource` answer 409 Conflict. `resource` is a
    /// plural or kind (`"widgets"`, `"Widget"`: main resource and /status) or
    /// `"widgets/status"` (status writes only).
    pub fn force_conflicts(&self, resource: &str, n: u32) {
        self.lock().conflicts.push((resource.to_string(), n));
    }

    /// Which HTTP codes injected errors use, drawn uniformly (default 500 and 429). kube's
    /// client retries 429 (and 503/504) by itself, so `[500]` gives errors callers see.
    pub fn set_error_codes(&self, codes: &[u16]) {
        self.lock().codes = codes.to_vec();
    }

    /// Adds `Retry-After: secs` to injected 429s, as the real server does. Off by default
    /// because kube's client honours it by sleeping, which slows tests down.
    pub fn set_retry_after(&self, secs: Option<u32>) {
        self.lock().retry_after = secs;
    }

    /// How many faults (errors and conflicts) were injected so far.
    pub fn injected(&self) -> u64 {
        self.lock().injected
    }

    /// Turns every fault off.
    pub fn reset(&self) {
        let mut s = self.lock();
        s.errors = None;
        s.latency = Duration::ZERO;
        s.conflicts.clear();
        s.codes.clear();
        s.retry_after = None;
    }

    pub(crate) fn retry_after(&self) -> Option<u32> {
        self.lock().retry_after
    }

    pub(crate) fn latency(&self) -> Duration {
        self.lock().latency
    }

    pub(crate) fn drop_receiver(&self) -> watch::Receiver<u64> {
        self.drops.subscribe()
    }

    /// Draws whether this request fails, and with which code.
    pub(crate) fn draw_error(&self, method: &str, plural: &str, kind: &str) -> Option<u16> {
        let mut s = self.lock();
        let e = s.errors.as_mut()?;
        if !(e.methods.is_empty() || e.methods.iter().any(|m| m == method))
            || !matches_resource(&e.resources, plural, kind)
        {
            return None;
        }
        let fail = e.rng.random_bool(e.rate.clamp(0.0, 1.0));
        let codes = if s.codes.is_empty() {
            vec![500, 429]
        } else {
            s.codes.clone()
        };
        let e = s.errors.as_mut()?;
        let code = codes[e.rng.random_range(0..codes.len())];
        if fail {
            s.injected += 1;
            Some(code)
        } else {
            None
        }
    }

    /// Consumes one forced conflict for this resource, if any is pending.
    pub(crate) fn take_conflict(&self, plural: &str, kind: &str, status: bool) -> bool {
        let mut s = self.lock();
        let hit = s.conflicts.iter_mut().find(|(r, n)| {
            let (res, status_only) = match r.strip_suffix("/status") {
                Some(res) => (res, true),
                None => (r.as_str(), false),
            };
            *n > 0 && (status || !status_only) && matches_resource(&[res.to_string()], plural, kind)
        });
        match hit {
            Some((_, n)) => {
                *n -= 1;
                s.injected += 1;
                true
            }
            None => false,
        }
    }
}
