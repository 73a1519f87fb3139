//! The daemon's HTTP surface (SPEC §7): `/metrics`, `/healthz`, `/readyz`
//! and `/status`, served by axum over a [`State`] the daemon loop updates.
//!
//! The loop tells the state three things: a cycle started
//! ([`State::cycle_started`], for liveness), a pass finished
//! ([`State::record_pass`]: metrics, readiness and the `/status` document in
//! one call), and a new configuration is in force ([`State::apply_config`]).
//! Handlers only read. `docs/metrics.md` documents the endpoints and the
//! `/status` JSON.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{Config, Mode};
use crate::execute::{ActionResult, ExecuteError};
use crate::metrics::{CONTENT_TYPE, CycleOutcome, Metrics};
use crate::model::{GroupId, SnapshotPart, VpcId};
use crate::plan::{Action, ActionKind, Deferred, Drift, GroupRef, Origin, PairKey, WarningKind};
use crate::reconcile::PassReport;

/// Schema version of the `/status` document: fields are only added within a
/// version (`docs/metrics.md`).
pub const STATUS_JSON_VERSION: u32 = 1;

/// `/healthz` fails once no cycle started for this many intervals.
pub const LIVENESS_INTERVALS: u32 = 3;

/// Liveness and readiness, as the daemon loop reports them. Times are tokio
/// instants, so paused-time tests control them.
#[derive(Clone, Debug)]
pub struct Health {
    created: Instant,
    interval: Duration,
    last_cycle_started: Option<Instant>,
    ready: bool,
}

/// The answer of [`Health::liveness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Liveness {
    /// True while a cycle started within [`LIVENESS_INTERVALS`] intervals
    /// (before the first cycle: while the daemon started that recently).
    pub alive: bool,
    /// Time since the last cycle started (or since start, before the first).
    pub silent_for: Duration,
    /// The limit `silent_for` is held to.
    pub limit: Duration,
    /// Whether any cycle has started yet.
    pub started_any: bool,
}

impl Health {
    /// A daemon that started at `now` and runs a cycle every `interval`.
    #[must_use]
    pub fn new(interval: Duration, now: Instant) -> Self {
        Self { created: now, interval, last_cycle_started: None, ready: false }
    }

    /// The interval changed (configuration reload).
    pub fn set_interval(&mut self, interval: Duration) {
        self.interval = interval;
    }

    /// A cycle started at `now`.
    pub fn cycle_started(&mut self, now: Instant) {
        self.last_cycle_started = Some(now);
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

    /// Whether the loop is alive at `now`.
    #[must_use]
    pub fn liveness(&self, now: Instant) -> Liveness {
        let since = self.last_cycle_started.unwrap_or(self.created);
        let silent_for = now.saturating_duration_since(since);
        let limit = self.interval.saturating_mul(LIVENESS_INTERVALS);
        Liveness { alive: silent_for <= limit, silent_for, limit, started_any: self.last_cycle_started.is_some() }
    }
}

/// The source group of a pair in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    /// Its id.
    pub id: GroupId,
    /// Its name.
    pub name: String,
}

/// Where a pair's mirror stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorState {
    /// It existed when the last cycle observed.
    Existing,
    /// The last cycle created it (or adopted a concurrent daemon's).
    Created,
    /// The plan creates it, but it has not been created yet (audited, failed or skipped).
    ToBeCreated,
    /// It cannot be had: a conflict or a missing VPC (see the pair's warnings).
    Unavailable,
}

/// The mirror group of a pair in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatus {
    /// Its id, when it exists.
    pub id: Option<GroupId>,
    /// Its (desired) name.
    pub name: String,
    /// Where it stands.
    pub state: MirrorState,
}

/// A warning in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarningStatus {
    /// The warning kind (`unmirrorable`, `quota_exceeded`, `conflict_name_taken`, ...).
    pub kind: WarningKind,
    /// The `conflicts{kind}` label, when the warning is a conflict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// The id it is about, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// One human sentence.
    pub message: String,
}

/// A conflict of a pair in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConflictStatus {
    /// The `conflicts{kind}` label (`name_taken`, `foreign_link`, ...).
    pub kind: String,
    /// One human sentence.
    pub message: String,
}

/// The latest failed action of a pair.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorStatus {
    /// The action's kind.
    pub action: ActionKind,
    /// What the action was about: a group, instance or VPC id.
    pub subject: String,
    /// The error kind label (`fatal`, `invalid`, `dependency`, `not_ours`, ...).
    pub kind: String,
    /// The EC2 error code, when EC2 answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The error, for humans.
    pub message: String,
    /// When the cycle in which it failed finished (RFC 3339).
    pub at: String,
}

