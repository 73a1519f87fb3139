//! The daemon's HTTP surface (docs/metrics.md): `/metrics`, `/healthz`, `/readyz`
//! and `/status`, served by axum over a [`State`] the daemon loop updates.
//!
//! The loop tells the state what happens while it happens: a cycle started
//! ([`State::cycle_started`], for liveness and `/status`'s `current_cycle`),
//! its phase and the describes failing so far ([`State::pass_phase`],
//! [`State::describe_failed`]), a pass finished ([`State::record_pass`]:
//! metrics, readiness and the `/status` document in one call), and a new
//! configuration is in force ([`State::apply_config`]). Handlers only read.
//! `docs/metrics.md` documents the endpoints and the `/status` JSON.
//!
//! [`serve`] is hardened for months unattended (`docs/operations.md`, "The
//! HTTP listener"): a header-read timeout that also closes idle keep-alive
//! connections, a cap on open connections that closes the oldest idle one to
//! make room, and accept errors (`EMFILE`) that back off instead of spinning.

use parking_lot::{Mutex, MutexGuard};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strum::VariantArray as _;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::{Config, Mode};
use crate::execute::{ActionResult, ExecuteError, OutcomeKind};
use crate::metrics::{CONTENT_TYPE, CycleOutcome, Metrics};
use crate::model::{GroupId, SnapshotPart, VpcId};
use crate::observe::ObserveError;
use crate::plan::{Action, ActionKind, Deferred, Drift, GroupRef, Origin, PairKey, RepairKind, WarningKind};
use crate::reconcile::{PassReport, Phase};

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
    /// When it was first seen orphaned (RFC 3339): its
    /// `classiclinkmirror:orphanedSince` tag.
    pub since: String,
    /// When its removal is due (RFC 3339): `since` + `orphan_grace`; absent
    /// when it is kept (`delete_orphans = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_due_at: Option<String>,
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
    /// Why the cycle stopped early (a shutdown during observation: outcome
    /// `failed`, nothing planned or started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Most of its writes were already done, or it yielded to another writer
    /// doing the same work (`other_writer_passes_total`).
    #[serde(default)]
    pub other_writer: bool,
}

/// A pair in a fight in `/status`: the same repair keeps being needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FightStatus {
    /// The pair's source group.
    pub source: GroupId,
    /// The pair's VPC.
    pub vpc: VpcId,
    /// What keeps changing: `mirror`, `grant` or `link`.
    pub kind: RepairKind,
    /// When the fight was detected (RFC 3339).
    pub since: String,
    /// Repairs made since.
    pub repairs: u32,
    /// No repair of this pair and kind before this time (RFC 3339).
    pub next_repair_at: String,
    /// Who made the latest change a repair undid (CloudTrail's
    /// `userIdentity.arn`, from the event that reported it), when known.
    pub principal: Option<String>,
}

/// The cycle under way in `/status`: what it has found so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurrentCycleStatus {
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How long it has been running.
    pub running_seconds: f64,
    /// What it is doing: `observing`, `planning` or `executing`.
    pub phase: Phase,
    /// Describe calls that failed so far.
    pub observe_errors: Vec<ObserveErrorStatus>,
    /// Snapshot parts known to be incomplete so far.
    pub incomplete: Vec<SnapshotPart>,
    /// The number of actions planned, once planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actions_planned: Option<usize>,
    /// The actions that have ended so far, by outcome label (`done`,
    /// `already_done`, `failed`, ...; labels with none are left out).
    pub actions: BTreeMap<String, usize>,
}

/// What the board keeps about the cycle under way.
#[derive(Clone, Debug)]
struct CurrentCycle {
    started_at: SystemTime,
    phase: Phase,
    observe_errors: Vec<ObserveErrorStatus>,
    actions_planned: Option<usize>,
    actions: BTreeMap<String, usize>,
}

fn observe_error_status(error: &ObserveError) -> ObserveErrorStatus {
    ObserveErrorStatus {
        part: error.part,
        kind: error.kind().to_owned(),
        code: error.source.code.clone(),
        message: error.source.to_string(),
    }
}

/// The `error` of a cycle that a shutdown stopped during observation.
pub const INTERRUPTED_OBSERVATION: &str = "stopped by a shutdown during observation; no action was planned or started";

