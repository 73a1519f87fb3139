//! Phase 5, orphans: mirrors no pair claims any more, from their marking to
//! their removal.
//!
//! Runs in two steps. `find_orphans` (before grants and links) reads the
//! snapshot's mirrors that no pair chose, their `orphanedSince` and owner
//! tags and the memory's `orphans_since`, and decides each orphan's stage
//! (kept, waiting out `orphan_grace`, due); orphans that must keep working
//! are `protected`, so grants and links leave their references and links
//! alone. `plan_orphans` (after links) reads what grants and links left
//! pending and the memory's deletion backoffs, and plans the
//! `orphanedSince` marks and unmarks, the revokes of other orphans'
//! references, and the deletions (an untag for a VPC's `default` group),
//! within the holds and the delete and revoke budgets. Rules:
//! docs/semantics.md, "Orphans" and "Safety".

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::mirrors::{MirrorChoice, Ownership, ownership};
use super::{Action, ActionId, ORPHAN_TAG_MAX_SKEW, Orphan, PlannedAction, Planner, WarningKind, round_secs};
use crate::config::DEFAULT_OWNER;
use crate::model::{
    Grant, GroupId, ORPHANED_SINCE_TAG, OWNER_TAG, OWNERSHIP_TAG, Peer, SecurityGroup, Snapshot, format_time,
    parse_time,
};

/// Where an orphan is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OrphanStage {
    /// `delete_orphans = false`: reported, never removed.
    Kept,
    /// Within `orphan_grace`, with this much left.
    Waiting(Duration),
    /// Grace over: detach, drop references, delete.
    Due,
}

/// One orphan found in phase 5.
#[derive(Debug)]
pub(super) struct OrphanEntry {
    id: GroupId,
    stage: OrphanStage,
    /// The `orphanedSince` value to write, when the group lacks a valid one
    /// and the snapshot is complete.
    mark: Option<String>,
}

impl<'a> Planner<'a> {
    /// Finds the orphans (tagged groups no pair claims), remembers since when,
    /// and decides which must keep working this pass.
    pub(super) fn find_orphans(&mut self) {
        let complete = self.snap.is_complete();
        if complete {
            self.next_memory.orphans_since.clear();
        }
        let snap = self.snap;
        for group in snap.vpc_groups.values() {
            // Overflow groups a pair keeps are decided by the grants phase.
            if !self.shard_members.contains(&group.id) {
                self.consider_orphan(group);
            }
        }
    }

    /// Makes `group` an orphan when it is one of ours that no pair claims:
    /// since when, whether to mark it, and its stage.
    pub(super) fn consider_orphan(&mut self, group: &SecurityGroup) {
        let complete = self.snap.is_complete();
        let me = self.config.daemon.owner.as_str();
        let (Some(source), Some(_)) = (group.mirrored_from(), &group.vpc_id) else { return };
        // A chosen mirror is not an orphan.
        if self.source_of_mirror.contains_key(&group.id) {
            return;
        }
        // Only our own orphans. One without an owner tag that nobody
        // claimed is an orphan of a deployment that could have made it:
        // one managing its source (a duplicate of its mirror), or the
        // deployment named `default`, which an estate made before owner
        // tags belongs to (`docs/operations.md`).
        match ownership(group, me) {
            Ownership::Mine => {}
            Ownership::Foreign(_) => return,
            Ownership::Unowned if self.managed_index.contains_key(&source) || me == DEFAULT_OWNER => {}
            Ownership::Unowned => return,
        }
        self.ours.insert(group.id.clone());
        // The tag is the authority: a restarted daemon, or a second one,
        // counts the grace from the same instant. Until it is written,
        // this daemon's memory (a tag write that failed), else now.
        let (since, mark) = match group.orphaned_since_tag() {
            Some(value) => match self.orphaned_since(value) {
                Some(since) => (since, None),
                None => {
                    self.warn(
                        WarningKind::OrphanTagInvalid,
                        None,
                        Some(group.id.to_string()),
                        format!(
                            "orphaned mirror {} ({}) carries {ORPHANED_SINCE_TAG}={value:?}, which is not an \
                             RFC 3339 UTC time up to now; its orphan_grace starts again from now",
                            group.id, group.name
                        ),
                    );
                    (self.now, Some(format_time(self.now)))
                }
            },
            None => {
                let remembered = self.memory.orphans_since.get(&group.id).copied().filter(|t| *t <= self.now);
                let since = remembered.unwrap_or(self.now);
                (since, Some(format_time(since)))
            }
        };
        // A partial view may show a claimed mirror as an orphan: only a
        // complete one starts (or records) the grace.
        let mark = mark.filter(|_| complete);
        if complete {
            self.next_memory.orphans_since.insert(group.id.clone(), since);
        }
        let grace = self.config.safety.orphan_grace;
        let age = self.now.duration_since(since).unwrap_or_default();
        let stage = if !self.config.safety.delete_orphans {
            OrphanStage::Kept
        } else if age < grace {
            OrphanStage::Waiting(grace - age)
        } else {
            OrphanStage::Due
        };
        let due = match stage {
            OrphanStage::Kept => None,
            _ => since.checked_add(grace),
        };
        if stage != OrphanStage::Due {
            self.protected.insert(group.id.clone());
        }
        self.plan.orphans.push(Orphan {
            group: group.id.clone(),
            vpc: group.vpc_id.clone().expect("VPC group"),
            name: group.name.clone(),
            source: group.mirrored_from().expect("tagged"),
            since,
            due,
        });
        self.orphans.push(OrphanEntry { id: group.id.clone(), stage, mark });
    }

