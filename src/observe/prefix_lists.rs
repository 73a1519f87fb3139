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

/// Whether a source of another account references a prefix list that
/// `snapshot` has not described (a rule added since the last full pass):
/// a targeted pass then reads the lists again.
pub(crate) fn unknown_source_prefix_lists(config: &Config, snapshot: &Snapshot) -> bool {
    referenced(config, snapshot)
        .values()
        .any(|r| r.lists.iter().any(|id| !snapshot.source_prefix_lists.contains_key(id)))
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
    // One describe per account and chunk of ids (a filter takes at most
    // `MAX_FILTER_VALUES` values).
    let calls: Vec<(usize, Vec<PrefixListId>)> = referenced
        .iter()
        .enumerate()
        .flat_map(|(i, (_, _, lists))| super::chunks(lists).into_iter().map(move |chunk| (i, chunk)))
        .collect();
    let described = join_all(calls.iter().map(|(i, ids)| {
        let source = &referenced[*i].0;
        async move { ec2.describe_source_prefix_lists(source, ids).await }
    }))
    .await;
    let target_region = config.region_of(config.target_account());
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    for ((i, _), result) in calls.iter().zip(described) {
        let (_, region, ids) = &referenced[*i];
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::{AccountConfig, MirrorConfig, SourceRef};
    use crate::ec2::Operation;
    use crate::ec2::accounts::{AccountPort, SourceAccounts};
    use crate::emulator::{Emulator, EmulatorOptions, NewGroup, NewVpc};
    use crate::events::dirty::Dirty;
    use crate::model::{Grant, Ports, PrefixList, Protocol};

    fn world(account: &str, seed: u32, region: &str) -> Emulator {
        Emulator::new(EmulatorOptions {
            account_id: account.to_owned(),
            id_seed: seed,
            region: region.to_owned(),
            ..EmulatorOptions::default()
        })
    }

    async fn aws_list(world: &Emulator, name: &str) -> PrefixList {
        let filter = PrefixListFilter { names: vec![name.to_owned()], ..PrefixListFilter::default() };
        world.describe_prefix_lists(&filter).await.unwrap().remove(0)
    }

    fn from_list(port: u16, list: &PrefixListId) -> Grant {
        Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, Peer::PrefixList(list.clone()), None)
    }

    fn list_describes(world: &Emulator) -> u64 {
        world
            .counters()
            .iter()
            .find(|(op, _)| *op == Operation::DescribeManagedPrefixLists)
            .map_or(0, |(_, c)| c.requests)
    }

    #[tokio::test]
    async fn lists_cost_one_describe_per_account_and_a_targeted_pass_reads_a_list_just_referenced() {
        let source = world("111111111111", 1, "us-east-1");
        let target = world("222222222222", 2, "eu-west-1");
        let vpc = source.create_vpc(&NewVpc::default()).await.unwrap();
        let web = source.create_group(&NewGroup::in_vpc(&vpc, "web", "w")).await.unwrap();
        let s3 = aws_list(&source, "com.amazonaws.us-east-1.s3").await.id;
        source.authorize_ingress(&web, &[from_list(443, &s3)]).await.unwrap();
        let target_vpc = target.create_vpc(&NewVpc::default()).await.unwrap();
        let port = SourceAccounts::new(
            AccountPort::new("target", Arc::new(target.clone())),
            vec![(BTreeSet::from([web.clone()]), AccountPort::new("source", Arc::new(source.clone())))],
        );
        let mut config = Config::with_region("us-east-1");
        config.accounts.insert("source".into(), AccountConfig::in_region("us-east-1"));
        config.accounts.insert("target".into(), AccountConfig::in_region("eu-west-1"));
        let mut mirror = MirrorConfig::new(SourceRef::Id(web.clone()), target_vpc);
        mirror.source_account = Some("source".into());
        mirror.target_account = Some("target".into());
        config.mirrors.push(mirror);
        source.reset_counters();

        let observed = crate::observe::observe(&port, &config).await.snapshot;
        assert!(observed.is_complete(), "{:?}", observed.incomplete);
        assert_eq!((list_describes(&source), list_describes(&target)), (1, 1));
        assert_eq!(observed.source_prefix_lists[&s3].name, "com.amazonaws.us-east-1.s3");
        let ours = aws_list(&target, "com.amazonaws.eu-west-1.s3").await;
        assert_eq!(observed.target_aws_prefix_lists["com.amazonaws.eu-west-1.s3"].id, ours.id);

        // Nothing new referenced: a targeted pass reads no list.
        let dirty = Dirty { groups: BTreeSet::from([web.clone()]), ..Dirty::default() };
        let again = crate::events::targeted::observe_targeted(&port, &config, &observed, &dirty).await.snapshot;
        assert_eq!(list_describes(&source), 1);
        assert_eq!(again.source_prefix_lists, observed.source_prefix_lists);
        // A rule from DynamoDB's list: read, and mapped.
        let dynamodb = aws_list(&source, "com.amazonaws.us-east-1.dynamodb").await.id;
        source.authorize_ingress(&web, &[from_list(443, &dynamodb)]).await.unwrap();
        source.reset_counters();
        let fresh = crate::events::targeted::observe_targeted(&port, &config, &observed, &dirty).await.snapshot;
        assert!(fresh.is_complete(), "{:?}", fresh.incomplete);
        assert_eq!(list_describes(&source), 1, "the source's lists by id");
        assert!(fresh.source_prefix_lists.contains_key(&dynamodb));
        assert!(fresh.target_aws_prefix_lists.contains_key("com.amazonaws.eu-west-1.dynamodb"));
    }
}
