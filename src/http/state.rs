//! The state the HTTP handlers read and the daemon loop writes: metrics,
//! health and the status board behind one cheap-to-clone handle.

use parking_lot::{Mutex, MutexGuard};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::time::Instant;

use super::board::StatusBoard;
use super::health::{Health, Liveness};
use super::status::{EventSourceStatus, StatusDocument};
use crate::clock::{self, WallClock};
use crate::config::Config;
use crate::execute::ActionResult;
use crate::metrics::Metrics;
use crate::observe::ObserveError;
use crate::reconcile::{CycleOutcome, PassReport, Phase};

struct Shared {
    metrics: Arc<Metrics>,
    health: Mutex<Health>,
    board: Mutex<StatusBoard>,
    clock: WallClock,
    events: Mutex<Option<crate::events::runner::EventHub>>,
    targets: Mutex<super::TargetBoard>,
}

/// What the HTTP handlers read and the daemon loop writes. Cheap to clone
/// (one [`Arc`]); every clone is the same state.
#[derive(Clone)]
pub struct State {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock()
}

impl State {
    /// A state for a daemon starting now with `config` (its interval and
    /// mode), reporting into `metrics`. `/status` reads the system clock.
    #[must_use]
    pub fn new(metrics: Arc<Metrics>, config: &Config) -> Self {
        Self::with_clock(metrics, config, clock::system())
    }

    /// Like [`State::new`], with the wall clock `/status` uses for `generated_at`.
    #[must_use]
    pub fn with_clock(metrics: Arc<Metrics>, config: &Config, clock: WallClock) -> Self {
        Self {
            shared: Arc::new(Shared {
                metrics,
                health: Mutex::new(Health::new(config.daemon.interval, Instant::now())),
                board: Mutex::new(StatusBoard::new(config.daemon.mode)),
                clock,
                events: Mutex::new(None),
                targets: Mutex::new(super::TargetBoard::default()),
            }),
        }
    }

    /// The metrics this state reports into.
    #[must_use]
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// A reloaded configuration is in force: takes its interval and mode.
    /// (Count the reload itself with [`Metrics::record_reload`].)
    pub fn apply_config(&self, config: &Config) {
        lock(&self.shared.health).set_interval(config.daemon.interval);
        lock(&self.shared.board).set_mode(config.daemon.mode);
    }

    /// A cycle starts now: call at the top of every cycle (`/healthz`, and
    /// `/status`'s `current_cycle` until [`State::record_pass`]).
    pub fn cycle_started(&self) {
        lock(&self.shared.health).cycle_started(Instant::now());
        let now = (self.shared.clock)();
        lock(&self.shared.board).cycle_started(now);
    }

    /// The cycle under way entered `phase`.
    pub fn pass_phase(&self, phase: Phase) {
        lock(&self.shared.board).pass_phase(phase);
    }

    /// A describe of the cycle under way failed.
    pub fn describe_failed(&self, error: &ObserveError) {
        lock(&self.shared.board).describe_failed(error);
    }

    /// The cycle under way planned `actions` actions.
    pub fn pass_planned(&self, actions: usize) {
        lock(&self.shared.board).pass_planned(actions);
    }

    /// An action of the cycle under way ended as `result`.
    pub fn action_finished(&self, result: &ActionResult) {
        lock(&self.shared.board).action_finished(result);
    }

    /// A pass finished: records its metrics ([`Metrics::record_pass`]),
    /// marks the daemon ready if the snapshot was complete, and updates the
    /// `/status` document. `started_at` is the `now` the pass was given.
    /// Returns the cycle's outcome.
    pub fn record_pass(&self, pass: &PassReport, started_at: SystemTime) -> CycleOutcome {
        let outcome = self.shared.metrics.record_pass(pass, started_at);
        lock(&self.shared.board).update(pass, started_at, outcome);
        let mut health = lock(&self.shared.health);
        health.cycle_finished();
        if pass.snapshot.is_complete() {
            health.mark_ready();
        }
        outcome
    }

    /// Ready (`/readyz`; sd-notify `READY=1`): with one target, after its
    /// first complete snapshot; with several, once every target has
    /// finished its first pass, successful or not (a target that cannot be
    /// reached shows in `targets` and the `target_*` metrics instead of
    /// holding the daemon unready).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        let targets = lock(&self.shared.targets);
        if targets.len() > 1 {
            return targets.all_passed_once();
        }
        drop(targets);
        lock(&self.shared.health).is_ready()
    }

    /// A target's loop starts (`/status` `targets`, the `target_*` metrics).
    pub fn target_started(&self, account: &str, region: &str) {
        lock(&self.shared.targets).started(account, region);
        self.shared.metrics.record_target_started(account);
    }

    /// A pass of the target `account` finished; returns its outcome.
    pub fn target_pass_finished(&self, account: &str, pass: &PassReport, started_at: SystemTime) -> CycleOutcome {
        let outcome = CycleOutcome::of(pass);
        // A removed target's draining loop leaves no series behind.
        if let Some(failures) = lock(&self.shared.targets).finished(account, pass, outcome, started_at) {
            self.shared.metrics.record_target_pass(account, outcome, failures, started_at);
        }
        outcome
    }

    /// A reload removed the target `account`.
    pub fn target_stopped(&self, account: &str) {
        lock(&self.shared.targets).stopped(account);
        self.shared.metrics.record_target_stopped(account);
    }

    /// An observation finished: the first complete one makes the daemon
    /// ready (before its plan is executed, which may take long on a cold
    /// estate).
    pub fn snapshot_observed(&self, complete: bool) {
        if complete {
            lock(&self.shared.health).mark_ready();
        }
    }

    /// Liveness now (`/healthz`).
    #[must_use]
    pub fn liveness(&self) -> Liveness {
        let last_request = self.shared.metrics.last_request_at();
        lock(&self.shared.health).liveness(Instant::now(), last_request)
    }

    /// The `/status` document now.
    #[must_use]
    pub fn status(&self) -> StatusDocument {
        let ready = self.is_ready();
        let now = (self.shared.clock)();
        let mut document = lock(&self.shared.board).document(now, ready);
        document.events = lock(&self.shared.events).as_ref().map(EventSourceStatus::of);
        document.targets = lock(&self.shared.targets).statuses();
        document
    }

    /// Shows the event source of `hub` in `/status` from now on.
    pub fn set_events(&self, hub: crate::events::runner::EventHub) {
        *lock(&self.shared.events) = Some(hub);
    }

    /// `/status` shows no event source from now on (a reload removed `[events]`).
    pub fn clear_events(&self) {
        *lock(&self.shared.events) = None;
    }
}
