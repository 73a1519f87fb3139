//! The plan's vocabulary: actions, warnings, deferrals and the memory kept
//! between cycles. Plain data with a stable JSON form (`docs/plan-json.md`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::fights::{FightKey, RepairHistory};
use crate::model::{Grant, GroupId, InstanceId, PrefixListId, SnapshotPart, VpcId};

/// Names a VPC group in a plan: one that exists, or the mirror of `source`
/// in `vpc` that an earlier action of the same plan creates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRef {
    /// An existing group.
    Existing(GroupId),
    /// The mirror (or overflow group) a `create_mirror` action of this plan
    /// creates.
    New {
        /// Its source group.
        source: GroupId,
        /// Its VPC.
        vpc: VpcId,
        /// `0` for the mirror itself, else the overflow shard's number.
        #[serde(default, skip_serializing_if = "is_zero_u8")]
        shard: u8,
    },
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero_u8(shard: &u8) -> bool {
    *shard == 0
}

impl GroupRef {
    /// The id, when the group already exists.
    #[must_use]
    pub fn existing(&self) -> Option<&GroupId> {
        match self {
            Self::Existing(id) => Some(id),
            Self::New { .. } => None,
        }
    }
}

impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Existing(id) => write!(f, "{id}"),
            Self::New { .. } => f.write_str("(new)"),
        }
    }
}

/// A mirror pair: one managed source group and its target VPC.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PairKey {
    /// Source group.
    pub source: GroupId,
    /// Target VPC.
    pub vpc: VpcId,
}

/// Index of an action within [`Plan::actions`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ActionId(pub usize);

/// Why a group gets our ownership tag without being created by us.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagReason {
    /// The VPC `default` group mirrors a source named `default`.
    Default,
    /// An existing same-name group adopted because the mapping says `adopt = true`.
    Adopt,
    /// A mirror of this source without an owner tag (made by the 2016 Lambda
    /// or before owner tags existed), claimed by this deployment: only the
    /// owner tag is written.
    Claim,
}

