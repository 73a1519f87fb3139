//! Liveness (`/healthz`) and readiness (`/readyz`) as the daemon loop
//! reports them: pure, on tokio instants so paused-time tests control them.

use std::time::Duration;

use tokio::time::Instant;

/// `/healthz` fails once no cycle started for this many intervals.
pub const LIVENESS_INTERVALS: u32 = 3;

/// Liveness and readiness, as the daemon loop reports them. Times are tokio
/// instants, so paused-time tests control them.
#[derive(Clone, Debug)]
pub struct Health {
    created: Instant,
    interval: Duration,
    last_cycle_started: Option<Instant>,
    in_pass: bool,
    ready: bool,
}

/// The answer of [`Health::liveness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// True while a cycle started within [`LIVENESS_INTERVALS`] intervals
    /// (before the first cycle: while the daemon started that recently), or
    /// while a pass is under way and an EC2 request of it ended within that
    /// limit (a long pass making requests is alive).
    pub alive: bool,
    /// Time since the last cycle started (or since start, before the first).
    pub silent_for: Duration,
    /// The limit `silent_for` is held to.
    pub limit: Duration,
    /// Whether any cycle has started yet.
    pub started_any: bool,
    /// While a pass is under way: the time since its last EC2 request ended
    /// (or since it started, before its first).
    pub pass_quiet_for: Option<Duration>,
}

impl Health {
    /// A daemon that started at `now` and runs a cycle every `interval`.
    #[must_use]
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self { created: now, interval, last_cycle_started: None, in_pass: false, ready: false }
    }

    /// The interval changed (configuration reload).
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// A cycle started at `now`; it is under way until [`Health::cycle_finished`].
    pub fn cycle_started(&mut self, now: Instant) {
        self.last_cycle_started = Some(now);
        self.in_pass = true;
    }

    /// The cycle under way finished.
    pub fn cycle_finished(&mut self) {
        self.in_pass = false;
    }

    /// The first complete snapshot was seen; readiness never goes back.
    pub fn mark_ready(&mut self) {
        self.ready = true;
    }

    /// True after the first complete snapshot.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.ready
    }

    /// Whether the loop is alive at `now`, the last EC2 request having
    /// ended at `last_request`.
    #[must_use]
    pub fn liveness(&self, now: Instant, last_request: Option<Instant>) -> Liveness {
        let since = self.last_cycle_started.unwrap_or(self.created);
        let silent_for = now.saturating_duration_since(since);
        let limit = self.interval.saturating_mul(LIVENESS_INTERVALS);
        let pass_quiet_for = self.in_pass.then(|| {
            let active = last_request.map_or(since, |at| at.max(since));
            now.saturating_duration_since(active)
        });
        Liveness {
            alive: silent_for <= limit || pass_quiet_for.is_some_and(|quiet| quiet <= limit),
            silent_for,
            limit,
            started_any: self.last_cycle_started.is_some(),
            pass_quiet_for,
        }
    }
}
