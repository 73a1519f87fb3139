//! SDK shapes ↔ domain values: groups, grants, instances, links and VPCs in;
//! grants, tags and filters out. A value EC2 should never send (a missing
//! id, an unknown protocol) is a [`Malformed`] naming the field.

use std::collections::BTreeMap;
use std::fmt;

use aws_sdk_ec2::types as sdk;

use super::classify::{Malformed, parse_id, required};
use crate::ec2::{GroupFilter, InstanceFilter, InterfaceFilter, LinkFilter, PrefixListFilter};
use crate::model::{
    Grant, GroupId, Instance, InstanceId, InstanceState, Link, ModelError, NetworkInterface, Peer, Ports, PrefixList,
    PrefixListEntry, PrefixListId, Protocol, SecurityGroup, Vpc, VpcId, canonical_ipv4, canonical_ipv6,
};

pub(super) fn id_strings<T: fmt::Display>(ids: &[T]) -> Vec<String> {
    ids.iter().map(ToString::to_string).collect()
}

// --- SDK shapes → domain ----------------------------------------------------

pub(super) fn tags_from_sdk(tags: &[sdk::Tag]) -> Result<BTreeMap<String, String>, Malformed> {
    tags.iter()
        .map(|t| Ok((required(t.key(), "Tags[].Key")?.to_owned(), t.value().unwrap_or_default().to_owned())))
        .collect()
}

pub(super) fn tags_to_sdk(tags: &BTreeMap<String, String>) -> Vec<sdk::Tag> {
    tags.iter().map(|(k, v)| sdk::Tag::builder().key(k).value(v).build()).collect()
}

fn optional_vpc(value: Option<&str>, field: &str) -> Result<Option<VpcId>, Malformed> {
    // EC2-Classic groups and instances have no `VpcId` (or an empty one).
    value.filter(|v| !v.is_empty()).map(|v| VpcId::try_new(v).map_err(|e| Malformed::new(field, e))).transpose()
}

pub(super) fn security_group_from_sdk(group: &sdk::SecurityGroup) -> Result<SecurityGroup, Malformed> {
    let id = parse_id(group.group_id(), "SecurityGroups[].GroupId", GroupId::try_new)?;
    let at = format!("SecurityGroups[{id}]");
    let inner = || -> Result<SecurityGroup, Malformed> {
        // Same-account references lose their owner only when we know the
        // account; EC2 always says, so an answer without it is malformed.
        let owner_id = required(group.owner_id(), "OwnerId")?.to_owned();
        let mut ingress = Vec::new();
        for permission in group.ip_permissions() {
            ingress.extend(grants_from_permission(permission, &owner_id)?);
        }
        let mut egress = Vec::new();
        for permission in group.ip_permissions_egress() {
            egress.extend(grants_from_permission(permission, &owner_id)?);
        }
        Ok(SecurityGroup {
            id: id.clone(),
            name: required(group.group_name(), "GroupName")?.to_owned(),
            description: group.description().unwrap_or_default().to_owned(),
            vpc_id: optional_vpc(group.vpc_id(), "VpcId")?,
            owner_id,
            tags: tags_from_sdk(group.tags())?,
            ingress,
            egress,
        })
    };
    inner().map_err(|m| m.within(&at))
}

