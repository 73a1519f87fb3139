//! The pure planner: `plan(config, snapshot, memory, now) -> (Plan, Memory)`.
//!
//! Sits between observe and execute. No I/O, no clock (time is `now`), no
//! randomness; everything iterates `BTreeMap`s so the output is deterministic.
//! It decides, in phases whose dependencies always point backwards, one file
//! each, all `impl Planner` blocks over the state kept on `Planner`:
//!
//! 1. which source groups are managed (config entries, then discovery tags;
//!    `managed.rs`);
//! 2. which VPC group is each pair's mirror (ours by tag, the VPC `default`
//!    group, an adopted group, or one to create), whose it is, and what
//!    conflicts (`mirrors.rs`);
//! 3. each mirror's desired grants (references translated to mirrors) and the
//!    authorize / revoke / description updates, make-before-break, within the
//!    rules-per-group quota (`grants.rs`), spilling what the mirror cannot
//!    hold into overflow groups (`overflow.rs`); just before, with
//!    `unmanaged_references = "expand"`, the prefix list of each referenced
//!    group no mapping manages, following its members, and after the
//!    orphans the deletion of those no mirror needs (`expand.rs`);
//! 4. ClassicLink links (attach, relink, detach; `links.rs`, which also
//!    enables ClassicLink in a VPC before the grants are planned);
//! 5. orphans (grace counted from their `classiclinkmirror:orphanedSince`
//!    tag, which it writes when first seeing one; `delete_orphans`, backoff;
//!    `orphans.rs`, found before the grants, removed after the links);
//! 6. fights: the repairs of a pair backing off because something keeps
//!    undoing them are taken out of the plan for now (`fights.rs`);
//!
//! and applies the safety rules (docs/semantics.md, "Safety") on the way
//! (`safety.rs`, right after phase 2): an incomplete snapshot, the shrink
//! guard or a lost state holds every destructive action, per-cycle caps defer
//! the excess in a deterministic order, and audited mappings are planned but
//! marked `audit`. `Planner::run` calls the phases in order; the plan's
//! types are in `types.rs`, its text and JSON in `render.rs`.

mod expand;
mod fights;
mod grants;
mod links;
mod managed;
mod mirrors;
mod orphans;
mod overflow;
mod render;
mod safety;
mod types;
mod xrefs;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

pub use fights::{Executed, Fight, FightKey, FightPolicy, FightState, RepairHistory, RepairKind};
pub use render::{PLAN_JSON_VERSION, Summary, render_json, render_text};
pub use types::*;

use crate::config::{Config, Mode};
use crate::model::{GroupId, PrefixListId, SecurityGroup, Snapshot, VpcId};
use grants::PeerTarget;
use mirrors::MirrorChoice;
use orphans::OrphanEntry;
use overflow::ShardSlot;
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
    /// Whether references to groups no mapping manages are expanded
    /// (`unmanaged_references = "expand"`; `expand.rs`).
    expands: bool,
    origin: Origin,
    /// Its mirror, when one can be had (phase 2).
    mirror: Option<MirrorChoice>,
    /// Its pair's index in `plan.pairs` (phase 2; that list is sorted only at
    /// the end). Pairs are pushed in source order, so this index orders
    /// pairs as their keys do.
    pair: usize,
    /// The create or tag action of its mirror (phase 3).
    prepare: Option<ActionId>,
    /// Our overflow groups of this pair that EC2 shows, at most one per shard
    /// number, in shard order (phase 2; empty with `overflow_groups = false`,
    /// when they are orphans).
    shard_groups: Vec<&'a SecurityGroup>,
    /// Its overflow groups in use this pass, existing or to be created, in
    /// shard order (phase 3, `overflow.rs`); links give each member these
    /// with the mirror.
    shards: Vec<ShardSlot>,
    /// Whether its instances are linked to its mirror: a Classic source with
    /// `link_instances`, a mirror, and ClassicLink usable in its VPC this
    /// cycle (known after the enablement phase).
    links_instances: bool,
}

