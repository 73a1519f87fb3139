//! Safety: what holds this pass's destructive actions.
//!
//! Runs after the mirrors are chosen (phase 2), before anything is planned.
//! Reads the snapshot's completeness, the count of managed sources and
//! linked instances, and the memory's shrink baseline and `state_lost_at`.
//! Decides the plan's holds (an incomplete snapshot, the shrink guard, a
//! lost state) and the next memory's baseline and shrink episode. The
//! per-cycle caps are spent by the phases that plan destructive actions
//! (grants, links, orphans) from the budgets on [`Planner`]. Rules:
//! docs/semantics.md, "Safety".

use super::{Baseline, Planner, WarningKind, round_secs};
use crate::model::{InstanceState, format_time};

impl<'a> Planner<'a> {
    /// Running Classic instances that are members of a managed group with
    /// `link_instances`: the instances the daemon keeps linked. A describe
    /// that suddenly returns far fewer is what the shrink guard is for.
    fn linked_instance_count(&self) -> usize {
        self.snap
            .instances
            .values()
            .filter(|i| i.vpc_id.is_none() && i.state == InstanceState::Running)
            .filter(|i| {
                i.groups.iter().any(|g| {
                    self.mapping(g).is_some_and(|m| m.source.is_classic() && m.link_instances && m.mirror.is_some())
                })
            })
            .count()
    }

    pub(super) fn apply_safety_guards(&mut self) {
        self.state_lost_hold();
        let incomplete: Vec<_> = self.snap.incomplete.iter().copied().collect();
        if !incomplete.is_empty() {
            let parts: Vec<&str> = incomplete.iter().map(|p| p.as_str()).collect();
            self.warn(
                WarningKind::IncompleteSnapshot,
                None,
                None,
                format!("the snapshot is incomplete ({}); no revoke, detach or delete this cycle", parts.join(", ")),
            );
            self.plan.holds.incomplete = incomplete;
            // Counts from a partial view are not a baseline, and cannot start
            // or end a shrink episode.
            return;
        }
        let current = Baseline { managed_sources: self.managed.len(), linked_instances: self.linked_instance_count() };
        let limit = self.config.safety.max_source_shrink;
        let shrunk = |before: usize, after: usize| {
            before > 0 && after < before && ((before - after) as f64 / before as f64) > limit
        };
        let drop = self.memory.baseline.filter(|base| {
            shrunk(base.managed_sources, current.managed_sources)
                || shrunk(base.linked_instances, current.linked_instances)
        });
        match drop {
            Some(base) => {
                let since = self.memory.shrink_since.unwrap_or(self.now);
                let waited = self.now.duration_since(since).unwrap_or_default();
                if waited >= self.config.safety.orphan_grace {
                    self.next_memory.baseline = Some(current);
                    self.next_memory.shrink_since = None;
                } else {
                    self.plan.holds.shrink = true;
                    self.next_memory.shrink_since = Some(since);
                    let left = self.config.safety.orphan_grace - waited;
                    let mut drops = Vec::new();
                    if shrunk(base.managed_sources, current.managed_sources) {
                        drops.push(format!(
                            "managed source groups {} -> {}",
                            base.managed_sources, current.managed_sources
                        ));
                    }
                    if shrunk(base.linked_instances, current.linked_instances) {
                        drops.push(format!(
                            "linked instances {} -> {}",
                            base.linked_instances, current.linked_instances
                        ));
                    }
                    self.warn(
                        WarningKind::SafetyHold,
                        None,
                        None,
                        format!(
                            "{} dropped by more than {:.0}% (max_source_shrink); destructive actions held for \
                             another {} unless it recovers",
                            drops.join(" and "),
                            limit * 100.0,
                            humantime::format_duration(round_secs(left))
                        ),
                    );
                }
            }
            None => {
                self.next_memory.baseline = Some(current);
                self.next_memory.shrink_since = None;
            }
        }
    }

    /// A daemon that lost its state (a state file it could not read) has
    /// no shrink-guard baseline it can trust: it holds destructive actions
    /// for one `orphan_grace` from the loss, building a new baseline meanwhile.
    fn state_lost_hold(&mut self) {
        let Some(lost) = self.memory.state_lost_at else { return };
        let grace = self.config.safety.orphan_grace;
        let waited = self.now.duration_since(lost).unwrap_or_default();
        if waited >= grace {
            self.next_memory.state_lost_at = None;
            return;
        }
        self.plan.holds.state_lost = true;
        self.warn(
            WarningKind::StateLost,
            None,
            None,
            format!(
                "the daemon's state could not be read at {} (see the log); destructive actions held for another {} \
                 (one orphan_grace) while the shrink guard takes a new baseline",
                format_time(lost),
                humantime::format_duration(round_secs(grace - waited))
            ),
        );
    }
}