/// One EC2 `IpPermission` → one grant per IPv4 range, IPv6 range, prefix
/// list and group pair. `own_account` is the owner of the group holding the
/// rule: references to groups of that account lose their owner.
fn grants_from_permission(permission: &sdk::IpPermission, own_account: &str) -> Result<Vec<Grant>, Malformed> {
    let protocol = required(permission.ip_protocol(), "IpPermissions[].IpProtocol")?;
    let grant = |peer: Peer, description: Option<&str>| {
        Grant::from_ec2(
            protocol,
            permission.from_port(),
            permission.to_port(),
            peer,
            description.map(str::to_owned),
            Some(own_account),
        )
        .map_err(|e| {
            let field = match e {
                ModelError::BadPorts { .. } => "IpPermissions[].FromPort/ToPort",
                _ => "IpPermissions[].IpProtocol",
            };
            Malformed::new(field, e)
        })
    };
    let mut grants = Vec::new();
    for range in permission.ip_ranges() {
        let field = "IpPermissions[].IpRanges[].CidrIp";
        let net = canonical_ipv4(required(range.cidr_ip(), field)?).map_err(|e| Malformed::new(field, e))?;
        grants.push(grant(Peer::Ipv4(net), range.description())?);
    }
    for range in permission.ipv6_ranges() {
        let field = "IpPermissions[].Ipv6Ranges[].CidrIpv6";
        let net = canonical_ipv6(required(range.cidr_ipv6(), field)?).map_err(|e| Malformed::new(field, e))?;
        grants.push(grant(Peer::Ipv6(net), range.description())?);
    }
    for list in permission.prefix_list_ids() {
        let id =
            parse_id(list.prefix_list_id(), "IpPermissions[].PrefixListIds[].PrefixListId", PrefixListId::try_new)?;
        grants.push(grant(Peer::PrefixList(id), list.description())?);
    }
    for pair in permission.user_id_group_pairs() {
        let group = parse_id(pair.group_id(), "IpPermissions[].UserIdGroupPairs[].GroupId", GroupId::try_new)?;
        let owner = pair.user_id().map(str::to_owned);
        grants.push(grant(Peer::Group { group, owner }, pair.description())?);
    }
    Ok(grants)
}

pub(super) fn instance_from_sdk(instance: &sdk::Instance) -> Result<Instance, Malformed> {
    let id = parse_id(instance.instance_id(), "Reservations[].Instances[].InstanceId", InstanceId::try_new)?;
    let inner = || -> Result<Instance, Malformed> {
        let state_name = instance.state().and_then(|s| s.name()).map(sdk::InstanceStateName::as_str);
        let state_name = required(state_name, "State.Name")?;
        let state = InstanceState::from_ec2(state_name)
            .ok_or_else(|| Malformed::new("State.Name", format!("{state_name:?} is not an instance state")))?;
        let groups = instance
            .security_groups()
            .iter()
            .map(|g| parse_id(g.group_id(), "SecurityGroups[].GroupId", GroupId::try_new))
            .collect::<Result<_, _>>()?;
        Ok(Instance {
            id: id.clone(),
            state,
            vpc_id: optional_vpc(instance.vpc_id(), "VpcId")?,
            groups,
            private_ip: optional_address(instance.private_ip_address(), "PrivateIpAddress")?,
        })
    };
    inner().map_err(|m| m.within(&format!("Reservations[].Instances[{id}]")))
}

fn optional_address(value: Option<&str>, field: &str) -> Result<Option<std::net::Ipv4Addr>, Malformed> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().map_err(|_| Malformed::new(field, format!("{v:?} is not an IPv4 address"))))
        .transpose()
}

pub(super) fn prefix_list_from_sdk(list: &sdk::ManagedPrefixList) -> Result<PrefixList, Malformed> {
    let id = parse_id(list.prefix_list_id(), "PrefixLists[].PrefixListId", PrefixListId::try_new)?;
    let inner = || -> Result<PrefixList, Malformed> {
        // An AWS-owned list may come without MaxEntries (unknown: 0).
        let aws_owned = list.owner_id() == Some(crate::model::AWS_PREFIX_LIST_OWNER);
        let max_entries = match list.max_entries() {
            Some(max) => max,
            None if aws_owned => 0,
            None => return Err(Malformed::new("MaxEntries", "missing")),
        };
        let max_entries =
            u32::try_from(max_entries).map_err(|_| Malformed::new("MaxEntries", format!("{max_entries} < 0")))?;
        // AWS-owned lists have no version; the daemon never modifies them.
        let version = list.version().unwrap_or_default();
        Ok(PrefixList {
            id: id.clone(),
            name: list.prefix_list_name().unwrap_or_default().to_owned(),
            address_family: required(list.address_family(), "AddressFamily")?.to_owned(),
            max_entries,
            version: u64::try_from(version).map_err(|_| Malformed::new("Version", format!("{version} < 0")))?,
            state: list.state().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            state_message: list.state_message().map(str::to_owned),
            owner_id: required(list.owner_id(), "OwnerId")?.to_owned(),
            tags: tags_from_sdk(list.tags())?,
        })
    };
    inner().map_err(|m| m.within(&format!("PrefixLists[{id}]")))
}

