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
mod orphans;
mod render;
mod safety;
mod types;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

pub use fights::{Executed, Fight, FightKey, FightPolicy, FightState, RepairHistory, RepairKind};
pub use render::{PLAN_JSON_VERSION, Summary, render_json, render_text};
pub use types::*;

use crate::config::{Config, Mode};
use crate::model::{GroupId, SecurityGroup, Snapshot, VpcId};
use grants::PeerTarget;
use mirrors::MirrorChoice;
use orphans::OrphanEntry;
// For the unit tests, which see the planner through `super::*`.
#[cfg(test)]
use {crate::model::GrantKey, grants::cmp_planned_observed};

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
}

fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests;
