//! The daemon (`run`): one reconcile loop per target account, each calling
//! observe → plan → execute every `interval` and keeping its planner
//! `Memory` between passes, under a supervisor that reloads the mapping
//! file and shuts them all down cleanly (docs/architecture.md, "Many
//! targets"). The loop of one target is `daemon/target.rs`.
//!
//! - Targets are isolated: each loop has its own EC2 port (token buckets,
//!   retry quota), memory, state file and timer, and the loops are polled
//!   concurrently, so a target whose role cannot be assumed or whose region
//!   is down fails its own passes (and is retried at its own interval)
//!   while the others keep converging. The process never exits because a
//!   target fails.
//! - Within a target, full passes never overlap: the next one starts
//!   `interval` (±10% jitter) after the previous one *started*, or at once
//!   if that one overran. With events (the primary target's), targeted
//!   passes run between them, and also *beside* a full pass while it only
//!   observes; executions never overlap (docs/semantics.md, "Events and
//!   targeted passes").
//! - On the first shutdown event every loop stops starting passes and
//!   actions, an observation under way stops at once, in-flight actions get
//!   `drain_grace` to finish, and `run` returns when all loops have ended.
//!   (A second signal is `main`'s business: it exits at once.)
//! - Reload (SIGHUP, or the file changed): the file is read once; a valid
//!   one takes effect at each target's next pass — each loop gets its part
//!   ([`Config::for_target`]), a new target's loop starts, a target no
//!   mirror names any more has its loop drained and stopped — and what
//!   changed is logged; anything else — the file invalid, deleted, a
//!   directory, unreadable, not UTF-8 — is rejected, logged and counted
//!   once per change the watcher sees, and the old configuration keeps
//!   running. A change of `[events]` restarts the event reader. A file
//!   made good again is reloaded without a signal. Nothing built from a
//!   validated configuration can panic (every numeric key is bounded), so
//!   a reload never takes the process down.
//! - Each target's memory is loaded from its state file (`daemon.state_dir`,
//!   [`Config::state_file_name`]) when its loop starts and written back
//!   after each pass that changed it; a state file that cannot be read
//!   means a conservative start, one that cannot be written a warning:
//!   neither stops the daemon ([`crate::state`]).
//! - Everything observable goes through [`PassObserver`] (metrics, `/status`,
//!   health, sd-notify): the pass hooks from the lead target's loop, the
//!   `target_*` hooks from every loop, so the loops stay testable with the
//!   in-process emulator and paused time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{FuturesUnordered, StreamExt as _};
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::clock::WallClock;
use crate::config::{self, Config, ConfigLoadError, Target, render_errors};
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
    /// A target's loop is starting (at start, or a reload added it).
    fn target_started(&self, _target: &TargetInfo) {}
    /// A pass of the target `account` (its configured name, `aws` for the
    /// `[aws]` one) finished, whichever target leads.
    fn target_pass_finished(&self, _account: &str, _pass: &PassReport, _started_at: SystemTime) {}
    /// A reload left no mirror targeting `account`: its loop stops.
    fn target_stopped(&self, _account: &str) {}
}

/// A target as the observer is told of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetInfo {
    /// The account's configured name (`aws` for the `[aws]` one).
    pub account: String,
    /// The region of its EC2 client.
    pub region: String,
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

    /// A reload was applied: `config` is the whole new file (default:
    /// nothing; a connector sharing clients across the loops forgets those
    /// of accounts no longer used).
    fn reloaded(&self, _config: &Config) {}
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

/// The target whose passes feed the pass hooks of the [`PassObserver`]
/// (the aggregate pass metrics and `/status`'s pass fields): the primary
/// one, else the first.
fn lead_of(config: &Config) -> Target {
    config.primary_target().or_else(|| config.targets().into_iter().next()).unwrap_or(Target::Aws)
}

/// A target's loop under way, as the supervisor sees it.
type TargetFuture<'a> = Pin<Box<dyn Future<Output = Target> + Send + 'a>>;

/// The supervisor: one loop per target of the file
/// ([`Config::targets`]), each polled here concurrently with the others
/// (a pass of one never waits for a pass of another), the signals and the
/// file watcher; a reload reads the file once and hands each target its
/// part, starting the loops of new targets and draining those of targets
/// gone.
struct Supervisor<'a> {
    settings: &'a Settings,
    connector: &'a dyn Connector,
    observer: &'a dyn PassObserver,
    /// The lead target ([`lead_of`]).
    lead: &'a parking_lot::Mutex<Target>,
    config: Config,
    /// What the file held when last read (by a reload or the watcher's
    /// check that led to one); the watcher reloads when it changes.
    seen: FileState,
    /// Each running target's command channel.
    loops: BTreeMap<Target, mpsc::UnboundedSender<target::Command>>,
    /// Targets a reload removed whose loops are still draining: one named
    /// again meanwhile starts when its old loop has ended, never beside it.
    draining: BTreeSet<Target>,
}

