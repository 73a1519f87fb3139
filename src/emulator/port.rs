//! The [`Ec2`] port implemented by the emulator: what `observe` and
//! `execute` call. Each port call is one counted request; describes answer
//! one page ([`PORT_PAGE_SIZE`] items) per call, and the port's provided
//! whole describes walk the pages, so the caller can tell a complete answer
//! from a partial one.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::ec2::{
    CreateGroup, CreatePrefixList, Ec2, Ec2Error, GroupFilter, InstanceFilter, InterfaceFilter, LinkFilter,
    ModifyPrefixList, Operation, Page, PrefixListFilter,
};
use crate::model::{
    Direction, Grant, GroupId, Instance, InstanceId, Link, NetworkInterface, PrefixList, PrefixListEntry, PrefixListId,
    SecurityGroup, Vpc, VpcId,
};

use super::events::documents;
use super::state::GroupSpec;
use super::{CreatePrefixListSpec, Emulator, ModifyPrefixListSpec, PORT_PAGE_SIZE, PageRequest};

/// The largest page `DescribeManagedPrefixLists` and `GetManagedPrefixListEntries` give.
const PREFIX_LIST_PAGE_SIZE: i32 = 100;

#[async_trait]
impl Ec2 for Emulator {
    async fn security_groups_page(
        &self,
        filter: &GroupFilter,
        next_token: Option<String>,
    ) -> Result<Page<SecurityGroup>, Ec2Error> {
        let page = PageRequest::after(PORT_PAGE_SIZE, next_token);
        self.describe_security_groups_page(&[], filter, &page).await
    }

    async fn instances_page(
        &self,
        filter: &InstanceFilter,
        next_token: Option<String>,
    ) -> Result<Page<Instance>, Ec2Error> {
        let page = PageRequest::after(PORT_PAGE_SIZE, next_token);
        self.describe_instances_page(&[], filter, &page).await
    }

    async fn classic_link_instances_page(
        &self,
        filter: &LinkFilter,
        next_token: Option<String>,
    ) -> Result<Page<Link>, Ec2Error> {
        let page = PageRequest::after(PORT_PAGE_SIZE, next_token);
        self.describe_classic_link_instances_page(&[], filter, &page).await
    }

    /// The `vpc-id` filter of a few target VPCs: one page, as EC2 answers it.
    async fn vpcs_page(&self, vpc_ids: &[VpcId], _next_token: Option<String>) -> Result<Page<VpcId>, Ec2Error> {
        self.request(Operation::DescribeVpcs, |world, _| {
            world.vpc_classic_link(vpc_ids, true).map(|vpcs| Page::last(vpcs.into_iter().map(|v| v.id).collect()))
        })
        .await
    }

    async fn vpc_classic_link_request(&self, vpc_ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
        self.request(Operation::DescribeVpcClassicLink, |world, _| world.vpc_classic_link(vpc_ids, false)).await
    }

    async fn prefix_lists_page(
        &self,
        filter: &PrefixListFilter,
        next_token: Option<String>,
    ) -> Result<Page<PrefixList>, Ec2Error> {
        let page = PageRequest::after(PREFIX_LIST_PAGE_SIZE, next_token);
        self.request(Operation::DescribeManagedPrefixLists, |world, now| {
            world.prefix_lists_page(now, &[], filter, &page)
        })
        .await
    }

    async fn prefix_list_entries_page(
        &self,
        id: &PrefixListId,
        next_token: Option<String>,
    ) -> Result<Page<PrefixListEntry>, Ec2Error> {
        let page = PageRequest::after(PREFIX_LIST_PAGE_SIZE, next_token);
        self.get_managed_prefix_list_entries(id, None, &page).await
    }

    async fn network_interfaces_page(
        &self,
        filter: &InterfaceFilter,
        next_token: Option<String>,
    ) -> Result<Page<NetworkInterface>, Ec2Error> {
        let page = PageRequest::after(PORT_PAGE_SIZE, next_token);
        self.request(Operation::DescribeNetworkInterfaces, |world, now| world.interfaces_page(now, filter, &page)).await
    }

    async fn create_prefix_list(&self, request: &CreatePrefixList) -> Result<PrefixList, Ec2Error> {
        let spec = CreatePrefixListSpec {
            name: Some(request.name.clone()),
            address_family: Some(request.address_family.clone()),
            max_entries: Some(i64::from(request.max_entries)),
            entries: request.entries.iter().map(|e| (e.cidr.to_string(), e.description.clone())).collect(),
            tags: request.tags.clone(),
            client_token: request.client_token.clone(),
        };
        self.create_managed_prefix_list(spec).await
    }

    async fn modify_prefix_list(&self, request: &ModifyPrefixList) -> Result<PrefixList, Ec2Error> {
        let spec = ModifyPrefixListSpec {
            current_version: Some(i64::try_from(request.current_version).unwrap_or(i64::MAX)),
            name: None,
            add: request.add.iter().map(|e| (e.cidr.to_string(), e.description.clone())).collect(),
            remove: request.remove.iter().map(ToString::to_string).collect(),
            max_entries: None,
        };
        self.modify_managed_prefix_list(&request.id, spec).await
    }

