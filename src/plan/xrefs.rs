//! Phase 3, grants across accounts and regions: what a VPC source's
//! prefix-list grant and its reference to a group no mapping manages become
//! when the mirror is in another account or region than the source
//! (docs/semantics.md, "Prefix lists" and "References to groups of other
//! accounts").
//!
//! Reads the mapping's `source_account` and `target_account` (their regions
//! from the config), the lists observe described in the source's account
//! (`Snapshot::source_prefix_lists`) and the target region's AWS-managed
//! lists (`Snapshot::target_aws_prefix_lists`). Decides, per grant: the
//! list id the mirror grants (the same one, or the AWS-managed list of the
//! same name in the target region) or why none can be; and whether a
//! reference to an unmanaged group stays a reference (`UserId` + group, the
//! target in the source's region) or cannot (another region).

use super::{GroupRef, Mapping, Origin, Planner, Unmirrorable};
use crate::config::MirrorConfig;
use crate::model::{GroupId, Peer, PrefixListId, SnapshotPart, aws_list_name_in_region};

/// Which references to groups no mapping manages a mirror owns
/// ([`Planner::keeps_foreign_references`]).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct KeptReferences {
    /// To groups of other accounts than the mirror's (`UserId` + group).
    pub(super) other_accounts: bool,
    /// To groups of the mirror's own account (no owner), when the source is
    /// of another account.
    pub(super) target_account: bool,
}

