//! The domain model shared by every stage of observe → plan → execute.
//!
//! `observe` fills a [`Snapshot`]; `plan` reads it; `execute` and the EC2 port
//! speak in the same ids and [`Grant`]s. Everything here is plain data with a
//! stable JSON form (fixtures, `plan --snapshot`), ordered with `BTreeMap` so
//! that every iteration — and therefore every plan — is deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use compact_str::CompactString;
use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The tag the daemon puts on every mirror it owns; its value is the source
/// group id. Kept from the 2016 Lambda tool so its mirrors are adopted as-is.
pub const OWNERSHIP_TAG: &str = "classiclinkmirror:mirroredFromClassicSecurityGroupId";

/// The tag the daemon puts on a mirror when it first sees it orphaned; its
/// value is that moment in RFC 3339 UTC (`2026-01-31T12:00:00Z`). The orphan
/// grace counts from it, so a restarted daemon, or a second one, counts from
/// the same instant. Removed when the mirror is claimed again.
pub const ORPHANED_SINCE_TAG: &str = "classiclinkmirror:orphanedSince";

/// The tag naming the deployment (`daemon.owner`) a mirror belongs to,
/// written with [`OWNERSHIP_TAG`] on every mirror a deployment creates or
/// claims. A mirror whose value names another deployment is never touched;
/// one without it (made before the tag existed) is claimed by the deployment
/// that manages its source.
pub const OWNER_TAG: &str = "classiclinkmirror:owner";

/// The tag on every managed prefix list the daemon keeps to expand a
/// group it cannot mirror into its members' addresses; its value is the
/// expanded group's id. A list without it is never modified or deleted.
pub const EXPANSION_TAG: &str = "classiclinkmirror:expandsSecurityGroupId";

/// The tag marking an overflow group: a group of a mirror's source, beside
/// the mirror, holding the grants the mirror has no room for. Its value is
/// the shard's number, `1` to [`MAX_OVERFLOW_SHARDS`]; the group carries
/// [`OWNERSHIP_TAG`] (the source) and [`OWNER_TAG`] like the mirror itself.
pub const SHARD_TAG: &str = "classiclinkmirror:overflowShard";

/// The most overflow groups one mirror gets: with the mirror they fill a
/// ClassicLink link ([`MAX_GROUPS_PER_LINK`]).
pub const MAX_OVERFLOW_SHARDS: u8 = 4;

/// EC2's largest `MaxEntries` of a managed prefix list.
pub const MAX_PREFIX_LIST_ENTRIES: u32 = 1000;

/// Entries one `CreateManagedPrefixList` or `ModifyManagedPrefixList`
/// request may add (and, for a modification, remove).
pub const MAX_PREFIX_LIST_CHANGES: usize = 100;

/// The default discovery tag (docs/configuration.md `discovery.tag_key`).
pub const DEFAULT_DISCOVERY_TAG: &str = "classiclinkmirror:linkToVPC";

/// EC2 allows at most this many security groups in one ClassicLink link.
pub const MAX_GROUPS_PER_LINK: usize = 5;

/// The default VPC quota of inbound rules per security group.
pub const DEFAULT_RULES_PER_GROUP: usize = 60;

/// Errors building model values from untrusted text (config, snapshots, API
/// responses).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// An id does not have the `prefix-hex` shape EC2 uses.
    #[error("{value:?} is not a {what} id")]
    BadId {
        /// Human name of the id kind ("security group", "VPC", ...).
        what: &'static str,
        /// The rejected text.
        value: String,
    },
    /// A protocol that is neither a known name nor a number 0–255 or -1.
    #[error("{0:?} is not an IP protocol (name, number 0-255, or -1)")]
    BadProtocol(String),
    /// Ports outside 0–65535, reversed, or missing for TCP/UDP.
    #[error("invalid port range (FromPort {}, ToPort {}) for protocol {protocol}", port_text(*.from), port_text(*.to))]
    BadPorts {
        /// The protocol the ports were given for.
        protocol: String,
        /// Lower port as given.
        from: Option<i32>,
        /// Upper port as given.
        to: Option<i32>,
    },
    /// A CIDR block that does not parse.
    #[error("{0:?} is not a CIDR block")]
    BadCidr(String),
}

impl ModelError {
    /// Stable label for metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadId { .. } => "bad_id",
            Self::BadProtocol(_) => "bad_protocol",
            Self::BadPorts { .. } => "bad_ports",
            Self::BadCidr(_) => "bad_cidr",
        }
    }
}

/// A `FromPort`/`ToPort` value for a message: the number, or `none`.
#[must_use]
pub fn port_text(port: Option<i32>) -> String {
    port.map_or_else(|| "none".to_owned(), |p| p.to_string())
}