/// Safety holds of the last cycle in `/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldsStatus {
    /// True when destructive actions were held (the `safety_hold` metric).
    pub destructive_held: bool,
    /// Snapshot parts not completely observed.
    pub incomplete: Vec<SnapshotPart>,
    /// The shrink guard was active.
    pub shrink: bool,
    /// The daemon started without its state (a state file it could not
    /// read) less than one `orphan_grace` ago.
    #[serde(default)]
    pub state_lost: bool,
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
    /// The cycle under way, if one is.
    pub current_cycle: Option<CurrentCycleStatus>,
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
    /// Pairs in a fight after the last cycle, by pair then kind.
    #[serde(default)]
    pub fights: Vec<FightStatus>,
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
        | Action::DeleteMirror { group, .. }
        | Action::MarkOrphan { group, .. }
        | Action::UnmarkOrphan { group, .. } => group.to_string(),
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
    current: Option<CurrentCycle>,
    last_success: Option<SystemTime>,
    holds: HoldsStatus,
    deferred: Deferred,
    pairs: Vec<PairStatus>,
    orphans: Vec<OrphanStatus>,
    warnings: Vec<WarningStatus>,
    fights: Vec<FightStatus>,
    history: BTreeMap<PairKey, PairHistory>,
}

impl StatusBoard {
    /// An empty board for a daemon in `mode`.
    #[must_use]
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            last_cycle: None,
            current: None,
            last_success: None,
            holds: HoldsStatus::default(),
            deferred: Deferred::default(),
            pairs: Vec::new(),
            orphans: Vec::new(),
            warnings: Vec::new(),
            fights: Vec::new(),
            history: BTreeMap::new(),
        }
    }

    /// The global mode changed (configuration reload).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// A cycle started at `started_at`: `/status` shows it under way.
    pub fn cycle_started(&mut self, started_at: SystemTime) {
        self.current = Some(CurrentCycle {
            started_at,
            phase: Phase::Observing,
            observe_errors: Vec::new(),
            actions_planned: None,
            actions: BTreeMap::new(),
        });
    }

    /// The cycle under way entered `phase`.
    pub fn pass_phase(&mut self, phase: Phase) {
        if let Some(current) = &mut self.current {
            current.phase = phase;
        }
    }

    /// A describe of the cycle under way failed.
    pub fn describe_failed(&mut self, error: &ObserveError) {
        if let Some(current) = &mut self.current {
            current.observe_errors.push(observe_error_status(error));
        }
    }

    /// The cycle under way planned `actions` actions.
    pub fn pass_planned(&mut self, actions: usize) {
        if let Some(current) = &mut self.current {
            current.actions_planned = Some(actions);
        }
    }

    /// An action of the cycle under way ended as `result`.
    pub fn action_finished(&mut self, result: &ActionResult) {
        if let Some(current) = &mut self.current {
            *current.actions.entry(result.label().to_owned()).or_default() += 1;
        }
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

        self.current = None;
        if outcome == CycleOutcome::Success {
            self.last_success = Some(finished);
        }
        let mut actions: BTreeMap<String, usize> =
            OutcomeKind::VARIANTS.iter().map(|kind| (kind.as_str().to_owned(), 0)).collect();
        for o in &pass.report.outcomes {
            *actions.entry(o.result.label().to_owned()).or_default() += 1;
        }
        self.last_cycle = Some(CycleStatus {
            outcome,
            started_at: rfc3339(started_at),
            finished_at: rfc3339(finished),
            duration_seconds: pass.duration.as_secs_f64(),
            actions,
            observe_errors: pass.observe_errors.iter().map(observe_error_status).collect(),
            error: pass.interrupted.then(|| INTERRUPTED_OBSERVATION.to_owned()),
            other_writer: pass.other_writer,
        });
        self.fights = pass
            .fights
            .iter()
            .map(|f| FightStatus {
                source: f.pair.source.clone(),
                vpc: f.pair.vpc.clone(),
                kind: f.kind,
                since: rfc3339(f.since),
                repairs: f.repairs,
                next_repair_at: rfc3339(f.retry_after),
                principal: f.principal.clone(),
            })
            .collect();
        self.holds = HoldsStatus {
            destructive_held: plan.holds.destructive_held(),
            incomplete: plan.holds.incomplete.clone(),
            shrink: plan.holds.shrink,
            state_lost: plan.holds.state_lost,
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
                since: crate::model::format_time(o.since),
                deletion_due_at: o.due.map(crate::model::format_time),
            })
            .collect();
        self.warnings = plan.warnings.iter().filter(|w| w.pair.is_none()).map(warning_status).collect();
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
            current_cycle: self.current.as_ref().map(|c| {
                let mut incomplete: Vec<SnapshotPart> = c.observe_errors.iter().map(|e| e.part).collect();
                incomplete.sort_unstable();
                incomplete.dedup();
                CurrentCycleStatus {
                    started_at: rfc3339(c.started_at),
                    running_seconds: generated_at.duration_since(c.started_at).unwrap_or_default().as_secs_f64(),
                    phase: c.phase,
                    observe_errors: c.observe_errors.clone(),
                    incomplete,
                    actions_planned: c.actions_planned,
                    actions: c.actions.clone(),
                }
            }),
            last_successful_cycle_at: self.last_success.map(rfc3339),
            holds: self.holds.clone(),
            deferred: self.deferred,
            pairs: self.pairs.clone(),
            orphans: self.orphans.clone(),
            warnings: self.warnings.clone(),
            fights: self.fights.clone(),
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
    mutex.lock()
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

