//! Phase 3, overflow groups: a mirror's grants that do not fit in it,
//! spread over overflow groups of the same source (docs/semantics.md,
//! "Overflow groups").
//!
//! Runs inside the grants phase, for a pair whose desired grants outweigh
//! what its mirror can hold, or that has overflow groups already. Reads the
//! pair's desired grants, its mirror and overflow groups (phase 2) with
//! their rules. Decides where each grant goes ([`place`], pure and
//! deterministic: a grant stays where it is; a new one goes to the first
//! group with room; the last overflow group is retired only when everything
//! it holds fits in the groups below), the creates of new overflow groups,
//! each group's authorize and revoke (`sync_group`, make-before-break), and
//! the emptying of a retired overflow group, whose revokes wait for the
//! authorizes that put its grants elsewhere; a retired group then becomes an
//! orphan (grace, unlink, delete). Records each pair's groups in use on its
//! mapping, for links.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::grants::{Desired, by_key, cmp_planned_observed};
use super::xrefs::KeptReferences;
use super::{Action, ActionId, GroupRef, LookupSet, Mapping, PairKey, Planner, ShardPlan, WarningKind};
use crate::model::{
    Direction, Grant, GrantKey, MAX_OVERFLOW_SHARDS, OWNER_TAG, OWNERSHIP_TAG, Peer, SHARD_TAG, SecurityGroup,
    mirror_description, shard_name,
};

/// The groups of a pair: the mirror (slot 0) and its overflow groups.
pub(super) const SLOTS: usize = MAX_OVERFLOW_SHARDS as usize + 1;

/// An overflow group a pair uses this pass.
#[derive(Clone, Debug)]
pub(super) struct ShardSlot {
    /// Its number, 1 to [`MAX_OVERFLOW_SHARDS`].
    pub shard: u8,
    /// The group, existing or created by this plan.
    pub group: GroupRef,
    /// Its create action, when this plan creates it.
    pub prepare: Option<ActionId>,
}

/// Where [`place`] puts each grant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// For each grant, its slot (0 the mirror, `n` overflow group `n`), or
    /// `None` when it fits in no group.
    pub slot_of: Vec<Option<u8>>,
    /// The slots in use: the mirror always, overflow groups when kept or
    /// opened. An existing group not in use is retired.
    pub active: [bool; SLOTS],
}

/// Places a pair's desired grants in its groups. Pure and deterministic.
///
/// - `weights[i]`: grant `i`'s weight against the quota
///   ([`crate::model::grant_weight`]);
/// - `sticky[i]`: the lowest slot whose group holds grant `i` already;
/// - `exists[s]`: whether slot `s`'s group exists (slot 0 is always used);
/// - `fixed[s]`: the weight of the rules of slot `s` that are not ours to
///   revoke (they stay, and take room);
/// - `blocked[s]`: a slot that cannot be created (its name is taken).
///
/// A grant stays where it is (never evicted: EC2 accepted it there); the
/// others go, in order, to the first slot in use with room, else open the
/// first unused slot. The highest existing overflow group is retired when
/// everything fits in the groups below it without opening any, and so on
/// downwards. So adding a grant moves none, removing one moves none unless
/// a whole overflow group empties into the others.
#[must_use]
pub fn place(
    weights: &[usize],
    sticky: &[Option<u8>],
    exists: &[bool; SLOTS],
    fixed: &[usize; SLOTS],
    blocked: &[bool; SLOTS],
    quota: usize,
) -> Placement {
    let placeable = weights.iter().filter(|&&w| w <= quota).count();
    let mut top = (0..SLOTS).rev().find(|&s| exists[s]).unwrap_or(0);
    while top > 0 {
        let mut active = [false; SLOTS];
        for (s, slot) in active.iter_mut().enumerate().take(top) {
            *slot = s == 0 || exists[s];
        }
        let trial = fill(weights, sticky, active, fixed, blocked, quota, false);
        if trial.slot_of.iter().filter(|s| s.is_some()).count() < placeable {
            break;
        }
        top = (0..top).rev().find(|&s| s == 0 || exists[s]).unwrap_or(0);
    }
    let mut active = [false; SLOTS];
    for (s, slot) in active.iter_mut().enumerate().take(top + 1) {
        *slot = s == 0 || exists[s];
    }
    fill(weights, sticky, active, fixed, blocked, quota, true)
}

