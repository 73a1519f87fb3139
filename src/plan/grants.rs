//! Phase 3, grants: each mirror's rules, and the creates and tags they wait
//! for.
//!
//! Reads the chosen mirrors (phase 2), the holds and revoke budget (safety),
//! each managed source's ingress rules and each mirror's observed rules.
//! Decides, per pair in source order: the create or tag action of its
//! mirror; the desired grants (peers translated to their mirrors, what
//! cannot be translated reported); the diff against the mirror's rules
//! (only grants we own are revoked); and the authorize, revoke and
//! description-update actions, make-before-break within
//! `limits.rules_per_group`, revokes within `max_revokes_per_cycle`. Records
//! which revokes drop a reference to each group, for the orphans phase.
//! Rules: docs/semantics.md, "Ingress rules" and "Safety".

use std::cmp::Ordering;
use std::collections::BTreeMap;

use super::mirrors::MirrorChoice;
use super::xrefs::KeptReferences;
use super::{
    Action, ActionId, GroupRef, Mapping, PairKey, Planner, TagReason, Unmirrorable, Warning, WarningKind, render,
};
use crate::model::{
    Direction, Grant, GrantKey, GroupId, OWNER_TAG, OWNERSHIP_TAG, Peer, Ports, Protocol, VpcId, mirror_description,
    sanitize_text,
};

/// Grants a mirror should have, each with the create or tag action of the
/// mirror it references when this plan creates or tags that mirror. Two
/// parallel lists, so that the grants move into their action as they are.
#[derive(Default)]
pub(super) struct Desired {
    pub(super) grants: Vec<Grant<GroupRef>>,
    pub(super) waits_for: Vec<Option<Prepare>>,
}

/// The create or tag action a grant's peer mirror waits for, with whether
/// that action is audited (kept beside it so that deciding which grants wait
/// does not read the action list at random).
#[derive(Clone, Copy, Debug)]
pub(super) struct Prepare {
    action: ActionId,
    audited: bool,
}

/// What a grant naming a managed source as its peer translates to, one per
/// entry of `managed` and built once the creates and tags are planned. Rules
/// name peers at random, so each translation reads this small entry instead
/// of the (much larger) mapping and its pair, which on a large estate are
/// cache misses.
#[derive(Debug)]
pub(super) struct PeerTarget {
    vpc: VpcId,
    mirror: Option<GroupRef>,
    prepare: Option<Prepare>,
}

impl Desired {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self { grants: Vec::with_capacity(capacity), waits_for: Vec::with_capacity(capacity) }
    }

    pub(super) fn push(&mut self, grant: Grant<GroupRef>, waits_for: Option<Prepare>) {
        self.grants.push(grant);
        self.waits_for.push(waits_for);
    }

    fn len(&self) -> usize {
        self.grants.len()
    }

    fn truncate(&mut self, len: usize) {
        self.grants.truncate(len);
        self.waits_for.truncate(len);
    }

    /// Splits off the grants for which `wait` holds, keeping the order.
    fn split_off_waiting(&mut self, wait: impl Fn(Option<Prepare>) -> bool) -> Self {
        self.split_off_by(|_, waits_for| wait(waits_for))
    }

    /// Splits off the grants for which `pick` holds, keeping the order.
    fn split_off_by(&mut self, pick: impl Fn(&Grant<GroupRef>, Option<Prepare>) -> bool) -> Self {
        if !self.grants.iter().zip(&self.waits_for).any(|(g, &w)| pick(g, w)) {
            return Self::default();
        }
        let mut kept = Self::with_capacity(self.len());
        let mut picked = Self::default();
        for (grant, waits_for) in self.grants.drain(..).zip(self.waits_for.drain(..)) {
            if pick(&grant, waits_for) { &mut picked } else { &mut kept }.push(grant, waits_for);
        }
        *self = kept;
        picked
    }
}

/// A group's desired grants do not fit in it: overflow groups are needed.
#[derive(Debug)]
pub(super) struct Overflows;

/// The per-grant diff of one mirror before quota and caps.
struct GrantDiff {
    add: Desired,
    revoke: Vec<Grant>,
    update: Vec<(Grant, Option<String>)>,
    /// The weight of the group's rules now.
    current: usize,
}

