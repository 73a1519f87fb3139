//! The daemon (`run`): the loop that calls observe → plan → execute every
//! `interval`, keeps the planner's `Memory` between passes, reloads the
//! mapping file, and shuts down cleanly.
//!
//! - Full passes never overlap: the next one starts `interval` (±10% jitter)
//!   after the previous one *started*, or at once if that one overran — a
//!   slow pass delays the next rather than stacking. With events, targeted
//!   passes run between them, and also *beside* a full pass while it only
//!   observes; executions never overlap (docs/semantics.md, "Events and
//!   targeted passes").
//! - One [`CancellationToken`] stops everything: on the first shutdown event
//!   no new pass or action starts, an observation under way stops at once
//!   (nothing was started, so nothing waits), in-flight actions get
//!   `drain_grace` to finish, and `run` returns. (A second signal is
//!   `main`'s business: it exits at once.)
//! - Reload (SIGHUP, or the file changed): a valid file takes effect at the
//!   next pass, and what changed is logged; anything else — the file invalid,
//!   deleted, a directory, unreadable, not UTF-8 — is rejected, logged and
//!   counted once per change the watcher sees, and the old configuration
//!   keeps running. A change of `[events]` restarts the event reader. A
//!   file made good again is reloaded without a signal.
//!   Nothing built from a validated configuration can panic (every numeric
//!   key is bounded), so a reload never takes the process down.
//! - The planner's memory is loaded from the state file (`daemon.state_dir`)
//!   at start and written back after each pass that changed it; a state
//!   file that cannot be read means a conservative start, one that cannot
//!   be written a warning: neither stops the daemon ([`crate::state`]).
//! - Everything observable goes through [`PassObserver`] (metrics, `/status`,
//!   health, sd-notify), so the loop itself stays testable with the in-process
//!   emulator and paused time.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::WallClock;
use crate::config::{self, Config, ConfigLoadError, render_errors};
use crate::ec2::Ec2;
use crate::events::EventSource;
use crate::events::dirty::{Batch, Dirty};
use crate::events::parse::Expected;
use crate::events::runner::{EventHub, read_events};
use crate::events::targeted::observe_targeted;
use crate::execute::ActionResult;
use crate::execute::ExecuteOptions;
use crate::http;
use crate::metrics::Metrics;
pub use crate::metrics::ReloadOutcome;
use crate::model::Snapshot;
use crate::observe::ObserveError;
use crate::plan::Memory;
use crate::reconcile::{PassReport, Phase, Progress, execute_options, observe_cancellable, plan_and_execute};
use crate::state::{StateError, StateFile, conservative_start};

/// What the daemon is told from outside (signals, tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Re-read the mapping file (SIGHUP).
    Reload,
    /// Stop (SIGTERM, SIGINT).
    Shutdown,
}

/// Receives what the loop does. Metrics, `/status`, health and sd-notify
/// implement it; every method has a no-op default.
pub trait PassObserver: Send + Sync {
    /// A pass is starting.
    fn pass_started(&self, _config: &Config) {}
    /// The pass entered `phase`.
    fn phase(&self, _phase: Phase) {}
    /// A describe of the pass failed (before its observation ends).
    fn describe_failed(&self, _error: &ObserveError) {}
    /// The pass's observation ended (before planning and execution).
    fn snapshot_observed(&self, _snapshot: &crate::model::Snapshot) {}
    /// The pass planned `actions` actions.
    fn planned(&self, _actions: usize) {}
    /// An action of the pass ended as `result`.
    fn action_finished(&self, _result: &ActionResult) {}
    /// A pass finished; `started_at` is the `now` the planner was given.
    fn pass_finished(&self, _pass: &PassReport, _config: &Config, _started_at: SystemTime) {}
    /// A reload was attempted; `config` is the configuration in force after it.
    fn reloaded(&self, _outcome: ReloadOutcome, _config: &Config) {}
    /// The state file could not be loaded (at start) or saved (after a pass).
    fn state_file_failed(&self, _error: &StateError) {}
    /// The daemon is stopping.
    fn stopping(&self) {}
    /// `/metrics` and friends are served on `address`.
    fn serving(&self, _address: std::net::SocketAddr) {}
    /// An event source is configured; `hub` holds its counts and health.
    fn events_enabled(&self, _hub: &EventHub) {}
    /// A reload removed `[events]`: periodic passes only.
    fn events_disabled(&self) {}
    /// A reload configured events again after [`Self::events_disabled`] or
    /// changed them: `hub` is the one [`Self::events_enabled`] was given.
    fn events_reenabled(&self, _hub: &EventHub) {}
    /// With events on, a pass finished (after [`Self::pass_finished`]):
    /// `Some(event_times)` for a targeted pass (its events' own times),
    /// `None` for a full one; `started_at` is the pass's `now`.
    fn events_pass_finished(&self, _event_times: Option<&[SystemTime]>, _started_at: SystemTime) {}
}