/// One idempotent EC2 write (a relink is two: detach then attach).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Create a mirror with its ownership tag (`TagSpecifications`).
    CreateMirror {
        /// Source group.
        source: GroupId,
        /// Target VPC.
        vpc: VpcId,
        /// Mirror name.
        name: String,
        /// Mirror description (sanitised).
        description: String,
        /// Tags set at creation.
        tags: BTreeMap<String, String>,
        /// `0` for the mirror itself, else the number of the overflow group
        /// (docs/semantics.md, "Overflow groups") this creates.
        #[serde(default, skip_serializing_if = "is_zero_u8")]
        shard: u8,
    },
    /// Put our ownership and owner tags on an existing group (default group,
    /// adoption), or our owner tag on a mirror that lacks one (a claim).
    TagGroup {
        /// The group.
        group: GroupId,
        /// Its VPC.
        vpc: VpcId,
        /// Tags to set.
        tags: BTreeMap<String, String>,
        /// Why.
        reason: TagReason,
    },
    /// Remove our tags (the VPC `default` group is never deleted).
    UntagGroup {
        /// The group.
        group: GroupId,
        /// Its VPC.
        vpc: VpcId,
        /// Tag keys to delete.
        keys: Vec<String>,
    },
    /// `AuthorizeSecurityGroupIngress` with all these grants in one call.
    Authorize {
        /// The mirror.
        group: GroupRef,
        /// Grants to add.
        grants: Vec<Grant<GroupRef>>,
    },
    /// `RevokeSecurityGroupIngress` with all these grants in one call.
    Revoke {
        /// The mirror.
        group: GroupId,
        /// Grants to remove.
        grants: Vec<Grant>,
    },
    /// `AuthorizeSecurityGroupEgress` with all these grants in one call (the
    /// mirror of a VPC source only).
    AuthorizeEgress {
        /// The mirror.
        group: GroupRef,
        /// Egress grants to add.
        grants: Vec<Grant<GroupRef>>,
    },
    /// `RevokeSecurityGroupEgress` with all these grants in one call. The
    /// mirror may be one this plan creates: its default allow-all egress is
    /// revoked when the source does not have it.
    RevokeEgress {
        /// The mirror.
        group: GroupRef,
        /// Egress grants to remove.
        grants: Vec<Grant>,
    },
    /// `UpdateSecurityGroupRuleDescriptionsIngress`; each grant carries its new description.
    UpdateDescriptions {
        /// The mirror.
        group: GroupId,
        /// Grants with their desired descriptions.
        grants: Vec<Grant>,
        /// The descriptions they have now, same order.
        previous: Vec<Option<String>>,
    },
    /// `AttachClassicLinkVpc` for an unlinked instance.
    Attach {
        /// The Classic instance.
        instance: InstanceId,
        /// Target VPC.
        vpc: VpcId,
        /// Groups of the link.
        groups: Vec<GroupRef>,
    },
    /// `DetachClassicLinkVpc`.
    Detach {
        /// The instance.
        instance: InstanceId,
        /// The VPC it is linked to.
        vpc: VpcId,
        /// Groups of the link being removed (for the record).
        groups: Vec<GroupId>,
    },
    /// Detach then attach with another group set (disruptive).
    Relink {
        /// The instance.
        instance: InstanceId,
        /// VPC of the current link.
        from_vpc: VpcId,
        /// Groups of the current link.
        from: Vec<GroupId>,
        /// VPC of the new link.
        vpc: VpcId,
        /// Groups of the new link.
        groups: Vec<GroupRef>,
    },
    /// `DeleteSecurityGroup` on an orphaned mirror.
    DeleteMirror {
        /// The mirror.
        group: GroupId,
        /// Its VPC.
        vpc: VpcId,
        /// Its name.
        name: String,
        /// The source it was mirrored from.
        source: GroupId,
    },
    /// `EnableVpcClassicLink`.
    #[serde(rename = "enable_classiclink")]
    EnableClassicLink {
        /// The VPC.
        vpc: VpcId,
    },
    /// `CreateTags` of [`crate::model::ORPHANED_SINCE_TAG`] on an orphaned
    /// mirror: records since when it is orphaned, so that the grace survives
    /// a restart and a second daemon counts from the same instant.
    MarkOrphan {
        /// The mirror (it carries our ownership tag).
        group: GroupId,
        /// Its VPC.
        vpc: VpcId,
        /// The tag's value: when it was first seen orphaned, RFC 3339 UTC.
        since: String,
    },
    /// `DeleteTags` of [`crate::model::ORPHANED_SINCE_TAG`] on a mirror that
    /// is claimed again.
    UnmarkOrphan {
        /// The mirror.
        group: GroupId,
        /// Its VPC.
        vpc: VpcId,
    },
    /// `CreateManagedPrefixList`: the expansion list of a group no mapping
    /// manages, holding its running members' addresses, with its expansion
    /// and owner tags (docs/semantics.md, "Expanded references").
    CreatePrefixList {
        /// The group it expands.
        expands: GroupId,
        /// The list's name.
        name: String,
        /// `MaxEntries`: room for growth (see [`expansion_max_entries`]).
        max_entries: u32,
        /// The members' /32s.
        entries: Vec<ipnet::Ipv4Net>,
        /// Tags set at creation.
        tags: BTreeMap<String, String>,
    },
    /// `ModifyManagedPrefixList` under EC2's version check: the list follows
    /// its group's membership.
    ModifyPrefixList {
        /// The list (ours).
        list: PrefixListId,
        /// The group it expands.
        expands: GroupId,
        /// `CurrentVersion`: the version the change was computed from.
        version: u64,
        /// Entries to add.
        add: Vec<ipnet::Ipv4Net>,
        /// Entries to remove.
        remove: Vec<ipnet::IpNet>,
    },
    /// `DeleteManagedPrefixList` of an expansion list no mirror has needed
    /// for `orphan_grace`.
    DeletePrefixList {
        /// The list (ours).
        list: PrefixListId,
        /// The group it expanded.
        expands: GroupId,
    },
}