/// One placement over the slots `active`, opening unused ones when `open`.
fn fill(
    weights: &[usize],
    sticky: &[Option<u8>],
    mut active: [bool; SLOTS],
    fixed: &[usize; SLOTS],
    blocked: &[bool; SLOTS],
    quota: usize,
    open: bool,
) -> Placement {
    let mut room = [0usize; SLOTS];
    for s in 0..SLOTS {
        room[s] = quota.saturating_sub(fixed[s]);
    }
    let mut slot_of: Vec<Option<u8>> = vec![None; weights.len()];
    for (i, (&weight, &at)) in weights.iter().zip(sticky).enumerate() {
        if let Some(s) = at.filter(|&s| active.get(usize::from(s)).copied().unwrap_or(false)) {
            slot_of[i] = Some(s);
            room[usize::from(s)] = room[usize::from(s)].saturating_sub(weight);
        }
    }
    for (i, &weight) in weights.iter().enumerate() {
        if slot_of[i].is_some() || weight > quota {
            continue;
        }
        let target = (0..SLOTS).find(|&s| active[s] && room[s] >= weight).or_else(|| {
            let s = (1..SLOTS).find(|&s| open && !active[s] && !blocked[s] && room[s] >= weight)?;
            active[s] = true;
            Some(s)
        });
        if let Some(s) = target {
            room[s] -= weight;
            slot_of[i] = u8::try_from(s).ok();
        }
    }
    Placement { slot_of, active }
}

