//! Phase 2, mirrors: which VPC group is each pair's mirror, and whose.
//!
//! Reads the accepted mappings (phase 1), the snapshot's VPC groups with
//! their ownership and owner tags, and `daemon.owner`. Decides each pair's
//! mirror: ours by tag, an unowned one to claim, the VPC's `default` group,
//! a group to adopt, or one to create; pushes the pairs to the plan; fills
//! `ours`, `theirs` and `source_of_mirror`; and warns about what conflicts
//! (a name taken, another deployment's mirror, a missing VPC, a mirror whose
//! name drifted). Rules: docs/semantics.md, "The mirror group".

use super::{Drift, GroupRef, LookupMap, Mapping, PairKey, PairPlan, Planner, TagReason, WarningKind};
use crate::model::{GroupId, OWNER_TAG, SecurityGroup, VpcId, shard_name};

/// Whose a mirror (a group carrying the ownership tag) is, seen from this
/// deployment (`daemon.owner`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ownership<'g> {
    /// Its owner tag names this deployment.
    Mine,
    /// It has no owner tag: made by the 2016 Lambda or by a version without
    /// owner tags. The deployment managing its source claims it.
    Unowned,
    /// Its owner tag names another deployment (any other value, even an
    /// empty one): never modified, unlinked or deleted.
    Foreign(&'g str),
}

/// Whose `group` is to the deployment named `me`.
pub(super) fn ownership<'g>(group: &'g SecurityGroup, me: &str) -> Ownership<'g> {
    match group.owner_tag() {
        None => Ownership::Unowned,
        Some(owner) if owner == me => Ownership::Mine,
        Some(owner) => Ownership::Foreign(owner),
    }
}

/// What a pair's mirror is.
#[derive(Clone, Debug)]
pub(super) enum MirrorChoice {
    /// An existing group; `tag` when it still needs our tag.
    Existing { id: GroupId, tag: Option<TagReason> },
    /// To be created by this plan.
    New,
}