/// `MaxEntries` of a new expansion list for `members` addresses: twice the
/// members, at least 10, rounded up to a multiple of 10, at most EC2's 1,000.
#[must_use]
pub fn expansion_max_entries(members: usize) -> u32 {
    let wanted = members.saturating_mul(2).max(10).div_ceil(10) * 10;
    u32::try_from(wanted.min(crate::model::MAX_PREFIX_LIST_ENTRIES as usize)).unwrap_or(u32::MAX)
}

impl Action {
    /// Stable metric label.
    #[must_use]
    pub fn kind(&self) -> ActionKind {
        match self {
            Self::CreateMirror { .. } => ActionKind::CreateMirror,
            Self::TagGroup { .. } => ActionKind::TagGroup,
            Self::UntagGroup { .. } => ActionKind::UntagGroup,
            Self::Authorize { .. } => ActionKind::Authorize,
            Self::Revoke { .. } => ActionKind::Revoke,
            Self::AuthorizeEgress { .. } => ActionKind::AuthorizeEgress,
            Self::RevokeEgress { .. } => ActionKind::RevokeEgress,
            Self::UpdateDescriptions { .. } => ActionKind::UpdateDescriptions,
            Self::Attach { .. } => ActionKind::Attach,
            Self::Detach { .. } => ActionKind::Detach,
            Self::Relink { .. } => ActionKind::Relink,
            Self::DeleteMirror { .. } => ActionKind::DeleteMirror,
            Self::EnableClassicLink { .. } => ActionKind::EnableClassicLink,
            Self::MarkOrphan { .. } => ActionKind::MarkOrphan,
            Self::UnmarkOrphan { .. } => ActionKind::UnmarkOrphan,
            Self::CreatePrefixList { .. } => ActionKind::CreatePrefixList,
            Self::ModifyPrefixList { .. } => ActionKind::ModifyPrefixList,
            Self::DeletePrefixList { .. } => ActionKind::DeletePrefixList,
        }
    }

    /// True for actions the safety rules (docs/semantics.md, "Safety") restrict: they remove
    /// access, links or groups.
    #[must_use]
    pub fn is_destructive(&self) -> bool {
        self.kind().is_destructive()
    }
}

/// The kind of an [`Action`]; bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ActionKind {
    /// [`Action::CreateMirror`].
    CreateMirror,
    /// [`Action::TagGroup`].
    TagGroup,
    /// [`Action::UntagGroup`].
    UntagGroup,
    /// [`Action::Authorize`].
    Authorize,
    /// [`Action::Revoke`].
    Revoke,
    /// [`Action::AuthorizeEgress`].
    AuthorizeEgress,
    /// [`Action::RevokeEgress`].
    RevokeEgress,
    /// [`Action::UpdateDescriptions`].
    UpdateDescriptions,
    /// [`Action::Attach`].
    Attach,
    /// [`Action::Detach`].
    Detach,
    /// [`Action::Relink`].
    Relink,
    /// [`Action::DeleteMirror`].
    DeleteMirror,
    /// [`Action::EnableClassicLink`].
    #[strum(serialize = "enable_classiclink")]
    #[serde(rename = "enable_classiclink")]
    EnableClassicLink,
    /// [`Action::MarkOrphan`].
    MarkOrphan,
    /// [`Action::UnmarkOrphan`].
    UnmarkOrphan,
    /// [`Action::CreatePrefixList`].
    CreatePrefixList,
    /// [`Action::ModifyPrefixList`].
    ModifyPrefixList,
    /// [`Action::DeletePrefixList`].
    DeletePrefixList,
}

impl ActionKind {
    /// Stable label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// True for revoke (ingress or egress), detach, relink, delete and untag. Marking an orphan
    /// (or unmarking it) only records a time on a group that is ours: it
    /// takes nothing away, and is not held by the safety rules.
    #[must_use]
    pub fn is_destructive(&self) -> bool {
        matches!(
            self,
            Self::Revoke
                | Self::RevokeEgress
                | Self::Detach
                | Self::Relink
                | Self::DeleteMirror
                | Self::UntagGroup
                | Self::DeletePrefixList
        )
    }
}