/// One mirror pair in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairStatus {
    /// The source group.
    pub source: SourceStatus,
    /// The target VPC.
    pub vpc: VpcId,
    /// The mirror group.
    pub mirror: MirrorStatus,
    /// `mirror[i]` (config entry `i`, 0-based) or `discovery_tag`.
    pub origin: String,
    /// The mapping's effective mode.
    pub mode: Mode,
    /// True when the last cycle found nothing to change and the mirror existed.
    pub in_sync: bool,
    /// What the last cycle found different.
    pub drift: Drift,
    /// Warnings about this pair that are not conflicts.
    pub warnings: Vec<WarningStatus>,
    /// Conflicts about this pair.
    pub conflicts: Vec<ConflictStatus>,
    /// The latest failed action of this pair, kept across cycles.
    pub last_error: Option<ErrorStatus>,
    /// When a cycle with a complete snapshot last found the pair in sync or
    /// ran all its actions successfully (RFC 3339).
    pub last_success_at: Option<String>,
}

/// An orphaned mirror in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanStatus {
    /// The mirror.
    pub group: GroupId,
    /// Its VPC.
    pub vpc: VpcId,
    /// Its name.
    pub name: String,
    /// The source it was mirrored from.
    pub source: GroupId,
    /// When it was first seen orphaned (RFC 3339).
    pub since: String,
}

/// A describe call that failed in the last cycle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObserveErrorStatus {
    /// The snapshot part it left incomplete.
    pub part: SnapshotPart,
    /// The error kind label.
    pub kind: String,
    /// The EC2 error code.
    pub code: String,
    /// The error, for humans.
    pub message: String,
}

/// The last cycle in `/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CycleStatus {
    /// How it ended.
    pub outcome: CycleOutcome,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// How long it took.
    pub duration_seconds: f64,
    /// Its actions by outcome label (`done`, `already_done`, `failed`, `skipped`, `audit`, `cancelled`).
    pub actions: BTreeMap<String, usize>,
    /// Describe calls that failed.
    pub observe_errors: Vec<ObserveErrorStatus>,
    /// Why the cycle could not run at all (outcome `failed` without a pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Safety holds of the last cycle in `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldsStatus {
    /// True when destructive actions were held (the `safety_hold` metric).
    pub destructive_held: bool,
    /// Snapshot parts not completely observed.
    pub incomplete: Vec<SnapshotPart>,
    /// The shrink guard was active.
    pub shrink: bool,
}

/// The `/status` document (`docs/metrics.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// The document's schema version, [`STATUS_JSON_VERSION`].
    pub version: u32,
    /// When this document was produced (RFC 3339).
    pub generated_at: String,
    /// The daemon's version.
    pub daemon_version: String,
    /// The global mode (`enforce` or `audit`).
    pub mode: Mode,
    /// True after the first complete snapshot (what `/readyz` says).
    pub ready: bool,
    /// The last cycle, once one finished.
    pub last_cycle: Option<CycleStatus>,
    /// When the last cycle with outcome `success` finished (RFC 3339).
    pub last_successful_cycle_at: Option<String>,
    /// Safety holds of the last cycle.
    pub holds: HoldsStatus,
    /// Actions the last cycle held back, by reason.
    pub deferred: Deferred,
    /// Every managed mirror pair of the last cycle, by VPC then source.
    pub pairs: Vec<PairStatus>,
    /// Orphaned mirrors.
    pub orphans: Vec<OrphanStatus>,
    /// Warnings not about one pair (conflicts among them carry `conflict`).
    pub warnings: Vec<WarningStatus>,
    /// The event source, when `[events]` configures one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventSourceStatus>,
}

/// The event source's health and counts in `/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSourceStatus {
    /// `ok` while receives succeed; `failing` while they fail (the daemon
    /// then runs on its periodic passes alone).
    pub state: String,
    /// When the last receive succeeded (RFC 3339).
    pub last_receive_at: Option<String>,
    /// The last failure: when, its kind, its message.
    pub last_error: Option<EventErrorStatus>,
    /// Failed receives since the last good one.
    pub consecutive_errors: u32,
    /// Messages received.
    pub received: u64,
    /// Events acted on.
    pub acted_on: u64,
    /// Events ignored, by reason.
    pub ignored: BTreeMap<String, u64>,
}

/// One failure of the event source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventErrorStatus {
    /// When (RFC 3339).
    pub at: String,
    /// Its kind (`no_queue`, `denied`, `transient`, …).
    pub kind: String,
    /// What the queue said.
    pub message: String,
}

impl EventSourceStatus {
    fn of(hub: &crate::events::runner::EventHub) -> Self {
        let (health, counts) = (hub.health(), hub.counts());
        Self {
            state: if health.is_healthy() { "ok" } else { "failing" }.to_owned(),
            last_receive_at: health.last_receive.map(rfc3339),
            last_error: health.last_error.map(|(at, kind, message)| EventErrorStatus {
                at: rfc3339(at),
                kind: kind.to_owned(),
                message,
            }),
            consecutive_errors: health.consecutive_errors,
            received: counts.received,
            acted_on: counts.acted_on,
            ignored: counts.ignored.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        }
    }
}