/// How many of the first `weights` fit within `budget`, in order.
fn prefix_within(weights: &[usize], budget: usize) -> usize {
    let mut used = 0usize;
    weights
        .iter()
        .take_while(|&&w| {
            used = used.saturating_add(w);
            used <= budget
        })
        .count()
}

impl<'a> Planner<'a> {
    pub(super) fn plan_grants(&mut self) {
        // Creates and tags first, so that every grant and link action can
        // depend on them.
        let sources: Vec<usize> = (0..self.managed.len()).filter(|&i| self.managed[i].mirror.is_some()).collect();
        for &index in &sources {
            let mapping = &self.managed[index];
            let source = &mapping.source.id;
            let key = self.plan.pairs[mapping.pair].key.clone();
            let owner = self.config.daemon.owner.clone();
            let tags = BTreeMap::from([(OWNERSHIP_TAG.to_owned(), source.to_string()), (OWNER_TAG.to_owned(), owner)]);
            let action = match mapping.mirror.as_ref().expect("chosen mirror") {
                MirrorChoice::New => Action::CreateMirror {
                    source: source.clone(),
                    vpc: mapping.vpc.clone(),
                    name: mapping.name.clone(),
                    description: mirror_description(&mapping.source.description, &mapping.name),
                    tags,
                    shard: 0,
                },
                MirrorChoice::Existing { id, tag: Some(TagReason::Claim) } => {
                    // It mirrors this source already: only the owner is new.
                    let tags = tags.into_iter().filter(|(k, _)| k == OWNER_TAG).collect();
                    Action::TagGroup { group: id.clone(), vpc: mapping.vpc.clone(), tags, reason: TagReason::Claim }
                }
                MirrorChoice::Existing { id, tag: Some(reason) } => {
                    Action::TagGroup { group: id.clone(), vpc: mapping.vpc.clone(), tags, reason: *reason }
                }
                MirrorChoice::Existing { tag: None, .. } => continue,
            };
            let audit = mapping.audit;
            let id = self.push(action, vec![], audit, Some(key));
            self.managed[index].prepare = Some(id);
        }
        self.peer_targets = self.peer_targets();

        for &index in &sources {
            let mapping = self.managed[index].clone();
            let key = self.plan.pairs[mapping.pair].key.clone();
            let mirror = self.mirror_ref(&mapping).expect("chosen mirror").clone();
            let warnings_before = self.plan.warnings.len();
            let desired = self.desired_grants(&mapping, &key, Direction::Ingress);
            // Overflow groups for a pair that has some, or needs some: the
            // mirror alone is tried first, and gives up before planning
            // anything when its grants do not fit (rare, so translating the
            // grants again then, without repeating its warnings, is cheaper
            // than keeping a copy for every pair).
            let overflow = self.config.limits.overflow_groups;
            if overflow && !mapping.shard_groups.is_empty() {
                self.plan_overflow(index, &mapping, &key, &mirror, desired);
            } else {
                let deps = mapping.prepare.into_iter().collect();
                if self.sync_group(&mapping, &key, &mirror, deps, desired, overflow, Direction::Ingress).is_err() {
                    self.plan.warnings.truncate(warnings_before);
                    let desired = self.desired_grants(&mapping, &key, Direction::Ingress);
                    self.plan_overflow(index, &mapping, &key, &mirror, desired);
                }
            }
            // A Classic source has no egress: its mirror's egress is left
            // alone. A VPC source's egress goes on the mirror alone (no
            // overflow groups for egress).
            if !mapping.source.is_classic() {
                let desired = self.desired_grants(&mapping, &key, Direction::Egress);
                let deps = mapping.prepare.into_iter().collect();
                let planned = self.sync_group(&mapping, &key, &mirror, deps, desired, false, Direction::Egress);
                debug_assert!(planned.is_ok(), "a group that may not overflow never reports overflowing");
            }
        }
    }