/// An action with its place in the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedAction {
    /// Its index in [`Plan::actions`].
    pub id: ActionId,
    /// What to do.
    pub action: Action,
    /// Actions that must succeed first; a failed dependency skips this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<ActionId>,
    /// Planned for an audited mapping: shown, never executed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
    /// The mirror pair the action belongs to, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<PairKey>,
}

/// Why a grant of a source cannot be mirrored (docs/semantics.md, "Ingress rules").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmirrorable {
    /// The referenced group is not managed.
    NotManaged,
    /// The referenced group belongs to another account (e.g. the Classic ELB group).
    OtherAccount,
    /// The referenced group is managed but mirrored into a different VPC.
    OtherVpc,
    /// The referenced group is managed but its mirror cannot be had (conflict, missing VPC).
    MirrorUnavailable,
    /// IPv6 and prefix-list grants belong to the VPC side (VPC sources only).
    NotOwnedKind,
    /// The referenced group, of another account than the mirror's, is in
    /// another region than the mirror: EC2 rules reference groups of the
    /// same region only (and its members cannot be read for an expansion).
    OtherRegion,
    /// The referenced group is expanded (`unmanaged_references = "expand"`)
    /// but its prefix list is not there yet: created by this plan, or not
    /// observed this pass.
    ExpansionPending,
}

impl Unmirrorable {
    /// Human phrase.
    #[must_use]
    pub fn phrase(&self) -> &'static str {
        match self {
            Self::NotManaged => "not a managed group",
            Self::OtherAccount => "group of another account",
            Self::OtherVpc => "its mirror is in another VPC",
            Self::MirrorUnavailable => "its mirror is unavailable",
            Self::NotOwnedKind => "IPv6 and prefix-list grants are left to the VPC side",
            Self::OtherRegion => "group of another account in another region than the mirror",
            Self::ExpansionPending => "its expansion prefix list is not there yet (granted once it is)",
        }
    }
}

/// The kinds of plan warnings; bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum WarningKind {
    /// A source grant that cannot be mirrored.
    Unmirrorable,
    /// A `[[mirror]]` source group that does not exist.
    MissingSource,
    /// Conflict: the mirror's name is taken by a group that is not ours.
    ConflictNameTaken,
    /// Conflict: an instance linked by someone else to another VPC.
    ConflictForeignLink,
    /// Conflict: an instance whose managed groups map to more than one VPC.
    ConflictMultiVpc,
    /// Conflict: a source group named by two mappings.
    ConflictDuplicateMapping,
    /// Conflict: two mappings produce the same mirror name in one VPC.
    ConflictDuplicateName,
    /// Conflict: the mapping cannot work (source is a mirror, or mirrors into its own VPC).
    ConflictInvalidMapping,
    /// Conflict: the pair's mirror belongs to another deployment (its
    /// `classiclinkmirror:owner` tag names another `daemon.owner`): it is
    /// never modified, and no second mirror is created.
    ConflictForeignOwner,
    /// The discovery tag was ignored (config wins, or bad value).
    DiscoveryTag,
    /// Desired grants beyond the rules-per-group quota.
    QuotaExceeded,
    /// A link would need more than 5 groups.
    LinkLimit,
    /// The target VPC has ClassicLink disabled.
    #[strum(serialize = "classiclink_disabled")]
    #[serde(rename = "classiclink_disabled")]
    ClassicLinkDisabled,
    /// The target VPC does not exist (or its default group was not seen).
    VpcNotFound,
    /// An orphan waits for its grace period.
    OrphanWaiting,
    /// An orphan is kept because `delete_orphans = false`.
    OrphanKept,
    /// A mirror deletion is backing off after `DependencyViolation`.
    DeleteBackoff,
    /// The existing mirror's name differs from the desired one (EC2 cannot rename).
    NameDrift,
    /// The snapshot was incomplete: no destructive actions this cycle.
    IncompleteSnapshot,
    /// The shrink guard holds destructive actions.
    SafetyHold,
    /// A prefix-list grant of a VPC source names a list the mirror's
    /// account or region cannot use (a customer list of another account or
    /// region): the grant is left out and reported, never copied.
    PrefixListUnavailable,
    /// An orphan's `classiclinkmirror:orphanedSince` tag is not a valid time
    /// (or lies in the future): it is rewritten to now and the grace restarts.
    OrphanTagInvalid,
    /// The daemon started without its state file (corrupt, unreadable, of
    /// an unknown version): destructive actions are held for one `orphan_grace`.
    StateLost,
    /// The same repair of a pair keeps being needed (someone keeps undoing
    /// it): its repairs back off.
    Fight,
}

