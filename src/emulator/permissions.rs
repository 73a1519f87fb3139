//! EC2's `IpPermission` shape — one protocol and port range with any number
//! of sources — as the Query API carries it, and its conversion to and from
//! the one-source [`Grant`]s the engine stores. The HTTP server parses
//! `IpPermissions.N.*` into these and renders describes from them.

use std::collections::BTreeMap;

use crate::model::{Grant, GroupId, Peer, Ports, PrefixListId, Protocol, canonical_ipv4, canonical_ipv6};

use super::codes;
use super::state::Fail;

/// One CIDR source with its rule description.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct CidrSource {
    /// The CIDR as sent (canonicalised on the way in).
    pub cidr: String,
    /// Rule description.
    pub description: Option<String>,
}

/// One prefix-list source.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct PrefixListSource {
    /// `pl-…` id.
    pub prefix_list_id: String,
    /// Rule description.
    pub description: Option<String>,
}

/// One security-group source (`UserIdGroupPair`).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupSource {
    /// Referenced group id (`GroupId`); EC2-Classic requests may give
    /// `group_name` instead.
    pub group_id: Option<String>,
    /// Referenced group name (EC2-Classic only, same account).
    pub group_name: Option<String>,
    /// Owning account (`UserId`); absent or our own account means same account.
    pub user_id: Option<String>,
    /// Rule description.
    pub description: Option<String>,
}

/// EC2's `IpPermission`: a protocol, a port range and its sources.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct IpPermission {
    /// `IpProtocol`: name, number or `-1`.
    pub ip_protocol: String,
    /// `FromPort` (ICMP type).
    pub from_port: Option<i32>,
    /// `ToPort` (ICMP code).
    pub to_port: Option<i32>,
    /// `IpRanges`.
    pub ip_ranges: Vec<CidrSource>,
    /// `Ipv6Ranges`.
    pub ipv6_ranges: Vec<CidrSource>,
    /// `PrefixListIds`.
    pub prefix_list_ids: Vec<PrefixListSource>,
    /// `UserIdGroupPairs`.
    pub user_id_group_pairs: Vec<GroupSource>,
}

impl IpPermission {
    /// The EC2 shape of one grant (one source).
    #[must_use]
    pub fn from_grant(grant: &Grant, own_account: &str) -> Self {
        let (from_port, to_port) = grant.key.ports.as_ec2();
        let mut permission = Self { ip_protocol: grant.key.protocol.as_ec2(), from_port, to_port, ..Self::default() };
        let description = grant.description.clone();
        match &grant.key.peer {
            Peer::Ipv4(net) => permission.ip_ranges.push(CidrSource { cidr: net.to_string(), description }),
            Peer::Ipv6(net) => permission.ipv6_ranges.push(CidrSource { cidr: net.to_string(), description }),
            Peer::PrefixList(id) => {
                permission.prefix_list_ids.push(PrefixListSource { prefix_list_id: id.to_string(), description });
            }
            Peer::Group { group, owner } => permission.user_id_group_pairs.push(GroupSource {
                group_id: Some(group.to_string()),
                group_name: None,
                user_id: Some(owner.clone().unwrap_or_else(|| own_account.to_owned())),
                description,
            }),
        }
        permission
    }

    /// Groups grants into as few permissions as EC2 would show them: one per
    /// protocol and port range, sources in grant order.
    #[must_use]
    pub fn group_grants<'a>(grants: impl IntoIterator<Item = &'a Grant>, own_account: &str) -> Vec<Self> {
        let mut grouped: BTreeMap<(Protocol, Ports), Self> = BTreeMap::new();
        for grant in grants {
            let one = Self::from_grant(grant, own_account);
            let entry = grouped.entry((grant.key.protocol, grant.key.ports)).or_insert_with(|| Self {
                ip_protocol: one.ip_protocol.clone(),
                from_port: one.from_port,
                to_port: one.to_port,
                ..Self::default()
            });
            entry.ip_ranges.extend(one.ip_ranges);
            entry.ipv6_ranges.extend(one.ipv6_ranges);
            entry.prefix_list_ids.extend(one.prefix_list_ids);
            entry.user_id_group_pairs.extend(one.user_id_group_pairs);
        }
        grouped.into_values().collect()
    }
}

fn description(text: &Option<String>) -> Option<String> {
    text.clone().filter(|d| !d.is_empty())
}

