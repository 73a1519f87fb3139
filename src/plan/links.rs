//! ClassicLink: enablement per VPC, then phase 4, links (attach, relink,
//! detach).
//!
//! Reads the chosen mirrors (phase 2), each target VPC's ClassicLink state,
//! the snapshot's instances and links, the create and tag actions (phase 3),
//! the holds and unlink budget (safety). Decides which VPCs get an
//! `EnableClassicLink` (and which mappings link instances this pass), then
//! per instance in id order which mirrors it should be linked to and the
//! attach, relink or detach that gets it there; groups that are not ours
//! stay in a link as they are. Records which link actions remove each group
//! and which groups stay linked, for the orphans phase. Rules:
//! docs/semantics.md, "Instances and ClassicLink (Classic sources only)"
//! and "Safety".

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use super::{Action, ActionId, GroupRef, Planner, WarningKind};
use crate::model::{GroupId, Instance, InstanceId, InstanceState, Link, MAX_GROUPS_PER_LINK, Snapshot, VpcId};

impl<'a> Planner<'a> {
    pub(super) fn plan_classiclink_enablement(&mut self) {
        let mut wanted: BTreeMap<VpcId, (bool, bool)> = BTreeMap::new(); // (enable requested, all audited)
        for mapping in &self.managed {
            if !mapping.source.is_classic() || !mapping.link_instances || mapping.mirror.is_none() {
                continue;
            }
            let entry = wanted.entry(mapping.vpc.clone()).or_insert((false, true));
            if mapping.enable_classiclink {
                entry.0 = true;
                entry.1 &= mapping.audit;
            }
        }
        for (vpc, (enable, audit)) in wanted {
            if self.snap.vpcs.get(&vpc).is_some_and(|v| v.classic_link_enabled) {
                self.linkable_vpcs.insert(vpc);
            } else if enable {
                let id = self.push(Action::EnableClassicLink { vpc: vpc.clone() }, vec![], audit, None);
                self.enable_action.insert(vpc.clone(), id);
                self.linkable_vpcs.insert(vpc);
            } else {
                self.warn(
                    WarningKind::ClassicLinkDisabled,
                    None,
                    Some(vpc.to_string()),
                    format!(
                        "{vpc} does not have ClassicLink enabled; its instances are not linked \
                         (set enable_classiclink = true to let the daemon enable it)"
                    ),
                );
            }
        }
        for mapping in &mut self.managed {
            mapping.links_instances = mapping.source.is_classic()
                && mapping.link_instances
                && mapping.mirror.is_some()
                && self.linkable_vpcs.contains(&mapping.vpc);
        }
    }