impl WarningKind {
    /// Stable label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// The `conflicts{kind}` label when this warning is a conflict.
    #[must_use]
    pub fn conflict_kind(&self) -> Option<&'static str> {
        match self {
            Self::ConflictNameTaken => Some("name_taken"),
            Self::ConflictForeignLink => Some("foreign_link"),
            Self::ConflictMultiVpc => Some("multi_vpc"),
            Self::ConflictDuplicateMapping => Some("duplicate_mapping"),
            Self::ConflictDuplicateName => Some("duplicate_name"),
            Self::ConflictInvalidMapping => Some("invalid_mapping"),
            Self::ConflictForeignOwner => Some("foreign_owner"),
            _ => None,
        }
    }
}

/// Something the operator should know; never an action.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Warning {
    /// What kind.
    pub kind: WarningKind,
    /// The pair it concerns, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pair: Option<PairKey>,
    /// The id the warning is about (group, instance or VPC), if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// For unmirrorable grants: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Unmirrorable>,
    /// One human sentence, ids included.
    pub message: String,
}

/// Actions held back this cycle, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deferred {
    /// Grants not revoked because of `max_revokes_per_cycle`.
    pub revokes: usize,
    /// Mirrors not deleted because of `max_deletes_per_cycle`.
    pub deletes: usize,
    /// Detaches/relinks not done because of `max_unlinks_per_cycle`.
    pub unlinks: usize,
    /// Grants not added because revocations they need were deferred or held.
    pub adds: usize,
    /// Destructive actions held by the incomplete-snapshot rule or the shrink guard.
    pub held: usize,
    /// Repairs (and what depends on them) of pairs backing off in a fight.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub fights: usize,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(count: &usize) -> bool {
    *count == 0
}

impl Deferred {
    /// Total deferred.
    #[must_use]
    pub fn total(&self) -> usize {
        self.revokes + self.deletes + self.unlinks + self.adds + self.held + self.fights
    }
}

/// Drift of one pair (what the plan would change).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// Grants to add.
    pub add: usize,
    /// Grants to remove.
    pub remove: usize,
    /// Descriptions to update.
    pub update: usize,
    /// Link changes (attach, relink, detach) involving the pair's mirror.
    pub links: usize,
}

/// Where a pair's mapping comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `mirror[i]` of the config file.
    Config(usize),
    /// The discovery tag on the source group.
    Tag,
}

/// The state of one mirror pair in this plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairPlan {
    /// The pair.
    pub key: PairKey,
    /// Source group name.
    pub source_name: String,
    /// The mirror (existing, to be created), or `None` when unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<GroupRef>,
    /// The mirror's (desired) name.
    pub mirror_name: String,
    /// Whether the mapping is audited.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
    /// Config entry or discovery tag.
    pub origin: Origin,
    /// What would change.
    pub drift: Drift,
    /// The mirror's overflow groups in use (existing or to be created), by
    /// shard number; empty when its grants fit in the mirror.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardPlan>,
}