/// What a pair keeps across cycles.
#[derive(Clone, Debug, Default)]
struct PairHistory {
    last_error: Option<ErrorStatus>,
    last_success: Option<SystemTime>,
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The id an action is about, for `last_error.subject`.
fn action_subject(action: &Action) -> String {
    match action {
        Action::CreateMirror { vpc, name, .. } => format!("{vpc}/{name}"),
        Action::TagGroup { group, .. }
        | Action::UntagGroup { group, .. }
        | Action::Revoke { group, .. }
        | Action::UpdateDescriptions { group, .. }
        | Action::DeleteMirror { group, .. } => group.to_string(),
        Action::Authorize { group, .. } => match group {
            GroupRef::Existing(id) => id.to_string(),
            GroupRef::New { source, vpc } => format!("mirror of {source} in {vpc}"),
        },
        Action::Attach { instance, .. } | Action::Detach { instance, .. } | Action::Relink { instance, .. } => {
            instance.to_string()
        }
        Action::EnableClassicLink { vpc } => vpc.to_string(),
    }
}

fn error_status(action: &Action, kind: ActionKind, error: &ExecuteError, at: SystemTime) -> ErrorStatus {
    ErrorStatus {
        action: kind,
        subject: action_subject(action),
        kind: error.kind().to_owned(),
        code: error.code().map(str::to_owned),
        message: error.to_string(),
        at: rfc3339(at),
    }
}

fn warning_status(warning: &crate::plan::Warning) -> WarningStatus {
    WarningStatus {
        kind: warning.kind,
        conflict: warning.kind.conflict_kind().map(str::to_owned),
        subject: warning.subject.clone(),
        message: warning.message.clone(),
    }
}

/// The state behind `/status`: the last pass's picture plus what each pair
/// keeps across passes (its last error and last success). Pure: time comes in.
#[derive(Clone, Debug)]
pub struct StatusBoard {
    mode: Mode,
    last_cycle: Option<CycleStatus>,
    last_success: Option<SystemTime>,
    holds: HoldsStatus,
    deferred: Deferred,
    pairs: Vec<PairStatus>,
    orphans: Vec<OrphanStatus>,
    warnings: Vec<WarningStatus>,
    history: BTreeMap<PairKey, PairHistory>,
}

impl StatusBoard {
    /// An empty board for a daemon in `mode`.
    #[must_use]
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            last_cycle: None,
            last_success: None,
            holds: HoldsStatus::default(),
            deferred: Deferred::default(),
            pairs: Vec::new(),
            orphans: Vec::new(),
            warnings: Vec::new(),
            history: BTreeMap::new(),
        }
    }

    /// The global mode changed (configuration reload).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// Folds in a finished pass that started at `started_at` (the `now` given
    /// to [`crate::reconcile::reconcile_once`]) and ended as `outcome`.
    ///
    /// Pairs no longer managed are dropped with their history — except when
    /// the pass could not observe the source groups, where a missing pair
    /// proves nothing and its history is kept for when it reappears.
    pub fn update(&mut self, pass: &PassReport, started_at: SystemTime, outcome: CycleOutcome) {
        let plan = &pass.plan;
        let finished = started_at + pass.duration;
        let complete = pass.snapshot.is_complete();

        if outcome == CycleOutcome::Success {
            self.last_success = Some(finished);
        }
        let mut actions: BTreeMap<String, usize> =
            ActionResult::LABELS.iter().map(|label| ((*label).to_owned(), 0)).collect();
        for o in &pass.report.outcomes {
            *actions.entry(o.result.label().to_owned()).or_default() += 1;
        }
        self.last_cycle = Some(CycleStatus {
            outcome,
            started_at: rfc3339(started_at),
            finished_at: rfc3339(finished),
            duration_seconds: pass.duration.as_secs_f64(),
            actions,
            observe_errors: pass
                .observe_errors
                .iter()
                .map(|e| ObserveErrorStatus {
                    part: e.part,
                    kind: e.kind().to_owned(),
                    code: e.source.code.clone(),
                    message: e.source.to_string(),
                })
                .collect(),
            error: None,
        });
        self.holds = HoldsStatus {
            destructive_held: plan.holds.destructive_held(),
            incomplete: plan.holds.incomplete.clone(),
            shrink: plan.holds.shrink,
        };
        self.deferred = plan.deferred;

        // Per-pair history: the latest failure, and the latest success.
        let mut acted: BTreeMap<&PairKey, bool> = BTreeMap::new();
        let mut failed_now: BTreeMap<&PairKey, ErrorStatus> = BTreeMap::new();
        for (planned, outcome) in plan.actions.iter().zip(&pass.report.outcomes) {
            let Some(key) = &outcome.pair else { continue };
            let ok = acted.entry(key).or_insert(true);
            *ok &= outcome.result.succeeded();
            if let ActionResult::Failed(error) = &outcome.result {
                failed_now.entry(key).or_insert_with(|| error_status(&planned.action, outcome.kind, error, finished));
            }
        }
        for pair in &plan.pairs {
            let history = self.history.entry(pair.key.clone()).or_default();
            if let Some(error) = failed_now.remove(&pair.key) {
                history.last_error = Some(error);
            }
            let succeeded = pair.in_sync() || acted.get(&pair.key).copied().unwrap_or(false);
            if complete && succeeded {
                history.last_success = Some(finished);
            }
        }
        if !pass.snapshot.incomplete.contains(&SnapshotPart::SourceGroups) {
            self.history.retain(|key, _| plan.pairs.iter().any(|p| &p.key == key));
        }

        self.pairs = plan
            .pairs
            .iter()
            .map(|pair| {
                let created = pass.report.created.get(&pair.key);
                let mirror = match (&pair.mirror, created) {
                    (Some(GroupRef::Existing(id)), _) => MirrorStatus {
                        id: Some(id.clone()),
                        name: pair.mirror_name.clone(),
                        state: MirrorState::Existing,
                    },
                    (_, Some(id)) => MirrorStatus {
                        id: Some(id.clone()),
                        name: pair.mirror_name.clone(),
                        state: MirrorState::Created,
                    },
                    (Some(GroupRef::New { .. }), None) => {
                        MirrorStatus { id: None, name: pair.mirror_name.clone(), state: MirrorState::ToBeCreated }
                    }
                    (None, None) => {
                        MirrorStatus { id: None, name: pair.mirror_name.clone(), state: MirrorState::Unavailable }
                    }
                };
                let mine = plan.warnings.iter().filter(|w| w.pair.as_ref() == Some(&pair.key));
                let (conflicts, warnings): (Vec<_>, Vec<_>) = mine.partition(|w| w.kind.conflict_kind().is_some());
                let history = self.history.get(&pair.key).cloned().unwrap_or_default();
                PairStatus {
                    source: SourceStatus { id: pair.key.source.clone(), name: pair.source_name.clone() },
                    vpc: pair.key.vpc.clone(),
                    mirror,
                    origin: match pair.origin {
                        Origin::Config(index) => format!("mirror[{index}]"),
                        Origin::Tag => "discovery_tag".to_owned(),
                    },
                    mode: if pair.audit { Mode::Audit } else { Mode::Enforce },
                    in_sync: pair.in_sync(),
                    drift: pair.drift,
                    warnings: warnings.into_iter().map(warning_status).collect(),
                    conflicts: conflicts
                        .into_iter()
                        .map(|w| ConflictStatus {
                            kind: w.kind.conflict_kind().unwrap_or_default().to_owned(),
                            message: w.message.clone(),
                        })
                        .collect(),
                    last_error: history.last_error,
                    last_success_at: history.last_success.map(rfc3339),
                }
            })
            .collect();
        self.orphans = plan
            .orphans
            .iter()
            .map(|o| OrphanStatus {
                group: o.group.clone(),
                vpc: o.vpc.clone(),
                name: o.name.clone(),
                source: o.source.clone(),
                since: rfc3339(o.since),
            })
            .collect();
        self.warnings = plan.warnings.iter().filter(|w| w.pair.is_none()).map(warning_status).collect();
    }

    /// Records a cycle that could not run at all; the pairs keep the last
    /// pass's picture.
    pub fn record_failed_cycle(&mut self, started_at: SystemTime, duration: Duration, error: &str) {
        self.last_cycle = Some(CycleStatus {
            outcome: CycleOutcome::Failed,
            started_at: rfc3339(started_at),
            finished_at: rfc3339(started_at + duration),
            duration_seconds: duration.as_secs_f64(),
            actions: BTreeMap::new(),
            observe_errors: Vec::new(),
            error: Some(error.to_owned()),
        });
    }

    /// The `/status` document as of `generated_at`.
    #[must_use]
    pub fn document(&self, generated_at: SystemTime, ready: bool) -> StatusDocument {
        StatusDocument {
            version: STATUS_JSON_VERSION,
            generated_at: rfc3339(generated_at),
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: self.mode,
            ready,
            last_cycle: self.last_cycle.clone(),
            last_successful_cycle_at: self.last_success.map(rfc3339),
            holds: self.holds.clone(),
            deferred: self.deferred,
            pairs: self.pairs.clone(),
            orphans: self.orphans.clone(),
            warnings: self.warnings.clone(),
            events: None,
        }
    }
}