/// A pass's [`Progress`], told to a [`PassObserver`].
struct Observed<'a>(&'a dyn PassObserver);

impl Progress for Observed<'_> {
    fn phase(&self, phase: Phase) {
        self.0.phase(phase);
    }
    fn describe_failed(&self, error: &ObserveError) {
        self.0.describe_failed(error);
    }
    fn observed(&self, snapshot: &crate::model::Snapshot) {
        self.0.snapshot_observed(snapshot);
    }
    fn planned(&self, actions: usize) {
        self.0.planned(actions);
    }
    fn action_finished(&self, result: &ActionResult) {
        self.0.action_finished(result);
    }
}

/// Builds the EC2 client for a configuration (again after a reload that
/// changed `[aws]` or `[rate_limit]`).
#[async_trait]
pub trait Connector: Send + Sync {
    /// A client for `config`.
    async fn connect(&self, config: &Config) -> Arc<dyn Ec2>;

    /// The event source of `config`'s `[events]`, if any (default: none,
    /// periodic passes only).
    async fn event_source(&self, _config: &Config) -> Option<Arc<dyn EventSource>> {
        None
    }
}

/// Errors that stop the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The mapping file could not be loaded at start.
    #[error(transparent)]
    Config(#[from] ConfigLoadError),
}

impl DaemonError {
    /// Stable label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(e) => e.kind(),
        }
    }
}

/// Daemon settings that are not in the mapping file.
#[derive(Clone)]
pub struct Settings {
    /// The mapping file.
    pub config_path: PathBuf,
    /// `AWS_REGION`, used when the file has no region.
    pub env_region: Option<String>,
    /// How long in-flight actions may take to finish after a shutdown.
    pub drain_grace: Duration,
    /// How often to look for a changed mapping file.
    pub watch_every: Duration,
    /// Where `now` comes from.
    pub wall_clock: WallClock,
}

impl Settings {
    /// Defaults: 20 s drain grace (well inside systemd's stop timeout), the
    /// file checked every 5 s.
    #[must_use]
    pub fn new(config_path: PathBuf, env_region: Option<String>) -> Self {
        Self {
            config_path,
            env_region,
            drain_grace: Duration::from_secs(20),
            watch_every: Duration::from_secs(5),
            wall_clock: crate::clock::system(),
        }
    }
}

/// `interval` ±10%, so that many daemons never beat in step: the time from
/// one pass's start to the next. Total: with `daemon.interval` bounded (at
/// most a day), the result is too, so adding it to an `Instant` cannot
/// overflow; an interval no `Duration` can hold ±10% is returned as is.
#[must_use]
pub fn jittered(interval: Duration) -> Duration {
    Duration::try_from_secs_f64(interval.as_secs_f64() * rand::random_range(0.9..=1.1)).unwrap_or(interval)
}

/// Mirror pairs named by a config, for "what changed" on reload.
fn mapping_keys(config: &Config) -> BTreeSet<String> {
    config.mirrors.iter().map(|m| format!("{} -> {}", m.source, m.vpc)).collect()
}