/// One overflow group of a pair (docs/semantics.md, "Overflow groups").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlan {
    /// Its number, 1 to [`crate::model::MAX_OVERFLOW_SHARDS`].
    pub shard: u8,
    /// The group (existing, or created by this plan).
    pub group: GroupRef,
    /// Its name.
    pub name: String,
    /// The weight of the grants the plan places in it (EC2's rule count).
    pub rules: usize,
}

impl PairPlan {
    /// True when nothing would change and the mirror exists.
    #[must_use]
    pub fn in_sync(&self) -> bool {
        matches!(self.mirror, Some(GroupRef::Existing(_))) && self.drift == Drift::default()
    }
}

/// An orphaned mirror (docs/semantics.md, "Orphans").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Orphan {
    /// The mirror.
    pub group: GroupId,
    /// Its VPC.
    pub vpc: VpcId,
    /// Its name.
    pub name: String,
    /// The source it was mirrored from.
    pub source: GroupId,
    /// When it was first seen orphaned: its `classiclinkmirror:orphanedSince`
    /// tag, or (until that tag is written) this daemon's memory, or now.
    pub since: SystemTime,
    /// When its removal is due (`since` + `orphan_grace`); `None` when it is
    /// kept (`delete_orphans = false`). Removal may still wait for a safety
    /// hold, a per-cycle cap or a deletion backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due: Option<SystemTime>,
}

/// Why destructive actions are held this cycle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holds {
    /// Parts of the snapshot that were not completely observed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<SnapshotPart>,
    /// The shrink guard is active.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shrink: bool,
    /// The daemon's state was lost (a state file that could not be read) less
    /// than one `orphan_grace` ago.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_lost: bool,
}

impl Holds {
    /// True when destructive actions may not run.
    #[must_use]
    pub fn destructive_held(&self) -> bool {
        self.shrink || self.state_lost || !self.incomplete.is_empty()
    }
}

/// The planner's answer for one cycle.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[must_use]
pub struct Plan {
    /// Actions in a valid execution order (dependencies point backwards).
    pub actions: Vec<PlannedAction>,
    /// Every managed pair, sorted by VPC then source.
    pub pairs: Vec<PairPlan>,
    /// Warnings, in plan order.
    pub warnings: Vec<Warning>,
    /// Orphaned mirrors.
    pub orphans: Vec<Orphan>,
    /// Held-back actions.
    pub deferred: Deferred,
    /// Safety holds in force.
    pub holds: Holds,
    /// The expanded references of this plan, by group.
    pub expansions: Vec<Expansion>,
}

/// A group no mapping manages, referenced by an expanding mirror: the list
/// its grants name and how many running members it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expansion {
    /// The expanded group.
    pub group: GroupId,
    /// The list of ours the grants reference this pass; `None` while it is
    /// being created.
    pub prefix_list: Option<PrefixListId>,
    /// Its running members' addresses (what the list holds once followed).
    pub members: usize,
}

impl Plan {
    /// Actions that would be executed (not audited).
    pub fn executable(&self) -> impl Iterator<Item = &PlannedAction> {
        self.actions.iter().filter(|a| !a.audit)
    }

    /// True when nothing is left to execute: audited drift does not count.
    #[must_use]
    pub fn is_converged(&self) -> bool {
        self.executable().next().is_none()
    }

    /// True when there is nothing at all, not even audited drift.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// A deletion that failed with `DependencyViolation`: retried with backoff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteBackoff {
    /// Consecutive failures.
    pub failures: u32,
    /// No retry before this time.
    pub retry_after: SystemTime,
}

/// Counts the shrink guard compares between cycles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// Managed source groups that exist.
    pub managed_sources: usize,
    /// Instances linked to at least one mirror.
    pub linked_instances: usize,
}