/// One planning pass: its inputs, the plan and memory it builds, and what
/// one phase leaves for a later one. Each field says which phase fills it.
struct Planner<'a> {
    config: &'a Config,
    snap: &'a Snapshot,
    /// The memory of the previous pass.
    memory: &'a Memory,
    /// The time of this pass (the planner reads no clock).
    now: SystemTime,
    /// The plan every phase pushes its actions, warnings and deferrals to.
    plan: Plan,
    /// The memory for the next pass: a copy of `memory` that safety (the
    /// shrink baseline, a lost state) and orphans (their `orphans_since`,
    /// deletion backoffs) update.
    next_memory: Memory,
    /// Managed sources in id order, the order every phase walks them in
    /// (phase 1; phases 2 to 4 record their decisions on each).
    managed: Vec<Mapping<'a>>,
    /// Index of each managed source in `managed` (phase 1). Looked up per
    /// rule and per instance, never iterated.
    managed_index: LookupMap<GroupId, usize>,
    /// How grants naming each managed source translate (see [`PeerTarget`];
    /// phase 3).
    peer_targets: Vec<PeerTarget>,
    /// The source (index in `managed`) of each existing chosen mirror
    /// (phase 2).
    source_of_mirror: LookupMap<GroupId, usize>,
    /// Groups counted as ours: mirrors tagged with our owner, the chosen
    /// mirrors (claimed and tagged ones included) and our orphans. Mirrors of
    /// other deployments never are: to grants and links they are foreign
    /// (phase 2, orphans added by `find_orphans`).
    ours: LookupSet<GroupId>,
    /// Mirrors of other deployments: never written, tagged, unlinked or
    /// deleted (phase 2).
    theirs: LookupSet<GroupId>,
    /// Our overflow groups kept by a pair (`Mapping::shard_groups`): not
    /// orphans unless the grants phase retires them (phase 2).
    shard_members: LookupSet<GroupId>,
    /// Orphans that must keep working: still within `orphan_grace`, or kept
    /// by `delete_orphans = false`. References to them and links with them
    /// are left alone (docs/semantics.md, "Orphans": detach and drop references only once the
    /// orphan is due for removal).
    protected: LookupSet<GroupId>,
    /// Orphans, with whether their grace is over, in id order (found by
    /// `find_orphans`, consumed by `plan_orphans`).
    orphans: Vec<OrphanEntry>,
    /// `EnableClassicLink` action per VPC (links' enablement step).
    enable_action: BTreeMap<VpcId, ActionId>,
    /// VPCs where links can be made this cycle (links' enablement step).
    linkable_vpcs: BTreeSet<VpcId>,
    /// Revoke actions that remove a reference to each group (phase 3; a
    /// deletion in phase 5 waits for them).
    revokes_of_ref: BTreeMap<GroupId, Vec<ActionId>>,
    /// Groups whose references could not all be revoked this cycle (phase
    /// 3; their deletion waits).
    refs_pending: BTreeSet<GroupId>,
    /// Link actions removing each group from a link (phase 4; a deletion in
    /// phase 5 waits for them).
    unlinks_of_group: BTreeMap<GroupId, Vec<ActionId>>,
    /// Groups still in a link that is not being fixed this cycle (phase 4;
    /// their deletion waits).
    links_pending: BTreeSet<GroupId>,
    /// Groups whose links or references are removed by audited actions only
    /// shown, never run: they block an executed deletion, not an audited one.
    removed_by_audit: BTreeSet<GroupId>,
    /// The names of the VPC groups, by VPC, built when an overflow group is
    /// to be created (phase 3).
    vpc_group_names: Option<LookupSet<(VpcId, String)>>,
    /// The expansion list a grant naming each unmanaged group references
    /// this pass: ours, existing and able to hold the members (phase 2b,
    /// `expand.rs`).
    expansions: BTreeMap<GroupId, PrefixListId>,
    /// Revoke actions that remove a reference to each expansion list (phase
    /// 3; its deletion waits for them).
    revokes_of_list: BTreeMap<PrefixListId, Vec<ActionId>>,
    /// Expansion lists whose references could not all be revoked this cycle.
    lists_pending: BTreeSet<PrefixListId>,
    /// What is left of `max_revokes_per_cycle` (spent by phases 3 and 5).
    revoke_budget: usize,
    /// What is left of `max_unlinks_per_cycle` (spent by phase 4).
    unlink_budget: usize,
    /// What is left of `max_deletes_per_cycle` (spent by phase 5).
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
            shard_members: LookupSet::default(),
            protected: LookupSet::default(),
            orphans: Vec::new(),
            enable_action: BTreeMap::new(),
            linkable_vpcs: BTreeSet::new(),
            revokes_of_ref: BTreeMap::new(),
            refs_pending: BTreeSet::new(),
            unlinks_of_group: BTreeMap::new(),
            links_pending: BTreeSet::new(),
            removed_by_audit: BTreeSet::new(),
            vpc_group_names: None,
            expansions: BTreeMap::new(),
            revokes_of_list: BTreeMap::new(),
            lists_pending: BTreeSet::new(),
            revoke_budget: config.safety.max_revokes_per_cycle,
            unlink_budget: config.safety.max_unlinks_per_cycle,
            delete_budget: config.safety.max_deletes_per_cycle,
        }
    }

    /// The phases, in order; each reads only what earlier ones decided.
    fn run(mut self) -> (Plan, Memory) {
        self.resolve_mappings(); // managed.rs
        self.choose_mirrors(); // mirrors.rs
        self.apply_safety_guards(); // safety.rs
        self.find_orphans(); // orphans.rs
        self.plan_classiclink_enablement(); // links.rs
        self.plan_expansion_lists(); // expand.rs
        self.plan_grants(); // grants.rs
        self.plan_links(); // links.rs
        self.plan_orphans(); // orphans.rs
        self.plan_expansion_deletions(); // expand.rs
        fights::defer_fights(&mut self.plan, self.memory, self.now);
        self.plan.pairs.sort_by(|a, b| (&a.key.vpc, &a.key.source).cmp(&(&b.key.vpc, &b.key.source)));
        self.next_memory.deferred = self.plan.deferred;
        (self.plan, self.next_memory)
    }

    // ----- helpers -------------------------------------------------------

    /// Adds a warning to the plan.
    fn warn(&mut self, kind: WarningKind, pair: Option<PairKey>, subject: Option<String>, message: String) {
        self.plan.warnings.push(Warning { kind, pair, subject, reason: None, message });
    }

    /// Adds an action to the plan, its dependencies sorted and deduplicated.
    fn push(&mut self, action: Action, depends_on: Vec<ActionId>, audit: bool, pair: Option<PairKey>) -> ActionId {
        let id = ActionId(self.plan.actions.len());
        let mut depends_on = depends_on;
        depends_on.sort();
        depends_on.dedup();
        self.plan.actions.push(PlannedAction { id, action, depends_on, audit, pair });
        id
    }

    /// Whether a hold (safety) keeps this pass's destructive actions back.
    fn destructive_held(&self) -> bool {
        self.plan.holds.destructive_held()
    }

    /// Whether the whole daemon runs in audit mode.
    fn global_audit(&self) -> bool {
        self.config.daemon.mode == Mode::Audit
    }

    /// `id (name)` of a source or VPC group, for messages.
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

    /// What a grant to `peer` weighs against `limits.rules_per_group`
    /// ([`crate::model::grant_weight`]): a prefix list the snapshot knows
    /// (the daemon's own expansion lists, the lists sources reference)
    /// weighs its `MaxEntries`; one of unknown size is assumed to fill a
    /// group.
    #[inline]
    fn weight<G>(&self, peer: &crate::model::Peer<G>) -> usize {
        // Called for every grant: only a prefix list looks anything up.
        let entries = match peer {
            crate::model::Peer::PrefixList(_) => self.list_entries(peer),
            _ => None,
        };
        crate::model::grant_weight(peer, entries, self.config.limits.rules_per_group)
    }

    /// What a rule already on a group weighs: as [`Self::weight`], except
    /// that a prefix list of unknown size counts as one rule. EC2 accepted
    /// it there, and assuming it fills the group would push every grant of
    /// a mirror where someone added one into overflow groups.
    #[inline]
    fn observed_weight<G>(&self, peer: &crate::model::Peer<G>) -> usize {
        let entries = match peer {
            crate::model::Peer::PrefixList(_) => self.list_entries(peer).or(Some(1)),
            _ => None,
        };
        crate::model::grant_weight(peer, entries, self.config.limits.rules_per_group)
    }

    /// The `MaxEntries` of the prefix list `peer` names, when the snapshot
    /// has it (one of our expansion lists, or a list a source references).
    fn list_entries<G>(&self, peer: &crate::model::Peer<G>) -> Option<usize> {
        match peer {
            crate::model::Peer::PrefixList(id) => self
                .snap
                .expansion_lists
                .get(id)
                .map(|l| l.list.max_entries)
                .or_else(|| self.snap.list_sizes.get(id).copied())
                .and_then(|n| usize::try_from(n).ok())
                .or_else(|| self.described_list_entries(id)),
            _ => None,
        }
    }

    /// The drift of the pair at `index` in `plan.pairs`.
    fn drift(&mut self, index: usize) -> &mut Drift {
        &mut self.plan.pairs[index].drift
    }
}

/// `d` without its fraction of a second, for messages.
fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests;