    pub(super) fn plan_links(&mut self) {
        let snap = self.snap;
        let destructive_held = self.destructive_held();
        let global_audit = self.global_audit();
        // Without the full list of links, an attach would be a guess (EC2
        // rejects attaching an instance that is already linked).
        let links_known = !snap.incomplete.contains(&crate::model::SnapshotPart::Links);
        // The managed sources (indices in `managed`) whose mirrors an
        // instance is entitled to; one buffer for every instance.
        let mut entitled: Vec<usize> = Vec::new();

        for (instance_id, instance, link) in instances_and_links(snap) {
            // VPC instances cannot be linked; pending ones are left for the
            // next cycle; stopped ones were unlinked by EC2.
            if instance.is_some_and(|i| i.vpc_id.is_some() || i.state != InstanceState::Running) {
                continue;
            }
            entitled.clear();
            let mut audit = false;
            for group in instance.map(|i| &i.groups).into_iter().flatten() {
                let Some(&index) = self.managed_index.get(group) else { continue };
                if self.managed[index].links_instances {
                    entitled.push(index);
                    audit |= self.managed[index].audit;
                }
            }
            // In the order of their mirrors, so that those come out as a
            // sorted set; nothing is copied until an action is planned.
            let mirror_of = |index: usize| self.mirror_ref(&self.managed[index]).expect("linked sources have mirrors");
            entitled.sort_unstable_by(|&a, &b| mirror_of(a).cmp(mirror_of(b)));
            let vpc_of = |index: usize| &self.managed[index].vpc;
            if entitled.iter().any(|&index| vpc_of(index) != vpc_of(entitled[0])) {
                let vpcs: BTreeSet<&VpcId> = entitled.iter().map(|&index| vpc_of(index)).collect();
                let vpcs: Vec<String> = vpcs.into_iter().map(ToString::to_string).collect();
                self.warn(
                    WarningKind::ConflictMultiVpc,
                    None,
                    Some(instance_id.to_string()),
                    format!(
                        "{instance_id} is in managed groups mirrored into several VPCs ({}); not linked",
                        vpcs.join(", ")
                    ),
                );
                if let Some(link) = link {
                    self.links_pending.extend(link.groups.iter().cloned());
                }
                continue;
            }
            if entitled.is_empty() && link.is_none_or(|l| !l.groups.iter().any(|g| self.is_ours(g))) {
                continue;
            }
            if entitled.is_empty() {
                audit = global_audit;
            }
            // Overflow groups come with their mirror (docs/semantics.md,
            // "Overflow groups"); rare, so the common case copies nothing.
            let shards_of = |index: usize| self.managed[index].shards.iter().map(|slot| &slot.group);
            let with_shards = entitled.iter().any(|&index| !self.managed[index].shards.is_empty());
            // Already linked as it should be (most instances in a steady
            // state): decided without copying a group id.
            if let (Some(link), Some(&first)) = (link, entitled.first())
                && *vpc_of(first) == link.vpc_id
            {
                let exact = if with_shards {
                    let mut all: Vec<&GroupRef> = entitled
                        .iter()
                        .flat_map(|&index| std::iter::once(mirror_of(index)).chain(shards_of(index)))
                        .collect();
                    all.sort_unstable();
                    all.dedup();
                    self.link_has_exactly(link, all.into_iter())
                } else {
                    self.link_has_exactly(link, entitled.iter().map(|&index| mirror_of(index)))
                };
                if exact {
                    continue;
                }
            }
            // The one VPC and its mirrors (with their overflow groups), as a
            // sorted set.
            let target: Option<(VpcId, Vec<GroupRef>)> = entitled.first().map(|&first| {
                let mut mirrors: Vec<GroupRef> = Vec::with_capacity(entitled.len());
                for &index in &entitled {
                    if mirrors.last() != Some(mirror_of(index)) {
                        mirrors.push(mirror_of(index).clone());
                    }
                }
                if with_shards {
                    mirrors.extend(entitled.iter().flat_map(|&index| shards_of(index)).cloned());
                    mirrors.sort_unstable();
                    mirrors.dedup();
                }
                (vpc_of(first).clone(), mirrors)
            });
            // Their pairs, as indices in `plan.pairs` (ordered as the keys).
            let mut pairs: Vec<usize> = entitled.iter().map(|&index| self.managed[index].pair).collect();

            let action = match (link, target) {
                (None, None) => continue,
                (None, Some(_)) if !links_known => continue,
                (None, Some((vpc, mirrors))) => {
                    if mirrors.len() > MAX_GROUPS_PER_LINK {
                        self.link_limit_warning(instance_id, &vpc, mirrors.len());
                        continue;
                    }
                    Action::Attach { instance: instance_id.clone(), vpc, groups: mirrors }
                }
                (Some(link), target) => {
                    let target: Option<(VpcId, BTreeSet<GroupRef>)> =
                        target.map(|(vpc, mirrors)| (vpc, mirrors.into_iter().collect()));
                    let has_ours = link.groups.iter().any(|g| self.is_ours(g));
                    let foreign: BTreeSet<GroupRef> = link
                        .groups
                        .iter()
                        .filter(|g| !self.is_ours(g))
                        .map(|g| GroupRef::Existing(g.clone()))
                        .collect();
                    let current: BTreeSet<GroupRef> =
                        link.groups.iter().map(|g| GroupRef::Existing(g.clone())).collect();
                    let (vpc, desired) = match target {
                        Some((vpc, mirrors)) if vpc == link.vpc_id => (vpc, &foreign | &mirrors),
                        Some((vpc, _)) if !has_ours => {
                            self.warn(
                                WarningKind::ConflictForeignLink,
                                None,
                                Some(instance_id.to_string()),
                                format!(
                                    "{instance_id} is linked by someone else to {}, not {vpc}; not touched",
                                    link.vpc_id
                                ),
                            );
                            continue;
                        }
                        // Moving it would unlink the instance from another
                        // deployment's mirror, which wants it where it is.
                        Some((vpc, _)) if link.groups.iter().any(|g| self.theirs.contains(g)) => {
                            let theirs = link.groups.iter().find(|g| self.theirs.contains(g)).expect("checked");
                            self.warn(
                                WarningKind::ConflictForeignLink,
                                None,
                                Some(instance_id.to_string()),
                                format!(
                                    "{instance_id} is linked to {} with {theirs}, a mirror of another deployment; \
                                     not moved to {vpc}",
                                    link.vpc_id
                                ),
                            );
                            self.links_pending.extend(link.groups.iter().cloned());
                            continue;
                        }
                        // Our link in the wrong VPC (the mapping moved): the
                        // foreign groups of the old VPC cannot come along.
                        Some((vpc, mirrors)) => (vpc, mirrors),
                        None => (link.vpc_id.clone(), foreign),
                    };
                    if vpc == link.vpc_id && desired == current {
                        continue;
                    }
                    if desired.len() > MAX_GROUPS_PER_LINK {
                        self.link_limit_warning(instance_id, &vpc, desired.len());
                        self.links_pending.extend(link.groups.iter().cloned());
                        continue;
                    }
                    let from: Vec<GroupId> = link.groups.iter().cloned().collect();
                    if desired.is_empty() {
                        Action::Detach { instance: instance_id.clone(), vpc: link.vpc_id.clone(), groups: from }
                    } else {
                        Action::Relink {
                            instance: instance_id.clone(),
                            from_vpc: link.vpc_id.clone(),
                            from,
                            vpc,
                            groups: desired.into_iter().collect(),
                        }
                    }
                }
            };
            // A link into a VPC whose ClassicLink only an audited mapping
            // would enable cannot be made: show it, audited, with that enable.
            if let Action::Attach { vpc, .. } | Action::Relink { vpc, .. } = &action
                && self.enable_action.get(vpc).is_some_and(|id| self.plan.actions[id.0].audit)
            {
                audit = true;
            }

            let removed: Vec<GroupId> = match &action {
                Action::Detach { groups, .. } => groups.clone(),
                Action::Relink { from, groups, .. } => {
                    from.iter().filter(|g| !groups.contains(&GroupRef::Existing((*g).clone()))).cloned().collect()
                }
                _ => Vec::new(),
            };
            if action.is_destructive() && destructive_held {
                if !audit {
                    self.plan.deferred.held += 1;
                }
                self.links_pending.extend(removed);
                continue;
            }
            if action.is_destructive() && !audit {
                if self.unlink_budget == 0 {
                    self.plan.deferred.unlinks += 1;
                    self.links_pending.extend(removed);
                    continue;
                }
                self.unlink_budget -= 1;
            }
            // Drift belongs to the pairs entitled to the link and to the
            // pairs whose mirrors the action removes from it.
            pairs.extend(removed.iter().filter_map(|group| self.pair_of_mirror(group)));
            pairs.sort_unstable();
            pairs.dedup();
            for &pair in &pairs {
                self.drift(pair).links += 1;
            }
            let pair = pairs.first().map(|&first| self.plan.pairs[first].key.clone());
            let mut deps = Vec::new();
            let (Action::Attach { vpc, groups, .. } | Action::Relink { vpc, groups, .. }) = &action else {
                let id = self.push(action, deps, audit, pair);
                self.note_unlinks(id, removed, audit);
                continue;
            };
            deps.extend(self.enable_action.get(vpc).copied());
            deps.extend(groups.iter().filter_map(|group| self.prepare_of(group)));
            let id = self.push(action, deps, audit, pair);
            self.note_unlinks(id, removed, audit);
        }
    }