/// What the planner must remember between cycles. A plain value the daemon
/// keeps; `plan` returns the next one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    /// When each current orphan was first seen orphaned.
    #[serde(default)]
    pub orphans_since: BTreeMap<GroupId, SystemTime>,
    /// Counts of the last good (complete, unheld) snapshot.
    #[serde(default)]
    pub baseline: Option<Baseline>,
    /// Since when the shrink guard has seen the drop.
    #[serde(default)]
    pub shrink_since: Option<SystemTime>,
    /// Deletions backing off after `DependencyViolation`.
    #[serde(default)]
    pub delete_backoff: BTreeMap<GroupId, DeleteBackoff>,
    /// Deferred counts of the last plan.
    #[serde(default)]
    pub deferred: Deferred,
    /// When the daemon found its state lost (a state file it could not
    /// read): destructive actions are held until `orphan_grace` has passed
    /// since, as the shrink guard has no trustworthy baseline to compare with.
    #[serde(default)]
    pub state_lost_at: Option<SystemTime>,
    /// Recent repairs of each pair, by kind, and its fight when in one (the
    /// state file writes them as a list: their keys are not strings).
    #[serde(skip)]
    pub repairs: BTreeMap<FightKey, RepairHistory>,
    /// When the last pass yielded to another writer doing the same work:
    /// how many actions it left undone. A next plan with fewer (someone
    /// else is making progress) waits too; not kept in the state file.
    #[serde(skip)]
    pub other_writer_left: Option<usize>,
    /// Who last changed each group or instance (by id), as the events of
    /// the pass under way said: [`Memory::record_execution`] gives a
    /// repair of that group (a mirror's grants) or instance (its link) this
    /// principal, and takes the map. Filled by the caller before a targeted
    /// pass; not kept in the state file.
    #[serde(skip)]
    pub event_principals: BTreeMap<String, String>,
    /// Since when each expansion prefix list of ours has not been needed
    /// by any mirror (its deletion waits for `orphan_grace`); kept in the
    /// state file (without one, the grace starts again after a restart:
    /// later, never earlier).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unneeded_lists_since: BTreeMap<PrefixListId, SystemTime>,
}

/// First retry delay of a deletion that hit `DependencyViolation`.
pub const DELETE_BACKOFF_BASE: Duration = Duration::from_secs(60);
/// Longest delay between deletion retries.
pub const DELETE_BACKOFF_MAX: Duration = Duration::from_secs(3600);

impl Memory {
    /// Records a `DependencyViolation` on deleting `group`: the next attempt
    /// waits 1 min, doubling per failure up to 1 h.
    pub fn record_delete_blocked(&mut self, group: &GroupId, now: SystemTime) {
        let failures = self.delete_backoff.get(group).map_or(0, |b| b.failures).saturating_add(1);
        let factor = 2u32.saturating_pow(failures - 1);
        let delay = DELETE_BACKOFF_BASE.saturating_mul(factor).min(DELETE_BACKOFF_MAX);
        self.delete_backoff.insert(group.clone(), DeleteBackoff { failures, retry_after: now + delay });
    }

    /// Forgets the backoff of a deleted (or no longer orphaned) group.
    pub fn record_deleted(&mut self, group: &GroupId) {
        self.delete_backoff.remove(group);
        self.orphans_since.remove(group);
    }
}

#[cfg(test)]
mod label_tests {
    use strum::VariantArray as _;

    use super::*;
    use crate::plan::RepairKind;

    /// The label (strum) and the JSON name (serde) of every variant agree: the
    /// metrics, the logs and the plan's JSON call a thing by one name.
    fn labels_agree_with_json<T: serde::Serialize + Copy + std::fmt::Debug>(variants: &[T], label: fn(&T) -> &str) {
        for variant in variants {
            let json = serde_json::to_value(variant).expect("serialises");
            assert_eq!(json.as_str(), Some(label(variant)), "{variant:?}");
        }
    }

    #[test]
    fn every_kind_has_one_name_in_metrics_logs_and_json() {
        labels_agree_with_json(ActionKind::VARIANTS, ActionKind::as_str);
        labels_agree_with_json(WarningKind::VARIANTS, WarningKind::as_str);
        labels_agree_with_json(RepairKind::VARIANTS, RepairKind::as_str);
        labels_agree_with_json(crate::model::SnapshotPart::VARIANTS, crate::model::SnapshotPart::as_str);
    }
}