impl<'a> Supervisor<'a> {
    /// Starts the loop of `target` (its part of the file, its state file).
    fn start(&mut self, target: &Target) -> TargetFuture<'a> {
        let (commands, receiver) = mpsc::unbounded_channel();
        self.loops.insert(target.clone(), commands);
        let part = self.config.for_target(target);
        let state_file = StateFile::named(self.config.daemon.state_dir.clone(), self.config.state_file_name(target));
        let info =
            TargetInfo { account: target.label().to_owned(), region: self.config.target_region(target).to_owned() };
        let (settings, connector, observer, lead) = (self.settings, self.connector, self.observer, self.lead);
        let target = target.clone();
        let span = tracing::info_span!("target", account = %info.account, region = %info.region);
        Box::pin(tracing::Instrument::instrument(
            async move {
                observer.target_started(&info);
                let observer = TargetObserver { inner: observer, target: target.clone(), lead };
                target::run_target(settings, part, state_file, connector, &observer, receiver).await;
                target
            },
            span,
        ))
    }

    /// Re-reads the file; applies it when valid: each running target gets
    /// its part, new targets' loops start (returned), gone targets' loops
    /// are told to stop (they drain and end). Anything else — the file
    /// missing, a directory, unreadable, not UTF-8, invalid — is logged,
    /// counted as a rejected reload, and the current configuration keeps
    /// running.
    fn reload(&mut self, why: &str) -> Vec<TargetFuture<'a>> {
        let path = &self.settings.config_path;
        let read = config::read_bytes(path);
        self.seen = FileState::of(&read);
        let text = match read.and_then(|bytes| config::text_of(path, bytes)) {
            Ok(text) => text,
            Err(e) => {
                error!(path = %path.display(), error = %e, trigger = why,
                    "cannot read the mapping file; the current configuration keeps running");
                self.observer.reloaded(ReloadOutcome::Rejected, &self.config);
                return Vec::new();
            }
        };
        let config = match Config::from_toml_str(&text, self.settings.env_region.as_deref()) {
            Ok(config) => config,
            Err(errors) => {
                error!(trigger = why, errors = %render_errors(&errors).trim_end(),
                    "the new mapping file is invalid and was rejected; the current configuration keeps running");
                self.observer.reloaded(ReloadOutcome::Rejected, &self.config);
                return Vec::new();
            }
        };
        let (before, after) = (mapping_keys(&self.config), mapping_keys(&config));
        let added: Vec<&String> = after.difference(&before).collect();
        let removed: Vec<&String> = before.difference(&after).collect();
        if config.daemon.listen != self.config.daemon.listen {
            warn!(listen = %config.daemon.listen, "daemon.listen changed: it takes effect after a restart");
        }
        if config.daemon.state_dir != self.config.daemon.state_dir {
            warn!(state_dir = %config.daemon.state_dir.display(),
                "daemon.state_dir changed: it takes effect after a restart");
        }
        info!(trigger = why, added = ?added, removed = ?removed, "mapping file reloaded; in force from the next pass");
        let state_dir = self.config.daemon.state_dir.clone();
        self.config = config;
        self.config.daemon.state_dir = state_dir;
        let targets: BTreeSet<Target> = self.config.targets().into_iter().collect();
        *self.lead.lock() = lead_of(&self.config);
        let gone: Vec<Target> = self.loops.keys().filter(|t| !targets.contains(*t)).cloned().collect();
        for target in gone {
            info!(account = %target, "no mirror targets this account any more: its loop stops");
            if let Some(commands) = self.loops.remove(&target) {
                let _ = commands.send(target::Command::Shutdown);
            }
            self.draining.insert(target.clone());
            self.observer.target_stopped(target.label());
        }
        let mut started = Vec::new();
        for target in &targets {
            match self.loops.get(target) {
                Some(commands) => {
                    let _ = commands.send(target::Command::Config(Box::new(self.config.for_target(target))));
                }
                None if self.draining.contains(target) => {
                    info!(account = %target, "a target account named again: its loop starts once the old one has drained");
                }
                None => {
                    info!(account = %target, "a new target account: its loop starts");
                    started.push(self.start(target));
                }
            }
        }
        self.connector.reloaded(&self.config);
        self.observer.reloaded(ReloadOutcome::Applied, &self.config);
        started
    }

    /// Whether the file differs from what the last reload (or the start)
    /// read: other bytes, or now (un)readable, or unreadable for another
    /// reason. A file replaced by a rename is read through its path, so it
    /// counts like an edit in place.
    fn file_changed(&self) -> bool {
        FileState::now(&self.settings.config_path) != self.seen
    }

    /// A target's loop ended (a reload removed it): when the file names
    /// the target again, its new loop starts now.
    fn ended(&mut self, target: &Target) -> Option<TargetFuture<'a>> {
        self.draining.remove(target);
        let again = !self.loops.contains_key(target) && self.config.targets().contains(target);
        again.then(|| {
            info!(account = %target, "a target account named again: its loop starts");
            self.start(target)
        })
    }

    /// Tells every loop to stop (each drains its in-flight actions).
    fn shutdown(&mut self) {
        for (_, commands) in std::mem::take(&mut self.loops) {
            let _ = commands.send(target::Command::Shutdown);
        }
    }
}

