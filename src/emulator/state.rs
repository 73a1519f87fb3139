//! The emulated world and EC2's semantics over it: VPCs, Classic and VPC
//! security groups with their ingress grants and tags, instances and their
//! ClassicLink links. Synchronous and clock-free: every call gets `now`, so
//! the request pipeline in [`super::Emulator`] owns time, faults and counting,
//! and the estate loader can drive the same rules without any of them.
//!
//! Indexes keep describes cheap on large estates: groups by id and by
//! (VPC, name), instances by id and by group, and the set of linked instances.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::time::Instant;

use crate::model::{
    Direction, Grant, GrantKey, GroupId, Instance, InstanceId, InstanceState, MAX_GROUPS_PER_LINK, Peer, Ports,
    Protocol, SecurityGroup, Vpc, VpcId,
};

use super::codes;
use super::prefix_lists::PrefixListRec;
use super::validate::{self, MAX_TAGS};
use crate::model::PrefixListId;

/// A refusal from the world: an EC2 error code and a message. The request
/// pipeline turns it into an [`crate::ec2::Ec2Error`] for the action at hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Fail {
    pub code: &'static str,
    pub message: String,
}

impl Fail {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Quotas the world enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Inbound rules (grants) per VPC security group; EC2's default is 60.
    pub rules_per_group: usize,
    /// Inbound rules (grants) per EC2-Classic security group; EC2-Classic allowed 100.
    pub classic_rules_per_group: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { rules_per_group: crate::model::DEFAULT_RULES_PER_GROUP, classic_rules_per_group: 100 }
    }
}

/// One instance's state transition, as `StopInstances`, `StartInstances` and
/// `TerminateInstances` report it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The instance.
    pub instance_id: InstanceId,
    /// State before the request.
    pub previous: InstanceState,
    /// State after the request.
    pub current: InstanceState,
}

#[derive(Clone, Debug)]
pub(crate) struct VpcRec {
    pub id: VpcId,
    pub cidr: Ipv4Net,
    pub classic_link: bool,
    pub default_group: GroupId,
    pub tags: BTreeMap<String, String>,
}