pub(super) fn prefix_list_entry_from_sdk(entry: &sdk::PrefixListEntry) -> Result<PrefixListEntry, Malformed> {
    let field = "Entries[].Cidr";
    let text = required(entry.cidr(), field)?;
    let cidr: ipnet::IpNet = text.parse().map_err(|_| Malformed::new(field, format!("{text:?} is not a CIDR")))?;
    Ok(PrefixListEntry {
        cidr: cidr.trunc(),
        description: entry.description().filter(|d| !d.is_empty()).map(str::to_owned),
    })
}

pub(super) fn prefix_list_entries_to_sdk(entries: &[PrefixListEntry]) -> Vec<sdk::AddPrefixListEntry> {
    entries
        .iter()
        .map(|e| {
            sdk::AddPrefixListEntry::builder().cidr(e.cidr.to_string()).set_description(e.description.clone()).build()
        })
        .collect()
}

pub(super) fn interface_from_sdk(interface: &sdk::NetworkInterface) -> Result<NetworkInterface, Malformed> {
    let id = required(interface.network_interface_id(), "NetworkInterfaces[].NetworkInterfaceId")?.to_owned();
    let inner = || -> Result<NetworkInterface, Malformed> {
        let instance_id = interface
            .attachment()
            .and_then(|a| a.instance_id())
            .filter(|i| !i.is_empty())
            .map(|i| InstanceId::try_new(i).map_err(|e| Malformed::new("Attachment.InstanceId", e)))
            .transpose()?;
        Ok(NetworkInterface {
            id: id.clone(),
            vpc_id: parse_id(interface.vpc_id(), "VpcId", VpcId::try_new)?,
            status: interface.status().map(|s| s.as_str().to_owned()).unwrap_or_default(),
            instance_id,
            groups: interface
                .groups()
                .iter()
                .map(|g| parse_id(g.group_id(), "Groups[].GroupId", GroupId::try_new))
                .collect::<Result<_, _>>()?,
            private_ip: optional_address(interface.private_ip_address(), "PrivateIpAddress")?,
        })
    };
    inner().map_err(|m| m.within(&format!("NetworkInterfaces[{id}]")))
}

pub(super) fn link_from_sdk(link: &sdk::ClassicLinkInstance) -> Result<Link, Malformed> {
    let instance_id = parse_id(link.instance_id(), "Instances[].InstanceId", InstanceId::try_new)?;
    let inner = || -> Result<Link, Malformed> {
        Ok(Link {
            instance_id: instance_id.clone(),
            vpc_id: parse_id(link.vpc_id(), "VpcId", VpcId::try_new)?,
            groups: link
                .groups()
                .iter()
                .map(|g| parse_id(g.group_id(), "Groups[].GroupId", GroupId::try_new))
                .collect::<Result<_, _>>()?,
        })
    };
    inner().map_err(|m| m.within(&format!("Instances[{instance_id}]")))
}

pub(super) fn vpc_from_sdk(vpc: &sdk::VpcClassicLink) -> Result<Vpc, Malformed> {
    Ok(Vpc {
        id: parse_id(vpc.vpc_id(), "Vpcs[].VpcId", VpcId::try_new)?,
        classic_link_enabled: vpc.classic_link_enabled().unwrap_or(false),
    })
}

// --- domain → SDK shapes ----------------------------------------------------

/// Whether rule descriptions go into the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Descriptions {
    /// Authorize and description updates: the description is the point.
    Include,
    /// Revoke: EC2 matches rules without it; sending it could only mismatch.
    Omit,
}

/// The peers of one (protocol, ports) permission, in input order.
#[derive(Default)]
struct PermissionPeers {
    ipv4: Vec<sdk::IpRange>,
    ipv6: Vec<sdk::Ipv6Range>,
    prefix_lists: Vec<sdk::PrefixListId>,
    groups: Vec<sdk::UserIdGroupPair>,
}

