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
    /// group's rules quota, however many entries it holds.
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
