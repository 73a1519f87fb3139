//! The pure planner: `plan(config, snapshot, memory, now) -> (Plan, Memory)`.
//!
//! Sits between observe and execute. No I/O, no clock (time is `now`), no
//! randomness; everything iterates `BTreeMap`s so the output is deterministic.
//! It decides, in phases whose dependencies always point backwards:
//!
//! 1. which source groups are managed (config entries, then discovery tags);
//! 2. which VPC group is each pair's mirror (ours by tag, the VPC `default`
//!    group, an adopted group, or one to create) and what conflicts;
//! 3. each mirror's desired grants (references translated to mirrors) and the
//!    authorize / revoke / description updates, make-before-break, within the
//!    rules-per-group quota;
//! 4. ClassicLink links (attach, relink, detach);
//! 5. orphans (grace counted from their `classiclinkmirror:orphanedSince`
//!    tag, which it writes when first seeing one; `delete_orphans`, backoff);
//! 6. fights: the repairs of a pair backing off because something keeps
//!    undoing them are taken out of the plan for now (`fights.rs`);
//!
//! and applies the safety rules (docs/semantics.md, "Safety") on the way: an incomplete snapshot or the shrink guard
//! holds every destructive action, per-cycle caps defer the excess in a
//! deterministic order, and audited mappings are planned but marked `audit`.

mod fights;
mod grants;
mod links;
mod managed;
mod mirrors;
mod render;
mod safety;
mod types;

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

pub use fights::{Executed, Fight, FightKey, FightPolicy, FightState, RepairHistory, RepairKind};
pub use render::{PLAN_JSON_VERSION, Summary, render_json, render_text};
pub use types::*;

use crate::config::{Config, DEFAULT_OWNER, Mode};
use crate::mapping::Unresolved;
use crate::model::{
    Grant, GrantKey, GroupId, Instance, InstanceId, InstanceState, Link, MAX_GROUPS_PER_LINK, ORPHANED_SINCE_TAG,
    OWNER_TAG, OWNERSHIP_TAG, Peer, SecurityGroup, Snapshot, VpcId, format_time, mirror_description, parse_time,
    sanitize_text,
};
use grants::PeerTarget;
#[cfg(test)]
use grants::cmp_planned_observed;
use mirrors::{MirrorChoice, Ownership, ownership};

/// How far in the future an `orphanedSince` tag may lie and still be
/// believed (clocks of two daemons differ a little). A later one is treated
/// as malformed: rewritten to now, so that it cannot keep an orphan forever.
pub const ORPHAN_TAG_MAX_SKEW: Duration = Duration::from_secs(300);

/// Plans one cycle. Pure and deterministic; returns the plan and the memory
/// to pass to the next cycle.
pub fn plan(config: &Config, snapshot: &Snapshot, memory: &Memory, now: SystemTime) -> (Plan, Memory) {
    Planner::new(config, snapshot, memory, now).run()
}

/// A hash map for the planner's indexes by id or name, meant to be probed,
/// not iterated. Its hasher has a fixed seed, so even an iteration would be
/// the same on every run and could not make the plan differ between two runs
/// on the same input. The keys are short text (ids AWS chooses, group names),
/// hashed hundreds of thousands of times a plan, for which foldhash is several
/// times cheaper than SipHash; the planner hashes names from EC2 and the
/// config, never from an attacker who could aim collisions at a known seed
/// (and a collision would cost time, not correctness).
type LookupMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// A hash set for the planner's indexes; see [`LookupMap`].
type LookupSet<K> = HashSet<K, foldhash::fast::FixedState>;