impl<'a> Planner<'a> {
    pub(super) fn choose_mirrors(&mut self) {
        let snap = self.snap;
        let vpcs_complete = !snap.incomplete.contains(&crate::model::SnapshotPart::Vpcs);
        let mut tagged: LookupMap<(VpcId, GroupId), Vec<&SecurityGroup>> = LookupMap::default();
        let mut by_name: LookupMap<(VpcId, &str), &SecurityGroup> = LookupMap::default();
        // Our overflow groups by pair; never candidates for the mirror itself.
        let mut shards: LookupMap<(VpcId, GroupId), Vec<&SecurityGroup>> = LookupMap::default();
        let me = self.config.daemon.owner.as_str();
        for group in snap.vpc_groups.values() {
            let Some(vpc) = &group.vpc_id else { continue };
            if let Some(source) = group.mirrored_from() {
                match group.overflow_shard() {
                    None => tagged.entry((vpc.clone(), source)).or_default().push(group),
                    Some(Some(_)) if ownership(group, me) == Ownership::Mine => {
                        shards.entry((vpc.clone(), source)).or_default().push(group);
                    }
                    // Another deployment's, ours without an owner, or with a
                    // malformed number: not in use (an orphan, if ours).
                    Some(_) => {}
                }
                match ownership(group, me) {
                    Ownership::Mine => self.ours.insert(group.id.clone()),
                    Ownership::Foreign(_) => self.theirs.insert(group.id.clone()),
                    Ownership::Unowned => false,
                };
            }
            by_name.insert((vpc.clone(), group.name.as_str()), group);
        }

        for index in 0..self.managed.len() {
            let mapping = self.managed[index].clone();
            let source = mapping.source.id.clone();
            let key = PairKey { source: source.clone(), vpc: mapping.vpc.clone() };
            let mut pair = PairPlan {
                key: key.clone(),
                source_name: mapping.source.name.clone(),
                mirror: None,
                mirror_name: mapping.name.clone(),
                audit: mapping.audit,
                origin: mapping.origin,
                drift: Drift::default(),
                shards: Vec::new(),
            };
            let choice = if !snap.vpcs.contains_key(&mapping.vpc) {
                let why = if vpcs_complete { "does not exist" } else { "was not observed (incomplete snapshot)" };
                self.warn(
                    WarningKind::VpcNotFound,
                    Some(key.clone()),
                    Some(mapping.vpc.to_string()),
                    format!("{} cannot be mirrored: {} {why}", self.group_label(&source), mapping.vpc),
                );
                None
            } else if mapping.name == "default" {
                match by_name.get(&(mapping.vpc.clone(), "default")) {
                    Some(group) => match group.mirrored_from() {
                        Some(mirrored) if mirrored == source => match ownership(group, me) {
                            Ownership::Mine => Some(MirrorChoice::Existing { id: group.id.clone(), tag: None }),
                            Ownership::Unowned => {
                                Some(MirrorChoice::Existing { id: group.id.clone(), tag: Some(TagReason::Claim) })
                            }
                            Ownership::Foreign(other) => {
                                self.foreign_owner_warning(&key, group, other, None);
                                None
                            }
                        },
                        Some(other) => {
                            self.warn(
                                WarningKind::ConflictNameTaken,
                                Some(key.clone()),
                                Some(group.id.to_string()),
                                format!(
                                    "the default group {} of {} already mirrors {}; {} is not mirrored",
                                    group.id,
                                    mapping.vpc,
                                    self.group_label(&other),
                                    self.group_label(&source)
                                ),
                            );
                            None
                        }
                        None if snap.source_groups.contains_key(&group.id) => {
                            self.source_taken_warning(&key, group, &mapping);
                            None
                        }
                        None => Some(MirrorChoice::Existing { id: group.id.clone(), tag: Some(TagReason::Default) }),
                    },
                    None => {
                        self.warn(
                            WarningKind::VpcNotFound,
                            Some(key.clone()),
                            Some(mapping.vpc.to_string()),
                            format!("the default group of {} was not observed", mapping.vpc),
                        );
                        None
                    }
                }
            } else if let Some(found) = tagged.get(&(mapping.vpc.clone(), source.clone())) {
                // Ours if we have one, else one without an owner to claim;
                // another deployment's is theirs: reported, and none created.
                let of = |wanted: fn(&Ownership<'_>) -> bool| -> Vec<&SecurityGroup> {
                    found.iter().copied().filter(|g| wanted(&ownership(g, me))).collect()
                };
                let mine = of(|o| *o == Ownership::Mine);
                let (candidates, tag) = if mine.is_empty() {
                    (of(|o| *o == Ownership::Unowned), Some(TagReason::Claim))
                } else {
                    (mine, None)
                };
                // Prefer the group with the desired name, then the oldest id, so
                // that a duplicate left by a race is the one that gets orphaned.
                let chosen = candidates
                    .iter()
                    .find(|g| g.name == mapping.name)
                    .or_else(|| candidates.iter().min_by(|a, b| a.id.cmp(&b.id)))
                    .copied();
                for group in found {
                    if let Ownership::Foreign(other) = ownership(group, me) {
                        self.foreign_owner_warning(&key, group, other, chosen.map(|c| &c.id));
                    }
                }
                if let Some(chosen) = chosen
                    && chosen.name != mapping.name
                {
                    self.warn(
                        WarningKind::NameDrift,
                        Some(key.clone()),
                        Some(chosen.id.to_string()),
                        format!(
                            "mirror {} is named {:?}, not {:?}; EC2 cannot rename a group (delete it to recreate)",
                            chosen.id, chosen.name, mapping.name
                        ),
                    );
                }
                chosen.map(|chosen| MirrorChoice::Existing { id: chosen.id.clone(), tag })
            } else if let Some(group) = by_name.get(&(mapping.vpc.clone(), mapping.name.as_str())) {
                match group.mirrored_from() {
                    // Never adopt a source: the source side is never written.
                    None if snap.source_groups.contains_key(&group.id) => {
                        self.source_taken_warning(&key, group, &mapping);
                        None
                    }
                    None if mapping.adopt => {
                        Some(MirrorChoice::Existing { id: group.id.clone(), tag: Some(TagReason::Adopt) })
                    }
                    owner => {
                        let whose = owner.map_or_else(
                            || "is not ours (set adopt = true to take it over)".to_owned(),
                            |o| format!("mirrors {}", self.group_label(&o)),
                        );
                        self.warn(
                            WarningKind::ConflictNameTaken,
                            Some(key.clone()),
                            Some(group.id.to_string()),
                            format!(
                                "{} already has a group {:?} ({}) that {whose}; {} is not mirrored",
                                mapping.vpc,
                                mapping.name,
                                group.id,
                                self.group_label(&source)
                            ),
                        );
                        None
                    }
                }
            } else {
                Some(MirrorChoice::New)
            };
            if let Some(choice) = &choice {
                pair.mirror = Some(match choice {
                    MirrorChoice::Existing { id, .. } => {
                        self.ours.insert(id.clone());
                        self.source_of_mirror.insert(id.clone(), index);
                        GroupRef::Existing(id.clone())
                    }
                    MirrorChoice::New => GroupRef::New { source: source.clone(), vpc: mapping.vpc.clone(), shard: 0 },
                });
            }
            let shard_groups = match (&choice, self.config.limits.overflow_groups) {
                (Some(_), true) => shards.remove(&(mapping.vpc.clone(), source.clone())).unwrap_or_default(),
                _ => Vec::new(),
            };
            let shard_groups = self.pick_shard_groups(shard_groups, &mapping.name);
            let mapping = &mut self.managed[index];
            mapping.mirror = choice;
            mapping.shard_groups = shard_groups;
            mapping.pair = self.plan.pairs.len();
            self.plan.pairs.push(pair);
        }
    }