/// Splits permissions into grants (protocol and ports canonical, CIDRs
/// canonical), resolving Classic group names with `resolve_name`. Validation
/// that needs the world (existence, networks, duplicates) happens later.
pub(crate) fn permissions_to_grants(
    permissions: &[IpPermission],
    resolve_name: impl Fn(&str) -> Result<GroupId, Fail>,
) -> Result<Vec<Grant>, Fail> {
    if permissions.is_empty() {
        return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter ipPermissions"));
    }
    let mut grants = Vec::new();
    for permission in permissions {
        let protocol = Protocol::parse(&permission.ip_protocol).map_err(|_| {
            Fail::new(
                codes::INVALID_PARAMETER_VALUE,
                format!("Invalid value '{}' for IP protocol. Unknown protocol.", permission.ip_protocol),
            )
        })?;
        let ports = Ports::canonical(protocol, permission.from_port, permission.to_port)
            .map_err(|e| Fail::new(codes::INVALID_PARAMETER_VALUE, e.to_string()))?;
        let before = grants.len();
        for range in &permission.ip_ranges {
            let net = canonical_ipv4(&range.cidr).map_err(|e| Fail::new(codes::PERMISSION_MALFORMED, e.to_string()))?;
            grants.push(Grant::new(protocol, ports, Peer::Ipv4(net), description(&range.description)));
        }
        for range in &permission.ipv6_ranges {
            let net = canonical_ipv6(&range.cidr).map_err(|e| Fail::new(codes::PERMISSION_MALFORMED, e.to_string()))?;
            grants.push(Grant::new(protocol, ports, Peer::Ipv6(net), description(&range.description)));
        }
        for list in &permission.prefix_list_ids {
            let id = PrefixListId::try_new(list.prefix_list_id.as_str()).map_err(|_| {
                Fail::new("InvalidPrefixListId.Malformed", format!("Invalid prefix list id {:?}", list.prefix_list_id))
            })?;
            grants.push(Grant::new(protocol, ports, Peer::PrefixList(id), description(&list.description)));
        }
        for pair in &permission.user_id_group_pairs {
            let group = match (&pair.group_id, &pair.group_name) {
                (Some(id), _) => GroupId::try_new(id.as_str())
                    .map_err(|_| Fail::new("InvalidGroupId.Malformed", format!("Invalid id: {id:?}")))?,
                (None, Some(name)) => resolve_name(name)?,
                (None, None) => {
                    return Err(Fail::new(
                        codes::MISSING_PARAMETER,
                        "A source security group needs a GroupId or a GroupName",
                    ));
                }
            };
            let owner = pair.user_id.clone().filter(|o| !o.is_empty());
            grants.push(Grant::new(protocol, ports, Peer::Group { group, owner }, description(&pair.description)));
        }
        if grants.len() == before {
            return Err(Fail::new(
                codes::INVALID_PARAMETER_VALUE,
                format!("The permission for IP protocol {} has no source", permission.ip_protocol),
            ));
        }
    }
    Ok(grants)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_names(name: &str) -> Result<GroupId, Fail> {
        Err(Fail::new(codes::GROUP_NOT_FOUND, format!("no group {name}")))
    }

    fn tcp(from: i32, to: i32) -> IpPermission {
        IpPermission { ip_protocol: "6".into(), from_port: Some(from), to_port: Some(to), ..IpPermission::default() }
    }

    #[test]
    fn one_permission_with_many_sources_becomes_many_grants() {
        let mut permission = tcp(443, 443);
        permission.ip_ranges = vec![
            CidrSource { cidr: "10.1.2.3/8".into(), description: Some("office".into()) },
            CidrSource { cidr: "192.0.2.1".into(), description: None },
        ];
        permission.user_id_group_pairs =
            vec![GroupSource { group_id: Some("sg-00000002".into()), ..GroupSource::default() }];
        let grants = permissions_to_grants(&[permission], no_names).unwrap();
        assert_eq!(grants.len(), 3);
        assert_eq!(grants[0].key.protocol, Protocol::Tcp);
        assert_eq!(grants[0].key.peer, Peer::Ipv4("10.0.0.0/8".parse().unwrap()));
        assert_eq!(grants[1].key.peer, Peer::Ipv4("192.0.2.1/32".parse().unwrap()));
        let back = IpPermission::group_grants(&grants, "123456789012");
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].ip_ranges.len(), 2);
        assert_eq!(back[0].user_id_group_pairs[0].user_id.as_deref(), Some("123456789012"));
    }

    #[test]
    fn unknown_protocols_and_bad_ports_are_invalid_parameter_values() {
        let mut permission = tcp(80, 22);
        permission.ip_ranges = vec![CidrSource { cidr: "0.0.0.0/0".into(), description: None }];
        assert_eq!(
            permissions_to_grants(&[permission.clone()], no_names).unwrap_err().code,
            codes::INVALID_PARAMETER_VALUE
        );
        permission.ip_protocol = "gre".into();
        assert_eq!(permissions_to_grants(&[permission], no_names).unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
    }

    #[test]
    fn malformed_cidrs_are_malformed_permissions() {
        let mut permission = tcp(22, 22);
        permission.ip_ranges = vec![CidrSource { cidr: "10.0.0.0/33".into(), description: None }];
        assert_eq!(permissions_to_grants(&[permission], no_names).unwrap_err().code, codes::PERMISSION_MALFORMED);
    }

    #[test]
    fn a_permission_without_sources_is_rejected() {
        assert_eq!(permissions_to_grants(&[tcp(22, 22)], no_names).unwrap_err().code, codes::INVALID_PARAMETER_VALUE);
        assert_eq!(permissions_to_grants(&[], no_names).unwrap_err().code, codes::MISSING_PARAMETER);
    }
}