fn is_ec2_id(value: &str, prefix: &str) -> bool {
    let Some(rest) = value.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
        return false;
    };
    (1..=32).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Ids are text stored inline (EC2's ids, up to 24 bytes, need no heap): the
/// planner copies, compares and hashes ids by the hundred thousand, and an
/// inline id is copied without an allocation or an atomic counter and compared
/// without following a pointer to another cache line. They compare, hash,
/// print and serialise as their text.
macro_rules! ec2_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(CompactString);

        impl $name {
            /// Validates the `prefix-hex` shape.
            ///
            /// # Errors
            /// [`ModelError::BadId`] when the text is not such an id.
            pub fn try_new(value: impl Into<String>) -> Result<Self, ModelError> {
                let value = value.into();
                if is_ec2_id(&value, $prefix) {
                    Ok(Self(CompactString::from(value)))
                } else {
                    Err(ModelError::BadId { what: $what, value })
                }
            }

            /// [`Self::try_new`] on borrowed text, without an owned copy first.
            fn try_from_str(value: &str) -> Result<Self, ModelError> {
                if is_ec2_id(value, $prefix) {
                    Ok(Self(CompactString::from(value)))
                } else {
                    Err(ModelError::BadId { what: $what, value: value.to_owned() })
                }
            }

            /// The id as EC2 spells it.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ModelError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::try_from_str(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Borrowed text when the format allows it (no `String` in
                // between); errors read as `String`'s would.
                struct Text;
                impl serde::de::Visitor<'_> for Text {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<$name, E> {
                        $name::try_from_str(text).map_err(E::custom)
                    }
                }
                d.deserialize_str(Text)
            }
        }
    };
}

ec2_id!(
    /// A security group id (`sg-…`).
    GroupId, "sg", "security group"
);
ec2_id!(
    /// A VPC id (`vpc-…`).
    VpcId, "vpc", "VPC"
);
ec2_id!(
    /// An instance id (`i-…`).
    InstanceId, "i", "instance"
);
ec2_id!(
    /// A managed prefix list id (`pl-…`).
    PrefixListId, "pl", "prefix list"
);

/// An IP protocol in canonical form: the four named protocols are always
/// named, whatever spelling (name or number) EC2 or the operator used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// `-1`: every protocol; carries no ports.
    All,
    /// 6.
    Tcp,
    /// 17.
    Udp,
    /// 1; ports are ICMP type and code.
    Icmp,
    /// 58; ports are ICMPv6 type and code.
    Icmpv6,
    /// Any other protocol number; carries no ports.
    Number(u8),
}

impl Protocol {
    /// Parses EC2's `IpProtocol` spelling: a name, a number, or `-1`.
    ///
    /// # Errors
    /// [`ModelError::BadProtocol`] for anything else.
    pub fn parse(text: &str) -> Result<Self, ModelError> {
        let lower = text.trim().to_ascii_lowercase();
        Ok(match lower.as_str() {
            "-1" | "all" => Self::All,
            "tcp" | "6" => Self::Tcp,
            "udp" | "17" => Self::Udp,
            "icmp" | "1" => Self::Icmp,
            "icmpv6" | "58" => Self::Icmpv6,
            other => match other.parse::<u8>() {
                Ok(n) => Self::Number(n),
                Err(_) => return Err(ModelError::BadProtocol(text.to_owned())),
            },
        })
    }

    /// The spelling EC2 accepts in `IpProtocol`.
    #[must_use]
    pub fn as_ec2(&self) -> String {
        match self {
            Self::All => "-1".into(),
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Icmp => "icmp".into(),
            Self::Icmpv6 => "icmpv6".into(),
            Self::Number(n) => n.to_string(),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            other => f.write_str(&other.as_ec2()),
        }
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_ec2())
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            S(String),
            N(i64),
        }
        let text = match Text::deserialize(d)? {
            Text::S(s) => s,
            Text::N(n) => n.to_string(),
        };
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The port part of a grant, canonical for its protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ports {
    /// Protocols without ports (`-1`, numbered protocols).
    None,
    /// TCP/UDP inclusive port range.
    Range {
        /// First port.
        from: u16,
        /// Last port.
        to: u16,
    },
    /// ICMP/ICMPv6 type and code; `-1` means all.
    Icmp {
        /// ICMP type, -1 for all types (then `code` is -1 too).
        icmp_type: i16,
        /// ICMP code, -1 for all codes.
        code: i16,
    },
}

impl Ports {
    /// Canonicalises EC2's `FromPort`/`ToPort` for `protocol`.
    ///
    /// # Errors
    /// [`ModelError::BadPorts`] when the values cannot be a valid rule.
    pub fn canonical(protocol: Protocol, from: Option<i32>, to: Option<i32>) -> Result<Self, ModelError> {
        let bad = || ModelError::BadPorts { protocol: protocol.as_ec2(), from, to };
        match protocol {
            Protocol::All | Protocol::Number(_) => Ok(Self::None),
            Protocol::Tcp | Protocol::Udp => {
                let (Some(from_port), Some(to_port)) = (from, to) else {
                    return Err(bad());
                };
                // EC2 accepts -1/-1 for TCP/UDP and stores it as the full range.
                if from_port == -1 && to_port == -1 {
                    return Ok(Self::Range { from: 0, to: u16::MAX });
                }
                let from_port = u16::try_from(from_port).map_err(|_| bad())?;
                let to_port = u16::try_from(to_port).map_err(|_| bad())?;
                if from_port > to_port {
                    return Err(bad());
                }
                Ok(Self::Range { from: from_port, to: to_port })
            }
            Protocol::Icmp | Protocol::Icmpv6 => {
                let icmp_type = from.unwrap_or(-1);
                let code = to.unwrap_or(-1);
                if !(-1..=255).contains(&icmp_type) || !(-1..=255).contains(&code) {
                    return Err(bad());
                }
                let (icmp_type, code) = if icmp_type == -1 { (-1, -1) } else { (icmp_type, code) };
                Ok(Self::Icmp { icmp_type: icmp_type as i16, code: code as i16 })
            }
        }
    }