impl<'a> Planner<'a> {
    /// The config entry of a mapping (a discovered source has none).
    fn entry_of(&self, mapping: &Mapping<'a>) -> Option<&'a MirrorConfig> {
        match mapping.origin {
            Origin::Config(index) => self.config.mirrors.get(index),
            Origin::Tag => None,
        }
    }

    /// The names of the mapping's source and target accounts (`None`: the
    /// `[aws]` one).
    fn account_names(&self, mapping: &Mapping<'a>) -> (Option<&'a str>, Option<&'a str>) {
        self.entry_of(mapping).map_or((None, None), |e| (e.source_account.as_deref(), e.target_account.as_deref()))
    }

    /// The account id of the mirror's side: the owner of its observed group,
    /// or of any observed group of its VPC; `None` when nothing there was
    /// observed yet.
    pub(super) fn target_account_id(&self, mapping: &Mapping<'a>) -> Option<&'a str> {
        let snap = self.snap;
        match self.mirror_ref(mapping) {
            Some(GroupRef::Existing(id)) => snap.vpc_groups.get(id).map(|g| g.owner_id.as_str()),
            _ => None,
        }
        .or_else(|| {
            snap.vpc_groups.values().find(|g| g.vpc_id.as_ref() == Some(&mapping.vpc)).map(|g| g.owner_id.as_str())
        })
        .filter(|id| !id.is_empty())
    }

    /// The prefix list the mirror of `mapping` grants for its source's grant
    /// of `list`. `Err(Some(reason))`: none, reported; `Err(None)`: not
    /// known this pass (the lists could not be described), left out silently
    /// (the incomplete snapshot is reported and holds every revoke).
    ///
    /// - Source and target in one account (by name): the same list, unless
    ///   the groups' owners differ (the customer list of another account).
    /// - Otherwise, by the list as the source's account describes it: an
    ///   AWS-managed list is the same id in the same region and the list of
    ///   the corresponding name in another (`com.amazonaws.<region>.<svc>`);
    ///   a customer list serves only its own account in its own region.
    pub(super) fn translate_prefix_list(
        &self,
        mapping: &Mapping<'a>,
        list: &PrefixListId,
    ) -> Result<PrefixListId, Option<String>> {
        let (source_name, target_name) = self.account_names(mapping);
        if source_name == target_name {
            return match self.prefix_list_unusable(mapping, list.as_str()) {
                Some(reason) => Err(Some(reason)),
                None => Ok(list.clone()),
            };
        }
        let incomplete = self.snap.incomplete.contains(&SnapshotPart::PrefixLists);
        let (from, to) = (self.config.region_of(source_name), self.config.region_of(target_name));
        let Some(described) = self.snap.source_prefix_lists.get(list) else {
            if incomplete {
                return Err(None);
            }
            let account = source_name.unwrap_or(crate::config::AWS_ACCOUNT);
            return Err(Some(format!("prefix list {list} is not visible to the source's account {account} ({from})")));
        };
        if described.is_aws_managed() {
            if from == to {
                return Ok(list.clone());
            }
            let name = aws_list_name_in_region(&described.name, from, to);
            return match self.snap.target_aws_prefix_lists.get(&name) {
                Some(target) => Ok(target.id.clone()),
                None if incomplete => Err(None),
                None => Err(Some(format!(
                    "AWS-managed prefix list {list} ({}) has no counterpart {name} in the target region {to}",
                    described.name
                ))),
            };
        }
        let target_account = self.target_account_id(mapping);
        if from == to && target_account == Some(described.owner_id.as_str()) {
            return Ok(list.clone());
        }
        Err(Some(format!(
            "prefix list {list} ({}) of account {} in {from} cannot be used by the target ({} in {to}); \
             share it (AWS RAM) or grant an equivalent list on the mirror",
            described.name,
            described.owner_id,
            target_account.unwrap_or("another account"),
        )))
    }

    /// Why the mirror of `mapping` (source and target in one account by
    /// name) cannot be granted the prefix list `list` of its source, if it
    /// cannot: a customer list of another account is reported rather than
    /// copied. The mirror's account is [`Self::target_account_id`]; unknown
    /// counts as shared.
    fn prefix_list_unusable(&self, mapping: &Mapping<'a>, list: &str) -> Option<String> {
        let source_account = mapping.source.owner_id.as_str();
        let target_account = self.target_account_id(mapping).unwrap_or_default();
        if source_account.is_empty() || target_account.is_empty() || source_account == target_account {
            return None;
        }
        Some(format!(
            "prefix list {list} of account {source_account} cannot be used by account {target_account}; \
             share it (AWS RAM) or grant an equivalent list on the mirror"
        ))
    }

    /// What a VPC source's reference to `group` (of account `owner`, `None`
    /// for the source's own), a group no mapping manages, becomes on the
    /// mirror of a source in another account (by name) when the group is of
    /// another account than the mirror's: the
    /// same group as a cross-account reference (`UserId` + group) when the
    /// mirror is in the source's region (EC2 accepts references to groups
    /// of peered VPCs of the same region, and refuses any other), else
    /// [`Unmirrorable::OtherRegion`]. `None`: the group is of the mirror's
    /// own account, and the usual rules apply (reported, or expanded).
    pub(super) fn kept_reference(
        &self,
        mapping: &Mapping<'a>,
        group: &GroupId,
        owner: Option<&str>,
    ) -> Option<Result<Peer<GroupRef>, Unmirrorable>> {
        let (source_name, target_name) = self.account_names(mapping);
        if source_name == target_name {
            // Source and mirror in one account: the usual rules (a group of
            // another account is reported, `other_account`).
            return None;
        }
        let account = owner.unwrap_or(mapping.source.owner_id.as_str());
        if self.config.region_of(source_name) != self.config.region_of(target_name) {
            return Some(Err(Unmirrorable::OtherRegion));
        }
        let target_account = self.target_account_id(mapping);
        if target_account == Some(account) && owner.is_none() {
            // Two account names of one account and region: the usual rules.
            return None;
        }
        // A group of the mirror's own account is named without its owner,
        // as EC2 describes it back.
        let owner = (target_account != Some(account)).then(|| account.to_owned());
        Some(Ok(Peer::Group { group: GroupRef::Existing(group.clone()), owner }))
    }

    /// Which references of the mirror of `mapping` to groups no mapping
    /// manages are its source's, kept by [`Self::kept_reference`], and so
    /// owned: none but for a VPC source in another account (by name) than
    /// its target; then those to groups of other accounts, and those to
    /// groups of the mirror's own account when that is not the source's
    /// (a source's rule naming a group of the target's account, which EC2
    /// describes back without its owner).
    pub(super) fn keeps_foreign_references(&self, mapping: &Mapping<'a>) -> KeptReferences {
        let (source_name, target_name) = self.account_names(mapping);
        if mapping.source.is_classic() || source_name == target_name {
            return KeptReferences::default();
        }
        let target_account = self.target_account_id(mapping);
        KeptReferences {
            other_accounts: true,
            target_account: target_account.is_some_and(|id| id != mapping.source.owner_id.as_str()),
        }
    }

    /// Whether `peer`, a grant the mirror wants, is a reference kept from
    /// its source (`kept` from [`Self::keeps_foreign_references`]): one
    /// EC2 may refuse (VPCs not peered), authorized in a request of its own.
    pub(super) fn is_kept_reference(&self, peer: &Peer<GroupRef>, kept: KeptReferences) -> bool {
        match peer {
            Peer::Group { owner: Some(_), .. } => true,
            Peer::Group { group: GroupRef::Existing(group), owner: None } => {
                kept.target_account && !self.is_ours(group)
            }
            _ => false,
        }
    }

    /// The `MaxEntries` of a list the source's account or the target region
    /// described (`None`: not described, or EC2 gave none).
    pub(super) fn described_list_entries(&self, id: &PrefixListId) -> Option<usize> {
        let snap = self.snap;
        snap.source_prefix_lists
            .get(id)
            .or_else(|| snap.target_aws_prefix_lists.values().find(|l| &l.id == id))
            .and_then(crate::model::PrefixList::known_max_entries)
    }
}
