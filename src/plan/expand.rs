//! Phase 2b, expanded references (`unmanaged_references = "expand"`): the
//! managed prefix list of each group that an expanding mapping's source
//! references and no mapping manages.
//!
//! Reads the managed sources (phase 1) with their chosen mirrors (phase 2),
//! the expansion lists and the members' addresses observe read. Decides, per
//! referenced group in id order: which of our lists its grants reference
//! (the largest of ours expanding it that holds its members), the creation of
//! a list when none can (sized by [`expansion_max_entries`]: a list that must
//! grow is replaced by a larger one, never resized), and the modification,
//! under EC2's version check, that makes the list's entries exactly the
//! members' /32s. After the orphans phase, every list of ours no grant
//! references any more is deleted once unneeded for `orphan_grace`, like an
//! orphaned mirror. A list without our owner tag is never touched.
//! Rules: docs/semantics.md, "Expanded references".

use std::collections::{BTreeMap, BTreeSet};

use ipnet::{IpNet, Ipv4Net};

use super::{Action, ActionId, Expansion, Planner, WarningKind, expansion_max_entries};
use crate::model::{
    EXPANSION_TAG, ExpansionList, GroupId, MAX_PREFIX_LIST_CHANGES, MAX_PREFIX_LIST_ENTRIES, OWNER_TAG, Peer,
    PrefixListId, SnapshotPart,
};

/// The prefix of an expansion list's name; the expanded group's id and its
/// `MaxEntries` follow.
pub const EXPANSION_LIST_PREFIX: &str = "classiclink-mirror-expand";

impl<'a> Planner<'a> {
    /// Whether expansion lists were observed completely this pass: without
    /// them, nothing about expansion is planned (and the incomplete snapshot
    /// holds every destructive action).
    fn expansions_observed(&self) -> bool {
        self.config.any_expands() && !self.snap.incomplete.contains(&SnapshotPart::Expansions)
    }

    /// Whether `list` carries our owner tag and the expansion tag.
    pub(super) fn is_our_list(&self, list: &ExpansionList) -> bool {
        list.expands().is_some() && list.owner_tag() == Some(self.config.daemon.owner.as_str())
    }

    /// Whether a prefix list peer names one of our expansion lists (a grant
    /// this planner may revoke).
    pub(super) fn is_our_list_id(&self, id: &PrefixListId) -> bool {
        self.snap.expansion_lists.get(id).is_some_and(|list| self.is_our_list(list))
    }

    /// The groups that expanding mappings with a mirror reference and no
    /// mapping manages, each with whether only audited mappings need it.
    fn expanded_references(&self) -> BTreeMap<GroupId, bool> {
        let mut needed: BTreeMap<GroupId, bool> = BTreeMap::new();
        for mapping in self.managed.iter().filter(|m| m.expands && m.mirror.is_some()) {
            // Ingress and, for a VPC source, egress: both translate an
            // unmanaged group into its list.
            for grant in mapping.source.ingress.iter().chain(&mapping.source.egress) {
                if let Peer::Group { group, owner: None } = &grant.key.peer
                    && !self.managed_index.contains_key(group)
                {
                    let audit = needed.entry(group.clone()).or_insert(true);
                    *audit &= mapping.audit;
                }
            }
        }
        needed
    }

