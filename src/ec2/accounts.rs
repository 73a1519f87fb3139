//! Sources in other accounts: one [`Ec2`] port over the target account's
//! and the source accounts' ports (docs/migrating-vpc-to-vpc.md).
//!
//! A mirror's source may live in another account (and region) than its
//! target VPC (`[[mirror]] source_account`). Observe and the planner need not
//! know: [`SourceAccounts`] sends each request to the account it concerns —
//! a `DescribeSecurityGroups` naming group ids goes, id by id, to the account
//! of each configured source (one account's ids per request; several
//! accounts' answers are walked one after the other as pages of one
//! describe), and every other request (the mirrors, their VPCs, every write)
//! to the target account. Each account's port is its own client with its
//! own token buckets and retry quota ([`super::limited::Limited`]), so one
//! account's throttling or failing role never spends another's budget; a
//! failing source account fails the describe of its sources alone (the
//! snapshot's source part is incomplete: no destructive action that pass).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;

use super::{
    CreateGroup, CreatePrefixList, Ec2, Ec2Error, GroupFilter, InstanceFilter, InterfaceFilter, LinkFilter,
    ModifyPrefixList, Operation, Page, PrefixListFilter, codes,
};
use crate::model::{
    Grant, GroupId, Instance, InstanceId, Link, NetworkInterface, PrefixList, PrefixListEntry, PrefixListId,
    SecurityGroup, Vpc, VpcId,
};

/// One account's port, under the account's configured name (`aws` for the
/// `[aws]` one), which every error message of it starts with
/// (`account old: …`), so logs and `/status` say whose request failed.
pub struct AccountPort {
    /// The configured name.
    pub name: String,
    /// The account's client.
    pub port: Arc<dyn Ec2>,
}

impl AccountPort {
    /// `port` under `name`.
    #[must_use]
    pub fn new(name: impl Into<String>, port: Arc<dyn Ec2>) -> Self {
        Self { name: name.into(), port }
    }

    fn named<T>(&self, result: Result<T, Ec2Error>) -> Result<T, Ec2Error> {
        result.map_err(|mut error| {
            error.message = format!("account {}: {}", self.name, error.message);
            error
        })
    }
}

/// The target account's port, and the ports of the accounts that hold
/// sources of its mirrors.
pub struct SourceAccounts {
    target: AccountPort,
    /// One port per source account, with the source group ids it holds.
    sources: Vec<(BTreeSet<GroupId>, AccountPort)>,
}

impl SourceAccounts {
    /// `target` for everything but the describes of `sources`' group ids.
    #[must_use]
    pub fn new(target: AccountPort, sources: Vec<(BTreeSet<GroupId>, AccountPort)>) -> Self {
        Self { target, sources }
    }

    /// Index 0 is the target; `i + 1` the `i`-th source account.
    fn port(&self, index: usize) -> &AccountPort {
        match index.checked_sub(1).and_then(|i| self.sources.get(i)) {
            Some((_, port)) => port,
            None => &self.target,
        }
    }

    /// The filter split by account, in a fixed order: `(port index, filter)`.
    fn split(&self, filter: &GroupFilter) -> Vec<(usize, GroupFilter)> {
        if filter.group_ids.is_empty() {
            return vec![(0, filter.clone())];
        }
        let mut by_port: BTreeMap<usize, Vec<GroupId>> = BTreeMap::new();
        for id in &filter.group_ids {
            let port = self.sources.iter().position(|(ids, _)| ids.contains(id)).map_or(0, |i| i + 1);
            by_port.entry(port).or_default().push(id.clone());
        }
        by_port.into_iter().map(|(port, group_ids)| (port, GroupFilter { group_ids, ..filter.clone() })).collect()
    }
}

fn bad_token(token: &str) -> Ec2Error {
    Ec2Error::new(
        Operation::DescribeSecurityGroups,
        codes::INVALID_PAGINATION_TOKEN,
        format!("the pagination token {token:?} was not issued for this request"),
    )
}

