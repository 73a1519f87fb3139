//! One function per EC2 action: read the parameters, call the engine, write
//! the answer's XML (what goes inside `<{Action}Response>`).
//!
//! A request whose parameters EC2 would refuse is refused *through the
//! engine's request pipeline* ([`refused`]), like any other EC2 error: it is
//! throttled first, can draw an injected fault, and is counted. Only requests
//! that name no action at all escape the counters.

use std::collections::{BTreeMap, HashMap};

use ipnet::Ipv4Net;

use crate::ec2::{Ec2, Ec2Error, Operation};
use crate::model::{GroupId, Instance, InstanceId, Link, PrefixList, PrefixListId, SecurityGroup, Vpc, VpcId};

use super::super::permissions::{CidrSource, GroupSource, PrefixListSource};
use super::super::state::{Fail, VpcSpec};
use super::super::{
    CreatePrefixListSpec, Emulator, IpPermission, ModifyPrefixListSpec, NewGroup, RunInstances, StateChange, codes,
};
use super::query::{self, Params};
use super::xml::{self, Xml};

/// EC2 launches at most this many instances in one `RunInstances` here;
/// larger worlds are seeded through the engine or estates.
const MAX_LAUNCH: usize = 1000;

/// Runs `op` with the request's parameters; the answer's inner XML.
pub(super) async fn run(e: &Emulator, op: Operation, p: &Params) -> Result<String, Ec2Error> {
    let dry_run = checked(e, op, p.required("Version").and_then(|_| p.boolean("DryRun"))).await?;
    if dry_run == Some(true) {
        // Nothing is checked beyond parsing (EC2 checks permissions only).
        return Err(Ec2Error::new(
            op,
            codes::DRY_RUN_OPERATION,
            "Request would have succeeded, but DryRun flag is set.",
        ));
    }
    match op {
        Operation::DescribeSecurityGroups => describe_security_groups(e, p).await,
        Operation::DescribeInstances => describe_instances(e, p).await,
        Operation::DescribeClassicLinkInstances => describe_classic_link_instances(e, p).await,
        Operation::DescribeVpcClassicLink => describe_vpc_classic_link(e, p).await,
        Operation::DescribeVpcs => describe_vpcs(e, p).await,
        Operation::CreateVpc => create_vpc(e, p).await,
        Operation::CreateSecurityGroup => create_security_group(e, p).await,
        Operation::DeleteSecurityGroup => delete_security_group(e, p).await,
        Operation::AuthorizeSecurityGroupIngress => authorize_ingress(e, p).await,
        Operation::RevokeSecurityGroupIngress => revoke_ingress(e, p).await,
        Operation::UpdateSecurityGroupRuleDescriptionsIngress => update_descriptions(e, p).await,
        Operation::AuthorizeSecurityGroupEgress => authorize_egress(e, p).await,
        Operation::RevokeSecurityGroupEgress => revoke_egress(e, p).await,
        Operation::CreateTags => create_tags(e, p).await,
        Operation::DeleteTags => delete_tags(e, p).await,
        Operation::AttachClassicLinkVpc => attach_classic_link_vpc(e, p).await,
        Operation::DetachClassicLinkVpc => detach_classic_link_vpc(e, p).await,
        Operation::EnableVpcClassicLink => enable_vpc_classic_link(e, p).await,
        Operation::RunInstances => run_instances(e, p).await,
        Operation::CreateManagedPrefixList => create_managed_prefix_list(e, p).await,
        Operation::DescribeManagedPrefixLists => describe_managed_prefix_lists(e, p).await,
        Operation::GetManagedPrefixListEntries => get_managed_prefix_list_entries(e, p).await,
        Operation::ModifyManagedPrefixList => modify_managed_prefix_list(e, p).await,
        Operation::DeleteManagedPrefixList => delete_managed_prefix_list(e, p).await,
        Operation::DescribeNetworkInterfaces => describe_network_interfaces(e, p).await,
        Operation::StopInstances | Operation::StartInstances | Operation::TerminateInstances => {
            change_states(e, op, p).await
        }
    }
}

/// A refusal EC2 would answer, sent through the request pipeline.
async fn refused<T>(e: &Emulator, op: Operation, fail: Fail) -> Result<T, Ec2Error> {
    e.request(op, move |_, _| Err(fail)).await
}

/// The parsed value, or its refusal through the request pipeline.
async fn checked<T>(e: &Emulator, op: Operation, parsed: Result<T, Fail>) -> Result<T, Ec2Error> {
    match parsed {
        Ok(value) => Ok(value),
        Err(fail) => refused(e, op, fail).await,
    }
}

fn unsupported(what: &str) -> Fail {
    Fail::new(codes::UNSUPPORTED, format!("{what} is not modelled by the emulator (docs/emulator.md)"))
}