    /// Plans one group's grants (a mirror, or one of its overflow groups)
    /// towards `desired`: the revokes, the authorize and the description
    /// updates, make-before-break within `limits.rules_per_group` (weights
    /// as EC2 counts them), revokes within `max_revokes_per_cycle`. `deps`
    /// are what every action on the group waits for (its create or tag).
    /// Returns the authorize action, if one is planned and not audited for
    /// waiting on an audited mirror.
    ///
    /// # Errors
    /// [`Overflows`], having planned nothing, when `may_overflow` and the
    /// group cannot hold `desired` with the rules that stay on it.
    #[expect(clippy::too_many_arguments, reason = "one group's whole sync; the callers name each argument")]
    pub(super) fn sync_group(
        &mut self,
        mapping: &Mapping<'a>,
        key: &PairKey,
        mirror: &GroupRef,
        deps: Vec<ActionId>,
        desired: Desired,
        may_overflow: bool,
        direction: Direction,
    ) -> Result<Option<ActionId>, Overflows> {
        let destructive_held = self.destructive_held();
        let source = &mapping.source.id;
        let foreign_refs = self.keeps_foreign_references(mapping);
        let diff = self.diff(mirror, desired, direction, !mapping.source.is_classic(), foreign_refs);
        let quota = self.config.limits.rules_per_group;
        if may_overflow {
            let revoked: usize = diff.revoke.iter().map(|g| self.observed_weight(&g.key.peer)).sum();
            let added: usize = diff.add.grants.iter().map(|g| self.weight(&g.key.peer)).sum();
            if diff.current.saturating_sub(revoked) + added > quota {
                return Err(Overflows);
            }
        }

        // Revocations this cycle: none under a hold (not even shown: a
        // partial view cannot justify them), all of them when audited
        // (shown, never run), otherwise up to the remaining budget.
        let allowed = if destructive_held {
            0
        } else if mapping.audit {
            diff.revoke.len()
        } else {
            diff.revoke.len().min(self.revoke_budget)
        };
        if !mapping.audit {
            self.revoke_budget -= allowed;
            if destructive_held {
                self.plan.deferred.held += diff.revoke.len();
            } else {
                self.plan.deferred.revokes += diff.revoke.len() - allowed;
            }
        }
        for grant in &diff.revoke[allowed..] {
            match &grant.key.peer {
                Peer::Group { group, .. } => {
                    self.refs_pending.insert(group.clone());
                }
                Peer::PrefixList(list) => {
                    self.lists_pending.insert(list.clone());
                }
                _ => {}
            }
        }

        // A grant to a mirror that only an audited mapping would create or
        // tag cannot run until that mapping is enforced: it is shown as
        // audited drift, and the rest of this mapping goes ahead.
        let mut add = diff.add;
        let waiting = add.split_off_waiting(|peer| !mapping.audit && peer.is_some_and(|prepare| prepare.audited));

        // Quota: the group may hold `quota` rules (by weight) at any moment.
        // Grants that would not fit even after every revocation are
        // reported; grants that only wait for deferred revocations are
        // deferred.
        let revoke_weights: Vec<usize> = diff.revoke.iter().map(|g| self.observed_weight(&g.key.peer)).collect();
        let after_all = diff.current.saturating_sub(revoke_weights.iter().sum());
        let after_allowed = diff.current.saturating_sub(revoke_weights[..allowed].iter().sum());
        let fits_ever = quota.saturating_sub(after_all);
        let fits_now = quota.saturating_sub(after_allowed);
        let add_weights: Vec<usize> = add.grants.iter().map(|g| self.weight(&g.key.peer)).collect();
        let keep_ever = prefix_within(&add_weights, fits_ever);
        if keep_ever < add.len() {
            let dropped = add.len() - keep_ever;
            let needed = after_all + add_weights.iter().sum::<usize>();
            self.warn(
                WarningKind::QuotaExceeded,
                Some(key.clone()),
                Some(mirror.to_string()),
                format!(
                    "mirror {} of {} would need {needed} rules, above the quota of {quota}; {dropped} not applied",
                    mirror,
                    self.group_label(source),
                ),
            );
            add.truncate(keep_ever);
        }
        let keep_now = prefix_within(&add_weights[..add.len()], fits_now);
        if keep_now < add.len() {
            if !mapping.audit {
                self.plan.deferred.adds += add.len() - keep_now;
            }
            add.truncate(keep_now);
        }
        // Make before break: revoke first only as many as the quota needs.
        let added: usize = add_weights[..add.len()].iter().sum();
        let excess = (diff.current + added).saturating_sub(quota);
        let mut pre_count = 0;
        let mut freed = 0;
        while freed < excess && pre_count < allowed {
            freed += revoke_weights[pre_count];
            pre_count += 1;
        }
        let revoke_now: Vec<Grant> = diff.revoke[..allowed].to_vec();
        let (pre, post) = revoke_now.split_at(pre_count);

        let mut group_deps = deps;
        let mut pre_id = None;
        if !pre.is_empty() {
            let id = self.push_revoke(direction, mirror, pre.to_vec(), group_deps.clone(), mapping.audit, key);
            pre_id = Some(id);
        }
        // References kept from the source (to other accounts' groups, or
        // to the target account's) go in authorizes of their own, one each:
        // EC2 refuses one whose VPCs are not peered, and that refusal must
        // hold back no other grant (xrefs.rs).
        let foreign = if foreign_refs.other_accounts || foreign_refs.target_account {
            add.split_off_by(|grant, _| self.is_kept_reference(&grant.key.peer, foreign_refs))
        } else {
            Desired::default()
        };
        let mut batches = Vec::with_capacity(2 + foreign.len());
        batches.push((add, false));
        batches.extend(foreign.grants.into_iter().zip(foreign.waits_for).map(|(grant, waits_for)| {
            let mut one = Desired::default();
            one.push(grant, waits_for);
            (one, false)
        }));
        batches.push((waiting, true));
        let mut authorize_id = None;
        for (Desired { grants, waits_for }, waits) in batches {
            if grants.is_empty() {
                continue;
            }
            let mut deps = group_deps.clone();
            deps.extend(pre_id);
            deps.extend(waits_for.into_iter().flatten().map(|prepare| prepare.action));
            let count = grants.len();
            let audit = mapping.audit || waits;
            let action = match direction {
                Direction::Ingress => Action::Authorize { group: mirror.clone(), grants },
                Direction::Egress => Action::AuthorizeEgress { group: mirror.clone(), grants },
            };
            let id = self.push(action, deps, audit, Some(key.clone()));
            if !waits && authorize_id.is_none() {
                authorize_id = Some(id);
            }
            self.drift(mapping.pair).add += count;
        }
        if !post.is_empty() {
            let mut deps = group_deps.clone();
            deps.extend(authorize_id);
            self.push_revoke(direction, mirror, post.to_vec(), deps, mapping.audit, key);
        }
        self.drift(mapping.pair).remove += diff.revoke.len();
        if !diff.update.is_empty() {
            let GroupRef::Existing(group) = mirror else { unreachable!("updates need an existing mirror") };
            let (grants, previous): (Vec<Grant>, Vec<Option<String>>) = diff.update.into_iter().unzip();
            self.drift(mapping.pair).update += grants.len();
            group_deps.sort();
            self.push(
                Action::UpdateDescriptions { group: group.clone(), grants, previous },
                group_deps,
                mapping.audit,
                Some(key.clone()),
            );
        }
        Ok(authorize_id)
    }