    /// The time an `orphanedSince` tag value names, unless it is malformed
    /// or further in the future than [`ORPHAN_TAG_MAX_SKEW`].
    fn orphaned_since(&self, value: &str) -> Option<SystemTime> {
        let since = parse_time(value)?;
        let latest = self.now.checked_add(ORPHAN_TAG_MAX_SKEW)?;
        (since <= latest).then_some(since)
    }

    /// Claimed mirrors that still carry an `orphanedSince` tag (claimed
    /// again, or adopted with a stale one) lose it, so that a later orphaning
    /// starts a fresh grace.
    fn plan_unmarks(&mut self) {
        for index in 0..self.managed.len() {
            let mapping = &self.managed[index];
            let Some(MirrorChoice::Existing { id, .. }) = &mapping.mirror else { continue };
            let Some(group) = self.snap.vpc_groups.get(id) else { continue };
            if group.orphaned_since_tag().is_none() {
                continue;
            }
            let action = Action::UnmarkOrphan { group: id.clone(), vpc: mapping.vpc.clone() };
            let (deps, audit) = (mapping.prepare.into_iter().collect(), mapping.audit);
            let key = self.plan.pairs[mapping.pair].key.clone();
            self.push(action, deps, audit, Some(key));
        }
        // Overflow groups in use again while waiting out their grace.
        for index in 0..self.managed.len() {
            let mapping = &self.managed[index];
            let marked: Vec<GroupId> = mapping
                .shards
                .iter()
                .filter_map(|slot| slot.group.existing())
                .filter(|id| self.snap.vpc_groups.get(*id).is_some_and(|g| g.orphaned_since_tag().is_some()))
                .cloned()
                .collect();
            let key = self.plan.pairs[mapping.pair].key.clone();
            let (vpc, audit) = (mapping.vpc.clone(), mapping.audit);
            for group in marked {
                self.push(Action::UnmarkOrphan { group, vpc: vpc.clone() }, Vec::new(), audit, Some(key.clone()));
            }
        }
    }