/// The running daemon's state between passes.
struct Loop<'a> {
    settings: &'a Settings,
    connector: &'a dyn Connector,
    observer: &'a dyn PassObserver,
    config: Config,
    /// What the file held when last read (by a reload or the watcher's
    /// check that led to one); the watcher reloads when it changes.
    seen: FileState,
    ec2: Arc<dyn Ec2>,
    memory: Memory,
    /// Where `memory` is kept across restarts.
    state_file: StateFile,
    /// The last save failed (logged once until one succeeds again).
    state_file_failing: bool,
    /// A reload changed `[events]`: the event reader restarts before the next pass.
    events_changed: bool,
}

/// The event reader task of the configuration in force, stopped when
/// replaced (a reload that changed `[events]`) or dropped.
#[derive(Default)]
struct EventReader {
    cancel: Option<CancellationToken>,
    /// The hub has been shown to the observer (metrics registered once).
    announced: bool,
}

impl EventReader {
    /// Stops the running reader, if any, and starts one for `config`'s
    /// `[events]`, if any. Pending hints are dropped (the next full pass
    /// answers them). True when events are on.
    async fn start(
        &mut self,
        connector: &dyn Connector,
        config: &Config,
        hub: &EventHub,
        observer: &dyn PassObserver,
        settings: &Settings,
    ) -> bool {
        let restart = self.cancel.is_some() || self.announced;
        if let Some(cancel) = self.cancel.take() {
            cancel.cancel();
        }
        hub.full_pass_started();
        hub.source_restarted();
        let Some(source) = connector.event_source(config).await else {
            if restart {
                info!("events off: periodic passes only");
                observer.events_disabled();
            }
            return false;
        };
        if self.announced {
            observer.events_reenabled(hub);
        } else {
            observer.events_enabled(hub);
            self.announced = true;
        }
        let cancel = CancellationToken::new();
        tokio::spawn(read_events(source, hub.clone(), Arc::clone(&settings.wall_clock), cancel.clone()));
        self.cancel = Some(cancel);
        true
    }
}

impl Drop for EventReader {
    fn drop(&mut self) {
        if let Some(cancel) = &self.cancel {
            cancel.cancel();
        }
    }
}

/// The mapping file as the watcher sees it: a hash of its bytes, or why it
/// could not be read. Every change between two of these is one reload
/// attempt, so a broken file is reported once, not at every check, and a
/// file made good again is reloaded without a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileState {
    /// Read: the hash of its bytes (UTF-8 or not).
    Content(u64),
    /// Not read: missing, a directory, no permission, too large, ...
    Unreadable(std::io::ErrorKind),
}

impl FileState {
    fn of(read: &Result<Vec<u8>, ConfigLoadError>) -> Self {
        match read {
            Ok(bytes) => {
                // SipHash with fixed keys: the same bytes hash alike across checks.
                let mut hasher = std::hash::DefaultHasher::new();
                std::hash::Hasher::write(&mut hasher, bytes);
                Self::Content(std::hash::Hasher::finish(&hasher))
            }
            Err(ConfigLoadError::Read { source, .. }) => Self::Unreadable(source.kind()),
            Err(ConfigLoadError::Invalid { .. }) => Self::Unreadable(std::io::ErrorKind::InvalidData),
        }
    }

    fn now(path: &Path) -> Self {
        Self::of(&config::read_bytes(path))
    }
}

