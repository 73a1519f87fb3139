//! Managed prefix lists (the daemon's expansion lists among them) and
//! network interfaces, as the snapshot holds them.

use super::*;

/// A managed prefix list, as `DescribeManagedPrefixLists` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixList {
    /// `pl-…` id.
    pub id: PrefixListId,
    /// `PrefixListName`.
    pub name: String,
    /// `AddressFamily`: `IPv4` or `IPv6`.
    pub address_family: String,
    /// `MaxEntries`: the weight of one reference to the list against a
    /// group's rules quota, however many entries it holds. 0 when EC2 gives
    /// none (AWS-managed lists may not): unknown.
    pub max_entries: u32,
    /// `Version`: grows by one with every change of the entries; the
    /// `CurrentVersion` a modification must name.
    pub version: u64,
    /// `State` (`create-complete`, `modify-complete`, `delete-failed`, …).
    pub state: String,
    /// `StateMessage`, when EC2 gives one (why a modify or delete failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_message: Option<String>,
    /// `OwnerId`.
    pub owner_id: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// The `OwnerId` of AWS-managed prefix lists (`com.amazonaws.…`): every
/// account of a region sees them under the same ids, none may modify them.
pub const AWS_PREFIX_LIST_OWNER: &str = "AWS";

impl PrefixList {
    /// Whether AWS manages the list (its owner is [`AWS_PREFIX_LIST_OWNER`]).
    #[must_use]
    pub fn is_aws_managed(&self) -> bool {
        self.owner_id == AWS_PREFIX_LIST_OWNER
    }

    /// `MaxEntries` when EC2 gave one (AWS-managed lists may have none: 0).
    #[must_use]
    pub fn known_max_entries(&self) -> Option<usize> {
        usize::try_from(self.max_entries).ok().filter(|&n| n > 0)
    }
}

/// The name of the AWS-managed list of region `to` that corresponds to the
/// AWS-managed list `name` of region `from`: the region component replaced
/// (`com.amazonaws.us-east-1.s3` → `com.amazonaws.eu-west-1.s3`); a name
/// without `from` as its region component (`com.amazonaws.global.…`) is the
/// same in every region.
#[must_use]
pub fn aws_list_name_in_region(name: &str, from: &str, to: &str) -> String {
    let prefix = format!("com.amazonaws.{from}.");
    match name.strip_prefix(&prefix) {
        Some(service) if !from.is_empty() => format!("com.amazonaws.{to}.{service}"),
        _ => name.to_owned(),
    }
}

/// A prefix list carrying [`EXPANSION_TAG`] with its entries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpansionList {
    /// The list as described.
    pub list: PrefixList,
    /// Its entries at `list.version`.
    #[serde(default)]
    pub entries: Vec<PrefixListEntry>,
}

impl ExpansionList {
    /// The group it expands ([`EXPANSION_TAG`]), when the tag parses.
    #[must_use]
    pub fn expands(&self) -> Option<GroupId> {
        self.list.tags.get(EXPANSION_TAG).and_then(|v| v.parse().ok())
    }

    /// Its [`OWNER_TAG`], if any.
    #[must_use]
    pub fn owner_tag(&self) -> Option<&str> {
        self.list.tags.get(OWNER_TAG).map(String::as_str)
    }

    /// Its [`ORPHANED_SINCE_TAG`], if any.
    #[must_use]
    pub fn orphaned_since_tag(&self) -> Option<&str> {
        self.list.tags.get(ORPHANED_SINCE_TAG).map(String::as_str)
    }
}

/// One entry of a managed prefix list (`GetManagedPrefixListEntries`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixListEntry {
    /// The CIDR block, canonical.
    pub cidr: ipnet::IpNet,
    /// Entry description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A network interface of a VPC (`DescribeNetworkInterfaces`): what makes
/// an instance, or anything else in a VPC, a member of a VPC group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// `eni-…` id.
    pub id: String,
    /// Its VPC.
    pub vpc_id: VpcId,
    /// `Status`: `in-use`, `available`, …
    pub status: String,
    /// The instance it is attached to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<InstanceId>,
    /// Its security groups.
    pub groups: BTreeSet<GroupId>,
    /// The primary private IPv4 address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<Ipv4Addr>,
}

#[cfg(test)]
mod tests {
    use super::aws_list_name_in_region;

    #[test]
    fn an_aws_list_name_maps_its_region_component_and_a_global_one_stays() {
        let map = |name| aws_list_name_in_region(name, "us-east-1", "eu-west-1");
        assert_eq!(map("com.amazonaws.us-east-1.s3"), "com.amazonaws.eu-west-1.s3");
        assert_eq!(map("com.amazonaws.us-east-1.ipv6.vpc-lattice"), "com.amazonaws.eu-west-1.ipv6.vpc-lattice");
        assert_eq!(
            map("com.amazonaws.global.cloudfront.origin-facing"),
            "com.amazonaws.global.cloudfront.origin-facing"
        );
        // Another region's name, or a prefix that only looks alike, is kept.
        assert_eq!(map("com.amazonaws.us-east-2.s3"), "com.amazonaws.us-east-2.s3");
        assert_eq!(map("com.amazonaws.us-east-10.s3"), "com.amazonaws.us-east-10.s3");
    }
}