    /// Whether `link` holds exactly the groups it should in its VPC: its
    /// groups that are not ours, kept as they are, and `mirrors` (sorted).
    /// A merge of the two sorted lists.
    fn link_has_exactly<'m>(&self, link: &Link, mirrors: impl Iterator<Item = &'m GroupRef>) -> bool {
        let mut mirrors = mirrors.peekable();
        for group in &link.groups {
            let entitled = mirrors.next_if(|mirror| mirror.existing() == Some(group)).is_some();
            // A group of ours that is not one of the mirrors goes.
            if !entitled && self.is_ours(group) {
                return false;
            }
        }
        // A mirror not in the link (or not yet created) comes.
        mirrors.next().is_none()
    }

    /// The pair (index in `plan.pairs`) whose (existing) mirror `group` is.
    fn pair_of_mirror(&self, group: &GroupId) -> Option<usize> {
        self.source_of_mirror.get(group).map(|&source| self.managed[source].pair)
    }

    fn note_unlinks(&mut self, id: ActionId, removed: Vec<GroupId>, audit: bool) {
        for group in removed {
            if audit {
                self.removed_by_audit.insert(group.clone());
            }
            self.unlinks_of_group.entry(group).or_default().push(id);
        }
    }

    fn link_limit_warning(&mut self, instance: &InstanceId, vpc: &VpcId, count: usize) {
        self.warn(
            WarningKind::LinkLimit,
            None,
            Some(instance.to_string()),
            format!(
                "{instance} would need {count} groups in its link to {vpc}, above EC2's limit of {MAX_GROUPS_PER_LINK}; not linked"
            ),
        );
    }
}

/// Every instance id of the snapshot's instances and links, in id order,
/// with its instance and its link (either may be missing): a merge of the
/// two sorted maps.
fn instances_and_links(snap: &Snapshot) -> impl Iterator<Item = (&InstanceId, Option<&Instance>, Option<&Link>)> {
    let mut instances = snap.instances.iter().peekable();
    let mut links = snap.links.iter().peekable();
    std::iter::from_fn(move || {
        let order = match (instances.peek(), links.peek()) {
            (None, None) => return None,
            (Some((instance, _)), Some((link, _))) => instance.cmp(link),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
        };
        Some(match order {
            Ordering::Less => instances.next().map(|(id, instance)| (id, Some(instance), None))?,
            Ordering::Greater => links.next().map(|(id, link)| (id, None, Some(link)))?,
            Ordering::Equal => {
                let (id, instance) = instances.next()?;
                (id, Some(instance), links.next().map(|(_, link)| link))
            }
        })
    })
}
