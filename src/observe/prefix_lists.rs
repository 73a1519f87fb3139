//! Observe, the prefix lists of sources in other accounts and regions
//! (docs/semantics.md, "Prefix lists"): which lists those sources' rules
//! reference, as the source's own account describes them (their owner —
//! AWS-managed or a customer's — name and `MaxEntries`), and the target
//! region's AWS-managed lists of the corresponding names.
//!
//! The calls, only when some `[[mirror]]` names a `source_account` other than
//! its `target_account` and its VPC source references a prefix list: one
//! `DescribeManagedPrefixLists` by id per such source account, and at most
//! one in the target (AWS-owned lists by name, 200 names per filter) when
//! some referenced list is AWS-managed and the source's region differs from
//! the target's. Same-account mirrors cost nothing more.

use std::collections::{BTreeMap, BTreeSet};

use futures::future::join_all;

use crate::config::Config;
use crate::ec2::{Ec2, Ec2Error, PrefixListFilter};
use crate::model::{AWS_PREFIX_LIST_OWNER, Direction, GroupId, Peer, PrefixListId, Snapshot, aws_list_name_in_region};

/// What one source account's sources reference.
struct Referenced<'a> {
    /// A source group of the account: the port routes the describe by it.
    source: GroupId,
    /// The account's region.
    region: &'a str,
    /// The lists referenced, in id order.
    lists: BTreeSet<PrefixListId>,
}

/// The prefix lists the VPC sources of each source account other than the
/// target's reference (ingress and egress), by account name.
fn referenced<'a>(config: &'a Config, snapshot: &'a Snapshot) -> BTreeMap<Option<&'a str>, Referenced<'a>> {
    let mut by_account: BTreeMap<Option<&str>, Referenced<'_>> = BTreeMap::new();
    for candidate in crate::mapping::resolve(config, &snapshot.source_groups).candidates {
        let Some(entry) = candidate.entry else { continue };
        if entry.source_account == entry.target_account || candidate.source.is_classic() {
            continue;
        }
        let lists = [Direction::Ingress, Direction::Egress]
            .into_iter()
            .flat_map(|d| candidate.source.rules(d))
            .filter_map(|grant| match &grant.key.peer {
                Peer::PrefixList(list) => Some(list.clone()),
                _ => None,
            });
        let account = entry.source_account.as_deref();
        let referenced = by_account.entry(account).or_insert_with(|| Referenced {
            source: candidate.source.id.clone(),
            region: config.region_of(account),
            lists: BTreeSet::new(),
        });
        referenced.lists.extend(lists);
    }
    by_account.retain(|_, referenced| !referenced.lists.is_empty());
    by_account
}

/// Fills `source_prefix_lists` and `target_aws_prefix_lists` of `snapshot`
/// (its source groups observed). Returns the errors; any makes the
/// `prefix_lists` part incomplete.
pub(crate) async fn observe_source_prefix_lists(
    ec2: &dyn Ec2,
    config: &Config,
    snapshot: &mut Snapshot,
) -> Vec<Ec2Error> {
    let referenced: Vec<(GroupId, String, BTreeSet<PrefixListId>)> =
        referenced(config, snapshot).into_values().map(|r| (r.source, r.region.to_owned(), r.lists)).collect();
    if referenced.is_empty() {
        return Vec::new();
    }
    let mut errors = Vec::new();
    let described = join_all(referenced.iter().map(|(source, _, lists)| {
        let ids: Vec<PrefixListId> = lists.iter().cloned().collect();
        async move { ec2.describe_source_prefix_lists(source, &ids).await }
    }))
    .await;
    let target_region = config.region_of(config.target_account());
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for ((_, region, ids), result) in referenced.iter().zip(described) {
        match result {
            Ok(lists) => {
                for list in lists.into_iter().filter(|l| ids.contains(&l.id)) {
                    if list.owner_id == AWS_PREFIX_LIST_OWNER && region != target_region {
                        wanted.insert(aws_list_name_in_region(&list.name, region, target_region));
                    }
                    snapshot.source_prefix_lists.insert(list.id.clone(), list);
                }
            }
            Err(error) => errors.push(error),
        }
    }
    if wanted.is_empty() {
        return errors;
    }
    let filters: Vec<PrefixListFilter> = super::chunks(&wanted)
        .into_iter()
        .map(|names| PrefixListFilter {
            names,
            owner_ids: vec![AWS_PREFIX_LIST_OWNER.to_owned()],
            ..PrefixListFilter::default()
        })
        .collect();
    for result in join_all(filters.iter().map(|f| ec2.describe_prefix_lists(f))).await {
        match result {
            Ok(lists) => {
                for list in
                    lists.into_iter().filter(|l| l.owner_id == AWS_PREFIX_LIST_OWNER && wanted.contains(&l.name))
                {
                    snapshot.target_aws_prefix_lists.insert(list.name.clone(), list);
                }
            }
            Err(error) => errors.push(error),
        }
    }
    errors
}