impl<'a> Planner<'a> {
    /// Plans a pair's grants over its mirror and overflow groups.
    pub(super) fn plan_overflow(
        &mut self,
        index: usize,
        mapping: &Mapping<'a>,
        key: &PairKey,
        mirror: &GroupRef,
        desired: Desired,
    ) {
        let quota = self.config.limits.rules_per_group;
        let vpc_source = !mapping.source.is_classic();
        let foreign_refs = self.keeps_foreign_references(mapping);
        let mut observed: [Option<&'a SecurityGroup>; SLOTS] = [None; SLOTS];
        let snap = self.snap;
        observed[0] = mirror.existing().and_then(|id| snap.vpc_groups.get(id));
        for group in &mapping.shard_groups {
            if let Some(shard) = group.overflow_shard().flatten() {
                observed[usize::from(shard)] = Some(group);
            }
        }
        let mut exists = [false; SLOTS];
        let mut fixed = [0usize; SLOTS];
        for s in 0..SLOTS {
            exists[s] = s == 0 || observed[s].is_some();
            fixed[s] = observed[s]
                .map(|g| {
                    g.ingress
                        .iter()
                        .filter(|r| !self.owned_rule(r, vpc_source, foreign_refs))
                        .map(|r| self.observed_weight(&r.key.peer))
                        .sum()
                })
                .unwrap_or(0);
        }
        // Where each desired grant is already: the lowest slot holding it,
        // and every slot holding it (bit `s` of `held[i]`). The desired
        // grants are sorted by key, one per key, and so are a group's rules
        // once sorted: one merge per group, no key cloned.
        let mut sticky: Vec<Option<u8>> = vec![None; desired.grants.len()];
        let mut held: Vec<u8> = vec![0; desired.grants.len()];
        for (s, group) in observed.iter().enumerate() {
            let Some(group) = group else { continue };
            let (rules, _) = by_key(&group.ingress, |a, b| a.key.cmp(&b.key));
            let mut i = 0;
            'rules: for rule in rules {
                while let Some(want) = desired.grants.get(i) {
                    match cmp_planned_observed(&want.key, &rule.key) {
                        Ordering::Less => i += 1,
                        Ordering::Equal => {
                            sticky[i].get_or_insert(s as u8);
                            held[i] |= 1 << s;
                            continue 'rules;
                        }
                        Ordering::Greater => continue 'rules,
                    }
                }
                break;
            }
        }
        let weights: Vec<usize> = desired.grants.iter().map(|g| self.weight(&g.key.peer)).collect();
        let mut blocked = [false; SLOTS];
        let placement = loop {
            let placement = place(&weights, &sticky, &exists, &fixed, &blocked, quota);
            let taken: Vec<usize> = (1..SLOTS)
                .filter(|&s| placement.active[s] && !exists[s])
                .filter(|&s| self.name_taken(mapping, &shard_name(&mapping.name, s as u8)))
                .collect();
            if taken.is_empty() {
                break placement;
            }
            for s in taken {
                blocked[s] = true;
                let name = shard_name(&mapping.name, s as u8);
                self.warn(
                    WarningKind::ConflictNameTaken,
                    Some(key.clone()),
                    Some(name.clone()),
                    format!(
                        "{} already has a group named {name:?} that is not an overflow group of {}; overflow \
                         group {s} cannot be created",
                        mapping.vpc,
                        self.group_label(&mapping.source.id)
                    ),
                );
            }
        };

        // The overflow groups in use, created where needed.
        let mut groups: [Option<GroupRef>; SLOTS] = Default::default();
        let mut deps: [Vec<ActionId>; SLOTS] = Default::default();
        groups[0] = Some(mirror.clone());
        deps[0] = mapping.prepare.into_iter().collect();
        let mut shards = Vec::new();
        for s in 1..SLOTS {
            if !placement.active[s] {
                continue;
            }
            let shard = s as u8;
            let name = shard_name(&mapping.name, shard);
            let (group, prepare) = match observed[s] {
                Some(g) => {
                    self.source_of_mirror.insert(g.id.clone(), index);
                    (GroupRef::Existing(g.id.clone()), None)
                }
                None => {
                    let tags = BTreeMap::from([
                        (OWNERSHIP_TAG.to_owned(), mapping.source.id.to_string()),
                        (OWNER_TAG.to_owned(), self.config.daemon.owner.clone()),
                        (SHARD_TAG.to_owned(), shard.to_string()),
                    ]);
                    let action = Action::CreateMirror {
                        source: mapping.source.id.clone(),
                        vpc: mapping.vpc.clone(),
                        name: name.clone(),
                        description: mirror_description(
                            &format!("Overflow {shard} of {}", mapping.name),
                            &mapping.name,
                        ),
                        tags,
                        shard,
                    };
                    let id = self.push(action, Vec::new(), mapping.audit, Some(key.clone()));
                    let group = GroupRef::New { source: mapping.source.id.clone(), vpc: mapping.vpc.clone(), shard };
                    (group, Some(id))
                }
            };
            deps[s] = prepare.into_iter().collect();
            let rules =
                placement.slot_of.iter().zip(&weights).filter(|(slot, _)| **slot == Some(shard)).map(|(_, w)| *w).sum();
            self.plan.pairs[mapping.pair].shards.push(ShardPlan { shard, group: group.clone(), name, rules });
            shards.push(ShardSlot { shard, group: group.clone(), prepare });
            groups[s] = Some(group);
        }
        self.managed[index].shards = shards;

        // What fits nowhere is reported.
        let unplaced = placement.slot_of.iter().filter(|s| s.is_none()).count();
        if unplaced > 0 {
            let total: usize = weights.iter().sum();
            self.warn(
                WarningKind::QuotaExceeded,
                Some(key.clone()),
                Some(mirror.to_string()),
                format!(
                    "mirror {mirror} of {} would need {total} rules; {unplaced} fit in neither it nor \
                     {MAX_OVERFLOW_SHARDS} overflow groups of {quota} rules and are not applied",
                    self.group_label(&mapping.source.id)
                ),
            );
        }

        // Emptying a retired overflow group needs the desired keys after
        // they went to their groups (rare: they are kept only then).
        let retiring = (1..SLOTS).any(|s| observed[s].is_some() && !placement.active[s]);
        let keys: Vec<GrantKey<GroupRef>> =
            if retiring { desired.grants.iter().map(|g| g.key.clone()).collect() } else { Vec::new() };

        // Each group in use gets the grants placed in it.
        let mut sizes = [0usize; SLOTS];
        for s in placement.slot_of.iter().flatten() {
            sizes[usize::from(*s)] += 1;
        }
        let mut per_slot: Vec<Desired> = sizes.iter().map(|&n| Desired::with_capacity(n)).collect();
        for ((grant, waits_for), slot) in desired.grants.into_iter().zip(desired.waits_for).zip(&placement.slot_of) {
            if let Some(s) = slot {
                per_slot[usize::from(*s)].push(grant, waits_for);
            }
        }
        // Keys authorized this pass, by the authorize action adding them.
        let mut authorized: BTreeMap<GrantKey<GroupRef>, ActionId> = BTreeMap::new();
        for (s, wanted) in per_slot.into_iter().enumerate() {
            let Some(group) = groups[s].clone() else { continue };
            if let Ok(Some(id)) =
                self.sync_group(mapping, key, &group, std::mem::take(&mut deps[s]), wanted, false, Direction::Ingress)
                && retiring
                && let Action::Authorize { grants, .. } = &self.plan.actions[id.0].action
            {
                for grant in grants {
                    authorized.insert(grant.key.clone(), id);
                }
            }
        }

        // Retired overflow groups: emptied once their grants are elsewhere,
        // then orphans (grace, unlink, delete).
        for (s, group) in observed.iter().enumerate().skip(1) {
            let Some(group) = group.filter(|_| !placement.active[s]) else { continue };
            self.retire_shard(mapping, key, group, &keys, &placement, &held, &authorized);
        }
    }