/// Grants → `IpPermissions`, one per (protocol, ports), so one request
/// carries every grant of a batch (docs/architecture.md, "Grants"). Ordered by (protocol,
/// ports); peers keep their input order.
pub(super) fn permissions_from_grants(grants: &[Grant], descriptions: Descriptions) -> Vec<sdk::IpPermission> {
    let mut by_rule: BTreeMap<(Protocol, Ports), PermissionPeers> = BTreeMap::new();
    for grant in grants {
        let description = match descriptions {
            Descriptions::Include => grant.description.clone(),
            Descriptions::Omit => None,
        };
        let peers = by_rule.entry((grant.key.protocol, grant.key.ports)).or_default();
        match &grant.key.peer {
            Peer::Ipv4(net) => {
                peers.ipv4.push(sdk::IpRange::builder().cidr_ip(net.to_string()).set_description(description).build())
            }
            Peer::Ipv6(net) => peers
                .ipv6
                .push(sdk::Ipv6Range::builder().cidr_ipv6(net.to_string()).set_description(description).build()),
            Peer::PrefixList(id) => peers
                .prefix_lists
                .push(sdk::PrefixListId::builder().prefix_list_id(id.as_str()).set_description(description).build()),
            Peer::Group { group, owner } => peers.groups.push(
                sdk::UserIdGroupPair::builder()
                    .group_id(group.as_str())
                    .set_user_id(owner.clone())
                    .set_description(description)
                    .build(),
            ),
        }
    }
    by_rule
        .into_iter()
        .map(|((protocol, ports), peers)| {
            let (from_port, to_port) = ports.as_ec2();
            sdk::IpPermission::builder()
                .ip_protocol(protocol.as_ec2())
                .set_from_port(from_port)
                .set_to_port(to_port)
                .set_ip_ranges(Some(peers.ipv4).filter(|v| !v.is_empty()))
                .set_ipv6_ranges(Some(peers.ipv6).filter(|v| !v.is_empty()))
                .set_prefix_list_ids(Some(peers.prefix_lists).filter(|v| !v.is_empty()))
                .set_user_id_group_pairs(Some(peers.groups).filter(|v| !v.is_empty()))
                .build()
        })
        .collect()
}

pub(super) fn filter(name: impl Into<String>, values: Vec<String>) -> Option<sdk::Filter> {
    // An empty field does not filter (the port's contract); EC2 would
    // reject a filter without values.
    (!values.is_empty()).then(|| sdk::Filter::builder().name(name).set_values(Some(values)).build())
}

pub(super) fn group_filters(f: &GroupFilter) -> Vec<sdk::Filter> {
    [
        filter("group-id", id_strings(&f.group_ids)),
        filter("group-name", f.group_names.clone()),
        filter("vpc-id", id_strings(&f.vpc_ids)),
        filter("tag-key", f.tag_keys.clone()),
    ]
    .into_iter()
    .chain(f.tags.iter().map(|(key, values)| filter(format!("tag:{key}"), values.clone())))
    .flatten()
    .collect()
}