    pub(super) fn plan_orphans(&mut self) {
        let complete = self.snap.is_complete();
        let audit = self.global_audit();
        let held = self.destructive_held();
        // Overflow groups the grants phase retired joined the orphans late.
        self.orphans.sort_by(|a, b| a.id.cmp(&b.id));
        self.plan.orphans.sort_by(|a, b| a.group.cmp(&b.group));
        self.plan_unmarks();
        let orphans: BTreeSet<GroupId> = self.orphans.iter().map(|o| o.id.clone()).collect();
        // The orphanedSince tags first: a removal depends on its orphan's.
        let mut marks: BTreeMap<GroupId, ActionId> = BTreeMap::new();
        for orphan in &mut self.orphans {
            let Some(since) = orphan.mark.take() else { continue };
            let group = &self.snap.vpc_groups[&orphan.id];
            let vpc = group.vpc_id.clone().expect("VPC group");
            let id = ActionId(self.plan.actions.len());
            self.plan.actions.push(PlannedAction {
                id,
                action: Action::MarkOrphan { group: orphan.id.clone(), vpc, since },
                depends_on: Vec::new(),
                audit,
                pair: None,
            });
            marks.insert(orphan.id.clone(), id);
        }
        // Deletions and untags to plan, with their dependencies and the rules
        // of other orphans to revoke first.
        let mut due: Vec<(Action, Vec<ActionId>, OrphanReferences)> = Vec::new();
        for OrphanEntry { id, stage, .. } in std::mem::take(&mut self.orphans) {
            let group = &self.snap.vpc_groups[&id];
            let (source, vpc) = (group.mirrored_from().expect("tagged"), group.vpc_id.clone().expect("VPC group"));
            let label = format!("{} ({}) in {vpc}", group.id, group.name);
            match stage {
                OrphanStage::Kept => {
                    self.warn(
                        WarningKind::OrphanKept,
                        None,
                        Some(group.id.to_string()),
                        format!("orphaned mirror {label} of {source} is kept: delete_orphans = false"),
                    );
                    continue;
                }
                OrphanStage::Waiting(left) => {
                    self.warn(
                        WarningKind::OrphanWaiting,
                        None,
                        Some(group.id.to_string()),
                        format!(
                            "orphaned mirror {label} of {source}: its links and references stay; removal due at \
                             {} (in {}, orphan_grace)",
                            self.now.checked_add(left).map_or_else(|| "a time beyond 9999".to_owned(), format_time),
                            humantime::format_duration(round_secs(left))
                        ),
                    );
                    continue;
                }
                OrphanStage::Due => {}
            }
            if let Some(backoff) = self.memory.delete_backoff.get(&group.id)
                && backoff.retry_after > self.now
            {
                let left = backoff.retry_after.duration_since(self.now).unwrap_or_default();
                self.warn(
                    WarningKind::DeleteBackoff,
                    None,
                    Some(group.id.to_string()),
                    format!(
                        "deleting orphaned mirror {label} failed {} time(s) with DependencyViolation; \
                         next try in {}",
                        backoff.failures,
                        humantime::format_duration(round_secs(left))
                    ),
                );
                continue;
            }
            if held {
                self.plan.deferred.held += 1;
                continue;
            }
            let is_default = group.name == "default";
            let pending = self.links_pending.contains(&group.id)
                || self.refs_pending.contains(&group.id)
                || (!audit && self.removed_by_audit.contains(&group.id));
            if !is_default && pending {
                // Deleting would fail with DependencyViolation: wait until the
                // detaches and revokes it needs have run. An audited deletion
                // only needs them planned, audited or not.
                self.plan.deferred.deletes += 1;
                continue;
            }
            // Other orphans are not synced, so the rule sync does not drop
            // their references to this one; EC2 refuses the deletion while
            // they exist (forever, when two orphans reference each other).
            let from_orphans = if is_default { Vec::new() } else { orphan_references(self.snap, &orphans, &group.id) };
            let revokes: usize = from_orphans.iter().map(|(_, grants)| grants.len()).sum();
            if !audit && !is_default {
                if self.delete_budget == 0 {
                    self.plan.deferred.deletes += 1;
                    continue;
                }
                if revokes > self.revoke_budget {
                    self.plan.deferred.deletes += 1;
                    self.plan.deferred.revokes += revokes;
                    continue;
                }
                self.delete_budget -= 1;
                self.revoke_budget -= revokes;
            }
            let action = if is_default {
                // Its orphanedSince tag goes too: left behind, it would start
                // a later orphaning's grace in the past.
                let keys = vec![OWNERSHIP_TAG.to_owned(), OWNER_TAG.to_owned(), ORPHANED_SINCE_TAG.to_owned()];
                Action::UntagGroup { group: group.id.clone(), vpc, keys }
            } else {
                Action::DeleteMirror { group: group.id.clone(), vpc, name: group.name.clone(), source }
            };
            // No orphan is removed before its orphaning is on record.
            let mut deps: Vec<ActionId> = marks.get(&group.id).copied().into_iter().collect();
            if !is_default {
                deps.extend(self.unlinks_of_group.get(&group.id).into_iter().flatten().copied());
                deps.extend(self.revokes_of_ref.get(&group.id).into_iter().flatten().copied());
            }
            due.push((action, deps, from_orphans));
        }
        // The revokes first (one per referring orphan), then the deletions,
        // each after the revokes of references to it and of rules on it.
        let mut revoke_on: BTreeMap<GroupId, Vec<Grant>> = BTreeMap::new();
        for (_, _, from_orphans) in &due {
            for (referrer, grants) in from_orphans {
                revoke_on.entry(referrer.clone()).or_default().extend(grants.iter().cloned());
            }
        }
        let mut revoke_id: BTreeMap<GroupId, ActionId> = BTreeMap::new();
        for (referrer, mut grants) in revoke_on {
            grants.sort();
            let id = self.push(Action::Revoke { group: referrer.clone(), grants }, vec![], audit, None);
            revoke_id.insert(referrer, id);
        }
        for (action, mut deps, from_orphans) in due {
            if let Action::DeleteMirror { group, .. } = &action {
                deps.extend(revoke_id.get(group).copied());
            }
            deps.extend(from_orphans.iter().map(|(referrer, _)| revoke_id[referrer]));
            self.push(action, deps, audit, None);
        }
        if complete {
            self.next_memory.delete_backoff.retain(|g, _| self.next_memory.orphans_since.contains_key(g));
        }
    }
}

/// Rules of other orphans referencing one orphan, by referring orphan.
type OrphanReferences = Vec<(GroupId, Vec<Grant>)>;

/// The rules of other orphans that reference `target`, by orphan. Default
/// groups are left out: of those only the tag is ever removed.
fn orphan_references(snap: &Snapshot, orphans: &BTreeSet<GroupId>, target: &GroupId) -> OrphanReferences {
    snap.vpc_groups
        .values()
        .filter(|g| &g.id != target && g.name != "default" && orphans.contains(&g.id))
        .filter_map(|g| {
            let grants: Vec<Grant> = g
                .ingress
                .iter()
                .filter(|r| matches!(&r.key.peer, Peer::Group { group, owner: None } if group == target))
                .cloned()
                .collect();
            (!grants.is_empty()).then(|| (g.id.clone(), grants))
        })
        .collect()
}