impl Loop<'_> {
    /// Re-reads the file; applies it when valid. Anything else — the file
    /// missing, a directory, unreadable, not UTF-8, invalid — is logged,
    /// counted as a rejected reload, and the current configuration keeps
    /// running.
    async fn reload(&mut self, why: &str) {
        let path = &self.settings.config_path;
        let read = config::read_bytes(path);
        self.seen = FileState::of(&read);
        let text = match read.and_then(|bytes| config::text_of(path, bytes)) {
            Ok(text) => text,
            Err(e) => {
                error!(path = %path.display(), error = %e, trigger = why,
                    "cannot read the mapping file; the current configuration keeps running");
                self.observer.reloaded(ReloadOutcome::Rejected, &self.config);
                return;
            }
        };
        match Config::from_toml_str(&text, self.settings.env_region.as_deref()) {
            Ok(config) => {
                let (before, after) = (mapping_keys(&self.config), mapping_keys(&config));
                let added: Vec<&String> = after.difference(&before).collect();
                let removed: Vec<&String> = before.difference(&after).collect();
                // Accounts: a client per account the mirrors reach, and the
                // sources each source account's client describes.
                let accounts_changed = config.accounts != self.config.accounts
                    || ((config.uses_accounts() || self.config.uses_accounts())
                        && config.mirrors != self.config.mirrors);
                if config.aws != self.config.aws || config.rate_limit != self.config.rate_limit || accounts_changed {
                    self.ec2 = self.connector.connect(&config).await;
                }
                if config.daemon.listen != self.config.daemon.listen {
                    warn!(listen = %config.daemon.listen, "daemon.listen changed: it takes effect after a restart");
                }
                if config.daemon.state_dir != self.config.daemon.state_dir {
                    warn!(state_dir = %config.daemon.state_dir.display(),
                        "daemon.state_dir changed: it takes effect after a restart");
                }
                if config.events != self.config.events {
                    info!(queue_url = ?config.events.queue_url, "[events] changed: the event reader restarts");
                    self.events_changed = true;
                }
                info!(trigger = why, added = ?added, removed = ?removed, "mapping file reloaded; in force from the next pass");
                self.config = config;
                self.observer.reloaded(ReloadOutcome::Applied, &self.config);
            }
            Err(errors) => {
                error!(trigger = why, errors = %render_errors(&errors).trim_end(),
                    "the new mapping file is invalid and was rejected; the current configuration keeps running");
                self.observer.reloaded(ReloadOutcome::Rejected, &self.config);
            }
        }
    }

    /// Whether the file differs from what the last reload (or the start)
    /// read: other bytes, or now (un)readable, or unreadable for another
    /// reason. A file replaced by a rename is read through its path, so it
    /// counts like an edit in place.
    fn file_changed(&self) -> bool {
        FileState::now(&self.settings.config_path) != self.seen
    }

    /// Writes the memory back to the state file if the pass changed it.
    fn save_state(&mut self) {
        match self.state_file.save(&self.memory) {
            Ok(_) if self.state_file_failing => {
                self.state_file_failing = false;
                info!(path = %self.state_file.path().display(), "the state file is written again");
            }
            Ok(_) => {}
            Err(error) => {
                if self.state_file_failing {
                    debug!(error = %error, "the state file still cannot be written");
                } else {
                    warn!(error = %error, kind = error.kind(),
                        "the state file cannot be written: a restart would forget the shrink guard's baseline \
                         and the deletion backoffs; the daemon keeps running");
                }
                self.state_file_failing = true;
                self.observer.state_file_failed(&error);
            }
        }
    }
}

/// The memory to start from: the state file's, nothing on a first start, or
/// a conservative start when the file cannot be used.
fn load_state(state_file: &mut StateFile, observer: &dyn PassObserver, now: SystemTime) -> Memory {
    let path = state_file.path();
    match state_file.load() {
        Ok(Some(memory)) => {
            info!(path = %path.display(), "state file loaded");
            memory
        }
        Ok(None) => {
            info!(path = %path.display(), "no state file: a first start");
            Memory::default()
        }
        Err(error) => {
            warn!(error = %error, kind = error.kind(),
                "the state file cannot be used: starting conservatively, destructive actions held for one \
                 orphan_grace while the shrink guard takes a new baseline");
            observer.state_file_failed(&error);
            conservative_start(now)
        }
    }
}

/// Runs the daemon until an [`Event::Shutdown`] arrives (or `events` closes).
///
/// # Errors
/// [`DaemonError::Config`] when the mapping file cannot be loaded at start;
/// after that, nothing stops the loop but a shutdown.
pub async fn run(
    settings: &Settings,
    connector: &dyn Connector,
    observer: &dyn PassObserver,
    events: mpsc::Receiver<Event>,
) -> Result<(), DaemonError> {
    let (config, config_text) = load(settings)?;
    run_loaded(settings, config, config_text, connector, observer, events).await;
    Ok(())
}