    /// `(FromPort, ToPort)` as EC2 expects them, `None` for port-less protocols.
    #[must_use]
    pub fn as_ec2(&self) -> (Option<i32>, Option<i32>) {
        match *self {
            Self::None => (None, None),
            Self::Range { from, to } => (Some(i32::from(from)), Some(i32::from(to))),
            Self::Icmp { icmp_type, code } => (Some(i32::from(icmp_type)), Some(i32::from(code))),
        }
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::None => Ok(()),
            Self::Range { from, to } if from == to => write!(f, "{from}"),
            Self::Range { from: 0, to: u16::MAX } => f.write_str("all ports"),
            Self::Range { from, to } => write!(f, "{from}-{to}"),
            Self::Icmp { icmp_type: -1, .. } => f.write_str("all types"),
            Self::Icmp { icmp_type, code: -1 } => write!(f, "type {icmp_type}"),
            Self::Icmp { icmp_type, code } => write!(f, "type {icmp_type} code {code}"),
        }
    }
}

/// Where a grant lets traffic come from.
///
/// `Peer` is generic over how a group is named: observed grants name groups
/// by [`GroupId`]; planned grants may name a mirror that does not exist yet
/// (see `plan::GroupRef`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Peer<G = GroupId> {
    /// An IPv4 CIDR block, canonical (host bits cleared).
    Ipv4(#[serde(deserialize_with = "de_ipv4")] Ipv4Net),
    /// An IPv6 CIDR block, canonical.
    Ipv6(#[serde(deserialize_with = "de_ipv6")] Ipv6Net),
    /// A managed prefix list.
    PrefixList(PrefixListId),
    /// A security group; `owner` is set only for a group of another account
    /// (same-account references are canonicalised to `None`).
    Group {
        /// The referenced group.
        group: G,
        /// Owning account when it differs from the rule's own account.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
}

impl<G> Peer<G> {
    /// Maps the group naming of a group peer, keeping every other peer.
    pub fn map_group<H>(self, f: impl FnOnce(G) -> H) -> Peer<H> {
        match self {
            Self::Ipv4(n) => Peer::Ipv4(n),
            Self::Ipv6(n) => Peer::Ipv6(n),
            Self::PrefixList(p) => Peer::PrefixList(p),
            Self::Group { group, owner } => Peer::Group { group: f(group), owner },
        }
    }
}

fn de_ipv4<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
    canonical_ipv4(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_ipv6<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv6Net, D::Error> {
    canonical_ipv6(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// Parses an IPv4 CIDR into canonical form (host bits cleared).
///
/// # Errors
/// [`ModelError::BadCidr`].
pub fn canonical_ipv4(text: &str) -> Result<Ipv4Net, ModelError> {
    let text = text.trim();
    let net = match text.parse::<Ipv4Net>() {
        Ok(net) => net,
        Err(_) => text.parse::<Ipv4Addr>().map(Ipv4Net::from).map_err(|_| ModelError::BadCidr(text.to_owned()))?,
    };
    Ok(net.trunc())
}

/// Parses an IPv6 CIDR into canonical form (host bits cleared).
///
/// # Errors
/// [`ModelError::BadCidr`].
pub fn canonical_ipv6(text: &str) -> Result<Ipv6Net, ModelError> {
    let text = text.trim();
    let net = match text.parse::<Ipv6Net>() {
        Ok(net) => net,
        Err(_) => text.parse::<Ipv6Addr>().map(Ipv6Net::from).map_err(|_| ModelError::BadCidr(text.to_owned()))?,
    };
    Ok(net.trunc())
}

/// The identity of an ingress grant: one protocol, one port range, one peer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct GrantKey<G = GroupId> {
    /// Canonical protocol.
    pub protocol: Protocol,
    /// Canonical ports for that protocol.
    pub ports: Ports,
    /// Traffic source.
    pub peer: Peer<G>,
}

/// One normalised ingress rule entry (docs/semantics.md, "Ingress rules"). The description is an
/// attribute, not part of the identity: two grants with the same [`GrantKey`]
/// are the same rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Grant<G = GroupId> {
    /// Identity.
    #[serde(flatten)]
    pub key: GrantKey<G>,
    /// Rule description; `None` and `""` are the same and stored as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl<G> Grant<G> {
    /// Builds a grant, folding an empty description into `None`.
    #[must_use]
    pub fn new(protocol: Protocol, ports: Ports, peer: Peer<G>, description: Option<String>) -> Self {
        Self { key: GrantKey { protocol, ports, peer }, description: description.filter(|d| !d.is_empty()) }
    }

    /// Maps the group naming of the peer.
    pub fn map_group<H>(self, f: impl FnOnce(G) -> H) -> Grant<H> {
        Grant {
            key: GrantKey { protocol: self.key.protocol, ports: self.key.ports, peer: self.key.peer.map_group(f) },
            description: self.description,
        }
    }
}

impl Grant<GroupId> {
    /// Normalises one EC2 permission entry (protocol and ports as EC2 spells
    /// them, plus one peer) into a grant. `own_account` is the account of the
    /// group holding the rule; a group peer of that account loses its owner.
    ///
    /// # Errors
    /// Any [`ModelError`] of the protocol or ports.
    pub fn from_ec2(
        protocol: &str,
        from_port: Option<i32>,
        to_port: Option<i32>,
        peer: Peer<GroupId>,
        description: Option<String>,
        own_account: Option<&str>,
    ) -> Result<Self, ModelError> {
        let protocol = Protocol::parse(protocol)?;
        let ports = Ports::canonical(protocol, from_port, to_port)?;
        let peer = match peer {
            Peer::Group { group, owner } => {
                let owner = owner.filter(|o| Some(o.as_str()) != own_account && !o.is_empty());
                Peer::Group { group, owner }
            }
            Peer::Ipv4(n) => Peer::Ipv4(n.trunc()),
            Peer::Ipv6(n) => Peer::Ipv6(n.trunc()),
            other => other,
        };
        Ok(Self::new(protocol, ports, peer, description))
    }
}

/// Which of a group's two rule lists a grant belongs to. Ingress rules let
/// traffic in from their peer; egress rules (VPC groups only) let it out to
/// their peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Inbound rules (`IpPermissions`).
    Ingress,
    /// Outbound rules (`IpPermissionsEgress`).
    Egress,
}

impl Direction {
    /// Stable label: `ingress` or `egress`.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

impl SecurityGroup {
    /// The grants of one direction.
    #[must_use]
    pub fn rules(&self, direction: Direction) -> &[Grant] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A security group as observed: Classic when `vpc_id` is `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroup {
    /// Group id.
    pub id: GroupId,
    /// Group name (unique per VPC, or among Classic groups).
    pub name: String,
    /// Group description.
    #[serde(default)]
    pub description: String,
    /// `None` for an EC2-Classic group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<VpcId>,
    /// Owning account.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner_id: String,
    /// Tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Ingress grants, normalised. Order is not significant.
    #[serde(default)]
    pub ingress: Vec<Grant>,
    /// Egress grants, normalised (VPC groups only: a Classic group has
    /// none). Order is not significant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress: Vec<Grant>,
}

impl SecurityGroup {
    /// True for an EC2-Classic group.
    #[must_use]
    pub fn is_classic(&self) -> bool {
        self.vpc_id.is_none()
    }

    /// The source group id this group mirrors, if it carries our tag with a
    /// well-formed value.
    #[must_use]
    pub fn mirrored_from(&self) -> Option<GroupId> {
        self.tags.get(OWNERSHIP_TAG).and_then(|v| v.parse().ok())
    }

    /// The value of [`OWNER_TAG`] (the deployment the mirror belongs to), if
    /// the group carries it.
    #[must_use]
    pub fn owner_tag(&self) -> Option<&str> {
        self.tags.get(OWNER_TAG).map(String::as_str)
    }

    /// The overflow shard this group is, from [`SHARD_TAG`]: `None` for a
    /// group without the tag (a mirror itself), `Some(None)` for a value
    /// that is not a number from 1 to [`MAX_OVERFLOW_SHARDS`].
    #[must_use]
    pub fn overflow_shard(&self) -> Option<Option<u8>> {
        let value = self.tags.get(SHARD_TAG)?;
        Some(value.parse::<u8>().ok().filter(|n| (1..=MAX_OVERFLOW_SHARDS).contains(n)))
    }

    /// The raw value of [`ORPHANED_SINCE_TAG`], if the group carries it.
    #[must_use]
    pub fn orphaned_since_tag(&self) -> Option<&str> {
        self.tags.get(ORPHANED_SINCE_TAG).map(String::as_str)
    }
}

/// EC2 instance lifecycle states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    /// Launching; left for the next cycle.
    Pending,
    /// Running; the only state that can be linked.
    Running,
    /// Stopping.
    Stopping,
    /// Stopped; EC2 has removed its link.
    Stopped,
    /// Terminating.
    ShuttingDown,
    /// Gone.
    Terminated,
}

impl InstanceState {
    /// EC2's `instance-state-name` spelling.
    #[must_use]
    pub fn as_ec2(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::ShuttingDown => "shutting-down",
            Self::Terminated => "terminated",
        }
    }

    /// Parses EC2's `instance-state-name` spelling.
    #[must_use]
    pub fn from_ec2(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "stopped" => Self::Stopped,
            "shutting-down" => Self::ShuttingDown,
            "terminated" => Self::Terminated,
            _ => return None,
        })
    }
}

/// An instance that is a member of at least one managed source group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    /// Instance id.
    pub id: InstanceId,
    /// Lifecycle state.
    pub state: InstanceState,
    /// `None` for an EC2-Classic instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<VpcId>,
    /// Security groups the instance belongs to.
    pub groups: BTreeSet<GroupId>,
    /// The primary private IPv4 address (`PrivateIpAddress`), when EC2
    /// shows one (a stopped Classic instance has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_ip: Option<Ipv4Addr>,
}

// Managed prefix lists and network interfaces: `model/prefix_lists.rs`.
mod prefix_lists;
pub use self::prefix_lists::{
    AWS_PREFIX_LIST_OWNER, ExpansionList, NetworkInterface, PrefixList, PrefixListEntry, aws_list_name_in_region,
};

/// A ClassicLink link: a Classic instance attached to VPC security groups.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The linked Classic instance.
    pub instance_id: InstanceId,
    /// The VPC it is linked to.
    pub vpc_id: VpcId,
    /// The VPC groups of the link.
    pub groups: BTreeSet<GroupId>,
}

/// A target VPC as far as the daemon cares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vpc {
    /// VPC id.
    pub id: VpcId,
    /// Whether ClassicLink is enabled on it.
    #[serde(default)]
    pub classic_link_enabled: bool,
}

/// The parts of a snapshot, each observed by its own describe calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum SnapshotPart {
    /// Source groups (by config id/name and by discovery tag).
    SourceGroups,
    /// VPC-side groups: tagged mirrors, and the groups named like a mirror
    /// that no tagged group of its VPC is named like.
    VpcGroups,
    /// Instances of managed Classic groups.
    Instances,
    /// ClassicLink links.
    Links,
    /// Target VPCs and their ClassicLink flag.
    Vpcs,
    /// Expansion prefix lists and the members of the groups they expand
    /// (observed only when some mirror expands unmanaged references).
    Expansions,
    /// The sizes of the prefix lists that VPC sources of the target's own
    /// account reference.
    ListSizes,
    /// Prefix lists that VPC sources of another account reference, and the
    /// target region's AWS-managed lists they map to (observed only for
    /// sources in another account than their target).
    PrefixLists,
}

impl SnapshotPart {
    /// Stable name for logs and metrics.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// Everything one observation saw, in deterministic order.
///
/// `source_groups` and `vpc_groups` may overlap (a VPC source group in a
/// target VPC); both are keyed by id. A part listed in `incomplete` was not
/// fully observed (a describe call or page failed) and must not justify any
/// destructive action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Groups that may be sources: named by config, or carrying the discovery tag.
    #[serde(default, with = "keyed_groups")]
    pub source_groups: BTreeMap<GroupId, SecurityGroup>,
    /// Every group carrying our ownership tag; and for each managed pair
    /// whose VPC has no tagged group of the mirror's name, the group of that
    /// name in that VPC, if any (for a source named `default`, the VPC's
    /// `default` group). Groups of a mirror's name in other VPCs, and the
    /// `default` groups no mapping maps onto, are not looked up.
    #[serde(default, with = "keyed_groups")]
    pub vpc_groups: BTreeMap<GroupId, SecurityGroup>,
    /// Instances that are members of managed Classic groups.
    #[serde(default, with = "keyed_instances")]
    pub instances: BTreeMap<InstanceId, Instance>,
    /// Current ClassicLink links of interest, by instance.
    #[serde(default, with = "keyed_links")]
    pub links: BTreeMap<InstanceId, Link>,
    /// Target VPCs.
    #[serde(default, with = "keyed_vpcs")]
    pub vpcs: BTreeMap<VpcId, Vpc>,
    /// Managed prefix lists carrying [`EXPANSION_TAG`], with their entries
    /// (observed only when some mirror expands unmanaged references).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expansion_lists: BTreeMap<PrefixListId, ExpansionList>,
    /// The private IPv4 addresses of the running members of each unmanaged
    /// group an expanding mirror's source references (Classic instances,
    /// and network interfaces in use for VPC groups).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub members: BTreeMap<GroupId, BTreeSet<Ipv4Addr>>,
    /// The `MaxEntries` of each prefix list a managed VPC source of the
    /// target's own account references, other than our expansion lists, as
    /// the target account sees it (a list it cannot see is absent, and
    /// weighed as a whole group).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub list_sizes: BTreeMap<PrefixListId, u32>,
    /// The prefix lists that VPC sources of other accounts reference, as the
    /// source's account describes them (owner, name, `MaxEntries`): whether
    /// a list is AWS-managed and which name it has
    /// (docs/semantics.md, "Prefix lists").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub source_prefix_lists: BTreeMap<PrefixListId, PrefixList>,
    /// The target region's AWS-managed prefix lists that the AWS-managed
    /// lists of [`Self::source_prefix_lists`] map to, by name (described
    /// only when some source's region differs from its target's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub target_aws_prefix_lists: BTreeMap<String, PrefixList>,
    /// Parts that were not completely observed.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub incomplete: BTreeSet<SnapshotPart>,
}

impl Snapshot {
    /// True when every part was fully observed.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        self.incomplete.is_empty()
    }

    /// Parses the stable JSON form.
    ///
    /// # Errors
    /// The `serde_json` error, which names line and column.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The stable JSON form (pretty, sorted by id).
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("snapshot serialises")
    }
}

/// Snapshot collections serialise as JSON arrays (readable fixtures), and
/// deserialise into id-keyed maps, rejecting duplicate ids.
macro_rules! keyed_list {
    ($module:ident, $key:ty, $value:ty, $field:ident) => {
        mod $module {
            use super::*;
            pub fn serialize<S: Serializer>(map: &BTreeMap<$key, $value>, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(map.values())
            }
            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<$key, $value>, D::Error> {
                let items = Vec::<$value>::deserialize(d)?;
                let mut map = BTreeMap::new();
                for item in items {
                    let key = item.$field.clone();
                    if map.insert(key.clone(), item).is_some() {
                        return Err(serde::de::Error::custom(format!("duplicate id {key}")));
                    }
                }
                Ok(map)
            }
        }
    };
}
keyed_list!(keyed_groups, GroupId, SecurityGroup, id);
keyed_list!(keyed_instances, InstanceId, Instance, id);
keyed_list!(keyed_links, InstanceId, Link, instance_id);
keyed_list!(keyed_vpcs, VpcId, Vpc, id);

/// Keeps only what EC2 accepts in VPC group names and descriptions
/// (`a-zA-Z0-9 ._-:/()#,@[]+=&;{}!$*`), up to 255 characters.
#[must_use]
pub fn sanitize_text(text: &str) -> String {
    let allowed = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                ' ' | '.'
                    | '_'
                    | '-'
                    | ':'
                    | '/'
                    | '('
                    | ')'
                    | '#'
                    | ','
                    | '@'
                    | '['
                    | ']'
                    | '+'
                    | '='
                    | '&'
                    | ';'
                    | '{'
                    | '}'
                    | '!'
                    | '$'
                    | '*'
            )
    };
    // Most names and descriptions are clean already (allowed characters are
    // ASCII, so the length in bytes is the length in characters).
    if text.len() <= 255 && text.chars().all(allowed) {
        return text.trim().to_owned();
    }
    text.chars().map(|c| if allowed(c) { c } else { '_' }).take(255).collect::<String>().trim().to_owned()
}

/// The mirror's name: sanitised; never empty, never `sg-…` (EC2 forbids both).
#[must_use]
pub fn mirror_name(name: &str, source: &GroupId) -> String {
    let clean = sanitize_text(name);
    if clean.is_empty() || clean.starts_with("sg-") { format!("mirror-of-{source}") } else { clean }
}

/// The name of overflow group `shard` of the mirror named `mirror`:
/// `<mirror>-overflow-<shard>`, the mirror's name shortened to keep the whole
/// within EC2's 255 characters (a valid VPC group name when `mirror` is).
#[must_use]
pub fn shard_name(mirror: &str, shard: u8) -> String {
    let suffix = format!("-overflow-{shard}");
    let base: String = mirror.chars().take(255 - suffix.len()).collect();
    format!("{}{suffix}", base.trim_end())
}

/// What one grant weighs against EC2's rules-per-group quota, as EC2 counts:
/// one rule for each IPv4 or IPv6 CIDR and each group, a prefix-list
/// reference as many as the list's max entries. `prefix_list_entries` is that
/// size when the snapshot knows it. One of unknown size is assumed to fill
/// the whole `quota`: conservative, as an overestimate costs an overflow
/// group where an underestimate costs a `RulesPerSecurityGroupLimitExceeded`.
/// Never 0.
#[must_use]
pub fn grant_weight<G>(peer: &Peer<G>, prefix_list_entries: Option<usize>, quota: usize) -> usize {
    match peer {
        Peer::PrefixList(_) => prefix_list_entries.unwrap_or(quota).max(1),
        Peer::Ipv4(_) | Peer::Ipv6(_) | Peer::Group { .. } => 1,
    }
}

/// The mirror's description: the source's, sanitised; empty becomes
/// `Mirror of <name>`.
#[must_use]
pub fn mirror_description(source_description: &str, name: &str) -> String {
    let clean = sanitize_text(source_description);
    if clean.is_empty() { sanitize_text(&format!("Mirror of {name}")) } else { clean }
}

/// The latest time [`format_time`] can write (`9999-12-31T23:59:59Z`):
/// RFC 3339 has four-digit years.
const LAST_RFC3339_SECOND: u64 = 253_402_300_799;

/// `time` in RFC 3339 UTC to the second (`2026-01-31T12:00:00Z`), the form
/// of the `classiclinkmirror:orphanedSince` tag and of the times in plans and
/// `/status`. Times outside years 1970–9999 are clamped to those bounds
/// instead of failing.
#[must_use]
pub fn format_time(time: std::time::SystemTime) -> String {
    let unix = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()).min(LAST_RFC3339_SECOND);
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix)).to_string()
}