    async fn delete_prefix_list(&self, id: &PrefixListId) -> Result<(), Ec2Error> {
        self.delete_managed_prefix_list(id).await.map(drop)
    }

    async fn create_security_group(&self, request: &CreateGroup) -> Result<GroupId, Ec2Error> {
        let spec = GroupSpec {
            id: None,
            vpc_id: Some(request.vpc_id.clone()),
            name: request.name.clone(),
            description: request.description.clone(),
            tags: request.tags.clone(),
        };
        self.port_write(
            Operation::CreateSecurityGroup,
            |world, now| world.create_group(now, spec),
            |id, _| vec![documents::create_group(&request.name, &request.description, Some(&request.vpc_id), id)],
        )
        .await
    }

    async fn delete_security_group(&self, group_id: &GroupId) -> Result<(), Ec2Error> {
        self.port_write(
            Operation::DeleteSecurityGroup,
            |world, now| world.delete_group(now, group_id),
            |(), _| vec![documents::delete_group(group_id)],
        )
        .await
    }

    async fn authorize_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        let op = Operation::AuthorizeSecurityGroupIngress;
        self.port_write(
            op,
            |world, now| world.authorize(now, group_id, grants),
            |(), world| vec![documents::ingress_grants(op.as_str(), group_id, grants, &world.account_id)],
        )
        .await
    }

    async fn revoke_ingress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        let op = Operation::RevokeSecurityGroupIngress;
        self.port_write(
            op,
            |world, now| world.revoke(now, group_id, grants).map(drop),
            |(), world| vec![documents::ingress_grants(op.as_str(), group_id, grants, &world.account_id)],
        )
        .await
    }

    async fn authorize_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        let op = Operation::AuthorizeSecurityGroupEgress;
        self.port_write(
            op,
            |world, now| world.authorize_rules(now, Direction::Egress, group_id, grants),
            |(), world| vec![documents::ingress_grants(op.as_str(), group_id, grants, &world.account_id)],
        )
        .await
    }

    async fn revoke_egress(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        let op = Operation::RevokeSecurityGroupEgress;
        self.port_write(
            op,
            |world, now| world.revoke_rules(now, Direction::Egress, group_id, grants).map(drop),
            |(), world| vec![documents::ingress_grants(op.as_str(), group_id, grants, &world.account_id)],
        )
        .await
    }

    async fn update_ingress_descriptions(&self, group_id: &GroupId, grants: &[Grant]) -> Result<(), Ec2Error> {
        let op = Operation::UpdateSecurityGroupRuleDescriptionsIngress;
        self.port_write(
            op,
            |world, now| world.update_descriptions(now, group_id, grants),
            |(), world| vec![documents::ingress_grants(op.as_str(), group_id, grants, &world.account_id)],
        )
        .await
    }

    async fn create_tags(&self, group_id: &GroupId, tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
        let groups = std::slice::from_ref(group_id);
        self.port_write(
            Operation::CreateTags,
            |world, now| world.create_tags(now, groups, tags),
            |(), _| {
                vec![documents::tags("CreateTags", groups, tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))))]
            },
        )
        .await
    }

    async fn delete_tags(&self, group_id: &GroupId, keys: &[String]) -> Result<(), Ec2Error> {
        let keys: Vec<(String, Option<String>)> = keys.iter().map(|k| (k.clone(), None)).collect();
        let groups = std::slice::from_ref(group_id);
        self.port_write(
            Operation::DeleteTags,
            |world, now| world.delete_tags(now, groups, &keys),
            |(), _| vec![documents::tags("DeleteTags", groups, keys.iter().map(|(k, _)| (k.as_str(), None)))],
        )
        .await
    }

    async fn attach_classic_link_vpc(
        &self,
        instance_id: &InstanceId,
        vpc_id: &VpcId,
        groups: &[GroupId],
    ) -> Result<(), Ec2Error> {
        self.port_write(
            Operation::AttachClassicLinkVpc,
            |world, now| world.attach(now, instance_id, vpc_id, groups),
            |(), _| vec![documents::attach(instance_id, vpc_id, groups)],
        )
        .await
    }

    async fn detach_classic_link_vpc(&self, instance_id: &InstanceId, vpc_id: &VpcId) -> Result<(), Ec2Error> {
        self.port_write(
            Operation::DetachClassicLinkVpc,
            |world, now| world.detach(now, instance_id, vpc_id).map(drop),
            |(), _| vec![documents::detach(instance_id, vpc_id)],
        )
        .await
    }

    async fn enable_vpc_classic_link(&self, vpc_id: &VpcId) -> Result<(), Ec2Error> {
        self.port_write(
            Operation::EnableVpcClassicLink,
            |world, _| world.enable_classic_link(vpc_id),
            |(), _| vec![documents::enable_classic_link(vpc_id)],
        )
        .await
    }
}