    /// The source whose mirror `mirror` is about to be tagged by this plan
    /// (default group or adoption), so that users of it wait for the tag.
    fn tagged_now_for(&self, mirror: &GroupId) -> Option<&Mapping<'a>> {
        let source = &self.managed[*self.source_of_mirror.get(mirror)?];
        matches!(source.mirror, Some(MirrorChoice::Existing { tag: Some(_), .. })).then_some(source)
    }

    /// The create or tag action `group`, a mirror in a grant or a link,
    /// waits for, if any.
    pub(super) fn prepare_of(&self, group: &GroupRef) -> Option<ActionId> {
        match group {
            GroupRef::New { source, shard: 0, .. } => self.mapping(source)?.prepare,
            GroupRef::New { source, shard, .. } => {
                self.mapping(source)?.shards.iter().find(|slot| slot.shard == *shard)?.prepare
            }
            GroupRef::Existing(id) => self.tagged_now_for(id)?.prepare,
        }
    }

    pub(super) fn push_revoke(
        &mut self,
        direction: Direction,
        mirror: &GroupRef,
        grants: Vec<Grant>,
        deps: Vec<ActionId>,
        audit: bool,
        key: &PairKey,
    ) -> ActionId {
        let referenced: Vec<GroupId> = grants
            .iter()
            .filter_map(|g| match &g.key.peer {
                Peer::Group { group, .. } => Some(group.clone()),
                _ => None,
            })
            .collect();
        let lists: Vec<crate::model::PrefixListId> = grants
            .iter()
            .filter_map(|g| match &g.key.peer {
                Peer::PrefixList(list) => Some(list.clone()),
                _ => None,
            })
            .collect();
        let action = match (direction, mirror) {
            (Direction::Ingress, GroupRef::Existing(group)) => Action::Revoke { group: group.clone(), grants },
            (Direction::Ingress, GroupRef::New { .. }) => unreachable!("ingress revokes need an existing mirror"),
            // A new mirror's egress revoke takes away EC2's default rule.
            (Direction::Egress, mirror) => Action::RevokeEgress { group: mirror.clone(), grants },
        };
        let id = self.push(action, deps, audit, Some(key.clone()));
        for list in lists {
            self.revokes_of_list.entry(list).or_default().push(id);
        }
        for peer in referenced {
            if audit {
                self.removed_by_audit.insert(peer.clone());
            }
            self.revokes_of_ref.entry(peer).or_default().push(id);
        }
        id
    }

    /// The source's grants translated for its mirror, sorted by key, one per
    /// key (the first, in the order of the sorted source grants), each with
    /// the create or tag action of the mirror it references; reports what
    /// cannot be translated. Needs the create and tag actions planned.
    fn desired_grants(&mut self, mapping: &Mapping<'a>, key: &PairKey, direction: Direction) -> Desired {
        let rules = mapping.source.rules(direction);
        let mut desired = Desired::with_capacity(rules.len());
        // Whether the translated keys come out strictly increasing.
        let mut in_order = true;
        let vpc_source = !mapping.source.is_classic();
        for grant in by_key(rules, |a, b| a.cmp(b)).0 {
            let description = grant.description.as_deref().map(sanitize_text).filter(|d| !d.is_empty());
            let peer = match &grant.key.peer {
                Peer::Ipv4(net) => Ok((Peer::Ipv4(*net), None)),
                Peer::Ipv6(net) if vpc_source => Ok((Peer::Ipv6(*net), None)),
                Peer::PrefixList(list) if vpc_source => match self.translate_prefix_list(mapping, list) {
                    Ok(list) => Ok((Peer::PrefixList(list), None)),
                    Err(None) => continue,
                    Err(Some(reason)) => {
                        let message = format!(
                            "{} {} rule {} cannot be mirrored: {reason}",
                            mapping.source.id,
                            direction.as_str(),
                            self.describe_source_grant(grant, direction),
                        );
                        self.warn(
                            WarningKind::PrefixListUnavailable,
                            Some(key.clone()),
                            Some(mapping.source.id.to_string()),
                            message,
                        );
                        continue;
                    }
                },
                Peer::Ipv6(_) | Peer::PrefixList(_) => Err(Unmirrorable::NotOwnedKind),
                // A group of another account than the mirror's (xrefs.rs).
                Peer::Group { group, owner }
                    if vpc_source
                        && !self.managed_index.contains_key(group)
                        && let Some(kept) = self.kept_reference(mapping, group, owner.as_deref()) =>
                {
                    kept.map(|peer| (peer, None))
                }
                Peer::Group { owner: Some(_), .. } => Err(Unmirrorable::OtherAccount),
                Peer::Group { group, owner: None } => {
                    match self.managed_index.get(group).map(|&index| &self.peer_targets[index]) {
                        // Expanded to its members' addresses (expand.rs).
                        None if mapping.expands => match self.expansions.get(group) {
                            Some(list) => Ok((Peer::PrefixList(list.clone()), None)),
                            None => Err(Unmirrorable::ExpansionPending),
                        },
                        None => Err(Unmirrorable::NotManaged),
                        Some(target) if target.vpc != mapping.vpc => Err(Unmirrorable::OtherVpc),
                        // The peer's mirror waits for its own create or tag.
                        Some(target) => match &target.mirror {
                            Some(mirror) => Ok((Peer::Group { group: mirror.clone(), owner: None }, target.prepare)),
                            None => Err(Unmirrorable::MirrorUnavailable),
                        },
                    }
                }
            };
            match peer {
                Ok((peer, prepare)) => {
                    let key = GrantKey { protocol: grant.key.protocol, ports: grant.key.ports, peer };
                    in_order &= desired.grants.last().is_none_or(|last| last.key < key);
                    desired.push(Grant { key, description }, prepare);
                }
                Err(reason) => {
                    let what = match direction {
                        Direction::Ingress => "rule",
                        Direction::Egress => "egress rule",
                    };
                    let message = format!(
                        "{} {what} {} cannot be mirrored: {}",
                        mapping.source.id,
                        self.describe_source_grant(grant, direction),
                        reason.phrase()
                    );
                    self.plan.warnings.push(Warning {
                        kind: WarningKind::Unmirrorable,
                        pair: Some(key.clone()),
                        subject: Some(mapping.source.id.to_string()),
                        reason: Some(reason),
                        message,
                    });
                }
            }
        }
        // Translation keeps the source order except among group peers (a
        // mirror's id or a new mirror sorts unlike its source's id). When it
        // did not: a stable sort, keeping the first of equal keys (the first
        // description wins).
        if !in_order {
            let mut pairs: Vec<_> = desired.grants.into_iter().zip(desired.waits_for).collect();
            pairs.sort_by(|(a, _), (b, _)| a.key.cmp(&b.key));
            pairs.dedup_by(|(later, _), (first, _)| later.key == first.key);
            (desired.grants, desired.waits_for) = pairs.into_iter().unzip();
        }
        desired
    }

    /// One [`PeerTarget`] per managed source, in `managed` order.
    fn peer_targets(&self) -> Vec<PeerTarget> {
        self.managed
            .iter()
            .map(|mapping| PeerTarget {
                vpc: mapping.vpc.clone(),
                mirror: self.mirror_ref(mapping).cloned(),
                prepare: mapping.prepare.map(|action| Prepare { action, audited: self.plan.actions[action.0].audit }),
            })
            .collect()
    }

    fn describe_source_grant(&self, grant: &Grant, direction: Direction) -> String {
        let peer = match &grant.key.peer {
            Peer::Group { group, owner } => {
                let name = self.snap.source_groups.get(group).map(|g| g.name.as_str());
                match (name, owner) {
                    (Some(name), Some(owner)) => format!("{group} ({name}, account {owner})"),
                    (None, Some(owner)) => format!("{group} (account {owner})"),
                    (Some(name), None) => format!("{group} ({name})"),
                    (None, None) => group.to_string(),
                }
            }
            other => render::peer_text(&other.clone().map_group(GroupRef::Existing)),
        };
        let to_from = match direction {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        format!("{} {to_from} {peer}", render::proto_ports(grant.key.protocol, &grant.key.ports))
    }

    /// `desired` (sorted by key, one per key) against the mirror's rules: a
    /// merge of two sorted lists, without copying either.
    ///
    /// The mirror's owned grants are its IPv4 grants and its references to
    /// mirrors, plus, for the mirror of a VPC source, its IPv6 and
    /// prefix-list grants. A new mirror's egress is taken to be EC2's
    /// default (all traffic to 0.0.0.0/0), so that one pass makes it the
    /// source's. Egress descriptions are set when a grant is authorized and
    /// not compared afterwards (no update call for egress).
    fn diff(
        &self,
        mirror: &GroupRef,
        desired: Desired,
        direction: Direction,
        vpc_source: bool,
        foreign_refs: KeptReferences,
    ) -> GrantDiff {
        let default_egress;
        let observed: &[Grant] = match (mirror, direction) {
            (GroupRef::New { .. }, Direction::Ingress) => {
                return GrantDiff { add: desired, revoke: Vec::new(), update: Vec::new(), current: 0 };
            }
            (GroupRef::New { .. }, Direction::Egress) => {
                default_egress = [default_egress_grant()];
                &default_egress
            }
            (GroupRef::Existing(id), _) => match self.snap.vpc_groups.get(id) {
                Some(group) => group.rules(direction),
                None => {
                    return GrantDiff { add: Desired::default(), revoke: Vec::new(), update: Vec::new(), current: 0 };
                }
            },
        };
        // The rules by key; of several with one key, the last observed.
        let (mut deduped, distinct) = by_key(observed, |a, b| a.key.cmp(&b.key));
        if !distinct {
            deduped.dedup_by(|later, earlier| {
                let same = later.key == earlier.key;
                if same {
                    *earlier = *later;
                }
                same
            });
        }
        let owned = |grant: &Grant| self.owned_rule(grant, vpc_source, foreign_refs);
        let mut add = Desired::default();
        let mut update = Vec::new();
        let mut revoke = Vec::new();
        let mut have = deduped.into_iter().peekable();
        for (want, prepare) in desired.grants.into_iter().zip(desired.waits_for) {
            // Observed rules sorting before the next desired one are not
            // desired; one sorting after it means it is missing.
            let mut found = None;
            while let Some(&grant) = have.peek() {
                match cmp_planned_observed(&want.key, &grant.key) {
                    Ordering::Greater => {
                        if owned(grant) {
                            revoke.push(grant.clone());
                        }
                        have.next();
                    }
                    Ordering::Equal => {
                        found = have.next();
                        break;
                    }
                    Ordering::Less => break,
                }
            }
            match found {
                None => add.push(want, prepare),
                Some(grant) if direction == Direction::Ingress && grant.description != want.description => {
                    let mut updated = grant.clone();
                    updated.description = want.description;
                    update.push((updated, grant.description.clone()));
                }
                Some(_) => {}
            }
        }
        revoke.extend(have.filter(|g| owned(g)).cloned());
        let current = observed.iter().map(|g| self.observed_weight(&g.key.peer)).sum();
        GrantDiff { add, revoke, update, current }
    }
}