    /// Empties the retired overflow group `group` of the grants that are
    /// elsewhere now or will be once this plan's authorizes succeed (its
    /// revoke depends on them), keeps those that are not yet, and makes it an
    /// orphan whose deletion waits for that revoke.
    #[allow(clippy::too_many_arguments)]
    fn retire_shard(
        &mut self,
        mapping: &Mapping<'a>,
        key: &PairKey,
        group: &'a SecurityGroup,
        keys: &[GrantKey<GroupRef>],
        placement: &Placement,
        held: &[u8],
        authorized: &BTreeMap<GrantKey<GroupRef>, ActionId>,
    ) {
        let vpc_source = !mapping.source.is_classic();
        let foreign_refs = self.keeps_foreign_references(mapping);
        let mut revoke: Vec<Grant> = Vec::new();
        let mut deps: BTreeSet<ActionId> = BTreeSet::new();
        let mut kept = false;
        let mut seen: LookupSet<&GrantKey> = LookupSet::default();
        for rule in &group.ingress {
            if !self.owned_rule(rule, vpc_source, foreign_refs) || !seen.insert(&rule.key) {
                continue;
            }
            let planned = planned_key(&rule.key);
            match desired_index(keys, |k| k, &rule.key).map(|i| (i, placement.slot_of[i])) {
                // Not desired any more: it goes.
                None => revoke.push(rule.clone()),
                // Desired where it is already held.
                Some((i, Some(to))) if held[i] & (1 << to) != 0 => revoke.push(rule.clone()),
                // Desired where this plan adds it: after that authorize.
                Some((_, Some(_))) if authorized.contains_key(&planned) => {
                    deps.insert(authorized[&planned]);
                    revoke.push(rule.clone());
                }
                // Not (yet) anywhere else: it stays.
                Some(_) => kept = true,
            }
        }
        self.consider_orphan(group);
        if kept {
            self.refs_pending.insert(group.id.clone());
        }
        if revoke.is_empty() {
            return;
        }
        let count = revoke.len();
        let allowed = if self.destructive_held() {
            0
        } else if mapping.audit {
            count
        } else {
            count.min(self.revoke_budget)
        };
        if !mapping.audit {
            self.revoke_budget -= allowed;
            if self.destructive_held() {
                self.plan.deferred.held += count;
            } else {
                self.plan.deferred.revokes += count - allowed;
            }
        }
        if allowed < count {
            self.refs_pending.insert(group.id.clone());
        }
        revoke.truncate(allowed);
        if revoke.is_empty() {
            return;
        }
        revoke.sort();
        self.drift(mapping.pair).remove += revoke.len();
        let id = self.push_revoke(
            Direction::Ingress,
            &GroupRef::Existing(group.id.clone()),
            revoke,
            deps.into_iter().collect(),
            mapping.audit,
            key,
        );
        // Its deletion (once an orphan is due) waits for the emptying.
        self.revokes_of_ref.entry(group.id.clone()).or_default().push(id);
    }