/// The time an RFC 3339 UTC text names (`2026-01-31T12:00:00Z`, optionally
/// with fractional seconds or `+00:00`), or `None` for anything else —
/// including other time zones, which the daemon never writes.
#[must_use]
pub fn parse_time(text: &str) -> Option<std::time::SystemTime> {
    humantime::parse_rfc3339(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_and_never_panic_on_any_text_or_instant() {
        use std::time::{Duration, UNIX_EPOCH};
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(format_time(t), "2027-01-15T08:00:00Z");
        assert_eq!(parse_time(&format_time(t)), Some(t));
        assert_eq!(format_time(UNIX_EPOCH + Duration::from_secs(u64::MAX / 2)), "9999-12-31T23:59:59Z");
        assert_eq!(format_time(UNIX_EPOCH - Duration::from_secs(1)), "1970-01-01T00:00:00Z");
        for junk in [
            "",
            "yesterday",
            "2027-01-15 08:00:00",
            "2027-01-15T08:00:00+02:00",
            "2027-13-15T08:00:00Z",
            "1969-12-31T23:59:59Z",
            "2027-01-15T08:00:00.999999999999999999999999Z",
            "2027-01-15T08:00:00.12x4Z",
            "ééééééééééééééééééééé",
            "2027-01-1\u{e9}T08:00:00Z",
        ] {
            let _ = parse_time(junk);
        }
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2027-01-15T08:00:00+02:00"), None);
    }

    fn tcp(from: i32, to: i32, cidr: &str) -> Grant {
        Grant::from_ec2("tcp", Some(from), Some(to), Peer::Ipv4(cidr.parse().unwrap()), None, None).unwrap()
    }

    #[test]
    fn ids_must_have_prefix_and_lowercase_hex() {
        assert!(GroupId::try_new("sg-0a1b2c3d").is_ok());
        assert!(GroupId::try_new("sg-0A1B").is_err());
        assert!(GroupId::try_new("sg-").is_err());
        assert!(GroupId::try_new("vpc-0a1").is_err());
        assert!(VpcId::try_new("vpc-9f2e1d0c").is_ok());
        assert!(InstanceId::try_new("i-0b3").is_ok());
        assert_eq!(VpcId::try_new("vpc-xyz").unwrap_err().to_string(), r#""vpc-xyz" is not a VPC id"#);
    }

    #[test]
    fn ids_longer_than_fit_inline_behave_as_their_text() {
        // EC2's ids fit the inline store; the longest accepted ones (32 hex
        // digits) do not, and must compare, hash and print the same way.
        let long = format!("vpc-{}", "f".repeat(32));
        let short = "vpc-0123456789abcdef0";
        let ids = [VpcId::try_new(long.clone()).unwrap(), VpcId::try_new(short).unwrap()];
        assert_eq!(ids[0].as_str(), long);
        assert_eq!(ids[0].to_string(), long);
        assert_eq!(ids[0].cmp(&ids[1]), long.as_str().cmp(short));
        assert_eq!(ids[0].clone(), ids[0]);
        let json = serde_json::to_string(&ids).unwrap();
        assert_eq!(serde_json::from_str::<Vec<VpcId>>(&json).unwrap(), ids);
        let set: std::collections::HashSet<&VpcId> = ids.iter().chain(&ids).collect();
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn protocol_numbers_equal_their_names() {
        assert_eq!(Protocol::parse("6").unwrap(), Protocol::Tcp);
        assert_eq!(Protocol::parse("TCP").unwrap(), Protocol::Tcp);
        assert_eq!(Protocol::parse("17").unwrap(), Protocol::Udp);
        assert_eq!(Protocol::parse("1").unwrap(), Protocol::Icmp);
        assert_eq!(Protocol::parse("58").unwrap(), Protocol::Icmpv6);
        assert_eq!(Protocol::parse("-1").unwrap(), Protocol::All);
        assert_eq!(Protocol::parse("50").unwrap(), Protocol::Number(50));
        assert!(Protocol::parse("256").is_err());
        assert!(Protocol::parse("gre").is_err());
    }

    #[test]
    fn all_protocols_and_numbered_protocols_have_no_ports() {
        let a = Grant::from_ec2("-1", Some(0), Some(65535), Peer::Ipv4("10.0.0.0/8".parse().unwrap()), None, None);
        let b = Grant::from_ec2("-1", None, None, Peer::Ipv4("10.0.0.0/8".parse().unwrap()), None, None);
        assert_eq!(a.unwrap().key, b.unwrap().key);
        assert_eq!(Ports::canonical(Protocol::Number(50), Some(1), Some(2)).unwrap(), Ports::None);
    }

    #[test]
    fn icmp_all_types_ignores_code() {
        assert_eq!(
            Ports::canonical(Protocol::Icmp, Some(-1), Some(4)).unwrap(),
            Ports::canonical(Protocol::Icmp, Some(-1), Some(-1)).unwrap()
        );
        assert_eq!(
            Ports::canonical(Protocol::Icmp, Some(8), Some(-1)).unwrap(),
            Ports::Icmp { icmp_type: 8, code: -1 }
        );
        assert!(Ports::canonical(Protocol::Icmp, Some(300), Some(0)).is_err());
    }

    #[test]
    fn tcp_ports_are_validated() {
        assert!(Ports::canonical(Protocol::Tcp, Some(443), Some(80)).is_err());
        assert!(Ports::canonical(Protocol::Tcp, None, None).is_err());
        assert!(Ports::canonical(Protocol::Udp, Some(0), Some(70000)).is_err());
        assert_eq!(Ports::canonical(Protocol::Tcp, Some(-1), Some(-1)).unwrap(), Ports::Range { from: 0, to: 65535 });
    }

    #[test]
    fn cidrs_compare_in_canonical_form() {
        assert_eq!(canonical_ipv4("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(canonical_ipv4("203.0.113.7").unwrap().to_string(), "203.0.113.7/32");
        assert_eq!(canonical_ipv6("2001:DB8::1/32").unwrap().to_string(), "2001:db8::/32");
        assert!(canonical_ipv4("10.0.0.0/33").is_err());
        assert_eq!(tcp(22, 22, "10.1.2.3/8").key, tcp(22, 22, "10.0.0.0/8").key);
    }

    #[test]
    fn description_is_not_part_of_identity() {
        let mut a = tcp(443, 443, "0.0.0.0/0");
        let b = a.clone();
        a.description = Some("office".into());
        assert_eq!(a.key, b.key);
        assert_ne!(a, b);
        let empty = Grant::new(
            Protocol::Tcp,
            Ports::None,
            Peer::<GroupId>::Ipv4("10.0.0.0/8".parse().unwrap()),
            Some(String::new()),
        );
        assert_eq!(empty.description, None);
    }

    #[test]
    fn sanitized_text_keeps_allowed_characters_replaces_others_and_is_trimmed_to_255() {
        assert_eq!(sanitize_text("  web-tier (main) #1  "), "web-tier (main) #1");
        assert_eq!(sanitize_text("Web Tier <main>"), "Web Tier _main_");
        assert_eq!(sanitize_text("café ünïcode"), "caf_ _n_code");
        assert_eq!(sanitize_text("a\tb\nc"), "a_b_c");
        let clean = "x".repeat(255);
        assert_eq!(sanitize_text(&clean), clean);
        assert_eq!(sanitize_text(&"y".repeat(300)), "y".repeat(255));
        assert_eq!(sanitize_text(&format!("{} z", "w".repeat(254))), format!("{}", "w".repeat(254)));
        assert_eq!(sanitize_text(&format!("{}é", "v".repeat(254))), format!("{}_", "v".repeat(254)));
        assert_eq!(sanitize_text(""), "");
    }

    #[test]
    fn same_account_group_reference_drops_owner() {
        let g = GroupId::try_new("sg-1").unwrap();
        let own = Grant::from_ec2(
            "tcp",
            Some(80),
            Some(80),
            Peer::Group { group: g.clone(), owner: Some("111122223333".into()) },
            None,
            Some("111122223333"),
        )
        .unwrap();
        assert_eq!(own.key.peer, Peer::Group { group: g.clone(), owner: None });
        let foreign = Grant::from_ec2(
            "tcp",
            Some(80),
            Some(80),
            Peer::Group { group: g.clone(), owner: Some("amazon-elb".into()) },
            None,
            Some("111122223333"),
        )
        .unwrap();
        assert_eq!(foreign.key.peer, Peer::Group { group: g, owner: Some("amazon-elb".into()) });
    }

    #[test]
    fn snapshot_json_round_trips_and_rejects_duplicates() {
        let text = r#"{
          "source_groups": [{"id": "sg-0a1", "name": "web", "description": "Web tier",
             "tags": {"classiclinkmirror:linkToVPC": "vpc-9f2"},
             "ingress": [{"protocol": "6", "ports": {"range": {"from": 443, "to": 443}},
                          "peer": {"ipv4": "203.0.113.0/24"}, "description": "office"},
                         {"protocol": "tcp", "ports": {"range": {"from": 8080, "to": 8080}},
                          "peer": {"group": {"group": "sg-0a2"}}}]}],
          "vpc_groups": [],
          "instances": [{"id": "i-0b3", "state": "running", "groups": ["sg-0a1"]}],
          "links": [{"instance_id": "i-0b3", "vpc_id": "vpc-9f2", "groups": ["sg-77c"]}],
          "vpcs": [{"id": "vpc-9f2", "classic_link_enabled": true}],
          "incomplete": ["links"]
        }"#;
        let snap = Snapshot::from_json(text).unwrap();
        assert_eq!(snap.source_groups.len(), 1);
        assert_eq!(snap.source_groups.values().next().unwrap().ingress[0].key.protocol, Protocol::Tcp);
        assert!(!snap.is_complete());
        let again = Snapshot::from_json(&snap.to_json()).unwrap();
        assert_eq!(snap, again);

        let dup = r#"{"vpcs": [{"id": "vpc-1"}, {"id": "vpc-1"}]}"#;
        assert!(Snapshot::from_json(dup).unwrap_err().to_string().contains("duplicate id vpc-1"));
        let bad = r#"{"vpcs": [{"id": "vpc-XYZ"}]}"#;
        assert!(Snapshot::from_json(bad).unwrap_err().to_string().contains("is not a VPC id"));
    }

    #[test]
    fn snapshot_json_rejects_misspelt_fields_of_groups_instances_links_and_vpcs() {
        // Regression: only the top level denied unknown fields, so a
        // hand-written or replayed snapshot with "classiclink_enabled": true
        // silently meant ClassicLink off, and "ingres" a group without rules.
        for (text, field) in [
            (r#"{"vpcs": [{"id": "vpc-1", "classiclink_enabled": true}]}"#, "classiclink_enabled"),
            (r#"{"source_groups": [{"id": "sg-1", "name": "web", "ingres": []}]}"#, "ingres"),
            (r#"{"instances": [{"id": "i-1", "state": "running", "groups": [], "vpc": "vpc-1"}]}"#, "vpc"),
            (r#"{"links": [{"instance_id": "i-1", "vpc_id": "vpc-1", "group_ids": []}]}"#, "group_ids"),
        ] {
            let error = Snapshot::from_json(text).unwrap_err().to_string();
            assert!(error.contains(&format!("unknown field `{field}`")), "{error}");
        }
    }
}