async fn metrics_handler(Extract(state): Extract<State>) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], state.metrics().render()).into_response()
}

async fn healthz(Extract(state): Extract<State>) -> Response {
    let live = state.liveness();
    let verdict = if live.alive { "ok:" } else { "unhealthy:" };
    let body = match live.pass_quiet_for {
        Some(quiet) => format!(
            "{verdict} a pass is under way, started {}s ago; its last EC2 request ended {}s ago (limit {}s)\n",
            live.silent_for.as_secs(),
            quiet.as_secs(),
            live.limit.as_secs()
        ),
        None => {
            let what = if live.started_any { "last cycle started" } else { "started, no cycle yet," };
            format!("{verdict} {what} {}s ago (limit {}s)\n", live.silent_for.as_secs(), live.limit.as_secs())
        }
    };
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

/// Limits of the HTTP listener (`docs/operations.md`, "The HTTP listener").
#[derive(Clone, Debug)]
pub struct ListenerLimits {
    /// A connection must send a request's headers within this time of the
    /// server starting to wait for them. The wait starts when the connection
    /// opens and again after each answer, so this is also the idle
    /// (keep-alive) timeout: a connection that sends nothing is closed after it.
    pub header_read_timeout: Duration,
    /// Open connections at most. A connection beyond it closes the oldest
    /// connection with no request under way to make room, or is closed
    /// itself when every open connection is busy.
    pub max_connections: usize,
    /// The pause after an accept error such as `EMFILE` (too many open
    /// files) before accepting again, so that the loop neither spins nor stops.
    pub accept_error_backoff: Duration,
}

/// [`ListenerLimits::header_read_timeout`] by default.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// [`ListenerLimits::max_connections`] by default.
pub const MAX_CONNECTIONS: usize = 128;

impl Default for ListenerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            accept_error_backoff: Duration::from_millis(100),
        }
    }
}

/// One open connection: how many of its requests are under way, and how to
/// close it.
struct Slot {
    busy: Arc<std::sync::atomic::AtomicUsize>,
    close: tokio_util::sync::CancellationToken,
}

/// The open connections, oldest first (ids grow).
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: BTreeMap<u64, Slot>,
}

impl Connections {
    /// Closes the oldest connection with no request under way; false if
    /// every connection is busy.
    fn close_oldest_idle(&mut self) -> bool {
        use std::sync::atomic::Ordering;
        let idle = self.open.iter().find(|(_, slot)| slot.busy.load(Ordering::SeqCst) == 0).map(|(id, _)| *id);
        match idle.and_then(|id| self.open.remove(&id)) {
            Some(slot) => {
                slot.close.cancel();
                true
            }
            None => false,
        }
    }
}

/// Counts a request under way on its connection while alive.
struct Busy(Arc<std::sync::atomic::AtomicUsize>);