/// A file whose only target is a named account: that target takes over
/// the `state.json` an earlier version wrote for it, when it has no file
/// of its own (before any loop starts).
pub fn take_over_legacy_state_file(config: &Config) {
    let Some(target) = config.legacy_state_file_owner() else { return };
    let file = StateFile::named(config.daemon.state_dir.clone(), config.state_file_name(&target));
    match file.take_over(config::STATE_FILE_NAME) {
        Ok(true) => info!(account = %target, path = %file.path().display(),
            "the state file of the only target account is renamed to its own name"),
        Ok(false) => {}
        Err(e) => warn!(account = %target, error = %e,
            "cannot rename state.json to the target account's own state file: a first start for it"),
    }
}

/// The daemon, from a configuration already loaded from `config_text`:
/// the supervisor and its targets' loops, until a shutdown has drained
/// them all.
async fn run_loaded(
    settings: &Settings,
    config: Config,
    config_text: String,
    connector: &dyn Connector,
    observer: &dyn PassObserver,
    mut events: mpsc::Receiver<Event>,
) {
    let lead = parking_lot::Mutex::new(lead_of(&config));
    let targets = config.targets();
    info!(path = %settings.config_path.display(), mappings = config.mirrors.len(),
        targets = ?targets.iter().map(Target::label).collect::<Vec<_>>(),
        interval = %humantime::format_duration(config.daemon.interval), "daemon started");
    let mut supervisor = Supervisor {
        settings,
        connector,
        observer,
        lead: &lead,
        config,
        seen: FileState::of(&Ok(config_text.into_bytes())),
        loops: BTreeMap::new(),
        draining: BTreeSet::new(),
    };
    take_over_legacy_state_file(&supervisor.config);
    let mut running: FuturesUnordered<TargetFuture<'_>> = targets.iter().map(|t| supervisor.start(t)).collect();
    let mut watch = tokio::time::interval(settings.watch_every);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Reload) => running.extend(supervisor.reload("signal")),
                Some(Event::Shutdown) | None => break,
            },
            _ = watch.tick() => {
                if supervisor.file_changed() {
                    running.extend(supervisor.reload("file changed"));
                }
            }
            Some(target) = running.next() => {
                debug!(account = %target, "a target's loop ended");
                running.extend(supervisor.ended(&target));
            }
        }
    }
    supervisor.shutdown();
    // A second shutdown event is `main`'s business (it exits at once);
    // the loops each bound their drain by `drain_grace`.
    while let Some(target) = running.next().await {
        debug!(account = %target, "a target's loop ended");
    }
    observer.stopping();
    info!("daemon stopped");
}

/// The observer one target's loop reports to: the per-target hooks always
/// (under the target's name), the pass hooks only while it is the lead
/// target (so the aggregate pass metrics and `/status`'s pass fields keep
/// describing one loop's passes).
struct TargetObserver<'a> {
    inner: &'a dyn PassObserver,
    target: Target,
    lead: &'a parking_lot::Mutex<Target>,
}

impl TargetObserver<'_> {
    fn leads(&self) -> bool {
        *self.lead.lock() == self.target
    }
}