/// A managed source group and where it goes; from phase 2 on, also what
/// the plan has decided for it so far.
#[derive(Clone, Debug)]
struct Mapping<'a> {
    source: &'a SecurityGroup,
    vpc: VpcId,
    name: String,
    link_instances: bool,
    audit: bool,
    adopt: bool,
    enable_classiclink: bool,
    origin: Origin,
    /// Its mirror, when one can be had (phase 2).
    mirror: Option<MirrorChoice>,
    /// Its pair's index in `plan.pairs` (phase 2; that list is sorted only at
    /// the end). Pairs are pushed in source order, so this index orders
    /// pairs as their keys do.
    pair: usize,
    /// The create or tag action of its mirror (phase 3).
    prepare: Option<ActionId>,
    /// Whether its instances are linked to its mirror: a Classic source with
    /// `link_instances`, a mirror, and ClassicLink usable in its VPC this
    /// cycle (known after the enablement phase).
    links_instances: bool,
}

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
struct OrphanEntry {
    id: GroupId,
    stage: OrphanStage,
    /// The `orphanedSince` value to write, when the group lacks a valid one
    /// and the snapshot is complete.
    mark: Option<String>,
}

struct Planner<'a> {
    config: &'a Config,
    snap: &'a Snapshot,
    memory: &'a Memory,
    now: SystemTime,
    plan: Plan,
    next_memory: Memory,
    /// Managed sources in id order, the order every phase walks them in.
    managed: Vec<Mapping<'a>>,
    /// Index of each managed source in `managed`. Looked up per rule and per
    /// instance, never iterated (its order would not be deterministic).
    managed_index: LookupMap<GroupId, usize>,
    /// How grants naming each managed source translate (see [`PeerTarget`]).
    peer_targets: Vec<PeerTarget>,
    /// The source (index in `managed`) of each existing chosen mirror.
    source_of_mirror: LookupMap<GroupId, usize>,
    /// Groups counted as ours: mirrors tagged with our owner, the chosen
    /// mirrors (claimed and tagged ones included) and our orphans. Mirrors of
    /// other deployments never are: to grants and links they are foreign.
    ours: LookupSet<GroupId>,
    /// Mirrors of other deployments: never written, tagged, unlinked or
    /// deleted.
    theirs: LookupSet<GroupId>,
    /// Orphans that must keep working: still within `orphan_grace`, or kept
    /// by `delete_orphans = false`. References to them and links with them
    /// are left alone (docs/semantics.md, "Orphans": detach and drop references only once the
    /// orphan is due for removal).
    protected: LookupSet<GroupId>,
    /// Orphans, with whether their grace is over, in id order.
    orphans: Vec<OrphanEntry>,
    /// `EnableClassicLink` action per VPC.
    enable_action: BTreeMap<VpcId, ActionId>,
    /// VPCs where links can be made this cycle.
    linkable_vpcs: BTreeSet<VpcId>,
    /// Revoke actions that remove a reference to each group.
    revokes_of_ref: BTreeMap<GroupId, Vec<ActionId>>,
    /// Groups whose references could not all be revoked this cycle.
    refs_pending: BTreeSet<GroupId>,
    /// Link actions removing each group from a link.
    unlinks_of_group: BTreeMap<GroupId, Vec<ActionId>>,
    /// Groups still in a link that is not being fixed this cycle.
    links_pending: BTreeSet<GroupId>,
    /// Groups whose links or references are removed by audited actions only
    /// shown, never run: they block an executed deletion, not an audited one.
    removed_by_audit: BTreeSet<GroupId>,
    revoke_budget: usize,
    unlink_budget: usize,
    delete_budget: usize,
}

impl<'a> Planner<'a> {
    fn new(config: &'a Config, snap: &'a Snapshot, memory: &'a Memory, now: SystemTime) -> Self {
        Self {
            config,
            snap,
            memory,
            now,
            plan: Plan::default(),
            next_memory: memory.clone(),
            managed: Vec::new(),
            managed_index: LookupMap::default(),
            peer_targets: Vec::new(),
            source_of_mirror: LookupMap::default(),
            ours: LookupSet::default(),
            theirs: LookupSet::default(),
            protected: LookupSet::default(),
            orphans: Vec::new(),
            enable_action: BTreeMap::new(),
            linkable_vpcs: BTreeSet::new(),
            revokes_of_ref: BTreeMap::new(),
            refs_pending: BTreeSet::new(),
            unlinks_of_group: BTreeMap::new(),
            links_pending: BTreeSet::new(),
            removed_by_audit: BTreeSet::new(),
            revoke_budget: config.safety.max_revokes_per_cycle,
            unlink_budget: config.safety.max_unlinks_per_cycle,
            delete_budget: config.safety.max_deletes_per_cycle,
        }
    }