impl Busy {
    fn enter(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A warning logged at most once per [`Self::EVERY`], with the number of
/// occurrences it stood for: a flood of accept errors or of connections
/// must not become a flood of log lines.
#[derive(Default)]
struct RareWarning {
    last: Option<Instant>,
    suppressed: u64,
}

impl RareWarning {
    const EVERY: Duration = Duration::from_secs(10);

    /// `Some(n)` when this occurrence should be logged, `n` being how many
    /// were not since the last one logged; `None` when it should not.
    fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < Self::EVERY) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Accept errors about one connection that went away before it was
/// accepted: nothing to wait for.
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then finishes
/// the requests in flight, with the default [`ListenerLimits`].
///
/// # Errors
/// None today: accept errors are logged and waited out (the signature keeps
/// room for a fatal one).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: State,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with_limits(listener, router(state), ListenerLimits::default(), shutdown).await
}

/// Serves `app` over HTTP/1.1 on `listener` within `limits` until `shutdown`
/// resolves; then stops accepting, lets each connection finish its request
/// under way (idle ones close at once) and returns.
///
/// hyper enforces the header-read (and so idle) timeout; the connection cap
/// is written here because neither hyper, hyper-util nor tower limits
/// *connections* (tower's limits count requests, and an idle connection
/// makes none), and a plain cap that stops accepting would leave `/healthz`
/// queued behind idle sockets until they time out.
///
/// # Errors
/// None today: accept errors are logged and waited out.
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let connections = Arc::new(Mutex::new(Connections::default()));
    let mut tasks = tokio::task::JoinSet::new();
    let draining = tokio_util::sync::CancellationToken::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let max_connections = limits.max_connections.max(1);
    let mut accept_warning = RareWarning::default();
    let mut full_warning = RareWarning::default();
    tokio::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            // Reap finished connection tasks as they end.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                // EMFILE, ENFILE, ENOBUFS...: the connection waits in the
                // backlog. Free a descriptor if an idle connection holds one
                // and try again as soon as it is closed; otherwise wait a
                // little instead of spinning on the error.
                let freed = lock(&connections).close_oldest_idle();
                if let Some(suppressed) = accept_warning.due() {
                    tracing::warn!(error = %error, suppressed,
                        "the HTTP listener cannot accept a connection; retrying shortly");
                }
                let pause = if freed { Duration::from_millis(1) } else { limits.accept_error_backoff };
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
        };
        let (id, busy, close) = {
            let mut open = lock(&connections);
            if open.open.len() >= max_connections && !open.close_oldest_idle() {
                if let Some(suppressed) = full_warning.due() {
                    tracing::warn!(
                        max_connections,
                        suppressed,
                        "every HTTP connection is busy: a new connection was closed"
                    );
                }
                continue;
            }
            let id = open.next_id;
            open.next_id += 1;
            let slot = Slot { busy: Arc::default(), close: tokio_util::sync::CancellationToken::new() };
            let handles = (id, Arc::clone(&slot.busy), slot.close.clone());
            open.open.insert(id, slot);
            handles
        };
        let service = {
            let tower = TowerToHyperService::new(app.clone());
            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let busy = Busy::enter(&busy);
                let answer = hyper::service::Service::call(&tower, request);
                async move {
                    let response = answer.await;
                    drop(busy);
                    response
                }
            })
        };
        let http1 = http1.clone();
        let connections = Arc::clone(&connections);
        let draining = draining.clone();
        tasks.spawn(async move {
            let connection = http1.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let drain = tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(error = %error, "an HTTP connection ended with an error");
                    }
                    false
                }
                // Closed to make room: dropping the connection closes the socket.
                () = close.cancelled() => false,
                () = draining.cancelled() => true,
            };
            if drain {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
            lock(&connections).open.remove(&id);
        });
    }
    drop(listener);
    draining.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
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
        for metric in crate::metrics::CONTRACT_METRICS {
            assert!(body.contains(&format!("# TYPE {PREFIX}_{metric} ")), "{metric} missing");
        }
        let name = format!("{PREFIX}_config_reloads_total");
        assert_eq!(value(&samples, &name, &[("outcome", "rejected")]), Some(1.0));
        let name = format!("{PREFIX}_cycles_total");
        assert_eq!(value(&samples, &name, &[("outcome", "success")]), Some(1.0));
    }

    #[tokio::test]
    async fn status_names_the_pairs_in_a_fight_and_shows_another_writer() {
        use crate::plan::{Fight, RepairKind};
        let state = state();
        let web = key("sg-0a1", "vpc-9f2");
        let mut pass = PassBuilder::new()
            .pair(&web, "web", Some(existing("sg-77c")), Drift { add: 1, remove: 0, update: 0, links: 0 })
            .deferred(Deferred { fights: 1, ..Deferred::default() })
            .build();
        pass.fights = vec![Fight {
            pair: web,
            kind: RepairKind::Grant,
            since: t0(),
            repairs: 2,
            retry_after: t0() + Duration::from_secs(120),
            principal: None,
        }];
        pass.other_writer = true;
        state.record_pass(&pass, t0());
        let status = status_json(&state).await;
        assert_eq!(
            status["fights"],
            serde_json::json!([{
                "source": "sg-0a1",
                "vpc": "vpc-9f2",
                "kind": "grant",
                "since": "2027-01-15T08:00:00Z",
                "repairs": 2,
                "next_repair_at": "2027-01-15T08:02:00Z",
                "principal": null,
            }])
        );
        assert_eq!(status["deferred"]["fights"], 1);
        assert_eq!(status["last_cycle"]["other_writer"], true);
        assert_eq!(status["last_cycle"]["actions"]["yielded"], 0);
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
        assert_eq!(status["orphans"][0]["deletion_due_at"], "2023-11-14T22:23:20Z");

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
    async fn a_pass_under_way_is_shown_with_its_phase_and_the_describes_failing_so_far() {
        let state = state();
        assert_eq!(status_json(&state).await["current_cycle"], Value::Null);
        state.cycle_started();
        let status = status_json(&state).await;
        assert_eq!(status["current_cycle"]["phase"], "observing");
        assert_eq!(status["current_cycle"]["started_at"], "2027-01-15T08:00:00Z");
        assert_eq!(status["current_cycle"]["observe_errors"], serde_json::json!([]));
        let failure = ObserveError {
            part: SnapshotPart::SourceGroups,
            source: crate::ec2::Ec2Error::new(Operation::DescribeSecurityGroups, "InternalError", "boom"),
        };
        state.describe_failed(&failure);
        state.describe_failed(&failure);
        let status = status_json(&state).await;
        let current = &status["current_cycle"];
        assert_eq!(current["incomplete"], serde_json::json!(["source_groups"]));
        assert_eq!(current["observe_errors"].as_array().unwrap().len(), 2);
        assert_eq!(current["observe_errors"][0]["code"], "InternalError");
        assert_eq!(current["observe_errors"][0]["kind"], "transient");
        assert_eq!(status["last_cycle"], Value::Null, "no cycle finished yet");
        state.pass_phase(Phase::Planning);
        state.pass_planned(0);
        state.pass_phase(Phase::Executing);
        state.action_finished(&ActionResult::Done);
        state.action_finished(&ActionResult::Done);
        state.action_finished(&ActionResult::Skipped);
        let status = status_json(&state).await;
        assert_eq!(status["current_cycle"]["phase"], "executing");
        assert_eq!(status["current_cycle"]["actions_planned"], 0);
        assert_eq!(status["current_cycle"]["actions"], serde_json::json!({"done": 2, "skipped": 1}));

        // It ends as what it was, and is no longer under way.
        let blind = PassBuilder::new().incomplete(SnapshotPart::SourceGroups).build();
        assert_eq!(state.record_pass(&blind, t0()), CycleOutcome::Failed);
        let status = status_json(&state).await;
        assert_eq!(status["current_cycle"], Value::Null);
        assert_eq!(status["last_cycle"]["outcome"], "failed");
        assert_eq!(status["holds"]["incomplete"], serde_json::json!(["source_groups"]));
        assert_eq!(status["holds"]["destructive_held"], true);
    }

    #[tokio::test]
    async fn a_pass_stopped_during_observation_is_recorded_as_failed_with_why_and_no_actions() {
        let state = state();
        state.cycle_started();
        let mut stopped = PassBuilder::new().build();
        stopped.snapshot.incomplete.extend(SnapshotPart::VARIANTS.iter().copied());
        stopped.interrupted = true;
        assert_eq!(state.record_pass(&stopped, t0()), CycleOutcome::Failed);
        let status = status_json(&state).await;
        assert_eq!(status["last_cycle"]["outcome"], "failed");
        assert_eq!(status["last_cycle"]["error"], INTERRUPTED_OBSERVATION);
        assert_eq!(status["last_cycle"]["actions"]["cancelled"], 0);
        let samples = parse_exposition(&get(&state, "/metrics").await.2).unwrap();
        assert_eq!(value(&samples, &format!("{PREFIX}_cycles_total"), &[("outcome", "failed")]), Some(1.0));
    }

    #[tokio::test(start_paused = true)]
    async fn healthz_stays_200_through_a_long_pass_that_keeps_making_requests() {
        let state = state();
        state.cycle_started();
        // 30 s interval, limit 90 s; the pass runs 300 s, a request ending every 20 s.
        for _ in 0..15 {
            tokio::time::advance(Duration::from_secs(20)).await;
            state.metrics().record_request(Operation::DescribeSecurityGroups, "transient", Duration::from_secs(1));
            let (code, _, body) = get(&state, "/healthz").await;
            assert_eq!(code, StatusCode::OK, "{body}");
        }
        let (_, _, body) = get(&state, "/healthz").await;
        assert!(body.contains("a pass is under way, started 300s ago; its last EC2 request ended 0s ago"), "{body}");
        // A pass that stops making requests is not alive.
        tokio::time::advance(Duration::from_secs(91)).await;
        let (code, _, body) = get(&state, "/healthz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        // Once it finished, the usual rule: time since the last cycle started.
        state.record_pass(&PassBuilder::new().build(), t0());
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::SERVICE_UNAVAILABLE);
        state.cycle_started();
        assert_eq!(get(&state, "/healthz").await.0, StatusCode::OK);
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

    /// Reads until the server closes the connection (or `limit` passes);
    /// true when it closed.
    async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> bool {
        use tokio::io::AsyncReadExt as _;
        let mut buffer = [0u8; 4096];
        let read_to_end = async {
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(limit, read_to_end).await.is_ok()
    }

    #[tokio::test]
    async fn healthz_answers_at_once_past_more_idle_connections_than_the_cap_and_idle_ones_are_closed() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let limits = ListenerLimits {
            header_read_timeout: Duration::from_secs(3),
            max_connections: 4,
            ..ListenerLimits::default()
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(serve_with_limits(listener, router(state()), limits, stop.clone().cancelled_owned()));

        // Twelve sockets that never send a byte: three times the cap.
        let mut idle = Vec::new();
        for _ in 0..12 {
            idle.push(tokio::net::TcpStream::connect(address).await.unwrap());
        }
        // /healthz still answers, long before any idle socket times out.
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let asked = std::time::Instant::now();
        let response = client.get(format!("http://{address}/healthz")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        // Well before the 3 s timeout could have freed a slot.
        assert!(asked.elapsed() < Duration::from_secs(2), "took {:?}", asked.elapsed());
        let response = client.get(format!("http://{address}/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);

        // A keep-alive connection that goes quiet after its answer is closed too.
        let mut kept = tokio::net::TcpStream::connect(address).await.unwrap();
        kept.write_all(b"GET /readyz HTTP/1.1\r\nHost: test\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        kept.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.1 503");

        // Every idle socket is closed: made room for others, or timed out.
        let opened = std::time::Instant::now();
        for (i, stream) in idle.iter_mut().enumerate() {
            assert!(closed_within(stream, Duration::from_secs(8)).await, "idle socket {i} still open");
        }
        assert!(closed_within(&mut kept, Duration::from_secs(8)).await, "quiet keep-alive connection still open");
        assert!(opened.elapsed() < Duration::from_secs(8), "took {:?}", opened.elapsed());

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), server).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_connection_with_a_request_under_way_is_not_closed_to_make_room() {
        let mut open = Connections::default();
        let busy = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let close = tokio_util::sync::CancellationToken::new();
        open.open.insert(0, Slot { busy: Arc::clone(&busy), close: close.clone() });
        let guard = Busy::enter(&busy);
        assert!(!open.close_oldest_idle(), "the only connection is busy");
        assert!(!close.is_cancelled());
        drop(guard);
        assert!(open.close_oldest_idle());
        assert!(close.is_cancelled());
        assert!(open.open.is_empty());
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