fn invalid_filter(name: &str) -> Fail {
    Fail::new(codes::INVALID_PARAMETER_VALUE, format!("The filter '{name}' is invalid"))
}

fn classic_group_named(e: &Emulator, name: &str) -> Result<GroupId, Fail> {
    e.group_id(None, name)
        .ok_or_else(|| Fail::new(codes::GROUP_NOT_FOUND, format!("The security group '{name}' does not exist")))
}

/// The group an ingress action or `DeleteSecurityGroup` acts on: `GroupId`,
/// or `GroupName` (EC2-Classic groups only, as in EC2).
fn target_group(e: &Emulator, p: &Params) -> Result<GroupId, Fail> {
    if let Some(id) = p.id("GroupId", codes::GROUP_ID_MALFORMED)? {
        return Ok(id);
    }
    match p.get("GroupName") {
        Some(name) => classic_group_named(e, name),
        None => p.required_id("GroupId", codes::GROUP_ID_MALFORMED),
    }
}

/// `TagSpecification.N` for one resource type; a missing value is `""`.
fn tag_specifications(p: &Params, resource_type: &str) -> Result<BTreeMap<String, String>, Fail> {
    let mut tags = BTreeMap::new();
    for (i, spec) in p.structs("TagSpecification")?.iter().enumerate() {
        let kind = spec.required("ResourceType").map_err(|_| {
            Fail::new(
                codes::MISSING_PARAMETER,
                format!("The request must contain TagSpecification.{}.ResourceType", i + 1),
            )
        })?;
        if kind != resource_type {
            return Err(Fail::new(
                codes::INVALID_PARAMETER_VALUE,
                format!(
                    "'{kind}' is not a valid taggable resource type for this operation (expected '{resource_type}')"
                ),
            ));
        }
        for (key, value) in spec.tags("Tag")? {
            tags.insert(key, value.unwrap_or_default());
        }
    }
    Ok(tags)
}

/// Names of the groups an answer mentions, looked up once each.
struct GroupNames<'a> {
    emulator: &'a Emulator,
    known: HashMap<GroupId, Option<String>>,
}

impl<'a> GroupNames<'a> {
    fn new(emulator: &'a Emulator) -> Self {
        Self { emulator, known: HashMap::new() }
    }

    fn name(&mut self, id: &GroupId) -> Option<String> {
        self.known.entry(id.clone()).or_insert_with(|| self.emulator.peek_group(id).map(|g| g.name)).clone()
    }

    /// `<groupSet>` of `groupId` / `groupName` items.
    fn group_set<'g>(&mut self, x: &mut Xml, groups: impl IntoIterator<Item = &'g GroupId>) {
        let groups: Vec<(&GroupId, Option<String>)> = groups.into_iter().map(|g| (g, self.name(g))).collect();
        x.list("groupSet", groups, |x, (id, name)| {
            x.text("groupId", id.as_str()).opt_text("groupName", name.as_deref());
        });
    }
}

// ----- security groups -----------------------------------------------------------

async fn describe_security_groups(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DescribeSecurityGroups;
    let parsed = (|| {
        let mut ids = query::group_ids(p, "GroupId")?;
        for name in p.list("GroupName")? {
            ids.push(classic_group_named(e, &name)?);
        }
        Ok((ids, p.filters()?, p.page()?))
    })();
    let (ids, filters, page) = checked(e, op, parsed).await?;
    let page = e.describe_security_groups_filtered(&ids, &filters, &page).await?;
    let on_page: HashMap<&str, &SecurityGroup> = page.items.iter().map(|g| (g.id.as_str(), g)).collect();
    let name_of = |id: &str| match on_page.get(id) {
        Some(group) => Some(group.name.clone()),
        None => GroupId::try_new(id).ok().and_then(|g| e.peek_group(&g)).map(|g| g.name),
    };
    let mut x = Xml::new();
    x.list("securityGroupInfo", &page.items, |x, group| xml::security_group(x, group, &name_of));
    x.opt_text("nextToken", page.next_token.as_deref());
    Ok(x.into_string())
}

async fn create_security_group(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::CreateSecurityGroup;
    let parsed = (|| {
        Ok(NewGroup {
            vpc_id: p.id("VpcId", codes::VPC_ID_MALFORMED)?,
            name: p.required("GroupName")?.to_owned(),
            description: p.required("GroupDescription")?.to_owned(),
            tags: tag_specifications(p, "security-group")?,
        })
    })();
    let request = checked(e, op, parsed).await?;
    let id = e.create_group(&request).await?;
    let mut x = Xml::new();
    x.boolean("return", true).text("groupId", id.as_str());
    if !request.tags.is_empty() {
        x.tags(&request.tags);
    }
    Ok(x.into_string())
}