pub(super) fn instance_filters(f: &InstanceFilter) -> Vec<sdk::Filter> {
    [
        filter("instance-id", id_strings(&f.instance_ids)),
        filter("instance.group-id", id_strings(&f.group_ids)),
        filter("instance-state-name", f.states.iter().map(|s| s.as_ec2().to_owned()).collect()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub(super) fn prefix_list_filters(f: &PrefixListFilter) -> Vec<sdk::Filter> {
    [
        filter("prefix-list-id", id_strings(&f.prefix_list_ids)),
        filter("prefix-list-name", f.names.clone()),
        filter("owner-id", f.owner_ids.clone()),
        filter("tag-key", f.tag_keys.clone()),
    ]
    .into_iter()
    .chain(f.tags.iter().map(|(key, values)| filter(format!("tag:{key}"), values.clone())))
    .flatten()
    .collect()
}

pub(super) fn interface_filters(f: &InterfaceFilter) -> Vec<sdk::Filter> {
    [
        filter("group-id", id_strings(&f.group_ids)),
        filter("vpc-id", id_strings(&f.vpc_ids)),
        filter("attachment.instance-id", id_strings(&f.instance_ids)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub(super) fn link_filters(f: &LinkFilter) -> Vec<sdk::Filter> {
    [
        filter("instance-id", id_strings(&f.instance_ids)),
        filter("group-id", id_strings(&f.group_ids)),
        filter("vpc-id", id_strings(&f.vpc_ids)),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ec2::{ErrorKind, MALFORMED_RESPONSE, Operation};

    const OWN: &str = "111122223333";
    const OTHER: &str = "210987654321";

    fn sg(id: &str) -> GroupId {
        GroupId::try_new(id).unwrap()
    }

    fn grant(protocol: Protocol, ports: Ports, peer: Peer, description: Option<&str>) -> Grant {
        Grant::new(protocol, ports, peer, description.map(str::to_owned))
    }

    fn v4(cidr: &str) -> Peer {
        Peer::Ipv4(canonical_ipv4(cidr).unwrap())
    }

    fn v6(cidr: &str) -> Peer {
        Peer::Ipv6(canonical_ipv6(cidr).unwrap())
    }

    fn group_peer(id: &str, owner: Option<&str>) -> Peer {
        Peer::Group { group: sg(id), owner: owner.map(str::to_owned) }
    }

    fn tcp(port: u16) -> Ports {
        Ports::Range { from: port, to: port }
    }

    fn all_grants(permissions: &[sdk::IpPermission]) -> BTreeSet<Grant> {
        permissions.iter().flat_map(|p| grants_from_permission(p, OWN).unwrap()).collect()
    }

    #[test]
    fn one_ip_permission_becomes_one_grant_per_peer_in_canonical_form() {
        let permission = sdk::IpPermission::builder()
            .ip_protocol("6")
            .from_port(443)
            .to_port(443)
            .ip_ranges(sdk::IpRange::builder().cidr_ip("10.1.2.3/8").description("office").build())
            .ip_ranges(sdk::IpRange::builder().cidr_ip("203.0.113.7").build())
            .ipv6_ranges(sdk::Ipv6Range::builder().cidr_ipv6("2001:DB8::1/32").description("").build())
            .prefix_list_ids(sdk::PrefixListId::builder().prefix_list_id("pl-0a1").build())
            .user_id_group_pairs(sdk::UserIdGroupPair::builder().group_id("sg-0a2").user_id(OWN).build())
            .user_id_group_pairs(
                sdk::UserIdGroupPair::builder().group_id("sg-843f59ed").user_id("amazon-elb").description("lb").build(),
            )
            .build();
        let grants = grants_from_permission(&permission, OWN).unwrap();
        let https = |peer, d| grant(Protocol::Tcp, tcp(443), peer, d);
        assert_eq!(
            grants,
            vec![
                https(v4("10.0.0.0/8"), Some("office")),
                https(v4("203.0.113.7/32"), None),
                https(v6("2001:db8::/32"), None),
                https(Peer::PrefixList(PrefixListId::try_new("pl-0a1").unwrap()), None),
                https(group_peer("sg-0a2", None), None),
                https(group_peer("sg-843f59ed", Some("amazon-elb")), Some("lb")),
            ]
        );
    }

    #[test]
    fn grants_round_trip_through_ip_permissions() {
        let grants: BTreeSet<Grant> = [
            grant(Protocol::Tcp, tcp(443), v4("0.0.0.0/0"), Some("web")),
            grant(Protocol::Tcp, tcp(443), v6("::/0"), None),
            grant(Protocol::Tcp, Ports::Range { from: 0, to: 65535 }, v4("10.0.0.0/8"), None),
            grant(Protocol::Udp, Ports::Range { from: 1000, to: 2000 }, group_peer("sg-1", None), Some("self")),
            grant(Protocol::Icmp, Ports::Icmp { icmp_type: 8, code: -1 }, v4("198.51.100.0/24"), None),
            grant(Protocol::Icmp, Ports::Icmp { icmp_type: -1, code: -1 }, v4("198.51.100.0/24"), None),
            grant(Protocol::Icmpv6, Ports::Icmp { icmp_type: 128, code: 0 }, v6("2001:db8::/32"), None),
            grant(Protocol::All, Ports::None, group_peer("sg-2", Some(OTHER)), None),
            grant(Protocol::Number(50), Ports::None, v4("192.0.2.0/24"), Some("esp")),
            grant(Protocol::Tcp, tcp(22), Peer::PrefixList(PrefixListId::try_new("pl-1").unwrap()), Some("vpn")),
        ]
        .into();
        let input: Vec<Grant> = grants.iter().cloned().collect();
        let permissions = permissions_from_grants(&input, Descriptions::Include);
        assert_eq!(all_grants(&permissions), grants);
    }

    #[test]
    fn grants_of_one_protocol_and_port_range_share_one_ip_permission() {
        let grants = [
            grant(Protocol::Tcp, tcp(443), v4("10.0.0.0/8"), None),
            grant(Protocol::Tcp, tcp(80), v4("10.0.0.0/8"), None),
            grant(Protocol::Tcp, tcp(443), group_peer("sg-1", None), None),
            grant(Protocol::Tcp, tcp(443), v4("192.0.2.0/24"), Some("b")),
            grant(Protocol::Udp, tcp(443), v4("10.0.0.0/8"), None),
        ];
        let permissions = permissions_from_grants(&grants, Descriptions::Include);
        let shape: Vec<_> = permissions
            .iter()
            .map(|p| {
                let cidrs: Vec<&str> = p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect();
                (p.ip_protocol().unwrap(), p.from_port(), p.to_port(), cidrs, p.user_id_group_pairs().len())
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("tcp", Some(80), Some(80), vec!["10.0.0.0/8"], 0),
                ("tcp", Some(443), Some(443), vec!["10.0.0.0/8", "192.0.2.0/24"], 1),
                ("udp", Some(443), Some(443), vec!["10.0.0.0/8"], 0),
            ]
        );
        // Peers EC2 would reject as empty lists are left out entirely.
        assert!(permissions[0].ipv6_ranges.is_none() && permissions[0].user_id_group_pairs.is_none());
    }

    #[test]
    fn port_less_protocols_are_sent_without_ports_and_icmp_with_type_and_code() {
        let grants = [
            grant(Protocol::All, Ports::None, v4("10.0.0.0/8"), None),
            grant(Protocol::Number(50), Ports::None, v4("10.0.0.0/8"), None),
            grant(Protocol::Icmp, Ports::Icmp { icmp_type: -1, code: -1 }, v4("10.0.0.0/8"), None),
        ];
        let sent: Vec<_> = permissions_from_grants(&grants, Descriptions::Include)
            .iter()
            .map(|p| (p.ip_protocol().unwrap().to_owned(), p.from_port(), p.to_port()))
            .collect();
        assert_eq!(
            sent,
            vec![("-1".into(), None, None), ("icmp".into(), Some(-1), Some(-1)), ("50".into(), None, None)]
        );
    }

    #[test]
    fn ec2_protocol_spellings_are_canonicalised_on_the_way_in() {
        let read = |protocol: &str, from: Option<i32>, to: Option<i32>| {
            let p = sdk::IpPermission::builder()
                .ip_protocol(protocol)
                .set_from_port(from)
                .set_to_port(to)
                .ip_ranges(sdk::IpRange::builder().cidr_ip("10.0.0.0/8").build())
                .build();
            grants_from_permission(&p, OWN).unwrap().remove(0).key
        };
        assert_eq!(read("-1", Some(-1), Some(-1)), read("-1", None, None));
        assert_eq!(read("6", Some(22), Some(22)), read("tcp", Some(22), Some(22)));
        assert_eq!(read("1", Some(-1), Some(-1)).protocol, Protocol::Icmp);
        assert_eq!(read("58", Some(-1), Some(-1)).protocol, Protocol::Icmpv6);
        assert_eq!(read("50", Some(-1), Some(-1)).ports, Ports::None);
        assert_eq!(read("tcp", Some(-1), Some(-1)).ports, Ports::Range { from: 0, to: 65535 });
    }

    #[test]
    fn revocations_carry_no_descriptions_and_updates_do() {
        let grants = [
            grant(Protocol::Tcp, tcp(443), v4("10.0.0.0/8"), Some("office")),
            grant(Protocol::Tcp, tcp(443), group_peer("sg-1", Some(OTHER)), Some("peer")),
        ];
        let revoke = permissions_from_grants(&grants, Descriptions::Omit);
        assert_eq!(revoke[0].ip_ranges()[0].description(), None);
        assert_eq!(revoke[0].user_id_group_pairs()[0].description(), None);
        assert_eq!(revoke[0].user_id_group_pairs()[0].user_id(), Some(OTHER));
        let update = permissions_from_grants(&grants, Descriptions::Include);
        assert_eq!(update[0].ip_ranges()[0].description(), Some("office"));
        assert_eq!(update[0].user_id_group_pairs()[0].description(), Some("peer"));
    }

    fn sdk_group() -> sdk::builders::SecurityGroupBuilder {
        sdk::SecurityGroup::builder()
            .group_id("sg-0a1")
            .group_name("web")
            .description("Web tier")
            .owner_id(OWN)
            .tags(sdk::Tag::builder().key("classiclinkmirror:linkToVPC").value("vpc-9f2").build())
            .tags(sdk::Tag::builder().key("empty").build())
            .ip_permissions(
                sdk::IpPermission::builder()
                    .ip_protocol("tcp")
                    .from_port(8080)
                    .to_port(8080)
                    .user_id_group_pairs(sdk::UserIdGroupPair::builder().group_id("sg-0a2").user_id(OWN).build())
                    .build(),
            )
    }

    #[test]
    fn a_group_without_vpc_id_is_a_classic_group_with_its_tags_and_rules() {
        let group = security_group_from_sdk(&sdk_group().build()).unwrap();
        assert!(group.is_classic());
        assert_eq!(group.owner_id, OWN);
        assert_eq!(group.tags.get("classiclinkmirror:linkToVPC").map(String::as_str), Some("vpc-9f2"));
        assert_eq!(group.tags.get("empty").map(String::as_str), Some(""));
        assert_eq!(group.ingress, vec![grant(Protocol::Tcp, tcp(8080), group_peer("sg-0a2", None), None)]);
        let in_vpc = security_group_from_sdk(&sdk_group().vpc_id("vpc-9f2").build()).unwrap();
        assert_eq!(in_vpc.vpc_id, Some(VpcId::try_new("vpc-9f2").unwrap()));
    }

    fn malformed(result: Result<impl fmt::Debug, Malformed>) -> String {
        let error = result.unwrap_err().error(Operation::DescribeSecurityGroups);
        assert_eq!(error.code, MALFORMED_RESPONSE);
        assert_eq!(error.kind, ErrorKind::Fatal);
        error.message
    }

    #[test]
    fn malformed_groups_are_fatal_errors_naming_the_field() {
        let rule = |p: sdk::IpPermission| security_group_from_sdk(&sdk_group().ip_permissions(p).build());
        let cidr = |c: &str| sdk::IpRange::builder().cidr_ip(c).build();
        let cases = [
            (
                malformed(security_group_from_sdk(&sdk::SecurityGroup::builder().group_name("x").build())),
                "malformed response: SecurityGroups[].GroupId: missing",
            ),
            (
                malformed(security_group_from_sdk(&sdk_group().group_id("sg-XYZ").build())),
                r#"malformed response: SecurityGroups[].GroupId: "sg-XYZ" is not a security group id"#,
            ),
            (
                malformed(security_group_from_sdk(&sdk_group().set_owner_id(None).build())),
                "malformed response: SecurityGroups[sg-0a1].OwnerId: missing",
            ),
            (
                malformed(rule(sdk::IpPermission::builder().ip_ranges(cidr("10.0.0.0/8")).build())),
                "malformed response: SecurityGroups[sg-0a1].IpPermissions[].IpProtocol: missing",
            ),
            (
                malformed(rule(sdk::IpPermission::builder().ip_protocol("gre").ip_ranges(cidr("10.0.0.0/8")).build())),
                r#"malformed response: SecurityGroups[sg-0a1].IpPermissions[].IpProtocol: "gre" is not an IP protocol (name, number 0-255, or -1)"#,
            ),
            (
                malformed(rule(sdk::IpPermission::builder().ip_protocol("tcp").ip_ranges(cidr("10.0.0.0/8")).build())),
                "malformed response: SecurityGroups[sg-0a1].IpPermissions[].FromPort/ToPort: invalid port range (FromPort none, ToPort none) for protocol tcp",
            ),
            (
                malformed(rule(sdk::IpPermission::builder().ip_protocol("-1").ip_ranges(cidr("10.0.0.300/8")).build())),
                r#"malformed response: SecurityGroups[sg-0a1].IpPermissions[].IpRanges[].CidrIp: "10.0.0.300/8" is not a CIDR block"#,
            ),
            (
                malformed(rule(
                    sdk::IpPermission::builder()
                        .ip_protocol("-1")
                        .user_id_group_pairs(sdk::UserIdGroupPair::builder().group_name("lb").build())
                        .build(),
                )),
                "malformed response: SecurityGroups[sg-0a1].IpPermissions[].UserIdGroupPairs[].GroupId: missing",
            ),
            (
                malformed(security_group_from_sdk(&sdk_group().tags(sdk::Tag::builder().value("v").build()).build())),
                "malformed response: SecurityGroups[sg-0a1].Tags[].Key: missing",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn instances_links_and_vpcs_convert_and_reject_what_they_cannot_read() {
        let instance = |state: &str| {
            sdk::Instance::builder()
                .instance_id("i-0b3")
                .state(sdk::InstanceState::builder().name(sdk::InstanceStateName::from(state)).build())
                .security_groups(sdk::GroupIdentifier::builder().group_id("sg-0a1").group_name("web").build())
                .build()
        };
        let classic = instance_from_sdk(&instance("running")).unwrap();
        assert_eq!(classic.state, InstanceState::Running);
        assert_eq!(classic.vpc_id, None);
        assert_eq!(classic.groups, BTreeSet::from([sg("sg-0a1")]));
        assert_eq!(instance_from_sdk(&instance("shutting-down")).unwrap().state, InstanceState::ShuttingDown);
        assert_eq!(
            malformed(instance_from_sdk(&instance("hibernating"))),
            r#"malformed response: Reservations[].Instances[i-0b3].State.Name: "hibernating" is not an instance state"#
        );

        let link = sdk::ClassicLinkInstance::builder()
            .instance_id("i-0b3")
            .vpc_id("vpc-9f2")
            .groups(sdk::GroupIdentifier::builder().group_id("sg-77c").build())
            .groups(sdk::GroupIdentifier::builder().group_id("sg-77d").build())
            .build();
        let link = link_from_sdk(&link).unwrap();
        assert_eq!(link.vpc_id.as_str(), "vpc-9f2");
        assert_eq!(link.groups, BTreeSet::from([sg("sg-77c"), sg("sg-77d")]));
        assert_eq!(
            malformed(link_from_sdk(&sdk::ClassicLinkInstance::builder().instance_id("i-0b3").build())),
            "malformed response: Instances[i-0b3].VpcId: missing"
        );

        let vpc = vpc_from_sdk(&sdk::VpcClassicLink::builder().vpc_id("vpc-9f2").classic_link_enabled(true).build());
        assert_eq!(vpc.unwrap(), Vpc { id: VpcId::try_new("vpc-9f2").unwrap(), classic_link_enabled: true });
        let unknown = vpc_from_sdk(&sdk::VpcClassicLink::builder().vpc_id("vpc-1").build()).unwrap();
        assert!(!unknown.classic_link_enabled);
    }

    fn filters(list: &[sdk::Filter]) -> Vec<(String, Vec<String>)> {
        list.iter().map(|f| (f.name().unwrap().to_owned(), f.values().to_vec())).collect()
    }

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn port_filters_become_ec2_filters_and_empty_fields_do_not_filter() {
        assert!(group_filters(&GroupFilter::default()).is_empty());
        let filter = GroupFilter {
            group_ids: vec![sg("sg-1"), sg("sg-2")],
            group_names: strings(&["web"]),
            vpc_ids: vec![VpcId::try_new("vpc-1").unwrap()],
            tag_keys: strings(&["k"]),
            tags: BTreeMap::from([("env".to_owned(), strings(&["prod", "stage"])), ("none".to_owned(), vec![])]),
        };
        assert_eq!(
            filters(&group_filters(&filter)),
            vec![
                ("group-id".into(), strings(&["sg-1", "sg-2"])),
                ("group-name".into(), strings(&["web"])),
                ("vpc-id".into(), strings(&["vpc-1"])),
                ("tag-key".into(), strings(&["k"])),
                ("tag:env".into(), strings(&["prod", "stage"])),
            ]
        );
        let instances = InstanceFilter {
            instance_ids: vec![InstanceId::try_new("i-1").unwrap()],
            group_ids: vec![sg("sg-1")],
            states: vec![InstanceState::Pending, InstanceState::ShuttingDown],
        };
        assert_eq!(
            filters(&instance_filters(&instances)),
            vec![
                ("instance-id".into(), strings(&["i-1"])),
                ("instance.group-id".into(), strings(&["sg-1"])),
                ("instance-state-name".into(), strings(&["pending", "shutting-down"])),
            ]
        );
        let links = LinkFilter { vpc_ids: vec![VpcId::try_new("vpc-1").unwrap()], ..LinkFilter::default() };
        assert_eq!(filters(&link_filters(&links)), vec![("vpc-id".into(), strings(&["vpc-1"]))]);
    }
}