/// The egress rule EC2 gives every new VPC group: all traffic to 0.0.0.0/0.
/// (A VPC with an IPv6 block adds `::/0` too; the snapshot does not say
/// which VPCs have one, so a new mirror's `::/0` is revoked one pass later.)
fn default_egress_grant() -> Grant {
    Grant::new(Protocol::All, Ports::None, Peer::Ipv4(ipnet::Ipv4Net::default()), None)
}

/// Orders a planned key against an observed one as if the observed key's
/// group were `GroupRef::Existing`: the order of `GrantKey<GroupRef>`, without
/// converting (cloning) the observed key.
pub(super) fn cmp_planned_observed(planned: &GrantKey<GroupRef>, observed: &GrantKey) -> Ordering {
    fn rank<G>(peer: &Peer<G>) -> u8 {
        match peer {
            Peer::Ipv4(_) => 0,
            Peer::Ipv6(_) => 1,
            Peer::PrefixList(_) => 2,
            Peer::Group { .. } => 3,
        }
    }
    planned.protocol.cmp(&observed.protocol).then(planned.ports.cmp(&observed.ports)).then_with(|| {
        match (&planned.peer, &observed.peer) {
            (Peer::Ipv4(a), Peer::Ipv4(b)) => a.cmp(b),
            (Peer::Ipv6(a), Peer::Ipv6(b)) => a.cmp(b),
            (Peer::PrefixList(a), Peer::PrefixList(b)) => a.cmp(b),
            (Peer::Group { group: GroupRef::Existing(a), owner: p }, Peer::Group { group: b, owner: o }) => {
                a.cmp(b).then_with(|| p.cmp(o))
            }
            // `New` sorts after every `Existing`.
            (Peer::Group { group: GroupRef::New { .. }, .. }, Peer::Group { .. }) => Ordering::Greater,
            (planned, observed) => rank(planned).cmp(&rank(observed)),
        }
    })
}

/// `rules` in the order of `cmp` (stable), and whether their keys are
/// distinct. Observe and EC2 list a group's rules one per key, and usually
/// in key order: then one pass of comparisons replaces a sort (both orders
/// agree when keys are distinct).
pub(super) fn by_key(rules: &[Grant], cmp: impl Fn(&Grant, &Grant) -> Ordering) -> (Vec<&Grant>, bool) {
    let mut sorted: Vec<&Grant> = rules.iter().collect();
    if rules.windows(2).all(|pair| pair[0].key < pair[1].key) {
        return (sorted, true);
    }
    sorted.sort_by(|a, b| cmp(a, b));
    (sorted, false)
}