    /// Whether a group named `name` exists in the mapping's VPC (one that is
    /// not an overflow group of this pair: those are found by tag).
    fn name_taken(&mut self, mapping: &Mapping<'a>, name: &str) -> bool {
        let names = self.vpc_group_names.get_or_insert_with(|| {
            self.snap
                .vpc_groups
                .values()
                .filter_map(|g| Some((g.vpc_id.clone()?, g.name.clone())))
                .collect::<LookupSet<_>>()
        });
        names.contains(&(mapping.vpc.clone(), name.to_owned()))
    }

    /// Whether a rule of one of our groups is ours to revoke: an IPv4 CIDR,
    /// a reference to one of our groups or to one of our expansion lists,
    /// and, when the source is a VPC group (whose rules we copy whole), an
    /// IPv6 CIDR or any prefix list, and, when the mapping keeps references
    /// to groups of other accounts, those. The one answer for the grants phase,
    /// the overflow groups' room and the emptying of a retired one.
    pub(super) fn owned_rule(&self, grant: &Grant, vpc_source: bool, foreign_refs: KeptReferences) -> bool {
        match &grant.key.peer {
            Peer::Ipv4(_) => true,
            Peer::Ipv6(_) => vpc_source,
            // Our groups; and the source's references to groups of the
            // mirror's account, kept for a source of another account.
            Peer::Group { group, owner: None } => self.is_ours(group) || foreign_refs.target_account,
            // Our expansion lists (expand.rs): a grant of one is ours.
            Peer::PrefixList(list) => vpc_source || self.is_our_list_id(list),
            // References to groups of other accounts, kept as such for a
            // source of another account (xrefs.rs).
            Peer::Group { owner: Some(_), .. } => foreign_refs.other_accounts,
        }
    }
}

/// The index in `sorted` (sorted by key, one per key) of the planned key
/// equal to the observed `key`: a binary search that clones nothing.
fn desired_index<T>(sorted: &[T], key_of: impl Fn(&T) -> &GrantKey<GroupRef>, key: &GrantKey) -> Option<usize> {
    sorted.binary_search_by(|item| cmp_planned_observed(key_of(item), key)).ok()
}