#[async_trait]
impl Ec2 for SourceAccounts {
    async fn security_groups_page(
        &self,
        filter: &GroupFilter,
        next_token: Option<String>,
    ) -> Result<Page<SecurityGroup>, Ec2Error> {
        let parts = self.split(filter);
        if let [(port, filter)] = parts.as_slice() {
            let port = self.port(*port);
            return port.named(port.port.security_groups_page(filter, next_token).await);
        }
        // Several accounts: their pages one after the other, the token
        // saying whose page comes next (`<part>:<that account's token>`).
        let (part, inner) = match &next_token {
            None => (0, None),
            Some(token) => {
                let (part, inner) = token.split_once(':').ok_or_else(|| bad_token(token))?;
                let part: usize = part.parse().map_err(|_| bad_token(token))?;
                (part, Some(inner.to_owned()).filter(|t| !t.is_empty()))
            }
        };
        let Some((port, filter)) = parts.get(part) else {
            return Err(bad_token(next_token.as_deref().unwrap_or_default()));
        };
        let port = self.port(*port);
        let page = port.named(port.port.security_groups_page(filter, inner).await)?;
        let next_token = match page.next_token.filter(|t| !t.is_empty()) {
            Some(token) => Some(format!("{part}:{token}")),
            None if part + 1 < parts.len() => Some(format!("{}:", part + 1)),
            None => None,
        };
        Ok(Page { items: page.items, next_token })
    }

    async fn instances_page(
        &self,
        filter: &InstanceFilter,
        next_token: Option<String>,
    ) -> Result<Page<Instance>, Ec2Error> {
        self.target.named(self.target.port.instances_page(filter, next_token).await)
    }

    async fn classic_link_instances_page(
        &self,
        filter: &LinkFilter,
        next_token: Option<String>,
    ) -> Result<Page<Link>, Ec2Error> {
        self.target.named(self.target.port.classic_link_instances_page(filter, next_token).await)
    }

    async fn vpcs_page(&self, vpc_ids: &[VpcId], next_token: Option<String>) -> Result<Page<VpcId>, Ec2Error> {
        self.target.named(self.target.port.vpcs_page(vpc_ids, next_token).await)
    }

    async fn vpc_classic_link_request(&self, vpc_ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
        self.target.named(self.target.port.vpc_classic_link_request(vpc_ids).await)
    }

    // Prefix lists and network interfaces are the target account's: the
    // daemon's own lists live beside its mirrors, and the groups it expands
    // are looked up where the mirrors reference them.
    async fn prefix_lists_page(
        &self,
        filter: &PrefixListFilter,
        next_token: Option<String>,
    ) -> Result<Page<PrefixList>, Ec2Error> {
        self.target.named(self.target.port.prefix_lists_page(filter, next_token).await)
    }

    async fn prefix_list_entries_page(
        &self,
        id: &PrefixListId,
        next_token: Option<String>,
    ) -> Result<Page<PrefixListEntry>, Ec2Error> {
        self.target.named(self.target.port.prefix_list_entries_page(id, next_token).await)
    }

    /// The lists a source's rules reference are asked of the source's own
    /// account (and region): another account's customer list, or another
    /// region's AWS-managed list, is invisible from the target.
    async fn describe_source_prefix_lists(
        &self,
        source: &GroupId,
        ids: &[PrefixListId],
    ) -> Result<Vec<PrefixList>, Ec2Error> {
        let port = self.sources.iter().position(|(held, _)| held.contains(source)).map_or(0, |i| i + 1);
        let port = self.port(port);
        port.named(port.port.describe_source_prefix_lists(source, ids).await)
    }

    async fn network_interfaces_page(
        &self,
        filter: &InterfaceFilter,
        next_token: Option<String>,
    ) -> Result<Page<NetworkInterface>, Ec2Error> {
        self.target.named(self.target.port.network_interfaces_page(filter, next_token).await)
    }

    async fn create_prefix_list(&self, request: &CreatePrefixList) -> Result<PrefixList, Ec2Error> {
        self.target.named(self.target.port.create_prefix_list(request).await)
    }

    async fn modify_prefix_list(&self, request: &ModifyPrefixList) -> Result<PrefixList, Ec2Error> {
        self.target.named(self.target.port.modify_prefix_list(request).await)
    }