/// A wall clock, injectable for tests.
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

struct Shared {
    metrics: Arc<Metrics>,
    health: Mutex<Health>,
    board: Mutex<StatusBoard>,
    clock: WallClock,
    events: Mutex<Option<crate::events::runner::EventHub>>,
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
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl State {
    /// A state for a daemon starting now with `config` (its interval and
    /// mode), reporting into `metrics`. `/status` reads the system clock.
    #[must_use]
    pub fn new(metrics: Arc<Metrics>, config: &Config) -> Self {
        Self::with_clock(metrics, config, Arc::new(SystemTime::now))
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

    /// A cycle starts now: call at the top of every cycle (`/healthz`).
    pub fn cycle_started(&self) {
        lock(&self.shared.health).cycle_started(Instant::now());
    }

    /// A pass finished: records its metrics ([`Metrics::record_pass`]),
    /// marks the daemon ready if the snapshot was complete, and updates the
    /// `/status` document. `started_at` is the `now` the pass was given.
    /// Returns the cycle's outcome.
    pub fn record_pass(&self, pass: &PassReport, started_at: SystemTime) -> CycleOutcome {
        let outcome = self.shared.metrics.record_pass(pass, started_at);
        lock(&self.shared.board).update(pass, started_at, outcome);
        if pass.snapshot.is_complete() {
            lock(&self.shared.health).mark_ready();
        }
        outcome
    }

    /// A cycle could not run at all (`error` says why): counts it as
    /// `failed` and shows it as the last cycle in `/status`.
    pub fn record_failed_cycle(&self, started_at: SystemTime, duration: Duration, error: &str) {
        self.shared.metrics.record_failed_cycle(duration);
        lock(&self.shared.board).record_failed_cycle(started_at, duration, error);
    }

    /// True after the first complete snapshot (`/readyz`; sd-notify `READY=1`).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        lock(&self.shared.health).is_ready()
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
        lock(&self.shared.health).liveness(Instant::now())
    }

    /// The `/status` document now.
    #[must_use]
    pub fn status(&self) -> StatusDocument {
        let ready = self.is_ready();
        let now = (self.shared.clock)();
        let mut document = lock(&self.shared.board).document(now, ready);
        document.events = lock(&self.shared.events).as_ref().map(EventSourceStatus::of);
        document
    }

    /// Shows the event source of `hub` in `/status` from now on.
    pub fn set_events(&self, hub: crate::events::runner::EventHub) {
        *lock(&self.shared.events) = Some(hub);
    }
}

async fn metrics_handler(Extract(state): Extract<State>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics().render()).into_response()
}