/// An observed rule's key as a plan names it.
fn planned_key(key: &GrantKey) -> GrantKey<GroupRef> {
    GrantKey { protocol: key.protocol, ports: key.ports, peer: key.peer.clone().map_group(GroupRef::Existing) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: [bool; SLOTS] = [false; SLOTS];
    const ZERO: [usize; SLOTS] = [0; SLOTS];

    fn exists(slots: &[usize]) -> [bool; SLOTS] {
        let mut e = NONE;
        for &s in slots {
            e[s] = true;
        }
        e
    }

    #[test]
    fn grants_that_fit_stay_in_the_mirror() {
        let p = place(&[1; 10], &[None; 10], &exists(&[0]), &ZERO, &NONE, 60);
        assert!(p.slot_of.iter().all(|s| *s == Some(0)));
        assert_eq!(p.active, exists(&[0]));
    }

    #[test]
    fn a_hundred_grants_and_a_quota_of_sixty_open_one_overflow_group() {
        let p = place(&[1; 100], &[None; 100], &exists(&[0]), &ZERO, &NONE, 60);
        assert_eq!(p.slot_of.iter().filter(|s| **s == Some(0)).count(), 60);
        assert_eq!(p.slot_of.iter().filter(|s| **s == Some(1)).count(), 40);
        assert_eq!(p.active, exists(&[0, 1]));
    }

    #[test]
    fn a_grant_heavier_than_the_quota_or_beyond_every_group_is_not_placed() {
        let p = place(&[61, 1], &[None; 2], &exists(&[0]), &ZERO, &NONE, 60);
        assert_eq!(p.slot_of, vec![None, Some(0)]);
        let p = place(&[1; 7], &[None; 7], &exists(&[0]), &ZERO, &NONE, 1);
        assert_eq!(p.slot_of.iter().filter(|s| s.is_none()).count(), 2);
    }

    #[test]
    fn grants_stay_where_they_are_and_a_new_one_takes_the_first_room() {
        // 0..3 held in the mirror, 3..5 in overflow group 1; quota 4.
        let sticky = [Some(0), Some(0), Some(0), Some(1), Some(1), None];
        let p = place(&[1; 6], &sticky, &exists(&[0, 1]), &ZERO, &NONE, 4);
        assert_eq!(p.slot_of, vec![Some(0), Some(0), Some(0), Some(1), Some(1), Some(0)]);
    }

    #[test]
    fn the_last_overflow_group_retires_only_when_everything_fits_below() {
        let sticky = [Some(0), Some(0), Some(1)];
        let p = place(&[1; 3], &sticky, &exists(&[0, 1]), &ZERO, &NONE, 4);
        assert_eq!(p.slot_of, vec![Some(0), Some(0), Some(0)]);
        assert_eq!(p.active, exists(&[0]));
        let sticky = [Some(0), Some(0), Some(0), Some(0), Some(1)];
        let p = place(&[1; 5], &sticky, &exists(&[0, 1]), &ZERO, &NONE, 4);
        assert_eq!(p.active, exists(&[0, 1]));
        assert_eq!(p.slot_of[4], Some(1));
    }

    #[test]
    fn rules_that_are_not_ours_take_room_and_a_blocked_slot_is_skipped() {
        let mut fixed = ZERO;
        fixed[0] = 3;
        let mut blocked = NONE;
        blocked[1] = true;
        let p = place(&[1; 3], &[None; 3], &exists(&[0]), &fixed, &blocked, 4);
        assert_eq!(p.slot_of, vec![Some(0), Some(2), Some(2)]);
    }

    #[test]
    fn prefix_list_weights_pack_by_weight() {
        let p = place(&[30, 30, 30, 1], &[None; 4], &exists(&[0]), &ZERO, &NONE, 60);
        assert_eq!(p.slot_of, vec![Some(0), Some(0), Some(1), Some(1)]);
    }

    /// The placement as it is once applied: each grant held where it was put.
    fn applied(p: &Placement) -> ([bool; SLOTS], Vec<Option<u8>>) {
        (p.active, p.slot_of.clone())
    }

    proptest::proptest! {
        /// Stability: on a converged placement, adding one grant anywhere in
        /// the order moves no other grant; removing one moves none unless an
        /// overflow group retires, and then only that group's grants, which
        /// all fit below it.
        #[test]
        fn adding_a_grant_moves_none_and_removing_one_moves_at_most_the_retired_group(
            weights in proptest::collection::vec(1usize..=3, 0..240),
            quota in 8usize..=60,
            at in proptest::prelude::any::<proptest::sample::Index>(),
            weight in 1usize..=3,
        ) {
            let first = place(&weights, &vec![None; weights.len()], &exists(&[0]), &ZERO, &NONE, quota);
            let (active, sticky) = applied(&first);
            // Placing again what is applied changes nothing.
            let again = place(&weights, &sticky, &active, &ZERO, &NONE, quota);
            proptest::prop_assert_eq!(&again, &first);

            let i = at.index(weights.len() + 1);
            let mut grown = weights.clone();
            grown.insert(i, weight);
            let mut grown_sticky = sticky.clone();
            grown_sticky.insert(i, None);
            let after = place(&grown, &grown_sticky, &active, &ZERO, &NONE, quota);
            for (j, before) in sticky.iter().enumerate() {
                let k = if j < i { j } else { j + 1 };
                if before.is_some() {
                    proptest::prop_assert_eq!(after.slot_of[k], *before, "grant {} moved when one was added", j);
                }
            }

            if !weights.is_empty() {
                let i = at.index(weights.len());
                let mut shrunk = weights.clone();
                shrunk.remove(i);
                let mut shrunk_sticky = sticky.clone();
                shrunk_sticky.remove(i);
                let after = place(&shrunk, &shrunk_sticky, &active, &ZERO, &NONE, quota);
                let retired: Vec<u8> =
                    (1..SLOTS).filter(|&s| active[s] && !after.active[s]).map(|s| s as u8).collect();
                for (j, before) in shrunk_sticky.iter().enumerate() {
                    if before.is_some() && after.slot_of[j] != *before {
                        proptest::prop_assert!(
                            before.is_some_and(|s| retired.contains(&s)),
                            "grant {} moved from {:?} to {:?}, though no group it was in retired", j, before, after.slot_of[j]
                        );
                    }
                }
                // Nothing placeable is left out.
                let placed = after.slot_of.iter().filter(|s| s.is_some()).count();
                let before = shrunk_sticky.iter().filter(|s| s.is_some()).count();
                proptest::prop_assert!(placed >= before);
            }
        }
    }
}