    async fn delete_prefix_list(&self, id: &PrefixListId) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.delete_prefix_list(id).await)
    }

    async fn create_security_group(&self, request: &CreateGroup) -> Result<GroupId, Ec2Error> {
        self.target.named(self.target.port.create_security_group(request).await)
    }

    async fn delete_security_group(&self, group_id: &GroupId) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.delete_security_group(group_id).await)
    }

    async fn authorize_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.authorize_ingress(group_id, grants).await)
    }

    async fn revoke_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.revoke_ingress(group_id, grants).await)
    }

    async fn authorize_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.authorize_egress(group_id, grants).await)
    }

    async fn revoke_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.revoke_egress(group_id, grants).await)
    }

    async fn update_ingress_descriptions(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.update_ingress_descriptions(group_id, grants).await)
    }

    async fn create_tags(&self, group_id: &GroupId, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.create_tags(group_id, tags).await)
    }

    async fn delete_tags(&self, group_id: &GroupId, keys: &[String]) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.delete_tags(group_id, keys).await)
    }

    async fn attach_classic_link_vpc(
        &self,
        instance_id: &InstanceId,
        vpc_id: &VpcId,
        groups: &[GroupId],
    ) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.attach_classic_link_vpc(instance_id, vpc_id, groups).await)
    }

    async fn detach_classic_link_vpc(&self, instance_id: &InstanceId, vpc_id: &VpcId) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.detach_classic_link_vpc(instance_id, vpc_id).await)
    }

    async fn enable_vpc_classic_link(&self, vpc_id: &VpcId) -> Result<(), Ec2Error> {
        self.target.named(self.target.port.enable_vpc_classic_link(vpc_id).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::{Emulator, EmulatorOptions, NewGroup, NewVpc};

    fn world(account: &str, seed: u32) -> Emulator {
        Emulator::new(EmulatorOptions { account_id: account.to_owned(), id_seed: seed, ..EmulatorOptions::default() })
    }

    #[tokio::test]
    async fn describes_by_id_reach_the_account_of_each_source_and_everything_else_the_target() {
        let (a, b, target) = (world("111111111111", 1), world("222222222222", 2), world("333333333333", 3));
        let in_a = a.create_group(&NewGroup::classic("in-a", "a")).await.unwrap();
        let in_b = b.create_group(&NewGroup::classic("in-b", "b")).await.unwrap();
        let vpc = target.create_vpc(&NewVpc::default()).await.unwrap();
        let mirror = target.create_group(&NewGroup::in_vpc(&vpc, "mirror", "m")).await.unwrap();
        let port = SourceAccounts::new(
            AccountPort::new("target", Arc::new(target.clone())),
            vec![
                (BTreeSet::from([in_a.clone()]), AccountPort::new("a", Arc::new(a.clone()))),
                (BTreeSet::from([in_b.clone()]), AccountPort::new("b", Arc::new(b.clone()))),
            ],
        );
        let filter =
            GroupFilter { group_ids: vec![in_a.clone(), mirror.clone(), in_b.clone()], ..GroupFilter::default() };
        let found: BTreeSet<GroupId> =
            port.describe_security_groups(&filter).await.unwrap().into_iter().map(|g| g.id).collect();
        assert_eq!(found, BTreeSet::from([in_a.clone(), in_b, mirror.clone()]));
        let owners: BTreeSet<String> =
            port.describe_security_groups(&filter).await.unwrap().into_iter().map(|g| g.owner_id).collect();
        assert_eq!(owners.len(), 3, "each group from its own account: {owners:?}");

        let by_vpc = GroupFilter { vpc_ids: vec![vpc.clone()], ..GroupFilter::default() };
        let in_vpc = port.describe_security_groups(&by_vpc).await.unwrap();
        assert!(in_vpc.iter().all(|g| g.owner_id == "333333333333"), "{in_vpc:?}");
        port.create_tags(&mirror, &BTreeMap::from([("k".to_owned(), "v".to_owned())])).await.unwrap();
        assert_eq!(target.peek_group(&mirror).unwrap().tags.get("k").map(String::as_str), Some("v"));
        assert!(a.peek_group(&in_a).unwrap().tags.is_empty());
    }

    #[tokio::test]
    async fn a_failing_source_account_fails_only_the_describes_that_need_it() {
        let (a, target) = (world("111111111111", 1), world("333333333333", 3));
        let in_a = a.create_group(&NewGroup::classic("in-a", "a")).await.unwrap();
        a.set_faults(crate::emulator::Faults::none().with_error_rate(1.0));
        let port = SourceAccounts::new(
            AccountPort::new("target", Arc::new(target.clone())),
            vec![(BTreeSet::from([in_a.clone()]), AccountPort::new("old", Arc::new(a.clone())))],
        );
        let sources = GroupFilter { group_ids: vec![in_a], ..GroupFilter::default() };
        let error = port.describe_security_groups(&sources).await.unwrap_err();
        assert!(error.message.starts_with("account old: "), "{error:?}");
        assert!(port.describe_security_groups(&GroupFilter::default()).await.is_ok());
    }
}