    /// One overflow group per shard number, in shard order, from our
    /// overflow groups of a pair: the one named as it should be, else the
    /// oldest id (a duplicate left by a race becomes an orphan). Records the
    /// chosen ones in `shard_members`, so that they are not orphans.
    fn pick_shard_groups(&mut self, mut found: Vec<&'a SecurityGroup>, mirror_name: &str) -> Vec<&'a SecurityGroup> {
        let shard = |g: &SecurityGroup| g.overflow_shard().flatten().unwrap_or(0);
        found.sort_by(|a, b| {
            let named = |g: &SecurityGroup| g.name != shard_name(mirror_name, shard(g));
            (shard(a), named(a), &a.id).cmp(&(shard(b), named(b), &b.id))
        });
        found.dedup_by(|later, first| shard(later) == shard(first));
        for group in &found {
            self.shard_members.insert(group.id.clone());
        }
        found
    }

    /// `group`, a mirror of the pair's source, belongs to the deployment
    /// `other`: never touched. `ours` is the pair's own mirror, when this
    /// deployment has one too (two deployments manage the pair).
    fn foreign_owner_warning(&mut self, key: &PairKey, group: &SecurityGroup, other: &str, ours: Option<&GroupId>) {
        let me = &self.config.daemon.owner;
        let source = self.group_label(&key.source);
        let message = match ours {
            None => format!(
                "the mirror of {source} in {} is {} ({:?}), which belongs to deployment {other:?} \
                 ({OWNER_TAG}); deployment {me:?} leaves it alone and creates no other",
                key.vpc, group.id, group.name
            ),
            Some(ours) => format!(
                "{source} is mirrored into {} by two deployments: {ours} by this one ({me:?}) and {} ({:?}) by \
                 {other:?}; remove the source from one of their mappings",
                key.vpc, group.id, group.name
            ),
        };
        self.warn(WarningKind::ConflictForeignOwner, Some(key.clone()), Some(group.id.to_string()), message);
    }

    /// The group a mapping would adopt (or tag, as the VPC default) is itself
    /// a source group.
    fn source_taken_warning(&mut self, key: &PairKey, group: &SecurityGroup, mapping: &Mapping<'a>) {
        self.warn(
            WarningKind::ConflictNameTaken,
            Some(key.clone()),
            Some(group.id.to_string()),
            format!(
                "{} already has a group {:?} ({}) that is itself a source group; {} is not mirrored",
                mapping.vpc,
                group.name,
                group.id,
                self.group_label(&key.source)
            ),
        );
    }
}