impl VpcRec {
    pub(crate) fn to_model(&self) -> Vpc {
        Vpc { id: self.id.clone(), classic_link_enabled: self.classic_link }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct GroupRec {
    pub id: GroupId,
    pub name: String,
    pub description: String,
    pub vpc_id: Option<VpcId>,
    pub tags: BTreeMap<String, String>,
    pub ingress: BTreeMap<GrantKey, Option<String>>,
    /// Egress rules; always empty for an EC2-Classic group.
    pub egress: BTreeMap<GrantKey, Option<String>>,
    pub visible_at: Instant,
    pub is_default: bool,
}

impl GroupRec {
    pub(crate) fn is_classic(&self) -> bool {
        self.vpc_id.is_none()
    }

    pub(crate) fn to_model(&self, account_id: &str) -> SecurityGroup {
        SecurityGroup {
            id: self.id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            vpc_id: self.vpc_id.clone(),
            owner_id: account_id.to_owned(),
            tags: self.tags.clone(),
            ingress: self
                .ingress
                .iter()
                .map(|(key, description)| Grant { key: key.clone(), description: description.clone() })
                .collect(),
            egress: self
                .egress
                .iter()
                .map(|(key, description)| Grant { key: key.clone(), description: description.clone() })
                .collect(),
        }
    }

    fn references(&self, other: &GroupId) -> bool {
        self.ingress
            .keys()
            .chain(self.egress.keys())
            .any(|k| matches!(&k.peer, Peer::Group { group, owner: None } if group == other))
    }

    pub(crate) fn rules(&self, direction: Direction) -> &BTreeMap<GrantKey, Option<String>> {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    fn rules_mut(&mut self, direction: Direction) -> &mut BTreeMap<GrantKey, Option<String>> {
        match direction {
            Direction::Ingress => &mut self.ingress,
            Direction::Egress => &mut self.egress,
        }
    }
}

/// The egress rules EC2 gives every new VPC group: all traffic to 0.0.0.0/0
/// (IPv6 `::/0` only comes with a VPC's IPv6 block, which the emulator does
/// not model).
pub(crate) fn default_egress() -> BTreeMap<GrantKey, Option<String>> {
    let all = GrantKey { protocol: Protocol::All, ports: Ports::None, peer: Peer::Ipv4(Ipv4Net::default()) };
    BTreeMap::from([(all, None)])
}

#[derive(Clone, Debug)]
pub(crate) struct LinkRec {
    pub vpc_id: VpcId,
    pub groups: BTreeSet<GroupId>,
}

#[derive(Clone, Debug)]
pub(crate) struct InstanceRec {
    pub id: InstanceId,
    pub vpc_id: Option<VpcId>,
    pub groups: BTreeSet<GroupId>,
    state: InstanceState,
    /// A pending instance becomes running at this time.
    running_at: Option<Instant>,
    pub visible_at: Instant,
    pub link: Option<LinkRec>,
    /// The primary private IPv4 address. A Classic instance has one only
    /// while pending or running (EC2-Classic released it on stop and gave a
    /// new one on start); a VPC instance keeps its interface's address.
    pub private_ip: Option<Ipv4Addr>,
    /// The primary network interface of a VPC instance (`eni-…`).
    pub interface: Option<String>,
}

impl InstanceRec {
    pub(crate) fn state_at(&self, now: Instant) -> InstanceState {
        match (self.state, self.running_at) {
            (InstanceState::Pending, Some(at)) if now >= at => InstanceState::Running,
            (state, _) => state,
        }
    }

    fn set_state(&mut self, state: InstanceState) {
        self.state = state;
        self.running_at = None;
    }

    pub(crate) fn to_model(&self, now: Instant) -> Instance {
        Instance {
            id: self.id.clone(),
            state: self.state_at(now),
            vpc_id: self.vpc_id.clone(),
            groups: self.groups.clone(),
            private_ip: self.address_at(now),
        }
    }

    /// The private address EC2 shows at `now`: a Classic instance's only
    /// while pending or running, a VPC instance's until it is terminated.
    pub(crate) fn address_at(&self, now: Instant) -> Option<Ipv4Addr> {
        let state = self.state_at(now);
        let shown = match self.vpc_id {
            None => matches!(state, InstanceState::Pending | InstanceState::Running),
            Some(_) => state != InstanceState::Terminated,
        };
        self.private_ip.filter(|_| shown)
    }
}

/// What to create with [`World::create_vpc`].
#[derive(Clone, Debug, Default)]
pub(crate) struct VpcSpec {
    pub id: Option<VpcId>,
    pub cidr: Option<Ipv4Net>,
    pub classic_link: bool,
    pub tags: BTreeMap<String, String>,
}

/// What to create with [`World::create_group`].
#[derive(Clone, Debug, Default)]
pub(crate) struct GroupSpec {
    pub id: Option<GroupId>,
    pub vpc_id: Option<VpcId>,
    pub name: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
}

/// What to create with [`World::run_instances`].
#[derive(Clone, Debug)]
pub(crate) struct RunSpec {
    pub id: Option<InstanceId>,
    pub vpc_id: Option<VpcId>,
    pub groups: Vec<GroupId>,
    pub count: usize,
    pub state: InstanceState,
    pub running_at: Option<Instant>,
}

/// The default CIDR of a VPC created without one.
pub(crate) const DEFAULT_VPC_CIDR: &str = "10.0.0.0/16";

fn group_not_found(id: &GroupId) -> Fail {
    Fail::new(codes::GROUP_NOT_FOUND, format!("The security group '{id}' does not exist"))
}

fn instance_not_found(id: &InstanceId) -> Fail {
    Fail::new(codes::INSTANCE_NOT_FOUND, format!("The instance ID '{id}' does not exist"))
}

pub(crate) fn vpc_not_found(id: &VpcId) -> Fail {
    Fail::new(codes::VPC_NOT_FOUND, format!("The vpc ID '{id}' does not exist"))
}

fn no_addresses(network: &str) -> Fail {
    Fail::new(
        codes::INSUFFICIENT_FREE_ADDRESSES,
        format!("There are not enough free addresses in {network} to satisfy the requested number of instances."),
    )
}

/// Egress rules exist only on VPC groups: EC2 answers a Classic group's
/// egress call as it answers a group id it cannot find among VPC groups.
fn check_direction(group: &GroupRec, direction: Direction) -> Result<(), Fail> {
    if direction == Direction::Egress && group.is_classic() {
        return Err(Fail::new(
            codes::INVALID_PARAMETER_VALUE,
            format!("Egress rules are only supported for VPC security groups: {}", group.id),
        ));
    }
    Ok(())
}

fn different_networks() -> Fail {
    Fail::new(codes::GROUP_NOT_FOUND, "You have specified two resources that belong to different networks.")
}

/// EC2's wording of a rule in `InvalidPermission.*` messages.
fn describe_rule(key: &GrantKey) -> String {
    let peer = match &key.peer {
        Peer::Ipv4(n) => n.to_string(),
        Peer::Ipv6(n) => n.to_string(),
        Peer::PrefixList(p) => p.to_string(),
        Peer::Group { group, owner: Some(owner) } => format!("{owner}/{group}"),
        Peer::Group { group, owner: None } => group.to_string(),
    };
    let protocol = key.protocol.as_ec2().to_ascii_uppercase();
    match key.ports {
        Ports::None => format!("peer: {peer}, {protocol}, ALLOW"),
        Ports::Range { from, to } => format!("peer: {peer}, {protocol}, from port: {from}, to port: {to}, ALLOW"),
        Ports::Icmp { icmp_type, code } => format!("peer: {peer}, {protocol}, type: {icmp_type}, code: {code}, ALLOW"),
    }
}

/// A VPC CIDR conflicts with ClassicLink when it overlaps EC2-Classic's
/// 10.0.0.0/8, except inside 10.0.0.0/16 and 10.1.0.0/16.
fn conflicts_with_classic(cidr: &Ipv4Net) -> bool {
    let classic: Ipv4Net = "10.0.0.0/8".parse().expect("literal CIDR");
    let allowed: [Ipv4Net; 2] = ["10.0.0.0/16".parse().expect("literal"), "10.1.0.0/16".parse().expect("literal")];
    let overlaps = classic.contains(&cidr.network()) || cidr.contains(&classic.network());
    overlaps && !allowed.iter().any(|a| a.contains(cidr))
}

fn check_unique(grants: &[Grant]) -> Result<(), Fail> {
    let mut seen = HashSet::with_capacity(grants.len());
    for grant in grants {
        if !seen.insert(&grant.key) {
            return Err(Fail::new(
                codes::INVALID_PARAMETER_VALUE,
                format!("The same permission must not appear multiple times ({})", describe_rule(&grant.key)),
            ));
        }
    }
    Ok(())
}

/// The emulated account: everything EC2 would know, plus indexes.
#[derive(Debug)]
pub(crate) struct World {
    pub account_id: String,
    /// The region this world is in (its AWS-managed prefix lists are this
    /// region's).
    pub region: String,
    pub limits: Limits,
    pub consistency_window: Duration,
    pub(crate) id_seed: u32,
    next_ids: [u64; 5],
    reserved: HashSet<String>,
    pub vpcs: BTreeMap<VpcId, VpcRec>,
    pub groups: BTreeMap<GroupId, GroupRec>,
    names: HashMap<(Option<VpcId>, String), GroupId>,
    pub instances: BTreeMap<InstanceId, InstanceRec>,
    /// Instances by group, terminated ones included (EC2 keeps showing them).
    pub members: HashMap<GroupId, BTreeSet<InstanceId>>,
    /// Instances with a ClassicLink link.
    pub linked: BTreeSet<InstanceId>,
    classic_default: GroupId,
    /// Managed prefix lists.
    pub prefix_lists: BTreeMap<PrefixListId, PrefixListRec>,
    /// `ClientToken`s of `CreateManagedPrefixList`: the list each created.
    pub prefix_list_tokens: HashMap<String, (PrefixListId, String)>,
    /// Private addresses handed out: EC2-Classic's counter, and each VPC's.
    classic_addresses: u32,
    vpc_addresses: HashMap<VpcId, u32>,
}

const GROUP_IDS: usize = 0;
const INSTANCE_IDS: usize = 1;
const VPC_IDS: usize = 2;
const PREFIX_LIST_IDS: usize = 3;
const INTERFACE_IDS: usize = 4;

/// Where EC2-Classic private addresses come from here: the upper half of
/// Classic's 10.0.0.0/8, clear of the 10.0.0.0/16 and 10.1.0.0/16 a
/// ClassicLink VPC may use.
const CLASSIC_ADDRESS_BASE: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 0);

impl World {
    /// A world with only the EC2-Classic `default` group, which allows all
    /// TCP, UDP and ICMP traffic from its own members, as EC2's did.
    /// The region's AWS-managed prefix lists are there from the start
    /// (`prefix_lists.rs`).
    pub(crate) fn new(account_id: String, region: String, limits: Limits, id_seed: u32, now: Instant) -> Self {
        let mut world = Self {
            account_id,
            region,
            limits,
            consistency_window: Duration::ZERO,
            id_seed,
            next_ids: [0; 5],
            reserved: HashSet::new(),
            vpcs: BTreeMap::new(),
            groups: BTreeMap::new(),
            names: HashMap::new(),
            instances: BTreeMap::new(),
            members: HashMap::new(),
            linked: BTreeSet::new(),
            classic_default: GroupId::try_new("sg-0").expect("placeholder id"),
            prefix_lists: BTreeMap::new(),
            prefix_list_tokens: HashMap::new(),
            classic_addresses: 0,
            vpc_addresses: HashMap::new(),
        };
        let id = world.new_group_id();
        let self_peer = || Peer::Group { group: id.clone(), owner: None };
        let ingress = [
            (Protocol::Tcp, Ports::Range { from: 0, to: u16::MAX }),
            (Protocol::Udp, Ports::Range { from: 0, to: u16::MAX }),
            (Protocol::Icmp, Ports::Icmp { icmp_type: -1, code: -1 }),
        ]
        .into_iter()
        .map(|(protocol, ports)| (GrantKey { protocol, ports, peer: self_peer() }, None))
        .collect();
        world.insert_group(GroupRec {
            id: id.clone(),
            name: "default".into(),
            description: "default group".into(),
            vpc_id: None,
            tags: BTreeMap::new(),
            ingress,
            egress: BTreeMap::new(),
            visible_at: now,
            is_default: true,
        });
        world.classic_default = id;
        world.seed_aws_prefix_lists(now);
        world
    }

    // ----- ids -------------------------------------------------------------

    fn format_id(&self, prefix: &str, n: u64) -> String {
        if self.id_seed == 0 { format!("{prefix}-{n:08x}") } else { format!("{prefix}-{:08x}{n:08x}", self.id_seed) }
    }

    fn next_id(&mut self, kind: usize, prefix: &str, taken: impl Fn(&Self, &str) -> bool) -> String {
        loop {
            self.next_ids[kind] += 1;
            let id = self.format_id(prefix, self.next_ids[kind]);
            if !taken(self, &id) && !self.reserved.contains(&id) {
                return id;
            }
        }
    }

    fn new_group_id(&mut self) -> GroupId {
        let id = self.next_id(GROUP_IDS, "sg", Self::has_group);
        GroupId::try_new(id).expect("generated ids are well-formed")
    }

    fn has_group(&self, id: &str) -> bool {
        GroupId::try_new(id).is_ok_and(|g| self.groups.contains_key(&g))
    }

    fn new_instance_id(&mut self) -> InstanceId {
        let id = self
            .next_id(INSTANCE_IDS, "i", |w, id| InstanceId::try_new(id).is_ok_and(|i| w.instances.contains_key(&i)));
        InstanceId::try_new(id).expect("generated ids are well-formed")
    }

    fn new_vpc_id(&mut self) -> VpcId {
        let id = self.next_id(VPC_IDS, "vpc", |w, id| VpcId::try_new(id).is_ok_and(|v| w.vpcs.contains_key(&v)));
        VpcId::try_new(id).expect("generated ids are well-formed")
    }

    pub(crate) fn new_prefix_list_id(&mut self) -> PrefixListId {
        let id = self.next_id(PREFIX_LIST_IDS, "pl", |w, id| {
            PrefixListId::try_new(id).is_ok_and(|p| w.prefix_lists.contains_key(&p))
        });
        PrefixListId::try_new(id).expect("generated ids are well-formed")
    }

    /// Interface ids come only from this counter (no estate names one), so
    /// none is ever taken.
    fn new_interface_id(&mut self) -> String {
        self.next_id(INTERFACE_IDS, "eni", |_, _| false)
    }

    /// The next private address: deterministic, in allocation order.
    /// Classic instances draw from [`CLASSIC_ADDRESS_BASE`]; a VPC instance
    /// from its VPC's CIDR after the four addresses EC2 reserves at the start
    /// (and before the broadcast address it reserves at the end).
    fn new_address(&mut self, vpc_id: Option<&VpcId>) -> Result<Ipv4Addr, Fail> {
        let Some(vpc_id) = vpc_id else {
            self.classic_addresses += 1;
            let n = self.classic_addresses;
            return u32::from(CLASSIC_ADDRESS_BASE)
                .checked_add(n)
                .filter(|a| *a < u32::from(Ipv4Addr::new(11, 0, 0, 0)) - 1)
                .map(Ipv4Addr::from)
                .ok_or_else(|| no_addresses("EC2-Classic"));
        };
        let cidr = self.vpc(vpc_id)?.cidr;
        let used = self.vpc_addresses.entry(vpc_id.clone()).or_insert(0);
        let size = 1u64 << (32 - u32::from(cidr.prefix_len()));
        // Four reserved at the start, the broadcast address at the end.
        if u64::from(*used) + 5 >= size {
            return Err(no_addresses(vpc_id.as_str()));
        }
        *used += 1;
        Ok(Ipv4Addr::from(u32::from(cidr.network()) + 3 + *used))
    }

    /// Keeps an explicit id (from an estate) away from the id counters until
    /// the resource that asked for it is created.
    pub(crate) fn reserve(&mut self, id: &str) -> bool {
        self.reserved.insert(id.to_owned())
    }

    fn claim(&mut self, id: &str) -> Result<(), Fail> {
        let in_use = self.has_group(id)
            || InstanceId::try_new(id).is_ok_and(|i| self.instances.contains_key(&i))
            || VpcId::try_new(id).is_ok_and(|v| self.vpcs.contains_key(&v));
        if in_use {
            return Err(Fail::new(codes::INVALID_PARAMETER_VALUE, format!("id {id} is already in use")));
        }
        self.reserved.remove(id);
        Ok(())
    }

    // ----- lookups -----------------------------------------------------------

    /// A group that exists and is visible at `now`.
    pub(crate) fn group(&self, now: Instant, id: &GroupId) -> Result<&GroupRec, Fail> {
        match self.groups.get(id) {
            Some(g) if g.visible_at <= now => Ok(g),
            _ => Err(group_not_found(id)),
        }
    }

    /// An instance that exists and is visible at `now`.
    pub(crate) fn instance(&self, now: Instant, id: &InstanceId) -> Result<&InstanceRec, Fail> {
        match self.instances.get(id) {
            Some(i) if i.visible_at <= now => Ok(i),
            _ => Err(instance_not_found(id)),
        }
    }

    /// A VPC (VPCs are strongly consistent).
    pub(crate) fn vpc(&self, id: &VpcId) -> Result<&VpcRec, Fail> {
        self.vpcs.get(id).ok_or_else(|| vpc_not_found(id))
    }

    /// The group of that name in that network (Classic when `vpc_id` is
    /// `None`), visible or not.
    pub(crate) fn group_id_by_name(&self, vpc_id: Option<&VpcId>, name: &str) -> Option<&GroupId> {
        self.names.get(&(vpc_id.cloned(), name.to_owned()))
    }

    /// The EC2-Classic `default` group.
    pub(crate) fn classic_default(&self) -> &GroupId {
        &self.classic_default
    }

    /// A VPC by the value of its `Name` tag.
    pub(crate) fn vpc_by_name(&self, name: &str) -> Option<&VpcId> {
        self.vpcs.values().find(|v| v.tags.get("Name").is_some_and(|n| n == name)).map(|v| &v.id)
    }

    // ----- VPCs --------------------------------------------------------------

    /// `CreateVpc`, with its `default` group (visible at once, like the VPC).
    pub(crate) fn create_vpc(&mut self, now: Instant, spec: VpcSpec) -> Result<VpcId, Fail> {
        let cidr = spec.cidr.unwrap_or_else(|| DEFAULT_VPC_CIDR.parse().expect("literal CIDR")).trunc();
        if !(16..=28).contains(&cidr.prefix_len()) {
            return Err(Fail::new(
                "InvalidVpc.Range",
                format!("The CIDR '{cidr}' is invalid: the block size must be between /16 and /28"),
            ));
        }
        if spec.classic_link && conflicts_with_classic(&cidr) {
            return Err(Fail::new(
                codes::VPC_CIDR_CONFLICT,
                format!("The CIDR {cidr} conflicts with the EC2-Classic private address range 10.0.0.0/8"),
            ));
        }
        for (key, value) in &spec.tags {
            validate::check_tag(key, value)?;
        }
        let id = match spec.id {
            Some(id) => {
                self.claim(id.as_str())?;
                id
            }
            None => self.new_vpc_id(),
        };
        let group_id = self.new_group_id();
        let mut ingress = BTreeMap::new();
        ingress.insert(
            GrantKey {
                protocol: Protocol::All,
                ports: Ports::None,
                peer: Peer::Group { group: group_id.clone(), owner: None },
            },
            None,
        );
        self.insert_group(GroupRec {
            id: group_id.clone(),
            name: "default".into(),
            description: "default VPC security group".into(),
            vpc_id: Some(id.clone()),
            tags: BTreeMap::new(),
            ingress,
            egress: default_egress(),
            visible_at: now,
            is_default: true,
        });
        self.vpcs.insert(
            id.clone(),
            VpcRec { id: id.clone(), cidr, classic_link: spec.classic_link, default_group: group_id, tags: spec.tags },
        );
        Ok(id)
    }

    /// `EnableVpcClassicLink` (idempotent).
    pub(crate) fn enable_classic_link(&mut self, id: &VpcId) -> Result<(), Fail> {
        let vpc = self.vpcs.get_mut(id).ok_or_else(|| vpc_not_found(id))?;
        if conflicts_with_classic(&vpc.cidr) {
            return Err(Fail::new(
                codes::VPC_CIDR_CONFLICT,
                format!(
                    "The CIDR {} of {id} conflicts with the EC2-Classic private address range 10.0.0.0/8",
                    vpc.cidr
                ),
            ));
        }
        vpc.classic_link = true;
        Ok(())
    }

    // ----- groups ------------------------------------------------------------

    fn insert_group(&mut self, group: GroupRec) {
        self.names.insert((group.vpc_id.clone(), group.name.clone()), group.id.clone());
        self.groups.insert(group.id.clone(), group);
    }

    /// `CreateSecurityGroup` with `TagSpecifications`. The name check is
    /// strongly consistent; the new group is invisible for the consistency window.
    pub(crate) fn create_group(&mut self, now: Instant, spec: GroupSpec) -> Result<GroupId, Fail> {
        let classic = spec.vpc_id.is_none();
        validate::check_group_name(&spec.name, classic)?;
        validate::check_group_description(&spec.description, classic)?;
        if spec.tags.len() > MAX_TAGS {
            return Err(Fail::new(codes::TAG_LIMIT, format!("A resource can have at most {MAX_TAGS} tags")));
        }
        for (key, value) in &spec.tags {
            validate::check_tag(key, value)?;
        }
        if let Some(vpc_id) = &spec.vpc_id {
            self.vpc(vpc_id)?;
        }
        if self.names.contains_key(&(spec.vpc_id.clone(), spec.name.clone())) {
            let message = match &spec.vpc_id {
                Some(vpc) => format!("The security group '{}' already exists for VPC '{vpc}'", spec.name),
                None => format!("The security group '{}' already exists", spec.name),
            };
            return Err(Fail::new(codes::GROUP_DUPLICATE, message));
        }
        let id = match spec.id {
            Some(id) => {
                self.claim(id.as_str())?;
                id
            }
            None => self.new_group_id(),
        };
        self.insert_group(GroupRec {
            id: id.clone(),
            name: spec.name,
            description: spec.description,
            vpc_id: spec.vpc_id,
            tags: spec.tags,
            ingress: BTreeMap::new(),
            egress: if classic { BTreeMap::new() } else { default_egress() },
            visible_at: now + self.consistency_window,
            is_default: false,
        });
        Ok(id)
    }

    /// `DeleteSecurityGroup`. VPC groups answer `DependencyViolation` while a
    /// link, a live instance or another group's rule uses them; Classic groups
    /// answer `InvalidGroup.InUse`. Default groups are never deleted.
    pub(crate) fn delete_group(&mut self, now: Instant, id: &GroupId) -> Result<(), Fail> {
        let group = self.group(now, id)?;
        let classic = group.is_classic();
        if group.is_default {
            return Err(if classic {
                Fail::new(codes::GROUP_RESERVED, "The default EC2-Classic security group cannot be deleted")
            } else {
                Fail::new(
                    codes::CANNOT_DELETE,
                    format!("the specified group: \"{id}\" name: \"default\" cannot be deleted by a user"),
                )
            });
        }
        let in_use = |what: String| {
            if classic {
                Fail::new(codes::GROUP_IN_USE, format!("Group {id} is used by {what}"))
            } else {
                Fail::new(codes::DEPENDENCY_VIOLATION, format!("resource {id} has a dependent object ({what})"))
            }
        };
        let live_member = self.members.get(id).and_then(|members| {
            members
                .iter()
                .find(|i| self.instances.get(*i).is_some_and(|r| r.state_at(now) != InstanceState::Terminated))
        });
        if let Some(instance) = live_member {
            return Err(in_use(format!("instance {instance}")));
        }
        let linked = self.linked.iter().find(|i| {
            self.instances.get(*i).and_then(|r| r.link.as_ref()).is_some_and(|link| link.groups.contains(id))
        });
        if let Some(instance) = linked {
            return Err(in_use(format!("the ClassicLink link of instance {instance}")));
        }
        let referrer = self.groups.values().find(|g| &g.id != id && g.references(id));
        if let Some(referrer) = referrer {
            return Err(in_use(format!("groups: {}", referrer.id)));
        }
        let group = self.groups.remove(id).expect("checked above");
        self.names.remove(&(group.vpc_id, group.name));
        Ok(())
    }

    fn check_reference(&self, now: Instant, holder: &GroupRec, target: &GroupId) -> Result<(), Fail> {
        if target == &holder.id {
            return Ok(());
        }
        let target = self.group(now, target)?;
        if target.vpc_id != holder.vpc_id {
            return Err(different_networks());
        }
        Ok(())
    }

    fn canonical_grants(&self, group: &GroupRec, grants: &[Grant]) -> Result<Vec<Grant>, Fail> {
        let grants = grants
            .iter()
            .map(|g| validate::canonical_grant(g, &self.account_id, group.is_classic()))
            .collect::<Result<Vec<_>, _>>()?;
        check_unique(&grants)?;
        Ok(grants)
    }

    /// `AuthorizeSecurityGroupIngress`: all grants or none.
    pub(crate) fn authorize(&mut self, now: Instant, id: &GroupId, grants: &[Grant]) -> Result<(), Fail> {
        self.authorize_rules(now, Direction::Ingress, id, grants)
    }

    /// `AuthorizeSecurityGroupIngress` or `AuthorizeSecurityGroupEgress`: all
    /// grants or none. Egress on an EC2-Classic group is refused.
    pub(crate) fn authorize_rules(
        &mut self,
        now: Instant,
        direction: Direction,
        id: &GroupId,
        grants: &[Grant],
    ) -> Result<(), Fail> {
        let group = self.group(now, id)?;
        check_direction(group, direction)?;
        if grants.is_empty() {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter ipPermissions"));
        }
        let grants = self.canonical_grants(group, grants)?;
        for grant in &grants {
            match &grant.key.peer {
                Peer::Group { group: target, owner: None } => self.check_reference(now, group, target)?,
                Peer::PrefixList(list) => {
                    self.prefix_list(now, list)?;
                }
                _ => {}
            }
        }
        if let Some(existing) = grants.iter().find(|g| group.rules(direction).contains_key(&g.key)) {
            return Err(Fail::new(
                codes::PERMISSION_DUPLICATE,
                format!("the specified rule \"{}\" already exists", describe_rule(&existing.key)),
            ));
        }
        let limit = self.rules_limit(group);
        let weight: usize =
            group.rules(direction).keys().chain(grants.iter().map(|g| &g.key)).map(|k| self.rule_weight(k)).sum();
        if weight > limit {
            return Err(Fail::new(
                codes::RULES_LIMIT,
                format!("The maximum number of rules per security group ({limit}) has been reached."),
            ));
        }
        let group = self.groups.get_mut(id).expect("checked above");
        let rules = group.rules_mut(direction);
        for grant in grants {
            rules.insert(grant.key, grant.description);
        }
        Ok(())
    }

    /// The rules quota of a group: Classic's or the VPC one.
    pub(crate) fn rules_limit(&self, group: &GroupRec) -> usize {
        if group.is_classic() { self.limits.classic_rules_per_group } else { self.limits.rules_per_group }
    }

    /// What one rule counts against its group's rules quota: one, except a
    /// reference to a managed prefix list, which counts as the list's
    /// `MaxEntries` however many entries it holds (EC2's rule; a list that
    /// is gone counts one).
    pub(crate) fn rule_weight(&self, key: &GrantKey) -> usize {
        let entries = match &key.peer {
            Peer::PrefixList(id) => Some(self.prefix_lists.get(id).map_or(1, |l| l.max_entries as usize)),
            _ => None,
        };
        crate::model::grant_weight(&key.peer, entries, usize::MAX)
    }

    /// `RevokeSecurityGroupIngress`. For a VPC group every grant must exist or
    /// nothing is revoked (`InvalidPermission.NotFound`); for an EC2-Classic
    /// group the known grants are revoked and the unknown ones are returned,
    /// as EC2 documents (`UnknownIpPermissions`).
    pub(crate) fn revoke(&mut self, now: Instant, id: &GroupId, grants: &[Grant]) -> Result<Vec<Grant>, Fail> {
        self.revoke_rules(now, Direction::Ingress, id, grants)
    }

    /// `RevokeSecurityGroupIngress` or `RevokeSecurityGroupEgress`, as
    /// [`World::revoke`]; egress on an EC2-Classic group is refused.
    pub(crate) fn revoke_rules(
        &mut self,
        now: Instant,
        direction: Direction,
        id: &GroupId,
        grants: &[Grant],
    ) -> Result<Vec<Grant>, Fail> {
        let group = self.group(now, id)?;
        check_direction(group, direction)?;
        if grants.is_empty() {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter ipPermissions"));
        }
        let grants = self.canonical_grants(group, grants)?;
        let (known, unknown): (Vec<Grant>, Vec<Grant>) =
            grants.into_iter().partition(|g| group.rules(direction).contains_key(&g.key));
        if !unknown.is_empty() && !group.is_classic() {
            return Err(Fail::new(
                codes::PERMISSION_NOT_FOUND,
                format!(
                    "The specified rule does not exist in this security group: \"{}\"",
                    describe_rule(&unknown[0].key)
                ),
            ));
        }
        let group = self.groups.get_mut(id).expect("checked above");
        let rules = group.rules_mut(direction);
        for grant in known {
            rules.remove(&grant.key);
        }
        Ok(unknown)
    }

    /// `UpdateSecurityGroupRuleDescriptionsIngress`: every grant must exist
    /// (`InvalidPermission.NotFound`); a grant without description clears it.
    pub(crate) fn update_descriptions(&mut self, now: Instant, id: &GroupId, grants: &[Grant]) -> Result<(), Fail> {
        let group = self.group(now, id)?;
        if grants.is_empty() {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter ipPermissions"));
        }
        let grants = self.canonical_grants(group, grants)?;
        if let Some(missing) = grants.iter().find(|g| !group.ingress.contains_key(&g.key)) {
            return Err(Fail::new(
                codes::PERMISSION_NOT_FOUND,
                format!(
                    "The specified rule does not exist in this security group: \"{}\"",
                    describe_rule(&missing.key)
                ),
            ));
        }
        let group = self.groups.get_mut(id).expect("checked above");
        for grant in grants {
            group.ingress.insert(grant.key, grant.description);
        }
        Ok(())
    }

    /// `CreateTags` on groups: all or nothing.
    pub(crate) fn create_tags(
        &mut self,
        now: Instant,
        ids: &[GroupId],
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Fail> {
        if ids.is_empty() {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter resourceIdSet"));
        }
        if tags.is_empty() {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter tagSet"));
        }
        for (key, value) in tags {
            validate::check_tag(key, value)?;
        }
        for id in ids {
            let group = self.group(now, id)?;
            let new_keys = tags.keys().filter(|k| !group.tags.contains_key(*k)).count();
            if group.tags.len() + new_keys > MAX_TAGS {
                return Err(Fail::new(codes::TAG_LIMIT, format!("A resource can have at most {MAX_TAGS} tags ({id})")));
            }
        }
        for id in ids {
            let group = self.groups.get_mut(id).expect("checked above");
            group.tags.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(())
    }

    /// `DeleteTags` on groups. A key with a value deletes the tag only when
    /// the value matches; no keys at all deletes every tag, as EC2 does.
    pub(crate) fn delete_tags(
        &mut self,
        now: Instant,
        ids: &[GroupId],
        keys: &[(String, Option<String>)],
    ) -> Result<(), Fail> {
        if ids.is_empty() {
            return Err(Fail::new(codes::MISSING_PARAMETER, "The request must contain the parameter resourceIdSet"));
        }
        for id in ids {
            self.group(now, id)?;
        }
        for id in ids {
            let group = self.groups.get_mut(id).expect("checked above");
            if keys.is_empty() {
                group.tags.clear();
            }
            for (key, value) in keys {
                if value.as_ref().is_none_or(|v| group.tags.get(key) == Some(v)) {
                    group.tags.remove(key);
                }
            }
        }
        Ok(())
    }
}

// The instances' lifecycle and ClassicLink: `state/instances.rs`.
mod instances;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_link_cidr_conflicts_follow_ec2s_exceptions() {
        let conflict = |c: &str| conflicts_with_classic(&c.parse().unwrap());
        assert!(!conflict("10.0.0.0/16"));
        assert!(!conflict("10.1.0.0/24"));
        assert!(conflict("10.2.0.0/16"));
        assert!(!conflict("172.31.0.0/16"));
        assert!(conflict("10.0.0.0/8"));
    }

    #[test]
    fn rules_are_described_like_ec2_does() {
        let key = GrantKey {
            protocol: Protocol::Tcp,
            ports: Ports::Range { from: 22, to: 22 },
            peer: Peer::Ipv4("10.0.0.0/8".parse().unwrap()),
        };
        assert_eq!(describe_rule(&key), "peer: 10.0.0.0/8, TCP, from port: 22, to port: 22, ALLOW");
    }
}