/// Reads and validates the mapping file once, keeping its text (the
/// watcher compares it to notice changes).
fn load(settings: &Settings) -> Result<(Config, String), ConfigLoadError> {
    let path = &settings.config_path;
    let text = config::read_bytes(path).and_then(|bytes| config::text_of(path, bytes))?;
    let config = Config::from_toml_str(&text, settings.env_region.as_deref())
        .map_err(|errors| ConfigLoadError::Invalid { path: settings.config_path.clone(), errors })?;
    Ok((config, text))
}

/// The loop, from a configuration already loaded from `config_text`.
async fn run_loaded(
    settings: &Settings,
    config: Config,
    config_text: String,
    connector: &dyn Connector,
    observer: &dyn PassObserver,
    mut events: mpsc::Receiver<Event>,
) {
    let ec2 = connector.connect(&config).await;
    // Events (docs/architecture.md, "Events"): a reader task feeds the hub;
    // the loop runs a targeted pass when its debounce is due.
    let hub = EventHub::new(Expected { account: None, region: config.aws.region.clone() });
    let mut reader = EventReader::default();
    let mut events_on = reader.start(connector, &config, &hub, observer, settings).await;
    let seen = FileState::of(&Ok(config_text.into_bytes()));
    let mut state_file = StateFile::new(config.daemon.state_dir.clone());
    let memory = load_state(&mut state_file, observer, (settings.wall_clock)());
    let mut state = Loop {
        settings,
        connector,
        observer,
        config,
        seen,
        ec2,
        memory,
        state_file,
        state_file_failing: false,
        events_changed: false,
    };
    info!(path = %settings.config_path.display(), mappings = state.config.mirrors.len(), events = events_on,
        interval = %humantime::format_duration(state.config.daemon.interval), "daemon started");
    // The last complete snapshot, which a targeted pass merges into.
    let mut base: Option<Arc<crate::model::Snapshot>> = None;

    let cancel = CancellationToken::new();
    let mut watch = tokio::time::interval(settings.watch_every);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_start = Instant::now();
    let mut reload_pending = false;

    'daemon: loop {
        // Wait for the next pass, reloading on the way when asked; a
        // targeted pass when events are due before it.
        let mut targeted = None;
        loop {
            if reload_pending {
                reload_pending = false;
                state.reload("signal").await;
            }
            if std::mem::take(&mut state.events_changed) {
                events_on = reader.start(connector, &state.config, &hub, observer, settings).await;
                events_restarted(events_on, &mut base, &mut next_start);
            }
            let due = if events_on && base.is_some() { hub.due_at() } else { None };
            tokio::select! {
                () = tokio::time::sleep_until(next_start) => break,
                () = sleep_until_some(due) => {
                    let batch = hub.take();
                    if !batch.dirty.everything {
                        targeted = Some(batch);
                    }
                    break;
                }
                () = hub.changed(), if events_on => {}
                event = events.recv() => match event {
                    Some(Event::Reload) => reload_pending = true,
                    Some(Event::Shutdown) | None => break 'daemon,
                },
                _ = watch.tick() => {
                    if state.file_changed() {
                        state.reload("file changed").await;
                        if std::mem::take(&mut state.events_changed) {
                            events_on = reader.start(connector, &state.config, &hub, observer, settings).await;
                            events_restarted(events_on, &mut base, &mut next_start);
                        }
                    }
                }
            }
        }

        let started = Instant::now();
        let started_at = (settings.wall_clock)();
        let config = state.config.clone();
        let ec2 = Arc::clone(&state.ec2);
        // A targeted pass merges into the last complete snapshot; without
        // one (or with a hint that ids cannot narrow down) the pass is full.
        let (main_batch, main_base) = match (targeted, base.clone()) {
            (Some(batch), Some(base)) => (Some(batch), Some(base)),
            _ => (None, None),
        };
        let full = main_batch.is_none();
        if full {
            hub.full_pass_started();
        }
        observer.pass_started(&config);
        let mut stopping = false;
        let mut drain_deadline: Option<Instant> = None;

        // 1. Observe. While a *full* observation runs (seconds on a large
        //    estate), events do not wait for it: targeted passes run to
        //    completion beside it, one at a time, and what they looked at
        //    and wrote is described again before the full pass plans
        //    (docs/semantics.md, "Targeted passes beside a full pass").
        // The full observation runs as a task of its own: decoding its
        // pages keeps a thread busy for seconds on a large estate, and the
        // targeted passes beside it must not wait for a page to be decoded.
        let (failures, mut failed) = mpsc::unbounded_channel();
        let full_observation = full.then(|| {
            observer.phase(Phase::Observing);
            let (ec2, config, cancel) = (Arc::clone(&ec2), config.clone(), cancel.clone());
            tokio::spawn(async move {
                observe_cancellable(ec2.as_ref(), &config, &cancel, &ForwardFailures(failures)).await
            })
        });
        let observe = async {
            let progress = Observed(observer);
            match (&main_batch, &main_base, full_observation) {
                (Some(batch), Some(base), _) => {
                    progress.phase(Phase::Observing);
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => None,
                        observation = observe_targeted(ec2.as_ref(), &config, base, &batch.dirty) => Some(observation),
                    }
                }
                (_, _, Some(task)) => task.await.unwrap_or_else(|error| {
                    error!(error = %error, "the observation task failed: this pass plans nothing");
                    None
                }),
                _ => None,
            }
        };
        tokio::pin!(observe);
        let mut observed: Option<Option<crate::observe::Observation>> = None;
        let mut beside: Option<Pin<Box<dyn Future<Output = Beside> + Send + '_>>> = None;
        // What the targeted passes beside this observation looked at and wrote.
        let mut refresh = Dirty::default();
        // A hint that ids cannot narrow down arrived during the observation.
        let mut full_again = false;
        while observed.is_none() || beside.is_some() {
            // Beside a full pass only while the batch is small: after a pass
            // that wrote much (a first start), describing all it wrote costs
            // about what the full pass does, which answers it anyway.
            let small = hub.stale_len() <= BESIDE_MAX_STALE;
            let due = if full && observed.is_none() && beside.is_none() && !stopping && base.is_some() && small {
                hub.due_at()
            } else {
                None
            };
            tokio::select! {
                result = &mut observe, if observed.is_none() => {
                    while let Ok(error) = failed.try_recv() {
                        observer.describe_failed(&error);
                    }
                    observed = Some(result);
                }
                Some(error) = failed.recv(), if observed.is_none() => observer.describe_failed(&error),
                done = async {
                    match beside.as_mut() {
                        Some(pass) => pass.await,
                        None => std::future::pending().await,
                    }
                }, if beside.is_some() => {
                    beside = None;
                    refresh.extend(done.batch.dirty.clone());
                    refresh.extend(crate::events::dirty::touched(&done.report.plan));
                    finish_pass(&mut state, &hub, &mut base, events_on, done.report, done.memory,
                        Some(&done.batch), done.started_at);
                    if observed.is_none() {
                        // `/status` shows the full pass under way again.
                        observer.pass_started(&config);
                        observer.phase(Phase::Observing);
                    }
                }
                () = sleep_until_some(due) => {
                    let batch = hub.take();
                    if batch.dirty.everything {
                        full_again = true;
                    } else if let Some(base) = base.clone() {
                        let memory = std::mem::take(&mut state.memory);
                        let now = (settings.wall_clock)();
                        beside = Some(Box::pin(targeted_pass(
                            Arc::clone(&ec2), config.clone(), base, batch, memory, now, cancel.clone(), observer,
                        )));
                    }
                }
                () = hub.changed(), if events_on && due.is_none() && full && observed.is_none() => {}
                event = events.recv(), if !stopping => on_event(
                    event, settings.drain_grace, &cancel, &mut reload_pending, &mut stopping, &mut drain_deadline,
                ),
                () = sleep_until_some(drain_deadline) => {
                    warn!("in-flight actions did not finish within the drain grace; stopping anyway");
                    break 'daemon;
                }
            }
        }

        // 2. Plan with the whole picture and execute, strictly after every
        //    targeted pass beside the observation has finished.
        // A random starting point in the plan: two daemons on one estate
        // then work on different actions instead of racing for the same ones.
        let options = ExecuteOptions { rotation: rand::random_range(0..usize::MAX), ..execute_options(&config) };
        let mut memory = std::mem::take(&mut state.memory);
        if let Some(batch) = &main_batch {
            memory.event_principals.clone_from(&batch.principals);
        }
        let observed = observed.flatten();
        let pass = async {
            let progress = Observed(observer);
            let Some(mut observation) = observed else {
                return (crate::reconcile::interrupted(started, &memory), memory);
            };
            if refresh.everything {
                // A targeted pass enabled ClassicLink on a VPC: look at everything again.
                match observe_cancellable(ec2.as_ref(), &config, &cancel, &progress).await {
                    Some(again) => observation = again,
                    None => return (crate::reconcile::interrupted(started, &memory), memory),
                }
            } else if !refresh.is_empty() {
                let refreshed = observe_targeted(ec2.as_ref(), &config, &observation.snapshot, &refresh).await;
                let mut errors = observation.errors;
                errors.extend(refreshed.errors);
                observation = crate::observe::Observation { snapshot: refreshed.snapshot, errors };
            }
            progress.observed(&observation.snapshot);
            let report = plan_and_execute(
                ec2.as_ref(),
                &config,
                observation,
                started,
                &mut memory,
                started_at,
                &options,
                &cancel,
                &progress,
            )
            .await;
            (report, memory)
        };
        tokio::pin!(pass);
        let finished = loop {
            tokio::select! {
                finished = &mut pass => break Some(finished),
                event = events.recv(), if !stopping => on_event(
                    event, settings.drain_grace, &cancel, &mut reload_pending, &mut stopping, &mut drain_deadline,
                ),
                () = sleep_until_some(drain_deadline) => {
                    warn!("in-flight actions did not finish within the drain grace; stopping anyway");
                    break None;
                }
            }
        };
        let Some((report, memory)) = finished else { break 'daemon };
        finish_pass(&mut state, &hub, &mut base, events_on, report, memory, main_batch.as_ref(), started_at);
        if stopping {
            break 'daemon;
        }
        if full {
            next_start = if full_again { Instant::now() } else { started + jittered(state.config.daemon.interval) };
        }
    }
    observer.stopping();
    info!("daemon stopped");
}