async fn healthz(Extract(state): Extract<State>) -> Response {
    let live = state.liveness();
    let what = if live.started_any { "last cycle started" } else { "started, no cycle yet," };
    let body = format!(
        "{} {what} {}s ago (limit {}s)\n",
        if live.alive { "ok:" } else { "unhealthy:" },
        live.silent_for.as_secs(),
        live.limit.as_secs()
    );
    let code = if live.alive { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn readyz(Extract(state): Extract<State>) -> Response {
    let (code, body) = if state.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: no complete snapshot yet\n")
    };
    (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn status(Extract(state): Extract<State>) -> Json<StatusDocument> {
    Json(state.status())
}

/// The router: `GET /metrics`, `/healthz`, `/readyz`, `/status`.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then finishes
/// the requests in flight.
///
/// # Errors
/// The I/O error that stopped the server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;
    use crate::ec2::Operation;
    use crate::metrics::test_support::*;
    use crate::metrics::{PREFIX, ReloadOutcome};
    use crate::plan::WarningKind;

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn config(interval: Duration) -> Config {
        let mut config = Config::with_region("us-east-1");
        config.daemon.interval = interval;
        config
    }

    fn state() -> State {
        State::with_clock(Metrics::new(), &config(Duration::from_secs(30)), Arc::new(t0))
    }

    async fn get(state: &State, path: &str) -> (StatusCode, String, String) {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let response = router(state.clone()).oneshot(request).await.unwrap();
        let code = response.status();
        let content_type =
            response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = to_bytes(response.into_body(), 16 << 20).await.unwrap();
        (code, content_type, String::from_utf8(body.to_vec()).unwrap())
    }

    async fn status_json(state: &State) -> Value {
        let (code, content_type, body) = get(state, "/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        serde_json::from_str(&body).unwrap()
    }

    fn pair<'a>(status: &'a Value, source: &str) -> &'a Value {
        status["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["source"]["id"] == source)
            .unwrap_or_else(|| panic!("no pair {source} in {status:#}"))
    }

    #[tokio::test]
    async fn readyz_is_503_until_the_first_complete_snapshot_then_stays_200() {
        let state = state();
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        state.record_pass(&PassBuilder::new().incomplete(SnapshotPart::Instances).build(), t0());
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!state.is_ready());
        state.record_pass(&PassBuilder::new().build(), t0() + Duration::from_secs(30));
        assert!(state.is_ready());
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
        state.record_pass(&PassBuilder::new().incomplete(SnapshotPart::Links).build(), t0() + Duration::from_secs(60));
        assert_eq!(get(&state, "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn healthz_turns_503_when_cycles_stop() {
        let state = state();
        let step = |secs| tokio::time::advance(Duration::from_secs(secs));
        // Grace after start: three intervals of 30 s.
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
        step(89).await;
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
        step(2).await;
        let (code, _, body) = get(&state, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("no cycle yet"), "{body}");

        state.cycle_started();
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
        for _ in 0..5 {
            step(30).await;
            state.cycle_started();
            assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
        }
        step(90).await;
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
        step(1).await;
        let (code, _, body) = get(&state, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("91s ago (limit 90s)"), "{body}");

        // A reload to a longer interval widens the window.
        state.apply_config(&config(Duration::from_secs(60)));
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn metrics_endpoint_serves_the_text_format_with_every_spec_metric() {
        let state = state();
        state.record_pass(&PassBuilder::new().build(), t0());
        state.metrics().record_reload(ReloadOutcome::Rejected);
        let (code, content_type, body) = get(&state, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let samples = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}"));
        for metric in crate::metrics::SPEC_METRICS {
            assert!(body.contains(&format!("# TYPE {PREFIX}_{metric} ")), "{metric} missing");
        }
        let name = format!("{PREFIX}_config_reloads_total");
        assert_eq!(value(&samples, &name, &[("outcome", "rejected")]), Some(1.0));
        let name = format!("{PREFIX}_cycles_total");
        assert_eq!(value(&samples, &name, &[("outcome", "success")]), Some(1.0));
    }

    #[tokio::test]
    async fn status_shows_conflicts_and_keeps_the_last_error_across_passes() {
        let state = state();
        let web = key("sg-0a1", "vpc-9f2");
        let app = key("sg-0a2", "vpc-9f2");
        let db = key("sg-0a3", "vpc-9f2");
        let failing = PassBuilder::new()
            .pair(&web, "web", Some(existing("sg-77c")), Drift { add: 1, remove: 0, update: 0, links: 0 })
            .pair(&app, "app", None, Drift::default())
            .pair(&db, "db", Some(GroupRef::New { source: group("sg-0a3"), vpc: vpc("vpc-9f2") }), Drift::default())
            .action(
                Action::Authorize { group: existing("sg-77c"), grants: Vec::new() },
                Some(&web),
                ec2_failure(Operation::AuthorizeSecurityGroupIngress, "UnauthorizedOperation"),
            )
            .action(
                Action::CreateMirror {
                    source: group("sg-0a3"),
                    vpc: vpc("vpc-9f2"),
                    name: "db".into(),
                    description: "Database".into(),
                    tags: BTreeMap::new(),
                },
                Some(&db),
                ActionResult::Done,
            )
            .created(&db, "sg-77e")
            .warning(WarningKind::ConflictNameTaken, Some(&app), "group app in vpc-9f2 exists and is not ours")
            .warning(WarningKind::Unmirrorable, Some(&web), "sg-0a1 rule tcp 80 from sg-0ff cannot be mirrored")
            .warning(WarningKind::ConflictForeignLink, None, "i-0b9 is linked to vpc-111 by someone else")
            .orphan("sg-99e", "vpc-9f2", "sg-0a9")
            .build();
        assert_eq!(state.record_pass(&failing, t0()), CycleOutcome::Partial);

        let status = status_json(&state).await;
        assert_eq!(status["version"], 1);
        assert_eq!(status["daemon_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(status["generated_at"], "2027-01-15T08:00:00Z");
        assert_eq!(status["mode"], "enforce");
        assert_eq!(status["ready"], true);
        assert_eq!(status["last_cycle"]["outcome"], "partial");
        assert_eq!(status["last_cycle"]["started_at"], "2027-01-15T08:00:00Z");
        assert_eq!(status["last_cycle"]["actions"]["failed"], 1);
        assert_eq!(status["last_successful_cycle_at"], Value::Null);
        let web_status = pair(&status, "sg-0a1");
        assert_eq!(web_status["source"]["name"], "web");
        assert_eq!(web_status["mirror"], serde_json::json!({"id": "sg-77c", "name": "web", "state": "existing"}));
        assert_eq!(web_status["in_sync"], false);
        assert_eq!(web_status["drift"]["add"], 1);
        assert_eq!(web_status["warnings"][0]["kind"], "unmirrorable");
        let error = &web_status["last_error"];
        assert_eq!(error["action"], "authorize");
        assert_eq!(error["subject"], "sg-77c");
        assert_eq!(error["kind"], "fatal");
        assert_eq!(error["code"], "UnauthorizedOperation");
        assert_eq!(error["at"], "2027-01-15T08:00:01Z");
        assert!(error["message"].as_str().unwrap().contains("UnauthorizedOperation"));
        assert_eq!(web_status["last_success_at"], Value::Null);
        let app_status = pair(&status, "sg-0a2");
        assert_eq!(app_status["mirror"]["state"], "unavailable");
        assert_eq!(app_status["mirror"]["id"], Value::Null);
        assert_eq!(app_status["conflicts"][0]["kind"], "name_taken");
        assert_eq!(app_status["conflicts"][0]["message"], "group app in vpc-9f2 exists and is not ours");
        assert_eq!(app_status["warnings"], serde_json::json!([]));
        let db_status = pair(&status, "sg-0a3");
        assert_eq!(db_status["mirror"]["state"], "created");
        assert_eq!(db_status["mirror"]["id"], "sg-77e");
        assert_eq!(db_status["last_success_at"], "2027-01-15T08:00:01Z", "all its actions succeeded");
        assert_eq!(status["warnings"][0]["conflict"], "foreign_link");
        assert_eq!(status["orphans"][0]["group"], "sg-99e");
        assert_eq!(status["orphans"][0]["since"], "2023-11-14T22:13:20Z");

        // Next pass: web is in sync; its last error stays, with a later success.
        let healed = PassBuilder::new()
            .pair(&web, "web", Some(existing("sg-77c")), Drift::default())
            .pair(&app, "app", None, Drift::default())
            .warning(WarningKind::ConflictNameTaken, Some(&app), "group app in vpc-9f2 exists and is not ours")
            .build();
        assert_eq!(state.record_pass(&healed, t0() + Duration::from_secs(30)), CycleOutcome::Success);
        let status = status_json(&state).await;
        let web_status = pair(&status, "sg-0a1");
        assert_eq!(web_status["in_sync"], true);
        assert_eq!(web_status["last_error"]["code"], "UnauthorizedOperation");
        assert_eq!(web_status["last_success_at"], "2027-01-15T08:00:31Z");
        assert_eq!(status["last_successful_cycle_at"], "2027-01-15T08:00:31Z");
        assert_eq!(status["pairs"].as_array().unwrap().len(), 2, "db is no longer managed");
        assert_eq!(status["orphans"], serde_json::json!([]));
        assert_eq!(status["warnings"], serde_json::json!([]));

        // The document is the typed one.
        let typed: StatusDocument = serde_json::from_value(status).unwrap();
        assert_eq!(typed.pairs[0].source.name, "web");
    }

    #[tokio::test]
    async fn history_survives_a_pass_that_could_not_see_the_sources() {
        let state = state();
        let web = key("sg-0a1", "vpc-9f2");
        let failing = PassBuilder::new()
            .pair(&web, "web", Some(existing("sg-77c")), Drift { add: 1, remove: 0, update: 0, links: 0 })
            .action(
                Action::Authorize { group: existing("sg-77c"), grants: Vec::new() },
                Some(&web),
                ec2_failure(Operation::AuthorizeSecurityGroupIngress, "InvalidParameterValue"),
            )
            .build();
        state.record_pass(&failing, t0());
        let blind = PassBuilder::new().incomplete(SnapshotPart::SourceGroups).build();
        assert_eq!(state.record_pass(&blind, t0() + Duration::from_secs(30)), CycleOutcome::Failed);
        let status = status_json(&state).await;
        assert_eq!(status["pairs"], serde_json::json!([]));
        assert_eq!(status["holds"]["destructive_held"], true);
        assert_eq!(status["holds"]["incomplete"], serde_json::json!(["source_groups"]));
        assert_eq!(status["last_cycle"]["observe_errors"][0]["part"], "source_groups");
        assert_eq!(status["last_cycle"]["observe_errors"][0]["code"], "RequestLimitExceeded");

        let back = PassBuilder::new().pair(&web, "web", Some(existing("sg-77c")), Drift::default()).build();
        state.record_pass(&back, t0() + Duration::from_secs(60));
        let status = status_json(&state).await;
        assert_eq!(pair(&status, "sg-0a1")["last_error"]["code"], "InvalidParameterValue");
    }

    #[tokio::test]
    async fn a_cycle_that_could_not_run_is_shown_and_counted() {
        let state = state();
        state.record_failed_cycle(t0(), Duration::from_secs(3), "could not load credentials");
        let status = status_json(&state).await;
        assert_eq!(status["last_cycle"]["outcome"], "failed");
        assert_eq!(status["last_cycle"]["error"], "could not load credentials");
        assert_eq!(status["last_cycle"]["finished_at"], "2027-01-15T08:00:03Z");
        let samples = parse_exposition(&get(&state, "/metrics").await.2).unwrap();
        assert_eq!(value(&samples, &format!("{PREFIX}_cycles_total"), &[("outcome", "failed")]), Some(1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn status_of_real_passes_against_the_emulator() {
        use crate::config::{MirrorConfig, SourceRef};
        use crate::ec2::limited::Limited;
        use crate::emulator::{Emulator, EmulatorOptions, ErrorInjection, Faults, NewGroup, NewVpc};
        use crate::plan::Memory;
        use crate::reconcile::{execute_options, reconcile_once};

        let emu = Emulator::new(EmulatorOptions::default());
        let vpc_id = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
        let web = emu.create_group(&NewGroup::classic("web", "Web tier")).await.unwrap();
        let app = emu.create_group(&NewGroup::classic("app", "App tier")).await.unwrap();
        // Someone else's VPC group already has app's mirror name.
        emu.create_group(&NewGroup::in_vpc(&vpc_id, "app", "not ours")).await.unwrap();
        let mut config = config(Duration::from_secs(30));
        config.discovery.tag_key = None;
        for source in [&web, &app] {
            config.mirrors.push(MirrorConfig::new(SourceRef::Id(source.clone()), vpc_id.clone()));
        }
        emu.set_faults(Faults {
            errors: ErrorInjection {
                per_operation: BTreeMap::from([(Operation::CreateSecurityGroup, 1.0)]),
                codes: vec!["UnauthorizedOperation".into()],
                ..ErrorInjection::default()
            },
            ..Faults::none()
        });

        let metrics = Metrics::new();
        let state = State::with_clock(Arc::clone(&metrics), &config, Arc::new(t0));
        let ec2 = Limited::new(emu.clone(), &config.rate_limit).with_observer(metrics.request_observer());
        let mut memory = Memory::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        let options = execute_options(&config);
        state.cycle_started();
        let pass = reconcile_once(&ec2, &config, &mut memory, t0(), &options, &cancel).await;
        assert_eq!(state.record_pass(&pass, t0()), CycleOutcome::Partial);

        let status = status_json(&state).await;
        let web_status = pair(&status, web.as_str());
        assert_eq!(web_status["mirror"]["state"], "to_be_created");
        assert_eq!(web_status["last_error"]["action"], "create_mirror");
        assert_eq!(web_status["last_error"]["code"], "UnauthorizedOperation");
        assert_eq!(web_status["last_error"]["subject"], format!("{vpc_id}/web"));
        let app_status = pair(&status, app.as_str());
        assert_eq!(app_status["conflicts"][0]["kind"], "name_taken");
        let samples = parse_exposition(&get(&state, "/metrics").await.2).unwrap();
        assert_eq!(value(&samples, &format!("{PREFIX}_conflicts"), &[("kind", "name_taken")]), Some(1.0));
        let fatal = [("operation", "CreateSecurityGroup"), ("outcome", "fatal")];
        assert_eq!(value(&samples, &format!("{PREFIX}_aws_requests_total"), &fatal), Some(1.0));

        // The permission is fixed: web's mirror is created, and stays created.
        emu.set_faults(Faults::none());
        let later = t0() + Duration::from_secs(30);
        state.cycle_started();
        let pass = reconcile_once(&ec2, &config, &mut memory, later, &options, &cancel).await;
        assert_eq!(state.record_pass(&pass, later), CycleOutcome::Success);
        let status = status_json(&state).await;
        let web_status = pair(&status, web.as_str());
        assert_eq!(web_status["mirror"]["state"], "created");
        assert!(web_status["mirror"]["id"].as_str().unwrap().starts_with("sg-"));
        assert!(web_status["last_success_at"].is_string());
        assert_eq!(web_status["last_error"]["code"], "UnauthorizedOperation", "kept as history");
        let even_later = later + Duration::from_secs(30);
        let pass = reconcile_once(&ec2, &config, &mut memory, even_later, &options, &cancel).await;
        state.record_pass(&pass, even_later);
        let status = status_json(&state).await;
        let web_status = pair(&status, web.as_str());
        assert_eq!(web_status["mirror"]["state"], "existing");
        assert_eq!(web_status["in_sync"], true);
        assert_eq!(pair(&status, app.as_str())["in_sync"], false);
    }

    #[tokio::test]
    async fn serve_answers_over_tcp_and_stops_on_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = state();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve(listener, state.clone(), stop.clone().cancelled_owned()));
        let client = reqwest::Client::new();
        let response = client.get(format!("http://{address}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        parse_exposition(&response.text().await.unwrap()).unwrap();
        let response = client.get(format!("http://{address}/readyz")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        let status: StatusDocument =
            client.get(format!("http://{address}/status")).send().await.unwrap().json().await.unwrap();
        assert!(status.last_cycle.is_none());
        assert_eq!(client.get(format!("http://{address}/nope")).send().await.unwrap().status(), 404);
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    }
}

/// Why a health probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL is not `http://HOST:PORT/PATH`.
    #[error("{0:?} is not an http://host:port/path URL")]
    BadUrl(String),
    /// Connecting, sending or reading failed.
    #[error("cannot reach {url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The answer was not an HTTP status line.
    #[error("{url} answered something that is not HTTP")]
    NotHttp {
        /// The URL.
        url: String,
    },
}

impl ProbeError {
    /// Stable label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadUrl(_) => "bad_url",
            Self::Io { .. } => "io",
            Self::NotHttp { .. } => "not_http",
        }
    }
}

/// `GET url` over plain HTTP/1.0 and the status code: the `healthcheck`
/// command's probe, for images without curl. Blocking, with `timeout` on
/// connect, write and read.
///
/// # Errors
/// [`ProbeError`] when the URL is unusable or the server cannot be reached.
pub fn probe(url: &str, timeout: Duration) -> Result<u16, ProbeError> {
    use std::io::{Read as _, Write as _};
    use std::net::ToSocketAddrs as _;
    let rest = url.strip_prefix("http://").ok_or_else(|| ProbeError::BadUrl(url.to_owned()))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let io = |source| ProbeError::Io { url: url.to_owned(), source };
    let address = authority.to_socket_addrs().map_err(io)?.next().ok_or_else(|| ProbeError::BadUrl(url.to_owned()))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(io)?;
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).map_err(io)?;
    let line = String::from_utf8_lossy(&head[..read]);
    line.strip_prefix("HTTP/1.")
        .and_then(|l| l.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| ProbeError::NotHttp { url: url.to_owned() })
}