    /// Plans the expansion lists: choose, create, follow membership.
    pub(super) fn plan_expansion_lists(&mut self) {
        if !self.expansions_observed() {
            return;
        }
        let owner = self.config.daemon.owner.clone();
        for (group, audit) in self.expanded_references() {
            // Observe reads the members of exactly these groups; a group it
            // did not read is left for a pass that did.
            let Some(members) = self.snap.members.get(&group) else { continue };
            let count = members.len();
            let mut wanted: BTreeSet<Ipv4Net> = members.iter().map(|&ip| Ipv4Net::from(ip)).collect();
            if wanted.len() > MAX_PREFIX_LIST_ENTRIES as usize {
                self.warn(
                    WarningKind::Unmirrorable,
                    None,
                    Some(group.to_string()),
                    format!(
                        "{} has {} running members, more than a prefix list holds ({MAX_PREFIX_LIST_ENTRIES}); \
                         only the first {MAX_PREFIX_LIST_ENTRIES} addresses are granted",
                        self.group_label(&group),
                        wanted.len()
                    ),
                );
                wanted = wanted.into_iter().take(MAX_PREFIX_LIST_ENTRIES as usize).collect();
            }
            // Ours, expanding this group, usable: the largest that fits the
            // members (ties: the smallest id).
            let usable = |list: &&ExpansionList| {
                self.is_our_list(list)
                    && list.expands().as_ref() == Some(&group)
                    && !list.list.state.starts_with("delete")
                    && list.list.address_family == "IPv4"
            };
            let fitting = self
                .snap
                .expansion_lists
                .values()
                .filter(usable)
                .filter(|list| list.list.max_entries as usize >= wanted.len())
                .max_by(|a, b| a.list.max_entries.cmp(&b.list.max_entries).then_with(|| b.list.id.cmp(&a.list.id)));
            match fitting {
                Some(list) => {
                    self.expansions.insert(group.clone(), list.list.id.clone());
                    self.plan_entries(&group, list, &wanted, audit);
                }
                None => {
                    // The grants keep referencing the list they have (if a
                    // smaller one) until the new one exists: make before break.
                    if let Some(old) = self.snap.expansion_lists.values().filter(usable).max_by(|a, b| {
                        a.list.max_entries.cmp(&b.list.max_entries).then_with(|| b.list.id.cmp(&a.list.id))
                    }) {
                        self.expansions.insert(group.clone(), old.list.id.clone());
                    }
                    let max_entries = expansion_max_entries(wanted.len());
                    let mut entries: Vec<Ipv4Net> = wanted.into_iter().collect();
                    // The rest is added by the next pass's modification.
                    entries.truncate(MAX_PREFIX_LIST_CHANGES);
                    let tags = BTreeMap::from([
                        (EXPANSION_TAG.to_owned(), group.to_string()),
                        (OWNER_TAG.to_owned(), owner.clone()),
                    ]);
                    let name = format!("{EXPANSION_LIST_PREFIX}-{group}-{max_entries}");
                    let action = Action::CreatePrefixList { expands: group.clone(), name, max_entries, entries, tags };
                    self.push(action, vec![], audit, None);
                }
            }
            let prefix_list = self.expansions.get(&group).cloned();
            self.plan.expansions.push(Expansion { group, prefix_list, members: count });
        }
    }

    /// The modification making `list`'s entries exactly `wanted`, at most
    /// [`MAX_PREFIX_LIST_CHANGES`] of each kind (the rest next pass).
    fn plan_entries(&mut self, group: &GroupId, list: &ExpansionList, wanted: &BTreeSet<Ipv4Net>, audit: bool) {
        // A list being modified or created is left until it settles.
        if list.list.state.ends_with("in-progress") {
            return;
        }
        let have: BTreeSet<IpNet> = list.entries.iter().map(|e| e.cidr).collect();
        let remove: Vec<IpNet> = have
            .iter()
            .filter(|cidr| !matches!(cidr, IpNet::V4(net) if wanted.contains(net)))
            .take(MAX_PREFIX_LIST_CHANGES)
            .copied()
            .collect();
        let add: Vec<Ipv4Net> = wanted
            .iter()
            .filter(|net| !have.contains(&IpNet::V4(**net)))
            .take(MAX_PREFIX_LIST_CHANGES)
            .copied()
            .collect();
        if add.is_empty() && remove.is_empty() {
            return;
        }
        let action = Action::ModifyPrefixList {
            list: list.list.id.clone(),
            expands: group.clone(),
            version: list.list.version,
            add,
            remove,
        };
        self.push(action, vec![], audit, None);
    }

    /// Deletes our expansion lists that no grant references any more, once
    /// they have been unneeded for `orphan_grace` (counted in memory), within
    /// `max_deletes_per_cycle`, never under a hold, never with
    /// `delete_orphans = false`.
    pub(super) fn plan_expansion_deletions(&mut self) {
        if !self.expansions_observed() {
            // Nothing is known about the lists: keep what memory counted.
            return;
        }
        let needed: BTreeSet<&PrefixListId> = self.expansions.values().collect();
        let mut unneeded_since = BTreeMap::new();
        let mut due = Vec::new();
        for list in self.snap.expansion_lists.values().filter(|l| self.is_our_list(l)) {
            let id = &list.list.id;
            if needed.contains(id) || list.list.state == "delete-complete" || list.list.state == "delete-in-progress" {
                continue;
            }
            let since = self.memory.unneeded_lists_since.get(id).copied().unwrap_or(self.now);
            unneeded_since.insert(id.clone(), since);
            if self.now.duration_since(since).unwrap_or_default() >= self.config.safety.orphan_grace {
                due.push(list);
            }
        }
        self.next_memory.unneeded_lists_since = unneeded_since;
        if !self.config.safety.delete_orphans {
            return;
        }
        for list in due {
            let id = &list.list.id;
            if self.lists_pending.contains(id) {
                continue;
            }
            if self.destructive_held() {
                self.plan.deferred.held += 1;
                continue;
            }
            if self.delete_budget == 0 {
                self.plan.deferred.deletes += 1;
                continue;
            }
            self.delete_budget -= 1;
            let Some(expands) = list.expands() else { continue };
            let deps: Vec<ActionId> = self.revokes_of_list.get(id).cloned().unwrap_or_default();
            self.push(Action::DeletePrefixList { list: id.clone(), expands }, deps, self.global_audit(), None);
        }
    }
}
