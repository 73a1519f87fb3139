//! The metrics of a finished pass: cycles and their outcome, actions and
//! deferrals, drift, conflicts, orphans, safety holds, fights, observe
//! errors. Counters accumulate; gauges describe the last pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};
use strum::VariantArray as _;

use prometheus::{Gauge, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec};

use super::declare::metric_set;
use super::gauge;
use crate::execute::OutcomeKind;
use crate::model::SnapshotPart;
use crate::plan::{Action, ActionKind, Deferred, Plan, RepairKind, WarningKind};
use crate::reconcile::{CycleOutcome, PassReport};

/// Buckets of `cycle_duration_seconds`: 100 ms to 10 min.
pub const CYCLE_BUCKETS: [f64; 13] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Every `conflicts{kind}` label value ([`WarningKind::conflict_kind`]).
pub const CONFLICT_KINDS: [WarningKind; 7] = [
    WarningKind::ConflictNameTaken,
    WarningKind::ConflictForeignLink,
    WarningKind::ConflictMultiVpc,
    WarningKind::ConflictDuplicateMapping,
    WarningKind::ConflictDuplicateName,
    WarningKind::ConflictInvalidMapping,
    WarningKind::ConflictForeignOwner,
];

/// `drift_grants{direction}` label values.
pub const DRIFT_DIRECTIONS: [&str; 3] = ["add", "remove", "update"];

/// `actions_deferred_total{reason}` label values.
pub const DEFERRED_REASONS: [&str; 6] = ["revoke_cap", "delete_cap", "unlink_cap", "quota", "safety_hold", "fight"];

