//! The `/status` document and its parts (docs/metrics.md, "`/status`"):
//! plain serde types, versioned by [`STATUS_JSON_VERSION`].

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::config::Mode;
use crate::model::{GroupId, SnapshotPart, VpcId};
use crate::plan::{ActionKind, Deferred, Drift, RepairKind, WarningKind};
use crate::reconcile::{CycleOutcome, Phase};

/// Schema version of the `/status` document: fields are only added within a
/// version (`docs/metrics.md`).
pub const STATUS_JSON_VERSION: u32 = 1;

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
    /// The mirror's overflow groups in use (docs/semantics.md, "Overflow
    /// groups"); absent when its grants fit in the mirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<crate::plan::ShardPlan>,
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
    /// Groups no mapping manages that expanding mirrors reference: the
    /// prefix list of each (absent while created) and its members' count.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expansions: Vec<crate::plan::Expansion>,
    /// Warnings not about one pair (conflicts among them carry `conflict`).
    pub warnings: Vec<WarningStatus>,
    /// Pairs in a fight after the last cycle, by pair then kind.
    #[serde(default)]
    pub fights: Vec<FightStatus>,
    /// The event source, when `[events]` configures one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventSourceStatus>,
    /// Each target account's health, by account name (one loop each:
    /// docs/architecture.md, "Many targets"). The pass fields above
    /// describe the lead target's passes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<super::TargetStatus>,
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
    pub(super) fn of(hub: &crate::events::runner::EventHub) -> Self {
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

/// `time` as RFC 3339, to the second.
pub(super) fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