impl PassObserver for TargetObserver<'_> {
    fn pass_started(&self, config: &Config) {
        if self.leads() {
            self.inner.pass_started(config);
        }
    }
    fn phase(&self, phase: Phase) {
        if self.leads() {
            self.inner.phase(phase);
        }
    }
    fn describe_failed(&self, error: &ObserveError) {
        if self.leads() {
            self.inner.describe_failed(error);
        }
    }
    fn snapshot_observed(&self, snapshot: &Snapshot) {
        if self.leads() {
            self.inner.snapshot_observed(snapshot);
        }
    }
    fn planned(&self, actions: usize) {
        if self.leads() {
            self.inner.planned(actions);
        }
    }
    fn action_finished(&self, result: &ActionResult) {
        if self.leads() {
            self.inner.action_finished(result);
        }
    }
    fn pass_finished(&self, pass: &PassReport, config: &Config, started_at: SystemTime) {
        let outcome = crate::reconcile::CycleOutcome::of(pass);
        if outcome == crate::reconcile::CycleOutcome::Failed || outcome == crate::reconcile::CycleOutcome::Incomplete {
            let error = pass.observe_errors.first().map(ToString::to_string).unwrap_or_default();
            warn!(account = %self.target, outcome = outcome.as_str(), error = %error,
                "the target's pass could not observe everything; retried at its next pass");
        }
        if self.leads() {
            self.inner.pass_finished(pass, config, started_at);
        }
        self.inner.target_pass_finished(self.target.label(), pass, started_at);
    }
    fn state_file_failed(&self, error: &StateError) {
        self.inner.state_file_failed(error);
    }
    fn events_enabled(&self, hub: &EventHub) {
        self.inner.events_enabled(hub);
    }
    fn events_disabled(&self) {
        // A loop that lost the events to a new primary target (a reload)
        // must not turn off what that target's reader now reports.
        if self.leads() {
            self.inner.events_disabled();
        }
    }
    fn events_reenabled(&self, hub: &EventHub) {
        self.inner.events_reenabled(hub);
    }
    fn events_pass_finished(&self, event_times: Option<&[SystemTime]>, started_at: SystemTime) {
        self.inner.events_pass_finished(event_times, started_at);
    }
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

// What `run` attaches to the loop (metrics, `/status`, health, systemd) and
// the entry points that serve them: `daemon/instruments.rs`.
mod instruments;
mod target;
pub use self::instruments::{Instruments, NoObserver, ServeError, serve, serve_with};

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: &[Option<&str>]) -> Config {
        let mut text = "[aws]\nregion = \"us-east-1\"\n[accounts.b]\nregion = \"eu-west-1\"\n\
                        [accounts.c]\nregion = \"us-west-2\"\n"
            .to_owned();
        for (i, target) in targets.iter().enumerate() {
            let target = target.map(|t| format!("target_account = \"{t}\"\n")).unwrap_or_default();
            text.push_str(&format!("[[mirror]]\nsource_group = \"sg-0{i}\"\nvpc = \"vpc-01\"\n{target}"));
        }
        Config::from_toml_str(&text, None).unwrap_or_else(|e| panic!("{}", render_errors(&e)))
    }

    #[test]
    fn the_lead_target_is_the_primary_one_else_the_first_by_name() {
        assert_eq!(lead_of(&config(&[])), Target::Aws);
        assert_eq!(lead_of(&config(&[Some("c"), None])), Target::Aws);
        assert_eq!(lead_of(&config(&[Some("c")])), Target::Named("c".into()));
        assert_eq!(lead_of(&config(&[Some("c"), Some("b")])), Target::Named("b".into()));
    }

    /// Counts what reaches it.
    #[derive(Default)]
    struct Counts {
        passes: parking_lot::Mutex<usize>,
        target_passes: parking_lot::Mutex<Vec<String>>,
    }

    impl PassObserver for Counts {
        fn pass_finished(&self, _: &PassReport, _: &Config, _: SystemTime) {
            *self.passes.lock() += 1;
        }
        fn target_pass_finished(&self, account: &str, _: &PassReport, _: SystemTime) {
            self.target_passes.lock().push(account.to_owned());
        }
    }

    #[test]
    fn every_target_reports_its_passes_but_only_the_lead_feeds_the_pass_hooks() {
        let counts = Counts::default();
        let lead = parking_lot::Mutex::new(Target::Named("b".into()));
        let pass = crate::reconcile::interrupted(Instant::now(), &Memory::default());
        let config = config(&[Some("b"), Some("c")]);
        for name in ["b", "c"] {
            let observer = TargetObserver { inner: &counts, target: Target::Named(name.into()), lead: &lead };
            observer.pass_finished(&pass, &config, SystemTime::UNIX_EPOCH);
        }
        assert_eq!(*counts.passes.lock(), 1, "the lead's pass only");
        assert_eq!(*counts.target_passes.lock(), ["b", "c"]);
    }
}