/// The `actions_deferred_total` increments of one plan, by reason.
fn deferred_by_reason(deferred: &Deferred) -> [(&'static str, usize); 6] {
    [
        ("revoke_cap", deferred.revokes),
        ("delete_cap", deferred.deletes),
        ("unlink_cap", deferred.unlinks),
        // Grants not added because the revocations that would make room under
        // the rules-per-group quota were deferred or held.
        ("quota", deferred.adds),
        ("safety_hold", deferred.held),
        // Repairs of pairs backing off in a fight, and what depends on them.
        ("fight", deferred.fights),
    ]
}

/// Grant drift of a plan: the sum of its pairs' drift, by direction.
fn grant_drift(plan: &Plan) -> [(&'static str, usize); 3] {
    let (mut add, mut remove, mut update) = (0, 0, 0);
    for pair in &plan.pairs {
        add += pair.drift.add;
        remove += pair.drift.remove;
        update += pair.drift.update;
    }
    [("add", add), ("remove", remove), ("update", update)]
}

/// Link changes of a plan: attach, detach and relink actions, each counted
/// once even when it concerns several pairs.
fn link_drift(plan: &Plan) -> usize {
    plan.actions
        .iter()
        .filter(|a| matches!(a.action, Action::Attach { .. } | Action::Detach { .. } | Action::Relink { .. }))
        .count()
}

metric_set! {
    /// The metrics of passes.
    pub(super) struct PassMetrics {
        cycles: IntCounterVec = (
            "cycles_total",
            "Reconcile cycles, by how they ended (success, partial, incomplete, failed).",
            labels ["outcome"]
        ),
        cycle_duration: Histogram = (
            "cycle_duration_seconds",
            "Wall time of one reconcile cycle (observe, plan, execute).",
            buckets CYCLE_BUCKETS
        ),
        last_success: Gauge = (
            "last_successful_cycle_timestamp_seconds",
            "Unix time at which the last cycle with outcome success finished; 0 before the first."
        ),
        managed_pairs: IntGauge = ("managed_pairs", "Mirror pairs managed in the last cycle."),
        drift_grants: IntGaugeVec = (
            "drift_grants",
            "Grants that differed between sources and mirrors in the last cycle, by direction.",
            labels ["direction"]
        ),
        drift_links: IntGauge = (
            "drift_links",
            "ClassicLink changes (attach, detach, relink) the last cycle planned, audited ones included."
        ),
        actions: IntCounterVec = (
            "actions_total",
            "Planned actions, by kind and by how they ended.",
            labels ["kind", "outcome"]
        ),
        deferred: IntCounterVec = (
            "actions_deferred_total",
            "Actions held back by a per-cycle cap, the rules quota or a safety hold; counted again every cycle they wait.",
            labels ["reason"]
        ),
        unmirrorable: IntGauge = (
            "unmirrorable_grants",
            "Source grants that could not be mirrored in the last cycle (unmanaged, other account, other VPC, ...)."
        ),
        conflicts: IntGaugeVec = ("conflicts", "Conflicts reported by the last cycle, by kind.", labels ["kind"]),
        orphans: IntGauge = (
            "orphans",
            "Mirrors whose source is no longer managed or no longer exists, in the last cycle."
        ),
        overflow_groups: IntGauge = (
            "overflow_groups",
            "Overflow groups in use (existing or to be created) over all pairs, in the last cycle."
        ),
        expanded_groups: IntGauge = (
            "expanded_groups",
            "Groups no mapping manages that expanding mirrors reference, each kept as a prefix list, in the last cycle."
        ),
        expanded_addresses: IntGauge = (
            "expanded_addresses",
            "Running members' addresses of the expanded groups (what their prefix lists hold), in the last cycle."
        ),
        safety_hold: IntGauge = (
            "safety_hold",
            "1 when the last cycle held destructive actions (incomplete snapshot, shrink guard or lost state), else 0."
        ),
        observe_errors: IntCounterVec = (
            "observe_errors_total",
            "Describe calls that failed and left a part of the snapshot incomplete.",
            labels ["part"]
        ),
        fights: IntCounterVec = (
            "fights_total",
            "Fights detected: the same repair of a pair needed safety.fight_repairs times within \
             safety.fight_window, by what keeps changing (mirror, grant, link).",
            labels ["kind"]
        ),
        fighting: IntGaugeVec = (
            "fights",
            "Pairs in a fight after the last cycle (their repairs back off), by what keeps changing.",
            labels ["kind"]
        ),
        other_writer: IntCounter = (
            "other_writer_passes_total",
            "Cycles whose writes were mostly already done (at least 2, and more than those EC2 did for us), or \
             that yielded to another writer doing the same work: another writer works on the same pairs."
        ),
    }
}

impl PassMetrics {
    /// Creates every known label combination at zero.
    pub(super) fn zero(&self) {
        for outcome in CycleOutcome::VARIANTS {
            self.cycles.with_label_values(&[outcome.as_str()]);
        }
        for direction in DRIFT_DIRECTIONS {
            self.drift_grants.with_label_values(&[direction]);
        }
        for kind in ActionKind::VARIANTS {
            for outcome in OutcomeKind::VARIANTS {
                self.actions.with_label_values(&[kind.as_str(), outcome.as_str()]);
            }
        }
        for reason in DEFERRED_REASONS {
            self.deferred.with_label_values(&[reason]);
        }
        for kind in CONFLICT_KINDS.iter().filter_map(WarningKind::conflict_kind) {
            self.conflicts.with_label_values(&[kind]);
        }
        for part in SnapshotPart::VARIANTS {
            self.observe_errors.with_label_values(&[part.as_str()]);
        }
        for kind in RepairKind::VARIANTS {
            self.fights.with_label_values(&[kind.as_str()]);
            self.fighting.with_label_values(&[kind.as_str()]);
        }
    }

    /// Records `pass`, which ended as `outcome`; `seen_conflicts` are the
    /// conflict kinds seen so far (to reset those no longer present).
    pub(super) fn record(
        &self,
        pass: &PassReport,
        started_at: SystemTime,
        outcome: CycleOutcome,
        seen_conflicts: &mut BTreeSet<&'static str>,
    ) {
        let plan = &pass.plan;

        self.cycles.with_label_values(&[outcome.as_str()]).inc();
        self.cycle_duration.observe(pass.duration.as_secs_f64());
        if outcome == CycleOutcome::Success {
            let finished = started_at + pass.duration;
            let unix = finished.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
            self.last_success.set(unix.as_secs_f64());
        }
        for o in &pass.report.outcomes {
            self.actions.with_label_values(&[o.kind.as_str(), o.result.label()]).inc();
        }
        for (reason, count) in deferred_by_reason(&plan.deferred) {
            self.deferred.with_label_values(&[reason]).inc_by(count as u64);
        }
        for error in &pass.observe_errors {
            self.observe_errors.with_label_values(&[error.part.as_str()]).inc();
        }
        for key in &pass.fights_started {
            self.fights.with_label_values(&[key.kind.as_str()]).inc();
        }
        if pass.other_writer {
            self.other_writer.inc();
        }
        for kind in RepairKind::VARIANTS.iter().copied() {
            let count = pass.fights.iter().filter(|f| f.kind == kind).count();
            self.fighting.with_label_values(&[kind.as_str()]).set(gauge(count));
        }

        // Last-pass gauges: every label value is overwritten.
        self.managed_pairs.set(gauge(plan.pairs.len()));
        for (direction, count) in grant_drift(plan) {
            self.drift_grants.with_label_values(&[direction]).set(gauge(count));
        }
        self.drift_links.set(gauge(link_drift(plan)));
        // A prefix list the target cannot use is a grant that cannot be mirrored too.
        let unmirrorable = |kind| matches!(kind, WarningKind::Unmirrorable | WarningKind::PrefixListUnavailable);
        self.unmirrorable.set(gauge(plan.warnings.iter().filter(|w| unmirrorable(w.kind)).count()));
        let mut conflicts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for kind in plan.warnings.iter().filter_map(|w| w.kind.conflict_kind()) {
            *conflicts.entry(kind).or_default() += 1;
        }
        seen_conflicts.extend(CONFLICT_KINDS.iter().filter_map(WarningKind::conflict_kind));
        seen_conflicts.extend(conflicts.keys().copied());
        for kind in seen_conflicts.iter() {
            self.conflicts.with_label_values(&[*kind]).set(gauge(conflicts.get(kind).copied().unwrap_or(0)));
        }
        self.orphans.set(gauge(plan.orphans.len()));
        self.overflow_groups.set(gauge(plan.pairs.iter().map(|p| p.shards.len()).sum()));
        self.expanded_groups.set(gauge(plan.expansions.len()));
        self.expanded_addresses.set(gauge(plan.expansions.iter().map(|e| e.members).sum()));
        self.safety_hold.set(i64::from(plan.holds.destructive_held()));
    }
}