    fn run(mut self) -> (Plan, Memory) {
        self.resolve_mappings();
        self.choose_mirrors();
        self.apply_safety_guards();
        self.find_orphans();
        self.plan_classiclink_enablement();
        self.plan_grants();
        self.plan_links();
        self.plan_orphans();
        fights::defer_fights(&mut self.plan, self.memory, self.now);
        self.plan.pairs.sort_by(|a, b| (&a.key.vpc, &a.key.source).cmp(&(&b.key.vpc, &b.key.source)));
        self.next_memory.deferred = self.plan.deferred;
        (self.plan, self.next_memory)
    }

    // ----- helpers -------------------------------------------------------

    fn warn(&mut self, kind: WarningKind, pair: Option<PairKey>, subject: Option<String>, message: String) {
        self.plan.warnings.push(Warning { kind, pair, subject, reason: None, message });
    }

    fn push(&mut self, action: Action, depends_on: Vec<ActionId>, audit: bool, pair: Option<PairKey>) -> ActionId {
        let id = ActionId(self.plan.actions.len());
        let mut depends_on = depends_on;
        depends_on.sort();
        depends_on.dedup();
        self.plan.actions.push(PlannedAction { id, action, depends_on, audit, pair });
        id
    }

    fn destructive_held(&self) -> bool {
        self.plan.holds.destructive_held()
    }

    fn global_audit(&self) -> bool {
        self.config.daemon.mode == Mode::Audit
    }

    fn group_label(&self, id: &GroupId) -> String {
        self.snap
            .source_groups
            .get(id)
            .or_else(|| self.snap.vpc_groups.get(id))
            .map_or_else(|| id.to_string(), |g| format!("{id} ({})", g.name))
    }

    /// The managed source `source`.
    fn mapping(&self, source: &GroupId) -> Option<&Mapping<'a>> {
        self.managed_index.get(source).map(|&index| &self.managed[index])
    }

    /// The mirror of a managed source, as grants and links name it (phase 2
    /// keeps it on the source's pair).
    fn mirror_ref(&self, mapping: &Mapping<'a>) -> Option<&GroupRef> {
        mapping.mirror.as_ref().and(self.plan.pairs[mapping.pair].mirror.as_ref())
    }

    /// A group whose references and links this plan manages: ours, and not
    /// an orphan that must keep working.
    fn is_ours(&self, group: &GroupId) -> bool {
        self.ours.contains(group) && !self.protected.contains(group)
    }

    /// The drift of the pair at `index` in `plan.pairs`.
    fn drift(&mut self, index: usize) -> &mut Drift {
        &mut self.plan.pairs[index].drift
    }

    // ----- 5. orphans --------------------------------------------------------

    /// Finds the orphans (tagged groups no pair claims), remembers since when,
    /// and decides which must keep working this pass.
    fn find_orphans(&mut self) {
        let complete = self.snap.is_complete();
        if complete {
            self.next_memory.orphans_since.clear();
        }
        let snap = self.snap;
        let me = self.config.daemon.owner.as_str();
        for group in snap.vpc_groups.values() {
            let (Some(source), Some(_)) = (group.mirrored_from(), &group.vpc_id) else { continue };
            // A chosen mirror is not an orphan.
            if self.source_of_mirror.contains_key(&group.id) {
                continue;
            }
            // Only our own orphans. One without an owner tag that nobody
            // claimed is an orphan of a deployment that could have made it:
            // one managing its source (a duplicate of its mirror), or the
            // deployment named `default`, which an estate made before owner
            // tags belongs to (`docs/operations.md`).
            match ownership(group, me) {
                Ownership::Mine => {}
                Ownership::Foreign(_) => continue,
                Ownership::Unowned if self.managed_index.contains_key(&source) || me == DEFAULT_OWNER => {}
                Ownership::Unowned => continue,
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
    }

    fn plan_orphans(&mut self) {
        let complete = self.snap.is_complete();
        let audit = self.global_audit();
        let held = self.destructive_held();
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

fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests;