/// After the event reader restarted: with events off, the last snapshot is
/// not kept (it serves targeted passes only); with events on and none kept
/// (they were off), a full pass starts now to take one — targeted passes
/// merge into it — and to answer what no event reported meanwhile.
fn events_restarted(events_on: bool, base: &mut Option<Arc<Snapshot>>, next_start: &mut Instant) {
    if !events_on {
        *base = None;
    } else if base.is_none() {
        *next_start = Instant::now();
    }
}

/// Sleeps until `due`, or forever when there is none.
/// A signal's event, in either wait of the loop: a reload is noted for
/// the next pass; a shutdown (or the senders gone) stops new actions and
/// starts the drain grace.
fn on_event(
    event: Option<Event>,
    drain_grace: Duration,
    cancel: &CancellationToken,
    reload_pending: &mut bool,
    stopping: &mut bool,
    drain_deadline: &mut Option<Instant>,
) {
    match event {
        Some(Event::Reload) => *reload_pending = true,
        Some(Event::Shutdown) | None => {
            info!(grace = %humantime::format_duration(drain_grace),
                "shutting down: no new actions; waiting for the ones in flight");
            *stopping = true;
            *drain_deadline = Some(Instant::now() + drain_grace);
            cancel.cancel();
        }
    }
}

async fn sleep_until_some(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// The most stale ids (the last passes' writes) a targeted pass beside a
/// full pass describes: 5 describes of each kind at 200 ids a filter.
const BESIDE_MAX_STALE: usize = 1_000;

/// Hands a spawned observation's failed describes to the loop, which tells
/// the [`PassObserver`] (`/status` shows them while the pass runs).
struct ForwardFailures(mpsc::UnboundedSender<ObserveError>);

impl Progress for ForwardFailures {
    fn describe_failed(&self, error: &ObserveError) {
        let _ = self.0.send(error.clone());
    }
}

/// A targeted pass that ran beside a full pass's observation.
struct Beside {
    report: PassReport,
    memory: Memory,
    batch: Batch,
    started_at: SystemTime,
}

/// One targeted pass, owning what it needs so that it can run beside a full
/// pass's observation: describe what `batch` names, merge it into `base`,
/// plan with the whole picture and execute.
#[allow(clippy::too_many_arguments)] // the pass's inputs, each needed
async fn targeted_pass(
    ec2: Arc<dyn Ec2>,
    config: Config,
    base: Arc<Snapshot>,
    batch: Batch,
    mut memory: Memory,
    started_at: SystemTime,
    cancel: CancellationToken,
    observer: &dyn PassObserver,
) -> Beside {
    let started = Instant::now();
    memory.event_principals.clone_from(&batch.principals);
    observer.pass_started(&config);
    let progress = Observed(observer);
    progress.phase(Phase::Observing);
    let observation = observe_targeted(ec2.as_ref(), &config, &base, &batch.dirty).await;
    progress.observed(&observation.snapshot);
    let options = ExecuteOptions { rotation: rand::random_range(0..usize::MAX), ..execute_options(&config) };
    let report = plan_and_execute(
        ec2.as_ref(),
        &config,
        observation,
        started,
        &mut memory,
        started_at,
        &options,
        &cancel,
        &progress,
    )
    .await;
    Beside { report, memory, batch, started_at }
}

/// After any pass: keeps its memory (and saves it), reports it, and with
/// events on hands the hub what the pass wrote and keeps its snapshot, when
/// complete, as the base of the next targeted pass. `batch` is a targeted
/// pass's.
#[allow(clippy::too_many_arguments)] // the loop's state a pass ends into
fn finish_pass(
    state: &mut Loop<'_>,
    hub: &EventHub,
    base: &mut Option<Arc<Snapshot>>,
    events_on: bool,
    report: PassReport,
    memory: Memory,
    batch: Option<&Batch>,
    started_at: SystemTime,
) {
    state.memory = memory;
    state.save_state();
    state.observer.pass_finished(&report, &state.config, started_at);
    if !events_on {
        return;
    }
    state.observer.events_pass_finished(batch.map(|b| b.event_times.as_slice()), started_at);
    if let Some(batch) = batch {
        info!(
            groups = batch.dirty.groups.len(),
            instances = batch.dirty.instances.len(),
            actions = report.plan.actions.len(),
            "targeted pass on events finished"
        );
    }
    // This pass's writes are stale in its snapshot: the next targeted pass
    // describes them again.
    let touched = crate::events::dirty::touched(&report.plan);
    if batch.is_some() {
        hub.pass_wrote(touched);
    } else if report.snapshot.is_complete() {
        hub.full_pass_wrote(touched);
    } else {
        // An incomplete snapshot is not kept: the base stays the older one.
        hub.pass_wrote(touched);
    }
    if report.snapshot.is_complete() {
        if let Some(account) = report.snapshot.source_groups.values().map(|g| g.owner_id.as_str()).next() {
            hub.expect_account(account);
        }
        // Kept (moved, not copied) for the next targeted pass to merge into.
        *base = Some(Arc::new(report.snapshot));
    } else if let Some(batch) = batch {
        // Look again with the next batch (or the next full pass).
        hub.pass_wrote(batch.dirty.clone());
    }
}

// What `run` attaches to the loop (metrics, `/status`, health, systemd) and
// the entry points that serve them: `daemon/instruments.rs`.
mod instruments;
pub use self::instruments::{Instruments, NoObserver, ServeError, serve, serve_with};