async fn delete_security_group(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DeleteSecurityGroup;
    let id = checked(e, op, target_group(e, p)).await?;
    Ec2::delete_security_group(e, &id).await?;
    let mut x = Xml::new();
    x.boolean("return", true).text("groupId", id.as_str());
    Ok(x.into_string())
}

fn cidr_sources(p: &Params, list: &str, field: &str) -> Result<Vec<CidrSource>, Fail> {
    p.structs(list)?
        .iter()
        .map(|r| {
            Ok(CidrSource { cidr: r.required(field)?.to_owned(), description: r.get("Description").map(Into::into) })
        })
        .collect()
}

/// `IpPermissions.N.*`, plus EC2's older top-level form (`IpProtocol`,
/// `FromPort`, `ToPort`, `CidrIp`, `SourceSecurityGroupName`,
/// `SourceSecurityGroupOwnerId`) as one more permission.
pub(super) fn ip_permissions(p: &Params) -> Result<Vec<IpPermission>, Fail> {
    let mut permissions = Vec::new();
    for perm in p.structs("IpPermissions")? {
        let mut pairs = perm.structs("Groups")?;
        // `UserIdGroupPairs` is the shape's name; `Groups` is what EC2 and the SDKs send.
        pairs.extend(perm.structs("UserIdGroupPairs")?);
        permissions.push(IpPermission {
            ip_protocol: perm.required("IpProtocol")?.to_owned(),
            from_port: perm.number("FromPort")?,
            to_port: perm.number("ToPort")?,
            ip_ranges: cidr_sources(&perm, "IpRanges", "CidrIp")?,
            ipv6_ranges: cidr_sources(&perm, "Ipv6Ranges", "CidrIpv6")?,
            prefix_list_ids: perm
                .structs("PrefixListIds")?
                .iter()
                .map(|l| {
                    Ok(PrefixListSource {
                        prefix_list_id: l.required("PrefixListId")?.to_owned(),
                        description: l.get("Description").map(Into::into),
                    })
                })
                .collect::<Result<_, Fail>>()?,
            user_id_group_pairs: pairs
                .iter()
                .map(|g| GroupSource {
                    group_id: g.get("GroupId").map(Into::into),
                    group_name: g.get("GroupName").map(Into::into),
                    user_id: g.get("UserId").map(Into::into),
                    description: g.get("Description").map(Into::into),
                })
                .collect(),
        });
    }
    let legacy_source = p.get("CidrIp").is_some() || p.get("SourceSecurityGroupName").is_some();
    if p.get("IpProtocol").is_some() || legacy_source {
        let mut permission = IpPermission {
            ip_protocol: p.required("IpProtocol")?.to_owned(),
            from_port: p.number("FromPort")?,
            to_port: p.number("ToPort")?,
            ..IpPermission::default()
        };
        if let Some(cidr) = p.get("CidrIp") {
            permission.ip_ranges.push(CidrSource { cidr: cidr.to_owned(), description: None });
        }
        if let Some(name) = p.get("SourceSecurityGroupName") {
            permission.user_id_group_pairs.push(GroupSource {
                group_name: Some(name.to_owned()),
                user_id: p.get("SourceSecurityGroupOwnerId").map(Into::into),
                ..GroupSource::default()
            });
        }
        permissions.push(permission);
    }
    Ok(permissions)
}

fn ingress_request(e: &Emulator, p: &Params, unsupported_list: &str) -> Result<(GroupId, Vec<IpPermission>), Fail> {
    if p.has_prefix(unsupported_list) {
        return Err(unsupported(unsupported_list));
    }
    Ok((target_group(e, p)?, ip_permissions(p)?))
}

async fn authorize_ingress(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::AuthorizeSecurityGroupIngress;
    let (group, permissions) = checked(e, op, ingress_request(e, p, "TagSpecification")).await?;
    e.authorize_permissions(&group, &permissions).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

async fn revoke_ingress(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::RevokeSecurityGroupIngress;
    let (group, permissions) = checked(e, op, ingress_request(e, p, "SecurityGroupRuleId")).await?;
    let unknown = e.revoke_permissions(&group, &permissions).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    if !unknown.is_empty() {
        x.list("unknownIpPermissionSet", &unknown, xml::ip_permission);
    }
    Ok(x.into_string())
}

async fn authorize_egress(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::AuthorizeSecurityGroupEgress;
    let (group, permissions) = checked(e, op, ingress_request(e, p, "TagSpecification")).await?;
    e.authorize_egress_permissions(&group, &permissions).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

async fn revoke_egress(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::RevokeSecurityGroupEgress;
    let (group, permissions) = checked(e, op, ingress_request(e, p, "SecurityGroupRuleId")).await?;
    e.revoke_egress_permissions(&group, &permissions).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

async fn update_descriptions(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::UpdateSecurityGroupRuleDescriptionsIngress;
    let (group, permissions) = checked(e, op, ingress_request(e, p, "SecurityGroupRuleDescription")).await?;
    e.update_permission_descriptions(&group, &permissions).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

// ----- tags --------------------------------------------------------------------------

/// `ResourceId.N`: only security groups carry tags in the emulator.
fn tag_resources(p: &Params) -> Result<Vec<GroupId>, Fail> {
    p.list("ResourceId")?
        .iter()
        .map(|id| {
            if let Ok(group) = GroupId::try_new(id.as_str()) {
                Ok(group)
            } else if InstanceId::try_new(id.as_str()).is_ok() || VpcId::try_new(id.as_str()).is_ok() {
                Err(unsupported(&format!("Tagging {id} after creation")))
            } else {
                Err(Fail::new(codes::INVALID_ID, format!("The ID '{id}' is not valid")))
            }
        })
        .collect()
}

async fn create_tags(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::CreateTags;
    let parsed = (|| {
        let tags: BTreeMap<String, String> =
            p.tags("Tag")?.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
        Ok((tag_resources(p)?, tags))
    })();
    let (groups, tags) = checked(e, op, parsed).await?;
    e.tag_groups(&groups, &tags).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

async fn delete_tags(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DeleteTags;
    let (groups, keys) = checked(e, op, tag_resources(p).and_then(|g| Ok((g, p.tags("Tag")?)))).await?;
    e.untag_groups(&groups, &keys).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

// ----- managed prefix lists and network interfaces --------------------------------------

/// A `ManagedPrefixList` (the inside of `<prefixList>` or of an `<item>`).
fn prefix_list_item(x: &mut Xml, list: &PrefixList) {
    x.text("prefixListId", list.id.as_str()).text("addressFamily", &list.address_family);
    x.text("state", &list.state).opt_text("stateMessage", list.state_message.as_deref());
    x.text("prefixListArn", &format!("arn:aws:ec2:us-east-1:{}:prefix-list/{}", list.owner_id, list.id));
    x.text("prefixListName", &list.name);
    x.number("maxEntries", i64::from(list.max_entries));
    x.number("version", i64::try_from(list.version).unwrap_or(i64::MAX));
    x.tags(&list.tags);
    x.text("ownerId", &list.owner_id);
}

fn prefix_list_answer(list: &PrefixList) -> String {
    let mut x = Xml::new();
    x.open("prefixList");
    prefix_list_item(&mut x, list);
    x.close("prefixList");
    x.into_string()
}

fn prefix_list_id(p: &Params) -> Result<PrefixListId, Fail> {
    p.required_id("PrefixListId", codes::PREFIX_LIST_ID_MALFORMED)
}

/// `Entry.N` / `AddEntry.N`: `Cidr` and `Description`.
fn entries(p: &Params, prefix: &str) -> Result<Vec<(String, Option<String>)>, Fail> {
    p.structs(prefix)?
        .iter()
        .map(|entry| Ok((entry.required("Cidr")?.to_owned(), entry.get("Description").map(str::to_owned))))
        .collect()
}

async fn create_managed_prefix_list(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::CreateManagedPrefixList;
    let parsed = (|| {
        Ok(CreatePrefixListSpec {
            name: p.get("PrefixListName").map(str::to_owned),
            address_family: p.get("AddressFamily").map(str::to_owned),
            max_entries: p.number("MaxEntries")?,
            entries: entries(p, "Entry")?,
            tags: tag_specifications(p, "prefix-list")?,
            client_token: p.get("ClientToken").map(str::to_owned),
        })
    })();
    let spec = checked(e, op, parsed).await?;
    let list = e.create_managed_prefix_list(spec).await?;
    Ok(prefix_list_answer(&list))
}

async fn describe_managed_prefix_lists(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DescribeManagedPrefixLists;
    let parsed = (|| {
        Ok((p.id_list::<PrefixListId>("PrefixListId", codes::PREFIX_LIST_ID_MALFORMED)?, p.filters()?, p.page()?))
    })();
    let (ids, filters, page) = checked(e, op, parsed).await?;
    let page = e.describe_managed_prefix_lists_filtered(&ids, &filters, &page).await?;
    let mut x = Xml::new();
    x.list("prefixListSet", &page.items, prefix_list_item);
    x.opt_text("nextToken", page.next_token.as_deref());
    Ok(x.into_string())
}

async fn get_managed_prefix_list_entries(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::GetManagedPrefixListEntries;
    let parsed = (|| Ok((prefix_list_id(p)?, p.number::<i64>("TargetVersion")?, p.page()?)))();
    let (id, target_version, page) = checked(e, op, parsed).await?;
    let page = e.get_managed_prefix_list_entries(&id, target_version, &page).await?;
    let mut x = Xml::new();
    x.list("entrySet", &page.items, |x, entry| {
        x.text("cidr", &entry.cidr.to_string()).opt_text("description", entry.description.as_deref());
    });
    x.opt_text("nextToken", page.next_token.as_deref());
    Ok(x.into_string())
}

async fn modify_managed_prefix_list(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::ModifyManagedPrefixList;
    let parsed = (|| {
        let remove = p
            .structs("RemoveEntry")?
            .iter()
            .map(|r| Ok(r.required("Cidr")?.to_owned()))
            .collect::<Result<Vec<String>, Fail>>()?;
        let spec = ModifyPrefixListSpec {
            current_version: p.number("CurrentVersion")?,
            name: p.get("PrefixListName").map(str::to_owned),
            add: entries(p, "AddEntry")?,
            remove,
            max_entries: p.number("MaxEntries")?,
        };
        Ok((prefix_list_id(p)?, spec))
    })();
    let (id, spec) = checked(e, op, parsed).await?;
    let list = e.modify_managed_prefix_list(&id, spec).await?;
    Ok(prefix_list_answer(&list))
}

async fn delete_managed_prefix_list(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DeleteManagedPrefixList;
    let id = checked(e, op, prefix_list_id(p)).await?;
    let list = e.delete_managed_prefix_list(&id).await?;
    Ok(prefix_list_answer(&list))
}

async fn describe_network_interfaces(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DescribeNetworkInterfaces;
    let parsed = (|| {
        let mut filters = p.filters()?;
        let ids = p.list("NetworkInterfaceId")?;
        if !ids.is_empty() {
            return Err(unsupported("NetworkInterfaceId.N"));
        }
        filters.retain(|f| !f.values.is_empty());
        Ok((filters, p.page()?))
    })();
    let (filters, page) = checked(e, op, parsed).await?;
    let page = e.describe_network_interfaces_filtered(&filters, &page).await?;
    let owner = e.account_id();
    let mut names = GroupNames::new(e);
    let mut x = Xml::new();
    x.list("networkInterfaceSet", &page.items, |x, interface| {
        x.text("networkInterfaceId", &interface.id).text("vpcId", interface.vpc_id.as_str());
        x.text("ownerId", &owner).text("status", &interface.status).text("interfaceType", "interface");
        x.opt_text("privateIpAddress", interface.private_ip.map(|a| a.to_string()).as_deref());
        names.group_set(x, &interface.groups);
        if let Some(instance) = &interface.instance_id {
            x.open("attachment");
            x.text("instanceId", instance.as_str()).text("instanceOwnerId", &owner).text("status", "attached");
            x.number("deviceIndex", 0).boolean("deleteOnTermination", true);
            x.close("attachment");
        }
    });
    x.opt_text("nextToken", page.next_token.as_deref());
    Ok(x.into_string())
}

// ----- instances ---------------------------------------------------------------------

/// One instance (the inside of its `<item>`).
fn instance_item(x: &mut Xml, names: &mut GroupNames<'_>, instance: &Instance) {
    x.text("instanceId", instance.id.as_str());
    xml::instance_state(x, "instanceState", instance.state);
    x.opt_text("vpcId", instance.vpc_id.as_ref().map(VpcId::as_str));
    x.opt_text("privateIpAddress", instance.private_ip.map(|a| a.to_string()).as_deref());
    names.group_set(x, &instance.groups);
    x.list("tagSet", std::iter::empty::<()>(), |_, ()| {});
}

/// Reservations are not modelled: each instance answers as its own.
fn reservation_id(instance: &InstanceId) -> String {
    format!("r-{}", instance.as_str().trim_start_matches("i-"))
}

async fn describe_instances(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DescribeInstances;
    let parsed = (|| Ok((query::instance_ids(p, "InstanceId")?, p.filters()?, p.page()?)))();
    let (ids, filters, page) = checked(e, op, parsed).await?;
    let page = e.describe_instances_filtered(&ids, &filters, &page).await?;
    let owner = e.account_id();
    let mut names = GroupNames::new(e);
    let mut x = Xml::new();
    x.list("reservationSet", &page.items, |x, instance| {
        x.text("reservationId", &reservation_id(&instance.id)).text("ownerId", &owner);
        names.group_set(x, &instance.groups);
        x.list("instancesSet", [instance], |x, i| instance_item(x, &mut names, i));
    });
    x.opt_text("nextToken", page.next_token.as_deref());
    Ok(x.into_string())
}

fn launch_request(e: &Emulator, p: &Params) -> Result<RunInstances, Fail> {
    p.required("ImageId")?;
    if let Some(subnet) = p.get("SubnetId") {
        return Err(Fail::new(
            codes::SUBNET_NOT_FOUND,
            format!("The subnet ID '{subnet}' does not exist (the emulator launches EC2-Classic instances only)"),
        ));
    }
    for list in ["NetworkInterface", "TagSpecification", "LaunchTemplate"] {
        if p.has_prefix(list) {
            return Err(unsupported(&format!("RunInstances with {list}")));
        }
    }
    let min: i64 = p.required_number("MinCount")?;
    let max: i64 = p.required_number("MaxCount")?;
    if min < 1 || max < min {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("MinCount ({min}) and MaxCount ({max}) must be at least 1, and MinCount at most MaxCount"),
        ));
    }
    let count = usize::try_from(max).unwrap_or(usize::MAX);
    if count > MAX_LAUNCH {
        return Err(Fail::new(
            codes::INSTANCE_LIMIT,
            format!("You have requested more instances ({max}) than the emulator launches at once ({MAX_LAUNCH})"),
        ));
    }
    let mut groups = query::group_ids(p, "SecurityGroupId")?;
    for name in p.list("SecurityGroup")? {
        groups.push(classic_group_named(e, &name)?);
    }
    Ok(RunInstances::classic(groups).count(count))
}

async fn run_instances(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::RunInstances;
    let request = checked(e, op, launch_request(e, p)).await?;
    let ids = e.run_instances(&request).await?;
    let instances: Vec<Instance> = ids.iter().filter_map(|id| e.peek_instance(id)).collect();
    let mut names = GroupNames::new(e);
    let mut x = Xml::new();
    x.text("reservationId", &ids.first().map(reservation_id).unwrap_or_default()).text("ownerId", &e.account_id());
    if let Some(first) = instances.first() {
        names.group_set(&mut x, &first.groups);
    }
    x.list("instancesSet", &instances, |x, i| instance_item(x, &mut names, i));
    Ok(x.into_string())
}

async fn change_states(e: &Emulator, op: Operation, p: &Params) -> Result<String, Ec2Error> {
    let ids = checked(e, op, query::instance_ids(p, "InstanceId")).await?;
    let changes: Vec<StateChange> = match op {
        Operation::StopInstances => e.stop_instances(&ids).await?,
        Operation::StartInstances => e.start_instances(&ids).await?,
        _ => e.terminate_instances(&ids).await?,
    };
    let mut x = Xml::new();
    x.list("instancesSet", &changes, |x, change| {
        x.text("instanceId", change.instance_id.as_str());
        xml::instance_state(x, "currentState", change.current);
        xml::instance_state(x, "previousState", change.previous);
    });
    Ok(x.into_string())
}

// ----- ClassicLink ---------------------------------------------------------------------

async fn describe_classic_link_instances(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DescribeClassicLinkInstances;
    let parsed = (|| Ok((query::instance_ids(p, "InstanceId")?, p.filters()?, p.page()?)))();
    let (ids, filters, page) = checked(e, op, parsed).await?;
    let page = e.describe_classic_link_instances_filtered(&ids, &filters, &page).await?;
    let mut names = GroupNames::new(e);
    let mut x = Xml::new();
    x.list("instancesSet", &page.items, |x, link: &Link| {
        x.text("instanceId", link.instance_id.as_str()).text("vpcId", link.vpc_id.as_str());
        names.group_set(x, &link.groups);
        x.list("tagSet", std::iter::empty::<()>(), |_, ()| {});
    });
    x.opt_text("nextToken", page.next_token.as_deref());
    Ok(x.into_string())
}

async fn attach_classic_link_vpc(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::AttachClassicLinkVpc;
    let parsed = (|| {
        Ok((
            p.required_id::<InstanceId>("InstanceId", codes::INSTANCE_ID_MALFORMED)?,
            p.required_id::<VpcId>("VpcId", codes::VPC_ID_MALFORMED)?,
            query::group_ids(p, "SecurityGroupId")?,
        ))
    })();
    let (instance, vpc, groups) = checked(e, op, parsed).await?;
    Ec2::attach_classic_link_vpc(e, &instance, &vpc, &groups).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

async fn detach_classic_link_vpc(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DetachClassicLinkVpc;
    let parsed = (|| {
        Ok((
            p.required_id::<InstanceId>("InstanceId", codes::INSTANCE_ID_MALFORMED)?,
            p.required_id::<VpcId>("VpcId", codes::VPC_ID_MALFORMED)?,
        ))
    })();
    let (instance, vpc) = checked(e, op, parsed).await?;
    Ec2::detach_classic_link_vpc(e, &instance, &vpc).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

async fn enable_vpc_classic_link(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::EnableVpcClassicLink;
    let vpc = checked(e, op, p.required_id::<VpcId>("VpcId", codes::VPC_ID_MALFORMED)).await?;
    Ec2::enable_vpc_classic_link(e, &vpc).await?;
    let mut x = Xml::new();
    x.boolean("return", true);
    Ok(x.into_string())
}

// ----- VPCs ----------------------------------------------------------------------------

/// A VPC's CIDR and tags, which the port's [`Vpc`] does not carry.
fn vpc_details(e: &Emulator, id: &VpcId) -> (Option<Ipv4Net>, BTreeMap<String, String>) {
    let shared = e.lock();
    shared.world.vpcs.get(id).map_or((None, BTreeMap::new()), |v| (Some(v.cidr), v.tags.clone()))
}

/// A filter on VPCs, applied to each page (EC2 may answer short pages too).
fn vpc_matches(
    filters: &[super::super::Filter],
    vpc: &Vpc,
    cidr: Option<Ipv4Net>,
    tags: &BTreeMap<String, String>,
) -> bool {
    filters.iter().all(|f| {
        let any = |value: Option<&str>| value.is_some_and(|v| f.values.iter().any(|w| w == v));
        match f.name.as_str() {
            "vpc-id" => any(Some(vpc.id.as_str())),
            "cidr" | "cidr-block-association.cidr-block" => any(cidr.map(|c| c.to_string()).as_deref()),
            "is-classic-link-enabled" => any(Some(if vpc.classic_link_enabled { "true" } else { "false" })),
            "tag-key" => tags.keys().any(|k| f.values.contains(k)),
            name => name.strip_prefix("tag:").is_some_and(|key| any(tags.get(key).map(String::as_str))),
        }
    })
}

fn vpc_filters(p: &Params, allowed: &[&str]) -> Result<Vec<super::super::Filter>, Fail> {
    let filters = p.filters()?;
    for filter in &filters {
        let tag = filter.name.strip_prefix("tag:").is_some_and(|k| !k.is_empty());
        if !tag && filter.name != "tag-key" && !allowed.contains(&filter.name.as_str()) {
            return Err(invalid_filter(&filter.name));
        }
    }
    Ok(filters)
}

async fn describe_vpcs(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DescribeVpcs;
    let allowed = ["vpc-id", "cidr", "cidr-block-association.cidr-block"];
    let parsed = (|| Ok((query::vpc_ids(p, "VpcId")?, vpc_filters(p, &allowed)?, p.page()?)))();
    let (ids, filters, page) = checked(e, op, parsed).await?;
    let page = e.describe_vpcs_page(&ids, &page).await?;
    let owner = e.account_id();
    let mut x = Xml::new();
    let vpcs: Vec<_> = page
        .items
        .iter()
        .map(|v| (v, vpc_details(e, &v.id)))
        .filter(|(v, (cidr, tags))| vpc_matches(&filters, v, *cidr, tags))
        .collect();
    x.list("vpcSet", vpcs, |x, (vpc, (cidr, tags))| vpc_item(x, &owner, &vpc.id, cidr, &tags));
    x.opt_text("nextToken", page.next_token.as_deref());
    Ok(x.into_string())
}

fn vpc_item(x: &mut Xml, owner: &str, id: &VpcId, cidr: Option<Ipv4Net>, tags: &BTreeMap<String, String>) {
    x.text("vpcId", id.as_str()).text("ownerId", owner).text("state", "available");
    x.opt_text("cidrBlock", cidr.map(|c| c.to_string()).as_deref());
    x.text("instanceTenancy", "default").boolean("isDefault", false);
    x.tags(tags);
}

async fn describe_vpc_classic_link(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::DescribeVpcClassicLink;
    let parsed = (|| Ok((query::vpc_ids(p, "VpcId")?, vpc_filters(p, &["is-classic-link-enabled"])?)))();
    let (ids, filters) = checked(e, op, parsed).await?;
    let vpcs = e.describe_vpc_classic_link_strict(&ids).await?;
    let vpcs: Vec<_> = vpcs
        .iter()
        .map(|v| (v, vpc_details(e, &v.id)))
        .filter(|(v, (cidr, tags))| vpc_matches(&filters, v, *cidr, tags))
        .collect();
    let mut x = Xml::new();
    x.list("vpcSet", vpcs, |x, (vpc, (_, tags))| {
        x.text("vpcId", vpc.id.as_str()).boolean("classicLinkEnabled", vpc.classic_link_enabled);
        x.tags(&tags);
    });
    Ok(x.into_string())
}

fn new_vpc(p: &Params) -> Result<VpcSpec, Fail> {
    let text = p.required("CidrBlock")?;
    let cidr: Ipv4Net = text.trim().parse().map_err(|_| {
        Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("Value ({text}) for parameter cidrBlock is invalid. This is not a valid CIDR block."),
        )
    })?;
    Ok(VpcSpec { id: None, cidr: Some(cidr), classic_link: false, tags: tag_specifications(p, "vpc")? })
}

async fn create_vpc(e: &Emulator, p: &Params) -> Result<String, Ec2Error> {
    let op = Operation::CreateVpc;
    let spec = checked(e, op, new_vpc(p)).await?;
    let id = e.request(op, move |world, now| world.create_vpc(now, spec)).await?;
    let (cidr, tags) = vpc_details(e, &id);
    let mut x = Xml::new();
    x.open("vpc");
    vpc_item(&mut x, &e.account_id(), &id, cidr, &tags);
    x.close("vpc");
    Ok(x.into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn permissions_read_groups_and_user_id_group_pairs_and_the_top_level_form() {
        let p = params(&[
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.FromPort", "443"),
            ("IpPermissions.1.ToPort", "443"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "203.0.113.0/24"),
            ("IpPermissions.1.IpRanges.1.Description", "office"),
            ("IpPermissions.1.Groups.1.GroupId", "sg-0a2"),
            ("IpPermissions.1.UserIdGroupPairs.1.GroupName", "app"),
            ("IpPermissions.1.Ipv6Ranges.1.CidrIpv6", "2001:db8::/32"),
            ("IpPermissions.1.PrefixListIds.1.PrefixListId", "pl-1"),
            ("IpProtocol", "udp"),
            ("FromPort", "53"),
            ("ToPort", "53"),
            ("CidrIp", "10.0.0.0/8"),
        ]);
        let permissions = ip_permissions(&p).unwrap();
        assert_eq!(permissions.len(), 2);
        let first = &permissions[0];
        assert_eq!((first.ip_protocol.as_str(), first.from_port, first.to_port), ("tcp", Some(443), Some(443)));
        assert_eq!(first.ip_ranges[0].description.as_deref(), Some("office"));
        assert_eq!(first.user_id_group_pairs.len(), 2);
        assert_eq!(first.user_id_group_pairs[1].group_name.as_deref(), Some("app"));
        assert_eq!(first.ipv6_ranges[0].cidr, "2001:db8::/32");
        assert_eq!(first.prefix_list_ids[0].prefix_list_id, "pl-1");
        assert_eq!(permissions[1].ip_ranges[0].cidr, "10.0.0.0/8");
    }

    #[test]
    fn a_permission_without_protocol_is_a_missing_parameter() {
        let p = params(&[("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8")]);
        assert_eq!(ip_permissions(&p).unwrap_err().code, codes::MISSING_PARAMETER);
        let legacy = params(&[("CidrIp", "10.0.0.0/8")]);
        assert_eq!(ip_permissions(&legacy).unwrap_err().code, codes::MISSING_PARAMETER);
    }

    #[test]
    fn tag_specifications_must_name_the_resource_type() {
        let p = params(&[
            ("TagSpecification.1.ResourceType", "security-group"),
            ("TagSpecification.1.Tag.1.Key", "owner"),
            ("TagSpecification.1.Tag.2.Key", "empty"),
            ("TagSpecification.1.Tag.1.Value", "me"),
        ]);
        let tags = tag_specifications(&p, "security-group").unwrap();
        assert_eq!(tags, BTreeMap::from([("empty".into(), String::new()), ("owner".into(), "me".into())]));
        assert_eq!(tag_specifications(&p, "vpc").unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn tags_on_resources_other_than_groups_are_unsupported_and_unknown_ids_invalid() {
        assert_eq!(tag_resources(&params(&[("ResourceId.1", "vpc-1")])).unwrap_err().code, codes::UNSUPPORTED);
        assert_eq!(tag_resources(&params(&[("ResourceId.1", "ami-1")])).unwrap_err().code, codes::INVALID_ID);
        assert_eq!(tag_resources(&params(&[("ResourceId.1", "sg-1")])).unwrap().len(), 1);
    }

    #[test]
    fn launches_check_counts_and_refuse_subnets() {
        let e = Emulator::default();
        let ok = params(&[("ImageId", "ami-1"), ("MinCount", "2"), ("MaxCount", "3")]);
        assert_eq!(launch_request(&e, &ok).unwrap().count, 3);
        let cases = [
            (&[("MinCount", "1"), ("MaxCount", "1")][..], codes::MISSING_PARAMETER),
            (&[("ImageId", "ami-1"), ("MaxCount", "1")], codes::MISSING_PARAMETER),
            (&[("ImageId", "ami-1"), ("MinCount", "3"), ("MaxCount", "2")], codes::INVALID_PARAMETER_VALUE),
            (&[("ImageId", "ami-1"), ("MinCount", "x"), ("MaxCount", "2")], codes::INVALID_PARAMETER_VALUE),
            (
                &[("ImageId", "ami-1"), ("MinCount", "1"), ("MaxCount", "1"), ("SubnetId", "subnet-1")],
                codes::SUBNET_NOT_FOUND,
            ),
            (&[("ImageId", "ami-1"), ("MinCount", "1"), ("MaxCount", "5000")], codes::INSTANCE_LIMIT),
        ];
        for (pairs, code) in cases {
            assert_eq!(launch_request(&e, &params(pairs)).unwrap_err().code, code, "{pairs:?}");
        }
    }
}
